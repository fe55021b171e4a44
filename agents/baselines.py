"""Baseline bit-allocation policies, evaluated on the same held-out images as the agent.

- ``random``: a uniformly random level per concept (seeded NumPy generator).
- ``fixed_<q>``: level q for every concept; ``fixed_<Q-1>`` (all highest) is the paper's
  "simplified RL-ASC".
- ``greedy``: one-step look-ahead. For the current concept it codes every level on copies of
  the episode state and keeps the level with the best immediate reward r (eq. 14); it peeks at
  rewards, which no deployable policy can.
- ``oracle``: exhaustive search over all Q^K level sequences of an image (K concepts), the
  best return reachable; only where Q^K is at most a cap, otherwise skipped with a reason.
- ``preview_rule``: on ``SemanticCoding-v4``, the level that maximises -rate + w * perceptual of the level preview
  (:mod:`rlasc_env.preview`), the weight w fitted on training images (:func:`fit_preview_rule`): a classic
  encoder's rate-distortion choice on the encoder's own estimate, no learning beyond one number.
- In the rate-budget mode (``obs["action_mask"]``, :data:`rlasc_env.engine.ACTION_MASK`) random draws among the
  allowed levels, ``fixed_<q>`` takes the highest allowed level up to q, the preview rule its best allowed level.
- ``random_search_<k>``: per image, the best of k level sequences drawn uniformly at random
  (a seeded generator per image): the oracle's search with a budget of k episodes. Like greedy
  and the oracle it peeks at every sequence's return.

The look-ahead and the search run on a batched :class:`rlasc_env.env.EpisodeCore`, copying
one slot's state into others (:func:`rlasc_env.engine.copy_slot`, ``method="clone"``), or by
replaying the episode prefix on freshly reset slots (``method="replay"``, slower, the
reference the copy is tested against).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlasc_env.engine import (ACTION_MASK, ActFn, EpisodeCore, EpisodeRecord, copy_slot, preview_entries, record_from,
                              reset_slots)

__all__ = ["RandomPolicy", "FixedPolicy", "PreviewRule", "highest_allowed", "refuse_budget", "fit_preview_rule",
           "greedy_episodes", "oracle_episodes", "OracleSkipped",
           "random_search_episodes"]


class RandomPolicy:
    """A uniformly random level in [0, Q) for every concept, from a seeded generator."""

    needs_observation = False  # run_copies passes zeros instead of computing the observation

    def __init__(self, num_levels: int, seed: int = 0) -> None:
        self.num_levels = int(num_levels)
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        if ACTION_MASK in obs:  # rate-budget mode: uniform over the levels the budget allows
            return np.array([self.rng.choice(np.flatnonzero(row)) for row in obs[ACTION_MASK]], np.int64)
        return self.rng.integers(self.num_levels, size=len(slots)).astype(np.int64)


class FixedPolicy:
    """The same level ``level`` for every concept."""

    needs_observation = False

    def __init__(self, level: int, num_levels: int) -> None:
        if not 0 <= level < num_levels:
            raise ValueError(f"level {level} is not in [0, {num_levels})")
        self.level = int(level)

    def __call__(self, obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        if ACTION_MASK in obs:  # rate-budget mode: the highest allowed level not above ``level``
            return highest_allowed(obs[ACTION_MASK], self.level)
        return np.full(len(slots), self.level, np.int64)


def highest_allowed(mask: np.ndarray, level: int) -> np.ndarray:
    """Per row of ``mask`` (k, Q), the highest allowed level not above ``level`` (level 0 is always allowed)."""
    allowed = np.asarray(mask, bool)[:, :level + 1]
    return (level - allowed[:, ::-1].argmax(1)).astype(np.int64)


PREVIEW_RULE_WEIGHTS = (0.8, 1.1, 1.4, 1.8)
"""The weights :func:`fit_preview_rule` tries by default (train_agent.py's grid)."""


class PreviewRule:
    """argmax_q of -rate_q + ``weight`` * perceptual_q, read off the level preview at the end of the stats
    (``SemanticCoding-v4``; both entries are in reward units over the same stake, so the ratio is kept)."""

    def __init__(self, weight: float, num_levels: int) -> None:
        self.weight, self.num_levels = float(weight), int(num_levels)

    def __call__(self, obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        rate, perceptual = preview_entries(np.asarray(obs["stats"], np.float64), self.num_levels)
        score = -rate + self.weight * perceptual
        if ACTION_MASK in obs:  # rate-budget mode: the best level the budget allows
            score = np.where(obs[ACTION_MASK], score, -np.inf)
        return score.argmax(1).astype(np.int64)


def fit_preview_rule(core: EpisodeCore, images: Any, indices: Sequence[int], metric_name: str,
                     weights: Sequence[float] = PREVIEW_RULE_WEIGHTS) -> tuple[float, dict[float, float]]:
    """The weight of :class:`PreviewRule` with the best mean return on ``indices`` (training images), and the mean
    return of every weight tried; ``core`` needs ``len(weights)`` slots per image played together."""
    from rlasc_env.engine import run_copies

    if not core.preview:
        raise ValueError("the preview rule reads the level preview: build the core on parts with preview=True "
                         "(observation=\"preview\": SemanticCoding-v7 by default, or -v4)")
    records = run_copies(core, images, indices, [PreviewRule(w, core.Q) for w in weights], metric_name)
    returns = {float(w): float(np.mean([r.episode_return for r in recs])) for w, recs in zip(weights, records)}
    return max(returns, key=returns.get), returns


def refuse_budget(core: EpisodeCore, what: str) -> None:
    """``ValueError`` for a search that steps every level (greedy, the oracle, random search) on a core in the
    rate-budget mode, where some levels are masked."""
    if core.default_budget is not None:
        raise ValueError(f"{what} steps every level, and the rate-budget mode (bpp_budget {core.default_budget}) "
                         "masks some: it is not defined there")


# --------------------------------------------------------------------------- greedy
def _greedy_clone(core: EpisodeCore, images: Any, chunk: list[int], metric_name: str,
                  observe: bool = False, follow: int | ActFn | None = None) -> list[EpisodeRecord]:
    q = core.Q
    groups = np.arange(len(chunk))
    base = groups * q
    reset_slots(core, images, base, chunk)
    for g in groups.tolist():
        copy_slot(core, int(base[g]), base[g] + np.arange(1, q))
    rewards: list[list[float]] = [[] for _ in chunk]
    levels: list[list[int]] = [[] for _ in chunk]
    concepts: list[list[int]] = [[] for _ in chunk]
    candidates: list[list[list[float]]] = [[] for _ in chunk]
    observations: list[list[dict[str, np.ndarray]]] = [[] for _ in chunk]
    done: dict[int, EpisodeRecord] = {}
    live = groups[core.count[base] > 0]
    if len(live) < len(groups):
        raise RuntimeError("an image has no semantic concept: an episode needs at least one step")
    while len(live):
        if observe or callable(follow):  # the state every candidate level of this step starts from (Q copies)
            obs = core.observation(base[live])
            for i, g in enumerate(live.tolist() if observe else []):
                observations[g].append({k: v[i] for k, v in obs.items()})
        if callable(follow):  # the policy's levels, chosen before any candidate is stepped
            chosen = np.asarray(follow(obs, base[live]), np.int64).reshape(-1)
        slots = (live[:, None] * q + np.arange(q)[None, :]).reshape(-1)
        reward, terminated, info, final = core.step(slots, np.tile(np.arange(q), len(live)))
        table = reward.reshape(len(live), q)
        if follow is None:
            best = table.argmax(1)  # argmax ties -> the coarsest level
        else:
            best = chosen if callable(follow) else np.full(len(live), follow)
        final_row = np.cumsum(terminated) - 1
        ended = []
        for i, g in enumerate(live.tolist()):
            row = i * q + int(best[i])
            rewards[g].append(float(table[i, best[i]]))
            levels[g].append(int(best[i]))
            concepts[g].append(int(info["concept"][row]))
            candidates[g].append(table[i].tolist())
            if terminated[row]:
                rec = record_from(info, final, row, int(final_row[row]), metric_name, chunk[g], rewards[g], levels[g],
                                  concepts[g])
                rec.extra["candidate_rewards"] = candidates[g]
                if observe:
                    rec.extra["observations"] = observations[g]
                done[g] = rec
                ended.append(i)
            else:
                others = base[g] + np.delete(np.arange(q), best[i])
                copy_slot(core, int(base[g] + best[i]), others)
        live = np.delete(live, ended)
    return [done[g] for g in groups.tolist()]


def _greedy_replay(core: EpisodeCore, images: Any, index: int, metric_name: str) -> EpisodeRecord:
    """Greedy on one image by replaying the chosen prefix on Q freshly reset slots per step."""
    q = core.Q
    slots = np.arange(q)
    chosen: list[int] = []
    rewards: list[float] = []
    concepts: list[int] = []
    candidates: list[list[float]] = []
    while True:
        reset_slots(core, images, slots, [index] * q)
        if core.count[0] == 0:
            raise RuntimeError(f"image {index} has no semantic concept: an episode needs at least one step")
        for level in chosen:
            core.step(slots, np.full(q, level, np.int64))
        reward, terminated, info, final = core.step(slots, np.arange(q))
        best = int(reward.argmax())
        chosen.append(best)
        rewards.append(float(reward[best]))
        concepts.append(int(info["concept"][best]))
        candidates.append(reward.tolist())
        if terminated[best]:
            rec = record_from(info, final, best, best, metric_name, index, rewards, chosen, concepts)
            rec.extra["candidate_rewards"] = candidates
            return rec


def greedy_episodes(core: EpisodeCore, images: Any, indices: Sequence[int], metric_name: str,
                    method: str = "clone", observe: bool = False,
                    follow: int | ActFn | None = None) -> list[EpisodeRecord]:
    """Greedy one-step look-ahead episodes on ``indices`` (records in that order).

    ``core`` needs at least Q slots; with ``method="clone"`` it runs ``num_slots // Q`` images at
    a time. Each record's ``extra["candidate_rewards"]`` holds the immediate reward of every level
    at every step (the chosen one is the maximum); with ``observe`` (clone only), also
    ``extra["observations"]``: the observation of every step, one dict of unbatched arrays each.
    ``follow`` (clone only): play that fixed level, or the levels that policy (an ActFn) picks from each step's
    observation, instead of the best one, still recording every level's immediate reward at every step (the
    one-step deviations from that allocation).
    """
    q = core.Q
    refuse_budget(core, "greedy")
    if core.num_slots < q:
        raise ValueError(f"greedy needs a core with at least Q = {q} slots, got {core.num_slots}")
    indices = [int(i) for i in indices]
    if follow is not None and not callable(follow) and not 0 <= int(follow) < q:
        raise ValueError(f"follow must be a level in [0, {q}) or a policy, got {follow}")
    if method == "replay":
        if observe or follow is not None:
            raise ValueError("observe=True and follow need method='clone'")
        return [_greedy_replay(core, images, i, metric_name) for i in indices]
    if method != "clone":
        raise ValueError(f"method must be 'clone' or 'replay', not {method!r}")
    per_chunk = core.num_slots // q
    out: list[EpisodeRecord] = []
    for start in range(0, len(indices), per_chunk):
        out += _greedy_clone(core, images, indices[start:start + per_chunk], metric_name, observe, follow)
    return out


# --------------------------------------------------------------------------- oracle
@dataclass
class OracleSkipped:
    """Why the exhaustive oracle was not run."""

    reason: str


def oracle_episodes(core: EpisodeCore, images: Any, indices: Sequence[int], lengths: Sequence[int],
                    metric_name: str, cap: int) -> list[EpisodeRecord] | OracleSkipped:
    """The best of all Q^K level sequences per image (exhaustive search), or :class:`OracleSkipped`
    when some image has Q^K > ``cap`` (``lengths`` = K per image, e.g. from a fixed-level run)."""
    refuse_budget(core, "the oracle")
    q = core.Q
    for index, k in zip(indices, lengths):
        if q ** int(k) > cap:
            return OracleSkipped(f"image {index} has K={k} concepts: Q^K = {q}^{k} = {float(q) ** int(k):.3g} "
                                 f"sequences > cap {cap}")
    out: list[EpisodeRecord] = []
    for index, k in zip(indices, lengths):
        sequences = np.array(list(itertools.product(range(q), repeat=int(k))), np.int64)
        out.append(_best_sequence(core, images, index, sequences, metric_name))
    return out


def random_search_episodes(core: EpisodeCore, images: Any, indices: Sequence[int], lengths: Sequence[int],
                           metric_name: str, samples: int, seed: int = 0) -> list[EpisodeRecord]:
    """Per image, the best of ``samples`` level sequences drawn uniformly from [0, Q)^K (``lengths`` = K
    per image). Image i's sequences come from ``numpy.random.default_rng([seed, i])``, so a record does
    not depend on which other images are searched. ``extra["sequences"]`` is ``samples``."""
    refuse_budget(core, "random search")
    if samples < 1:
        raise ValueError(f"random search needs at least one sample, got {samples}")
    out: list[EpisodeRecord] = []
    for index, k in zip(indices, lengths):
        rng = np.random.default_rng([int(seed), int(index)])
        sequences = rng.integers(0, core.Q, (int(samples), int(k))).astype(np.int64)
        out.append(_best_sequence(core, images, index, sequences, metric_name))
    return out


def _best_sequence(core: EpisodeCore, images: Any, index: int, sequences: np.ndarray,
                   metric_name: str) -> EpisodeRecord:
    """Play every row of ``sequences`` (N, K) on image ``index`` from one reset (slot copies, ``num_slots``
    rows at a time) and return the record of the highest return (the first of equal ones)."""
    n, k = sequences.shape
    if k < 1:
        raise RuntimeError(f"image {index} has no semantic concept: an episode needs at least one step")
    best: EpisodeRecord | None = None
    for start in range(0, n, core.num_slots):
        seq = sequences[start:start + core.num_slots]
        rows = np.arange(len(seq))
        reset_slots(core, images, rows[:1], [index])
        if int(core.count[0]) != k:
            raise RuntimeError(f"image {index} has {int(core.count[0])} concepts, not the {k} given")
        copy_slot(core, 0, rows[1:])
        per_step: list[np.ndarray] = []
        concepts: list[int] = []
        for t in range(k):
            reward, terminated, info, final = core.step(rows, seq[:, t])
            per_step.append(reward)
            concepts.append(int(info["concept"][0]))
        rewards_t = np.stack(per_step)  # (K, sequences of this chunk)
        total = rewards_t.sum(0)
        j = int(total.argmax())
        if best is None or total[j] > best.episode_return:  # the first chunk always sets it
            best = record_from(info, final, j, j, metric_name, index, rewards_t[:, j].tolist(), seq[j].tolist(),
                               concepts)
    assert best is not None
    best.extra["sequences"] = n
    return best
