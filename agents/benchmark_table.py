"""One Markdown table across tasks and algorithms from several multi-seed ``train_agent.py`` runs.

    python train_agent.py --algo reinforce --task segmentation detection classification --seeds 0 1 2 3 4 \\
        --json runs/table/reinforce.json
    python train_agent.py --algo ppo ... --json runs/table/ppo.json
    python -m agents.benchmark_table runs/table/reinforce.json runs/table/ppo.json --out docs/agent_table.md

Each input is the JSON ``train_agent.py --json`` writes for several seeds (its ``runs`` list) or
one run's ``results.json``. Per
task, the trained policy of every file becomes one row named after its algorithm; the baselines
(random, greedy, every fixed level) come from the first algorithm that has them, and every cell is the
mean ± 95% CI (t-distribution) over the seeds.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import mean_ci

__all__ = ["collect_rows", "benchmark_table", "main"]

BASELINES = ("greedy", "random")


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
    return text + (f" ± {ci['ci95']:.{digits}f}" if np.isfinite(ci["ci95"]) and ci["ci95"] > 0 else "")


def _row_order(names: Sequence[str]) -> list[str]:
    fixed = sorted((n for n in names if n.startswith("fixed_")), key=lambda n: int(n.split("_")[1]))
    algos = [n for n in names if n not in fixed and n not in BASELINES and n != "oracle"]
    return algos + [n for n in ("greedy", "oracle", "random") if n in names] + fixed


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
            algos = [n for n in _row_order(list(rows)) if n not in fixed and n not in BASELINES and n != "oracle"]
            parts = [f"{a} {_cell([(e['return_mean'] - fixed[best]) / span for e in rows[a]], 3)}" for a in algos]
            lines += ["", f"(policy − best fixed) / (greedy − best fixed), best fixed = {best}: " + ", ".join(parts)]
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
