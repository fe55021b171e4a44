"""stable-baselines3 agents (PPO, A2C, DQN; MaskablePPO from sb3-contrib) on the batched env.

The agents train on :class:`rlasc_env.vector.SB3VecEnvAdapter` over a
:class:`rlasc_env.vector.BatchedSemanticCodingEnv` (``n_envs`` images per batched forward),
with ``MultiInputPolicy`` and the paper's trunk (:class:`agents.policy.PaperFeaturesExtractor`)
as features extractor; SB3 adds the action (and value / Q) heads. Hyperparameters come from
``agents/hyperparams/<algo>.yml``: ``n_envs``, ``policy_kwargs`` (``conv_channels``, ``hidden``,
``dropout`` and ``concept_gain`` of the trunk and SB3's ``net_arch``), ``log_interval`` (of ``learn``: iterations for
PPO/A2C, episodes for DQN) and the algorithm's own keyword arguments.
"""
from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from tqdm.auto import tqdm

from rlasc_env import SB3VecEnvAdapter
from rlasc_env.engine import ACTION_MASK, ActFn, Engine

from .policy import PaperFeaturesExtractor

__all__ = ["SB3_ALGOS", "algo_class", "make_vec_env", "build_model", "train_sb3", "load_sb3", "sb3_act",
           "RewardTermsCallback", "ProgressCallback", "zero_concept_path", "features_extractor"]

SB3_ALGOS = ("ppo", "a2c", "dqn", "maskable_ppo")
EXTRACTOR_KEYS = ("conv_channels", "hidden", "dropout", "concept_gain")
NON_ALGO_KEYS = ("n_envs", "n_timesteps", "n_episodes", "policy_kwargs", "log_interval")  # not for the SB3 class


