"""The environment and the agents on an accelerator, in one command (issue 30): run it the moment a GPU is lent.

    python -m rlasc_harness.env_device --out $OUT            # on the GPU machine (CUDA)
    python -m rlasc_harness.env_device --out /tmp/x --smoke  # the CPU smoke run the tests do

Writes ``$OUT/env_device.json``:

- ``throughput``: the batched env of the current id (and ``-v4``) at batch 64 / 256 / 1024: cold transitions per
  second over whole episodes (random actions, distinct images, memo emptied), and the peak GPU memory;
- ``rewards``: the same random episodes stepped on the device and on the CPU: the largest reward difference
  (float32; target 1e-4) and whether the bits agree exactly;
- ``agents``: ``train_agent.py --algo reinforce`` and ``--algo ppo`` with ``--device`` the device for a small
  budget, their wall time and episodes per second, or the error they raised.

Each part runs on its own: an error is recorded in the JSON and the next part runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlasc_env.registration import CURRENT_ID, make_batched_env

__all__ = ["batched_throughput", "reward_agreement", "agent_speed", "main"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_throughput(env_id: str, batch: int, device: str, steps: int, seed: int = 0) -> dict[str, Any]:
    """Cold transitions/s of the batched env of ``env_id`` at ``batch`` envs (same-step autoreset)."""
    from gymnasium.vector import AutoresetMode

    env = make_batched_env(env_id, num_envs=batch, autoreset_mode=AutoresetMode.SAME_STEP, device=device)
    dev = env.core.device
    rng = np.random.default_rng(seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    env.reset(seed=seed)
    env.step(rng.integers(env.single_action_space.n, size=batch))  # warm-up call, untimed
    env.parts.memo.clear()
    calls = max(1, -(-steps // batch))
    _sync(dev)
    t0 = time.perf_counter()
    env.reset(seed=seed + 1)
    for _ in range(calls):
        env.step(rng.integers(env.single_action_space.n, size=batch))
    _sync(dev)
    wall = time.perf_counter() - t0
    out = {"env_id": env_id, "batch": batch, "transitions": calls * batch, "seconds": wall,
           "transitions_per_s": calls * batch / wall}
    if dev.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    env.close()
    return out


def reward_agreement(env_id: str, device: str, episodes: int = 8, seed: int = 0) -> dict[str, Any]:
    """The same images and actions on ``device`` and on the CPU: the largest reward difference, bits equal."""
    rewards, bits = {}, {}
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 6, size=(64, episodes))
    for dev in (device, "cpu"):
        env = make_batched_env(env_id, num_envs=episodes, device=dev, split="test")
        env.reset(seed=seed, options={"index": list(range(episodes))})
        done = np.zeros(episodes, bool)
        r_all, b_all = [], []
        for t in range(64):
            _, r, term, _, info = env.step(actions[t])
            r_all.append(np.where(done, 0.0, r))
            b_all.append(np.where(done, 0, info["bits"]))
            done |= term
            if done.all():
                break
        rewards[dev], bits[dev] = np.array(r_all), np.array(b_all)
        env.close()
    return {"episodes": episodes, "max_reward_difference": float(np.abs(rewards[device] - rewards["cpu"]).max()),
            "bits_equal": bool(np.array_equal(bits[device], bits["cpu"]))}


def agent_speed(algo: str, device: str, episodes: int, smoke: bool = False) -> dict[str, Any]:
    """``train_agent.py --algo algo --device device`` for ``episodes`` training episodes (REINFORCE) or ``16 *
    episodes`` env steps (PPO), evaluated on 8 images (``smoke``: 2 images, 2 envs of 4 steps per PPO update, the
    preview rule fitted on 2 images)."""
    from rlasc_harness.config import TrainAgentConfig
    from rlasc_harness.runner import run

    budget = {"episodes": episodes} if algo == "reinforce" else {"steps": 16 * episodes}
    small = {"eval_images": 2, "preview_rule_images": 2,
             "hp": ("n_envs=2", "n_steps=4", "batch_size=8") if algo == "ppo" else ()} if smoke else {"eval_images": 8}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainAgentConfig(algo=algo, device=device, run_dir=Path(tmp), progress=False, greedy=False,
                               **budget, **small)
        t0 = time.perf_counter()
        res = run(cfg, log=lambda *a, **k: None)
        wall = time.perf_counter() - t0
    train = float(res.get("train_seconds") or wall)
    done = res.get("train_episodes") or episodes
    return {"algo": algo, "device": device, "train_episodes": done, "train_steps": res.get("train_steps"),
            "seconds": wall, "train_seconds": train, "episodes_per_s": done / train if train else None,
            "eval_return_mean": res["eval"]["policy"]["return_mean"]}


def _guarded(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as exc:  # recorded, not hidden: the JSON names the error and the traceback's last lines
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc().splitlines()[-6:]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--smoke", action="store_true", help="CPU, small batches and budgets (the tests' run)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument("--compare-env-id", default="rlasc/SemanticCoding-v4")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.smoke else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --smoke (CPU) or on the GPU machine")
    batches, steps, agent_episodes = ((4,), 8, 2) if args.smoke else ((64, 256, 1024), 4096, 200)
    out: dict[str, Any] = {"device": device if not device.startswith("cuda") else torch.cuda.get_device_name(0),
                           "env_id": CURRENT_ID, "platform": platform.platform(), "torch": torch.__version__,
                           "smoke": args.smoke, "throughput": [], "agents": []}
    for env_id in (CURRENT_ID, args.compare_env_id):
        for b in batches:
            out["throughput"].append({"env_id": env_id, "batch": b,
                                      **_guarded(batched_throughput, env_id, b, device, steps)})
    out["rewards"] = _guarded(reward_agreement, CURRENT_ID, device, 2 if args.smoke else 8)
    for algo in ("reinforce", "ppo"):
        out["agents"].append({"algo": algo, **_guarded(agent_speed, algo, device, agent_episodes, args.smoke)})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "env_device.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
