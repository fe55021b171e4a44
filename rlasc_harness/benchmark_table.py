"""One Markdown table across tasks and algorithms from several multi-seed ``train_agent.py`` runs.

    python train_agent.py --algo reinforce --task segmentation detection classification --seeds 0 1 2 3 4 \\
        --json runs/table/reinforce.json
    python train_agent.py --algo ppo ... --json runs/table/ppo.json
    python -m rlasc_harness.benchmark_table runs/table/reinforce.json runs/table/ppo.json --out docs/agent_table.md

Each input is the JSON ``train_agent.py --json`` writes for several seeds (its ``runs`` list) or
one run's ``results.json``. Per
task, the trained policy of every file becomes one row named after its algorithm; the baselines
(random, greedy, class table, random search, every fixed level) come from the first algorithm that has them, and every cell is the
mean ± 95% CI (t-distribution) over the seeds. Below each task's table, every learned algorithm gets the
statistics that rliable recommends (Agarwal et al., 2021), computed with NumPy/SciPy: the interquartile
mean (IQM) of the per-seed returns with a 95% bootstrap interval, and the probability of improvement over
the best fixed level, P(policy's return > best fixed level's return on the same held-out image), over
seeds and images, with a 95% stratified bootstrap interval (seeds and images resampled); the
per-image returns come from ``results.json``'s ``returns`` (runs without them get "-").
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import trim_mean

from .evaluation import mean_ci

__all__ = ["collect_rows", "benchmark_table", "iqm_interval", "improvement_probability", "paired_difference", "main"]

BOOTSTRAP_RESAMPLES = 10000

BASELINES = ("greedy", "random", "class_table", "preview_rule", "oracle")
HEURISTICS = ("class_table", "preview_rule")  # fitted on training images: rows beside the agents' statistics


def _is_baseline(name: str) -> bool:
    return name in BASELINES or name.startswith(("fixed_", "random_search_"))


def _runs(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "runs" in summary:
        return list(summary["runs"])
    if "eval" in summary and "task" in summary and isinstance(summary["task"], str):
        return [summary]  # a single run
    raise ValueError("not a train_agent.py JSON (no 'runs' list and no single-run 'eval')")


def collect_rows(summaries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[Mapping[str, Any]]]]:
    """task -> row name -> the per-seed evaluation dicts of that row."""
    out: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    owner: dict[tuple[str, str], str] = {}  # baseline rows come from the first algorithm that has them
    for summary in summaries:
        for run in _runs(summary):
            task, ev, algo = run["task"], run["eval"], str(run["algo"])
            rows = out.setdefault(task, {})
            rows.setdefault(algo, []).append(ev["policy"])
            for name, value in ev.items():
                if name == "policy" or "skipped" in value:
                    continue
                if owner.setdefault((task, name), algo) == algo:
                    rows.setdefault(name, []).append(value)
    return out


def _cell(values: Sequence[float], digits: int = 4) -> str:
    ci = mean_ci(values)
    if ci["n"] == 0:
        return "-"
    text = f"{ci['mean']:.{digits}f}"
    shown = np.isfinite(ci["ci95"]) and ci["ci95"] >= 0.5 * 10.0 ** -digits  # float noise of equal values: none
    return text + (f" ± {ci['ci95']:.{digits}f}" if shown else "")


def iqm_interval(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(IQM, low, high): the interquartile mean (25% trimmed from each end) of ``values`` and its 95%
    percentile bootstrap interval over resampled values (seeds)."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    boot = trim_mean(x[rng.integers(0, x.size, (resamples, x.size))], 0.25, axis=1)
    return float(trim_mean(x, 0.25)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def improvement_probability(policy: np.ndarray, reference: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = 0) -> tuple[float, float, float]:
    """(P, low, high): P(policy > reference) over the (seeds, images) array of per-image returns ``policy``
    against ``reference`` (images,) on the same images (ties count one half), and its 95% stratified
    bootstrap interval (seeds and images resampled independently)."""
    policy, reference = np.asarray(policy, np.float64), np.asarray(reference, np.float64)
    if policy.ndim != 2 or policy.shape[1] != reference.shape[0]:
        raise ValueError(f"policy returns {policy.shape} must be (seeds, images) with images = {reference.shape}")
    diff = policy - reference[None, :]
    wins = np.where(np.abs(diff) <= 1e-9, 0.5, (diff > 0).astype(np.float64))
    rng = np.random.default_rng(seed)
    s, n = wins.shape
    rows, cols = rng.integers(0, s, (resamples, s)), rng.integers(0, n, (resamples, n))
    boot = np.array([wins[r][:, c].mean() for r, c in zip(rows, cols)])
    return float(wins.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def paired_difference(policy: np.ndarray, reference: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds and images of policy - reference on the same image, ``policy`` a
    (seeds, images) array and ``reference`` (images,), with a 95% stratified bootstrap interval (seeds and images
    resampled independently, as in :func:`improvement_probability`)."""
    policy, reference = np.asarray(policy, np.float64), np.asarray(reference, np.float64)
    if policy.ndim != 2 or policy.shape[1] != reference.shape[0]:
        raise ValueError(f"policy returns {policy.shape} must be (seeds, images) with images = {reference.shape}")
    diff = policy - reference[None, :]
    rng = np.random.default_rng(seed)
    s, n = diff.shape
    rows, cols = rng.integers(0, s, (resamples, s)), rng.integers(0, n, (resamples, n))
    boot = np.array([diff[r][:, c].mean() for r, c in zip(rows, cols)])
    return float(diff.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def _against_heuristic_lines(rows: Mapping[str, list[Mapping[str, Any]]], algos: Sequence[str],
                             heuristic: str) -> list[str]:
    """Each algorithm against a heuristic fitted on training images, image by image (empty without per-image
    returns): the comparison that says whether a learned policy is news."""
    reference = rows[heuristic][0].get("returns")
    out = []
    for name in algos:
        returns = [e.get("returns") for e in rows[name]]
        if reference is None or not all(r is not None and len(r) == len(reference) for r in returns):
            continue
        mean, low, high = paired_difference(np.array(returns), np.array(reference))
        p, p_low, p_high = improvement_probability(np.array(returns), np.array(reference))
        out.append(f"| {name} | {mean:+.4f} [{low:+.4f}, {high:+.4f}] | {p:.3f} [{p_low:.3f}, {p_high:.3f}] |")
    if not out:
        return []
    return ["", f"| policy | return − {heuristic}'s on the same image [95% CI] | P(return > {heuristic}'s) [95% CI] |",
            "|---|---|---|", *out]


def _statistics_lines(rows: Mapping[str, list[Mapping[str, Any]]], algos: Sequence[str], best: str) -> list[str]:
    lines = ["", f"| policy | IQM of return [95% bootstrap CI] | P(return > {best}'s on the same image) [95% CI] |",
             "|---|---|---|"]
    reference = rows[best][0].get("returns")
    for name in algos:
        evs = rows[name]
        iqm, low, high = iqm_interval([e["return_mean"] for e in evs])
        poi = "-"
        returns = [e.get("returns") for e in evs]
        if reference is not None and all(r is not None and len(r) == len(reference) for r in returns):
            p, p_low, p_high = improvement_probability(np.array(returns), np.array(reference))
            poi = f"{p:.3f} [{p_low:.3f}, {p_high:.3f}]"
        lines.append(f"| {name} | {iqm:.4f} [{low:.4f}, {high:.4f}] | {poi} |")
    return lines


def _row_order(names: Sequence[str]) -> list[str]:
    fixed = sorted((n for n in names if n.startswith("fixed_")), key=lambda n: int(n.split("_")[1]))
    search = sorted((n for n in names if n.startswith("random_search_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    algos = [n for n in names if not _is_baseline(n)]
    return algos + [n for n in (*HEURISTICS, "greedy", "oracle") if n in names] + search + \
        [n for n in ("random",) if n in names] + fixed


def benchmark_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per task, one row per algorithm and baseline (mean ± 95% CI over seeds)."""
    rows_by_task = collect_rows(summaries)
    lines: list[str] = []
    for task, rows in rows_by_task.items():
        metric = next((k for k in next(iter(rows.values()))[0] if k.endswith("_mean") and k not in
                       ("return_mean", "bpp_mean", "semantic_loss_mean", "perceptual_loss_mean",
                        "normalized_score_mean", "length_mean", "level_mean")), None)
        lines += [f"### {task} (mean ± 95% CI over seeds)", "",
                  f"| policy | seeds | return | normalized score | bpp | {(metric or 'metric').removesuffix('_mean')} | mean level |",
                  "|---|---|---|---|---|---|---|"]
        for name in _row_order(list(rows)):
            evs = rows[name]
            cells = [_cell([e["return_mean"] for e in evs]), _cell([e["normalized_score_mean"] for e in evs]),
                     _cell([e["bpp_mean"] for e in evs]),
                     _cell([e[metric] for e in evs if metric in e]) if metric else "-",
                     _cell([e["level_mean"] for e in evs if "level_mean" in e], 2)]
            lines.append(f"| {name} | {len(evs)} | " + " | ".join(cells) + " |")
        fixed = {n: float(np.mean([e["return_mean"] for e in v])) for n, v in rows.items() if n.startswith("fixed_")}
        if "greedy" in rows and fixed:
            best = max(fixed, key=fixed.get)
            span = float(np.mean([e["return_mean"] for e in rows["greedy"]])) - fixed[best]
            algos = [n for n in _row_order(list(rows)) if not _is_baseline(n)]
            parts = [f"{a} {_cell([(e['return_mean'] - fixed[best]) / span for e in rows[a]], 3)}" for a in algos]
            lines += ["", f"(policy − best fixed) / (greedy − best fixed), best fixed = {best}: " + ", ".join(parts)]
        if fixed:
            best = max(fixed, key=fixed.get)
            algos = [n for n in _row_order(list(rows)) if not _is_baseline(n)]
            search = [n for n in _row_order(list(rows)) if n.startswith("random_search_")]
            lines += _statistics_lines(rows, algos + [n for n in HEURISTICS if n in rows] + search, best)
        for heuristic in (n for n in HEURISTICS if n in rows):
            lines += _against_heuristic_lines(rows, [n for n in _row_order(list(rows)) if not _is_baseline(n)],
                                              heuristic)
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="train_agent.py --json outputs (several seeds each)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    summaries = []
    for path in args.json:
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")
        summaries.append(json.loads(path.read_text()))
    text = benchmark_table(summaries)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
