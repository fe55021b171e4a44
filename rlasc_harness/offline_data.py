"""Offline datasets (Minari) of baseline and trained policies' episodes on the training split of an id.

    python -m rlasc_harness.offline_data --task segmentation --policies greedy preview_rule random --images 200
    python -m rlasc_harness.offline_data --task detection --policies rollout \\
        --policy-file runs/agent/rollout-detection-0/policy.pt
    python -m rlasc_harness.offline_data --from-results results/SemanticCoding-v7/segmentation/rollout.json --seeds 0
    MINARI_DATASETS_PATH=... python -c "import minari; d = minari.load_dataset('rlasc/SemanticCoding-v7-segmentation-greedy-v0')"

Each policy first plays the images through the batched engine (the greedy look-ahead peeks at every level's reward
there), then its level sequences are stepped again through ``gym.make(id, task=..., split="train")`` wrapped in
Minari's ``DataCollector``, which writes the local dataset (``$MINARI_DATASETS_PATH``, default ``~/.minari``; nothing
is uploaded or downloaded). The returns of both passes are checked to agree within 1e-5, so a dataset's returns are
those the policy earns on the id.

``--from-results FILE`` turns a leaderboard row into a dataset instead: the level sequences of a results file
(:mod:`rlasc_env.results`: the protocol's test images, any algorithm) are stepped through ``gym.make`` under the
collector, each episode's concepts and return checked against the file's (1e-5), so the dataset's returns are the
row's. Its id carries the split: ``rlasc/SemanticCoding-v7-segmentation-rollout-test-v0``. These are test images:
for scoring offline evaluators against the leaderboard, never for training a policy that is then scored on them.
"""
from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlasc_env.registration import CURRENT_ID, TASKS

__all__ = ["POLICIES", "dataset_id", "policy_episodes", "RowEpisode", "results_episodes", "collect_dataset",
           "dataset_from_results", "main"]

POLICIES = ("greedy", "preview_rule", "random", "rollout", "reinforce")


def dataset_id(env_id: str, task: str, policy: str, version: int = 0, split: str = "train") -> str:
    """``rlasc/<id name>-<task>-<policy>-v<version>`` (Minari's namespace/name-version); another split than the
    training one is named: ``...-<policy>-<split>-v<version>``."""
    name = policy if split == "train" else f"{policy}-{split}"
    return f"rlasc/{env_id.split('/')[-1]}-{task}-{name}-v{version}"


@dataclass(frozen=True)
class RowEpisode:
    """One episode of a results file: the image, its concepts in coding order, the levels, the stored return."""

    image_index: int
    concepts: tuple[int, ...]
    levels: tuple[int, ...]
    episode_return: float


def results_episodes(doc: dict[str, Any], seeds: Sequence[int] | None = None) -> list[RowEpisode]:
    """The episodes of a results document (:func:`rlasc_env.results.read_results`), seed by seed in the file's
    order; ``seeds``: only these (each must be in the file)."""
    have = [int(s["seed"]) for s in doc["seeds"]]
    missing = sorted(set(seeds or ()) - set(have))
    if missing:
        raise ValueError(f"seeds {missing} are not in this results file (it holds {have})")
    keep = set(have if seeds is None else seeds)
    return [RowEpisode(int(e["image"]), tuple(int(c) for c in e["concepts"]), tuple(int(q) for q in e["levels"]),
                       float(e["return"]))
            for s in doc["seeds"] if int(s["seed"]) in keep for e in s["episodes"]]


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
                    author: str = "RL-ASC", split: str = "train", description: str | None = None,
                    make_kwargs: dict[str, Any] | None = None) -> Any:
    """Step ``records``' level sequences through ``gym.make(env_id, task=task, split=split, **make_kwargs)`` under
    Minari's ``DataCollector`` and create the local dataset; returns it (``minari.MinariDataset``). A record with
    ``concepts`` must meet them in that order. Nothing is written unless every episode terminates with the record's
    return (within ``atol``) and its concepts."""
    import minari

    env = minari.DataCollector(gym.make(env_id, task=task, split=split, **(make_kwargs or {})), record_infos=False)
    for rec in records:
        obs, _ = env.reset(options={"index": int(rec.image_index)})
        total, terminated, met = 0.0, False, []
        for level in rec.levels:
            if terminated:
                break
            met.append(int(np.argmax(obs["concept"])))
            obs, reward, terminated, truncated, _ = env.step(int(level))
            total += float(reward)
        concepts = getattr(rec, "concepts", None)
        if concepts is not None and tuple(met) != tuple(concepts):
            raise RuntimeError(f"image {rec.image_index}: the env presents concepts {met}, the record has "
                               f"{list(concepts)}")
        if not terminated or abs(total - rec.episode_return) > atol:
            raise RuntimeError(f"image {rec.image_index}: the collected episode returned {total:.6f}, the policy's "
                               f"{rec.episode_return:.6f} (or did not terminate)")
    returns = [r.episode_return for r in records]
    if description is None:
        description = (f"{policy} on the first {len(records)} {split} images of {env_id}, task {task} "
                       f"(mean return {np.mean(returns):.4f}); levels replayed through gym.make; "
                       "python -m rlasc_harness.offline_data")
    with warnings.catch_warnings():  # Minari asks for an author e-mail and a separate evaluation env: neither applies
        warnings.simplefilter("ignore", UserWarning)
        return env.create_dataset(dataset_id=dataset_id(env_id, task, policy, split=split), algorithm_name=policy,
                                  author=author, code_permalink="https://github.com/rl-asc/rl-asc",
                                  description=description)


