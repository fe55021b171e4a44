"""Agents (Section II-C): policy network, REINFORCE (eq. 15-22), persistence, tensorboard logs,
SB3 agents through the batched env, baselines (greedy, oracle), evaluation and train_agent.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from engines import make_engine
from gymnasium import spaces
from tb_events import scalar_tags
from torch import nn

from agents.baselines import FixedPolicy, OracleSkipped, greedy_episodes, oracle_episodes, random_search_episodes
from agents.checkpoint import CheckpointError, load_policy
from agents.hyperparams import apply_overrides, load_hyperparams
from agents.policy import PaperFeaturesExtractor, PaperPolicy, obs_shapes
from agents.reinforce import (ReinforceConfig, ReinforceTrainer, discounted_return, episode_objective, leave_one_out,
                              rewards_to_go, step_weights)
from rlasc_env.engine import Engine, run_copies, run_episodes
from rlasc_harness.config import TrainAgentConfig
from rlasc_harness.evaluation import aggregate, baseline_policies, evaluate, gap_closure, mean_ci, results_table
from rlasc_harness.runner import DESIGN_EVAL_KEYS, run

ROOT = Path(__file__).resolve().parents[2]
DESIGN_KEYS = {"algo", "task", "seed", "device", "train_episodes", "eval_images", "eval"}



@pytest.fixture(scope="module")
def engine(test_codec, test_dataset) -> Engine:
    """The test codec's own segmenter: about 15 concepts per image."""
    return make_engine(test_codec, test_dataset)


@pytest.fixture(scope="module")
def engine5(test_codec, test_dataset) -> Engine:
    """Five concepts per image (short episodes)."""
    return make_engine(test_codec, test_dataset, (0, 2, 8, 10, 13))


def small_reinforce(**overrides) -> ReinforceConfig:
    base = dict(learning_rate=1e-3, episodes_per_update=2, conv_channels=(4, 8), hidden=(16, 16), dropout=0.0,
                log_interval=1, checkpoint_interval=0)
    return ReinforceConfig(**{**base, **overrides})


# --- policy network -----------------------------------------------------------------------------

def test_policy_shapes_softmax_and_act(engine) -> None:
    space = engine.observation_space
    policy = PaperPolicy(space, engine.num_levels, (4, 8), (16, 12), dropout=0.2)
    core = engine.core("test", 5)
    obs = run_obs(engine, core, 5)
    logits = policy(obs_tensors(policy, obs))
    assert logits.shape == (5, engine.num_levels)
    probs = policy.probabilities(obs)
    assert torch.allclose(probs.sum(-1), torch.ones(5)) and (probs >= 0).all()
    actions = policy.act(obs, deterministic=True)
    assert actions.dtype == np.int64 and actions.shape == (5,)
    policy.eval()
    assert np.array_equal(actions, policy(obs_tensors(policy, obs)).argmax(-1).numpy())
    # one unbatched observation, and a Discrete concept given as a class id
    single = {k: v[0] for k, v in obs.items()}
    assert policy.act(single).shape == (1,)
    disc = spaces.Dict({**space.spaces, "concept": spaces.Discrete(space["concept"].shape[0])})
    p2 = PaperPolicy(disc, engine.num_levels, (4, 8), (16, 12))
    ids = {**obs, "concept": obs["concept"].argmax(1)}
    assert p2.act(ids).shape == (5,)
    # layers: 2 conv (+ReLU+maxpool), 3 FC (+ReLU+dropout on the first two)
    convs = [m for m in policy.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in policy.modules() if isinstance(m, nn.Linear)]
    pools = [m for m in policy.modules() if isinstance(m, nn.MaxPool2d)]
    drops = [m for m in policy.modules() if isinstance(m, nn.Dropout)]
    assert (len(convs), len(fcs), len(pools), len(drops)) == (2, 3, 2, 2)
    assert convs[0].in_channels == space["features"].shape[0] + 1
    extractor = PaperFeaturesExtractor(space, (4, 8), (16, 12))
    assert extractor(obs_tensors(policy, obs)).shape == (5, extractor.features_dim) and extractor.features_dim == 12


