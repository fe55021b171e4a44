"""SemanticCodingEnv: API checks, eq. 13-14 bookkeeping, real bitstream bits, determinism."""
from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

import rlasc_env
from rlasc_env import SemanticCodingEnv
from rlasc_env.reward import normalized_score, rsp_loss, step_reward

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("segmentation", "detection", "classification")






def run_episode(env: SemanticCodingEnv, seed: int, actions_seed: int = 0, index: int | None = None):
    """(reset obs/info, [(obs, reward, terminated, truncated, info), ...]) with seeded random actions."""
    rng = np.random.default_rng(actions_seed)
    obs, info = env.reset(seed=seed, options=None if index is None else {"index": index})
    steps = []
    done = False
    while not done:
        out = env.step(int(rng.integers(env.action_space.n)))
        steps.append(out)
        done = out[2] or out[3]
    return (obs, info), steps


def test_gymnasium_env_checker(make_env):
    env = make_env(render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env)


def test_sb3_env_checker(make_env):
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 flags (n,h,w) float Boxes as "images"; MultiInputPolicy flattens them
        check_env(make_env(), warn=True)


def test_spaces_and_observation(make_env, test_codec):
    env = make_env()
    obs, info = env.reset(seed=1)
    n, m = test_codec.config.code_channels, test_codec.num_classes
    h, w = env.parts.height // 8, env.parts.width // 8
    assert env.action_space == gym.spaces.Discrete(test_codec.num_levels)
    assert obs["features"].shape == (n, h, w) and obs["mask"].shape == (1, h, w)
    assert obs["concept"].shape == (m,) and obs["concept"].sum() == 1
    assert env.observation_space.contains(obs)
    first = int(obs["concept"].argmax())
    assert first == min(k for k in range(m) if env.core.store.mask[0, k].any())  # label order
    assert np.array_equal(obs["mask"][0] > 0, env.core.store.mask[0, first].numpy() > 0)
    for key in ("bits", "bpp", "semantic_loss", "perceptual_loss", "loss", "concept", "level", "psnr", "levels"):
        assert key in info
    assert info["concept"] == -1 and info["level"] == -1 and info["levels"] == {}


def test_reward_is_loss_difference(make_env):
    env = make_env(lam=0.7, eta=3.0)
    (_, info0), steps = run_episode(env, seed=2)
    previous, total = info0["loss"], 0.0
    for obs, reward, terminated, truncated, info in steps:
        assert reward == pytest.approx(previous - info["loss"], abs=1e-9)
        expected = 0.7 * (info["bits"] - info0["bits"]) / env.core.pixels + info["semantic_loss"] + 3.0 * info["perceptual_loss"]
        assert info["loss"] == pytest.approx(expected, abs=1e-9)
        assert not truncated
        previous, total = info["loss"], total + reward
    last = steps[-1][4]
    assert steps[-1][2] and last["episode_return"] == pytest.approx(total, abs=1e-9)
    assert last["episode_return"] == pytest.approx(info0["loss"] - last["loss"], abs=1e-9)
    assert len(steps) == last["episode_length"] == len(last["levels"])
    score = (info0["loss"] - last["loss"]) / (env.core.loss0[0] - env.core.loss_high[0])
    assert last["normalized_score"] == pytest.approx(score, abs=1e-9)
    assert all(not np.any(v) for v in steps[-1][0].values())  # zero observation after the last concept
    assert not any("normalized_score" in s[4] for s in steps[:-1])


def test_normalized_score_references(make_env):
    """All coarsest -> 0, all highest -> 1 (L_high is L with every concept at the highest level)."""
    env = make_env()
    q = env.action_space.n
    for level, expected in ((0, 0.0), (q - 1, 1.0)):
        env.reset(seed=5)
        done = False
        while not done:
            _, _, done, _, info = env.step(level)
        assert info["normalized_score"] == pytest.approx(expected, abs=1e-5)
    assert env.core.bits_high[0] == info["bits"]


