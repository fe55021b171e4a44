"""RL-ASC environment (arXiv 2208.04094, Section II-C): the MDP of semantic bit allocation.

Importing this package registers the Gymnasium id ``rlasc/SemanticCoding-v0``::

    import gymnasium as gym
    import rlasc_env
    env = gym.make("rlasc/SemanticCoding-v0", task="segmentation")

``BatchedSemanticCodingEnv`` steps many images as one batch; ``SB3VecEnvAdapter`` exposes it to
stable-baselines3. Downstream tasks (the semantic loss L_S) are plugins: see ``rlasc_env.tasks``.
"""
from __future__ import annotations

import gymnasium as gym

from .env import SemanticCodingEnv
from .tasks import make_task, register_task, registered_tasks
from .vector import BatchedSemanticCodingEnv, SB3VecEnvAdapter

ENV_ID = "rlasc/SemanticCoding-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="rlasc_env.env:SemanticCodingEnv")

__all__ = ["ENV_ID", "BatchedSemanticCodingEnv", "SB3VecEnvAdapter", "SemanticCodingEnv", "make_task",
           "register_task", "registered_tasks"]
