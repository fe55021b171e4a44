"""Learning curve of REINFORCE on SemanticCoding-v4 started at the preview rule:

    python experiments/reinforce_from_rule/rule_start_curve.py --scale 10 --episodes 300 --every 100 \\
        --hp skip_learning_rate=0.003 learning_rate=3e-5 entropy_coef=0.0

Trains the -v4 tiny preset (overridden by ``--hp``) with the preview head started at ``--scale`` x the preview rule's
score (weight ``--rule-weight``: 1.1, what train_agent.py fits on 16 training images) and prints the argmax policy's
mean return and gap closure on the first ``--images`` test images before training and every ``--every`` episodes.
How the -v4 preset's step sizes were chosen (docs/env_v4.md, "Starting at the rule").
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from rlasc_harness.config import TrainAgentConfig
from rlasc_harness.evaluation import evaluate
from agents.hyperparams import apply_overrides
from agents.reinforce import ReinforceConfig, ReinforceTrainer
from rlasc_harness.runner import hyperparameters, make_engine


@dataclass
class CurveConfig:
    scale: float = 10.0
    """preview_head_init: the head starts at this multiple of the rule's score."""
    rule_weight: float = 1.1
    episodes: int = 300
    every: int = 100
    seed: int = 0
    images: int = 48
    hp: tuple[str, ...] = ()
    """key=value overrides of the -v4 tiny REINFORCE preset."""
    best_fixed: float = 1.9757
    """Return of the best fixed level on these images (level 4)."""
    greedy: float = 2.5575
    threads: int = 1


def main(cfg: CurveConfig) -> list[tuple[int, float]]:
    torch.set_num_threads(cfg.threads)
    agent_cfg = TrainAgentConfig(env_id="rlasc/SemanticCoding-v4", eval_images=cfg.images)
    engine = make_engine(agent_cfg, "segmentation", "cpu")
    hp = apply_overrides(hyperparameters(agent_cfg), [*cfg.hp, f"preview_head_init={cfg.scale}"])
    hp.pop("n_episodes", None)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    trainer = ReinforceTrainer(engine, ReinforceConfig(**hp), seed=cfg.seed, rule_weight=cfg.rule_weight)
    started, curve = time.time(), []
    while True:
        policy = trainer.policy
        ret = evaluate(engine, {"policy": lambda obs, slots: policy.act(obs, True)}, cfg.images,
                       greedy=False)["policy"]["return_mean"]
        curve.append((trainer.stats.episodes, ret))
        print(f"episodes {trainer.stats.episodes}: return {ret:.4f}, gap closure "
              f"{(ret - cfg.best_fixed) / (cfg.greedy - cfg.best_fixed):.3f} ({time.time() - started:.0f} s)", flush=True)
        if trainer.stats.episodes >= cfg.episodes:
            return curve
        trainer.train(episodes=min(trainer.stats.episodes + cfg.every, cfg.episodes), progress=False)


if __name__ == "__main__":
    main(tyro.cli(CurveConfig))
