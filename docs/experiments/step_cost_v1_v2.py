"""Step time of rlasc/SemanticCoding-v1 against -v2 (same codec and data, -v2's stronger task networks), side by side.

    python docs/experiments/step_cost_v1_v2.py --steps 200 --repeats 3

One torch thread; per task, a single env of each id runs ``--steps`` random actions from seeded resets (the memo
cleared before each block, so every transition is computed), alternating between the ids ``--repeats`` times;
the medians of the per-block milliseconds per transition are printed, and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import rlasc_env  # noqa: F401  (registers the ids)


def block(env: gym.Env, steps: int, seed: int) -> float:
    """Milliseconds per transition over ``steps`` random actions (resets included)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            env.reset(seed=int(rng.integers(1 << 30)))
    return 1000 * (time.perf_counter() - start) / steps


def main(steps: int, repeats: int) -> None:
    torch.set_num_threads(1)
    for task in ("segmentation", "detection", "classification"):
        envs = {i: gym.make(i, task=task, split="test") for i in ("rlasc/SemanticCoding-v1", "rlasc/SemanticCoding-v2")}
        times: dict[str, list[float]] = {i: [] for i in envs}
        for r in range(repeats):
            for env_id, env in envs.items():
                memo = getattr(env.unwrapped.core, "memo", None)
                if memo is not None and hasattr(memo, "clear"):
                    memo.clear()
                times[env_id].append(block(env, steps, seed=r))
        med = {i: statistics.median(t) for i, t in times.items()}
        v1, v2 = med["rlasc/SemanticCoding-v1"], med["rlasc/SemanticCoding-v2"]
        print(f"{task}: -v1 {v1:.1f} ms per transition, -v2 {v2:.1f} ms, ratio {v2 / v1:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.steps, args.repeats)
