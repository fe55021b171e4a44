"""The transition memo and the per-episode operating point (lam) of the environment."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rlasc_env import BatchedSemanticCodingEnv, SemanticCodingEnv
from rlasc_env.env import lam_feature
from rlasc_env.memo import StepLosses, TransitionMemo


def play(env: SemanticCodingEnv, index: int, actions: list[int], lam: float | None = None):
    options = {"index": index} if lam is None else {"index": index, "lam": lam}
    _, info0 = env.reset(seed=0, options=options)
    rewards, infos = [], []
    for a in actions:
        _, r, done, _, info = env.step(a % env.action_space.n)
        rewards.append(r)
        infos.append(info)
        if done:
            break
    return info0, rewards, infos


def test_replayed_episode_is_served_by_the_memo_with_the_same_rewards(make_env, test_codec):
    env = make_env()
    nomemo = make_env()
    nomemo.parts.memo.capacity = 0
    actions = [3, 1, 2, 5, 4, 2, 1, 3]
    first = play(env, 2, actions)[1]
    misses = env.parts.memo.misses
    again = play(env, 2, actions)[1]
    assert again == first  # the very same floats
    zeros = sum(a % env.action_space.n == 0 for a in actions[:len(first)])
    assert env.parts.memo.misses == misses and env.parts.memo.hits == len(first) - zeros
    reference = play(nomemo, 2, actions)[1]
    np.testing.assert_allclose(first, reference, atol=1e-5, rtol=0)
    # x_hat, stale after memoized steps, is rebuilt on demand and matches the decoder
    with torch.inference_mode():
        image = env.parts.images[2][0].unsqueeze(0)
        analysis = test_codec.analyse(image)
        levels = torch.zeros(1, test_codec.num_classes, dtype=torch.long)
        coded = np.flatnonzero(env.core.coded[0])
        levels[0, torch.as_tensor(coded)] = torch.as_tensor(env.core.levels_np[0, coded])
        assert env.core.hat_stale[0]
        torch.testing.assert_close(env.core.x_hat[:1], test_codec.decode(analysis, levels), atol=1e-5, rtol=0)
        assert not env.core.hat_stale[0]


def test_level_zero_step_costs_nothing_and_rewards_only_the_rate(make_env):
    env = make_env()
    _, rewards, infos = play(env, 1, [0, 0, 0, 0, 0, 0, 0, 0])
    assert all(r == 0.0 for r in rewards)  # x_hat unchanged and no extra bits
    assert env.parts.memo.misses == 0


def test_memo_empties_when_the_networks_change(make_env, test_codec):
    env = make_env()
    play(env, 3, [2, 2, 2, 2, 2, 2])
    assert len(env.parts.memo) > 0
    with torch.no_grad():
        p = next(test_codec.global_.parameters())
        p.add_(0.0)  # an in-place update bumps the version counter: the stored losses may be stale
    env.parts.memo.validate()
    assert len(env.parts.memo) == 0


def test_memo_capacity_and_stats() -> None:
    memo = TransitionMemo(capacity=2)
    for i in range(3):
        memo.put((i, (1,)), StepLosses(0.1 * i, 0.0, 0.0))
    assert len(memo) == 2 and memo.get((0, (1,))) is None and memo.get((2, (1,))).semantic == pytest.approx(0.2)
    assert memo.stats()["hits"] == 1 and memo.stats()["misses"] == 1
    off = TransitionMemo(capacity=0)
    off.put((0, ()), StepLosses(0.0, 0.0, 0.0))
    assert len(off) == 0 and not off.enabled
    with pytest.raises(ValueError):
        TransitionMemo(capacity=-1)


def test_batched_copies_share_one_pass_and_match_single_envs(test_codec, test_dataset):
    env = BatchedSemanticCodingEnv(4, task="pixel-test", codec=test_codec, images=test_dataset)
    env.reset(seed=0, options={"index": [5, 5, 5, 6]})
    _, r, *_ = env.step(np.array([2, 2, 1, 2]))
    assert r[0] == r[1]  # two slots on the same (image, prefix): one evaluation
    single = SemanticCodingEnv(task="pixel-test", codec=test_codec, images=test_dataset)
    single.parts.memo.capacity = 0
    for slot, (index, action) in enumerate([(5, 2), (5, 1), (6, 2)]):
        single.reset(options={"index": index})
        expected = single.step(action)[1]
        assert r[[0, 2, 3][slot]] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.25, 4.0])
def test_lam_per_episode(make_env, lam):
    env = make_env()
    actions = [4, 1, 3, 5, 2, 0, 1, 2]
    obs, info0 = env.reset(seed=0, options={"index": 4, "lam": lam})
    assert info0["lam"] == lam and obs["stats"][7] == pytest.approx(lam_feature(np.array(lam)))
    total = 0.0
    for a in actions:
        _, r, done, _, info = env.step(a % env.action_space.n)
        total += r
        if done:
            break
    rate = (info["bits"] - info0["bits"]) / env.core.pixels
    expected = (info0["semantic_loss"] - info["semantic_loss"]) + env.eta * (
        info0["perceptual_loss"] - info["perceptual_loss"]) - lam * rate
    assert total == pytest.approx(expected, abs=1e-9)
    # the operating point stays for the next episode until another is given
    obs, info = env.reset(options={"index": 4})
    assert info["lam"] == lam
    obs, info = env.reset(options={"index": 4, "lam": 1.0})
    assert info["lam"] == 1.0


def test_lam_per_env_and_bad_values(test_codec, test_dataset, make_env):
    env = BatchedSemanticCodingEnv(3, task="pixel-test", codec=test_codec, images=test_dataset)
    obs, info = env.reset(seed=0, options={"lam": [0.0, 1.0, 3.0]})
    np.testing.assert_allclose(obs["stats"][:, 7], [0.0, 0.5, 0.75])
    np.testing.assert_array_equal(info["lam"], [0.0, 1.0, 3.0])
    for bad in (-1.0, float("nan"), [1.0, 2.0]):
        with pytest.raises(ValueError, match="lam"):
            env.reset(options={"lam": bad})
    with pytest.raises(ValueError, match="lam"):
        make_env().reset(options={"lam": float("inf")})
    with pytest.raises(ValueError, match="unknown reset options"):
        make_env().reset(options={"lambda": 1.0})


def test_reward_presets():
    from rlasc_env.reward import REWARD_PRESETS, reward_weights

    assert reward_weights("paper") == {"lam": 1.0, "eta": 10.0} == REWARD_PRESETS["paper"]
    assert reward_weights("paper", lam=0.25) == {"lam": 0.25, "eta": 10.0}
    with pytest.raises(ValueError, match="unknown reward preset"):
        reward_weights("fast")
    with pytest.raises(ValueError, match="overrides"):
        reward_weights("paper", gamma=0.9)
