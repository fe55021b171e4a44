"""REINFORCE for the bit-allocation agent, as in Section II-C (eq. 15-22) and Algorithm 2.

One Monte-Carlo rollout per update (b = 1 episode = one image by default): the agent samples
a level for every concept, the env returns the rewards r(m+1) (eq. 14), and

    G = sum_{m=1}^{M} gamma^m r(m+1)                                        (eq. 15)
    grad J = G * sum_m grad log pi(a(m) | s(m))                             (eq. 20-21)
    theta <- theta + alpha * grad J                                         (eq. 22)

so every log-probability of the episode is weighted by the SAME G (``return_mode="episode"``,
the paper's estimator; note eq. 15 starts the discount at gamma^1). The ascent step of eq. 22
is taken by Adam on the loss -J. Options, all off in the paper preset:

- ``return_mode="reward_to_go"``: step m weighted by sum_{j>=m} gamma^(j-m) r(j+1);
- ``episodes_per_update`` b > 1: the gradients of b rollouts averaged (eq. 16 with N = b);
- ``rollouts_per_image`` R > 1: the b rollouts come from b / R images, R each (one encoder
  pass per image, the episode state copied);
- a baseline subtracted from the weights (G - b, unbiased): ``"mean"``, a running mean of G;
  ``"image"``, for each rollout the mean of the other R - 1 rollouts of the same image
  (leave-one-out, step by step);
- ``normalize_advantages``: the weights (G - b) of an update divided by their standard
  deviation (a per-update step size; the direction of eq. 21 is kept);
- an entropy bonus ``entropy_coef``;
- ``concept_skip``: :class:`PaperPolicy` with a linear [concept, stats] -> logits path beside
  the paper's network, trained at its own Adam step ``skip_learning_rate`` (one preference per
  class and level that the shared trunk cannot override before the classes separate);
- ``preview_head``: a per-level term on the level preview of ``SemanticCoding-v4`` (rate and perceptual entries of
  each level, weighted per class), trained with the skip path; ``preview_head_init`` > 0 starts it at that
  multiple of the preview rule's score (:meth:`PaperPolicy.start_at_preview_rule`, the rule's weight fitted on
  training images by the caller), so the gradient refines a known-good allocation instead of finding the
  rate/perceptual trade-off from zero.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from rlasc_env.engine import Engine, EpisodeRecord, run_copies

from .checkpoint import load_policy, load_training_state, save_policy, save_training_state
from .policy import PaperPolicy, masked_logits, obs_to_tensors

__all__ = ["ReinforceConfig", "ReinforceTrainer", "TrainStats", "discounted_return", "rewards_to_go", "step_weights",
           "episode_objective", "load_reinforce_policy", "policy_param_groups"]


@dataclass
class ReinforceConfig:
    """Hyperparameters of REINFORCE (see ``agents/hyperparams/reinforce.yml`` for the presets)."""

    learning_rate: float = 1e-5  # alpha of eq. 22 (Algorithm 2: 1e-5)
    gamma: float = 0.99  # discount of eq. 15
    episodes_per_update: int = 1  # b of Algorithm 2
    rollouts_per_image: int = 1  # episodes of the update sampled on the same image (divides b)
    return_mode: Literal["episode", "reward_to_go"] = "episode"  # eq. 21 weights every step by G
    baseline: Literal["none", "mean", "image"] = "none"  # subtracted from the returns, see the module doc
    baseline_decay: float = 0.95  # exponential moving average factor of the baseline
    normalize_advantages: bool = False  # divide the (G - b) weights of an update by their std
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.0  # 0 = no clipping
    adam_betas: tuple[float, float] = (0.9, 0.999)
    conv_channels: tuple[int, int] = (32, 64)
    hidden: tuple[int, int] = (256, 128)
    dropout: float = 0.1
    concept_skip: bool = False  # linear [concept, stats] -> logits path beside the trunk (PaperPolicy)
    skip_learning_rate: float = 0.05  # Adam step of that path (the -v1 tiny preset's value)
    preview_head: bool = False  # per-level term on the level preview's entries (PaperPolicy; SemanticCoding-v4)
    preview_head_init: float = 0.0  # > 0: the head starts at this multiple of the fitted preview rule's score
    log_interval: int = 10  # updates between tensorboard points
    checkpoint_interval: int = 200  # updates between resumable checkpoints (0 = only at the end)

    def __post_init__(self) -> None:
        if self.return_mode not in ("episode", "reward_to_go"):
            raise ValueError(f"return_mode must be 'episode' or 'reward_to_go', not {self.return_mode!r}")
        if self.baseline not in ("none", "mean", "image"):
            raise ValueError(f"baseline must be 'none', 'mean' or 'image', not {self.baseline!r}")
        if self.episodes_per_update < 1 or self.rollouts_per_image < 1:
            raise ValueError("episodes_per_update and rollouts_per_image must be >= 1")
        if self.episodes_per_update % self.rollouts_per_image:
            raise ValueError(f"rollouts_per_image ({self.rollouts_per_image}) must divide episodes_per_update "
                             f"({self.episodes_per_update})")
        if self.baseline == "image" and self.rollouts_per_image < 2:
            raise ValueError("baseline='image' (leave-one-out over the rollouts of one image) needs "
                             "rollouts_per_image >= 2")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.preview_head_init < 0 or (self.preview_head_init > 0 and not self.preview_head):
            raise ValueError(f"preview_head_init ({self.preview_head_init}) must be >= 0, and > 0 only with "
                             "preview_head=True")
        if self.learning_rate <= 0 or self.skip_learning_rate <= 0:
            raise ValueError("learning_rate and skip_learning_rate must be positive")
        self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]
        self.conv_channels = tuple(int(c) for c in self.conv_channels)  # type: ignore[assignment]
        self.hidden = tuple(int(h) for h in self.hidden)  # type: ignore[assignment]


def discounted_return(rewards: Sequence[float], gamma: float) -> float:
    """G = sum_{m=1}^{M} gamma^m r(m+1) (eq. 15): the m-th reward of the episode (m from 1) is
    discounted by gamma^m."""
    return float(sum(gamma ** m * r for m, r in enumerate(rewards, start=1)))


def rewards_to_go(rewards: Sequence[float], gamma: float) -> np.ndarray:
    """G_m = sum_{j >= m} gamma^(j - m) r(j+1) for every step m (the reward-to-go option)."""
    out = np.zeros(len(rewards), np.float64)
    acc = 0.0
    for m in range(len(rewards) - 1, -1, -1):
        acc = rewards[m] + gamma * acc
        out[m] = acc
    return out


def step_weights(rewards: Sequence[float], gamma: float, mode: str) -> np.ndarray:
    """Weight of each step's grad log pi: G of eq. 15 for every step (``"episode"``, eq. 21), or the
    reward-to-go of each step."""
    if mode == "episode":
        return np.full(len(rewards), discounted_return(rewards, gamma))
    if mode == "reward_to_go":
        return rewards_to_go(rewards, gamma)
    raise ValueError(f"unknown return mode {mode!r}")


def episode_objective(log_probs: torch.Tensor, rewards: Sequence[float], gamma: float, mode: str = "episode",
                      baseline: float | np.ndarray = 0.0) -> torch.Tensor:
    """The single-rollout estimate of J whose gradient is eq. 21: sum_m (G - b) log pi(a(m)|s(m)),
    with G of eq. 15 for every step (``mode="episode"``) or each step's reward-to-go; ``baseline``
    a number or one value per step."""
    if log_probs.shape != (len(rewards),):
        raise ValueError(f"{tuple(log_probs.shape)} log-probabilities for {len(rewards)} rewards")
    weights = torch.as_tensor(step_weights(rewards, gamma, mode) - baseline, dtype=log_probs.dtype,
                              device=log_probs.device)
    return (weights * log_probs).sum()


def leave_one_out(weights: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Baseline of each rollout of one image: the mean of the other rollouts' step weights (same
    image, so same concepts in the same order and the same number of steps)."""
    stacked = np.stack(weights)  # (R, K)
    r = len(stacked)
    return [(stacked.sum(0) - stacked[j]) / (r - 1) for j in range(r)]


