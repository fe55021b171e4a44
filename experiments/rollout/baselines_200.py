"""Fixed levels and greedy look-ahead on the first 200 segmentation test images (the reference of gap closure there).

    python experiments/rollout/baselines_200.py --out docs/agents_v4/baselines_200.json

preview_correction.py's 200-image evaluation reports returns against the preview rule; this gives the best fixed
level and greedy on the same images, so gap closure, (policy - best fixed) / (greedy - best fixed), can be read off.
Played on -v1's engine: -v4's rewards are -v1's (tests/test_preview.py), without the preview's cost. About 8 minutes
on 2 threads. Results in docs/env_v4.md, "The right target".
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from agents.baselines import FixedPolicy
from rlasc_harness.config import TrainAgentConfig
from rlasc_harness.evaluation import evaluate
from rlasc_harness.runner import make_engine


@dataclass
class BaselinesConfig:
    task: str = "segmentation"
    images: int = 200
    threads: int = 2
    out: str | None = None


def main(cfg: BaselinesConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    engine = make_engine(TrainAgentConfig(env_id="rlasc/SemanticCoding-v1", eval_images=cfg.images), cfg.task, "cpu")
    started = time.time()
    fixed = {f"fixed_{q}": FixedPolicy(q, engine.num_levels) for q in range(engine.num_levels)}
    ev = evaluate(engine, fixed, cfg.images, greedy=True)
    out: dict = {k: {"return": v["return_mean"], "bpp": v["bpp_mean"]} for k, v in ev.items()}
    out["seconds"] = time.time() - started
    print(json.dumps(out, indent=1))
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main(tyro.cli(BaselinesConfig))
