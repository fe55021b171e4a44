"""Results that replay: a policy's episodes on an id's protocol, and the check that replays them.

A results file (``results/<id name>/<task>/<algo>.json``) holds, per seed and per protocol image, the concepts in
coding order, the level chosen for each and the episode's return, with the pins of the id it was played on::

    {"format": "rlasc-results", "version": 1, "env_id": "rlasc/SemanticCoding-v7", "task": "segmentation",
     "algo": "reinforce", "pins": {...}, "protocol": {"split": "test", "num_images": 200, "lam": 1.0, "eta": 10.0},
     "entry": {"command": "...", "device": "cpu", ...},
     "seeds": [{"seed": 0, "wall_seconds": 512.0,
                "episodes": [{"image": 0, "concepts": [0, 1, ...], "levels": [3, 4, ...], "return": 2.41}, ...]}]}

A row of the rate-budget mode (``bpp_budget``, docs/benchmark.md) has ``"bpp_budget": b`` in its protocol: its returns
are the lam = 0 ones and the validator also refuses an episode whose levels take the image over b bpp. Such files
live in ``results/<id name>/<task>/budget-<b>/<algo>.json``.

:func:`validate_results` replays every episode on the pinned id (the levels by class through
``EpisodeCore.finish``: one decoder pass per image, the return L(0) - L(final) of eq. 14) and refuses a file whose
pins differ from the id's, that misses a protocol image, whose concepts are not the image's, or whose stored return
is off by more than ``atol`` (1e-5), naming which. As CompilerGym's leaderboard, an entry counts once it replays.

    python -m rlasc_env.validate results/SemanticCoding-v7/segmentation/*.json
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codec_models.checkpoint import atomic_write

from .env import check_budget
from .registration import CARDS
from .score import PROTOCOL

__all__ = ["RESULTS_FORMAT", "RESULTS_VERSION", "ResultsError", "Episode", "Replay", "results_document",
           "write_results", "read_results", "validate_results", "REPLAY_ATOL", "id_pins"]

RESULTS_FORMAT = "rlasc-results"
RESULTS_VERSION = 1
REPLAY_ATOL = 1e-5


class ResultsError(ValueError):
    """A results file that is malformed or does not replay (the message says which seed, image and field)."""


@dataclass
class Episode:
    """One protocol image played by a policy: the concepts in coding order, their levels, the return."""

    image: int
    concepts: list[int]
    levels: list[int]
    episode_return: float

    def to_dict(self) -> dict[str, Any]:
        return {"image": int(self.image), "concepts": [int(c) for c in self.concepts],
                "levels": [int(q) for q in self.levels], "return": float(self.episode_return)}


def id_pins(env_id: str) -> dict[str, Any]:
    """The pins of a registered id as JSON holds them (lists, not tuples); :class:`ResultsError` for an unknown id."""
    if env_id not in CARDS:
        raise ResultsError(f"unknown id {env_id!r}; registered: {list(CARDS)}")
    return json.loads(json.dumps(CARDS[env_id].pins))  # a JSON copy: lists, not tuples


def results_document(env_id: str, task: str, algo: str, seeds: dict[int, Sequence[Episode]],
                     entry: dict[str, Any] | None = None, wall_seconds: dict[int, float] | None = None,
                     lam: float = PROTOCOL.lam, eta: float = PROTOCOL.eta,
                     num_images: int = PROTOCOL.num_images, bpp_budget: float | None = None) -> dict[str, Any]:
    """The JSON document of one (id, task, algo) entry: per seed, one :class:`Episode` per protocol image.
    ``bpp_budget``: a row of the rate-budget mode (its returns are the lam = 0 ones)."""
    protocol = {"split": PROTOCOL.split, "num_images": int(num_images), "lam": float(lam), "eta": float(eta)}
    if bpp_budget is not None:
        protocol["bpp_budget"] = float(check_budget(bpp_budget, 1)[0])
    return {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "env_id": env_id, "task": task, "algo": algo,
            "pins": id_pins(env_id),
            "protocol": protocol,
            "entry": dict(entry or {}),
            "seeds": [{"seed": int(s), "wall_seconds": (wall_seconds or {}).get(s),
                       "episodes": [e.to_dict() for e in sorted(eps, key=lambda e: e.image)]}
                      for s, eps in sorted(seeds.items())]}


def write_results(path: str | os.PathLike, document: dict[str, Any]) -> Path:
    """Write ``document`` atomically (sorted keys, one trailing newline: the file regenerates byte for byte)."""
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check the structure of a results file; :class:`ResultsError` says what is wrong."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != RESULTS_FORMAT:
        raise ResultsError(f"{path}: not an {RESULTS_FORMAT!r} file")
    if doc.get("version") != RESULTS_VERSION:
        raise ResultsError(f"{path}: results version {doc.get('version')!r}, this validator reads {RESULTS_VERSION}")
    for key in ("env_id", "task", "algo", "pins", "protocol", "seeds"):
        if key not in doc:
            raise ResultsError(f"{path}: missing field {key!r}")
    if not isinstance(doc["seeds"], list) or not doc["seeds"]:
        raise ResultsError(f"{path}: 'seeds' must be a non-empty list")
    for s in doc["seeds"]:
        if not isinstance(s, dict) or not isinstance(s.get("episodes"), list):
            raise ResultsError(f"{path}: every seed needs an 'episodes' list")
        for e in s["episodes"]:
            ok = (isinstance(e, dict) and isinstance(e.get("image"), int) and isinstance(e.get("concepts"), list)
                  and isinstance(e.get("levels"), list) and len(e["concepts"]) == len(e["levels"])
                  and isinstance(e.get("return"), (int, float)) and math.isfinite(e["return"]))
            if not ok:
                raise ResultsError(f"{path}: seed {s.get('seed')}: malformed episode {str(e)[:80]}")
    return doc


@dataclass
class Replay:
    """What :func:`validate_results` found: per seed, the largest return difference, and the problems."""

    path: str
    max_diff: dict[int, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_header(doc: dict[str, Any], path: str, num_images: int) -> list[str]:
    problems = []
    pins = id_pins(doc["env_id"])
    if doc["pins"] != pins:
        keys = sorted(k for k in set(pins) | set(doc["pins"]) if pins.get(k) != doc["pins"].get(k))
        problems.append(f"{path}: pins differ from {doc['env_id']}'s in {keys} (played on other weights or data)")
    proto = doc["protocol"]
    want = {"split": PROTOCOL.split, "num_images": num_images}
    for key, value in want.items():
        if proto.get(key) != value:
            problems.append(f"{path}: protocol {key} is {proto.get(key)!r}, the benchmark's is {value!r}")
    if "bpp_budget" in proto:
        try:
            check_budget(proto["bpp_budget"], 1)
        except ValueError as exc:
            problems.append(f"{path}: protocol bpp_budget: {exc}")
    for s in doc["seeds"]:
        images = [e["image"] for e in s["episodes"]]
        missing = sorted(set(range(num_images)) - set(images))
        extra = sorted(set(images) - set(range(num_images)))
        if missing:
            problems.append(f"{path}: seed {s.get('seed')}: missing image(s) {missing[:10]}"
                            + (" ..." if len(missing) > 10 else ""))
        if extra or len(images) != len(set(images)):
            problems.append(f"{path}: seed {s.get('seed')}: images outside the protocol or repeated")
    return problems


def validate_results(path: str | os.PathLike, engine: Any = None, atol: float = REPLAY_ATOL,
                     batch: int = 32, num_images: int = PROTOCOL.num_images, limit: int | None = None) -> Replay:
    """Replay every episode of the results file at ``path`` on its pinned id; the :class:`Replay` lists every
    problem (empty: the file replays). ``engine``: an :class:`rlasc_env.engine.Engine` of the file's id and task to
    reuse (built with :func:`rlasc_env.engine.make_engine` otherwise). ``num_images``: the protocol's 200 (tests
    use fewer). ``limit``: replay only the first ``limit`` images of each seed (the checks of pins and coverage
    still see them all; the test suite's spot check)."""
    from .engine import make_engine, reset_slots

    path = str(path)
    doc = read_results(path)
    out = Replay(path)
    out.problems += _check_header(doc, path, num_images)
    if out.problems:
        return out
    lam, eta = float(doc["protocol"]["lam"]), float(doc["protocol"]["eta"])
    budget = doc["protocol"].get("bpp_budget")  # rate-budget mode: the core's reward drops the rate term
    if engine is None:
        engine = make_engine(doc["env_id"], task=doc["task"], observation="paper", lam=lam, eta=eta,
                             sizes={PROTOCOL.split: min(num_images, limit or num_images), "train": 1})
    elif (engine.spec.env_id, str(engine.task.name), engine.spec.lam, engine.spec.eta) != (
            doc["env_id"], doc["task"], lam, eta):
        raise ValueError(f"the engine given is not {doc['env_id']} {doc['task']} lam {lam} eta {eta}")
    images = engine.parts(PROTOCOL.split).images
    core = engine.core(PROTOCOL.split, batch)
    m = engine.codec.num_classes
    for s in doc["seeds"]:
        seed = s.get("seed")
        episodes = sorted(s["episodes"], key=lambda e: e["image"])[:limit]
        worst = 0.0
        for start in range(0, len(episodes), batch):
            chunk = episodes[start:start + batch]
            slots = np.arange(len(chunk))
            reset_slots(core, images, slots, [e["image"] for e in chunk], bpp_budget=budget)
            levels = np.zeros((len(chunk), m), np.int64)
            bad = set()
            for j, e in enumerate(chunk):
                order = core.order[j, :core.count[j]].tolist()
                if [int(c) for c in e["concepts"]] != order:
                    out.problems.append(f"{path}: seed {seed} image {e['image']}: concepts {e['concepts']} are not "
                                        f"the image's coding order {order}")
                    bad.add(j)
                    continue
                lv = np.asarray(e["levels"], np.int64)
                if lv.size and (lv.min() < 0 or lv.max() >= engine.num_levels):
                    out.problems.append(f"{path}: seed {seed} image {e['image']}: levels outside "
                                        f"[0, {engine.num_levels})")
                    bad.add(j)
                    continue
                levels[j, order] = lv
            returns = _finish(core, slots, levels, chunk, bad, f"{path}: seed {seed}", out.problems)
            for j, e in enumerate(chunk):
                if j in bad:
                    continue
                diff = abs(float(returns[j]) - float(e["return"]))
                worst = max(worst, diff)
                if not diff <= atol:
                    out.problems.append(f"{path}: seed {seed} image {e['image']}: stored return {e['return']:.6f}, "
                                        f"replayed {float(returns[j]):.6f} (off by {diff:.2e} > {atol:g})")
        out.max_diff[int(seed) if seed is not None else -1] = worst
    return out


def _finish(core: Any, slots: np.ndarray, levels: np.ndarray, chunk: list[dict[str, Any]], bad: set[int],
            where: str, problems: list[str]) -> np.ndarray:
    """``core.finish`` of the chunk's episodes; in the rate-budget mode an episode over its budget is named in
    ``problems`` and added to ``bad`` (``finish`` checks every slot before it changes any, so the others are
    finished one by one)."""
    try:
        return core.finish(slots, levels)[0]
    except ValueError as exc:
        if "budget" not in str(exc):
            raise
    returns = np.full(len(slots), np.nan)
    for j in range(len(slots)):
        if j in bad:
            continue
        try:
            returns[j] = core.finish(slots[j:j + 1], levels[j:j + 1])[0][0]
        except ValueError as exc:
            if "budget" not in str(exc):
                raise
            problems.append(f"{where} image {chunk[j]['image']}: the levels go over the rate budget ({exc})")
            bad.add(j)
    return returns
