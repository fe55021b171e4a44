"""Step time of rlasc/SemanticCoding-v1 against -v2 and -v3 (same codec and data, other task networks), side by side.

    python experiments/env_speed/step_cost_ids.py --steps 200 --repeats 3 --ids v1 v2 v3

One torch thread; per task, a single env of each id runs ``--steps`` random actions from seeded resets (the memo
cleared before each block, so every transition is computed), alternating between the ids ``--repeats`` times;
the medians of the per-block milliseconds per transition are printed, and their ratios to the first id.
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


def main(steps: int, repeats: int, ids: list[str]) -> None:
    torch.set_num_threads(1)
    for task in ("segmentation", "detection", "classification"):
        envs = {i: gym.make(f"rlasc/SemanticCoding-{i}", task=task, split="test") for i in ids}
        times: dict[str, list[float]] = {i: [] for i in envs}
        for r in range(repeats):
            for env_id, env in envs.items():
                memo = getattr(env.unwrapped.core, "memo", None)
                if memo is not None and hasattr(memo, "clear"):
                    memo.clear()
                times[env_id].append(block(env, steps, seed=r))
        med = {i: statistics.median(t) for i, t in times.items()}
        first = med[ids[0]]
        print(f"{task}: " + ", ".join(f"-{i} {m:.1f} ms per transition (x{m / first:.2f})" for i, m in med.items()),
              flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ids", nargs="+", default=["v1", "v2", "v3"], help="versions of rlasc/SemanticCoding")
    args = parser.parse_args()
    main(args.steps, args.repeats, args.ids)
