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
