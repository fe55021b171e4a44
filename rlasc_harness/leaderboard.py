"""The leaderboard: results files that replay (:mod:`rlasc_env.results`) in, ``LEADERBOARD.md`` out.

    python -m rlasc_harness.leaderboard baselines --task segmentation        # random (5 seeds), fixed levels,
                                                   # preview rule, class table, greedy, random search (16 per image)
    python -m rlasc_harness.leaderboard export runs/agent/reinforce-segmentation-*/results.json --algo reinforce
    python -m rlasc_harness.leaderboard export runs/more-seeds/*/results.json --algo ppo --merge   # add seeds
    python -m rlasc_env.validate results/SemanticCoding-v7/*/*.json         # every entry replays
    python -m rlasc_harness.leaderboard build                              # LEADERBOARD.md, byte for byte
    python -m rlasc_harness.leaderboard baselines --task segmentation --bpp-budget 0.5 --names random fixed preview_rule

Rows: one per results file (an algorithm or baseline on one task), from its per-seed, per-image returns:

- **score** of each seed: the benchmark score (:mod:`rlasc_env.score`: 0 = the best fixed level, 1 = greedy) of its
  returns; the row shows the IQM over seeds and its 95% stratified bootstrap interval, computed with rliable (as
  Agarwal et al. 2021 recommend for few runs);
- **P(> best baseline)**: rliable's probability of improvement of the row's seeds over the best baseline that reads
  only the observation (random, fixed levels, preview rule, class table), per image;
- **return - best baseline**: the paired difference of returns on the same image (mean over seeds and images), with
  a 95% interval that resamples seeds and images (:func:`rlasc_harness.benchmark_table.paired_difference`);
- wall time and device per seed, from the entry.

Only files that replay count: ``build`` validates none itself (minutes per file), so run the validator first; CI
replays the shipped files' first images.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlasc_env.registration import CURRENT_ID, TASKS
from rlasc_env.results import Episode, id_pins, read_results, results_document, write_results
from rlasc_env.score import PROTOCOL, benchmark_score, load_references

from .benchmark_table import paired_difference

__all__ = ["results_path", "budget_folder", "leaderboard_files", "export_runs", "play_baselines", "leaderboard_rows",
           "build_leaderboard", "main",
           "BASELINES"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results"
BASELINES = ("random", "fixed", "preview_rule", "class_table", "greedy", "random_search")
OBSERVATION_ONLY = ("random", "preview_rule", "class_table")  # with fixed_<q>: baselines that read only the observation
CLASS_TABLE_FIT = {"train_images": 300, "uniform_images": 100}
"""The class table's fit (``rlasc_harness.learnability.fit_deployed_class_table``): q* on 100 training images, every
level's immediate reward along q*'s episodes on 300."""
PEEKS = ("greedy", "random_search")  # references that look at rewards (random_search_<k>): not legal policies
RANDOM_SEARCH_SAMPLES = 16
"""Level sequences per image of the random-search reference (the best of them by return)."""
BOOTSTRAP_REPS = 2000


def results_path(env_id: str, task: str, algo: str, root: Path = RESULTS_DIR, bpp_budget: float | None = None) -> Path:
    """``results/<id name>/<task>/<algo>.json``; a row of the rate-budget mode in ``<task>/budget-<b>/``."""
    folder = Path(root) / env_id.split("/")[-1] / task
    return (folder if bpp_budget is None else folder / budget_folder(bpp_budget)) / f"{algo}.json"


def budget_folder(bpp_budget: float) -> str:
    """``budget-<b>``: the folder of the rate-budget rows at ``bpp_budget`` bpp."""
    return f"budget-{float(bpp_budget):g}"


def _episodes(rows: Sequence[dict[str, Any]]) -> list[Episode]:
    return [Episode(int(e["image"]), list(e["concepts"]), list(e["levels"]), float(e["return"])) for e in rows]


# ----------------------------------------------------------------------------------------------------- export
def _merge_existing(path: Path, env_id: str, task: str, algo: str, budget: float | None,
                    seeds: dict[int, list[Episode]], walls: dict[int, float], entry: dict[str, Any]) -> None:
    """Add the seeds of the results file at ``path`` that ``seeds`` lacks (in place); ValueError if it is another
    row's file or shares a seed with the runs."""
    doc = read_results(path)
    found = (doc["env_id"], doc["task"], doc["algo"], doc["protocol"].get("bpp_budget"))
    if found != (env_id, task, algo, budget):
        raise ValueError(f"{path}: {found}, the runs are {(env_id, task, algo, budget)}: cannot merge")
    if doc["pins"] != id_pins(env_id):
        raise ValueError(f"{path}: its pins are not {env_id}'s today: replay it or write a new row, not a merge")
    both = sorted(set(seeds) & {int(s["seed"]) for s in doc["seeds"]})
    if both:
        raise ValueError(f"{path}: seed(s) {both} are in the file and in the runs; merge adds seeds, it does not "
                         f"replace them")
    old_runs = {int(r["seed"]): r for r in (doc.get("entry") or {}).get("runs", [])}
    for s in doc["seeds"]:
        seed = int(s["seed"])
        seeds[seed] = _episodes(s["episodes"])
        if s.get("wall_seconds") is not None:
            walls[seed] = float(s["wall_seconds"])
        entry["runs"].append(old_runs.get(seed, {"seed": seed}))


