"""Rollout policy iteration (agents.rollout): EpisodeCore.finish, the rollouts' returns, the corrected preview rule,
its fit, and train_agent.py --algo rollout (files, reload, resume, refusals)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tb_events import scalar_tags

import rlasc_env
from agents.baselines import PreviewRule
from agents.corrected_rule import CorrectedRulePolicy
from agents.hyperparams import load_hyperparams
from agents.rollout import RolloutConfig, collect_rollouts, fit_correction
from rlasc_env.engine import Engine, EnvSpec, copy_slot, reset_slots, run_episodes
from rlasc_env.env import EnvParts, EpisodeCore
from rlasc_harness.config import TrainAgentConfig
from rlasc_harness.runner import run


@pytest.fixture(scope="module")
def preview_engine(test_codec, test_dataset) -> Engine:
    return Engine(EnvSpec(task="pixel-test", codec=test_codec, lam=0.02, preview=True,
                          images={"train": test_dataset, "test": test_dataset}))


def _core(test_codec, test_dataset, slots: int, preview: bool = False) -> EpisodeCore:
    return EpisodeCore(EnvParts(test_codec, rlasc_env.make_task("pixel-test"), test_dataset, 32, 64, preview=preview),
                       slots, 0.02, 10.0)


def test_finish_ends_the_episode_where_stepping_does(test_codec, test_dataset):
    """finish() from the reset state and from the middle of an episode gives the return, bits, losses and
    normalized score that stepping the same levels one concept at a time gives."""
    core = _core(test_codec, test_dataset, 8)
    q, rng = core.Q, np.random.default_rng(0)
    for index in (0, 3):
        reset_slots(core, test_dataset, np.array([0]), [index])
        copy_slot(core, 0, np.arange(1, 8))
        k, order = int(core.count[0]), core.order[0, :core.count[0]]
        sequences = rng.integers(0, q, (4, k))
        sequences[0] = 0  # every concept at level 0: x_hat unchanged, return 0
        levels = np.zeros((4, core.M), np.int64)
        levels[:, order] = sequences
        core.step(np.array([6, 7]), sequences[2:, 0])  # slots 6-7: one concept coded, then finished
        returns, info = core.finish(np.array([0, 1, 2, 3, 6, 7]), np.concatenate([levels, levels[2:]]))
        stepped = np.zeros(4)
        core.memo.clear()  # replay without the entries finish() left: every step decodes again
        reset_slots(core, test_dataset, np.array([0]), [index])
        copy_slot(core, 0, np.arange(1, 4))
        for t in range(k):
            reward, terminated, step_info, final = core.step(np.arange(4), sequences[:, t])
            stepped += reward
        assert terminated.all()
        np.testing.assert_allclose(returns[:4], stepped, atol=1e-5)
        np.testing.assert_allclose(returns[4:], stepped[2:], atol=1e-5)
        assert returns[0] == pytest.approx(0.0, abs=1e-9)
        np.testing.assert_array_equal(info["bits"][:4], step_info["bits"])
        np.testing.assert_allclose(info["normalized_score"][:4], final["normalized_score"], atol=1e-5)
        np.testing.assert_allclose(info["perceptual_loss"][:4], step_info["perceptual_loss"], atol=1e-6)


def test_finish_refuses_bad_levels_and_changes_nothing(test_codec, test_dataset):
    core = _core(test_codec, test_dataset, 2)
    reset_slots(core, test_dataset, np.arange(2), [0, 1])
    levels = np.zeros((2, core.M), np.int64)
    levels[1, core.order[1, 0]] = core.Q  # not a level
    before = (core.t.copy(), core.bits.copy(), core.levels_np.copy())
    with pytest.raises(ValueError, match="not quantization levels"):
        core.finish(np.arange(2), levels)
    assert all(np.array_equal(a, b) for a, b in zip(before, (core.t, core.bits, core.levels_np)))
    with pytest.raises(ValueError, match="slots, classes"):
        core.finish(np.arange(2), levels[:, :3])
    core.finish(np.array([0]), levels[:1])
    with pytest.raises(RuntimeError, match="is over"):
        core.finish(np.array([0]), levels[:1])
    with pytest.raises(ValueError, match="do not hold"):
        core.share_image_caches(0, [1])  # another image


def test_rollouts_measure_every_single_concept_change(test_codec, test_dataset):
    """collect_rollouts: the chosen level's worth is the policy's return; another level's worth is the return of
    the episode with that concept alone changed, as stepping it gives; the untrained corrected rule is the rule."""
    core = _core(test_codec, test_dataset, 24, preview=True)
    q = core.Q
    rule = PreviewRule(1.1, q)
    steps = collect_rollouts(core, test_dataset, [2, 5], rule, iteration=3, images_per_chunk=2)
    played = run_episodes(_core(test_codec, test_dataset, 2, preview=True), test_dataset, [2, 5], rule, "psnr")
    assert (steps.iteration == 3).all() and set(steps.image.tolist()) == {2, 5}
    for record in played:
        mine = steps.image == record.image_index
        np.testing.assert_array_equal(steps.levels[mine], record.levels)
        worth = steps.worth[mine]
        np.testing.assert_allclose(worth[np.arange(len(worth)), record.levels], record.episode_return, atol=1e-5)
    # one changed concept, replayed step by step on a fresh core
    image, j, level = 5, 1, (int(steps.levels[steps.image == 5][1]) + 2) % q
    sequence = steps.levels[steps.image == image].copy()
    sequence[j] = level
    fresh = _core(test_codec, test_dataset, 1)
    reset_slots(fresh, test_dataset, np.array([0]), [image])
    total = sum(fresh.step(np.array([0]), np.array([lv]))[0][0] for lv in sequence)
    assert steps.worth[steps.image == image][j, level] == pytest.approx(total, abs=1e-5)
    assert (steps.regret() >= -1e-9).all()
    policy = CorrectedRulePolicy(rlasc_env.env.observation_space(test_codec, 32, 64, True), q, 1.1, 8, 2)
    obs = {"stats": steps.inputs[:, :-core.M], "concept": steps.inputs[:, -core.M:],
           "features": np.zeros((len(steps), *policy.shapes["features"]), np.float32),
           "mask": np.zeros((len(steps), *policy.shapes["mask"]), np.float32)}
    np.testing.assert_array_equal(policy.act(obs), steps.levels)


def test_fit_correction_learns_the_worth_the_rule_misses(test_codec, test_dataset):
    """Fitted on rollouts, the corrected rule's levels lose less return (per step, on those steps) than the rule's."""
    core = _core(test_codec, test_dataset, 40, preview=True)
    q = core.Q
    steps = collect_rollouts(core, test_dataset, list(range(8)), PreviewRule(1.1, q), images_per_chunk=4)
    policy = CorrectedRulePolicy(rlasc_env.env.observation_space(test_codec, 32, 64, True), q, 1.1, 32, 2)
    obs = {"stats": steps.inputs[:, :-core.M], "concept": steps.inputs[:, -core.M:],
           "features": np.zeros((len(steps), *policy.shapes["features"]), np.float32),
           "mask": np.zeros((len(steps), *policy.shapes["mask"]), np.float32)}
    rows = np.arange(len(steps))
    rule_loss = (steps.worth.max(1) - steps.worth[rows, policy.act(obs)]).sum()
    assert rule_loss > 0  # the rule leaves something to learn on these steps
    # weight_decay is in reward units squared: this test env's rewards are about 100 times smaller than -v4's
    mse = fit_correction(policy, steps, RolloutConfig(epochs=400, hidden=32, members=2, weight_decay=0.0), seed=0)
    fitted_loss = (steps.worth.max(1) - steps.worth[rows, policy.act(obs)]).sum()
    assert np.isfinite(mse) and fitted_loss < 0.5 * rule_loss


def _rollout_cfg(tmp_path, **kw) -> TrainAgentConfig:
    base = dict(algo="rollout", eval_images=3, run_dir=tmp_path / "run", json=tmp_path / "out.json", progress=False,
                device="cpu", oracle_cap=0, greedy=False, preview_rule_images=4,
                hp=("iterations=2", "images_per_iteration=3", "hidden=16", "members=2", "epochs=50",
                    "images_per_chunk=2", "slots=24"))
    return TrainAgentConfig(**{**base, **kw})


def test_train_agent_rollout_saves_reloads_and_resumes(preview_engine, tmp_path):
    """--algo rollout: the JSON (policy beside the preview rule, rollouts counted), tensorboard scalars, one policy
    per iteration; --eval-only of policy.pt gives the same returns; a run stopped after one iteration and resumed
    ends on the same policy as the straight run."""
    factory = lambda c, task, device: preview_engine  # noqa: E731
    data = run(_rollout_cfg(tmp_path), log=lambda s: None, engine_factory=factory)
    assert {"policy", "preview_rule", "random", "fixed_0"} <= set(data["eval"])
    assert data["train_episodes"] == 6 and data["train_rollouts"] > 0 and data["algo"] == "rollout"
    run_dir = tmp_path / "run"
    for name in ("policy.pt", "policy_iter1.pt", "policy_iter2.pt", "checkpoint.pt", "results.json"):
        assert (run_dir / name).is_file(), name
    assert {"rollout/policy_return", "rollout/best_change_gain", "rollout/fit_mse"} <= scalar_tags(run_dir / "tb")
    again = run(_rollout_cfg(tmp_path, eval_only=run_dir / "policy.pt", run_dir=tmp_path / "eval",
                             json=tmp_path / "again.json"), log=lambda s: None, engine_factory=factory)
    assert again["eval"]["policy"]["returns"] == pytest.approx(data["eval"]["policy"]["returns"], abs=1e-9)
    # resume: one iteration, then continue to two
    one = tuple("iterations=1" if h == "iterations=2" else h for h in _rollout_cfg(tmp_path).hp)
    first = _rollout_cfg(tmp_path, run_dir=tmp_path / "split", json=None, hp=one)
    run(first, log=lambda s: None, engine_factory=factory)
    resumed = run(_rollout_cfg(tmp_path, run_dir=tmp_path / "split", json=None, resume=True), log=lambda s: None,
                  engine_factory=factory)
    assert resumed["eval"]["policy"]["returns"] == pytest.approx(data["eval"]["policy"]["returns"], abs=1e-9)
    a = torch.load(run_dir / "policy.pt", weights_only=True)["state"]
    b = torch.load(tmp_path / "split" / "policy.pt", weights_only=True)["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rollout_is_refused_without_the_preview_and_with_steps(test_codec, test_dataset, preview_engine, tmp_path):
    without = Engine(EnvSpec(task="pixel-test", codec=test_codec, lam=0.02,
                             images={"train": test_dataset, "test": test_dataset}))
    with pytest.raises(ValueError, match="SemanticCoding-v7 with observation preview"):
        run(_rollout_cfg(tmp_path), log=lambda s: None, engine_factory=lambda c, task, device: without)
    with pytest.raises(ValueError, match="needs the level preview"):
        run(_rollout_cfg(tmp_path, env_id="rlasc/SemanticCoding-v1"), log=lambda s: None,
            engine_factory=lambda c, task, device: without)
    for preset in ("tiny", "paper"):
        assert RolloutConfig(**load_hyperparams("rollout", preset, "rlasc/SemanticCoding-v4")).iterations >= 1
    with pytest.raises(ValueError, match="not in --steps"):
        run(_rollout_cfg(tmp_path, steps=100), log=lambda s: None,
            engine_factory=lambda c, task, device: preview_engine)
    with pytest.raises(FileNotFoundError, match="no training state"):
        run(_rollout_cfg(tmp_path, run_dir=tmp_path / "never-trained", resume=True), log=lambda s: None,
            engine_factory=lambda c, task, device: preview_engine)
    with pytest.raises(ValueError, match="reads the level preview"):
        CorrectedRulePolicy(without.observation_space, test_codec.num_levels, 1.1)
    with pytest.raises(ValueError, match="images_per_chunk"):
        RolloutConfig(images_per_chunk=50, slots=96)
    with pytest.raises(ValueError, match="deterministic"):
        CorrectedRulePolicy(preview_engine.observation_space, test_codec.num_levels, 1.1).act({}, deterministic=False)


def test_shipped_rollout_policies_match_their_record_and_replay_its_returns():
    """agents/weights/rollout-v4-<task>.pt: the files the record names (sha256), corrected preview rules for -v4's
    observation; the segmentation policy replays its recorded returns on the first test images."""
    from pathlib import Path

    from agents.checkpoint import load_policy
    from rlasc_env.versions import file_sha256
    from rlasc_harness.runner import make_engine

    root = Path(__file__).resolve().parents[2]
    record_path = root / "agents" / "weights" / "rollout-v4.json"
    if not record_path.is_file():
        pytest.skip("shipped rollout policies absent (agents/weights/rollout-v4.json)")
    record = json.loads(record_path.read_text())
    assert set(record["policies"]) == {"segmentation", "detection", "classification"}
    for task, entry in record["policies"].items():
        path = root / entry["file"]
        assert file_sha256(path) == entry["sha256"], task
        policy, meta = load_policy(path)
        assert isinstance(policy, CorrectedRulePolicy) and meta["task"] == task and meta["algo"] == "rollout"
        assert policy.rule_weight == entry["preview_rule_weight"]
    entry = record["policies"]["segmentation"]
    engine = make_engine(TrainAgentConfig(env_id="rlasc/SemanticCoding-v4", eval_images=2, train_images=1),
                         "segmentation", "cpu")
    policy, _ = load_policy(root / entry["file"])
    records = run_episodes(engine.core("test", 2), engine.parts("test").images, [0, 1],
                           lambda obs, slots: policy.act(obs), engine.metric_name)
    np.testing.assert_allclose([r.episode_return for r in records], entry["first_test_image_returns"][:2], atol=1e-4)
