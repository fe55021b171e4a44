"""Evaluation of bit-allocation policies on held-out images, multi-seed aggregation, tables.

Every policy plays one episode on each of the first N images of the test split, in a fixed
order (image i of the split is episode i), so all policies see the same images. Per policy
the summary holds ``return_mean`` / ``return_std`` (G of eq. 15 with gamma = 1, i.e. L(0) -
L(final)), the final state's ``bpp_mean``, ``semantic_loss_mean``, ``perceptual_loss_mean``,
``normalized_score_mean`` (0 = all concepts coarsest, 1 = all highest) and the task metric
mean (``<metric>_mean``).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from agents.baselines import (FixedPolicy, OracleSkipped, RandomPolicy, greedy_episodes, oracle_episodes,
                              random_search_episodes)
from rlasc_env.engine import ActFn, Engine, EpisodeRecord, run_copies
from rlasc_env.results import Episode

__all__ = ["summarize", "evaluate", "baseline_policies", "aggregate", "mean_ci", "gap_closure", "results_table",
           "SUMMARY_KEYS"]

SUMMARY_KEYS = ("return_mean", "return_std", "bpp_mean", "semantic_loss_mean", "perceptual_loss_mean",
                "normalized_score_mean")


def summarize(records: Sequence[EpisodeRecord], metric_name: str) -> dict[str, Any]:
    """Means over episodes of one policy (docs/design.md's five keys plus score, metric, lengths, levels)."""
    if not records:
        raise ValueError("no episode to summarize")
    returns = np.array([r.episode_return for r in records])
    levels = np.concatenate([np.asarray(r.levels, np.float64) for r in records])
    scores = np.array([r.normalized_score for r in records])
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std(ddof=1)) if len(returns) > 1 else 0.0,
        "bpp_mean": float(np.mean([r.bpp for r in records])),
        "semantic_loss_mean": float(np.mean([r.semantic_loss for r in records])),
        "perceptual_loss_mean": float(np.mean([r.perceptual_loss for r in records])),
        "normalized_score_mean": float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan"),
        f"{metric_name}_mean": float(np.mean([r.metric for r in records])),
        "length_mean": float(np.mean([r.length for r in records])),
        "level_mean": float(levels.mean()),
        "episodes": len(records),
    }


def baseline_policies(num_levels: int, seed: int) -> dict[str, ActFn]:
    """``random`` (seeded) and ``fixed_<q>`` for every level q."""
    out: dict[str, ActFn] = {"random": RandomPolicy(num_levels, seed)}
    for q in range(num_levels):
        out[f"fixed_{q}"] = FixedPolicy(q, num_levels)
    return out