def test_bits_equal_real_bitstream(make_env, test_codec, test_dataset):
    env = make_env()
    (_, info0), steps = run_episode(env, seed=3, actions_seed=7)
    image = test_dataset[info0["image_index"]][0]
    coarse = {m: 0 for m in range(test_codec.num_classes)}
    assert info0["bits"] == len(test_codec.compress(image, coarse)) * 8
    for *_, info in steps:
        assert info["bits"] == len(test_codec.compress(image, {**coarse, **info["levels"]})) * 8
        assert info["bpp"] == info["bits"] / env.core.pixels


def test_cached_reconstruction_matches_decode(make_env, test_codec, test_dataset):
    env = make_env()
    obs, info = env.reset(seed=4)
    image = test_dataset[info["image_index"]][0].unsqueeze(0)
    with torch.inference_mode():
        analysis = test_codec.analyse(image)
        levels = torch.zeros(1, test_codec.num_classes, dtype=torch.long)
        torch.testing.assert_close(env.core.x_hat[:1], test_codec.decode(analysis, levels), atol=1e-5, rtol=0)
        for action in (1, 2, 0, 1, 2, 2):
            _, _, done, _, info = env.step(action % env.action_space.n)
            for m, q in info["levels"].items():
                levels[0, m] = q
            torch.testing.assert_close(env.core.x_hat[:1], test_codec.decode(analysis, levels), atol=1e-5, rtol=0)
            if done:
                break


def test_cached_global_generator_is_exact(test_codec, test_dataset):
    image = torch.stack([test_dataset[i][0] for i in range(3)])
    with torch.inference_mode():
        analysis = test_codec.analyse(image)
        levels = torch.full(analysis.present.shape, 1)
        merged = test_codec.merged_features(analysis, test_codec.select_levels(analysis, levels), levels)
        generator = test_codec.global_
        mods = generator.modulations(analysis.onehot, tuple(analysis.features.shape[-2:]))
        torch.testing.assert_close(generator(merged, modulations=mods), generator(merged, analysis.onehot),
                                   atol=0, rtol=0)


def test_same_seed_same_actions_identical(make_env):
    a, b = make_env(), make_env()
    (obs_a, info_a), steps_a = run_episode(a, seed=11, actions_seed=3)
    (obs_b, info_b), steps_b = run_episode(b, seed=11, actions_seed=3)
    assert info_a == info_b
    for key in obs_a:
        assert np.array_equal(obs_a[key], obs_b[key])
    assert len(steps_a) == len(steps_b)
    for sa, sb in zip(steps_a, steps_b):
        for key in sa[0]:
            assert np.array_equal(sa[0][key], sb[0][key])
        assert sa[1:4] == sb[1:4]
        assert sa[4] == sb[4] or all(
            (x == y) or (isinstance(x, float) and np.isnan(x) and np.isnan(y)) for x, y in zip(sa[4].values(), sb[4].values()))
    # a later reset without a seed continues the same generator
    assert a.reset()[1]["image_index"] == b.reset()[1]["image_index"]


def test_options_index(make_env, test_dataset):
    env = make_env()
    assert env.reset(options={"index": 5})[1]["image_index"] == 5
    for bad in (-1, len(test_dataset), 1.0, True):
        with pytest.raises(ValueError):
            env.reset(options={"index": bad})


def test_invalid_actions_raise(make_env):
    env = make_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    q = env.action_space.n
    for bad in (-1, q, 1.0, 0.5, True, "1", None, np.array([0, 1]), np.float32(1)):
        with pytest.raises(ValueError):
            env.step(bad)
    env.step(np.int64(q - 1))
    env.step(np.array(0))
    done = False
    while not done:
        done = env.step(0)[2]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_render(make_env):
    env = make_env(render_mode="rgb_array")
    env.reset(seed=0)
    env.step(1)
    frame = env.render()
    h, w = env.parts.height, env.parts.width
    assert frame.dtype == np.uint8 and frame.shape == (h, 4 * w + 6, 3)
    with pytest.raises(ValueError):
        make_env(render_mode="human")


def test_reward_arithmetic():
    loss = rsp_loss(np.array([120, 80]), 80, 10, np.array([0.5, 0.25]), np.array([0.1, 0.0]), 2.0, 10.0)
    np.testing.assert_allclose(loss, [2.0 * 4.0 + 0.5 + 1.0, 0.25])
    np.testing.assert_allclose(step_reward(loss[0], loss[1]), loss[0] - loss[1])
    np.testing.assert_allclose(normalized_score([2.0, 1.0], [1.5, 0.5], [1.0, 1.0]), [0.5, np.nan])
    with pytest.raises(ValueError):
        rsp_loss(1, 0, 0, 0, 0, 1.0, 1.0)