def algo_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 class of ``algo`` (``maskable_ppo`` from sb3-contrib)."""
    if algo == "ppo":
        return PPO
    if algo == "a2c":
        return A2C
    if algo == "dqn":
        return DQN
    if algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    raise ValueError(f"unknown SB3 algorithm {algo!r}; choose from {SB3_ALGOS}")


class LevelMasks(VecEnvWrapper):
    """Action masks for MaskablePPO, one row per env: the batched env's ``action_masks()`` (every level outside the
    rate-budget mode; the levels the budget allows in it)."""

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()

    def has_attr(self, attr_name: str) -> bool:
        return attr_name == "action_masks" or self.venv.has_attr(attr_name)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        if method_name == "action_masks":  # the shared batched env answers for all its envs at once
            masks = self.venv.env_method("action_masks", indices=[0])[0]
            return [np.asarray(masks[i], bool) for i in self._get_indices(indices)]
        return self.venv.env_method(method_name, *method_args, indices=indices, **method_kwargs)


def make_vec_env(engine: Engine, n_envs: int, algo: str, seed: int) -> VecEnv:
    """SB3 VecEnv of ``n_envs`` batched train-split episodes (codec, task, images of ``engine``)."""
    env: VecEnv = SB3VecEnvAdapter(num_envs=n_envs, **engine.env_kwargs("train"))
    env.seed(seed)
    if engine.spec.bpp_budget is not None and algo != "maskable_ppo":
        raise ValueError(f"{algo} does not read action masks: in the rate-budget mode (bpp_budget "
                         f"{engine.spec.bpp_budget}) train maskable_ppo or reinforce")
    return LevelMasks(env) if algo == "maskable_ppo" else env


def policy_kwargs_from(hp: dict[str, Any]) -> dict[str, Any]:
    """SB3 ``policy_kwargs``: the paper's features extractor with the trunk's settings, plus the rest."""
    given = dict(hp.get("policy_kwargs") or {})
    extractor = {k: given.pop(k) for k in EXTRACTOR_KEYS if k in given}
    return {"features_extractor_class": PaperFeaturesExtractor, "features_extractor_kwargs": extractor, **given}


class RewardTermsCallback(BaseCallback):
    """Logs the reward terms of finished episodes (SB3 tags): ``rollout/bpp_mean``,
    ``rollout/semantic_loss_mean``, ``rollout/perceptual_loss_mean``, ``rollout/normalized_score_mean``,
    ``rollout/<metric>_mean`` (means over the last 100 episodes), and stops training after
    ``max_episodes`` episodes when given."""

    KEYS = ("bpp", "semantic_loss", "perceptual_loss", "normalized_score")

    def __init__(self, metric_name: str, max_episodes: int | None = None, episodes_done: int = 0) -> None:
        super().__init__()
        self.keys = (*self.KEYS, metric_name)
        self.window = {k: deque(maxlen=100) for k in self.keys}
        self.max_episodes = max_episodes
        self.episodes = episodes_done

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"]):
            if done:
                self.episodes += 1
                for key in self.keys:
                    if key in info and np.isfinite(info[key]):
                        self.window[key].append(float(info[key]))
        self._record()
        return self.max_episodes is None or self.episodes < self.max_episodes

    def _on_training_end(self) -> None:
        self._record()
        buf = self.model.ep_info_buffer
        if buf:
            self.logger.record("rollout/ep_rew_mean", float(np.mean([e["r"] for e in buf])))
            self.logger.record("rollout/ep_len_mean", float(np.mean([e["l"] for e in buf])))
        self.logger.dump(self.num_timesteps)  # the last values, whatever the algorithm's log interval

    def _record(self) -> None:
        for key, values in self.window.items():
            if values:
                self.logger.record(f"rollout/{key}_mean", float(np.mean(values)))
        self.logger.record("time/episodes", self.episodes)


class ProgressCallback(BaseCallback):
    """tqdm bar over the timestep budget with rate, ETA and the recent mean return."""

    def __init__(self, total: int | None, initial: int = 0, enabled: bool = True) -> None:
        super().__init__()
        self.total, self.initial, self.enabled = total, initial, enabled
        self.bar: Any = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self.initial, unit="step", desc=type(self.model).__name__,
                        disable=not self.enabled, dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        buf = self.model.ep_info_buffer
        if buf and self.n_calls % 50 == 0:
            self.bar.set_postfix(ep_rew=f"{np.mean([e['r'] for e in buf]):.4f}", refresh=False)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def features_extractor(model: BaseAlgorithm) -> torch.nn.Module:
    """The model's features extractor (DQN keeps it in its Q-network)."""
    policy = model.policy
    return policy.q_net.features_extractor if hasattr(policy, "q_net") else policy.features_extractor


def _feature_heads(model: BaseAlgorithm) -> list[torch.nn.Linear]:
    """The linear layers that read the features extractor's output directly (``net_arch: []``)."""
    policy = model.policy
    if hasattr(policy, "q_net"):  # DQN: q_net and its target
        nets = [policy.q_net.q_net, policy.q_net_target.q_net]
        heads = [net[0] for net in nets if len(net) == 1 and isinstance(net[0], torch.nn.Linear)]
        return heads if len(heads) == len(nets) else []
    hidden = [p for net in (policy.mlp_extractor.policy_net, policy.mlp_extractor.value_net) for p in net.parameters()]
    if not hidden:  # net_arch: [] (no hidden layers between the features and the heads)
        return [policy.action_net, policy.value_net]
    return []


def zero_concept_path(model: BaseAlgorithm) -> int:
    """Zero the heads' weights on the concept path's features (:class:`PaperFeaturesExtractor` with
    ``concept_gain``), so the initial policy, values and Q-values are the paper trunk's alone; returns how many
    heads were changed. The concept path needs heads that read the features directly (``net_arch: []``)."""
    extractor = features_extractor(model)
    gain = float(getattr(extractor, "concept_gain", 0.0))
    if gain <= 0:
        return 0
    heads = _feature_heads(model)
    if not heads:
        raise ValueError("policy_kwargs.concept_gain needs linear heads on the features: set policy_kwargs.net_arch "
                         "to []")
    first = extractor.trunk.out_features
    with torch.no_grad():
        for head in heads:
            head.weight[:, first:] = 0.0
    return len(heads)