def test_concept_skip_starts_as_the_paper_policy_and_learns_at_its_own_rate(engine) -> None:
    from agents.reinforce import policy_param_groups

    torch.manual_seed(0)
    plain = PaperPolicy(engine.observation_space, engine.num_levels, (4, 8), (16, 12), dropout=0.0)
    torch.manual_seed(0)
    skip = PaperPolicy(engine.observation_space, engine.num_levels, (4, 8), (16, 12), dropout=0.0, concept_skip=True)
    obs = run_obs(engine, engine.core("test", 3), 3)
    assert torch.equal(plain(obs_tensors(plain, obs)), skip(obs_tensors(skip, obs)))  # zero skip at the start
    with torch.no_grad():
        skip.skip.weight[1, 0] = 5.0  # level 1 for class 0
    obs["concept"][:] = 0.0
    obs["concept"][:, 0] = 1.0
    assert torch.allclose(skip(obs_tensors(skip, obs))[:, 1] - plain(obs_tensors(plain, obs))[:, 1], torch.tensor(5.0))
    rebuilt = PaperPolicy.from_spec(skip.spec())
    assert rebuilt.skip is not None and PaperPolicy.from_spec({**plain.spec()}).skip is None
    old_spec = {k: v for k, v in plain.spec().items() if k != "concept_skip"}  # saved before the option existed
    assert PaperPolicy.from_spec(old_spec).skip is None
    groups = policy_param_groups(skip, ReinforceConfig(learning_rate=1e-4, skip_learning_rate=0.05, concept_skip=True))
    assert len(groups) == 2 and groups[1]["lr"] == 0.05 and groups[1]["params"] == [skip.skip.weight]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in skip.parameters())
    assert len(policy_param_groups(plain, ReinforceConfig())) == 1


def run_obs(engine: Engine, core, k: int) -> dict[str, np.ndarray]:
    from rlasc_env.engine import reset_slots

    reset_slots(core, engine.parts("test").images, np.arange(k), list(range(k)))
    return core.observation(np.arange(k))


def obs_tensors(policy: PaperPolicy, obs):
    from agents.policy import obs_to_tensors

    return obs_to_tensors(obs, policy.shapes, "cpu")


# --- REINFORCE ----------------------------------------------------------------------------------

def test_discounted_return_matches_eq15_by_hand() -> None:
    rewards, gamma = [1.0, 2.0, 3.0], 0.5
    g = 0.5 * 1.0 + 0.25 * 2.0 + 0.125 * 3.0  # sum_{m=1}^{M} gamma^m r(m+1)
    assert discounted_return(rewards, gamma) == pytest.approx(g)
    assert np.allclose(step_weights(rewards, gamma, "episode"), [g, g, g])  # eq. 21: same G for every step
    assert np.allclose(rewards_to_go(rewards, gamma), [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3])
    lp = torch.tensor([-0.1, -0.2, -0.3], requires_grad=True)
    obj = episode_objective(lp, rewards, gamma, "episode", baseline=0.25)
    assert obj.item() == pytest.approx((g - 0.25) * (-0.6))
    obj.backward()
    assert torch.allclose(lp.grad, torch.full((3,), g - 0.25))  # d/d log pi = G - b (eq. 21)


def test_leave_one_out_baseline_and_rollouts_per_image(engine5) -> None:
    w = [np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 9.0])]
    base = leave_one_out(w)
    assert np.allclose(base[0], [4.0, 6.5]) and np.allclose(base[2], [2.0, 3.0])
    with pytest.raises(ValueError, match="rollouts_per_image"):
        ReinforceConfig(episodes_per_update=4, rollouts_per_image=3)
    with pytest.raises(ValueError, match="image"):
        ReinforceConfig(baseline="image", rollouts_per_image=1)
    trainer = ReinforceTrainer(engine5, small_reinforce(episodes_per_update=4, rollouts_per_image=2,
                                                        baseline="image", return_mode="reward_to_go"), seed=0)
    records = trainer.update()
    assert [r.image_index for r in records][::2] == [r.image_index for r in records][1::2]  # 2 images, 2 each
    assert trainer.stats.episodes == 4


