"""How much of the greedy look-ahead's lead can a policy learn from the observations?

The greedy baseline (:mod:`agents.baselines`) peeks at the reward of every level before it
chooses, so it bounds what a deployable policy can reach only loosely. This diagnostic asks
what part of its lead is predictable from the state {f(m), s(m), m, stats} that the agent sees
(Section II-C):

1. Greedy plays the first ``train_images`` training images; every step keeps its observation,
   the level it chose and the immediate reward r (eq. 14) of every level.
2. The steps of a held-out fifth of those images measure, per step, the accuracy (matching
   greedy's level) and the immediate regret (best r minus the chosen level's r) of:
   every fixed level; the class table of :mod:`agents.class_table` (per concept class and size
   bucket, the level of least mean regret on the other images, see below), the same table fitted on
   greedy's states (``class_table_greedy``) and a class-only table; and
   :class:`~agents.policy.PaperPolicy` fitted on the other images, once by
   cross-entropy on greedy's levels (``imitation``, behaviour cloning) and once by regressing
   every level's immediate reward (``reward_fit``, acting on the best predicted reward); and
   :class:`CompactChooser`, an MLP on the concept's class and the stats alone, by the same reward
   regression (``compact_fit``), and five of those, each stopped early on its own fifth of the fitting
   images, acting on their mean output (``compact_ensemble``).
   With ``--cv-folds K`` (default 5), step 2 is repeated with each of K folds of the training images
   held out once, so that every greedy step is scored by choosers that never saw its image
   (``report["cross_validation"]``): five times the data of one held-out fifth, and an image-bootstrap
   interval on each chooser's share of the best fixed level's regret.
3. The fitted policies, both class tables (refitted on all their training images), every fixed
   level and greedy play the first ``eval_images`` test images (returns as in ``train_agent.py``).

The class table is fitted on the states of the best uniform level q* (chosen by return on the first
``uniform_images`` training images): along q*'s episodes every level's immediate reward is recorded,
so the table learns which one-step deviations from q* pay, per class and size -- one step of policy
improvement over the uniform allocation. Fitted on greedy's states instead, it learns deviations
from a context (most concepts coarse) that it does not meet when deployed; the task rewards are not
additive over concepts (detection's box IoU, most of all), which makes the difference. The fitted
policies train on greedy's states, where their per-step regret is measured (trained on both kinds of
states, the compact chooser removed 38% of segmentation's regret instead of 43%).

**The signal gate** (``report["gate"]``) asks two things of an environment before agents are
trained on it: the class table beats the best uniform level in episode return on the test images
(the 95% BCa bootstrap interval of the per-image difference lies above 0), and the better fitted
policy removes at least 40% of the best fixed level's immediate regret, cross-validated over all the
training images (on the held-out fifth alone with ``--cv-folds 0``).

If the fitted policies' regret is hardly lower than the best fixed level's, greedy's choices
are not predictable from what the agent observes, and no policy trained on these observations can
be expected to close much of the gap to greedy. ``python -m rlasc_harness.learnability --help``.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from agents.baselines import FixedPolicy, greedy_episodes
from agents.class_table import ClassTable, fit_class_table
from agents.policy import OBS_KEYS, PaperPolicy, obs_shapes, obs_to_tensors
from codec_models.device import resolve_device
from rlasc_env.engine import Engine, EpisodeRecord

from .config import EnvFlags
from .evaluation import baseline_policies, evaluate, gap_closure, results_table
from .runner import make_engine, write_json

__all__ = ["LearnabilityConfig", "GreedySteps", "collect_greedy_steps", "cached_greedy_steps", "step_scores",
           "fit_policy", "CompactChooser", "ChooserEnsemble", "fit_compact_ensemble", "class_table", "table_of",
           "best_uniform_level", "fit_deployed_class_table", "paired_difference", "signal_gate",
           "gate_summary", "term_ranges", "uniform_optimum_by_lam", "run", "main", "GATE_REGRET_REDUCTION"]

GATE_REGRET_REDUCTION = 0.4
"""Share of the best fixed level's immediate regret that the best fitted policy must remove."""


