"""BatchedSemanticCodingEnv (Gymnasium 1.x VectorEnv) and SB3VecEnvAdapter."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from rlasc_env import BatchedSemanticCodingEnv, SB3VecEnvAdapter, SemanticCodingEnv


@pytest.fixture()
def kwargs(test_codec, test_dataset):
    return {"task": "pixel-test", "codec": test_codec, "images": test_dataset}


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_batched_matches_single_envs(mode, kwargs):
    """Same seeds and actions: batched env == SyncVectorEnv of single envs (eq. 14 rewards to 1e-5)."""
    n = 3
    batched = BatchedSemanticCodingEnv(n, autoreset_mode=mode, **kwargs)
    sync = gym.vector.SyncVectorEnv([lambda: SemanticCodingEnv(**kwargs) for _ in range(n)], autoreset_mode=mode)
    obs_b, info_b = batched.reset(seed=7)
    obs_s, info_s = sync.reset(seed=7)
    np.testing.assert_array_equal(info_b["image_index"], info_s["image_index"])
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(30):
        actions = rng.integers(batched.single_action_space.n, size=n)
        obs_b, rew_b, term_b, trunc_b, info_b = batched.step(actions)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(actions)
        np.testing.assert_allclose(rew_b, rew_s, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(term_b, term_s)
        assert not trunc_b.any()
        for key in obs_b:
            np.testing.assert_allclose(obs_b[key], obs_s[key], atol=1e-5, rtol=0)
        for key in ("bits", "concept", "level", "image_index"):
            np.testing.assert_array_equal(info_b["_" + key], info_s["_" + key])
            np.testing.assert_array_equal(info_b[key][info_b["_" + key]], info_s[key][info_s["_" + key]])
        np.testing.assert_allclose(info_b["loss"][info_b["_loss"]], info_s["loss"][info_s["_loss"]], atol=1e-5)
        if mode == AutoresetMode.SAME_STEP and term_b.any():
            fb, fs = info_b["final_info"], info_s["final_info"]
            np.testing.assert_array_equal(info_b["_final_info"], term_b)
            np.testing.assert_allclose(fb["episode_return"][term_b], fs["episode_return"][term_s], atol=1e-5)
            np.testing.assert_array_equal(fb["bits"][term_b], fs["bits"][term_s])
            for i in np.flatnonzero(term_b):
                assert all(not v.any() for v in info_b["final_obs"][i].values())
        ended += int(term_b.sum())
    assert ended > 0


def test_next_step_autoreset(kwargs):
    env = BatchedSemanticCodingEnv(2, **kwargs)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    env.reset(seed=0)
    lengths = env.core.count.copy()
    for _ in range(int(lengths[0])):
        _, _, term, _, info = env.step(np.zeros(2, np.int64))
    assert term[0] and info["_episode_return"][0]
    _, rew, term, _, info = env.step(np.zeros(2, np.int64))  # env 0 resets, its action ignored
    assert rew[0] == 0.0 and not term[0] and info["concept"][0] == -1 and env.core.t[0] == 0


def test_disabled_autoreset_and_reset_mask(kwargs):
    env = BatchedSemanticCodingEnv(2, autoreset_mode="Disabled", **kwargs)
    env.reset(seed=0, options={"index": [3, 4]})
    assert env.core.index.tolist() == [3, 4]
    term = np.zeros(2, bool)
    while not term.any():
        _, _, term, _, _ = env.step(np.ones(2, np.int64))
    with pytest.raises(RuntimeError, match="reset_mask"):
        env.step(np.ones(2, np.int64))
    obs, info = env.reset(options={"reset_mask": term})
    assert info["_bits"].tolist() == term.tolist() and (env.core.t[term] == 0).all()
    env.step(np.ones(2, np.int64))


def test_invalid_batched_actions(kwargs):
    env = BatchedSemanticCodingEnv(2, **kwargs)
    env.reset(seed=0)
    q = env.single_action_space.n
    for bad in (np.array([0, q]), np.array([-1, 0]), np.array([0.0, 1.0]), np.array([True, False]), [0, 1, 2], 1):
        with pytest.raises(ValueError):
            env.step(bad)


def test_sb3_adapter_semantics(kwargs):
    adapter = SB3VecEnvAdapter(autoreset_mode=AutoresetMode.SAME_STEP, num_envs=2, **kwargs)
    adapter.seed(0)
    obs = adapter.reset()
    assert obs["features"].shape[0] == 2 and len(adapter.reset_infos) == 2
    episodes = []
    for _ in range(40):
        adapter.step_async(np.full(2, 1))
        obs, rewards, dones, infos = adapter.step_wait()
        assert rewards.dtype == np.float32 and len(infos) == 2
        for i in np.flatnonzero(dones):
            info = infos[i]
            assert set(info["terminal_observation"]) == {"features", "mask", "concept", "stats"}
            assert info["episode"]["l"] == info["episode_length"]
            assert info["episode"]["r"] == pytest.approx(info["episode_return"])
            assert obs["concept"][i].sum() == 1  # already the next episode's first observation
            episodes.append(info["episode"])
    assert episodes
    with pytest.raises(ValueError, match="SameStep"):
        SB3VecEnvAdapter(BatchedSemanticCodingEnv(2, **kwargs))


def test_sb3_ppo_learns(kwargs):
    from stable_baselines3 import PPO

    adapter = SB3VecEnvAdapter(BatchedSemanticCodingEnv(2, autoreset_mode="SameStep", **kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PPO("MultiInputPolicy", adapter, n_steps=8, batch_size=8, seed=0, device="cpu")
        model.learn(16)
    assert model.num_timesteps >= 16


def test_benchmark_json(tmp_path, test_codec):
    """benchmark.py's logic end to end on the test codec (tiny run): docs/design.md's JSON keys."""
    import json

    from codec_models.checkpoint import atomic_save, codec_payload
    from rlasc_harness.throughput import main

    path = atomic_save(codec_payload(test_codec), tmp_path / "codec.pt")
    out = tmp_path / "bench.json"
    assert main(["--env-id", "None", "--preset", "test", "--codec", str(path), "--task", "pixel-test", "--device", "cpu",
                 "--batch-size", "2", "--steps", "4", "--repeats", "1", "--json", str(out), "--no-progress",
                 "--compare-codec", str(path)]) == 0
    res = json.loads(out.read_text())
    for key in ("device", "preset", "batch_size", "single_env_steps_per_s", "sync_vector_steps_per_s",
                "batched_env_steps_per_s", "forward_only_steps_per_s", "single_env_replay_ms_per_transition",
                "compare_single_env_ms_per_transition", "single_env_time_vs_compare"):
        assert key in res
    assert res["preset"] == "test" and res["batch_size"] == 2 and res["single_env_steps_per_s"] > 0
    assert res["compare_codec"] == str(path) and res["single_env_replay_ms_per_transition"] > 0
    # scoring complete allocations: finish() and stepping agree, and both were timed
    assert res["allocation_finish_ms"] > 0 and res["allocation_step_ms"] > 0
    assert res["allocation_max_return_difference"] < 1e-5


def test_benchmark_measures_the_current_id_beside_v4(tmp_path):
    """By default benchmark.py builds every env from the current id (its codec, task network and the preview
    observation) and times -v4 beside it."""
    import json

    from rlasc_harness.throughput import main

    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--batch-size", "2", "--steps", "4", "--repeats", "1", "--allocations", "0",
                 "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["env_id"] == "rlasc/SemanticCoding-v7" and res["observation"] == "preview"
    assert res["compare_codec"] == "rlasc/SemanticCoding-v4" and res["codec"].endswith("tiny-sf3.pt")
    assert res["single_env_steps_per_s"] > 0 and res["compare_single_env_ms_per_transition"] > 0
    # issue 30: the fast paths against the reference ops (and -v4 on them), timed in the same run
    assert res["reference_ops"] and not res["windowed_preview"]
    assert res["single_env_vs_reference_ops"] > 0 and res["batched_vs_reference_ops"] > 0
    assert res["single_env_vs_compare_reference_ops"] > 0


def test_benchmark_agent_runs_time_both_codecs(monkeypatch):
    """--agent-episodes times the default REINFORCE run on the codec and on --compare-codec (runner stubbed:
    the real run is minutes long; its own tests are in test_agents.py)."""
    import rlasc_harness.runner
    from rlasc_harness.throughput import BenchmarkConfig, _agent_runs, _summary

    seen = []

    def fake_run(cfg, log=print):
        seen.append((cfg.env_id, cfg.episodes, cfg.algo, cfg.threads))
        return {"train_seconds": 1.0, "eval_seconds": 0.5, "train_steps": 10 * cfg.episodes}

    monkeypatch.setattr(rlasc_harness.runner, "run", fake_run)
    runs = _agent_runs(BenchmarkConfig(codec="tiny", compare_codec="tiny-v0", agent_episodes=3, progress=False))
    assert seen == [("rlasc/SemanticCoding-v1", 3, "reinforce", 1), ("rlasc/SemanticCoding-v0", 3, "reinforce", 1)]
    assert set(runs) == {"tiny", "tiny-v0"} and runs["tiny"]["train_steps"] == 30 and runs["tiny"]["seconds"] >= 0
    res = {"device": "cpu", "preset": "tiny", "batch_size": 1, "torch_threads": 1, "mean_episode_length": 1.0,
           "single_env_step_ms": 1.0, "single_env_reset_ms": 1.0, "single_env_ms_per_transition": 1.0,
           "single_env_replay_ms_per_transition": 1.0, "batched_vs_sync": 1.0, "batched_vs_forward_only": 1.0,
           "cpu_time_batched_vs_sync": 1.0, "cpu_time_batched_vs_forward_only": 1.0, "load_average": [0, 0],
           "agent_runs": runs, **{k: 1.0 for k in ("single_env_steps_per_s", "sync_vector_steps_per_s",
                                                  "batched_env_steps_per_s", "forward_only_steps_per_s",
                                                  "forward_only_cached_spade_steps_per_s")}}
    assert "train_agent.py --algo reinforce, 3 episodes" in _summary(res)
