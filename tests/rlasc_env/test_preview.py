"""The level preview of SemanticCoding-v4 (rlasc_env.preview): exact rate entries, the perceptual estimate, the same
rewards as -v1, and the observation layout."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

import rlasc_env
from codec_models.perceptual import perceptual_loss
from rlasc_env import SemanticCodingEnv
from rlasc_env.env import NUM_STATS, stats_size
from rlasc_env.preview import level_preview, preview_size, preview_stats

ROOT = Path(__file__).resolve().parents[2]


def make(test_codec, test_dataset, preview: bool) -> SemanticCodingEnv:
    return SemanticCodingEnv(task="pixel-test", codec=test_codec, images=test_dataset,
                             observation="preview" if preview else "paper")


def test_layout_and_checkers(test_codec, test_dataset):
    env = make(test_codec, test_dataset, True)
    q = test_codec.num_levels
    assert env.observation_space["stats"].shape == (NUM_STATS + 1 + 2 * q,) == (stats_size(test_codec, True),)
    assert preview_size(q) == 1 + 2 * q
    gym_check_env(env, skip_render_check=True)


def test_same_rewards_and_first_stats_as_without_preview(test_codec, test_dataset):
    """The preview only adds entries: the first 8 stats, the rewards and the infos are -v1's."""
    plain, preview = make(test_codec, test_dataset, False), make(test_codec, test_dataset, True)
    for index in (0, 3):
        a, _ = plain.reset(seed=0, options={"index": index})
        b, _ = preview.reset(seed=0, options={"index": index})
        rng = np.random.default_rng(index)
        done = False
        while not done:
            np.testing.assert_allclose(b["stats"][:NUM_STATS], a["stats"], atol=1e-6)
            for key in ("features", "mask", "concept"):
                np.testing.assert_array_equal(a[key], b[key])
            level = int(rng.integers(test_codec.num_levels))
            a, ra, done, _, ia = plain.step(level)
            b, rb, _, _, ib = preview.step(level)
            assert rb == pytest.approx(ra, abs=1e-5) and ia["bits"] == ib["bits"]
        assert not b["stats"].any()  # terminal observation: zeros


def test_rate_entries_are_the_steps_rate_term(test_codec, test_dataset):
    """rate[q] = lam * (bits after coding the concept at q - bits at level 0) / (H*W), the step's exact rate term."""
    env = make(test_codec, test_dataset, True)
    core = env.core
    env.reset(seed=0, options={"index": 2, "lam": 0.7})
    rate, _ = level_preview(core, np.zeros(1, np.int64))
    bits = []
    for level in range(test_codec.num_levels):
        env.reset(options={"index": 2})
        bits.append(env.step(level)[4]["bits"])
    expected = 0.7 * (np.array(bits) - bits[0]) / (test_dataset[0][0].shape[1] * test_dataset[0][0].shape[2])
    np.testing.assert_allclose(rate[0], expected, rtol=1e-12, atol=1e-15)
    assert rate[0, 0] == 0.0


def test_perceptual_entries_paste_each_levels_concept_image(test_codec, test_dataset):
    """perceptual[q] = eta * (L_P with y(m, 0) pasted into m's region - L_P with y(m, q) pasted), from a second
    route: the codec's own decode parts and phi on the original image."""
    env = make(test_codec, test_dataset, True)
    env.reset(seed=0, options={"index": 1})
    env.step(test_codec.num_levels - 1)  # a coded concept before: the current x_hat is not x_hat(0)
    core, slot = env.core, np.zeros(1, np.int64)
    _, perceptual = level_preview(core, slot)
    cls = int(core.order[0, core.t[0]])
    image = core.images[:1]
    with torch.no_grad():
        an = test_codec.analyse(image)
        region = an.labels[0] == cls
        x_hat = core.x_hat[:1].clone()
        losses = []
        for level in range(test_codec.num_levels):
            levels = torch.full((1, test_codec.num_classes), level)
            _, parts = test_codec.decode(an, levels, return_parts=True)
            pasted = torch.where(region, parts["x_local"][0], x_hat[0]).unsqueeze(0)
            losses.append(float(perceptual_loss(test_codec.perceptual, image, pasted)))
    expected = env.eta * (losses[0] - np.array(losses))
    np.testing.assert_allclose(perceptual[0], expected, rtol=1e-4, atol=1e-6)


