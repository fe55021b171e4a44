#!/usr/bin/env python
"""Train the RL-ASC bit-allocation agent (stage II, Algorithm 2) on a registered id and score it on the benchmark
protocol (the first 200 test images) against the baselines on the same images.

    python train_agent.py                                   # REINFORCE on rlasc/SemanticCoding-v7, segmentation
    python train_agent.py --algo ppo --steps 20000 --json runs/ppo.json
    python train_agent.py --seeds 0 1 2 3 4 --task segmentation detection
    python train_agent.py --observation paper               # the paper's concept observation (no level preview)
    python train_agent.py --eval-only runs/agent/reinforce-segmentation-0/policy.pt
    python train_agent.py --env-id rlasc/SemanticCoding-v4 --eval-images 48   # a frozen id (its documented figure)

Every flag is a field of rlasc_harness.config.TrainAgentConfig; hyperparameters are in
agents/hyperparams/<algo>.yml (override with --hp key=value).
"""
from __future__ import annotations

from rlasc_harness.cli import main

if __name__ == "__main__":
    main()