@dataclass
class LearnabilityConfig(EnvFlags):
    """Measure how much of the greedy look-ahead's lead is predictable from the agent's observations."""

    train_images: int = 300
    """Training images greedy plays (the first N of the train split); a fifth of them are held out."""
    eval_images: int = 100
    """Number of held-out test images (the first N of the test split) every policy is evaluated on."""
    bootstrap: int = 10000
    """Bootstrap resamples of the gate's confidence intervals."""
    cv_folds: int = 5
    """Also score every chooser by K-fold cross-validation over the training images (each fold held out once;
    all greedy steps scored): the gate's share of regret removed is then the cross-validated one, with an
    image-bootstrap interval. 0 or 1: only the single held-out fifth."""
    uniform_images: int = 100
    """Training images on which the best uniform level q* is chosen (its episodes give the class table's steps)."""
    greedy_cache: str | None = None
    """Keep greedy's training steps in this .npz and reuse them when codec, task, weights and images match."""
    task: str = "segmentation"
    """Downstream task of the semantic loss."""
    epochs: int = 30
    """Training passes of each fitted policy over the greedy steps."""
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    """cpu, cuda, cuda:1, ... or auto (CUDA when present)."""
    batch: int = 96
    """Env slots stepped together."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    json: str | None = None
    """Write the report as JSON here."""
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_images is None or self.train_images < 5:
            raise ValueError(f"--train-images must be >= 5 (a fifth is held out), got {self.train_images}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be >= 1")


@dataclass
class GreedySteps:
    """Every step of greedy episodes: observation, greedy's level, all levels' immediate rewards."""

    observations: dict[str, np.ndarray]  # key -> (N, ...)
    levels: np.ndarray  # (N,) greedy's choice
    candidates: np.ndarray  # (N, Q) immediate reward of each level
    classes: np.ndarray  # (N,) concept class id
    image: np.ndarray  # (N,) data set index of the step's image

    def __len__(self) -> int:
        return len(self.levels)

    def subset(self, rows: np.ndarray) -> GreedySteps:
        return GreedySteps({k: v[rows] for k, v in self.observations.items()}, self.levels[rows],
                           self.candidates[rows], self.classes[rows], self.image[rows])

    def concat(self, other: GreedySteps) -> GreedySteps:
        return GreedySteps({k: np.concatenate([v, other.observations[k]]) for k, v in self.observations.items()},
                           np.concatenate([self.levels, other.levels]),
                           np.concatenate([self.candidates, other.candidates]),
                           np.concatenate([self.classes, other.classes]), np.concatenate([self.image, other.image]))


def collect_greedy_steps(engine: Engine, split: str, indices: Sequence[int], batch: int = 96,
                         progress: bool = False, follow: int | None = None) -> tuple[GreedySteps, list[EpisodeRecord]]:
    """Greedy episodes on ``indices`` of ``split`` with the observation of every step (``follow``: along that
    fixed level's episodes instead, every level's immediate reward still recorded)."""
    if not len(indices):
        raise ValueError("give at least one image index")
    q = engine.num_levels
    per_core = max(1, min(batch // q, len(indices)))
    core = engine.core(split, q * per_core)
    images = engine.parts(split).images
    records: list[EpisodeRecord] = []
    bar = tqdm(total=len(indices), desc="greedy", unit="img", disable=not progress)
    for start in range(0, len(indices), per_core):
        chunk = [int(i) for i in indices[start:start + per_core]]
        records += greedy_episodes(core, images, chunk, engine.metric_name, observe=True, follow=follow)
        bar.update(len(chunk))
    bar.close()
    return steps_from_records(records, OBS_KEYS), records


def steps_from_records(records: Sequence[EpisodeRecord], keys: Sequence[str] | None = None) -> GreedySteps:
    """The steps of ``greedy_episodes(..., observe=True)`` records, image by image: the observation entries
    ``keys`` (default: every entry recorded), the level played, every level's immediate reward, class and image."""
    obs = [o for r in records for o in r.extra["observations"]]
    return GreedySteps(
        observations={k: np.stack([o[k] for o in obs]) for k in (obs[0] if keys is None else keys)},
        levels=np.array([lv for r in records for lv in r.levels], np.int64),
        candidates=np.array([c for r in records for c in r.extra["candidate_rewards"]], np.float64),
        classes=np.array([c for r in records for c in r.concepts], np.int64),
        image=np.array([r.image_index for r in records for _ in r.levels], np.int64))


def _cache_key(engine: Engine, cfg: "LearnabilityConfig") -> str:
    import json

    hashes = engine.weight_hashes()
    shas = [hashes["codec_sha256"] or "None", hashes["task_sha256"] or "None"]
    return json.dumps({"files": shas, "task": engine.task.name, "train_images": cfg.train_images, "lam": cfg.lam,
                       "eta": cfg.eta, "env_id": cfg.env_id, "observation": cfg.observation},
                      sort_keys=True)


