"""Minari datasets of the baselines: built locally, read back with minari.load_dataset, returns as played."""
from __future__ import annotations

import numpy as np
import pytest

from rlasc_env import CURRENT_ID


def test_small_dataset_builds_and_loads_with_the_policys_returns(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    from rlasc_env.engine import make_engine
    from rlasc_harness.offline_data import collect_dataset, dataset_id, policy_episodes

    engine = make_engine(CURRENT_ID, task="segmentation", observation="preview", sizes={"train": 2})
    for policy in ("random", "greedy"):
        records = policy_episodes(engine, policy, 2, log=lambda *a: None)
        collect_dataset(CURRENT_ID, "segmentation", policy, records)
        data = minari.load_dataset(dataset_id(CURRENT_ID, "segmentation", policy))
        assert data.total_episodes == 2
        returns = [float(np.sum(ep.rewards)) for ep in data.iterate_episodes()]
        np.testing.assert_allclose(returns, [r.episode_return for r in records], atol=1e-5)
        first = next(iter(data.iterate_episodes()))
        assert list(first.actions) == records[0].levels and set(first.observations) >= {"features", "stats"}


def _row_copy(tmp_path, name, change=None, row="preview_rule.json", episodes=2):
    """A shipped row of segmentation, cut to its first ``episodes`` episodes (``change`` edits the second)."""
    import json

    from rlasc_harness.leaderboard import RESULTS_DIR

    doc = json.loads((RESULTS_DIR / "SemanticCoding-v7" / "segmentation" / row).read_text())
    doc["seeds"] = doc["seeds"][:1]
    doc["seeds"][0]["episodes"] = doc["seeds"][0]["episodes"][:episodes]
    if change is not None:
        change(doc["seeds"][0]["episodes"][1])
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path, doc


def test_a_leaderboard_row_becomes_a_dataset_with_its_returns_and_a_changed_row_is_refused(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    from rlasc_harness.offline_data import dataset_from_results, dataset_id

    path, doc = _row_copy(tmp_path, "row.json")
    dataset_from_results(path)
    name = dataset_id(CURRENT_ID, "segmentation", "preview_rule", split="test")
    assert name.endswith("-preview_rule-test-v0")
    data = minari.load_dataset(name)
    episodes = list(data.iterate_episodes())
    assert len(episodes) == 2
    stored = doc["seeds"][0]["episodes"]
    np.testing.assert_allclose([float(np.sum(ep.rewards)) for ep in episodes], [e["return"] for e in stored],
                               atol=1e-5)
    assert [list(ep.actions) for ep in episodes] == [e["levels"] for e in stored]

    def bump(episode):
        episode["return"] += 0.01

    def swap(episode):
        episode["concepts"] = episode["concepts"][::-1]

    for label, change in (("return", bump), ("concepts", swap)):
        bad, _ = _row_copy(tmp_path, f"bad_{label}.json", change)
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / f"datasets_{label}"))
        with pytest.raises(RuntimeError, match="image 1"):
            dataset_from_results(bad)
        assert minari.list_local_datasets() == {}, f"a dataset was written from the row with a changed {label}"
    with pytest.raises(ValueError, match="seeds \\[3\\]"):
        dataset_from_results(path, seeds=[3])


def test_a_rate_budget_row_becomes_a_dataset_in_its_mode(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    from rlasc_harness.offline_data import dataset_from_results

    path, doc = _row_copy(tmp_path, "budget.json", row="budget-0.5/preview_rule.json", episodes=1)
    data = dataset_from_results(path)
    assert data.spec.dataset_id.endswith("-preview_rule-budget0_5-test-v0")
    (episode,) = list(minari.load_dataset(data.spec.dataset_id).iterate_episodes())
    assert float(np.sum(episode.rewards)) == pytest.approx(doc["seeds"][0]["episodes"][0]["return"], abs=1e-5)
