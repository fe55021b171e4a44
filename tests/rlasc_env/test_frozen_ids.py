"""Frozen ids replay their documented figures through today's code (the same path as gym.make)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.baselines import FixedPolicy
from rlasc_env.engine import make_engine, run_episodes

ROOT = Path(__file__).resolve().parents[2]


def _documented(name: str) -> dict:
    path = ROOT / "docs" / name
    if not path.is_file() or not (ROOT / "codec_models" / "weights" / "tiny.pt").is_file():
        pytest.skip(f"{path} or the shipped codec is absent")
    return json.loads(path.read_text())


@pytest.mark.parametrize("level", [0, 4])
def test_v4_fixed_levels_replay_the_default_commands_returns(level):
    """docs/default_command_v4.json (the default command when -v4 was the default) holds per-image returns."""
    doc = _documented("default_command_v4.json")
    engine = make_engine("rlasc/SemanticCoding-v4", task="segmentation", sizes={"test": 4, "train": 1})
    records = run_episodes(engine.core("test", 4), engine.parts("test").images, range(4), FixedPolicy(level, 6), "miou")
    np.testing.assert_allclose([r.episode_return for r in records], doc["eval"][f"fixed_{level}"]["returns"][:4],
                               atol=1e-4)


def test_v1_and_v4_share_rewards_and_differ_only_in_the_observation():
    engine_v1 = make_engine("rlasc/SemanticCoding-v1", task="segmentation", sizes={"test": 2, "train": 1})
    engine_v4 = make_engine("rlasc/SemanticCoding-v4", task="segmentation", sizes={"test": 2, "train": 1})
    returns = [[r.episode_return for r in run_episodes(e.core("test", 2), e.parts("test").images, range(2),
                                                       FixedPolicy(3, 6), "miou")] for e in (engine_v1, engine_v4)]
    np.testing.assert_allclose(returns[0], returns[1], atol=1e-6)
    assert not engine_v1.spec.preview and engine_v4.spec.preview


@pytest.mark.parametrize("level", [0, 4])
def test_v5_fixed_levels_replay_its_score_references(level):
    """-v5, the current id until v6, is frozen: its fixed levels replay rlasc_env/references/SemanticCoding-v5.json,
    and -v6 (another codec, the same task networks) gives other returns on the same images."""
    from rlasc_env.score import load_references

    stored = load_references("segmentation", "rlasc/SemanticCoding-v5").returns[f"fixed_{level}"][:3]
    got = {}
    for env_id in ("rlasc/SemanticCoding-v5", "rlasc/SemanticCoding-v6"):
        engine = make_engine(env_id, task="segmentation", sizes={"test": 3, "train": 1})
        got[env_id] = [r.episode_return for r in run_episodes(engine.core("test", 3), engine.parts("test").images,
                                                              range(3), FixedPolicy(level, 6), "miou")]
    np.testing.assert_allclose(got["rlasc/SemanticCoding-v5"], stored, atol=1e-4)
    if level:
        assert np.abs(np.subtract(got["rlasc/SemanticCoding-v6"], stored)).max() > 1e-2


def test_v6_fixed_level_replays_its_score_references():
    """-v6, the current id until v7, is frozen: level 4 replays rlasc_env/references/SemanticCoding-v6.json, and -v7
    (the codec tiny-sf3: the same decoded images, fewer bits) gives other returns on the same images."""
    from rlasc_env.score import load_references

    stored = load_references("detection", "rlasc/SemanticCoding-v6").returns["fixed_4"][:2]
    got = {}
    for env_id in ("rlasc/SemanticCoding-v6", "rlasc/SemanticCoding-v7"):
        engine = make_engine(env_id, task="detection", sizes={"test": 2, "train": 1})
        got[env_id] = [r.episode_return for r in run_episodes(engine.core("test", 2), engine.parts("test").images,
                                                              range(2), FixedPolicy(4, 6), "box_iou")]
    np.testing.assert_allclose(got["rlasc/SemanticCoding-v6"], stored, atol=1e-4)
    assert np.abs(np.subtract(got["rlasc/SemanticCoding-v7"], stored)).max() > 1e-2


@pytest.mark.slow
def test_v1_fixed_levels_replay_the_documented_means():
    """docs/default_command_v1.json (the -v1 default command's baselines, 48 test images): every fixed level's mean."""
    doc = _documented("default_command_v1.json")
    engine = make_engine("rlasc/SemanticCoding-v1", task="segmentation", sizes={"test": 48, "train": 1})
    from rlasc_harness.evaluation import baseline_policies, evaluate

    fixed = {k: v for k, v in baseline_policies(6, 0).items() if k.startswith("fixed_")}
    ev = evaluate(engine, fixed, 48, greedy=False)
    for name in fixed:
        assert ev[name]["return_mean"] == pytest.approx(doc["eval"][name]["return_mean"], abs=1e-4), name


def _replay_default(tmp_path, env_id: str, doc: dict) -> float:
    import torch

    from rlasc_harness.config import TrainAgentConfig
    from rlasc_harness.runner import run

    threads = torch.get_num_threads()
    cfg = TrainAgentConfig(algo="reinforce", env_id=env_id, eval_images=48, run_dir=tmp_path, progress=False,
                           device="cpu", threads=2, greedy=False)  # the documented runs' threads (torch's default)
    try:
        result = run(cfg, log=lambda *a, **k: None)
    finally:
        torch.set_num_threads(threads)
    return result["eval"]["policy"]["return_mean"]


@pytest.mark.slow
def test_v1_default_command_replays_its_documented_return(tmp_path):
    """`python train_agent.py --algo reinforce --env-id rlasc/SemanticCoding-v1 --eval-images 48`: the -v1 default
    figure 2.1087 (docs/default_command_v1.json). About 8 minutes on 2 cores.

    -v1's step sizes (lr 1e-3 over 1200 episodes) make its training trajectory follow the last bits of the rewards,
    which differ between CPUs (docs/benchmark.md, "Replays across machines"): the machine that wrote the document
    gives 2.1087, session 25's AMD EPYC host 2.0535, while the environment itself replays (the fixed levels' means
    above, to 1e-4). So the figure is checked to the spread measured between machines, and the trained policy must
    still beat every fixed level; the -v4 default command below is checked to 1e-4."""
    doc = _documented("default_command_v1.json")
    value = _replay_default(tmp_path, "rlasc/SemanticCoding-v1", doc)
    best_fixed = max(v["return_mean"] for k, v in doc["eval"].items() if k.startswith("fixed_"))
    assert value == pytest.approx(doc["eval"]["policy"]["return_mean"], abs=0.08)
    assert value > best_fixed + 0.05, (value, best_fixed)


@pytest.mark.slow
def test_v4_default_command_replays_its_documented_return(tmp_path):
    """`python train_agent.py --algo reinforce --env-id rlasc/SemanticCoding-v4 --eval-images 48` gives the README's
    2.2951 (docs/default_command_v4.json), bit for bit up to float printing. About 5 minutes on 2 cores."""
    doc = _documented("default_command_v4.json")
    value = _replay_default(tmp_path, "rlasc/SemanticCoding-v4", doc)
    assert value == pytest.approx(doc["eval"]["policy"]["return_mean"], abs=1e-4)
    assert round(value, 4) == 2.2951
