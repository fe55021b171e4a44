"""Offline datasets (Minari) of baseline and trained policies' episodes on the training split of an id.

    python -m rlasc_harness.offline_data --task segmentation --policies greedy preview_rule random --images 200
    python -m rlasc_harness.offline_data --task detection --policies rollout \\
        --policy-file runs/agent/rollout-detection-0/policy.pt
    MINARI_DATASETS_PATH=... python -c "import minari; d = minari.load_dataset('rlasc/SemanticCoding-v7-segmentation-greedy-v0')"

Each policy first plays the images through the batched engine (the greedy look-ahead peeks at every level's reward
there), then its level sequences are stepped again through ``gym.make(id, task=..., split="train")`` wrapped in
Minari's ``DataCollector``, which writes the local dataset (``$MINARI_DATASETS_PATH``, default ``~/.minari``; nothing
is uploaded or downloaded). The returns of both passes are checked to agree within 1e-5, so a dataset's returns are
those the policy earns on the id.
"""
from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from rlasc_env.registration import CURRENT_ID, TASKS

__all__ = ["POLICIES", "dataset_id", "policy_episodes", "collect_dataset", "main"]

POLICIES = ("greedy", "preview_rule", "random", "rollout", "reinforce")


def dataset_id(env_id: str, task: str, policy: str, version: int = 0) -> str:
    """``rlasc/<id name>-<task>-<policy>-v<version>`` (Minari's namespace/name-version)."""
    return f"rlasc/{env_id.split('/')[-1]}-{task}-{policy}-v{version}"


def policy_episodes(engine: Any, policy: str, num_images: int, seed: int = 0, policy_file: str | None = None,
                    log: Any = print) -> list[Any]:
    """Episode records of ``policy`` on the first ``num_images`` training images of ``engine``."""
    from agents.baselines import RandomPolicy, greedy_episodes
    from rlasc_env.engine import run_episodes

    from .runner import fitted_preview_rule
    from .scoring import as_act_fn

    images = engine.parts("train").images
    indices = range(num_images)
    q = engine.num_levels
    if policy == "greedy":
        return greedy_episodes(engine.core("train", q * 8), images, indices, engine.metric_name)
    if policy == "preview_rule":
        act = fitted_preview_rule(engine, 16, log)
    elif policy == "random":
        act = RandomPolicy(q, seed)
    elif policy in ("rollout", "reinforce"):
        if policy_file is None:
            raise ValueError(f"policy {policy!r} needs --policy-file (a trained {policy} policy.pt)")
        act, _ = as_act_fn(policy_file, device=str(engine.device), algo=policy)
    else:
        raise ValueError(f"unknown policy {policy!r}; known: {POLICIES}")
    return run_episodes(engine.core("train", 32), images, indices, act, engine.metric_name)


def collect_dataset(env_id: str, task: str, policy: str, records: Sequence[Any], atol: float = 1e-5,
                    author: str = "RL-ASC") -> Any:
    """Step ``records``' level sequences through ``gym.make(env_id, task=task, split="train")`` under Minari's
    ``DataCollector`` and create the local dataset; returns it (``minari.MinariDataset``)."""
    import minari

    env = minari.DataCollector(gym.make(env_id, task=task, split="train"), record_infos=False)
    for rec in records:
        env.reset(options={"index": int(rec.image_index)})
        total = 0.0
        for level in rec.levels:
            _, reward, terminated, truncated, _ = env.step(int(level))
            total += float(reward)
        if not terminated or abs(total - rec.episode_return) > atol:
            raise RuntimeError(f"image {rec.image_index}: the collected episode returned {total:.6f}, the policy's "
                               f"{rec.episode_return:.6f} (or did not terminate)")
    returns = [r.episode_return for r in records]
    with warnings.catch_warnings():  # Minari asks for an author e-mail and a separate evaluation env: neither applies
        warnings.simplefilter("ignore", UserWarning)
        return _create(env, env_id, task, policy, records, returns, author)


def _create(env: Any, env_id: str, task: str, policy: str, records: Sequence[Any], returns: list[float],
            author: str) -> Any:
    return env.create_dataset(
        dataset_id=dataset_id(env_id, task, policy), algorithm_name=policy, author=author,
        code_permalink="https://github.com/rl-asc/rl-asc",
        description=(f"{policy} on the first {len(records)} training images of {env_id}, task {task} "
                     f"(mean return {np.mean(returns):.4f}); levels replayed through gym.make; "
                     "python -m rlasc_harness.offline_data"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default=CURRENT_ID)
    parser.add_argument("--task", nargs="+", default=["segmentation"], choices=TASKS)
    parser.add_argument("--policies", nargs="+", default=["greedy", "preview_rule", "random"], choices=POLICIES)
    parser.add_argument("--policy-file", default=None, help="policy.pt of rollout / reinforce")
    parser.add_argument("--images", type=int, default=200, help="the first N training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from rlasc_env.engine import make_engine

    torch.set_num_threads(args.threads)
    for task in args.task:
        engine = make_engine(args.env_id, task=task, observation="preview", sizes={"train": args.images})
        for policy in args.policies:
            t0 = time.perf_counter()
            records = policy_episodes(engine, policy, args.images, args.seed, args.policy_file)
            data = collect_dataset(args.env_id, task, policy, records)
            print(f"{data.spec.dataset_id}: {data.total_episodes} episodes, {data.total_steps} steps, mean return "
                  f"{np.mean([r.episode_return for r in records]):.4f} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