def export_runs(run_files: Sequence[str | Path], algo: str, root: Path = RESULTS_DIR, row: str = "policy",
                merge: bool = False) -> Path:
    """One results file from ``train_agent.py`` runs (their ``results.json``, one per seed, evaluated on the
    protocol's 200 images): the ``row`` policy's episodes, with each run's command, device and wall time.

    ``merge``: keep the seeds of the row's existing results file that the runs do not have (their episodes, wall
    time and run record), so seeds trained in another session join the row; the file must be of the same id, pins,
    task, algorithm and budget, and a seed in both is refused rather than replaced."""
    seeds: dict[int, list[Episode]] = {}
    walls: dict[int, float] = {}
    entry: dict[str, Any] = {"runs": []}
    env_id = task = None
    budgets: set[float | None] = set()
    for path in run_files:
        run = json.loads(Path(path).read_text())
        ev = run.get("eval", {}).get(row)
        if ev is None or "episodes" not in ev:
            raise ValueError(f"{path}: no episodes of {row!r} (evaluate with this version of train_agent.py)")
        config = json.loads((Path(path).parent / "config.json").read_text())
        run_id, run_task = config["env_id"], run["task"]
        if (env_id, task) not in ((None, None), (run_id, run_task)):
            raise ValueError(f"{path}: {run_id} {run_task}, the other runs are {env_id} {task}")
        env_id, task = run_id, run_task
        budgets.add((config.get("config") or {}).get("bpp_budget"))
        if len(budgets) > 1:
            raise ValueError(f"{path}: rate budget {sorted(budgets, key=str)}: the runs of one row share one budget")
        if run["eval_images"] != PROTOCOL.num_images:
            raise ValueError(f"{path}: evaluated on {run['eval_images']} images, the protocol has {PROTOCOL.num_images}")
        seed = int(run["seed"])
        seeds[seed] = _episodes(ev["episodes"])
        train_seconds = run.get("train_seconds")
        trained_by = (config.get("config") or {}).get("eval_only")
        if train_seconds is None and trained_by:  # --eval-only: the training time is the training run's
            source = Path(trained_by).parent / "results.json"
            if source.is_file():
                train_seconds = json.loads(source.read_text()).get("train_seconds")
        walls[seed] = float(train_seconds or 0.0) + float(run.get("eval_seconds") or 0.0)
        entry["runs"].append({"seed": seed, "device": run.get("device"), "run_dir": run.get("run_dir"),
                              "train_episodes": run.get("train_episodes")})
    if env_id is None:
        raise ValueError("give at least one results.json")
    budget = budgets.pop()
    out = results_path(env_id, task, algo, root, budget)
    if merge and out.is_file():
        _merge_existing(out, env_id, task, algo, budget, seeds, walls, entry)
    entry["runs"].sort(key=lambda r: r["seed"])
    entry["command"] = (f"python train_agent.py --algo {algo} --task {task} --seeds {' '.join(map(str, sorted(seeds)))}"
                        + ("" if budget is None else f" --bpp-budget {budget:g}"))
    write_results(out, results_document(env_id, task, algo, seeds, entry, walls, bpp_budget=budget))
    return out