def cached_greedy_steps(engine: Engine, cfg: "LearnabilityConfig", follow: int | None = None) -> GreedySteps:
    """:func:`collect_greedy_steps` on the first ``cfg.train_images`` training images, kept in
    ``cfg.greedy_cache`` (a file made for other weights or settings is recomputed and replaced); with
    ``follow``, in ``<cache stem>.follow<level>.npz``."""
    key = (_cache_key(engine, cfg) + ("" if follow is None else f"/follow={follow}")) if cfg.greedy_cache else ""
    path = Path(cfg.greedy_cache) if cfg.greedy_cache else None
    if path is not None and follow is not None:
        path = path.with_name(f"{path.stem}.follow{follow}.npz")
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) == key:
                return GreedySteps({k: data[f"obs_{k}"] for k in OBS_KEYS}, data["levels"], data["candidates"],
                                   data["classes"], data["image"])
        print(f"{path} was made for other weights or settings: collecting greedy's steps again")
    steps, _ = collect_greedy_steps(engine, "train", range(cfg.train_images), cfg.batch, cfg.progress, follow)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, key=np.array(key), levels=steps.levels, candidates=steps.candidates,
                            classes=steps.classes, image=steps.image,
                            **{f"obs_{k}": v for k, v in steps.observations.items()})
        tmp.replace(path)
    return steps


class CompactChooser(PaperPolicy):
    """A learned chooser that sees only the concept's class and the stats (no feature map): an MLP
    with :class:`PaperPolicy`'s interface (``act``). On a few thousand greedy steps the 4096-value
    feature map lets the paper's network overfit; this one generalizes like a smooth class table."""

    def __init__(self, observation_space: Any, num_levels: int, hidden: Sequence[int] = (128, 128)) -> None:
        torch.nn.Module.__init__(self)
        self.shapes = obs_shapes(observation_space)
        self.num_levels = int(num_levels)
        self.arch = {"hidden": [int(h) for h in hidden], "inputs": ["concept", "stats"]}
        layers: list[torch.nn.Module] = []
        width = self.shapes["concept"][0] + self.shapes["stats"][0]
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        self.mlp = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(width, self.num_levels)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.mlp(torch.cat([obs["concept"], obs["stats"]], 1)))


class ChooserEnsemble(PaperPolicy):
    """Several fitted choosers acting on the mean of their outputs (bagging: lowers the variance of a chooser
    fitted on a few thousand noisy steps)."""

    def __init__(self, members: Sequence[PaperPolicy]) -> None:
        torch.nn.Module.__init__(self)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)
        self.shapes, self.num_levels = members[0].shapes, members[0].num_levels
        self.arch = {"members": len(members), "member": members[0].arch}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([m(obs) for m in self.members]).mean(0)


def fit_compact_ensemble(engine: Engine, steps: GreedySteps, members: int = 5, max_epochs: int = 100,
                         learning_rate: float = 1e-3, batch_size: int = 64, seed: int = 0,
                         device: str | torch.device = "cpu", check_every: int = 10) -> ChooserEnsemble:
    """``members`` :class:`CompactChooser` fitted by reward regression, each on four fifths of the fitting
    images (a different fifth held out per member) and stopped at the epoch of least immediate regret on
    its held-out fifth (checked every ``check_every`` epochs); they act on their mean output."""
    fitted = []
    for k in range(members):
        train_rows, val_rows = held_out_split(steps, seed + 1 + k)
        fitted.append(fit_policy(engine, steps.subset(train_rows), max_epochs, learning_rate, batch_size, seed + k,
                                 device, objective="reward_regression", network="compact",
                                 validation=steps.subset(val_rows), check_every=check_every))
    return ChooserEnsemble(fitted).eval()


def best_uniform_level(engine: Engine, num_images: int, batch: int = 96) -> tuple[int, dict[str, float]]:
    """q*, the fixed level of highest mean return (eq. 14 summed) on the first ``num_images`` training images, and
    every fixed level's mean return there."""
    q = engine.num_levels
    uniform = evaluate(engine, {f"fixed_{lv}": FixedPolicy(lv, q) for lv in range(q)}, num_images, split="train",
                       batch_size=batch, greedy=False)
    returns = {f"fixed_{lv}": float(uniform[f"fixed_{lv}"]["return_mean"]) for lv in range(q)}
    return max(range(q), key=lambda lv: returns[f"fixed_{lv}"]), returns


