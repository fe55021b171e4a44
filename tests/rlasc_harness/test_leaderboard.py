"""LEADERBOARD.md from results files: deterministic bytes, rows ordered by score, rliable intervals, the peeking
greedy last; export from train_agent.py runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from agents.baselines import FixedPolicy, RandomPolicy
from rlasc_env.engine import make_engine, reset_slots, run_episodes
from rlasc_env.results import Episode, read_results, results_document, write_results
from rlasc_harness.leaderboard import build_leaderboard, export_runs, leaderboard_rows, results_path

ENV = "rlasc/SemanticCoding-v5"  # an id with stored score references
N = 4


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    engine = make_engine(ENV, task="segmentation", observation="paper", sizes={"test": N, "train": 1})
    images = engine.parts("test").images

    def play(act):
        return [Episode(r.image_index, r.concepts, r.levels, r.episode_return)
                for r in run_episodes(engine.core("test", N), images, range(N), act, "miou")]

    docs = {"random": {s: play(RandomPolicy(6, s)) for s in range(3)},
            "fixed_4": {0: play(FixedPolicy(4, 6))}, "fixed_0": {0: play(FixedPolicy(0, 6))}}
    for algo, seeds in docs.items():
        write_results(results_path(ENV, "segmentation", algo, root),
                      results_document(ENV, "segmentation", algo, seeds, {"device": "cpu"}, {s: 1.0 for s in seeds},
                                       num_images=N))
    return root


def test_build_is_deterministic_and_ordered(root):
    text = build_leaderboard(ENV, root)
    assert text == build_leaderboard(ENV, root)
    rows = leaderboard_rows(ENV, "segmentation", root)
    assert [r["algo"] for r in rows][0] == "fixed_4" and rows[0]["score"] >= rows[1]["score"]
    rand = next(r for r in rows if r["algo"] == "random")
    assert rand["seeds"] == 3 and rand["low"] <= rand["score"] <= rand["high"]
    assert 0.0 <= rand["p_improvement"] <= 1.0 and rand["versus"] == "fixed_4"
    returns = {a: np.array([[e["return"] for e in s["episodes"]] for s in read_results(
        results_path(ENV, "segmentation", a, root))["seeds"]]) for a in ("random", "fixed_4")}
    mean, low, high = rand["difference"]  # paired on the same images, over the seeds
    assert mean == pytest.approx((returns["random"] - returns["fixed_4"][0]).mean()) and low <= mean <= high
    assert "difference" not in rows[0]  # the best baseline is not compared with itself
    assert "## detection\n\nNo entry yet." in text and "| fixed_4 | 1 |" in text


def test_export_from_train_agent_runs(tmp_path, root):
    doc = read_results(results_path(ENV, "segmentation", "fixed_4", root))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = {"seed": 0, "task": "segmentation", "eval_images": 200, "device": "cpu", "train_seconds": 10.0,
           "eval_seconds": 2.0, "eval": {"policy": {"episodes": doc["seeds"][0]["episodes"] * 50}}}
    (run_dir / "results.json").write_text(json.dumps(run))
    (run_dir / "config.json").write_text(json.dumps({"env_id": ENV}))
    out = export_runs([run_dir / "results.json"], "my_algo", tmp_path / "results")
    got = read_results(out)
    assert got["algo"] == "my_algo" and got["seeds"][0]["wall_seconds"] == 12.0
    assert got["entry"]["command"].startswith("python train_agent.py --algo my_algo")
    run["eval_images"] = 4
    (run_dir / "results.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match="the protocol has 200"):
        export_runs([run_dir / "results.json"], "my_algo", tmp_path / "results")
    assert np.isfinite(got["seeds"][0]["episodes"][0]["return"])


def test_export_merge_adds_seeds_and_refuses_a_seed_in_both(tmp_path, root):
    doc = read_results(results_path(ENV, "segmentation", "random", root))

    def run(seed, episodes):
        run_dir = tmp_path / f"run-{seed}"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "results.json").write_text(json.dumps(
            {"seed": seed, "task": "segmentation", "eval_images": 200, "device": "cpu", "train_seconds": 5.0 + seed,
             "eval_seconds": 1.0, "run_dir": str(run_dir), "eval": {"policy": {"episodes": episodes * 50}}}))
        (run_dir / "config.json").write_text(json.dumps({"env_id": ENV}))
        return run_dir / "results.json"

    first, second = (run(i, doc["seeds"][i]["episodes"]) for i in (0, 1))
    out = export_runs([first], "my_algo", tmp_path / "results")
    assert export_runs([second], "my_algo", tmp_path / "results", merge=True) == out
    got = read_results(out)
    assert [s["seed"] for s in got["seeds"]] == [0, 1] and [s["wall_seconds"] for s in got["seeds"]] == [6.0, 7.0]
    assert got["seeds"][0]["episodes"] == sorted(doc["seeds"][0]["episodes"] * 50, key=lambda e: e["image"])
    assert [r["seed"] for r in got["entry"]["runs"]] == [0, 1] and got["entry"]["command"].endswith("--seeds 0 1")
    with pytest.raises(ValueError, match=r"seed\(s\) \[1\] are in the file"):
        export_runs([second], "my_algo", tmp_path / "results", merge=True)
    assert read_results(out) == got  # refused: nothing written
    export_runs([second], "my_algo", tmp_path / "results")  # without merge the runs make the row
    assert [s["seed"] for s in read_results(out)["seeds"]] == [1]


def test_shipped_leaderboard_regenerates_and_its_files_replay():
    """LEADERBOARD.md (the current id) and results/<id>/LEADERBOARD.md (earlier ids) are `python -m
    rlasc_harness.leaderboard build`'s output, byte for byte, and the first images of every shipped results file
    replay on their id (the validator's full run: `python -m rlasc_env.validate`)."""
    from rlasc_env import CURRENT_ID
    from rlasc_env.results import validate_results
    from rlasc_harness.leaderboard import RESULTS_DIR, ROOT

    from rlasc_harness.leaderboard import leaderboard_files

    files = leaderboard_files()
    assert files[ROOT / "LEADERBOARD.md"] == build_leaderboard(CURRENT_ID)
    for path, text in files.items():
        assert path.read_text() == text, path
    for path in sorted([*RESULTS_DIR.glob("*/*/*.json"), *RESULTS_DIR.glob("*/*/budget-*/*.json")]):
        replay = validate_results(path, limit=2)
        assert replay.ok, replay.problems


def test_class_table_baseline_is_fitted_on_training_images_recorded_and_replays(tmp_path):
    """The class-table row: fitted on the training split (q* there, then every level's reward along q*'s episodes),
    its table and q* recorded in the entry, its episodes playing that table, replaying; refused in the budget mode."""
    from agents.class_table import ClassTable
    from rlasc_env.results import validate_results
    from rlasc_harness.leaderboard import play_baselines
    from rlasc_harness.learnability import fit_deployed_class_table

    fit = {"train_images": 6, "uniform_images": 3}
    (path,) = play_baselines("segmentation", ENV, ("class_table",), num_images=N, root=tmp_path, log=lambda *_: None,
                             class_table_fit=fit)
    doc = read_results(path)
    assert doc["algo"] == "class_table" and doc["entry"]["fit"]["train_images"] == 6
    engine = make_engine(ENV, task="segmentation", observation="preview", sizes={"test": N, "train": 6})
    table, q_star = fit_deployed_class_table(engine, **fit)
    assert doc["entry"]["q_star"] == q_star and doc["entry"]["class_table"] == table.to_json()
    recorded = ClassTable.from_json(doc["entry"]["class_table"])
    played = run_episodes(engine.core("test", N), engine.parts("test").images, range(N), recorded, "miou")
    assert [r.levels for r in played] == [e["levels"] for e in doc["seeds"][0]["episodes"]]
    replay = validate_results(path, engine=engine, num_images=N)
    assert replay.ok, replay.problems
    with pytest.raises(ValueError, match="class table"):
        play_baselines("segmentation", ENV, ("class_table",), num_images=N, root=tmp_path, bpp_budget=0.8)
    with pytest.raises(ValueError, match="train split has"):
        fit_deployed_class_table(engine, train_images=7, uniform_images=3)


def test_random_search_reference_is_the_best_of_its_samples_and_replays(tmp_path):
    """random_search_<k>: per image the best return of k random level sequences (played on the paper observation,
    the same rewards); it replays on the id, peeks (listed after the policies, no comparison with the best
    baseline), and is refused in the rate-budget mode."""
    from rlasc_env.results import validate_results
    from rlasc_harness.leaderboard import play_baselines

    paths = play_baselines("segmentation", ENV, ("fixed", "random_search"), num_images=N, root=tmp_path,
                           log=lambda *_: None, random_search_samples=3)
    doc = read_results(results_path(ENV, "segmentation", "random_search_3", tmp_path))
    assert doc["entry"]["peeks"] and doc["entry"]["samples"] == 3
    search = [e["return"] for e in doc["seeds"][0]["episodes"]]
    engine = make_engine(ENV, task="segmentation", observation="preview", sizes={"test": N, "train": 1})
    replay = validate_results(paths[-1], engine=engine, num_images=N)
    assert replay.ok, replay.problems
    # the searched sequences of image i come from default_rng([0, i]): replaying all three, the best is the row's
    images, core, slot = engine.parts("test").images, engine.core("test", 1), np.array([0])
    for i, best in enumerate(search):
        k = len(doc["seeds"][0]["episodes"][i]["levels"])
        returns = []
        for levels in np.random.default_rng([0, i]).integers(0, 6, (3, k)):
            reset_slots(core, images, slot, [i])
            returns.append(sum(float(core.step(slot, np.array([lv]))[0][0]) for lv in levels))
        assert best == pytest.approx(max(returns), abs=1e-5)
    rows = leaderboard_rows(ENV, "segmentation", tmp_path)
    assert rows[-1]["algo"] == "random_search_3" and "difference" not in rows[-1]
    assert "| random_search_3 (peeks) |" in build_leaderboard(ENV, tmp_path)
    with pytest.raises(ValueError, match="random search"):
        play_baselines("segmentation", ENV, ("random_search",), num_images=N, root=tmp_path, bpp_budget=0.8)


def test_budget_baselines_respect_the_budget_replay_and_get_their_section(tmp_path):
    """The rate-budget rows: play_baselines with bpp_budget writes budget-<b>/ files whose episodes stay within the
    budget (masked random, clipped fixed levels, the masked preview rule), they replay, and build shows them in the
    rate-budget section; greedy is refused there."""
    from rlasc_env.results import validate_results
    from rlasc_harness.leaderboard import play_baselines

    budget = 0.8  # above every image's all-level-0 rate on -v5 (codec tiny)
    paths = play_baselines("segmentation", ENV, ("random", "fixed", "preview_rule"), seeds=2, num_images=N,
                           root=tmp_path, log=lambda *_: None, bpp_budget=budget)
    assert all(p.parent.name == "budget-0.8" for p in paths) and len(paths) == 1 + 6 + 1
    engine = make_engine(ENV, task="segmentation", observation="paper", sizes={"test": N, "train": 1})
    for path in paths:
        doc = read_results(path)
        assert doc["protocol"]["bpp_budget"] == budget
        replay = validate_results(path, engine=engine, num_images=N)
        assert replay.ok, replay.problems
    fixed5 = read_results(results_path(ENV, "segmentation", "fixed_5", tmp_path, budget))
    levels = [q for e in fixed5["seeds"][0]["episodes"] for q in e["levels"]]
    assert max(levels) == 5 and min(levels) < 5  # level 5 where the budget allows it, lower where it does not
    text = build_leaderboard(ENV, tmp_path)
    assert "### segmentation, 0.8 bpp" in text and "| preview_rule | 1 |" in text
    assert text.index("## Rate-budget mode") < text.index("### segmentation, 0.8 bpp")
    with pytest.raises(ValueError, match="greedy steps every level"):
        play_baselines("segmentation", ENV, ("greedy",), num_images=N, root=tmp_path, bpp_budget=budget)


def test_train_agent_in_the_rate_budget_mode(tmp_path):
    """train_agent.py --bpp-budget: REINFORCE samples and evaluates within the budget (its masks), the baselines
    too; no greedy, no score; an algorithm that reads no mask is refused before training."""
    from rlasc_harness.config import TrainAgentConfig
    from rlasc_harness.runner import run

    cfg = TrainAgentConfig(env_id=ENV, bpp_budget=0.8, episodes=8, eval_images=3, train_images=8, preview_rule_images=2,
                           run_dir=tmp_path / "run", threads=1, progress=False)
    run(cfg, log=lambda *_: None)  # the core refuses a step over the budget: finishing is the check
    ev = json.loads((tmp_path / "run" / "results.json").read_text())["eval"]
    assert "greedy" not in ev and "policy" in ev and "preview_rule" in ev
    for name, row in ev.items():
        assert row["bpp_mean"] is None or row["bpp_mean"] <= 0.8 + 1e-9, name
    with pytest.raises(ValueError, match="does not read action masks"):
        run(TrainAgentConfig(env_id=ENV, algo="ppo", bpp_budget=0.8, run_dir=tmp_path / "ppo"), log=lambda *_: None)
