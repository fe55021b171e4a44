"""Arithmetic per transition of the current id and -v4 (issue 30): where a step's FLOPs go, and what bounds a faster env.

    python experiments/env_speed/flops.py --images 6 --json experiments/env_speed/flops.json
    python experiments/env_speed/flops.py --images 6 --ids rlasc/SemanticCoding-v7 rlasc/SemanticCoding-v4 \
        --json experiments/env_speed/flops_v7.json

Counts with torch's FlopCounterMode (convolutions and matrix products; elementwise work is not counted) over whole
episodes with random actions on distinct test images: per reset, per step, and within a step the level preview
(G_l at every level and phi on every pasted picture) and the task network's pass on the reconstruction (the task
loss of eq. 13, which every step's reward needs) against the rest (G_g, attention, phi).
"""
from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import rlasc_env  # noqa: F401  (registers the ids)
from rlasc_env import preview as preview_module


def count(env_id: str, images: int, seed: int = 0) -> dict[str, float]:
    env = gym.make(env_id, split="test").unwrapped
    rng = np.random.default_rng(seed)
    reset_f, step_f, preview_f, steps = 0.0, 0.0, 0.0, 0
    original = preview_module._measure
    seen = {"flops": 0.0, "task": 0.0, "in_step": False}
    task = env.parts.task
    task_loss = task.loss

    def task_measured(*args, **kwargs):  # the task network's pass inside a step (resets run it too, not counted)
        with FlopCounterMode(display=False) as inner:
            out = task_loss(*args, **kwargs)
        if seen["in_step"]:
            seen["task"] += inner.get_total_flops()
        return out

    task.loss = task_measured

    def measured(core, slots):  # the preview's own FLOPs, counted inside the step's
        with FlopCounterMode(display=False) as inner:
            out = original(core, slots)
        seen["flops"] += inner.get_total_flops()
        return out

    preview_module._measure = measured
    try:
        for i in range(images):
            env.parts.memo.clear()
            env.parts.preview_memo.clear() if hasattr(env.parts, "preview_memo") else None
            with FlopCounterMode(display=False) as fc:
                env.reset(options={"index": i})
            reset_f += fc.get_total_flops()
            done = False
            while not done:
                seen["in_step"] = True
                with FlopCounterMode(display=False) as fc:
                    _, _, done, _, _ = env.step(int(rng.integers(env.action_space.n)))
                seen["in_step"] = False
                step_f += fc.get_total_flops()
                steps += 1
    finally:
        preview_module._measure = original
        task.loss = task_loss
    preview_f = seen["flops"]
    return {"env_id": env_id, "images": images, "steps": steps, "gflop_per_reset": reset_f / images / 1e9,
            "gflop_per_step": step_f / steps / 1e9, "gflop_preview_per_step": preview_f / steps / 1e9,
            "gflop_task_network_per_step": seen["task"] / steps / 1e9,
            "gflop_per_transition": (reset_f + step_f) / steps / 1e9}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--json", default=None)
    p.add_argument("--ids", nargs="+", default=["rlasc/SemanticCoding-v6", "rlasc/SemanticCoding-v4"])
    a = p.parse_args()
    torch.set_num_threads(1)
    out = [count(i, a.images) for i in a.ids]
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