def build_model(algo: str, hp: dict[str, Any], env: VecEnv, seed: int, device: str, tb_dir: Path | None
                ) -> BaseAlgorithm:
    """A fresh SB3 model with ``MultiInputPolicy`` and the paper's features extractor (its concept path, if
    any, starting at zero)."""
    kwargs = {k: v for k, v in hp.items() if k not in NON_ALGO_KEYS}
    model = algo_class(algo)("MultiInputPolicy", env, policy_kwargs=policy_kwargs_from(hp), seed=seed, device=device,
                             tensorboard_log=None if tb_dir is None else str(tb_dir), verbose=0, **kwargs)
    zero_concept_path(model)
    return model


def train_sb3(engine: Engine, algo: str, hp: dict[str, Any], seed: int, device: str, run_dir: Path,
              steps: int | None, episodes: int | None, resume: bool = False, progress: bool = True
              ) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Train (or, with ``resume``, continue ``run_dir/model.zip``) until ``steps`` env steps or
    ``episodes`` episodes; saves ``run_dir/model.zip``. Returns the model and training facts."""
    if steps is None and episodes is None:
        raise ValueError("give a training budget: steps or episodes")
    n_envs = int(hp.get("n_envs", 8))
    env = make_vec_env(engine, n_envs, algo, seed)
    model_path, state_path, tb_dir = run_dir / "model.zip", run_dir / "sb3_state.json", run_dir / "tb"
    done_steps, done_episodes = 0, 0
    if resume:
        if not model_path.is_file() or not state_path.is_file():
            raise FileNotFoundError(f"--resume: no saved model {model_path} (with {state_path.name}) to continue")
        model = algo_class(algo).load(model_path, env=env, device=device, tensorboard_log=str(tb_dir))
        done_steps, done_episodes = int(model.num_timesteps), int(json.loads(state_path.read_text())["episodes"])
    else:
        model = build_model(algo, hp, env, seed, device, tb_dir)
    total = steps if steps is not None else 10 ** 12
    terms = RewardTermsCallback(engine.metric_name, max_episodes=episodes, episodes_done=done_episodes)
    bar = ProgressCallback(steps, done_steps, progress)
    t0 = time.perf_counter()
    model.learn(total_timesteps=max(total - done_steps, 0), callback=CallbackList([terms, bar]),
                tb_log_name=algo.upper(), reset_num_timesteps=not resume, log_interval=int(hp.get("log_interval", 1)))
    seconds = time.perf_counter() - t0
    model.save(model_path)
    state_path.write_text(json.dumps({"episodes": terms.episodes, "steps": int(model.num_timesteps)}))
    env.close()
    return model, {"train_steps": int(model.num_timesteps), "train_episodes": terms.episodes, "train_seconds": seconds}


def load_sb3(algo: str, path: str | Path, device: str) -> BaseAlgorithm:
    """A model saved by :func:`train_sb3` (no env attached; enough to act)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved SB3 model {path}")
    return algo_class(algo).load(path, device=device)


def sb3_act(model: BaseAlgorithm, deterministic: bool = True) -> ActFn:
    """An evaluation policy from an SB3 model: levels from ``model.predict``."""
    def act(obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        obs = dict(obs)
        masks = obs.pop(ACTION_MASK, None)  # the rate-budget mode's allowed levels
        if type(model).__name__ == "MaskablePPO":
            masks = np.ones((len(slots), model.action_space.n), bool) if masks is None else masks
            action, _ = model.predict(obs, deterministic=deterministic, action_masks=masks)
        elif masks is not None:
            raise ValueError(f"{type(model).__name__} does not read action masks: the rate-budget mode needs "
                             "MaskablePPO")
        else:
            action, _ = model.predict(obs, deterministic=deterministic)
        return np.asarray(action, np.int64).reshape(-1)
    return act
