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
