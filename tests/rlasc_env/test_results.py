"""Results that replay: a file written from played episodes validates; a changed return, a missing image, other
pins or other concepts are refused with a message that says which."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.baselines import RandomPolicy
from rlasc_env import CURRENT_ID
from rlasc_env.engine import make_engine, run_episodes
from rlasc_env.results import Episode, ResultsError, results_document, validate_results, write_results
from rlasc_env.validate import main as validate_main

N = 4  # protocol images in these tests (the benchmark's 200 take minutes)


@pytest.fixture(scope="module")
def engine():
    return make_engine(CURRENT_ID, task="segmentation", observation="paper", sizes={"test": N, "train": 1})


@pytest.fixture(scope="module")
def played(engine):
    records = {seed: run_episodes(engine.core("test", N), engine.parts("test").images, range(N),
                                  RandomPolicy(engine.num_levels, seed), engine.metric_name) for seed in (0, 1)}
    return {seed: [Episode(r.image_index, r.concepts, r.levels, r.episode_return) for r in recs]
            for seed, recs in records.items()}


def _write(tmp_path: Path, doc: dict, name: str = "random.json") -> Path:
    return write_results(tmp_path / name, doc)


def test_played_episodes_replay_and_the_file_is_byte_stable(tmp_path, engine, played):
    doc = results_document(CURRENT_ID, "segmentation", "random", played, {"command": "test"}, num_images=N)
    path = _write(tmp_path, doc)
    replay = validate_results(path, engine=engine, num_images=N)
    assert replay.ok, replay.problems
    assert set(replay.max_diff) == {0, 1} and max(replay.max_diff.values()) <= 1e-5
    first = path.read_bytes()
    assert _write(tmp_path, json.loads(first)).read_bytes() == first


def test_a_return_changed_by_001_is_refused(tmp_path, engine, played):
    doc = results_document(CURRENT_ID, "segmentation", "random", played, num_images=N)
    doc["seeds"][1]["episodes"][2]["return"] += 0.01
    replay = validate_results(_write(tmp_path, doc), engine=engine, num_images=N)
    assert not replay.ok
    assert len(replay.problems) == 1 and "seed 1 image 2: stored return" in replay.problems[0]


def test_missing_image_other_pins_and_wrong_concepts_are_refused(tmp_path, engine, played):
    doc = results_document(CURRENT_ID, "segmentation", "random", played, num_images=N)
    missing = json.loads(json.dumps(doc))
    del missing["seeds"][0]["episodes"][3]
    assert any("seed 0: missing image(s) [3]" in p
               for p in validate_results(_write(tmp_path, missing), engine=engine, num_images=N).problems)
    pins = json.loads(json.dumps(doc))
    pins["pins"]["codec_sha256"] = "0" * 64
    assert any("pins differ" in p and "codec_sha256" in p
               for p in validate_results(_write(tmp_path, pins), engine=engine, num_images=N).problems)
    concepts = json.loads(json.dumps(doc))
    episode = concepts["seeds"][0]["episodes"][0]
    episode["concepts"] = episode["concepts"][::-1]
    assert any("are not the image's coding order" in p
               for p in validate_results(_write(tmp_path, concepts), engine=engine, num_images=N).problems)
    with pytest.raises(ResultsError, match="not an 'rlasc-results' file"):
        validate_results(_write(tmp_path, {"format": "other"}), engine=engine, num_images=N)


def test_cli_refuses_a_file_that_does_not_cover_the_protocol(tmp_path, played, capsys):
    doc = results_document(CURRENT_ID, "segmentation", "random", played, num_images=N)  # 4 images, not 200
    assert validate_main([str(_write(tmp_path, doc))]) == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "num_images is 4, the benchmark's is 200" in out
    assert np.isfinite(doc["seeds"][0]["episodes"][0]["return"])


def test_budget_rows_replay_and_an_episode_over_its_budget_is_refused(tmp_path, engine):
    """A rate-budget row (protocol bpp_budget): its lam = 0 returns replay; levels that take an image over the budget
    are refused with the image named; the same returns without the budget do not replay; a bad budget is refused."""
    from rlasc_env.engine import reset_slots

    core, images = engine.core("test", N), engine.parts("test").images
    reset_slots(core, images, np.arange(N), range(N), bpp_budget=1.0)
    orders = [core.order[j, :core.count[j]].tolist() for j in range(N)]
    levels = np.zeros((N, engine.codec.num_classes), np.int64)
    levels[np.arange(N), [order[0] for order in orders]] = 3  # the first concept at level 3, the others at 0
    returns, _ = core.finish(np.arange(N), levels)
    episodes = {0: [Episode(i, orders[i], [3] + [0] * (len(orders[i]) - 1), float(returns[i])) for i in range(N)]}
    doc = results_document(CURRENT_ID, "segmentation", "preview_rule", episodes, num_images=N, bpp_budget=1.0)
    assert doc["protocol"]["bpp_budget"] == 1.0
    assert validate_results(_write(tmp_path, doc), engine=engine, num_images=N).ok
    over = json.loads(json.dumps(doc))
    over["seeds"][0]["episodes"][1]["levels"] = [engine.num_levels - 1] * len(orders[1])
    problems = validate_results(_write(tmp_path, over), engine=engine, num_images=N).problems
    assert len(problems) == 1 and "image 1: the levels go over the rate budget" in problems[0]
    plain = json.loads(json.dumps(doc))
    del plain["protocol"]["bpp_budget"]  # lam 1: the rate term is back, every return differs
    assert len(validate_results(_write(tmp_path, plain), engine=engine, num_images=N).problems) == N
    bad = json.loads(json.dumps(doc))
    bad["protocol"]["bpp_budget"] = -1
    assert any("protocol bpp_budget" in p for p in validate_results(_write(tmp_path, bad), engine=engine,
                                                                    num_images=N).problems)