def play_baselines(task: str, env_id: str = CURRENT_ID, names: Sequence[str] = BASELINES, seeds: int = 5,
                   num_images: int = PROTOCOL.num_images, root: Path = RESULTS_DIR, device: str = "cpu",
                   log: Any = print, bpp_budget: float | None = None,
                   class_table_fit: dict[str, int] | None = None,
                   random_search_samples: int = RANDOM_SEARCH_SAMPLES) -> list[Path]:
    """Play the baselines on the protocol's images and write one results file each: ``random`` (seeds
    0..``seeds``-1), ``fixed_<q>`` for every level, the preview rule (weight fitted on 16 training images, as the
    references) and the greedy look-ahead. ``bpp_budget``: the rate-budget mode's rows (the policies respect the
    mask, :mod:`agents.baselines`; greedy, which steps every level, is refused there). The class table is fitted on
    the training split (``class_table_fit``, default ``CLASS_TABLE_FIT``). ``random_search_<k>`` (k =
    ``random_search_samples``) plays, per image, the best of k uniformly random level sequences: it peeks at their
    returns, so it is a reference like greedy; its episodes run on the paper observation (the same rewards, without
    the preview's cost)."""
    from agents.baselines import FixedPolicy, RandomPolicy, greedy_episodes
    from rlasc_env.engine import make_engine, run_episodes

    from .runner import fitted_preview_rule

    if bpp_budget is not None and "greedy" in names:
        raise ValueError("greedy steps every level: it has no row in the rate-budget mode (--names without greedy)")
    if bpp_budget is not None and "class_table" in names:
        raise ValueError("the class table is fitted on rewards with the rate term: it has no row in the rate-budget "
                         "mode (--names without class_table)")
    if bpp_budget is not None and "random_search" in names:
        raise ValueError("random search draws unmasked levels: it has no row in the rate-budget mode "
                         "(--names without random_search)")
    engine = make_engine(env_id, task=task, observation="preview", lam=PROTOCOL.lam, eta=PROTOCOL.eta, device=device,
                         sizes={PROTOCOL.split: num_images, "train": 16}, bpp_budget=bpp_budget)
    images = engine.parts(PROTOCOL.split).images
    q = engine.num_levels
    indices = range(num_images)
    record = {"device": str(device), "machine": platform.machine(),
              "command": "python -m rlasc_harness.leaderboard " + shlex.join(sys.argv[1:])}
    out = []

    def write(algo: str, runs: dict[int, list[Any]], walls: dict[int, float], extra: dict[str, Any]) -> None:
        seeds_eps = {s: [Episode(r.image_index, r.concepts, r.levels, r.episode_return) for r in recs]
                     for s, recs in runs.items()}
        out.append(write_results(results_path(env_id, task, algo, root, bpp_budget),
                                 results_document(env_id, task, algo, seeds_eps, {**record, **extra}, walls,
                                                  num_images=num_images, bpp_budget=bpp_budget)))
        log(f"{task} {algo}: mean return {np.mean([e.episode_return for e in seeds_eps[min(seeds_eps)]]):.4f}")

    def timed(fn: Any) -> tuple[Any, float]:
        t0 = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - t0

    for name in names:
        if name == "random":
            runs, walls = {}, {}
            for s in range(seeds):
                runs[s], walls[s] = timed(lambda s=s: run_episodes(engine.core(PROTOCOL.split, 48), images, indices,
                                                                    RandomPolicy(q, s), engine.metric_name))
            write("random", runs, walls, {})
        elif name == "fixed":
            for level in range(q):
                recs, wall = timed(lambda level=level: run_episodes(engine.core(PROTOCOL.split, 48), images, indices,
                                                                    FixedPolicy(level, q), engine.metric_name))
                write(f"fixed_{level}", {0: recs}, {0: wall}, {})
        elif name == "preview_rule":
            rule = fitted_preview_rule(engine, 16, log)
            recs, wall = timed(lambda: run_episodes(engine.core(PROTOCOL.split, 48), images, indices, rule,
                                                    engine.metric_name))
            write("preview_rule", {0: recs}, {0: wall}, {"preview_rule_weight": rule.weight})
        elif name == "class_table":
            fit = dict(CLASS_TABLE_FIT if class_table_fit is None else class_table_fit)
            (table, q_star), fit_wall = timed(lambda: _fit_class_table(env_id, task, device, fit))
            log(f"class table: q* = fixed_{q_star}, fitted in {fit_wall:.0f} s")
            recs, wall = timed(lambda: run_episodes(engine.core(PROTOCOL.split, 48), images, indices, table,
                                                    engine.metric_name))
            write("class_table", {0: recs}, {0: fit_wall + wall}, {"class_table": table.to_json(), "q_star": q_star,
                                                        "fit": {**fit, "wall_seconds": round(fit_wall, 1)}})
        elif name == "greedy":
            recs, wall = timed(lambda: greedy_episodes(engine.core(PROTOCOL.split, q * 8), images, indices,
                                                       engine.metric_name))
            write("greedy", {0: recs}, {0: wall}, {"peeks": True})
        elif name == "random_search":
            from agents.baselines import random_search_episodes

            plain = make_engine(env_id, task=task, observation="paper", lam=PROTOCOL.lam, eta=PROTOCOL.eta,
                                device=device, sizes={PROTOCOL.split: num_images, "train": 1})
            lengths = [r.length for r in run_episodes(plain.core(PROTOCOL.split, 48), images, indices,
                                                      FixedPolicy(0, q), plain.metric_name)]
            k = int(random_search_samples)
            recs, wall = timed(lambda: random_search_episodes(plain.core(PROTOCOL.split, min(k, 48)), images, indices,
                                                              lengths, plain.metric_name, k, seed=0))
            write(f"random_search_{k}", {0: recs}, {0: wall}, {"peeks": True, "samples": k})
        else:
            raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
    return out