def fit_deployed_class_table(engine: Engine, train_images: int = 300, uniform_images: int = 100, batch: int = 96,
                             progress: bool = False) -> tuple[ClassTable, int]:
    """The class table as the diagnostic deploys it: q* on the first ``uniform_images`` training images, then
    every level's immediate reward (eq. 14) along q*'s episodes on the first ``train_images``, and per (class,
    size bucket) the level of least mean regret (:func:`agents.class_table.fit_class_table`). Returns the table
    and q*."""
    if engine.num_images("train") < max(train_images, uniform_images):
        raise ValueError(f"the train split has {engine.num_images('train')} images, "
                         f"{max(train_images, uniform_images)} asked for")
    q_star, _ = best_uniform_level(engine, uniform_images, batch)
    follow, _ = collect_greedy_steps(engine, "train", range(train_images), batch, progress, follow=q_star)
    return table_of(follow), q_star


def class_table(steps: GreedySteps) -> dict[int, int]:
    """Per concept class, the level of least mean immediate regret on ``steps``."""
    regret = steps.candidates.max(1, keepdims=True) - steps.candidates
    return {int(c): int(regret[steps.classes == c].mean(0).argmin()) for c in np.unique(steps.classes)}


def table_of(steps: GreedySteps) -> ClassTable:
    """:func:`agents.class_table.fit_class_table` on greedy's steps (share = ``stats[0]``)."""
    return fit_class_table(steps.classes, steps.observations["stats"][:, 0], steps.candidates)


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = 10000, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, float]:
    """Mean of the per-image differences a - b and its BCa bootstrap confidence interval (scipy)."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if diff.ndim != 1 or len(diff) < 2:
        raise ValueError("need at least two paired values")
    if np.all(diff == diff[0]):
        return {"mean": float(diff[0]), "low": float(diff[0]), "high": float(diff[0]), "n": len(diff)}
    res = stats.bootstrap((diff,), np.mean, n_resamples=resamples, confidence_level=confidence, method="BCa",
                          random_state=np.random.default_rng(seed))
    return {"mean": float(diff.mean()), "low": float(res.confidence_interval.low),
            "high": float(res.confidence_interval.high), "n": len(diff)}


def signal_gate(per_step: Mapping[str, Mapping[str, float]], episodes: Mapping[str, Mapping[str, Any]],
                learned: Sequence[str], resamples: int = 10000, seed: int = 0,
                cross_validation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The gate of the module docstring from the per-step scores and the test episodes (with ``returns``).
    With ``cross_validation`` (:func:`cross_validated_scores`), the share of regret removed is the
    cross-validated one over all training images; otherwise the held-out fifth's."""
    fixed = [n for n in episodes if n.startswith("fixed_")]
    best_fixed = max(fixed, key=lambda n: episodes[n]["return_mean"])
    ci = paired_difference(episodes["class_table"]["returns"], episodes[best_fixed]["returns"], resamples, seed)
    if cross_validation is not None:
        shares = cross_validation["regret_reduction"]
        fixed_regret = cross_validation["per_step"][cross_validation["best_fixed"]]["regret"]
        reduction = {n: shares[n]["share"] for n in ("class_table", *learned)}
        intervals = {n: [shares[n]["low"], shares[n]["high"]] for n in ("class_table", *learned)}
    else:
        fixed_regret = min(per_step[n]["regret"] for n in per_step if n.startswith("fixed_"))
        reduction = {n: (1.0 - per_step[n]["regret"] / fixed_regret if fixed_regret > 0 else float("nan"))
                     for n in ("class_table", *learned)}
        intervals = None
    best_learned = max(learned, key=lambda n: reduction[n])
    return {"best_fixed_return": best_fixed, "class_table_minus_best_fixed": ci,
            "class_table_beats_best_fixed": bool(ci["low"] > 0),
            "regret_measured_on": (f"{cross_validation['folds']}-fold cross-validation over "
                                   f"{cross_validation['images']} training images" if cross_validation is not None
                                   else "the held-out fifth of the training images"),
            "best_fixed_step_regret": fixed_regret, "regret_reduction": reduction,
            "regret_reduction_ci": intervals, "best_learned": best_learned,
            "learned_removes_40pct": bool(reduction[best_learned] >= GATE_REGRET_REDUCTION),
            "passed": bool(ci["low"] > 0 and reduction[best_learned] >= GATE_REGRET_REDUCTION)}


