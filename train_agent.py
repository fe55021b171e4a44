#!/usr/bin/env python
"""Train the RL-ASC bit-allocation agent (stage II, Algorithm 2) and evaluate it against the
baselines (random, every fixed level, greedy look-ahead) on the same held-out test images.

    python train_agent.py                                   # REINFORCE, tiny preset, segmentation
    python train_agent.py --algo ppo --steps 20000 --json runs/ppo.json
    python train_agent.py --seeds 0 1 2 3 4 --task segmentation detection
    python train_agent.py --eval-only runs/agent/reinforce-segmentation-0/policy.pt
    python train_agent.py --preset paper --codec path/to/paper_codec.pt   # the paper's settings

Every flag is a field of agents.config.TrainAgentConfig; hyperparameters are in
agents/hyperparams/<algo>.yml (override with --hp key=value).
"""
from __future__ import annotations

from agents.cli import main

if __name__ == "__main__":
    main()
