"""Rollout policy iteration on SemanticCoding-v4: the preview rule, improved from rollouts of its own allocations.

Approximate policy iteration with rollouts (Lagoudakis and Parr, "Reinforcement learning as classification using
rollouts", 2003; Bertsekas' rollout algorithm). The policy is :class:`agents.corrected_rule.CorrectedRulePolicy`:
the preview rule's score plus a learned correction c_q(x). Each iteration

1. plays the current policy pi on ``images_per_iteration`` new training images (eq. 14's rewards, the -v4
   observation at every step);
2. for every step m of those episodes and every level q, measures the worth of q *in pi's final allocation*: the
   return of the episode whose levels are pi's with concept m alone at q (one :meth:`EpisodeCore.finish` pass
   each, since the return is L(0) - L(final) whatever the path, eq. 14). That is Q^pi(s_m, q) for the
   deterministic pi, up to the levels pi would pick later in reply to q;
3. fits c on every step collected so far, by least squares: s * c_q(x) against what the rule's score misses of
   the worth of q over pi's own level (s the concept's stake, so c lives on the observation's scale).

The next policy picks argmax_q of rule + c: one step of policy improvement per iteration. The rollouts peek at
returns during training only; the trained policy reads the observation alone. Why the final context and not the
step's own reward: a step's reward is measured with the later concepts still at level 0, and a correction fitted to
it gains nothing per episode (docs/env_v4.md, "The right target").
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from rlasc_env.engine import STAKE_FLOOR, ActFn, Engine, EpisodeCore, copy_slot, level_preview, reset_slots

from .checkpoint import load_training_state, save_policy, save_training_state
from .corrected_rule import CorrectedRulePolicy

__all__ = ["RolloutConfig", "RolloutSteps", "RolloutTrainer", "collect_rollouts", "fit_correction"]


@dataclass
class RolloutConfig:
    """Hyperparameters of rollout policy iteration (agents/hyperparams/rollout.yml; ``--hp key=value``)."""

    iterations: int = 2
    """Policy-improvement iterations; each plays the current policy on new training images."""
    images_per_iteration: int = 50
    """Training images per iteration (each costs about K * (Q - 1) rollouts, K its number of concepts)."""
    hidden: int = 64
    """Width of the correction networks' hidden layer."""
    members: int = 3
    """Correction networks (seeds) averaged."""
    epochs: int = 300
    """Full-batch Adam steps of each fit."""
    learning_rate: float = 3.0e-3
    weight_decay: float = 1.0e-3
    """L2 penalty on the first layer's weights, beside the squared error in reward units (so it is relative to the
    rewards' scale: 1e-3 suits -v4's, whose per-step worth differences are about 0.01-0.1)."""
    images_per_chunk: int = 8
    """Images whose episodes are played side by side (2 slots each); the rest of ``slots`` runs rollouts."""
    slots: int = 96
    """Slots of the episode core (batch size of the decoder passes)."""

    def __post_init__(self) -> None:
        for name in ("iterations", "images_per_iteration", "hidden", "members", "epochs", "images_per_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"rollout hyperparameter {name} must be >= 1, got {getattr(self, name)}")
        if self.slots < 2 * self.images_per_chunk + 1:
            raise ValueError(f"slots ({self.slots}) must exceed 2 x images_per_chunk ({self.images_per_chunk})")
        if not (self.learning_rate > 0 and self.weight_decay >= 0):
            raise ValueError("learning_rate must be > 0 and weight_decay >= 0")


_STEP_FIELDS = ("inputs", "rate", "perceptual", "levels", "worth", "image", "iteration")


@dataclass
class RolloutSteps:
    """Steps of a policy's episodes, each with every level's worth in the policy's final allocation."""

    inputs: np.ndarray  # (N, S + M) float32: the policy's input x = [stats, one-hot concept]
    rate: np.ndarray  # (N, Q) rate term of each level, reward units (the preview, before the stake scaling)
    perceptual: np.ndarray  # (N, Q) perceptual drop of each level, reward units
    levels: np.ndarray  # (N,) the level the policy chose
    worth: np.ndarray  # (N, Q) episode return with this concept alone at level q
    image: np.ndarray  # (N,) training image index
    iteration: np.ndarray  # (N,) the iteration that collected the step

    def __len__(self) -> int:
        return len(self.levels)

    @classmethod
    def concat(cls, parts: Sequence["RolloutSteps"]) -> "RolloutSteps":
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _STEP_FIELDS))

    def state(self) -> dict[str, torch.Tensor]:
        return {f: torch.from_numpy(np.ascontiguousarray(getattr(self, f))) for f in _STEP_FIELDS}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "RolloutSteps":
        return cls(*(state[f].numpy() for f in _STEP_FIELDS))

    @property
    def stake(self) -> np.ndarray:
        """s = max_q rate_q + max_q |perceptual_q| (floored as in the observation): the scale of the policy's score."""
        return np.maximum(self.rate.max(1) + np.abs(self.perceptual).max(1), STAKE_FLOOR)

    def regret(self) -> np.ndarray:
        """(N,) how much the best single-level change of the concept would have added to the episode's return."""
        return self.worth.max(1) - self.worth[np.arange(len(self)), self.levels]