def _kept(records: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """``returns`` in image order and the ``episodes`` that replay them (rlasc_env.results.Episode dicts)."""
    return {"returns": [r.episode_return for r in records],
            "episodes": [Episode(r.image_index, r.concepts, r.levels, r.episode_return).to_dict() for r in records]}


def evaluate(engine: Engine, policies: Mapping[str, ActFn], num_images: int, split: str = "test",
             batch_size: int = 96, greedy: bool = True, oracle_cap: int = 0,
             log: Any = None, keep_returns: bool = False, random_search: Sequence[int] = (),
             random_search_seed: int = 0) -> dict[str, dict[str, Any]]:
    """Summaries per policy on the first ``num_images`` images of ``split`` (plus ``greedy``,
    ``oracle`` and ``random_search_<k>`` for every k of ``random_search`` when asked; an intractable
    oracle yields ``{"skipped": reason}``). ``keep_returns`` adds ``returns``, the episode return of
    every image in order (for paired comparisons), and ``episodes``, what replays them: per image the concepts in
    coding order and the levels chosen (:mod:`rlasc_env.results`).

    All ``policies`` play each image from one shared reset (:func:`run_copies`); ``batch_size``
    is the number of env slots stepped together (images x copies).
    """
    available = engine.num_images(split)
    if not 1 <= num_images <= available:
        raise ValueError(f"eval images must be in [1, {available}] (the {split} split), got {num_images}")
    indices = list(range(num_images))
    images = engine.parts(split).images
    metric = engine.metric_name
    q = engine.num_levels
    out: dict[str, dict[str, Any]] = {}
    lengths: list[int] = []
    if policies:
        names = list(policies)
        t0 = time.perf_counter()
        core = engine.core(split, len(names) * max(1, min(batch_size // len(names), num_images)))
        runs = run_copies(core, images, indices, [policies[n] for n in names], metric)
        seconds = time.perf_counter() - t0
        for name, records in zip(names, runs):
            out[name] = {**summarize(records, metric), "seconds": seconds / len(names)}
            if keep_returns:
                out[name].update(_kept(records))
            if log:
                log(f"eval {name}: return {out[name]['return_mean']:.4f}")
        lengths = [r.length for r in runs[0]]
        if log:
            log(f"evaluated {len(names)} policies on {num_images} images in {seconds:.1f} s")
    if greedy:
        t0 = time.perf_counter()
        gcore = engine.core(split, q * max(1, min(batch_size // q, num_images)))
        records = greedy_episodes(gcore, images, indices, metric)
        out["greedy"] = {**summarize(records, metric), "seconds": time.perf_counter() - t0}
        if keep_returns:
            out["greedy"].update(_kept(records))
        lengths = [r.length for r in records]
        if log:
            log(f"eval greedy: return {out['greedy']['return_mean']:.4f} ({out['greedy']['seconds']:.1f} s)")
    if (oracle_cap > 0 or random_search) and not lengths:
        raise ValueError("the oracle and random search need the episode lengths of another evaluated policy")
    for samples in random_search:
        t0 = time.perf_counter()
        name = f"random_search_{int(samples)}"
        records = random_search_episodes(engine.core(split, max(1, min(batch_size, int(samples)))), images, indices,
                                         lengths, metric, int(samples), random_search_seed)
        out[name] = {**summarize(records, metric), "seconds": time.perf_counter() - t0}
        if keep_returns:
            out[name].update(_kept(records))
        if log:
            log(f"eval {name}: return {out[name]['return_mean']:.4f} ({out[name]['seconds']:.1f} s)")
    if oracle_cap > 0:
        t0 = time.perf_counter()
        result = oracle_episodes(engine.core(split, max(batch_size, q)), images, indices, lengths, metric, oracle_cap)
        if isinstance(result, OracleSkipped):
            out["oracle"] = {"skipped": result.reason}
        else:
            out["oracle"] = {**summarize(result, metric), "seconds": time.perf_counter() - t0}
        if log:
            log(f"eval oracle: {out['oracle'].get('skipped') or out['oracle']['return_mean']}")
    return out


# --------------------------------------------------------------------------- aggregation
def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and half-width of the t-distribution confidence interval (NaN half-width for n = 1)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    n = len(arr)
    if n == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "n": 0}
    mean = float(arr.mean())
    if n == 1:
        return {"mean": mean, "ci95": float("nan"), "n": 1}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * arr.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci95": half, "n": n}


def aggregate(evals: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Across runs (seeds): per policy and per numeric key, mean and 95% CI half-width (t-distribution)."""
    names: list[str] = []
    for ev in evals:
        names += [n for n in ev if n not in names]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        rows = [ev[name] for ev in evals if name in ev and "skipped" not in ev[name]]
        if not rows:
            continue
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != "seconds"]
        out[name] = {k: mean_ci([float(r[k]) for r in rows if k in r]) for k in keys}
    return out


def gap_closure(ev: Mapping[str, Mapping[str, Any]], key: str = "return_mean") -> dict[str, Any]:
    """(policy - best fixed) / (greedy - best fixed) on ``key``: 0 = no better than the best fixed
    level, 1 = as good as the greedy look-ahead."""
    fixed = {n: v[key] for n, v in ev.items() if n.startswith("fixed_")}
    if "policy" not in ev or "greedy" not in ev or not fixed:
        raise ValueError("gap closure needs 'policy', 'greedy' and at least one 'fixed_<q>' result")
    best = max(fixed, key=fixed.get)
    span = ev["greedy"][key] - fixed[best]
    ratio = (ev["policy"][key] - fixed[best]) / span if span != 0 else float("nan")
    return {"best_fixed": best, "ratio": float(ratio), "policy_minus_best_fixed": float(ev["policy"][key] - fixed[best]),
            "greedy_minus_best_fixed": float(span)}


# --------------------------------------------------------------------------- tables
def _order(names: Sequence[str]) -> list[str]:
    head = [n for n in ("policy", "greedy", "oracle", "class_table", "random") if n in names]
    fixed = sorted((n for n in names if n.startswith("fixed_")), key=lambda n: int(n.split("_")[1]))
    return head + fixed + [n for n in names if n not in head and n not in fixed]


def results_table(results: Mapping[str, Mapping[str, Any]], metric_name: str, title: str = "") -> str:
    """Markdown table, one row per policy. ``results`` is one run's :func:`evaluate` output (plain
    numbers) or :func:`aggregate`'s (``{"mean", "ci95", "n"}`` cells, shown as mean ± 95% CI)."""
    cols = [("return", "return_mean"), ("bpp", "bpp_mean"), ("L_S", "semantic_loss_mean"),
            ("L_P", "perceptual_loss_mean"), ("norm. score", "normalized_score_mean"),
            (metric_name, f"{metric_name}_mean"), ("mean level", "level_mean")]

    def cell(value: Any) -> str:
        if isinstance(value, Mapping):
            if value.get("n", 0) == 0:
                return "-"
            ci = value["ci95"]
            return f"{value['mean']:.4f}" + ("" if not np.isfinite(ci) else f" ± {ci:.4f}")
        return "-" if value is None else f"{float(value):.4f}"

    lines = [f"### {title}", ""] if title else []
    lines.append("| policy | " + " | ".join(c for c, _ in cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    skipped = []
    for name in _order(list(results)):
        row = results[name]
        if "skipped" in row:
            skipped.append(f"- `{name}` skipped: {row['skipped']}")
            continue
        lines.append(f"| {name} | " + " | ".join(cell(row.get(key)) for _, key in cols) + " |")
    if skipped:
        lines += [""] + skipped
    return "\n".join(lines) + "\n"
