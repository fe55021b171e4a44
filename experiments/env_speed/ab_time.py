"""Issue 30: the env of one source tree against another's, cold, one thread: ms per transition of the single env and
of the batched env (16 envs), wall clock and process CPU time (steadier on a shared machine), and whether the
rewards and observations are the same floats.

Run it alternately from two trees (e.g. a `git worktree` of the commit before a change and this one), so that both
see the same load:

    for i in 1 2 3; do (cd ../before && python $OLDPWD/experiments/env_speed/ab_time.py --tag before --out /tmp/ab)
                       python experiments/env_speed/ab_time.py --tag after --out /tmp/ab; done
    python experiments/env_speed/ab_time.py --compare /tmp/ab before after

The tree is the current directory (its packages shadow an installed copy).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path.cwd()))


def measure(tag: str, out: Path, steps: int, batched_steps: int) -> None:
    import gymnasium as gym
    import torch

    import rlasc_env  # noqa: F401  (registers the ids)
    from rlasc_env.registration import CURRENT_ID

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make(CURRENT_ID)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rewards, stats = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        rewards.append(r)
        stats.append(obs["stats"])
        if term or trunc:
            obs, _ = env.reset()
    single, single_cpu = (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
    venv = gym.make_vec(CURRENT_ID, num_envs=16, vectorization_mode="vector_entry_point")
    venv.reset(seed=0)
    venv.step(rng.integers(6, size=16))  # first call: allocations
    batched_rewards = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batched_steps):
        _, r, *_ = venv.step(rng.integers(6, size=16))
        batched_rewards.append(r)
    batched = (time.perf_counter() - t0) / (16 * batched_steps)
    batched_cpu = (time.process_time() - c0) / (16 * batched_steps)
    runs = out / f"{tag}.jsonl"
    with runs.open("a") as f:
        f.write(json.dumps({"single_ms": 1e3 * single, "batched_ms": 1e3 * batched, "single_cpu_ms": 1e3 * single_cpu,
                            "batched_cpu_ms": 1e3 * batched_cpu}) + "\n")
    np.savez(out / f"{tag}.npz", rewards=np.array(rewards), stats=np.array(stats), batched=np.array(batched_rewards))
    print(f"{tag}: single {1e3 * single:.1f} ms/transition ({1e3 * single_cpu:.1f} CPU), "
          f"batched {1e3 * batched:.1f} ({1e3 * batched_cpu:.1f} CPU)")


def compare(out: Path, a: str, b: str) -> None:
    rows = {t: [json.loads(line) for line in (out / f"{t}.jsonl").read_text().splitlines()] for t in (a, b)}
    for key in ("single_ms", "batched_ms", "single_cpu_ms", "batched_cpu_ms"):
        ma, mb = (float(np.median([r[key] for r in rows[t]])) for t in (a, b))
        print(f"{key}: {a} {ma:.1f}, {b} {mb:.1f} (median of {len(rows[a])}/{len(rows[b])}): {ma / mb:.2f}x")
    za, zb = np.load(out / f"{a}.npz"), np.load(out / f"{b}.npz")
    for key in ("rewards", "stats", "batched"):
        print(f"{key}: identical floats {np.array_equal(za[key], zb[key])}, "
              f"largest difference {np.abs(za[key] - zb[key]).max():.2e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ab"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batched-steps", type=int, default=16)
    parser.add_argument("--compare", nargs=3, metavar=("OUT", "A", "B"))
    args = parser.parse_args()
    if args.compare:
        compare(Path(args.compare[0]), args.compare[1], args.compare[2])
    else:
        measure(args.tag, args.out, args.steps, args.batched_steps)
