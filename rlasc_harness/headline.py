"""The README's headline table: the benchmark score of the stored baselines and of train_agent.py runs, per task.

    python -m rlasc_harness.headline docs/v7/*.json          # train_agent.py --json files of the current id

Baseline rows come from the id's stored references (rlasc_env/references); an agent row from the ``benchmark_score``
that train_agent.py wrote for its run on the protocol's 200 test images (its interval: 95% paired bootstrap over
images). Rows are generated, not typed: the README pastes this command's output.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlasc_env.registration import CURRENT_ID, TASKS
from rlasc_env.score import PROTOCOL, benchmark_score, load_references

__all__ = ["headline_table", "main"]

AGENT_NAMES = {"reinforce": "REINFORCE (`--algo reinforce`, the default)", "rollout": "rollout policy iteration (`--algo rollout`)",
               "ppo": "PPO", "a2c": "A2C", "dqn": "DQN", "maskable_ppo": "MaskablePPO"}


def _runs(paths: Sequence[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        for run in data.get("runs", [data]):
            score = run.get("benchmark_score")
            if not score or score.get("env_id") != CURRENT_ID or score.get("images") != PROTOCOL.num_images:
                raise ValueError(f"{path}: a run of {run.get('algo')} on {run.get('task')} without a benchmark score on "
                                 f"{CURRENT_ID}'s {PROTOCOL.num_images} protocol images")
            out.setdefault((run["algo"], run["task"]), {"scores": [], "returns": [], "seeds": []})
            out[(run["algo"], run["task"])]["scores"].append(score["score"])
            out[(run["algo"], run["task"])]["returns"].append(run["eval"]["policy"]["return_mean"])
            out[(run["algo"], run["task"])]["seeds"].append(run["seed"])
            out[(run["algo"], run["task"])]["interval"] = (score["score_low"], score["score_high"])
    return out


def headline_table(paths: Sequence[Path]) -> str:
    """Markdown: one row per baseline and agent, one column per task (score, mean return in brackets)."""
    runs = _runs(paths)
    refs = {task: load_references(task) for task in TASKS}
    header = "| policy | " + " | ".join(TASKS) + " |\n|---|" + "---|" * len(TASKS)
    rows = []
    best = {t: refs[t].best_fixed for t in TASKS}
    levels = sorted({best[t].split("_")[1] for t in TASKS})
    named = (f"level {levels[0]}" if len(levels) == 1 else ", ".join(f"{t}: level {best[t].split('_')[1]}" for t in TASKS))
    rows.append(f"| best fixed level ({named}) | "
                + " | ".join(f"0.000 ({refs[t].returns[best[t]].mean():.3f})" for t in TASKS) + " |")
    for name, label in (("random", "random (seed 0)"), ("preview_rule", "preview rule (weight fitted on 16 training images)")):
        rows.append(f"| {label} | " + " | ".join(
            f"{benchmark_score(refs[t].returns[name], t):.3f} ({refs[t].returns[name].mean():.3f})" for t in TASKS) + " |")
    for algo, label in AGENT_NAMES.items():
        if not any((algo, t) in runs for t in TASKS):
            continue
        cells = []
        for t in TASKS:
            run = runs.get((algo, t))
            if run is None:
                cells.append("not run")
                continue
            seeds = run["seeds"]
            if len(seeds) == 1:
                low, high = run["interval"]
                cells.append(f"**{run['scores'][0]:.3f}** [{low:.3f}, {high:.3f}] ({run['returns'][0]:.3f})")
            else:
                cells.append(f"**{np.mean(run['scores']):.3f}** ± {np.std(run['scores'], ddof=1):.3f} over "
                             f"{len(seeds)} seeds ({np.mean(run['returns']):.3f})")
        seed_note = "seed " + ", ".join(str(s) for s in sorted({s for t in TASKS if (algo, t) in runs
                                                                  for s in runs[(algo, t)]["seeds"]}))
        rows.append(f"| {label}, {seed_note} | " + " | ".join(cells) + " |")
    rows.append("| greedy look-ahead (peeks at every level's reward: a reference) | "
                + " | ".join(f"1.000 ({refs[t].returns['greedy'].mean():.3f})" for t in TASKS) + " |")
    return header + "\n" + "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="train_agent.py --json files")
    args = parser.parse_args(argv)
    print(headline_table(args.results), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