def collect_rollouts(core: EpisodeCore, images: Any, indices: Sequence[int], act: ActFn, iteration: int = 0,
                     images_per_chunk: int = 8, log: Callable[[str], None] | None = None) -> RolloutSteps:
    """Play ``act`` on every image of ``indices`` and measure, for each of its steps, the return of every level in
    its final allocation (the module docstring's step 2). ``core`` must carry the level preview (-v4)."""
    if not core.preview:
        raise ValueError("rollout policy iteration reads the level preview: use observation=\"preview\" (SemanticCoding-v7, or -v4)")
    q, chunk_size = core.Q, images_per_chunk
    free = np.arange(2 * chunk_size, core.num_slots)
    if not len(free):
        raise ValueError(f"a core of {core.num_slots} slots leaves none for rollouts beside {chunk_size} images")
    parts: list[RolloutSteps] = []
    started = time.perf_counter()
    indices = [int(i) for i in indices]
    for start in range(0, len(indices), chunk_size):
        chunk = indices[start:start + chunk_size]
        c = len(chunk)
        work, pristine = np.arange(c), chunk_size + np.arange(c)
        reset_slots(core, images, work, chunk)
        for i in range(c):
            copy_slot(core, int(work[i]), [int(pristine[i])])
        rows: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]] = [[] for _ in range(c)]
        live = work[core.count[work] > 0]
        while len(live):
            obs = core.observation(live)
            rate, perceptual = level_preview(core, live)  # the observation's own preview (memoized)
            chosen = np.asarray(act(obs, live), np.int64).reshape(-1)
            x = np.concatenate([obs["stats"], obs["concept"]], 1).astype(np.float32)
            for r, slot in enumerate(live.tolist()):
                rows[slot].append((x[r], rate[r], perceptual[r], int(chosen[r])))
            core.step(live, chosen)
            live = live[core.t[live] < core.count[live]]
        for i in range(c):
            core.share_image_caches(int(work[i]), [int(pristine[i])])
        # every single-concept change of each final allocation: one finish() pass per rollout
        jobs = [(i, j, lv) for i in range(c) for j in range(len(rows[i])) for lv in range(q) if lv != rows[i][j][3]]
        worth = [np.full((len(rows[i]), q), core.returns[work[i]]) for i in range(c)]
        for b in range(0, len(jobs), len(free)):
            batch = jobs[b:b + len(free)]
            slots = free[:len(batch)]
            alloc = np.zeros((len(batch), core.M), np.int64)
            for n, (i, j, lv) in enumerate(batch):
                copy_slot(core, int(pristine[i]), [int(slots[n])])
                alloc[n] = core.levels_np[work[i]]
                alloc[n, core.order[work[i], j]] = lv
            returns, _ = core.finish(slots, alloc)
            for n, (i, j, lv) in enumerate(batch):
                worth[i][j, lv] = returns[n]
        for i in range(c):
            if not rows[i]:
                continue
            x, rate, perceptual, chosen = zip(*rows[i])
            k = len(chosen)
            parts.append(RolloutSteps(np.stack(x), np.stack(rate), np.stack(perceptual), np.array(chosen, np.int64),
                                      worth[i], np.full(k, chunk[i], np.int64), np.full(k, iteration, np.int64)))
        if log is not None:
            log(f"rollouts: {start + c}/{len(indices)} images, {time.perf_counter() - started:.0f} s")
    if not parts:
        raise RuntimeError(f"images {indices} have no semantic concept: nothing to learn from")
    return RolloutSteps.concat(parts)