def test_reinforce_update_changes_parameters(engine5, tmp_path) -> None:
    engine = engine5
    trainer = ReinforceTrainer(engine, small_reinforce(), seed=0)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    records = trainer.update()
    assert len(records) == 2 and all(r.length > 0 for r in records)
    after = list(trainer.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert trainer.stats.episodes == 2 and trainer.stats.updates == 1


def test_reinforce_resume_continues_counters(engine5, tmp_path) -> None:
    engine = engine5
    state = tmp_path / "checkpoint.pt"
    trainer = ReinforceTrainer(engine, small_reinforce(baseline="mean"), seed=1)
    trainer.train(episodes=4, progress=False, checkpoint_path=state)
    again = ReinforceTrainer(engine, small_reinforce(baseline="mean"), seed=1)
    again.load_state(state)
    assert again.stats.episodes == 4 and again.stats.baseline == trainer.stats.baseline
    again.train(episodes=6, progress=False)
    assert again.stats.episodes == 6


def test_saved_policy_reloads_with_the_same_evaluation(engine5, tmp_path) -> None:
    engine = engine5
    trainer = ReinforceTrainer(engine, small_reinforce(dropout=0.1), seed=0)
    trainer.train(episodes=4, progress=False)
    path = trainer.save_policy(tmp_path / "policy.pt", {"note": "test"})
    loaded, meta = load_policy(path)
    assert meta["train_episodes"] == 4 and meta["note"] == "test" and not loaded.training
    trainer.policy.eval()
    a = evaluate(engine, {"policy": lambda o, s: trainer.policy.act(o)}, 4, greedy=False)
    b = evaluate(engine, {"policy": lambda o, s: loaded.act(o)}, 4, greedy=False)
    for key in DESIGN_EVAL_KEYS:
        assert a["policy"][key] == b["policy"][key]
    # clear errors
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing.pt")
    torch.save({"format": "rlasc-codec", "version": 1}, tmp_path / "codec.pt")
    with pytest.raises(CheckpointError, match="codec"):
        load_policy(tmp_path / "codec.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_policy(tmp_path / "junk.pt")
    bad = torch.load(path, weights_only=True)
    bad["version"] = 99
    torch.save(bad, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="version"):
        load_policy(tmp_path / "v99.pt")


def test_tensorboard_events_hold_the_logged_scalars(engine5, tmp_path) -> None:
    engine = engine5
    trainer = ReinforceTrainer(engine, small_reinforce(), seed=0, tb_dir=tmp_path / "tb" / "REINFORCE_1")
    trainer.train(episodes=4, progress=False)
    trainer.close()
    tags = scalar_tags(tmp_path / "tb")
    want = {"rollout/ep_rew_mean", "rollout/ep_len_mean", "train/loss", "train/entropy", "rollout/bpp_mean",
            "rollout/semantic_loss_mean", "rollout/perceptual_loss_mean", "rollout/normalized_score_mean",
            "rollout/l1_mean", "time/fps"}
    assert want <= tags, want - tags


# --- SB3 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_sb3_agents_train_through_the_adapter(engine, tmp_path, algo) -> None:
    from agents.sb3 import sb3_act, train_sb3

    hp = load_hyperparams(algo, "tiny")
    hp.update(n_envs=4, policy_kwargs={"conv_channels": [4, 8], "hidden": [16, 16], "dropout": 0.0, "net_arch": []})
    hp.update({"n_steps": 32, "batch_size": 64, "n_epochs": 2} if algo == "ppo" else {"n_steps": 8, "log_interval": 1})
    model, facts = train_sb3(engine, algo, hp, seed=0, device="cpu", run_dir=tmp_path, steps=256, episodes=None,
                             progress=False)
    assert facts["train_steps"] >= 256 and facts["train_episodes"] > 0
    assert (tmp_path / "model.zip").is_file()
    assert {"rollout/ep_rew_mean", "rollout/bpp_mean", "rollout/normalized_score_mean"} <= scalar_tags(tmp_path / "tb")
    assert isinstance(model.policy.features_extractor, PaperFeaturesExtractor)
    ev = evaluate(engine, {"policy": sb3_act(model)}, 2, greedy=False)
    assert np.isfinite(ev["policy"]["return_mean"])


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_sb3_concept_path_starts_at_zero_and_learns(engine, tmp_path, algo) -> None:
    from agents.sb3 import _feature_heads, build_model, features_extractor, make_vec_env

    hp = load_hyperparams(algo, "tiny")
    hp.update(n_envs=2, policy_kwargs={"conv_channels": [4, 8], "hidden": [16, 16], "dropout": 0.0, "net_arch": [],
                                       "concept_gain": 30.0})
    hp.update({"n_steps": 16, "batch_size": 32, "n_epochs": 1} if algo == "ppo" else
              {"n_steps": 8} if algo == "a2c" else {"learning_starts": 8, "train_freq": 1, "gradient_steps": 1})
    env = make_vec_env(engine, 2, algo, seed=0)
    model = build_model(algo, hp, env, seed=0, device="cpu", tb_dir=None)
    extractor = features_extractor(model)
    shapes = extractor.trunk.shapes
    assert extractor.features_dim == 16 + shapes["concept"][0] + shapes["stats"][0]
    heads = _feature_heads(model)
    assert len(heads) == 2 and all(torch.all(h.weight[:, 16:] == 0) for h in heads)  # zero at the start
    assert all(torch.any(h.weight[:, :16] != 0) for h in heads)  # the trunk's columns keep SB3's init
    obs = env.reset()
    feats = extractor(obs_as_tensors(obs))
    assert torch.allclose(feats[:, 16:16 + shapes["concept"][0]], 30.0 * torch.as_tensor(obs["concept"]).float())
    model.learn(64)
    assert any(torch.any(h.weight[:, 16:] != 0) for h in heads)  # and it trains
    env.close()


def test_sb3_concept_path_needs_linear_heads(engine) -> None:
    from agents.sb3 import build_model, make_vec_env

    hp = load_hyperparams("ppo", "tiny")
    hp.update(n_envs=2, n_steps=16, batch_size=32, policy_kwargs={"conv_channels": [4, 8], "hidden": [16, 16],
                                                                  "net_arch": [8], "concept_gain": 10.0})
    with pytest.raises(ValueError, match="net_arch"):
        build_model("ppo", hp, make_vec_env(engine, 2, "ppo", seed=0), seed=0, device="cpu", tb_dir=None)
    with pytest.raises(ValueError, match="concept_gain must be >= 0"):
        PaperFeaturesExtractor(make_vec_env(engine, 2, "ppo", seed=0).observation_space, concept_gain=-1.0)


def obs_as_tensors(obs: dict) -> dict:
    return {k: torch.as_tensor(v).float() for k, v in obs.items()}


# --- baselines ----------------------------------------------------------------------------------

def test_greedy_beats_fixed_on_immediate_reward_and_clone_matches_replay(engine5) -> None:
    eng = engine5
    q, images = eng.num_levels, eng.parts("test").images
    clone = greedy_episodes(eng.core("test", 2 * q), images, [0, 1, 2], eng.metric_name, method="clone")
    replay = greedy_episodes(eng.core("test", q), images, [0, 1, 2], eng.metric_name, method="replay")
    for c, r in zip(clone, replay):  # the slot copies give the same states as replaying the prefix
        assert c.levels == r.levels and c.length == 5
        assert np.allclose(c.extra["candidate_rewards"], r.extra["candidate_rewards"], atol=1e-6)
        assert (c.bpp, c.bits) == (r.bpp, r.bits)
    assert len({tuple(c.levels) for c in clone} | {lv for c in clone for lv in c.levels}) > 2  # levels vary
    for rec in clone:  # greedy keeps the best immediate reward of every step
        for chosen, candidates in zip(rec.rewards, rec.extra["candidate_rewards"]):
            assert chosen == max(candidates)
    # every fixed level, run on its own: greedy's reward >= the fixed policy's at step 1 (same state x_hat(0))
    for level in range(q):
        fixed = run_episodes(eng.core("test", 3), images, [0, 1, 2], FixedPolicy(level, q), eng.metric_name)
        for g, f in zip(clone, fixed):
            assert g.rewards[0] >= f.rewards[0] - 1e-9
            assert f.rewards[0] == pytest.approx(g.extra["candidate_rewards"][0][level], abs=1e-6)


def test_shared_reset_copies_match_independent_episodes(engine5) -> None:
    eng = engine5
    q, images = eng.num_levels, eng.parts("test").images
    acts = [FixedPolicy(level, q) for level in range(q)]
    shared = run_copies(eng.core("test", 2 * q), images, [0, 1, 2], acts, eng.metric_name)  # 2 images per chunk
    for level, records in enumerate(shared):
        alone = run_episodes(eng.core("test", 3), images, [0, 1, 2], acts[level], eng.metric_name)
        for a, b in zip(records, alone):
            assert a.image_index == b.image_index and a.levels == b.levels == [level] * a.length
            assert np.allclose(a.rewards, b.rewards, atol=1e-6) and a.bits == b.bits


def test_oracle_is_the_best_sequence_and_skips_when_intractable(engine, test_codec, test_dataset) -> None:
    small = make_engine(test_codec, test_dataset, (0, 8))
    q, images = small.num_levels, small.parts("test").images
    result = oracle_episodes(small.core("test", 4), images, [0, 1], [2, 2], small.metric_name, cap=q ** 2)
    assert not isinstance(result, OracleSkipped)
    greedy = greedy_episodes(small.core("test", q), images, [0, 1], small.metric_name)
    for best, g in zip(result, greedy):
        assert best.extra["sequences"] == q ** 2 and best.length == 2
        assert best.episode_return >= g.episode_return - 1e-9
        for level in range(q):
            f = run_episodes(small.core("test", 1), images, [best.image_index], FixedPolicy(level, q),
                             small.metric_name)[0]
            assert best.episode_return >= f.episode_return - 1e-9
        seq = iter(best.levels)
        again = run_episodes(small.core("test", 1), images, [best.image_index],
                             lambda o, s: np.array([next(seq)]), small.metric_name)[0]
        assert again.episode_return == pytest.approx(best.episode_return, abs=1e-6)
    skipped = oracle_episodes(engine.core("test", 4), engine.parts("test").images, [0], [12], "l1", cap=100)
    assert isinstance(skipped, OracleSkipped) and "Q^K" in skipped.reason



def test_random_search_is_the_best_of_its_seeded_samples(test_codec, test_dataset) -> None:
    small = make_engine(test_codec, test_dataset, (0, 8))
    q, images = small.num_levels, small.parts("test").images
    k = 5
    found = random_search_episodes(small.core("test", 3), images, [0, 1], [2, 2], small.metric_name, k, seed=7)
    oracle = oracle_episodes(small.core("test", 4), images, [0, 1], [2, 2], small.metric_name, cap=q ** 2)
    alone = random_search_episodes(small.core("test", 2), images, [1], [2], small.metric_name, k, seed=7)
    assert alone[0].levels == found[1].levels  # per-image seeding: the same draw whatever else is searched
    assert alone[0].episode_return == pytest.approx(found[1].episode_return, abs=1e-6)
    for best, top in zip(found, oracle):
        assert best.extra["sequences"] == k and best.length == 2
        assert best.episode_return <= top.episode_return + 1e-9
        drawn = np.random.default_rng([7, best.image_index]).integers(0, q, (k, 2))
        returns = []
        for row in drawn:
            seq = iter(row.tolist())
            returns.append(run_episodes(small.core("test", 1), images, [best.image_index],
                                        lambda o, s: np.array([next(seq)]), small.metric_name)[0].episode_return)
        assert best.episode_return == pytest.approx(max(returns), abs=1e-6)
        assert best.levels == drawn[int(np.argmax(returns))].tolist()
    with pytest.raises(ValueError, match="at least one sample"):
        random_search_episodes(small.core("test", 1), images, [0], [2], small.metric_name, 0)
    with pytest.raises(ValueError, match="episode lengths"):  # K per image comes from a policy evaluated first
        evaluate(small, {}, 2, greedy=False, random_search=(2,))

# --- evaluation, aggregation, configuration -----------------------------------------------------

def test_aggregate_uses_t_interval_and_table() -> None:
    from scipy import stats

    values = [1.0, 2.0, 4.0]
    ci = mean_ci(values)
    assert ci["mean"] == pytest.approx(7 / 3)
    assert ci["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3))
    evs = [{"policy": {"return_mean": v, "bpp_mean": 1.0}} for v in values]
    agg = aggregate(evs)
    assert agg["policy"]["return_mean"]["n"] == 3
    assert "±" in results_table(agg, "l1")
    ev = {"policy": {"return_mean": 0.3}, "greedy": {"return_mean": 0.5}, "fixed_0": {"return_mean": 0.1},
          "fixed_1": {"return_mean": 0.2}}
    gap = gap_closure(ev)
    assert gap["best_fixed"] == "fixed_1" and gap["ratio"] == pytest.approx(1 / 3)


def test_hyperparameter_files_and_overrides() -> None:
    for algo in ("reinforce", "ppo", "a2c", "dqn", "maskable_ppo"):
        for preset in ("tiny", "paper"):
            assert load_hyperparams(algo, preset)
    paper = load_hyperparams("reinforce", "paper")
    cfg = ReinforceConfig(**{k: v for k, v in paper.items() if k not in ("n_episodes", "n_timesteps")})
    assert (cfg.learning_rate, cfg.gamma, cfg.episodes_per_update, cfg.baseline, cfg.return_mode,
            cfg.entropy_coef) == (1e-5, 0.99, 1, "none", "episode", 0.0)  # Algorithm 2
    hp = apply_overrides(load_hyperparams("ppo", "tiny"), ["learning_rate=1e-3", "policy_kwargs.dropout=0.2"])
    assert hp["learning_rate"] == 1e-3 and hp["policy_kwargs"]["dropout"] == 0.2
    with pytest.raises(ValueError):
        apply_overrides(hp, ["no-equals-sign"])
    with pytest.raises(KeyError):
        load_hyperparams("reinforce", "huge")


def test_json_has_design_keys(engine5, tmp_path) -> None:
    engine = engine5
    cfg = TrainAgentConfig(algo="reinforce", env_id="rlasc/SemanticCoding-v1", episodes=4, eval_images=3,
                           run_dir=tmp_path / "run", json=tmp_path / "out.json", progress=False, device="cpu", oracle_cap=100,
                           random_search=(2,), hp=("episodes_per_update=2", "rollouts_per_image=2", "conv_channels=[4, 8]", "hidden=[16, 16]"))
    run(cfg, log=lambda s: None, engine_factory=lambda c, task, device: engine)
    data = json.loads((tmp_path / "out.json").read_text())
    assert DESIGN_KEYS <= set(data)
    assert (data["algo"], data["seed"], data["device"], data["train_episodes"], data["eval_images"]) == (
        "reinforce", 0, "cpu", 4, 3)
    names = {"policy", "random", "greedy", "random_search_2"} | {f"fixed_{q}" for q in range(engine.num_levels)}
    assert names <= set(data["eval"])
    for name, row in data["eval"].items():
        assert set(DESIGN_EVAL_KEYS) <= set(row), name
    assert "3^5" in data["skipped"]["oracle"]  # Q^K = 243 sequences per image > --oracle-cap 100: labelled skip
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "config.json", "policy.pt", "results.json", "results.md"):
        assert (run_dir / name).is_file(), name
    # the saved policy evaluates again with --eval-only
    # ... beside a class table from a learnability report made for the same settings
    from agents.class_table import ClassTable

    report = {"task": "segmentation", "config": {k: getattr(cfg, k) for k in ("env_id", "observation", "preset",
                                                                             "lam", "eta")},
              "weights": engine.weight_hashes(), "class_table": ClassTable({}, {0: 2}, 1).to_json()}
    (tmp_path / "gate.json").write_text(json.dumps(report))
    again = TrainAgentConfig(algo="reinforce", env_id="rlasc/SemanticCoding-v1", eval_only=run_dir / "policy.pt",
                             eval_images=3, progress=False,
                             device="cpu", greedy=False, oracle_cap=0, json=tmp_path / "again.json",
                             run_dir=tmp_path / "eval", class_table=tmp_path / "gate.json")
    run(again, log=lambda s: None, engine_factory=lambda c, task, device: engine)
    redo = json.loads((tmp_path / "again.json").read_text())
    assert 0.0 < redo["eval"]["class_table"]["level_mean"] < 2.0  # class 0 at level 2, the rest at level 1
    drop = lambda row: {k: v for k, v in row.items() if k not in ("seconds", "returns", "episodes")}  # noqa: E731
    assert drop(redo["eval"]["policy"]) == pytest.approx(drop(data["eval"]["policy"]))
    assert redo["eval"]["policy"]["returns"] == pytest.approx(data["eval"]["policy"]["returns"])  # image by image
    episodes = data["eval"]["policy"]["episodes"]  # what replays them (rlasc_env.results)
    assert [e["levels"] for e in redo["eval"]["policy"]["episodes"]] == [e["levels"] for e in episodes]
    assert [e["return"] for e in episodes] == data["eval"]["policy"]["returns"]
    assert len(data["eval"]["policy"]["returns"]) == 3 and len(data["eval"]["fixed_0"]["returns"]) == 3
    assert redo["train_episodes"] == 4


def test_train_agent_help() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "train_agent.py"), "--help"], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--algo", "--task", "--seeds", "--episodes", "--steps", "--eval-images", "--json", "--eval-only",
                 "--run-dir", "--preset", "--resume", "--hp", "--device"):
        assert flag in out.stdout, flag