def test_registered_and_make(test_codec, test_dataset):
    """A registered id refuses in-process codecs and data (they would change its rewards); the class takes them."""
    assert rlasc_env.CURRENT_ID in gym.registry
    with pytest.raises(ValueError, match="pins codec .*SemanticCodingEnv"):
        gym.make(rlasc_env.CURRENT_ID, codec=test_codec)
    env = SemanticCodingEnv(task="pixel-test", codec=test_codec, images=test_dataset)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


@pytest.mark.parametrize("weights_set", ["", "v2", "v3"])  # the -v1, -v2 and -v3 task networks
@pytest.mark.parametrize("task", TASKS)
def test_real_task(task, weights_set, test_codec, test_dataset):
    weights = ROOT / "rlasc_env" / "weights" / weights_set / f"{task}.pt"
    if not weights.is_file():
        pytest.skip(f"shipped task weights {weights.relative_to(ROOT)} are absent (python train_tasks.py --task {task})")
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = SemanticCodingEnv(task=task, codec=test_codec, images=test_dataset, task_kwargs={"weights": str(weights)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env)
        sb3_check_env(env)
    (_, info0), steps = run_episode(env, seed=0)
    assert env.task.metric_name in info0
    previous = info0["loss"]
    for _, reward, _, _, info in steps:
        assert reward == pytest.approx(previous - info["loss"], abs=1e-9)
        previous = info["loss"]


def test_shipped_tiny_codec():
    path = ROOT / "codec_models" / "weights" / "tiny.pt"
    if not path.is_file():
        pytest.skip("shipped codec weights codec_models/weights/tiny.pt are absent (python train_codec.py --preset tiny "
                    "--export codec_models/weights/tiny.pt)")
    from codec_models import load_codec, load_dataset

    codec = load_codec("tiny", device="cpu")
    data = load_dataset("streets", split="test", preset="tiny", size=2)
    env = SemanticCodingEnv(task="pixel-test", codec="tiny", images=data)
    (_, info0), steps = run_episode(env, seed=0)
    image = data[info0["image_index"]][0]
    coarse = {m: 0 for m in range(codec.num_classes)}
    info = steps[-1][4]
    assert info["bits"] == len(codec.compress(image, {**coarse, **info["levels"]})) * 8


@pytest.mark.parametrize("codec_name", ["tiny-sf2", "tiny-sf3"])
def test_base_section_codec_bits_are_the_file(codec_name):
    """Bitstream format 4 (tiny-sf2; tiny-sf3 with range-coded concepts): every step's bits, with the base section's
    padding, are the file's; the observation's per-level rate (preview) is the concept's own bits."""
    from codec_models import load_codec, load_dataset

    codec = load_codec(codec_name, device="cpu")
    assert codec.bitstream_version == 4
    data = load_dataset("streets", split="test", preset="tiny", size=3)
    env = SemanticCodingEnv(task="pixel-test", codec=codec_name, images=data, observation="preview")
    coarse = {m: 0 for m in range(codec.num_classes)}
    for seed in (0, 1):
        (_, info0), steps = run_episode(env, seed=seed, actions_seed=seed)
        image = data[info0["image_index"]][0]
        assert info0["bits"] == len(codec.compress(image, coarse)) * 8
        for *_, info in steps:
            assert info["bits"] == len(codec.compress(image, {**coarse, **info["levels"]})) * 8


def test_default_make():
    """gymnasium.make(CURRENT_ID) with no argument: shipped codec, shipped segmentation network, embedded data."""
    missing = [p for p in (ROOT / "codec_models" / "weights" / "tiny.pt", ROOT / "rlasc_env" / "weights" / "segmentation.pt")
               if not p.is_file()]
    if missing:
        pytest.skip(f"shipped weights absent: {[str(p.relative_to(ROOT)) for p in missing]}")
    env = gym.make(rlasc_env.CURRENT_ID)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and "miou" in info
    _, reward, _, _, step_info = env.step(env.action_space.n - 1)
    assert reward == pytest.approx(info["loss"] - step_info["loss"], abs=1e-9)
    env.close()


@pytest.mark.parametrize("weights_set", ["v2", "v3"])
@pytest.mark.parametrize("task", TASKS)
def test_v2_v3_ids_use_their_own_task_networks(task, weights_set):
    """rlasc/SemanticCoding-v2 (-v3) builds H from rlasc_env/weights/v2 (v3), pinned by sha256, -v1 from
    rlasc_env/weights; the reward is still the drop in loss."""
    v1 = gym.make("rlasc/SemanticCoding-v1", task=task)
    v2 = gym.make(f"rlasc/SemanticCoding-{weights_set}", task=task)
    assert Path(v1.unwrapped.task.weights) == ROOT / "rlasc_env" / "weights" / f"{task}.pt"
    assert Path(v2.unwrapped.task.weights) == ROOT / "rlasc_env" / "weights" / weights_set / f"{task}.pt"
    for env in (v1, v2):
        obs, info = env.reset(seed=0)
        _, reward, _, _, step_info = env.step(env.action_space.n - 1)
        assert reward == pytest.approx(info["loss"] - step_info["loss"], abs=1e-9)
        env.close()


@pytest.mark.parametrize("env_id, architecture, stream_version", [("rlasc/SemanticCoding-v1", 2, 2),
                                                                  ("rlasc/SemanticCoding-v0", 1, 1)])
def test_both_ids_pin_their_codec(env_id, architecture, stream_version):
    """-v1 runs on codec v2 (``tiny``), -v0 keeps the first codec (``tiny-v0``) and its format-1 streams."""
    codec_name = rlasc_env.ENV_PINS[env_id]["codec"]
    if not (ROOT / "codec_models" / "weights" / f"{codec_name}.pt").is_file():
        pytest.skip(f"shipped codec {codec_name} absent")
    env = gym.make(env_id, split="test")
    data = env.unwrapped.parts.images
    codec = env.unwrapped.codec
    assert codec.config.architecture == architecture and codec.bitstream_version == stream_version
    (_, info0), steps = run_episode(env.unwrapped, seed=0)
    image = data[info0["image_index"]][0]
    info = steps[-1][4]
    blob = codec.compress(image, {**{m: 0 for m in range(codec.num_classes)}, **info["levels"]})
    assert blob[2] == stream_version and info["bits"] == len(blob) * 8
    env.close()


def test_ids_pin_the_shipped_files():
    """Every registered id's pins match the shipped files (retraining one must update rlasc_env/versions.py),
    env.spec records them, and a mismatch is refused with a message."""
    from codec_models.checkpoint import resolve_codec_path
    from rlasc_env.versions import ENV_PINS, StaleWeightsError, check_pins, file_sha256, pinned_task_weights

    for env_id, pins in ENV_PINS.items():
        assert file_sha256(resolve_codec_path(pins["codec"])) == pins["codec_sha256"], env_id
        for task, sha in pins["task_sha256"].items():
            assert file_sha256(pinned_task_weights(pins, task)) == sha, (env_id, task)
        assert gym.spec(env_id).kwargs["env_id"] == env_id
        assert rlasc_env.CARDS[env_id].pins["codec_sha256"] == pins["codec_sha256"]
    stale = {**ENV_PINS["rlasc/SemanticCoding-v1"], "env_id": "rlasc/SemanticCoding-v1", "codec_sha256": "0" * 64}
    with pytest.raises(StaleWeightsError, match="pins codec 'tiny'"):
        check_pins(stale, "tiny", "segmentation", "streets", None)
    check_pins(stale, "my-own-codec.pt", "segmentation", "streets", None)  # the caller's own codec: not checked
    wrong_task = {**stale, "codec_sha256": ENV_PINS["rlasc/SemanticCoding-v1"]["codec_sha256"],
                  "task_sha256": {"detection": "1" * 64}}
    with pytest.raises(StaleWeightsError, match="detection network"):
        check_pins(wrong_task, "tiny", "detection", "streets", None)
    with pytest.raises(StaleWeightsError, match="streets data"):
        check_pins({**wrong_task, "task_sha256": {}, "data": {"dataset": "streets", "generator_version": 1}},
                   "tiny", "detection", "streets", None)