def fit_correction(policy: CorrectedRulePolicy, steps: RolloutSteps, cfg: RolloutConfig, seed: int) -> float:
    """Fit ``policy``'s correction networks (in place) on ``steps``; returns the final mean squared error in reward
    units. Per step and level, the target is what the rule's score misses of the level's worth over the chosen
    level's, (worth_q - worth_a) - (rule_q - rule_a), rule = -rate + w * perceptual; the model is s * c_q(x)."""
    n = len(steps)
    chosen = np.arange(n), steps.levels
    rule = -steps.rate + policy.rule_weight * steps.perceptual
    target = (steps.worth - steps.worth[chosen][:, None]) - (rule - rule[chosen][:, None])
    x = torch.as_tensor(steps.inputs, dtype=torch.float32)
    y = torch.as_tensor(target, dtype=torch.float32)
    stake = torch.as_tensor(steps.stake, dtype=torch.float32)[:, None]
    with torch.no_grad():
        policy.input_mean.copy_(x.mean(0))
        policy.input_scale.copy_(x.std(0, unbiased=False) + 1e-6)
    z = (x - policy.input_mean.cpu()) / policy.input_scale.cpu()
    device = policy.device
    z, y, stake = z.to(device), y.to(device), stake.to(device)
    errors = []
    for member, net in enumerate(policy.nets):
        torch.manual_seed(1000 * seed + member)
        for layer in (net[0], net[2]):
            layer.reset_parameters()
        torch.nn.init.zeros_(net[2].weight)
        torch.nn.init.zeros_(net[2].bias)
        opt = torch.optim.Adam(net.parameters(), cfg.learning_rate)
        for _ in range(cfg.epochs):
            opt.zero_grad()
            err = ((stake * net(z) - y) ** 2).mean()
            (err + cfg.weight_decay * (net[0].weight ** 2).sum()).backward()
            opt.step()
        errors.append(float(err.detach()))
    return float(np.mean(errors))