def test_baseline_policies_cover_every_level(engine) -> None:
    pols = baseline_policies(engine.num_levels, seed=3)
    assert set(pols) == {"random"} | {f"fixed_{q}" for q in range(engine.num_levels)}
    a = pols["random"]({}, np.arange(100))
    assert a.min() >= 0 and a.max() < engine.num_levels
    assert np.array_equal(a, baseline_policies(engine.num_levels, seed=3)["random"]({}, np.arange(100)))
    assert obs_shapes(engine.observation_space).channels == engine.observation_space["features"].shape[0] + 1


def test_env_id_flag_picks_the_ids_task_networks(tmp_path) -> None:
    """--env-id rlasc/SemanticCoding-v2 scores with rlasc_env/weights/v2 (sha256-checked), -v1 with the default,
    -v6 and -v7 (the default) with -v3's; all through rlasc_env.engine.make_engine, the path of gym.make."""
    from rlasc_env.versions import StaleWeightsError
    from rlasc_harness.config import TrainAgentConfig
    from rlasc_harness.runner import make_engine

    assert TrainAgentConfig().env_id == "rlasc/SemanticCoding-v7"  # the default command's id
    small = {"eval_images": 1, "train_images": 1}
    for env_id, task, folder in (("rlasc/SemanticCoding-v1", "segmentation", ""),
                                 ("rlasc/SemanticCoding-v2", "detection", "v2/"),
                                 ("rlasc/SemanticCoding-v6", "classification", "v3/"),
                                 ("rlasc/SemanticCoding-v7", "segmentation", "v3/")):
        engine = make_engine(TrainAgentConfig(env_id=env_id, **small), task, "cpu")
        assert str(engine.task.weights).endswith(f"weights/{folder}{task}.pt")
        assert engine.spec.env_id == env_id
    from rlasc_env.versions import ENV_PINS

    saved = ENV_PINS["rlasc/SemanticCoding-v2"]["task_sha256"]["detection"]
    ENV_PINS["rlasc/SemanticCoding-v2"]["task_sha256"]["detection"] = "0" * 64
    try:
        with pytest.raises(StaleWeightsError, match="detection network"):
            make_engine(TrainAgentConfig(env_id="rlasc/SemanticCoding-v2", **small), "detection", "cpu")
    finally:
        ENV_PINS["rlasc/SemanticCoding-v2"]["task_sha256"]["detection"] = saved
