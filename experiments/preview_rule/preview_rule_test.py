"""The preview rule of SemanticCoding-v4 at given weights on the test images (no fitting):

    python experiments/preview_rule/preview_rule_test.py --weights 0.6 0.9 1.2 1.5

Prints the mean return of agents.baselines.PreviewRule (argmax of -rate + w * perceptual) per weight on the first
``--images`` test images, and the gap closure against -v1's fixed level 4 and greedy on them (given as flags: the
default command's figures on 48 images). Choosing w by these returns tunes it on the test images: train_agent.py
fits it on training images instead (``preview_rule``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from agents.baselines import PreviewRule
from rlasc_harness.config import TrainAgentConfig
from rlasc_env.engine import run_copies
from rlasc_harness.runner import make_engine


@dataclass
class RuleConfig:
    weights: tuple[float, ...] = (0.6, 0.9, 1.2, 1.5)
    images: int = 48
    task: str = "segmentation"
    best_fixed: float = 1.9757
    """Return of the best fixed level on these images (level 4, the default command's)."""
    greedy: float = 2.5575
    threads: int = 2


def main(cfg: RuleConfig) -> dict[float, float]:
    torch.set_num_threads(cfg.threads)
    engine = make_engine(TrainAgentConfig(env_id="rlasc/SemanticCoding-v4", eval_images=cfg.images), cfg.task, "cpu")
    core = engine.core("test", len(cfg.weights) * max(1, 96 // len(cfg.weights)))
    started = time.time()
    records = run_copies(core, engine.parts("test").images, list(range(cfg.images)),
                         [PreviewRule(w, engine.num_levels) for w in cfg.weights], engine.metric_name)
    out = {}
    for w, recs in zip(cfg.weights, records):
        ret = float(np.mean([r.episode_return for r in recs]))
        out[w] = ret
        print(f"w {w}: return {ret:.4f}, gap closure {(ret - cfg.best_fixed) / (cfg.greedy - cfg.best_fixed):.3f}")
    print(f"{time.time() - started:.0f} s")
    return out


if __name__ == "__main__":
    main(tyro.cli(RuleConfig))
