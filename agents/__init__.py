"""RL-ASC agents (stage II, Section II-C): policies, algorithms and baselines, nothing else.

    from agents.policy import PaperPolicy, PaperFeaturesExtractor    # the paper's policy network (eq. 15)
    from agents.reinforce import ReinforceConfig, ReinforceTrainer   # REINFORCE (eq. 15-22)
    from agents.sb3 import train_sb3                                 # stable-baselines3 PPO / A2C / DQN / MaskablePPO
    from agents.rollout import RolloutTrainer                        # rollout policy iteration on the preview rule
    from agents.baselines import FixedPolicy, PreviewRule, greedy_episodes

Agents drive the environment through ``rlasc_env.engine`` (the public engine API). Evaluation, scoring and training
runs are in ``rlasc_harness``. Submodules are imported on first use, so ``train_agent.py --help`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PaperFeaturesExtractor", "PaperPolicy"]

_LAZY = {"PaperFeaturesExtractor": "policy", "PaperPolicy": "policy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