def dataset_from_results(path: str | Path, seeds: Sequence[int] | None = None, atol: float = 1e-5) -> Any:
    """A Minari dataset of a leaderboard row: the results file's episodes (``seeds``: only these) stepped through
    its pinned id on the protocol's split; each return checked against the file's (``atol``). Refused: a file that
    does not read (:class:`rlasc_env.results.ResultsError`), pins other than the id's, an unknown id."""
    from rlasc_env.results import ResultsError, id_pins, read_results

    doc = read_results(path)
    env_id = doc["env_id"]
    if id_pins(env_id) != doc["pins"]:  # an unknown id is refused there
        raise ResultsError(f"{path}: its pins are not those of {env_id} (it was played on other components)")
    protocol = doc["protocol"]
    make_kwargs: dict[str, Any] = {"lam": float(protocol["lam"]), "eta": float(protocol["eta"])}
    if protocol.get("bpp_budget") is not None:
        make_kwargs = {"eta": float(protocol["eta"]), "bpp_budget": float(protocol["bpp_budget"])}
    records = results_episodes(doc, seeds)
    kept = [int(s["seed"]) for s in doc["seeds"] if seeds is None or int(s["seed"]) in set(seeds)]
    algo = doc["algo"]
    if protocol.get("bpp_budget") is not None:  # Minari's names take no dots: budget-0.5 -> budget0_5
        algo = f"{algo}-budget{protocol['bpp_budget']:g}".replace(".", "_")
    returns = [r.episode_return for r in records]
    description = (f"the leaderboard row {doc['algo']} of {env_id}, task {doc['task']}: seeds {kept}, "
                   f"{len(records)} episodes on the first {protocol['num_images']} {protocol['split']} images "
                   f"(mean return {np.mean(returns):.4f}), levels replayed through gym.make from {Path(path).name}; "
                   "python -m rlasc_harness.offline_data --from-results")
    return collect_dataset(env_id, doc["task"], algo, records, atol=atol, split=protocol["split"],
                           description=description, make_kwargs=make_kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default=CURRENT_ID)
    parser.add_argument("--task", nargs="+", default=["segmentation"], choices=TASKS)
    parser.add_argument("--policies", nargs="+", default=["greedy", "preview_rule", "random"], choices=POLICIES)
    parser.add_argument("--policy-file", default=None, help="policy.pt of rollout / reinforce")
    parser.add_argument("--images", type=int, default=200, help="the first N training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--from-results", nargs="+", default=None, metavar="FILE",
                        help="instead: one dataset per results file (a leaderboard row), its episodes replayed")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="with --from-results: only these seeds of each file (default: all)")
    args = parser.parse_args(argv)

    import torch

    from rlasc_env.engine import make_engine

    torch.set_num_threads(args.threads)
    if args.from_results:
        for path in args.from_results:
            t0 = time.perf_counter()
            data = dataset_from_results(path, args.seeds)
            returns = [float(np.sum(ep.rewards)) for ep in data.iterate_episodes()]
            print(f"{data.spec.dataset_id}: {data.total_episodes} episodes, {data.total_steps} steps, mean return "
                  f"{np.mean(returns):.4f}, every return within 1e-5 of {path}'s ({time.perf_counter() - t0:.0f} s)")
        return 0
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