def term_ranges(episodes: Mapping[str, Mapping[str, Any]], lam: float, eta: float) -> dict[str, float]:
    """How much each term of eq. 13 moves from every concept at level 0 to every concept at the highest level
    (test-image means): lam * bpp, L_S and eta * L_P; what the reward weights trade against each other."""
    fixed = sorted((n for n in episodes if n.startswith("fixed_")), key=lambda n: int(n.split("_")[1]))
    low, high = episodes[fixed[0]], episodes[fixed[-1]]
    return {"rate": lam * (high["bpp_mean"] - low["bpp_mean"]),
            "semantic": low["semantic_loss_mean"] - high["semantic_loss_mean"],
            "perceptual": eta * (low["perceptual_loss_mean"] - high["perceptual_loss_mean"])}


def uniform_optimum_by_lam(episodes: Mapping[str, Mapping[str, Any]], eta: float,
                           grid: Sequence[float] = tuple(np.round(np.arange(0, 5.001, 0.01), 2))) -> list[dict[str, float]]:
    """The best uniform level as a function of the rate weight lam (eta fixed): a fixed level's final bpp, L_S and
    L_P do not depend on lam, so its return L(0) - L_final is linear in lam. Returns the lam intervals of the grid
    with their best level: ``[{"lam_from", "lam_to", "level"}, ...]``."""
    fixed = sorted((n for n in episodes if n.startswith("fixed_")), key=lambda n: int(n.split("_")[1]))
    base = episodes[fixed[0]]
    rows: list[dict[str, float]] = []
    for lam in grid:
        returns = [-lam * (episodes[n]["bpp_mean"] - base["bpp_mean"])
                   + (base["semantic_loss_mean"] - episodes[n]["semantic_loss_mean"])
                   + eta * (base["perceptual_loss_mean"] - episodes[n]["perceptual_loss_mean"]) for n in fixed]
        level = int(np.argmax(returns))
        if rows and rows[-1]["level"] == level:
            rows[-1]["lam_to"] = float(lam)
        else:
            rows.append({"lam_from": float(lam), "lam_to": float(lam), "level": level})
    return rows


def step_scores(steps: GreedySteps, chosen: np.ndarray) -> dict[str, float]:
    """Accuracy against greedy's level and mean immediate regret of levels ``chosen`` per step."""
    chosen = np.asarray(chosen, np.int64)
    return {"accuracy": float((chosen == steps.levels).mean()), "regret": float(step_regrets(steps, chosen).mean())}


