"""Issue 30: process CPU time per transition of the current id on the reference ops, on the default fast paths
(codec_models.fast_paths, the same floats) and with the windowed level preview on (float rounding), interleaved in
one process, one torch thread, cold memos: a single env (160 random steps) and the batched env of 16 (12 calls).

    python experiments/env_speed/fast_paths_time.py docs/env_speed/fast_paths_s23_cpu_ms.json
"""
from __future__ import annotations

import contextlib
import json
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from codec_models.fast_paths import reference_ops, windowed_preview
from rlasc_env import CURRENT_ID, make_batched_env

CONFIGS = {"reference": reference_ops, "exact": contextlib.nullcontext, "exact+windowed": windowed_preview}


def cold_start(env, seed: int) -> tuple[np.random.Generator, float]:
    """Empty the memos, reset (untimed); the action generator and the CPU clock's start."""
    env.parts.memo.clear()
    env.parts.preview_memo.clear()
    env.reset(seed=seed)
    return np.random.default_rng(seed), time.process_time()


def run_single(env, seed: int, steps: int = 160) -> float:
    rng, cpu = cold_start(env, seed)
    for _ in range(steps):
        _, _, done, _, _ = env.step(int(rng.integers(env.action_space.n)))
        if done:
            env.reset()
    return (time.process_time() - cpu) / steps * 1000


def run_batched(venv, seed: int, calls: int = 12) -> float:
    rng, cpu = cold_start(venv, seed)
    for _ in range(calls):
        venv.step(rng.integers(venv.single_action_space.n, size=venv.num_envs))
    return (time.process_time() - cpu) / (calls * venv.num_envs) * 1000


def main(out: str, repeats: int = 3) -> None:
    torch.set_num_threads(1)
    env = gym.make(CURRENT_ID).unwrapped
    venv = make_batched_env(CURRENT_ID, num_envs=16)
    res = {name: {"single": [], "batched": []} for name in CONFIGS}
    for r in range(repeats):
        for name, switch in CONFIGS.items():
            with switch():
                res[name]["single"].append(run_single(env, 100 + r))
                res[name]["batched"].append(run_batched(venv, 200 + r))
        print(r, {k: (round(float(np.median(v["single"])), 1), round(float(np.median(v["batched"])), 1))
                  for k, v in res.items()}, flush=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
