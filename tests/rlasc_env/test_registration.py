"""The current id, rlasc/SemanticCoding-v5: make-time options, pins, validation, checkers, make_vec and pickling."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import rlasc_env
from rlasc_env import CURRENT_ID

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("segmentation", "detection", "classification")
SB3_IMAGE_HEURISTICS = ("is an image", "minimal resolution for an image", "Treating image space as")  # SB3's advisories for any 3-d Box


def _shipped() -> None:
    if not (ROOT / "codec_models" / "weights" / "tiny.pt").is_file():
        pytest.skip("shipped codec absent")


def test_current_id_is_the_latest_and_pins_v6_with_the_finer_codec():
    assert CURRENT_ID == "rlasc/SemanticCoding-v7"
    from gymnasium.envs.registration import find_highest_version

    assert find_highest_version("rlasc", "SemanticCoding") == 7  # an unversioned gym.make gets the benchmark
    v3, v5 = rlasc_env.ENV_PINS["rlasc/SemanticCoding-v3"], rlasc_env.ENV_PINS["rlasc/SemanticCoding-v5"]
    v6, v7 = rlasc_env.ENV_PINS["rlasc/SemanticCoding-v6"], rlasc_env.ENV_PINS[CURRENT_ID]
    for key in ("codec", "codec_sha256", "task_weights", "task_sha256", "data"):
        assert v5[key] == v3[key], key
    for key in ("task_weights", "task_sha256", "data", "image_size", "preset", "reference"):
        assert v6[key] == v5[key], key
    assert v6["codec"] == "tiny-sf2" and v6["codec_sha256"] != v5["codec_sha256"]
    assert {k: v for k, v in v7.items() if not k.startswith("codec")} == {k: v for k, v in v6.items()
                                                                          if not k.startswith("codec")}
    assert v7["codec"] == "tiny-sf3" and v7["codec_sha256"] != v6["codec_sha256"]
    assert v5["image_size"] == [64, 128] and v5["preset"] == "tiny"
    for old in ("rlasc/SemanticCoding-v5", "rlasc/SemanticCoding-v6"):
        assert rlasc_env.CARDS[old].observations == ("preview", "paper") and "frozen" in rlasc_env.CARDS[old].history
    assert rlasc_env.CARDS[CURRENT_ID].observations == ("preview", "paper")
    history = rlasc_env.version_history()
    assert history.count("\n") == len(rlasc_env.CARDS) - 1 and all(i in history for i in rlasc_env.CARDS)


@pytest.mark.parametrize("bad, message", [
    ({"lam": -1}, "lam must be a finite number >= 0"),
    ({"eta": float("nan")}, "eta must be a finite number >= 0"),
    ({"lam": "1"}, "lam must be a finite number"),
    ({"lam": True}, "lam must be a finite number"),
    ({"preset": "paper"}, "no id pins the paper preset"),
    ({"codec": "tiny-v0"}, "pins codec"),
    ({"images": [1]}, "pins images"),
    ({"observation": "pixels"}, "observation"),
    ({"task": "depth"}, "task must be one of"),
    ({"split": "validation"}, "split must be one of"),
    ({"colour": 1}, "unknown option"),
])
def test_bad_options_are_refused_at_make_time(bad, message):
    with pytest.raises(ValueError, match=message):
        rlasc_env.resolve_env(CURRENT_ID, **bad)
    with pytest.raises(ValueError, match=message):
        gym.make(CURRENT_ID, **bad)


def test_old_ids_keep_their_observation_and_name_the_current_id():
    with pytest.raises(ValueError, match="use rlasc/SemanticCoding-v7"):
        rlasc_env.resolve_env("rlasc/SemanticCoding-v4", observation="paper")
    with pytest.raises(ValueError, match="unknown id"):
        rlasc_env.resolve_env("rlasc/SemanticCoding-v9")
    assert rlasc_env.resolve_env("rlasc/SemanticCoding-v4").observation == "preview"
    assert rlasc_env.resolve_env(CURRENT_ID).observation == "preview"


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("observation", ["preview", "paper"])
def test_checkers_pass_without_a_project_warning(task, observation):
    """Gymnasium's check_env: no warning at all. SB3's check_env: only its heuristics for any 3-d Box ('features' and
    'mask' look like images to it; they are feature maps, read by agents.policy.PaperFeaturesExtractor)."""
    _shipped()
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(CURRENT_ID, task=task, observation=observation, split="test")
        gym_check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env.unwrapped)
    others = [str(w.message) for w in caught if not any(h in str(w.message) for h in SB3_IMAGE_HEURISTICS)]
    assert others == []
    stats = env.observation_space["stats"].shape[0]
    assert stats == (8 + 1 + 2 * 6 if observation == "preview" else 8)


def test_reset_options_are_validated_and_lose_nothing():
    _shipped()
    env = gym.make(CURRENT_ID, split="test")
    obs, info = env.reset(seed=0, options={"index": 3})
    assert info["image_index"] == 3
    for options, message in (({"lam": "abc"}, "lam must be a finite number"), ({"lam": float("inf")}, "lam must be"),
                             ({"index": 10 ** 6}, "image index"), ({"index": 1.5}, "image index"),
                             ({"indices": [0]}, "unknown reset options")):
        with pytest.raises(ValueError, match=message):
            env.reset(options=options)
    _, reward, *_ = env.step(2)  # the episode survived the refused resets
    assert np.isfinite(reward)
    with pytest.raises(ValueError, match="action"):
        env.step(6)


def test_make_vec_reaches_the_batched_env_with_the_single_envs_rewards():
    _shipped()
    venv = gym.make_vec(CURRENT_ID, num_envs=2, vectorization_mode="vector_entry_point", split="test")
    assert isinstance(venv.unwrapped, rlasc_env.BatchedSemanticCodingEnv)
    obs, info = venv.reset(seed=0, options={"index": [4, 7]})
    assert list(info["image_index"]) == [4, 7]
    _, rewards, *_ = venv.step(np.array([5, 1]))
    single = gym.make(CURRENT_ID, split="test")
    for i, (index, level) in enumerate(((4, 5), (7, 1))):
        single.reset(options={"index": index})
        _, reward, *_ = single.step(level)
        assert reward == pytest.approx(rewards[i], abs=1e-5)
    with pytest.raises(ValueError, match="pins codec"):
        gym.make_vec(CURRENT_ID, num_envs=2, vectorization_mode="vector_entry_point", codec="tiny-v0")


def test_pickle_round_trip_steps_identically():
    _shipped()
    env = gym.make(CURRENT_ID, task="segmentation", split="test").unwrapped
    env.reset(seed=3)
    env.step(4)
    twin = pickle.loads(pickle.dumps(env))
    assert twin.config == env.config and twin._actions == [4]
    for level in (1, 5, 0):
        a, b = env.step(level), twin.step(level)
        np.testing.assert_allclose(a[0]["stats"], b[0]["stats"], atol=1e-6)
        assert a[1] == pytest.approx(b[1], abs=1e-9) and a[2] == b[2]
        if a[2]:
            break
    assert env.reset()[1]["image_index"] == twin.reset()[1]["image_index"]  # the random generator travelled too
    fresh = pickle.loads(pickle.dumps(gym.make(CURRENT_ID, split="test").unwrapped))  # before any reset
    assert fresh.reset(seed=0)[1]["image_index"] == env.reset(seed=0)[1]["image_index"]


def test_in_process_envs_refuse_to_pickle_with_a_clear_error(test_codec, test_dataset):
    env = rlasc_env.SemanticCodingEnv(task="pixel-test", codec=test_codec, images=test_dataset)
    with pytest.raises(TypeError, match="only an env built from names pickles"):
        pickle.dumps(env)


def test_decoded_image_is_the_render_panel():
    _shipped()
    env = gym.make(CURRENT_ID, split="test", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(5)
    image = env.unwrapped.decoded_image()
    assert image.shape == (3, 64, 128) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    frame = env.render()
    panel = frame[:, 128 + 2:2 * 128 + 2]
    np.testing.assert_array_equal(panel, (image.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))


def test_sb3_adapter_from_the_id():
    _shipped()
    adapter = rlasc_env.SB3VecEnvAdapter.from_id(CURRENT_ID, num_envs=2, split="test", observation="paper")
    obs = adapter.reset()
    assert obs["stats"].shape == (2, 8)
    with pytest.raises(ValueError, match="lam must be"):
        rlasc_env.SB3VecEnvAdapter.from_id(CURRENT_ID, num_envs=2, lam=-1)


def test_making_the_current_id_warns_nothing_and_old_ids_point_to_it():
    _shipped()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(CURRENT_ID, split="test")  # with Gymnasium's passive checker
        env.reset(seed=0)
        env.step(0)
    assert [str(w.message) for w in caught] == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym.make("rlasc/SemanticCoding-v4", split="test")
    assert any("upgrading to version `v7`" in str(w.message) for w in caught)  # Gymnasium's own notice