def _fit_class_table(env_id: str, task: str, device: str, fit: dict[str, int]) -> tuple[Any, int]:
    """The class table of ``task`` fitted on the training split (``fit``: train_images, uniform_images), on an
    engine of its own (the preview rule's fit reads the first 16 training images only)."""
    from rlasc_env.engine import make_engine

    from .learnability import fit_deployed_class_table

    engine = make_engine(env_id, task=task, observation="preview", lam=PROTOCOL.lam, eta=PROTOCOL.eta, device=device,
                         sizes={PROTOCOL.split: 1, "train": max(fit.values())})
    return fit_deployed_class_table(engine, **fit)


# ------------------------------------------------------------------------------------------------------ table
def _iqm_interval(scores: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """IQM of per-seed scores and its 95% stratified bootstrap interval (rliable)."""
    from rliable import library as rly
    from rliable import metrics

    values = scores.reshape(-1, 1)
    if len(values) < 2:
        v = float(values.mean())
        return v, v, v
    # The global generator is seeded too (and restored): the interval is otherwise not the same from one process to
    # the next, so LEADERBOARD.md would not regenerate byte for byte.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch, under rliable, announces a future change of its random_state keyword
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = rly.get_interval_estimates({"row": values},
                                                         lambda x: np.array([metrics.aggregate_iqm(x)]),
                                                         reps=BOOTSTRAP_REPS, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)
    return float(point["row"][0]), float(interval["row"][0, 0]), float(interval["row"][1, 0])


def _p_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's probability of improvement P(X > Y), images as its tasks, seeds as its runs."""
    from rliable import metrics

    return float(metrics.probability_of_improvement(x, y))


def leaderboard_rows(env_id: str, task: str, root: Path = RESULTS_DIR,
                     bpp_budget: float | None = None) -> list[dict[str, Any]]:
    """One row per results file of ``env_id`` and ``task``, best score first (greedy, which peeks, last). In the
    rate-budget mode (``bpp_budget``) there are no score references: the score is the mean return (lam 0)."""
    folder = results_path(env_id, task, "x", root, bpp_budget).parent
    docs = [read_results(p) for p in sorted(folder.glob("*.json"))]
    rows = []
    per_image: dict[str, np.ndarray] = {}
    for doc in docs:
        if (doc["env_id"], doc["task"], doc["protocol"].get("bpp_budget")) != (env_id, task, bpp_budget):
            raise ValueError(f"{folder}/{doc['algo']}.json holds {doc['env_id']} {doc['task']} with rate budget "
                             f"{doc['protocol'].get('bpp_budget')}")
        returns = np.array([[e["return"] for e in sorted(s["episodes"], key=lambda e: e["image"])]
                            for s in doc["seeds"]])  # (seeds, images)
        per_image[doc["algo"]] = returns
        scores = (returns.mean(1) if bpp_budget is not None
                  else np.array([benchmark_score(r, task, env_id) for r in returns]))
        iqm, low, high = _iqm_interval(scores)
        walls = [s.get("wall_seconds") for s in doc["seeds"] if s.get("wall_seconds") is not None]
        devices = sorted({str(r.get("device")) for r in doc["entry"].get("runs", [])} or {str(doc["entry"].get(
            "device", "?"))})
        rows.append({"algo": doc["algo"], "seeds": len(returns), "return_mean": float(returns.mean()),
                     "score": iqm, "low": low, "high": high, "wall_seconds": float(np.mean(walls)) if walls else None,
                     "device": "/".join(devices), "command": doc["entry"].get("command", "")})
    legal = {a: r for a, r in per_image.items() if a in OBSERVATION_ONLY or a.startswith("fixed_")}
    best = max(legal, key=lambda a: legal[a].mean()) if legal else None
    for row in rows:
        if best is not None and row["algo"] != best and not _peeks(row["algo"]):
            row["p_improvement"] = _p_improvement(per_image[row["algo"]], per_image[best].mean(0, keepdims=True))
            row["difference"] = paired_difference(per_image[row["algo"]], per_image[best].mean(0))
            row["versus"] = best
    rows.sort(key=lambda r: (_peeks(r["algo"]), -r["score"], r["algo"]))
    return rows


def _peeks(algo: str) -> bool:
    """Whether ``algo``'s row is a reference that looks at rewards (greedy, random_search_<k>)."""
    return algo in PEEKS or any(algo.startswith(f"{p}_") for p in PEEKS)


def _table(rows: list[dict[str, Any]], score_name: str) -> list[str]:
    """The Markdown table of ``rows`` (``leaderboard_rows``), or a line saying there is none."""
    if not rows:
        return ["No entry yet.", ""]
    lines = [f"| entry | seeds | {score_name} | mean return | return - best baseline [95% CI] | P(> best baseline) | "
             "wall time per seed | device |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = f"{r['p_improvement']:.2f} (vs {r['versus']})" if "p_improvement" in r else "–"
        d = "{:+.4f} [{:+.4f}, {:+.4f}]".format(*r["difference"]) if "difference" in r else "–"
        name = f"{r['algo']} (peeks)" if _peeks(r["algo"]) else r["algo"]
        lines.append(f"| {name} | {r['seeds']} | {_fmt3(r['score'])} [{_fmt3(r['low'])}, {_fmt3(r['high'])}] | "
                     f"{r['return_mean']:.4f} | {d} | {p} | {_fmt_wall(r['wall_seconds'])} | {r['device']} |")
    return lines + [""]


def _fmt3(value: float) -> str:
    """Three decimals; a value that rounds to zero prints as 0.000 whatever its sign (the best fixed level's row
    replayed on another machine can differ from the references by a last bit)."""
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _fmt_wall(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def build_leaderboard(env_id: str = CURRENT_ID, root: Path = RESULTS_DIR) -> str:
    """The Markdown of ``LEADERBOARD.md`` (deterministic: the same files give the same bytes)."""
    status = _status_line(env_id, root)
    lines = [f"# Leaderboard: `{env_id}`", "", status, "",
             "Generated by `python -m rlasc_harness.leaderboard build` from `results/` (do not edit by hand). Every "
             "file there replays: `python -m rlasc_env.validate results/*/*/*.json`. Protocol: the first "
             f"{PROTOCOL.num_images} test images, lam {PROTOCOL.lam:g}, eta {PROTOCOL.eta:g}, deterministic actions. "
             "Score: 0 = the best fixed level, 1 = the greedy look-ahead (which peeks at rewards: a reference); IQM "
             "over seeds with its 95% stratified bootstrap interval (rliable). The best baseline is the best row "
             "that reads only the observation and learns at most a few numbers (a fixed level, random, the preview "
             "rule, the class table: one level per class and size, counted on training images). Return - "
             "best baseline: the paired difference of returns on the same image, its 95% interval resampling seeds "
             "and images. P(>): rliable's probability that the row beats that baseline, per image.", ""]
    for task in TASKS:
        lines += [f"## {task}", ""] + _table(leaderboard_rows(env_id, task, root) if results_path(
            env_id, task, "x", root).parent.is_dir() else [], "score (IQM) [95% CI]")
    lines += ["## Rate-budget mode", "",
              "`bpp_budget` b (docs/benchmark.md): no episode goes over b bpp (the validator replays the budget), the "
              "reward drops the rate term (lam 0), the levels over the budget are masked. No score references exist "
              "for it, so the score column is the mean return: IQM over seeds of the per-seed mean, with its 95% "
              "stratified bootstrap interval. Rows: `python -m rlasc_harness.leaderboard baselines --bpp-budget B "
              "--names random fixed preview_rule`, and `train_agent.py --bpp-budget B` runs exported.", ""]
    budgets = sorted({float(p.name.split("-", 1)[1]) for task in TASKS
                      for p in results_path(env_id, task, "x", root).parent.glob("budget-*") if p.is_dir()})
    if not budgets:
        lines += ["No entry yet.", ""]
    for budget in budgets:
        for task in TASKS:
            folder = results_path(env_id, task, "x", root, budget).parent
            if folder.is_dir():
                lines += [f"### {task}, {budget:g} bpp", ""] + _table(leaderboard_rows(env_id, task, root, budget),
                                                                       "mean return (IQM) [95% CI]")
    lines += ["## Submitting an entry", "",
              "1. Play your policy on the protocol's 200 test images for each seed and write "
              "`results/<id name>/<task>/<algo>.json` (`rlasc_env.results.results_document` and `write_results`; "
              "`train_agent.py` runs: `python -m rlasc_harness.leaderboard export RUN/results.json ... --algo NAME`, "
              "with `--merge` to add seeds to a row's file).",
              "2. `python -m rlasc_env.validate FILE` must print `ok` (every image, the id's pins, returns within "
              "1e-5).", "3. `python -m rlasc_harness.leaderboard build` and commit both.", ""]
    return "\n".join(lines)


def _status_line(env_id: str, root: Path) -> str:
    """Whether ``env_id`` is the current id (with links to the earlier ids' tables) or a frozen one."""
    if env_id != CURRENT_ID:
        return (f"A frozen id: the benchmark is now `{CURRENT_ID}` ([LEADERBOARD.md](../../LEADERBOARD.md)); these "
                "rows stay as they were played.")
    earlier = [p.name for p in sorted(Path(root).iterdir()) if p.is_dir() and f"rlasc/{p.name}" != env_id
               ] if Path(root).is_dir() else []
    if not earlier:
        return "The current id."
    return "The current id. Earlier ids keep their tables: " + ", ".join(
        f"[`rlasc/{name}`](results/{name}/LEADERBOARD.md)" for name in earlier) + "."


def leaderboard_files(root: Path = RESULTS_DIR) -> dict[Path, str]:
    """Every leaderboard ``build`` writes: ``LEADERBOARD.md`` for the current id, and
    ``results/<id name>/LEADERBOARD.md`` for every earlier id that has results."""
    files = {ROOT / "LEADERBOARD.md": build_leaderboard(CURRENT_ID, root)}
    for folder in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if folder.is_dir() and f"rlasc/{folder.name}" != CURRENT_ID:
            files[folder / "LEADERBOARD.md"] = build_leaderboard(f"rlasc/{folder.name}", root)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write LEADERBOARD.md (the current id) and results/<id>/LEADERBOARD.md (earlier "
                                     "ids) from results/")
    b.add_argument("--env-id", default=None, help="only this id's table, to --out")
    b.add_argument("--root", type=Path, default=RESULTS_DIR)
    b.add_argument("--out", type=Path, default=None)
    e = sub.add_parser("export", help="results file from train_agent.py runs (one results.json per seed)")
    e.add_argument("runs", nargs="+")
    e.add_argument("--algo", required=True)
    e.add_argument("--root", type=Path, default=RESULTS_DIR)
    e.add_argument("--merge", action="store_true",
                   help="keep the seeds of the row's existing results file that these runs do not have")
    p = sub.add_parser("baselines", help="play the baselines on the protocol and write their results files")
    p.add_argument("--task", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--env-id", default=CURRENT_ID)
    p.add_argument("--names", nargs="+", default=list(BASELINES), choices=BASELINES)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--root", type=Path, default=RESULTS_DIR)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bpp-budget", type=float, default=None, help="rows of the rate-budget mode at this budget")
    p.add_argument("--samples", type=int, default=RANDOM_SEARCH_SAMPLES,
                   help="level sequences per image of random_search (its row is random_search_<samples>)")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        if args.env_id is not None:
            out = args.out or ROOT / "LEADERBOARD.md"
            out.write_text(build_leaderboard(args.env_id, args.root))
            print(f"wrote {out}")
        else:
            for path, text in leaderboard_files(args.root).items():
                path.write_text(text)
                print(f"wrote {path}")
    elif args.cmd == "export":
        print(f"wrote {export_runs(args.runs, args.algo, args.root, merge=args.merge)}")
    else:
        import torch

        torch.set_num_threads(args.threads)
        for task in args.task:
            if args.bpp_budget is None:
                load_references(task, args.env_id)  # the score needs them: fail before playing
            play_baselines(task, args.env_id, args.names, args.seeds, root=args.root, bpp_budget=args.bpp_budget,
                           random_search_samples=args.samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