def policy_param_groups(policy: PaperPolicy, config: ReinforceConfig) -> list[dict[str, Any]]:
    """Adam parameter groups: the concept skip path and the preview head (when the policy has them) at
    ``skip_learning_rate``, everything else at ``learning_rate``."""
    skip = [p for name in ("skip", "preview_head") if getattr(policy, name, None) is not None
            for p in getattr(policy, name).parameters()]
    skip_ids = {id(p) for p in skip}
    groups: list[dict[str, Any]] = [{"params": [p for p in policy.parameters() if id(p) not in skip_ids]}]
    if skip:
        groups.append({"params": skip, "lr": config.skip_learning_rate})
    return groups


@dataclass
class TrainStats:
    """Running training state (saved in resumable checkpoints)."""

    episodes: int = 0
    steps: int = 0
    updates: int = 0
    baseline: float = 0.0
    baseline_ready: bool = False
    seconds: float = 0.0


class ReinforceTrainer:
    """Trains :class:`PaperPolicy` with REINFORCE on the train split of an :class:`Engine`."""

    WINDOW = 100  # episodes in the rollout/*_mean statistics (as SB3)

    def __init__(self, engine: Engine, config: ReinforceConfig, seed: int = 0,
                 device: str | torch.device = "cpu", tb_dir: str | Path | None = None,
                 policy: PaperPolicy | None = None, rule_weight: float | None = None) -> None:
        """``rule_weight``: the preview rule's fitted weight, needed when ``config.preview_head_init`` > 0 and
        the policy is built here (:func:`agents.baselines.fit_preview_rule` on training images)."""
        self.engine, self.config, self.seed = engine, config, int(seed)
        self.device = torch.device(device)
        torch.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        if policy is None:
            policy = PaperPolicy(engine.observation_space, engine.num_levels, config.conv_channels, config.hidden,
                                 config.dropout, config.concept_skip, config.preview_head)
            if config.preview_head_init > 0:
                if rule_weight is None:
                    raise ValueError("preview_head_init > 0 starts the head at the preview rule: pass its fitted "
                                     "weight (rule_weight, agents.baselines.fit_preview_rule on training images)")
                policy.start_at_preview_rule(rule_weight, config.preview_head_init)
        self.policy = policy
        self.policy.to(self.device)
        self.optimizer = torch.optim.Adam(policy_param_groups(self.policy, config), lr=config.learning_rate,
                                          betas=config.adam_betas)
        self.core = engine.core("train", config.episodes_per_update)
        self.images = engine.parts("train").images
        self.num_train = engine.num_images("train")
        self.stats = TrainStats()
        self.writer = SummaryWriter(str(tb_dir)) if tb_dir is not None else None
        self._window: dict[str, deque] = {}
        self._last: dict[str, float | None] = {"loss": float("nan"), "entropy": float("nan"), "grad_norm": None}

    # ------------------------------------------------------------------ one update
    def update(self) -> list[EpisodeRecord]:
        """Sample b episodes with pi_theta, then one gradient step on -J (eq. 21-22)."""
        cfg = self.config
        self.policy.train()  # dropout on while sampling: the log-probs are those of the sampled actions
        b, reps = cfg.episodes_per_update, cfg.rollouts_per_image
        indices = self.rng.integers(self.num_train, size=b // reps).tolist()
        log_probs: list[list[torch.Tensor]] = [[] for _ in range(b)]  # by slot: image g, rollout j -> g*reps + j
        entropies: list[torch.Tensor] = []

        def act(obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
            logits = masked_logits(self.policy(obs_to_tensors(obs, self.policy.shapes, self.device)), obs)
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            lp = dist.log_prob(action)
            for r, slot in enumerate(slots.tolist()):
                log_probs[slot].append(lp[r])
            entropies.append(dist.entropy())
            return action.cpu().numpy()

        runs = run_copies(self.core, self.images, indices, [act] * reps, self.engine.metric_name)
        records = [runs[j][g] for g in range(len(indices)) for j in range(reps)]  # slot order
        returns = np.array([discounted_return(r.rewards, cfg.gamma) for r in records])
        if cfg.baseline == "image":
            weights = [step_weights(r.rewards, cfg.gamma, cfg.return_mode) for r in records]
            baselines = [base for g in range(len(indices))
                         for base in leave_one_out(weights[g * reps:(g + 1) * reps])]
        else:
            scalar = self.stats.baseline if (cfg.baseline == "mean" and self.stats.baseline_ready) else 0.0
            baselines = [scalar] * len(records)
        scale = 1.0
        if cfg.normalize_advantages:
            adv = np.concatenate([step_weights(r.rewards, cfg.gamma, cfg.return_mode) - base
                                  for r, base in zip(records, baselines)])
            scale = 1.0 / max(float(adv.std()), 1e-8) if len(adv) > 1 else 1.0
        terms = [scale * episode_objective(torch.stack(lps), rec.rewards, cfg.gamma, cfg.return_mode, base)
                 for rec, lps, base in zip(records, log_probs, baselines)]  # (G - b) * sum_m log pi (eq. 21)
        objective = torch.stack(terms).mean()  # J estimate over the b trajectories (eq. 16)
        entropy = torch.cat(entropies).mean()
        loss = -objective - cfg.entropy_coef * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                     if cfg.max_grad_norm > 0 else None)
        self.optimizer.step()  # theta <- theta + alpha * grad J (eq. 22, via Adam on -J)
        if cfg.baseline == "mean":
            mean_return = float(returns.mean())
            if self.stats.baseline_ready:
                self.stats.baseline = cfg.baseline_decay * self.stats.baseline + (1 - cfg.baseline_decay) * mean_return
            else:
                self.stats.baseline, self.stats.baseline_ready = mean_return, True
        self.stats.updates += 1
        self.stats.episodes += len(records)
        self.stats.steps += sum(r.length for r in records)
        self._remember(records, returns, float(loss.detach()), float(entropy.detach()),
                       None if grad_norm is None else float(grad_norm))
        return records

    def _remember(self, records: list[EpisodeRecord], returns: np.ndarray, loss: float, entropy: float,
                  grad_norm: float | None) -> None:
        metric = self.engine.metric_name
        values = {"ep_rew_mean": [r.episode_return for r in records], "ep_len_mean": [r.length for r in records],
                  "discounted_return_mean": returns.tolist(), "bpp_mean": [r.bpp for r in records],
                  "semantic_loss_mean": [r.semantic_loss for r in records],
                  "perceptual_loss_mean": [r.perceptual_loss for r in records],
                  "normalized_score_mean": [r.normalized_score for r in records],
                  f"{metric}_mean": [r.metric for r in records],
                  "level_mean": [float(np.mean(r.levels)) for r in records]}
        for key, vals in values.items():
            self._window.setdefault(key, deque(maxlen=self.WINDOW)).extend(vals)
        self._last = {"loss": loss, "entropy": entropy, "grad_norm": grad_norm}

    def window_mean(self, key: str) -> float:
        vals = [v for v in self._window.get(key, ()) if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def _log(self, fps: float) -> None:
        if self.writer is None:
            return
        step = self.stats.steps
        for key in self._window:
            self.writer.add_scalar(f"rollout/{key}", self.window_mean(key), step)
        self.writer.add_scalar("train/loss", self._last["loss"], step)
        self.writer.add_scalar("train/entropy", self._last["entropy"], step)
        self.writer.add_scalar("train/learning_rate", self.config.learning_rate, step)
        self.writer.add_scalar("train/n_updates", self.stats.updates, step)
        if self.config.baseline == "mean":
            self.writer.add_scalar("train/baseline", self.stats.baseline, step)
        if self._last["grad_norm"] is not None:
            self.writer.add_scalar("train/grad_norm", self._last["grad_norm"], step)
        self.writer.add_scalar("time/episodes", self.stats.episodes, step)
        self.writer.add_scalar("time/fps", fps, step)
        self.writer.flush()

    # ------------------------------------------------------------------ training loop
    def train(self, episodes: int | None = None, steps: int | None = None, progress: bool = True,
              checkpoint_path: str | Path | None = None,
              on_update: Callable[["ReinforceTrainer"], None] | None = None) -> TrainStats:
        """Run updates (Algorithm 2's loop) until ``episodes`` training episodes or ``steps`` env
        steps in total (counting those before a resume)."""
        if episodes is None and steps is None:
            raise ValueError("give a training budget: episodes or steps")
        cfg = self.config
        start_time = time.perf_counter()
        start_steps = self.stats.steps

        def remaining() -> bool:
            return ((episodes is None or self.stats.episodes < episodes)
                    and (steps is None or self.stats.steps < steps))

        bar = (tqdm(total=episodes, initial=self.stats.episodes, unit="ep", desc="REINFORCE", disable=not progress,
                    dynamic_ncols=True, mininterval=0.5) if episodes is not None else
               tqdm(total=steps, initial=self.stats.steps, unit="step", desc="REINFORCE", disable=not progress,
                    dynamic_ncols=True, mininterval=0.5))
        try:
            while remaining():
                records = self.update()
                bar.update(len(records) if episodes is not None else sum(r.length for r in records))
                elapsed = time.perf_counter() - start_time
                fps = (self.stats.steps - start_steps) / max(elapsed, 1e-9)
                if self.stats.updates % cfg.log_interval == 0 or not remaining():
                    self._log(fps)
                    bar.set_postfix(ep_rew=f"{self.window_mean('ep_rew_mean'):.4f}",
                                    norm_score=f"{self.window_mean('normalized_score_mean'):.3f}",
                                    level=f"{self.window_mean('level_mean'):.2f}", refresh=False)
                if (checkpoint_path is not None and cfg.checkpoint_interval > 0
                        and self.stats.updates % cfg.checkpoint_interval == 0):
                    self.save_state(checkpoint_path)
                if on_update is not None:
                    on_update(self)
        finally:
            bar.close()
            self.stats.seconds += time.perf_counter() - start_time
        if checkpoint_path is not None:
            self.save_state(checkpoint_path)
        if self.writer is not None:
            self.writer.flush()
        return self.stats

    # ------------------------------------------------------------------ persistence
    def save_policy(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        return save_policy(path, self.policy, {"algo": "reinforce", "config": asdict(self.config),
                                               "train_episodes": self.stats.episodes, **(meta or {})})

    @property
    def last_loss(self) -> float:
        """-J (plus the entropy term) of the latest update."""
        return float(self._last["loss"])

    def trainer_state(self) -> dict[str, Any]:
        """The optimizer, counters, baseline, statistics window and NumPy generator (not the policy weights)."""
        return {"optimizer": self.optimizer.state_dict(), "stats": asdict(self.stats),
                "window": {k: list(v) for k, v in self._window.items()}, "config": asdict(self.config),
                "numpy_rng": self.rng.bit_generator.state}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        """Undo :meth:`trainer_state` (the policy weights are restored separately)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.stats = TrainStats(**state["stats"])
        self._window = {k: deque(v, maxlen=self.WINDOW) for k, v in state["window"].items()}
        self.rng.bit_generator.state = state["numpy_rng"]

    def save_state(self, path: str | Path) -> Path:
        """Everything needed to resume: policy, optimizer, counters, baseline, random generators."""
        return save_training_state(path, self.policy, {**self.trainer_state(), "torch_rng": torch.get_rng_state(),
                                                       "seed": self.seed})

    def load_state(self, path: str | Path) -> None:
        state = load_training_state(path, self.policy)
        self.load_trainer_state(state)
        torch.set_rng_state(state["torch_rng"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def load_reinforce_policy(path: str | Path, device: str | torch.device = "cpu") -> tuple[PaperPolicy, dict[str, Any]]:
    """A policy saved by :meth:`ReinforceTrainer.save_policy` and its metadata."""
    return load_policy(path, device)
