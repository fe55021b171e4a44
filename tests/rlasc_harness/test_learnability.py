"""The learnability diagnostic (rlasc_harness.learnability): greedy steps with their observations,
per-step regrets, behaviour cloning of greedy and its report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from engines import make_engine

from agents.baselines import greedy_episodes
from agents.class_table import ClassTable
from rlasc_env.engine import reset_slots
from rlasc_harness.learnability import (LEARNED_CHOOSERS, GreedySteps, LearnabilityConfig, class_table,
                                        collect_greedy_steps, fit_policy, regret_share_ci, run, signal_gate,
                                        step_scores)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine5(test_codec, test_dataset):
    return make_engine(test_codec, test_dataset, (0, 2, 8, 10, 13))


def test_greedy_observations_are_the_states_it_chose_from(engine5) -> None:
    eng = engine5
    q, images = eng.num_levels, eng.parts("test").images
    records = greedy_episodes(eng.core("test", 2 * q), images, [0, 1], eng.metric_name, observe=True)
    core = eng.core("test", 1)
    for rec in records:  # replay greedy's levels on a fresh slot: the same observation before every step
        assert len(rec.extra["observations"]) == rec.length == 5
        reset_slots(core, images, np.array([0]), [rec.image_index])
        for obs, level in zip(rec.extra["observations"], rec.levels):
            replay = core.observation(np.array([0]))
            for key, value in obs.items():
                np.testing.assert_allclose(value, replay[key][0], atol=1e-4)  # stats[6]: losses of batched forwards
            core.step(np.array([0]), np.array([level]))
    with pytest.raises(ValueError, match="clone"):
        greedy_episodes(eng.core("test", q), images, [0], eng.metric_name, method="replay", observe=True)


def test_step_scores_and_class_table(engine5) -> None:
    steps, records = collect_greedy_steps(engine5, "test", [0, 1, 2, 3], batch=2 * engine5.num_levels)
    assert len(steps) == sum(r.length for r in records) == 20
    assert steps.observations["features"].shape[0] == 20
    # every array lines up step by step: class, image, greedy's level and its reward
    assert (steps.observations["concept"].argmax(1) == steps.classes).all()
    assert (steps.image == np.repeat([r.image_index for r in records], [r.length for r in records])).all()
    assert (steps.candidates.argmax(1) == steps.levels).all()
    assert np.allclose(steps.candidates.max(1), [x for r in records for x in r.rewards])
    assert step_scores(steps, steps.levels) == {"accuracy": 1.0, "regret": 0.0}
    for level in range(engine5.num_levels):  # a fixed level matches greedy exactly where greedy chose it
        s = step_scores(steps, np.full(len(steps), level))
        assert s["accuracy"] == pytest.approx(float((steps.levels == level).mean()))
        assert (s["regret"] > 0.0) == bool((steps.levels != level).any())
    with pytest.raises(ValueError, match="image"):
        collect_greedy_steps(engine5, "test", [])
    table = class_table(steps)
    assert set(table) == {0, 2, 8, 10, 13}
    # on the steps it was fitted to, the class table is at least as good as every fixed level
    chosen = np.array([table[int(c)] for c in steps.classes])
    best_fixed = min(step_scores(steps, np.full(len(steps), lv))["regret"] for lv in range(engine5.num_levels))
    assert step_scores(steps, chosen)["regret"] <= best_fixed + 1e-12


def test_run_writes_a_report(engine5, tmp_path) -> None:
    out = tmp_path / "learn.json"
    cache = tmp_path / "greedy.npz"
    cfg = LearnabilityConfig(train_images=10, eval_images=3, epochs=2, batch_size=8, json=str(out), progress=False,
                             greedy_cache=str(cache))
    report = run(cfg, engine=engine5)
    again = run(cfg, engine=engine5)  # greedy's steps from the cache: the same per-step scores
    assert cache.is_file() and again["per_step"] == report["per_step"]
    with np.load(cache) as data:
        assert data["levels"].shape == (10 * 5,)
    saved = json.loads(out.read_text())
    assert saved["per_step"] == report["per_step"]
    q = engine5.num_levels
    assert report["weights"] == engine5.weight_hashes()  # what a class table loaded from it is matched against
    assert sum(report["greedy_steps"]["level_histogram"]) == 10 * 5
    assert report["greedy_steps"]["held_out_images"] == 2 and report["greedy_steps"]["fit_images"] == 8
    assert report["per_step"]["greedy"]["regret"] == 0.0
    best = report["best_fixed_by_regret"]
    assert report["per_step"][best]["regret"] == min(report["per_step"][f"fixed_{lv}"]["regret"] for lv in range(q))
    for name, diff in report["regret_vs_best_fixed"].items():
        assert diff == pytest.approx(report["per_step"][name]["regret"] - report["per_step"][best]["regret"])
    assert set(report["regret_vs_best_fixed"]) == {"class_table", "class_table_greedy", "imitation", "reward_fit",
                                                   "compact_fit", "compact_ensemble"}
    uniform = report["uniform_on_train"]
    assert uniform["best_level"] == max(range(q), key=lambda lv: uniform["returns"][f"fixed_{lv}"])
    assert (tmp_path / f"greedy.follow{uniform['best_level']}.npz").is_file()
    assert {"imitation", "reward_fit", "compact_fit", "greedy", *(f"fixed_{lv}" for lv in range(q))} <= set(report["episodes"])
    assert set(report["gap_closure"]) == {"imitation", "reward_fit", "compact_fit", "compact_ensemble", "class_table",
                                          "class_table_greedy"}
    gate = report["gate"]
    ci = gate["class_table_minus_best_fixed"]
    best_return = gate["best_fixed_return"]
    diffs = np.subtract(report["episodes"]["class_table"]["returns"], report["episodes"][best_return]["returns"])
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(diffs.mean()) and ci["low"] <= ci["mean"] <= ci["high"]
    assert gate["class_table_beats_best_fixed"] == (ci["low"] > 0)
    # the gate's shares are cross-validated (default 5 folds): every greedy step of the 10 images scored once
    cv = report["cross_validation"]
    assert (cv["folds"], cv["images"], cv["steps"]) == (5, 10, 10 * 5) and "5-fold" in gate["regret_measured_on"]
    assert cv["per_step"]["greedy"]["regret"] == 0.0
    assert cv["per_step"][cv["best_fixed"]]["regret"] == min(cv["per_step"][f"fixed_{lv}"]["regret"] for lv in range(q))
    for name, share in gate["regret_reduction"].items():
        assert share == pytest.approx(1 - cv["per_step"][name]["regret"] / cv["per_step"][cv["best_fixed"]]["regret"])
        low, high = gate["regret_reduction_ci"][name]
        assert low <= share + 1e-12 and share <= high + 1e-12
    assert gate["best_learned"] == max(LEARNED_CHOOSERS, key=lambda n: gate["regret_reduction"][n])
    assert gate["passed"] == (gate["class_table_beats_best_fixed"] and gate["learned_removes_40pct"])
    # without cross-validation the shares are the held-out fifth's
    single = signal_gate(report["per_step"], report["episodes"], list(LEARNED_CHOOSERS))
    for name, share in single["regret_reduction"].items():
        assert share == pytest.approx(1 - report["per_step"][name]["regret"] / report["per_step"][best]["regret"])
    assert single["regret_reduction_ci"] is None and "held-out fifth" in single["regret_measured_on"]
    for name, g in report["gap_closure"].items():  # against the best fixed level by episode return
        returns = {k: v["return_mean"] for k, v in report["episodes"].items() if k.startswith("fixed_")}
        assert g["best_fixed"] == max(returns, key=returns.get)
        assert g["policy_minus_best_fixed"] == pytest.approx(report["episodes"][name]["return_mean"] - max(returns.values()))
    with pytest.raises(ValueError, match="images"):
        run(LearnabilityConfig(train_images=100, eval_images=3, epochs=1, progress=False), engine=engine5)


@pytest.mark.parametrize("objective", ["cross_entropy", "reward_regression"])
def test_fitted_policy_learns_a_predictable_level(engine5, objective) -> None:
    """Rewards that depend only on the concept class (best level = a class's rank mod Q): both
    objectives fit that level from the observation on the steps they were trained on."""
    steps, _ = collect_greedy_steps(engine5, "test", list(range(8)), batch=2 * engine5.num_levels)
    q = engine5.num_levels
    rank = {c: i for i, c in enumerate(sorted(set(steps.classes.tolist())))}
    best = np.array([rank[int(c)] % q for c in steps.classes])
    candidates = -np.abs(np.arange(q)[None, :] - best[:, None]).astype(np.float64)  # 0 at the best level
    synthetic = GreedySteps(steps.observations, best, candidates, steps.classes, steps.image)
    policy = fit_policy(engine5, synthetic, epochs=60, learning_rate=3e-3, batch_size=8, seed=0, objective=objective)
    scores = step_scores(synthetic, policy.act(synthetic.observations, deterministic=True))
    assert scores["accuracy"] == 1.0 and scores["regret"] == 0.0
    with pytest.raises(ValueError, match="objective"):
        fit_policy(engine5, synthetic, 1, 1e-3, 8, 0, objective="mse")


def test_class_table_picks_the_least_regret_level_per_class_and_size() -> None:
    """Class 3 wants level 1 when small and level 4 when large; class 7 always level 2; a group with too
    few steps falls back to its class, an unseen class to the best uniform level."""
    from agents.class_table import SIZE_EDGES, fit_class_table

    q, rows = 6, []
    for share, cls, best in [(0.01, 3, 1)] * 6 + [(0.5, 3, 4)] * 6 + [(0.1, 7, 2)] * 8 + [(0.5, 7, 5)] * 2:
        rows.append((cls, share, -np.abs(np.arange(q) - best).astype(float)))
    classes = np.array([r[0] for r in rows])
    shares = np.array([r[1] for r in rows])
    table = fit_class_table(classes, shares, np.stack([r[2] for r in rows]), min_steps=5)
    assert table.choose(np.array([3, 3, 7, 7, 11]), np.array([0.01, 0.5, 0.1, 0.5, 0.1])).tolist() == [1, 4, 2, 2,
                                                                                                     table.default]
    assert table.counts[(7, len(SIZE_EDGES))] == 2 and (7, len(SIZE_EDGES)) not in table.levels
    obs = {"concept": np.eye(19, dtype=np.float32)[[3, 7]], "stats": np.array([[0.5] + [0] * 6, [0.1] + [0] * 6])}
    assert table(obs, np.arange(2)).tolist() == [4, 2]
    assert set(table.to_json()) == {"size_edges", "default", "class_levels", "levels", "counts"}
    again = ClassTable.from_json(json.loads(json.dumps(table.to_json())))
    assert (again.levels, again.class_levels, again.default, again.counts) == (
        table.levels, table.class_levels, table.default, table.counts)
    with pytest.raises(ValueError, match="size edges"):
        ClassTable.from_json({**table.to_json(), "size_edges": [0.1]})


def test_class_table_report_loads_only_for_its_settings(tmp_path) -> None:
    from agents.class_table import load_class_table

    table = ClassTable({(0, 3): 2}, {0: 2}, 4)
    report = {"task": "segmentation", "config": {"codec": "tiny", "lam": 1.0, "eta": 10.0, "preset": "tiny"},
              "class_table": table.to_json()}
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(report))
    run = {"task": "segmentation", "codec": "tiny", "lam": 1.0, "eta": 10.0, "preset": "tiny"}
    assert load_class_table(path, run).levels == {(0, 3): 2}
    with pytest.raises(ValueError, match="lam"):
        load_class_table(path, {**run, "lam": 2.0})
    with pytest.raises(ValueError, match="task"):
        load_class_table(path, {**run, "task": "detection"})
    with pytest.raises(FileNotFoundError, match="learnability"):
        load_class_table(tmp_path / "none.json", run)
    (tmp_path / "segmentation.json").write_text(path.read_text())  # {task} names one report per task
    assert load_class_table(tmp_path / "{task}.json", run).levels == {(0, 3): 2}
    with pytest.raises(FileNotFoundError, match="detection.json"):
        load_class_table(tmp_path / "{task}.json", {**run, "task": "detection"})
    # matched by the sha256 of the files, not only by their names: retrained weights under the name "tiny" are refused
    ours = {"codec_sha256": "a" * 64, "task_sha256": "b" * 64}
    path.write_text(json.dumps({**report, "weights": ours}))
    assert load_class_table(path, run, ours).levels == {(0, 3): 2}
    with pytest.raises(ValueError, match="other weights.*codec_sha256.*cccccccccccc"):
        load_class_table(path, run, {**ours, "codec_sha256": "c" * 64})
    with pytest.raises(ValueError, match="task_sha256"):
        load_class_table(path, run, {**ours, "task_sha256": None})  # an in-process network is not the file's
    path.write_text(json.dumps(report))
    with pytest.raises(ValueError, match="does not record the sha256"):
        load_class_table(path, run, ours)
    path.write_text(json.dumps({"task": "segmentation"}))
    with pytest.raises(ValueError, match="class_table"):
        load_class_table(path, run)


def test_shipped_gate_reports_match_the_shipped_weights() -> None:
    """docs/gate/<task>.json are the class tables the README's commands load (--class-table docs/gate/TASK.json):
    they must name the weights -v1 pins."""
    from rlasc_env.versions import ENV_PINS

    pins = ENV_PINS["rlasc/SemanticCoding-v1"]
    for task in ("segmentation", "detection", "classification"):
        report = json.loads((ROOT / "docs" / "gate" / f"{task}.json").read_text())
        assert report["weights"] == {"codec_sha256": pins["codec_sha256"], "task_sha256": pins["task_sha256"][task]}


def test_regret_share_ci_resamples_images() -> None:
    images = np.repeat(np.arange(40), 3)  # 40 images, 3 steps each
    reference = np.ones(120)
    half = np.full(120, 0.5)
    exact = regret_share_ci(images, half, reference, resamples=500)
    assert exact == {"share": 0.5, "low": 0.5, "high": 0.5, "images": 40}  # the same share in every image
    rng = np.random.default_rng(0)
    noisy = regret_share_ci(images, rng.uniform(0, 1, 120), reference, resamples=2000)
    assert noisy["low"] < noisy["share"] < noisy["high"] and noisy["images"] == 40
    wider = regret_share_ci(images[:30], rng.uniform(0, 1, 30), reference[:30], resamples=2000)  # 10 images
    assert wider["high"] - wider["low"] > noisy["high"] - noisy["low"]
    assert np.isnan(regret_share_ci(images, half, np.zeros(120))["share"])  # nothing to remove: undefined, not inf


def test_paired_difference_ci() -> None:
    from rlasc_harness.learnability import paired_difference

    rng = np.random.default_rng(0)
    base = rng.normal(size=100)
    better = paired_difference(base + 0.5 + 0.1 * rng.normal(size=100), base, resamples=2000)
    assert 0 < better["low"] < better["mean"] < better["high"] and better["mean"] == pytest.approx(0.5, abs=0.05)
    same = paired_difference(base + 0.1 * rng.normal(size=100), base, resamples=2000)
    assert same["low"] < 0 < same["high"]
    with pytest.raises(ValueError, match="two"):
        paired_difference([1.0], [0.0])


def test_uniform_optimum_by_lam() -> None:
    """Three fixed levels: more rate buys lower losses; lam = 0 picks the finest, a large lam the coarsest."""
    from rlasc_harness.learnability import uniform_optimum_by_lam

    ep = {f"fixed_{q}": {"bpp_mean": b, "semantic_loss_mean": s, "perceptual_loss_mean": p}
          for q, (b, s, p) in enumerate([(0.2, 0.8, 0.5), (0.6, 0.7, 0.3), (1.4, 0.65, 0.25)])}
    rows = uniform_optimum_by_lam(ep, eta=10.0, grid=[0.0, 0.5, 1.0, 3.0, 10.0])
    # returns: level 1 = -0.4 lam + 0.1 + 2.0; level 2 = -1.2 lam + 0.15 + 2.5
    assert [r["level"] for r in rows] == [2, 1, 0]
    assert rows[0]["lam_to"] == 0.5 and rows[1]["lam_from"] == 1.0 and rows[2]["lam_from"] == 10.0


def test_follow_collects_deviations_along_a_fixed_level(engine5) -> None:
    """Along fixed level 1's episodes: every step plays level 1, records every level's immediate reward,
    and the followed level's rewards add up to fixed level 1's episode return."""
    from agents.baselines import FixedPolicy
    from rlasc_env.engine import run_episodes

    steps, records = collect_greedy_steps(engine5, "test", [0, 1, 2], batch=2 * engine5.num_levels, follow=1)
    assert (steps.levels == 1).all() and steps.candidates.shape == (len(steps), engine5.num_levels)
    fixed = run_episodes(engine5.core("test", 3), engine5.parts("test").images, [0, 1, 2],
                         FixedPolicy(1, engine5.num_levels), engine5.metric_name)
    for rec, ref in zip(records, fixed):
        assert rec.episode_return == pytest.approx(ref.episode_return, abs=1e-5)
        cand = np.asarray(rec.extra["candidate_rewards"])
        assert cand[:, 1].sum() == pytest.approx(ref.episode_return, abs=1e-5)
    with pytest.raises(ValueError, match="follow"):
        collect_greedy_steps(engine5, "test", [0], batch=engine5.num_levels, follow=engine5.num_levels)


def test_follow_a_policy_records_every_levels_reward_along_its_episodes(engine5) -> None:
    """``follow`` given a policy: the episodes are that policy's (same levels, same returns as run_episodes), and
    every step still records every level's immediate reward, the followed level's among them."""
    from agents.baselines import greedy_episodes
    from rlasc_env.engine import run_episodes

    def by_class(obs: dict, slots: np.ndarray) -> np.ndarray:  # a deterministic policy that reads the observation
        return (np.asarray(obs["concept"]).argmax(1) % engine5.num_levels).astype(np.int64)

    images = engine5.parts("test").images
    core = engine5.core("test", 2 * engine5.num_levels)
    followed = greedy_episodes(core, images, [0, 1, 2], engine5.metric_name, follow=by_class)
    played = run_episodes(engine5.core("test", 3), images, [0, 1, 2], by_class, engine5.metric_name)
    for rec, ref in zip(followed, played):
        assert rec.levels == ref.levels
        assert rec.episode_return == pytest.approx(ref.episode_return, abs=1e-5)
        cand = np.asarray(rec.extra["candidate_rewards"])
        assert cand[np.arange(len(rec.levels)), rec.levels].sum() == pytest.approx(ref.episode_return, abs=1e-5)
