"""RL-ASC agents (stage II, Section II-C): the paper's policy network and REINFORCE (eq. 15-22),
stable-baselines3 agents on the batched env, baseline policies and their evaluation.

    from agents.policy import PaperPolicy, PaperFeaturesExtractor
    from agents.reinforce import ReinforceConfig, ReinforceTrainer
    from agents.evaluation import evaluate

Submodules are imported on first use, so ``train_agent.py --help`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ALGOS", "TrainAgentConfig", "PaperFeaturesExtractor", "PaperPolicy"]

_LAZY = {"ALGOS": "config", "TrainAgentConfig": "config", "PaperFeaturesExtractor": "policy",
         "PaperPolicy": "policy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