class RolloutTrainer:
    """Rollout policy iteration (this module's docstring) on ``engine``'s training images, in a seeded order."""

    def __init__(self, engine: Engine, config: RolloutConfig, rule_weight: float, seed: int = 0,
                 device: str | torch.device = "cpu", tb_dir: str | Path | None = None) -> None:
        if not engine.spec.preview:
            raise ValueError("rollout policy iteration corrects the preview rule: use an id with the level preview "
                             "(rlasc/SemanticCoding-v7 with observation preview, or -v4)")
        self.engine, self.config, self.seed = engine, config, int(seed)
        self.policy = CorrectedRulePolicy(engine.observation_space, engine.num_levels, rule_weight, config.hidden,
                                          config.members).to(device)
        self.order = np.random.default_rng(self.seed).permutation(engine.num_images("train"))
        self.steps: RolloutSteps | None = None
        self.iteration = 0
        self.rollouts = 0
        self.episodes = 0
        self.writer = SummaryWriter(str(tb_dir)) if tb_dir is not None else None
        self._core: EpisodeCore | None = None

    def images_of(self, iteration: int) -> np.ndarray:
        n = self.config.images_per_iteration
        chosen = self.order[iteration * n:(iteration + 1) * n]
        if len(chosen) < n:
            raise ValueError(f"iteration {iteration + 1} needs training images {iteration * n}.."
                             f"{(iteration + 1) * n - 1}"
                             f" but there are {len(self.order)}: raise --train-images or lower images_per_iteration")
        return chosen

    def train(self, iterations: int | None = None, checkpoint_path: str | Path | None = None,
              log: Callable[[str], None] = print, progress: bool = True,
              snapshot_dir: str | Path | None = None) -> None:
        """Run iterations up to ``iterations`` (default the config's), saving the state after each and, with
        ``snapshot_dir``, the policy of each iteration as ``policy_iter<k>.pt`` (for comparing iterations)."""
        total = self.config.iterations if iterations is None else int(iterations)
        for _ in range(total):  # fail before collecting anything when the images do not suffice
            self.images_of(_)
        if self._core is None:
            self._core = self.engine.core("train", self.config.slots)
        images = self.engine.parts("train").images
        while self.iteration < total:
            t0 = time.perf_counter()
            indices = self.images_of(self.iteration)
            self.policy.eval()

            def act(obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
                return self.policy.act(obs)

            new = collect_rollouts(self._core, images, indices.tolist(), act, self.iteration,
                                   self.config.images_per_chunk, log if progress else None)
            collect_seconds = time.perf_counter() - t0
            self.steps = new if self.steps is None else RolloutSteps.concat([self.steps, new])
            self.episodes += len(indices)
            self.rollouts += int(new.worth.size - len(new))
            policy_return = float(np.mean([new.worth[new.image == i][0, new.levels[new.image == i][0]]
                                           for i in np.unique(new.image)]))
            mse = fit_correction(self.policy, self.steps, self.config, self.seed * 100 + self.iteration)
            self.iteration += 1
            facts = {"policy_return": policy_return, "best_change_gain": float(new.regret().mean()),
                     "fit_mse": mse, "steps": len(self.steps), "collect_seconds": collect_seconds,
                     "fit_seconds": time.perf_counter() - t0 - collect_seconds}
            log(f"rollout iteration {self.iteration}/{total}: policy return {policy_return:.4f} on its "
                f"{len(indices)} new training images, best single change +{facts['best_change_gain']:.4f} per step, "
                f"fit on {len(self.steps)} steps (mse {mse:.3g}), {facts['collect_seconds']:.0f} s rollouts, "
                f"{facts['fit_seconds']:.0f} s fit")
            if self.writer is not None:
                for key, value in facts.items():
                    self.writer.add_scalar(f"rollout/{key}", value, self.iteration)
                self.writer.flush()
            if snapshot_dir is not None:
                self.save_policy(Path(snapshot_dir) / f"policy_iter{self.iteration}.pt")
            if checkpoint_path is not None:
                self.save_state(checkpoint_path)

    # ------------------------------------------------------------------ files
    def save_policy(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        return save_policy(path, self.policy, {"algo": "rollout", "config": asdict(self.config),
                                               "train_episodes": self.episodes, "rollouts": self.rollouts,
                                               "iterations": self.iteration, **(meta or {})})

    def save_state(self, path: str | Path) -> Path:
        """The policy, the steps collected so far and the counters (``--resume``)."""
        state = {"config": asdict(self.config), "seed": self.seed, "iteration": self.iteration,
                 "episodes": self.episodes, "rollouts": self.rollouts,
                 "steps": None if self.steps is None else self.steps.state()}
        return save_training_state(path, self.policy, state)

    def load_state(self, path: str | Path) -> None:
        state = load_training_state(path, self.policy)
        saved = {k: v for k, v in state["config"].items() if k in {f.name for f in fields(RolloutConfig)}}
        changed = {k: (saved[k], v) for k, v in asdict(self.config).items()
                   if k in saved and saved[k] != v and k != "iterations"}
        if changed or state["seed"] != self.seed:
            raise ValueError(f"{path} was trained with other settings ({changed or 'seed ' + str(state['seed'])}): "
                             "resume with the same hyperparameters and seed (only iterations may grow)")
        self.iteration, self.episodes = int(state["iteration"]), int(state["episodes"])
        self.rollouts = int(state["rollouts"])
        self.steps = None if state["steps"] is None else RolloutSteps.from_state(state["steps"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