def test_preview_stats_scale():
    rate = np.array([[0.0, 0.01, 0.05], [0.0, 0.0, 0.0]])
    perceptual = np.array([[0.0, 0.2, -0.1], [0.0, 0.0, 0.0]])
    stats = preview_stats(rate, perceptual)
    assert stats.shape == (2, 7) and np.all(np.abs(stats) <= 1.0)
    stake = 0.05 + 0.2
    np.testing.assert_allclose(stats[0, 1:], np.concatenate([rate[0], perceptual[0]]) / stake)
    assert stats[0, 0] == pytest.approx(np.log10(stake) / 4 + 1)
    np.testing.assert_array_equal(stats[1, 1:], 0.0)  # a stake of zero: no division by zero


def test_preview_needs_codec_v2(test_codec_v1, test_dataset):
    with pytest.raises(ValueError, match="level preview needs codec v2"):
        SemanticCodingEnv(task="pixel-test", codec=test_codec_v1, images=test_dataset, observation="preview")


def test_v4_id_is_v1_with_the_preview():
    """rlasc/SemanticCoding-v4 pins -v1's files and turns the preview on."""
    from rlasc_env.versions import ENV_PINS

    v1, v4 = ENV_PINS["rlasc/SemanticCoding-v1"], ENV_PINS["rlasc/SemanticCoding-v4"]
    assert {k: v for k, v in v4.items() if k != "observation"} == v1 and v4["observation"] == "preview"
    assert rlasc_env.CARDS["rlasc/SemanticCoding-v4"].observations == ("preview",)
    assert rlasc_env.CARDS["rlasc/SemanticCoding-v1"].observations == ("paper",)
    with pytest.raises(ValueError, match="use rlasc/SemanticCoding-v7"):
        gym.make("rlasc/SemanticCoding-v1", observation="preview")
    if not (ROOT / "codec_models" / "weights" / "tiny.pt").is_file():
        pytest.skip("shipped codec absent")
    env = gym.make("rlasc/SemanticCoding-v4", task="segmentation", split="test")
    obs, info = env.reset(seed=0)
    assert obs["stats"].shape == (NUM_STATS + 1 + 2 * env.unwrapped.codec.num_levels,)
    assert env.observation_space.contains(obs)
    _, reward, _, _, step_info = env.step(3)
    assert reward == pytest.approx(info["loss"] - step_info["loss"], abs=1e-9)
    env.close()


def test_revisited_state_is_served_by_the_memo(test_codec, test_dataset):
    """A second rollout through the same state gets the very same preview from the memo, without a decoder pass."""
    env = make(test_codec, test_dataset, True)
    first, _ = env.reset(seed=0, options={"index": 4})
    memo = env.core.preview_memo
    hits = memo.hits
    again, _ = env.reset(options={"index": 4})
    assert memo.hits == hits + 1
    np.testing.assert_array_equal(first["stats"], again["stats"])
    a, *_ = env.step(2)
    env.reset(options={"index": 4})
    b, *_ = env.step(2)
    np.testing.assert_array_equal(a["stats"], b["stats"])
    env.reset(options={"index": 4, "lam": 3.0})  # lam scales the rate entries of the memoized state
    rate, _ = level_preview(env.core, np.zeros(1, np.int64))
    env.reset(options={"index": 4, "lam": 1.0})
    rate1, _ = level_preview(env.core, np.zeros(1, np.int64))
    np.testing.assert_allclose(rate, 3.0 * rate1)


def test_fixed_and_random_policies_are_not_given_the_observation(test_codec, test_dataset):
    """run_copies computes no observation (no preview) for policies that ignore it; their episodes are unchanged."""
    from agents.baselines import FixedPolicy, RandomPolicy
    from rlasc_env.engine import run_copies
    from rlasc_env.env import EnvParts, EpisodeCore

    parts = EnvParts(test_codec, rlasc_env.make_task("pixel-test"), test_dataset, 32, 64, preview=True)
    core = EpisodeCore(parts, 4, 1.0, 10.0)
    before = parts.preview_memo.misses
    records = run_copies(core, test_dataset, [0, 1], [FixedPolicy(2, test_codec.num_levels),
                                                      RandomPolicy(test_codec.num_levels)], "psnr")
    assert parts.preview_memo.misses == before and parts.preview_memo.hits == 0
    assert all(lv == 2 for r in records[0] for lv in r.levels)


