"""Compute (or check) the score references of an id: per-image returns of the baselines on the protocol's images.

    python -m rlasc_harness.references                       # the current id, three tasks: about 20 min per task, 1 core
    python -m rlasc_harness.references --task detection --merge  # one task, the others kept (a process per task)
    python -m rlasc_harness.references --check 4             # replay the first 4 images of every stored baseline

Writes ``rlasc_env/references/<id name>.json`` (:mod:`rlasc_env.score` reads it): for every task the returns of
random (seed 0), every fixed level, the preview rule (weight fitted on the first 16 training images) and the greedy
look-ahead on the first 200 test images, lam = 1, eta = 10, and which fixed level is best on them.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.baselines import FixedPolicy, PreviewRule, RandomPolicy
from rlasc_env.engine import Engine, make_engine, run_episodes
from rlasc_env.registration import CURRENT_ID, TASKS
from rlasc_env.score import PROTOCOL, REFERENCES_FORMAT, REFERENCES_VERSION, load_references, references_path

from .evaluation import baseline_policies, evaluate
from .runner import fitted_preview_rule, write_json

__all__ = ["compute_references", "reference_entry", "write_references", "check_references", "main"]

RULE_FIT_IMAGES = 16


def reference_entry(ev: dict[str, dict[str, Any]], rule_weight: float | None, record: dict[str, Any]) -> dict[str, Any]:
    """One task's entry from :func:`rlasc_harness.evaluation.evaluate` results (with ``keep_returns``)."""
    returns = {name: [float(x) for x in row["returns"]] for name, row in ev.items() if "returns" in row}
    fixed = {n: float(np.mean(v)) for n, v in returns.items() if n.startswith("fixed_")}
    if "greedy" not in returns or not fixed:
        raise ValueError("references need greedy and the fixed levels")
    return {"best_fixed": max(fixed, key=fixed.get), "returns": returns,
            "record": {**record, "preview_rule_weight": rule_weight}}


def compute_references(env_id: str, task: str, num_images: int, device: str = "cpu", log: Any = print
                       ) -> dict[str, Any]:
    """Play every baseline on the first ``num_images`` protocol images of ``env_id`` and ``task``."""
    t0 = time.perf_counter()
    engine = make_engine(env_id, task=task, observation="preview", lam=PROTOCOL.lam, eta=PROTOCOL.eta, device=device,
                         sizes={PROTOCOL.split: num_images, "train": RULE_FIT_IMAGES})
    rule = fitted_preview_rule(engine, RULE_FIT_IMAGES, log)
    policies = {**baseline_policies(engine.num_levels, 0), "preview_rule": rule}
    ev = evaluate(engine, policies, num_images, split=PROTOCOL.split, greedy=True, log=log, keep_returns=True)
    record = {"command": "python -m rlasc_harness.references " + shlex.join(sys.argv[1:]), "device": str(device),
              "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(), "machine": platform.machine()}
    return reference_entry(ev, rule.weight, record)


def write_references(env_id: str, entries: dict[str, dict[str, Any]], path: Path | None = None,
                     merge: bool = False) -> Path:
    """Write the references of ``env_id``; ``merge``: keep the other tasks of an existing file of the same id and
    protocol (one process per task, each writing its own entry)."""
    path = path or references_path(env_id)
    if merge and path.is_file():
        old = json.loads(path.read_text())
        num = len(next(iter(entries.values()))["returns"]["greedy"])
        if old.get("env_id") != env_id or old.get("protocol", {}).get("num_images") != num:
            raise ValueError(f"--merge: {path} holds {old.get('env_id')} on {old.get('protocol', {}).get('num_images')} "
                             f"images, not {env_id} on {num}")
        entries = {**old["tasks"], **entries}
    data = {"format": REFERENCES_FORMAT, "version": REFERENCES_VERSION, "env_id": env_id,
            "protocol": {"split": PROTOCOL.split, "num_images": len(next(iter(entries.values()))["returns"]["greedy"]),
                         "lam": PROTOCOL.lam, "eta": PROTOCOL.eta, "deterministic": PROTOCOL.deterministic},
            "tasks": entries}
    write_json(path, data)
    return path


def replay_baselines(engine: Engine, task: str, env_id: str, num_images: int) -> dict[str, np.ndarray]:
    """The stored baselines' returns replayed on the first ``num_images`` protocol images (greedy included)."""
    from agents.baselines import greedy_episodes

    refs = load_references(task, env_id)
    images = engine.parts(PROTOCOL.split).images
    q = engine.num_levels
    out: dict[str, np.ndarray] = {}
    for name in refs.returns:
        if name == "greedy":
            records = greedy_episodes(engine.core(PROTOCOL.split, q * num_images), images, range(num_images),
                                      engine.metric_name)
        else:
            act = (FixedPolicy(int(name.split("_")[1]), q) if name.startswith("fixed_") else RandomPolicy(q, 0)
                   if name == "random" else PreviewRule(refs.record["preview_rule_weight"], q))
            if name == "random":  # random's draws depend on the batch; replay it as evaluate() played it
                continue
            records = run_episodes(engine.core(PROTOCOL.split, num_images), images, range(num_images), act,
                                   engine.metric_name)
        out[name] = np.array([r.episode_return for r in records])
    return out


def check_references(env_id: str, task: str, num_images: int, atol: float = 1e-4) -> dict[str, float]:
    """Replay the first ``num_images`` images of every stored baseline (random excepted); the largest difference per
    baseline. Raises ``AssertionError`` beyond ``atol``."""
    engine = make_engine(env_id, task=task, observation="preview", lam=PROTOCOL.lam, eta=PROTOCOL.eta,
                         sizes={PROTOCOL.split: num_images, "train": 1})
    refs = load_references(task, env_id)
    worst = {}
    for name, values in replay_baselines(engine, task, env_id, num_images).items():
        worst[name] = float(np.abs(values - refs.returns[name][:num_images]).max())
        if worst[name] > atol:
            raise AssertionError(f"{env_id} {task}: {name} replays {values.tolist()}, stored "
                                 f"{refs.returns[name][:num_images].tolist()}")
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default=CURRENT_ID)
    parser.add_argument("--task", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--images", type=int, default=PROTOCOL.num_images)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check", type=int, default=0, help="replay the first N images of the stored references")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other tasks already stored for this id (one process per task)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.check:
        for task in args.task:
            print(task, check_references(args.env_id, task, args.check))
        return 0
    entries = {task: compute_references(args.env_id, task, args.images, args.device) for task in args.task}
    print(f"written {write_references(args.env_id, entries, merge=args.merge)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
