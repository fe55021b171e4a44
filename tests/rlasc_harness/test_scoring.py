"""The benchmark score: stored references replay, one function scores any policy, bad inputs are refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlasc_env import CURRENT_ID
from rlasc_env.score import PROTOCOL, benchmark_score, load_references, references_path, score_interval

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("segmentation", "detection", "classification")


def _refs_or_skip():
    if not references_path(CURRENT_ID).is_file():
        pytest.skip("score references absent (python -m rlasc_harness.references)")


@pytest.mark.parametrize("task", TASKS)
def test_references_cover_the_protocol(task):
    _refs_or_skip()
    refs = load_references(task)
    assert refs.num_images == PROTOCOL.num_images
    assert {f"fixed_{q}" for q in range(6)} | {"greedy", "preview_rule", "random"} <= set(refs.returns)
    means = {k: v.mean() for k, v in refs.returns.items() if k.startswith("fixed_")}
    assert refs.best_fixed == max(means, key=means.get)
    assert refs.returns["greedy"].mean() > means[refs.best_fixed]  # greedy is the upper reference point
    assert benchmark_score(refs.returns[refs.best_fixed], task) == pytest.approx(0.0, abs=1e-12)
    assert benchmark_score(refs.returns["greedy"], task) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("task", TASKS)
def test_stored_references_replay(task):
    """The first images of every stored deterministic baseline replay through today's code (to 1e-4)."""
    _refs_or_skip()
    from rlasc_harness.references import check_references

    worst = check_references(CURRENT_ID, task, 2)
    assert {"greedy", "preview_rule", "fixed_0", "fixed_5"} <= set(worst)


def test_references_of_one_task_merge_into_the_ids_file(tmp_path):
    """One process per task (--merge): each keeps the tasks already written for the same id and protocol."""
    from rlasc_harness.references import write_references

    def entry(value: float, images: int = 3) -> dict:
        return {"best_fixed": "fixed_0", "returns": {"fixed_0": [value] * images, "greedy": [value + 1] * images},
                "record": {"preview_rule_weight": 0.8}}

    path = tmp_path / "refs.json"
    write_references(CURRENT_ID, {"segmentation": entry(0.1)}, path)
    write_references(CURRENT_ID, {"detection": entry(0.2)}, path, merge=True)
    tasks = json.loads(path.read_text())["tasks"]
    assert set(tasks) == {"segmentation", "detection"} and tasks["segmentation"]["returns"]["fixed_0"] == [0.1] * 3
    write_references(CURRENT_ID, {"classification": entry(0.3)}, path)  # without --merge: the file is replaced
    assert set(json.loads(path.read_text())["tasks"]) == {"classification"}
    with pytest.raises(ValueError, match="not .* on 4"):
        write_references(CURRENT_ID, {"detection": entry(0.2, images=4)}, path, merge=True)
    with pytest.raises(ValueError, match="holds"):
        write_references("rlasc/SemanticCoding-v5", {"detection": entry(0.2)}, path, merge=True)


def test_evaluate_policy_scores_a_callable_and_a_saved_policy():
    _refs_or_skip()
    from rlasc_harness.scoring import evaluate_policy

    refs = load_references("segmentation")
    best = int(refs.best_fixed.split("_")[1])
    report = evaluate_policy(lambda obs: best, task="segmentation", num_images=3)
    np.testing.assert_allclose(report.returns, refs.returns[refs.best_fixed][:3], atol=1e-4)
    assert report.score == pytest.approx(0.0, abs=1e-3)
    assert f"best fixed ({refs.best_fixed})" in report.against and "greedy" in report.against
    assert report.against["greedy"]["difference"] < 0 <= report.against["greedy"]["p_improvement"] <= 1
    assert "benchmark score" in report.table()
    shipped = ROOT / "agents" / "weights" / "rollout-v4-segmentation.pt"  # its observation fits -v5's preview
    saved = evaluate_policy(str(shipped), task="segmentation", num_images=2)
    assert np.isfinite(saved.score) and len(saved.returns) == 2
    json.dumps(saved.to_json())


def test_bad_inputs_are_refused():
    _refs_or_skip()
    from rlasc_harness.scoring import evaluate_policy

    with pytest.raises(ValueError, match="finite"):
        benchmark_score([1.0, float("nan")], "segmentation")
    with pytest.raises(ValueError, match="references hold"):
        benchmark_score(np.zeros(PROTOCOL.num_images + 1), "segmentation")
    with pytest.raises(FileNotFoundError, match="no score references"):
        benchmark_score([1.0], "segmentation", "rlasc/SemanticCoding-v4")
    with pytest.raises(ValueError, match="num_images"):
        evaluate_policy(lambda obs: 0, num_images=0)
    with pytest.raises(TypeError, match="a policy is"):
        evaluate_policy(42, num_images=1)
    with pytest.raises(ValueError, match="SB3 model"):
        evaluate_policy(_zip(), num_images=1)
    score, low, high = score_interval(load_references("detection").returns["greedy"][:20], "detection")
    assert score == pytest.approx(1.0) and low <= score <= high


def _zip() -> str:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "model.zip"
    path.write_bytes(b"not a model")
    return str(path)


def test_headline_table_reads_runs_and_refuses_runs_off_the_protocol(tmp_path):
    _refs_or_skip()
    from rlasc_harness.headline import headline_table

    run = {"algo": "reinforce", "task": "segmentation", "seed": 0, "eval": {"policy": {"return_mean": 2.5}},
           "benchmark_score": {"env_id": CURRENT_ID, "images": 200, "score": 0.5, "score_low": 0.4, "score_high": 0.6}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(run))
    table = headline_table([path])
    assert "| REINFORCE (`--algo reinforce`, the default), seed 0 | **0.500** [0.400, 0.600] (2.500) | not run | not run |" in table
    assert table.count("\n") == 2 + 5  # header, rule, best fixed, random, preview rule, REINFORCE, greedy
    off = dict(run, benchmark_score={**run["benchmark_score"], "images": 48})
    path.write_text(json.dumps(off))
    with pytest.raises(ValueError, match="without a benchmark score"):
        headline_table([path])