def test_reinforce_with_preview_head_and_the_preview_rule(test_codec, test_dataset, tmp_path):
    """A preview engine: REINFORCE trains PaperPolicy's preview head (its weights move from zero, the policy
    reloads), and the evaluation adds the preview rule, its weight fitted on training images."""
    import json

    from agents.checkpoint import load_policy
    from rlasc_env.engine import Engine, EnvSpec
    from rlasc_harness.config import TrainAgentConfig
    from rlasc_harness.runner import run

    engine = Engine(EnvSpec(task="pixel-test", codec=test_codec, lam=0.02, preview=True,
                            images={"train": test_dataset, "test": test_dataset}))
    cfg = TrainAgentConfig(algo="reinforce", episodes=8, eval_images=3, run_dir=tmp_path / "run",
                           json=tmp_path / "out.json", progress=False, device="cpu", oracle_cap=0,
                           preview_rule_images=4,
                           hp=("episodes_per_update=4", "rollouts_per_image=2", "conv_channels=[4, 8]",
                               "hidden=[16, 16]", "concept_skip=true", "preview_head=true"))
    run(cfg, log=lambda s: None, engine_factory=lambda c, task, device: engine)
    data = json.loads((tmp_path / "out.json").read_text())
    assert {"policy", "preview_rule", "greedy"} <= set(data["eval"])
    policy, _ = load_policy(tmp_path / "run" / "policy.pt")
    assert policy.preview_head is not None and policy.preview_head.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="preview_head needs the level preview"):
        type(policy)(rlasc_env.env.observation_space(test_codec, 32, 64), test_codec.num_levels, (4, 8), (16, 16),
                     preview_head=True)


def test_batched_env_carries_the_preview(test_codec, test_dataset):
    """BatchedSemanticCodingEnv(preview=True): the same observations as the single env, image by image."""
    from rlasc_env import BatchedSemanticCodingEnv

    venv = BatchedSemanticCodingEnv(2, task="pixel-test", codec=test_codec, images=test_dataset, observation="preview")
    single = make(test_codec, test_dataset, True)
    assert venv.single_observation_space == single.observation_space
    obs, _ = venv.reset(seed=0, options={"index": [5, 6]})
    for i, index in enumerate((5, 6)):
        one, _ = single.reset(options={"index": index})
        np.testing.assert_allclose(obs["stats"][i], one["stats"], atol=1e-6)


def test_policy_started_at_the_preview_rule_acts_like_it(test_codec, test_dataset):
    """PaperPolicy.start_at_preview_rule: with a scale that dwarfs the trunk's initial logits, the argmax policy
    picks the rule's level on every step of real episodes; ReinforceTrainer starts there only with the rule's weight."""
    from agents.baselines import PreviewRule
    from agents.policy import PaperPolicy
    from agents.reinforce import ReinforceConfig, ReinforceTrainer
    from rlasc_env.engine import Engine, EnvSpec, run_copies

    engine = Engine(EnvSpec(task="pixel-test", codec=test_codec, lam=0.02, preview=True,
                            images={"train": test_dataset, "test": test_dataset}))
    q = test_codec.num_levels
    policy = PaperPolicy(engine.observation_space, q, (4, 8), (16, 16), preview_head=True)
    with pytest.raises(ValueError, match="scale must be positive"):
        policy.start_at_preview_rule(1.1, 0.0)
    policy.start_at_preview_rule(1.1, 1e4)
    rule = PreviewRule(1.1, q)
    core = engine.core("test", 2)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def act(obs, slots):
        chosen = policy.act(obs)
        seen.append((chosen, rule(obs, slots)))
        return chosen

    policy_runs, rule_runs = run_copies(core, engine.parts("test").images, [0, 1, 2], [act, rule], "psnr")
    assert seen and all(np.array_equal(a, b) for a, b in seen)
    assert [r.levels for r in policy_runs] == [r.levels for r in rule_runs]
    assert len({lv for r in rule_runs for lv in r.levels}) > 1  # the rule does not pick one level everywhere

    plain = PaperPolicy(engine.observation_space, q, (4, 8), (16, 16))
    with pytest.raises(ValueError, match="preview_head=True"):
        plain.start_at_preview_rule(1.1, 10.0)
    with pytest.raises(ValueError, match="only with preview_head=True"):
        ReinforceConfig(preview_head_init=10.0)
    cfg = ReinforceConfig(preview_head=True, preview_head_init=10.0, episodes_per_update=2, rollouts_per_image=2,
                          conv_channels=(4, 8), hidden=(16, 16))
    with pytest.raises(ValueError, match="rule_weight"):
        ReinforceTrainer(engine, cfg)
    trainer = ReinforceTrainer(engine, cfg, rule_weight=1.1)
    w = trainer.policy.preview_head.weight
    assert w[0, -1].item() == -10.0 and w[1, -1].item() == pytest.approx(11.0) and w[:, :-1].abs().sum() == 0


