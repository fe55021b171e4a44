"""RL-ASC environment (arXiv 2208.04094, Section II-C): the MDP of semantic bit allocation.

Importing this package registers the Gymnasium ids. The benchmark is the current id, ``rlasc/SemanticCoding-v7``;
its options (task, observation, lam, eta, split) are chosen at make time::

    import gymnasium as gym
    import rlasc_env
    env = gym.make("rlasc/SemanticCoding-v7", task="segmentation", observation="preview")
    venv = gym.make_vec("rlasc/SemanticCoding-v7", num_envs=8, vectorization_mode="vector_entry_point")

Every id reaches the MDP through :func:`resolve_env` (``rlasc_env.registration``), which checks the id's pins.
Older ids (``-v0`` ... ``-v6``) stay registered, frozen; :func:`version_history` has one line per id.
``rlasc_env.engine`` is the batched engine API that agents and the harness drive; ``rlasc_env.score`` the
benchmark score. Downstream tasks (the semantic loss L_S) are plugins: see ``rlasc_env.tasks``.
"""
from __future__ import annotations

from .env import SemanticCodingEnv
from .registration import (CARDS, CURRENT_ID, EnvConfig, make_batched_env, make_env, register_ids, resolve_env,
                           version_history)
from .tasks import make_task, register_task, registered_tasks
from .vector import BatchedSemanticCodingEnv, SB3VecEnvAdapter
from .versions import ENV_PINS, StaleWeightsError

register_ids()

__all__ = ["CURRENT_ID", "CARDS", "EnvConfig", "resolve_env", "make_env", "make_batched_env", "version_history",
           "ENV_PINS", "StaleWeightsError", "BatchedSemanticCodingEnv", "SB3VecEnvAdapter", "SemanticCodingEnv",
           "make_task", "register_task", "registered_tasks"]
