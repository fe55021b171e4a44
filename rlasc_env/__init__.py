"""RL-ASC environment (arXiv 2208.04094, Section II-C): the MDP of semantic bit allocation.

Importing this package registers the Gymnasium ids ``rlasc/SemanticCoding-v1`` (the id of the
published agent results: codec v2, whose levels change the reconstruction by construction),
``rlasc/SemanticCoding-v2`` (the same codec and data with the stronger task networks H of
``rlasc_env/weights/v2/``), ``rlasc/SemanticCoding-v3`` (the same again with the GPU-trained task networks of
``rlasc_env/weights/v3/``), ``rlasc/SemanticCoding-v4`` (-v1's codec, task networks and data, with the level preview
of ``rlasc_env.preview`` in the observation) and ``rlasc/SemanticCoding-v0`` (the first codec, ``tiny-v0``, kept
reproducible)::

    import gymnasium as gym
    import rlasc_env
    env = gym.make("rlasc/SemanticCoding-v1", task="segmentation")

``BatchedSemanticCodingEnv`` steps many images as one batch; ``SB3VecEnvAdapter`` exposes it to
stable-baselines3. Downstream tasks (the semantic loss L_S) are plugins: see ``rlasc_env.tasks``.
"""
from __future__ import annotations

import gymnasium as gym

from .env import SemanticCodingEnv
from .tasks import make_task, register_task, registered_tasks
from .vector import BatchedSemanticCodingEnv, SB3VecEnvAdapter
from .versions import ENV_PINS, StaleWeightsError

ENV_ID = "rlasc/SemanticCoding-v1"  # the current id
ENV_ID_V2 = "rlasc/SemanticCoding-v2"  # task networks v2; agent results are on -v1 so far
ENV_ID_V3 = "rlasc/SemanticCoding-v3"  # task networks v3 (wider SegNetH, trained on a GPU)
ENV_ID_V4 = "rlasc/SemanticCoding-v4"  # -v1 with the level preview in the observation (rlasc_env.preview)
ENV_ID_V0 = "rlasc/SemanticCoding-v0"
# Each id pins the codec, the task networks and the data that define its learning results (rlasc_env.versions);
# env.spec.kwargs["pins"] records them.
ENV_CODECS = {ENV_ID: "tiny", ENV_ID_V2: "tiny", ENV_ID_V3: "tiny", ENV_ID_V4: "tiny", ENV_ID_V0: "tiny-v0"}

for _env_id, _codec in ENV_CODECS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point="rlasc_env.env:SemanticCodingEnv",
                     kwargs={"codec": _codec, "pins": {"env_id": _env_id, **ENV_PINS[_env_id]},
                             "preview": ENV_PINS[_env_id].get("observation") == "preview"})

__all__ = ["ENV_ID", "ENV_ID_V2", "ENV_ID_V3", "ENV_ID_V4", "ENV_ID_V0", "ENV_CODECS", "ENV_PINS", "StaleWeightsError", "BatchedSemanticCodingEnv", "SB3VecEnvAdapter", "SemanticCodingEnv", "make_task",
           "register_task", "registered_tasks"]