def test_train_agent_starts_reinforce_at_the_fitted_rule(test_codec, test_dataset, tmp_path):
    """train_agent's runner fits the preview rule once, starts REINFORCE's head there (preview_head_init) and
    evaluates the same rule; without the preview the option is refused with a message."""
    import json

    from agents.baselines import PREVIEW_RULE_WEIGHTS
    from rlasc_env.engine import Engine, EnvSpec
    from rlasc_harness.config import TrainAgentConfig
    from rlasc_harness.runner import run

    hp = ("episodes_per_update=4", "rollouts_per_image=2", "conv_channels=[4, 8]", "hidden=[16, 16]",
          "preview_head=true", "preview_head_init=10.0")
    engine = Engine(EnvSpec(task="pixel-test", codec=test_codec, lam=0.02, preview=True,
                            images={"train": test_dataset, "test": test_dataset}))
    lines: list[str] = []
    cfg = TrainAgentConfig(algo="reinforce", episodes=4, eval_images=3, run_dir=tmp_path / "run",
                           json=tmp_path / "out.json", progress=False, device="cpu", oracle_cap=0, greedy=False,
                           preview_rule_images=4, hp=hp)
    run(cfg, log=lines.append, engine_factory=lambda c, task, device: engine)
    assert sum("preview rule: weight" in s for s in lines) == 1
    assert any("policy starts at 10.0 x the preview rule" in s for s in lines)
    data = json.loads((tmp_path / "out.json").read_text())
    assert "preview_rule" in data["eval"] and data["preview_rule_weight"] in PREVIEW_RULE_WEIGHTS

    no_rule = TrainAgentConfig(algo="reinforce", episodes=4, eval_images=3, run_dir=tmp_path / "run2",
                               progress=False, device="cpu", oracle_cap=0, greedy=False, preview_rule_images=0, hp=hp)
    with pytest.raises(ValueError, match="--preview-rule-images > 0"):
        run(no_rule, log=lambda s: None, engine_factory=lambda c, task, device: engine)


def test_sb3_trains_on_the_preview_and_evaluate_reads_it(test_codec, test_dataset, tmp_path):
    """PPO through the batched env with the level preview: its observation space has -v4's stats, it trains, it acts
    in the evaluation, and evaluate.py's loader sees a -v4 policy."""
    from agents.hyperparams import load_hyperparams
    from agents.sb3 import sb3_act, train_sb3
    from rlasc_env.engine import Engine, EnvSpec
    from rlasc_harness.evaluate_codecs.rlasc import load_policy
    from rlasc_harness.evaluation import evaluate

    engine = Engine(EnvSpec(task="pixel-test", codec=test_codec, lam=0.02, preview=True,
                            images={"train": test_dataset, "test": test_dataset}))
    hp = load_hyperparams("ppo", "tiny", "rlasc/SemanticCoding-v4")
    hp.update(n_envs=2, n_steps=16, batch_size=32, n_epochs=1,
              policy_kwargs={"conv_channels": [4, 8], "hidden": [16, 16], "dropout": 0.0, "net_arch": []})
    model, facts = train_sb3(engine, "ppo", hp, seed=0, device="cpu", run_dir=tmp_path, steps=32, episodes=None,
                             progress=False)
    assert model.observation_space["stats"].shape == (stats_size(test_codec, True),)
    assert facts["train_steps"] >= 32
    ev = evaluate(engine, {"policy": sb3_act(model)}, 2, greedy=False)
    assert np.isfinite(ev["policy"]["return_mean"])
    (tmp_path / "config.json").write_text('{"algo": "ppo", "task": "pixel-test"}')
    assert load_policy(tmp_path / "model.zip", test_codec.num_levels).preview
    # the same model under -v1's observation (no preview) is refused, naming --env-id
    from agents.policy import check_observations_fit, obs_shapes

    without = Engine(EnvSpec(task="pixel-test", codec=test_codec, images={"train": test_dataset, "test": test_dataset}))
    check_observations_fit(obs_shapes(model.observation_space), int(model.action_space.n), engine, "model.zip")
    with pytest.raises(ValueError, match="another --env-id"):
        check_observations_fit(obs_shapes(model.observation_space), int(model.action_space.n), without, "model.zip")


