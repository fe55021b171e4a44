"""Rate-budget mode (bpp_budget): the rate term leaves the reward, levels over the budget are masked, and no episode
ends over its budget, whatever the policy that respects the mask."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rlasc_env
from rlasc_env import CURRENT_ID


@pytest.fixture(scope="module")
def env():
    return gym.make(CURRENT_ID, split="test", bpp_budget=0.6).unwrapped


def test_no_episode_exceeds_its_budget_and_the_mask_is_exact(env):
    rng = np.random.default_rng(0)
    for episode in range(6):
        budget = [0.45, 0.6, 0.9][episode % 3]
        _, info = env.reset(seed=episode, options={"bpp_budget": budget})
        assert info["bpp_budget"] == budget and info["bpp"] <= budget
        done = False
        while not done:
            mask = info["action_mask"]
            assert mask[0] and np.array_equal(mask, env.action_masks())
            level = int(rng.choice(np.flatnonzero(mask)))  # a random policy that respects the mask
            if not mask.all():  # a masked level is refused, with the allowed ones named
                with pytest.raises(ValueError, match="over its rate budget"):
                    env.step(int(np.flatnonzero(~mask)[0]))
            _, reward, done, _, info = env.step(level)
            assert info["bpp"] <= budget
    assert env.core.bits[0] <= env.core.budget_bits[0]


def test_reward_drops_the_rate_term(env):
    env.reset(seed=3, options={"bpp_budget": 2.5})  # a budget no level reaches: nothing masked
    assert env.action_masks().all()
    _, _, _, _, info0 = env.step(5)
    plain = gym.make(CURRENT_ID, split="test", lam=0.0).unwrapped
    plain.reset(seed=3)
    _, reward_plain, _, _, info_plain = plain.step(5)
    env.reset(seed=3, options={"bpp_budget": 2.5})
    _, reward_budget, _, _, _ = env.step(5)
    assert reward_budget == pytest.approx(reward_plain, abs=1e-9)  # lam 0: no rate term
    assert info0["lam"] == 1.0 and "bpp_budget" not in plain.reset(seed=3)[1]


def test_bad_budgets_are_refused(env):
    for bad in (0, -1, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="bpp_budget"):
            rlasc_env.resolve_env(CURRENT_ID, bpp_budget=bad)
    with pytest.raises(ValueError, match="above its budget"):
        env.reset(seed=0, options={"bpp_budget": 0.05})  # below every concept at level 0


def test_maskable_ppo_learns_within_the_budget():
    sb3_contrib = pytest.importorskip("sb3_contrib")

    env = gym.make(CURRENT_ID, split="train", bpp_budget=0.5)
    model = sb3_contrib.MaskablePPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0,
                                    device="cpu")
    model.learn(64)
    inner = env.unwrapped
    obs, info = env.reset(seed=11)
    done = False
    while not done:
        action, _ = model.predict(obs, action_masks=inner.action_masks(), deterministic=True)
        obs, _, done, _, info = env.step(int(action))
    assert info["bpp"] <= 0.5