def fit_policy(engine: Engine, steps: GreedySteps, epochs: int, learning_rate: float, batch_size: int,
               seed: int, device: str | torch.device = "cpu", progress: bool = False,
               objective: Literal["cross_entropy", "reward_regression"] = "cross_entropy",
               network: Literal["paper", "compact"] = "paper", validation: GreedySteps | None = None,
               check_every: int = 10) -> PaperPolicy:
    """:class:`PaperPolicy` fitted to greedy's steps: ``cross_entropy`` on greedy's levels (behaviour
    cloning), or ``reward_regression``: the logits regress every level's immediate reward (minus
    the step's best, over the standard deviation of all these differences; squared error), so the argmax is the level of
    best expected reward given the observation (a full-information contextual bandit). ``network="compact"`` fits a
    :class:`CompactChooser`. With ``validation`` steps, the weights of least immediate regret on them (checked before
    training and every ``check_every`` epochs) are kept: early stopping."""
    if objective not in ("cross_entropy", "reward_regression"):
        raise ValueError(f"objective must be 'cross_entropy' or 'reward_regression', not {objective!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if network not in ("paper", "compact"):
        raise ValueError(f"network must be 'paper' or 'compact', not {network!r}")
    policy = (PaperPolicy(engine.observation_space, engine.num_levels) if network == "paper"
              else CompactChooser(engine.observation_space, engine.num_levels)).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate)
    inputs = obs_to_tensors(steps.observations, policy.shapes, device)
    targets = torch.as_tensor(steps.levels, device=device)
    relative = steps.candidates - steps.candidates.max(1, keepdims=True)
    rewards = torch.as_tensor(relative / max(float(relative.std()), 1e-12), dtype=torch.float32, device=device)
    best = None if validation is None else (step_scores(validation, policy.act(validation.observations))["regret"],
                                            copy.deepcopy(policy.state_dict()))
    policy.train()
    for epoch in tqdm(range(1, epochs + 1), desc=f"fit ({objective})", unit="epoch", disable=not progress):
        order = rng.permutation(len(steps))
        for start in range(0, len(order), batch_size):
            rows = torch.as_tensor(order[start:start + batch_size], device=device)
            logits = policy({k: v[rows] for k, v in inputs.items()})
            if objective == "cross_entropy":
                loss = torch.nn.functional.cross_entropy(logits, targets[rows])
            else:
                loss = torch.nn.functional.mse_loss(logits, rewards[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if best is not None and epoch % check_every == 0:
            regret = step_scores(validation, policy.act(validation.observations))["regret"]
            if regret < best[0]:
                best = (regret, copy.deepcopy(policy.state_dict()))
    if best is not None:
        policy.load_state_dict(best[1])
    policy.eval()
    return policy


LEARNED_CHOOSERS = ("imitation", "reward_fit", "compact_fit", "compact_ensemble")
"""The fitted policies of step 2 (the gate's candidates for the 40% share)."""


def held_out_choices(engine: Engine, fit: GreedySteps, follow_fit: GreedySteps, held: GreedySteps,
                     cfg: "LearnabilityConfig", device: str | torch.device
                     ) -> tuple[dict[str, np.ndarray], dict[str, PaperPolicy]]:
    """Every chooser of step 2 fitted on ``fit`` (greedy's steps) and ``follow_fit`` (q*'s steps, for the class
    table), and the level each chooses on the ``held`` steps; also the fitted policies by name."""
    q = engine.num_levels
    table = class_table(fit)
    greedy_table = table_of(fit)
    size_table = table_of(follow_fit)
    policies: dict[str, PaperPolicy] = {
        name: fit_policy(engine, fit, cfg.epochs, cfg.learning_rate, cfg.batch_size, cfg.seed, device, cfg.progress,
                         objective, network)
        for name, objective, network in (("imitation", "cross_entropy", "paper"),
                                         ("reward_fit", "reward_regression", "paper"),
                                         ("compact_fit", "reward_regression", "compact"))}
    policies["compact_ensemble"] = fit_compact_ensemble(engine, fit, seed=cfg.seed, device=device,
                                                        max_epochs=max(cfg.epochs, 10) * 3)
    fallback = int(np.bincount(fit.levels, minlength=q).argmax())  # greedy's most frequent level
    shares = held.observations["stats"][:, 0]
    choices: dict[str, np.ndarray] = {"greedy": held.levels}
    for level in range(q):
        choices[f"fixed_{level}"] = np.full(len(held), level)
    choices["class_table"] = size_table.choose(held.classes, shares)
    choices["class_table_greedy"] = greedy_table.choose(held.classes, shares)
    choices["class_only"] = np.array([table.get(int(c), fallback) for c in held.classes], np.int64)
    choices["majority_level"] = np.full(len(held), fallback)
    for name, policy in policies.items():
        choices[name] = np.asarray(policy.act(held.observations, deterministic=True), np.int64)
    return choices, policies


def step_regrets(steps: GreedySteps, chosen: np.ndarray) -> np.ndarray:
    """Immediate regret (best level's r minus the chosen level's r, eq. 14) of every step."""
    return steps.candidates.max(1) - steps.candidates[np.arange(len(steps)), np.asarray(chosen, np.int64)]


def regret_share_ci(images: np.ndarray, regret: np.ndarray, reference: np.ndarray, resamples: int = 10000,
                    seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Share of the ``reference`` chooser's total immediate regret that a chooser's ``regret`` removes,
    1 - sum(regret) / sum(reference), with a percentile bootstrap interval that resamples images (the
    steps of one image are not independent)."""
    ids, per_image = np.unique(images, return_inverse=True)
    ours = np.bincount(per_image, weights=regret, minlength=len(ids))
    ref = np.bincount(per_image, weights=reference, minlength=len(ids))
    if ref.sum() <= 0:  # the reference never loses anything: no regret to remove
        return {"share": float("nan"), "low": float("nan"), "high": float("nan"), "images": int(len(ids))}
    share = 1.0 - ours.sum() / ref.sum()
    counts = np.random.default_rng(seed).multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=resamples)
    boot = 1.0 - (counts @ ours) / np.maximum(counts @ ref, 1e-300)
    tail = (1.0 - confidence) / 2.0
    return {"share": float(share), "low": float(np.quantile(boot, tail)), "high": float(np.quantile(boot, 1 - tail)),
            "images": int(len(ids))}


def image_folds(steps: GreedySteps, folds: int, seed: int) -> list[np.ndarray]:
    """The cross-validation folds: the steps' images, shuffled with ``seed``, in ``folds`` near-equal groups."""
    return np.array_split(np.random.default_rng(seed).permutation(np.unique(steps.image)), folds)


def cross_validated_scores(engine: Engine, steps: GreedySteps, follow: GreedySteps, cfg: "LearnabilityConfig",
                           device: str | torch.device) -> dict[str, Any]:
    """Step 2 repeated over ``cfg.cv_folds`` folds of the training images: each fold is held out once, every
    chooser is fitted on the other folds (greedy's steps; q*'s steps for the class table), so every greedy step
    of every image is scored once, by choosers that never saw its image. Per chooser: accuracy and regret over
    all steps, and the share of the best fixed level's regret it removes with an image-bootstrap interval."""
    images = np.unique(steps.image)
    folds = image_folds(steps, cfg.cv_folds, cfg.seed)
    chosen: dict[str, np.ndarray] = {}
    for k, held_images in enumerate(folds):
        test = np.isin(steps.image, held_images)
        held = steps.subset(np.flatnonzero(test))
        follow_fit = follow.subset(np.flatnonzero(~np.isin(follow.image, held_images)))
        choices, _ = held_out_choices(engine, steps.subset(np.flatnonzero(~test)), follow_fit, held, cfg, device)
        for name, levels in choices.items():
            chosen.setdefault(name, np.zeros(len(steps), np.int64))[test] = levels
    per_step = {name: step_scores(steps, levels) for name, levels in chosen.items()}
    fixed = [n for n in per_step if n.startswith("fixed_")]
    best_fixed = min(fixed, key=lambda n: per_step[n]["regret"])
    reference = step_regrets(steps, chosen[best_fixed])
    shares = {name: regret_share_ci(steps.image, step_regrets(steps, chosen[name]), reference, cfg.bootstrap,
                                    cfg.seed)
              for name in ("class_table", "class_table_greedy", "class_only", *LEARNED_CHOOSERS)}
    best_learned = max(LEARNED_CHOOSERS, key=lambda n: shares[n]["share"])
    return {"folds": cfg.cv_folds, "images": int(len(images)), "steps": int(len(steps)), "per_step": per_step,
            "best_fixed": best_fixed, "regret_reduction": shares, "best_learned": best_learned}


def held_out_split(steps: GreedySteps, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the fitting images and of the held-out fifth of the images (split by image)."""
    images = np.unique(steps.image)
    held = np.random.default_rng(seed).permutation(images)[:max(1, len(images) // 5)]
    test = np.isin(steps.image, held)
    return np.flatnonzero(~test), np.flatnonzero(test)


def run(cfg: LearnabilityConfig, engine: Engine | None = None) -> dict[str, Any]:
    """The whole diagnostic; returns (and writes with ``cfg.json``) the report. ``engine``: an
    already built codec, task and data (default: built from ``cfg``)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    if engine is None:
        engine = make_engine(cfg, cfg.task, device)
    for split, wanted in (("train", cfg.train_images), ("test", cfg.eval_images)):
        if engine.num_images(split) < wanted:
            raise ValueError(f"the {split} split has {engine.num_images(split)} images, {wanted} asked for")
    q = engine.num_levels
    steps = cached_greedy_steps(engine, cfg)
    fit_rows, test_rows = held_out_split(steps, cfg.seed)
    fit, held = steps.subset(fit_rows), steps.subset(test_rows)
    # the best uniform level q* on training images, and every level's immediate reward along its episodes: the
    # one-step deviations from q* that the class table is fitted on (one step of policy improvement over q*)
    q_star, uniform_returns = best_uniform_level(engine, min(cfg.uniform_images, cfg.train_images), cfg.batch)
    follow = cached_greedy_steps(engine, cfg, follow=q_star)
    follow_fit = follow.subset(np.flatnonzero(~np.isin(follow.image, np.unique(held.image))))
    choices, policies = held_out_choices(engine, fit, follow_fit, held, cfg, device)
    per_step = {name: step_scores(held, chosen) for name, chosen in choices.items()}
    cross_validation = (cross_validated_scores(engine, steps, follow, cfg, device) if cfg.cv_folds >= 2 else None)

    acts = {name: _act_fn(policy) for name, policy in policies.items()}
    deployed_table = table_of(follow)  # every image's steps (the held-out fifth served only the per-step scores)
    acts["class_table"] = deployed_table
    acts["class_table_greedy"] = table_of(steps)
    episodes = evaluate(engine, {**acts, **{k: v for k, v in baseline_policies(q, cfg.seed).items() if k != "random"}},
                        cfg.eval_images, batch_size=cfg.batch, greedy=True, oracle_cap=0, keep_returns=True)
    gate = signal_gate(per_step, episodes, list(policies), cfg.bootstrap, cfg.seed, cross_validation)
    best_fixed = min([f"fixed_{level}" for level in range(q)], key=lambda k: per_step[k]["regret"])
    report = {
        "config": asdict(cfg),
        "task": engine.task.name,
        "metric": engine.metric_name,
        "num_levels": q,
        "weights": engine.weight_hashes(),  # what a class table loaded from this report is matched against
        "greedy_steps": {"fit": len(fit), "held_out": len(held),
                         "fit_images": int(len(np.unique(fit.image))), "held_out_images": int(len(np.unique(held.image))),
                         "level_histogram": np.bincount(steps.levels, minlength=q).tolist()},
        "uniform_on_train": {"images": min(cfg.uniform_images, cfg.train_images), "best_level": q_star,
                             "returns": uniform_returns},
        "class_table": deployed_table.to_json(),
        "class_only_table": {str(k): v for k, v in sorted(class_table(fit).items())},
        "gate": gate,
        "term_ranges": term_ranges(episodes, cfg.lam, cfg.eta),
        "best_uniform_by_lam": uniform_optimum_by_lam(episodes, cfg.eta),
        "per_step": per_step,
        "cross_validation": cross_validation,
        "best_fixed_by_regret": best_fixed,
        "regret_vs_best_fixed": {name: per_step[name]["regret"] - per_step[best_fixed]["regret"]
                                 for name in ("class_table", "class_table_greedy", *policies)},
        "episodes": episodes,
        "gap_closure": {name: gap_closure({**episodes, "policy": episodes[name]}, "return_mean")
                        for name in (*policies, "class_table", "class_table_greedy")},
        "seconds": time.perf_counter() - t0,
    }
    if cfg.json:
        write_json(Path(cfg.json), report)  # atomic; NaN -> null
    return report


def _act_fn(policy: PaperPolicy) -> Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray]:
    return lambda obs, slots: policy.act(obs, deterministic=True)


def gate_summary(report: Mapping[str, Any]) -> str:
    """One paragraph: the signal gate's two conditions and its verdict."""
    g = report["gate"]
    ci = g["class_table_minus_best_fixed"]
    cis = g.get("regret_reduction_ci") or {}
    red = ", ".join(f"{k} {v:.1%}" + (f" [{cis[k][0]:.1%}, {cis[k][1]:.1%}]" if k in cis else "")
                    for k, v in g["regret_reduction"].items())
    return (f"signal gate ({report['task']}): class table minus {g['best_fixed_return']} in return per test image "
            f"{ci['mean']:+.4f} [95% CI {ci['low']:+.4f}, {ci['high']:+.4f}] over {ci['n']} images "
            f"({'beats' if g['class_table_beats_best_fixed'] else 'does NOT beat'} the best fixed level); "
            f"share of the best fixed level's immediate regret removed ({g.get('regret_measured_on', 'held out')}): "
            f"{red} "
            f"({'>=' if g['learned_removes_40pct'] else '<'} 40% for {g['best_learned']}); "
            f"gate {'PASSED' if g['passed'] else 'FAILED'}")


def markdown(report: Mapping[str, Any]) -> str:
    """Per-step scores on the held-out greedy states and returns on the test images."""
    lines = ["| chooser | accuracy vs greedy | immediate regret |", "|---|---|---|"]
    for name, s in report["per_step"].items():
        lines.append(f"| {name} | {s['accuracy']:.3f} | {s['regret']:.4f} |")
    return "\n".join(lines) + "\n\n" + results_table(report["episodes"], report["metric"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import tyro

    cfg = tyro.cli(LearnabilityConfig, args=None if argv is None else list(argv))
    report = run(cfg)
    print(markdown(report))
    diffs = ", ".join(f"{k} {v:+.4f}" for k, v in report["regret_vs_best_fixed"].items())
    print(f"immediate regret minus that of the best fixed level ({report['best_fixed_by_regret']}): {diffs}; "
          f"done in {report['seconds']:.0f} s")
    print(gate_summary(report))
    return report


if __name__ == "__main__":
    main()