def test_a_v1_policy_on_the_preview_env_is_refused_naming_the_env_id(test_codec, test_dataset, tmp_path):
    """--eval-only of a policy trained without the preview on an env with it (or the reverse) names --env-id,
    and train_agent's runner says so before it fits the preview rule."""
    from agents.checkpoint import save_policy
    from agents.policy import PaperPolicy, check_policy_fits
    from rlasc_env.engine import Engine, EnvSpec
    from rlasc_harness.config import TrainAgentConfig
    from rlasc_harness.runner import run

    images = {"train": test_dataset, "test": test_dataset}
    with_preview = Engine(EnvSpec(task="pixel-test", codec=test_codec, preview=True, images=images))
    without = Engine(EnvSpec(task="pixel-test", codec=test_codec, images=images))
    v1_policy = PaperPolicy(without.observation_space, test_codec.num_levels, (4, 8), (16, 16))
    check_policy_fits(v1_policy, without, "v1.pt")
    with pytest.raises(ValueError, match="another --env-id"):
        check_policy_fits(v1_policy, with_preview, "v1.pt")

    path = save_policy(tmp_path / "v1.pt", v1_policy, {"task": "pixel-test"})
    lines: list[str] = []
    cfg = TrainAgentConfig(algo="reinforce", eval_only=path, eval_images=2, run_dir=tmp_path / "eval",
                           progress=False, device="cpu", oracle_cap=0, greedy=False, preview_rule_images=4)
    with pytest.raises(ValueError, match="another --env-id"):
        run(cfg, log=lines.append, engine_factory=lambda c, task, device: with_preview)
    assert not any("preview rule" in s for s in lines)  # refused before the rule's fit, not after


def test_fast_paths_are_bit_for_bit_the_reference_ops(test_codec):
    """Issue 30's exact speed-ups against the ops they replace, on the same inputs: the 2x2 max pool of phi, the
    preview's L_P broadcast over each slot's levels, and max(1).indices for argmax(1) (first maximum on ties)."""
    from codec_models.perceptual import MaxPool2x2
    from rlasc_env.preview import _grouped_perceptual_loss

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, 12, 18, generator=gen)
    x[:, :, 0, 1] = x[:, :, 0, 0]  # ties inside a window
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), torch.nn.functional.max_pool2d(x, 2))
    grad_in = x.clone().requires_grad_(True)
    MaxPool2x2()(grad_in).sum().backward()  # with autograd: max_pool2d's own gradient (one element per window)
    assert int(grad_in.grad.sum()) == 5 * 7 * 6 * 9
    phi = test_codec.perceptual.eval()
    k, q = 3, test_codec.num_levels
    images = torch.rand(k, 3, 32, 64, generator=gen)
    pasted = torch.rand(k * q, 3, 32, 64, generator=gen)
    with torch.no_grad():
        feats = phi.features(images)
        reference = perceptual_loss(phi, None, pasted, [f.repeat_interleave(q, 0) for f in feats]).view(k, q)
        assert torch.equal(_grouped_perceptual_loss(phi, pasted, feats, q), reference)
    logits = torch.randn(2, 19, 16, 24, generator=gen)
    logits[:, 4] = logits[:, 9]
    assert torch.equal(logits.max(1).indices, logits.argmax(1))
