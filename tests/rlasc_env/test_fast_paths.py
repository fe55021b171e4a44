"""Issue 30's fast paths (codec_models.fast_paths) against the reference ops they replace: G_l bit for bit, phi in a
window equal to the full pass inside it, and the current id's rewards, bits and observations the same to 1e-5 on
every task and both observations, single and batched."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from codec_models.fast_paths import enabled, reference_ops, windowed_preview, windowed_preview_enabled
from codec_models.perceptual import window_features
from rlasc_env import CURRENT_ID, make_batched_env
from rlasc_env.preview import level_preview


def test_reference_ops_switch_restores_the_fast_paths():
    assert enabled() and not windowed_preview_enabled()
    with windowed_preview():
        assert windowed_preview_enabled()
        with reference_ops():  # the reference ops turn the windowed preview off too
            assert not windowed_preview_enabled()
    assert not windowed_preview_enabled()
    assert enabled()
    with reference_ops():
        assert not enabled()
        with reference_ops():
            assert not enabled()
        assert not enabled()
    assert enabled()
    with pytest.raises(RuntimeError), reference_ops():
        raise RuntimeError("inside")
    assert enabled()


def _generator_outputs(codec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    local = codec.local
    gen = torch.Generator().manual_seed(seed)
    count = 3 * codec.num_classes
    h, w = codec.config.height // 8, codec.config.width // 8
    concepts = torch.randn(count, local.trunk[0].in_channels, h, w, generator=gen)
    concepts *= torch.rand(count, 1, h, w, generator=gen) > 0.4
    class_ids = torch.randint(0, codec.num_classes, (count,), generator=gen)
    with torch.inference_mode():
        fast = local.run_heads(local.run_trunk(concepts), class_ids)
        with reference_ops():
            reference = local.run_heads(local.run_trunk(concepts), class_ids)
    return fast, reference


def test_local_generator_fast_path_is_bit_for_bit_on_the_current_codec():
    """Channels-last transposed convolutions and one head call per class: on the current id's codec, the reference
    path's floats exactly (on other shapes, such as the test codec's 4-channel heads, within float rounding)."""
    from codec_models.checkpoint import load_codec
    from rlasc_env import CARDS

    codec = load_codec(CARDS[CURRENT_ID].pins["codec"]).eval()
    for seed in range(2):
        fast, reference = _generator_outputs(codec, seed)
        assert torch.equal(fast, reference)


def test_local_generator_fast_path_on_the_test_codec(test_codec):
    fast, reference = _generator_outputs(test_codec, 0)
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("box", [(5, 14, 9, 30), (0, 3, 0, 64), (30, 32, 60, 64), (0, 32, 0, 64)])
def test_window_features_are_the_full_pass_inside_the_window(test_codec, box):
    phi = test_codec.perceptual.eval()
    gen = torch.Generator().manual_seed(1)
    base = torch.rand(1, 3, 32, 64, generator=gen)
    pictures = base.repeat(4, 1, 1, 1)
    top, bottom, left, right = box
    pictures[..., top:bottom, left:right] = torch.rand(4, 3, bottom - top, right - left, generator=gen)
    with torch.inference_mode():
        full = phi.features(pictures)
        base_feats = phi.features(base)
        parts = window_features(phi, base_feats, pictures, box)
    assert len(parts) == len(full)
    for (vals, (t, b, lft, r)), whole, ref in zip(parts, full, base_feats):
        torch.testing.assert_close(vals, whole[..., t:b, lft:r], atol=1e-5, rtol=1e-5)
        outside = torch.ones(whole.shape[-2:], dtype=torch.bool)
        outside[t:b, lft:r] = False  # beyond the window the pictures' activations are the base picture's
        torch.testing.assert_close(whole[..., outside], ref.expand_as(whole)[..., outside], atol=1e-5, rtol=1e-5)


def _episodes(env, images: list[int], seed: int):
    """Per step of one episode per image (seeded random actions): the observation's stats, the level preview in
    reward units (served by the preview memo: the floats the observation was made of), the bits and the reward."""
    rng = np.random.default_rng(seed)
    out = []

    def raw() -> np.ndarray:
        core = env.core
        if not core.preview or core.t[0] >= core.count[0]:
            return np.zeros(0)
        with torch.inference_mode():
            return np.concatenate(level_preview(core, np.zeros(1, np.int64)), 1)

    for index in images:
        obs, info = env.reset(seed=seed, options={"index": index})
        rows = [(obs["stats"].copy(), raw(), info["bits"])]
        done = False
        while not done:
            obs, reward, done, _, info = env.step(int(rng.integers(env.action_space.n)))
            rows.append((obs["stats"].copy(), raw(), info["bits"], reward))
        out.append(rows)
    return out


def _forget(env) -> None:
    env.parts.memo.clear()
    env.parts.preview_memo.clear()


def _paired_rows(env, windowed: bool):
    """Rows of the same episodes (images 0 and 7, seed 3) on the fast paths and on the reference ops, cold memos,
    paired step by step (the episodes must have the same lengths)."""
    with windowed_preview(windowed):
        fast = _episodes(env, [0, 7], seed=3)
    _forget(env)
    with reference_ops():
        reference = _episodes(env, [0, 7], seed=3)
    pairs = []
    for a, b in zip(fast, reference, strict=True):
        assert len(a) == len(b)
        pairs += list(zip(a, b))
    return pairs


@pytest.mark.parametrize("observation", ["preview", "paper"])
@pytest.mark.parametrize("task", ["segmentation", "detection", "classification"])
def test_current_id_fast_paths_are_the_reference_ops_floats(task, observation):
    """The default fast paths (windowed preview off): rewards, bits and observations the same floats."""
    env = gym.make(CURRENT_ID, task=task, observation=observation, split="test").unwrapped
    for row_a, row_b in _paired_rows(env, windowed=False):
        np.testing.assert_array_equal(row_a[0], row_b[0])
        np.testing.assert_array_equal(row_a[1], row_b[1])
        assert row_a[2:] == row_b[2:]


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_windowed_preview_matches_the_reference_ops(task):
    """Rewards and bits the same, the level preview (reward units) to 1e-5. The observation's preview entries are
    those divided by the concept's stake, which can be 1e-3 or less: float32 rounding of phi's activations (about
    1e-7 of L_P, in any implementation; measured against a float64 phi, the reference path's error is as large as
    the windowed one's) then reaches about 3e-5 there, so the stats as given are compared to 1e-4."""
    env = gym.make(CURRENT_ID, task=task, split="test").unwrapped
    for row_a, row_b in _paired_rows(env, windowed=True):
        np.testing.assert_allclose(row_a[0], row_b[0], atol=1e-4, rtol=0)  # observation stats
        np.testing.assert_allclose(row_a[1], row_b[1], atol=1e-5, rtol=0)  # the preview, reward units
        assert row_a[2] == row_b[2]  # bits: the same bitstream
        if len(row_a) == 4:
            assert abs(row_a[3] - row_b[3]) <= 1e-5  # reward


@pytest.mark.parametrize("windowed", [False, True])
def test_batched_env_fast_paths_match_the_reference_ops(windowed):
    venv = make_batched_env(CURRENT_ID, num_envs=3, split="test")
    q = venv.single_action_space.n

    def play():
        rng = np.random.default_rng(5)
        obs, _ = venv.reset(seed=5)
        rows = [obs["stats"].copy()]
        for _ in range(12):
            obs, reward, _, _, info = venv.step(rng.integers(q, size=3))
            rows.append((obs["stats"].copy(), reward.copy(), info["bits"].copy()))
        return rows

    with windowed_preview(windowed):
        fast = play()
    venv.parts.memo.clear()
    venv.parts.preview_memo.clear()
    with reference_ops():
        reference = play()
    atol = 1e-4 if windowed else 0.0  # stats: see test_windowed_preview_matches_the_reference_ops
    np.testing.assert_allclose(fast[0], reference[0], atol=atol, rtol=0)
    for (obs_a, rew_a, bits_a), (obs_b, rew_b, bits_b) in zip(fast[1:], reference[1:]):
        np.testing.assert_allclose(obs_a, obs_b, atol=atol, rtol=0)
        np.testing.assert_allclose(rew_a, rew_b, atol=1e-5 if windowed else 0.0, rtol=0)
        np.testing.assert_array_equal(bits_a, bits_b)


def test_preview_after_memoized_steps_recomputes_its_base(make_env):
    """A step the transition memo serves leaves x_hat stale and drops the kept phi(x_hat); the preview then rebuilds
    both, and gives what it gave the first time."""
    env = make_env(observation="preview").unwrapped
    with windowed_preview():
        first = _episodes(env, [4], seed=1)
        env.parts.preview_memo.clear()  # the transition memo keeps its entries: every step below is served by it
        hits = env.parts.memo.hits
        again = _episodes(env, [4], seed=1)
    assert env.parts.memo.hits > hits
    for row_a, row_b in zip(first[0], again[0]):
        np.testing.assert_allclose(row_a[1], row_b[1], atol=1e-7, rtol=0)
        assert row_a[2:] == row_b[2:]


def test_copies_of_one_image_get_the_reference_floats():
    """REINFORCE's rollouts: several slots on one image step together. The fast paths must not change the batch the
    networks see (sharing G_l across such slots did, by a last bit, and the default command trained another policy)."""
    from rlasc_env.engine import make_engine, reset_slots

    engine = make_engine(sizes={"test": 2, "train": 1})
    images = engine.parts("test").images

    def play() -> list[np.ndarray]:
        engine.parts("test").memo.clear()
        engine.parts("test").preview_memo.clear()
        core = engine.core("test", 4)
        reset_slots(core, images, np.arange(4), [1, 1, 1, 1])
        rng = np.random.default_rng(0)
        rows = []
        while (live := np.flatnonzero(core.t < core.count)).size:
            rows.append(core.observation(live)["stats"])
            _, _, info = core.step(live, rng.integers(core.Q, size=len(live)))[:3]
            rows.append(np.asarray(info["semantic_loss"]))
        return rows

    fast = play()
    with reference_ops():
        reference = play()
    assert len(fast) == len(reference)
    for a, b in zip(fast, reference):
        np.testing.assert_array_equal(a, b)


def test_tune_allocator_once_per_process_and_off_by_environment(monkeypatch):
    import sys

    import codec_models.fast_paths as fp

    monkeypatch.setattr(fp, "_allocator_tuned", None)
    monkeypatch.setenv("RLASC_TUNE_MALLOC", "0")
    assert fp.tune_allocator() is False
    monkeypatch.delenv("RLASC_TUNE_MALLOC")
    assert fp.tune_allocator() is False  # decided once per process
    monkeypatch.setattr(fp, "_allocator_tuned", None)
    assert fp.tune_allocator() is sys.platform.startswith("linux")  # glibc's mallopt on Linux


def test_windowed_preview_turned_on_between_episodes_uses_fresh_activations(make_env):
    """phi(x_hat) is kept only while the windowed preview is on; what a slot kept in an earlier episode is dropped at
    reset, so turning the preview on again never reads another image's activations."""
    env = make_env(observation="preview").unwrapped
    with windowed_preview():
        _episodes(env, [4], seed=1)
    _episodes(env, [5], seed=2)  # off: nothing kept, the kept flags of episode 4 must not survive
    with windowed_preview():
        windowed = _episodes(env, [6], seed=3)
    _forget(env)
    with reference_ops():
        reference = _episodes(env, [6], seed=3)
    for row_a, row_b in zip(windowed[0], reference[0]):
        np.testing.assert_allclose(row_a[1], row_b[1], atol=1e-5, rtol=0)
