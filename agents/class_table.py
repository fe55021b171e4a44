"""The class-table heuristic: one quantization level per concept class and size bucket.

A bit-allocation policy that needs no learning beyond counting: on training images, for every
(class m, size bucket of s(m)) seen, the level whose immediate reward (eq. 14) fell least short
of the best level's, on average over the greedy look-ahead's states (:mod:`rlasc_harness.learnability`).
It reads only what the agent observes (Section II-C): the concept's one-hot and its pixel share
(``stats[0]``). A (class, bucket) never seen falls back to the class's level, then to the best
uniform level on the fitting steps.

If this table beats the best uniform level, the environment carries a signal that depends on
what is being coded: the minimum that makes learning a bit allocation worthwhile.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SIZE_EDGES", "size_bucket", "ClassTable", "fit_class_table", "load_class_table"]

MATCHED_SETTINGS = ("task", "env_id", "preset", "lam", "eta")
# Reports written before ids carried their options name the codec instead of the id (docs/gate/*.json: -v1).
LEGACY_CODEC_IDS = {"tiny": "rlasc/SemanticCoding-v1", "tiny-v0": "rlasc/SemanticCoding-v0"}
"""Settings of a learnability report that must equal the run's for its class table to apply."""

SIZE_EDGES = (0.02, 0.08, 0.25)
"""Edges of the size buckets, in share of the image's pixels: <2%, 2-8%, 8-25%, >=25%."""


def size_bucket(share: np.ndarray | float) -> np.ndarray:
    """Size bucket (0 .. len(SIZE_EDGES)) of a concept's pixel share."""
    return np.digitize(np.asarray(share, np.float64), SIZE_EDGES)


@dataclass
class ClassTable:
    """Level per (class, size bucket), per class, and a default level; callable as an act function."""

    levels: dict[tuple[int, int], int]
    class_levels: dict[int, int]
    default: int
    counts: dict[tuple[int, int], int] = field(default_factory=dict)

    def choose(self, classes: np.ndarray, shares: np.ndarray) -> np.ndarray:
        buckets = size_bucket(shares)
        return np.array([self.levels.get((int(c), int(b)), self.class_levels.get(int(c), self.default))
                         for c, b in zip(np.asarray(classes).tolist(), buckets.tolist())], np.int64)

    def __call__(self, obs: Mapping[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        return self.choose(np.asarray(obs["concept"]).argmax(1), np.asarray(obs["stats"])[:, 0])

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ClassTable":
        """Inverse of :meth:`to_json`; refuses a table made with other size buckets."""
        edges = tuple(float(e) for e in data.get("size_edges", ()))
        if edges != SIZE_EDGES:
            raise ValueError(f"class table made with size edges {edges}, this version uses {SIZE_EDGES}")
        def cell(key: str) -> tuple[int, int]:
            c, b = key.split("/")
            return int(c), int(b)
        return cls(levels={cell(k): int(q) for k, q in data["levels"].items()},
                   class_levels={int(c): int(q) for c, q in data["class_levels"].items()},
                   default=int(data["default"]), counts={cell(k): int(n) for k, n in data.get("counts", {}).items()})

    def to_json(self) -> dict[str, Any]:
        return {"size_edges": list(SIZE_EDGES), "default": self.default,
                "class_levels": {str(c): q for c, q in sorted(self.class_levels.items())},
                "levels": {f"{c}/{b}": q for (c, b), q in sorted(self.levels.items())},
                "counts": {f"{c}/{b}": n for (c, b), n in sorted(self.counts.items())}}


def fit_class_table(classes: np.ndarray, shares: np.ndarray, candidates: np.ndarray,
                    min_steps: int = 5) -> ClassTable:
    """Fit on steps with concept ``classes`` (N,), pixel ``shares`` (N,) and the immediate reward of
    every level ``candidates`` (N, Q): per group, the level of least mean regret (best level's reward
    minus the level's). A (class, bucket) group with fewer than ``min_steps`` steps is left to its
    class; a class with fewer than ``min_steps`` steps to the default."""
    classes = np.asarray(classes, np.int64)
    candidates = np.asarray(candidates, np.float64)
    if candidates.ndim != 2 or len(candidates) != len(classes) or len(classes) == 0:
        raise ValueError("need one row of candidate rewards per step, and at least one step")
    regret = candidates.max(1, keepdims=True) - candidates
    buckets = size_bucket(shares)
    default = int(regret.mean(0).argmin())
    class_levels, levels, counts = {}, {}, {}
    for c in np.unique(classes).tolist():
        rows = classes == c
        if rows.sum() >= min_steps:
            class_levels[int(c)] = int(regret[rows].mean(0).argmin())
        for b in np.unique(buckets[rows]).tolist():
            group = rows & (buckets == b)
            counts[(int(c), int(b))] = int(group.sum())
            if group.sum() >= min_steps:
                levels[(int(c), int(b))] = int(regret[group].mean(0).argmin())
    return ClassTable(levels, class_levels, default, counts)


def load_class_table(path: str | Path, settings: Mapping[str, Any],
                     weights: Mapping[str, str | None] | None = None) -> ClassTable:
    """The class table of a ``python -m rlasc_harness.learnability --json`` report (e.g. docs/gate/<task>.json),
    checked against the run's ``settings`` (task, id, preset, lam, eta) and, when given,
    the sha256 of the codec and task-network files the run uses (``Engine.weight_hashes``): a table fitted on
    other weights under the same names is refused. A ``{task}`` in ``path`` is replaced by ``settings["task"]``."""
    path = Path(str(path).replace("{task}", str(settings.get("task", "{task}"))))
    if not path.is_file():
        raise FileNotFoundError(f"no class table report at {path}: write one with python -m rlasc_harness.learnability "
                                "--task TASK --json PATH")
    report = json.loads(path.read_text())
    if "class_table" not in report:
        raise ValueError(f"{path} has no 'class_table': expected a report of python -m rlasc_harness.learnability --json")
    refit = "fit a table for this run with python -m rlasc_harness.learnability"
    made_with = {**report.get("config", {}), "task": report.get("task", report.get("config", {}).get("task"))}
    if "env_id" not in made_with and made_with.get("codec") in LEGACY_CODEC_IDS:
        made_with["env_id"] = LEGACY_CODEC_IDS[made_with["codec"]]
    differ = {k: (made_with.get(k), settings[k]) for k in MATCHED_SETTINGS
              if k in settings and str(made_with.get(k)) != str(settings[k])}
    if differ:
        raise ValueError(f"{path} was fitted for other settings (report, run): {differ}; {refit}")
    if weights is not None:
        if "weights" not in report:
            raise ValueError(f"{path} does not record the sha256 of the codec and task network it was fitted on, so "
                             f"it cannot be matched to this run's weights; {refit}")
        stale = {k: (report["weights"].get(k), v) for k, v in weights.items() if report["weights"].get(k) != v}
        if stale:
            short = {k: tuple(h[:12] if isinstance(h, str) else h for h in pair) for k, pair in stale.items()}
            raise ValueError(f"{path} was fitted on other weights (sha256 prefix, report vs run): {short}; {refit}")
    return ClassTable.from_json(report["class_table"])
