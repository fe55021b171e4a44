"""The public engine API: running episodes of the RL-ASC MDP in batches, image by image in a fixed order.

Agents, baselines and the harness drive :class:`rlasc_env.env.EpisodeCore` (the batched engine behind
``SemanticCodingEnv`` and ``BatchedSemanticCodingEnv``) through this module only. :func:`make_engine` builds an
:class:`Engine` from a registered id and its options through :func:`rlasc_env.registration.resolve_env`, the same
path as ``gym.make``, so the id's pins are checked. The module:
``reset`` a set of slots with chosen data set images, ``step`` only the slots whose episode
is still running, read observations. One env step = one concept coded (Algorithm 2, lines
5-10); one episode = one image.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from codec_models.codec import Analysis

from .env import NUM_STATS, EnvParts, EpisodeCore, build_parts, load_items, observation_space, stats_size
from .preview import STAKE_FLOOR, level_preview, preview_entries, preview_size
from .registration import CURRENT_ID, resolve_env
from .versions import check_pins, with_pinned_weights

__all__ = ["EnvSpec", "EpisodeRecord", "Engine", "ActFn", "ACTION_MASK", "copy_slot", "run_episodes", "run_copies",
           "reset_slots", "make_engine", "record_from", "EpisodeCore", "EnvParts", "build_parts", "load_items",
           "observation_space",
           "NUM_STATS", "stats_size", "STAKE_FLOOR", "level_preview", "preview_entries", "preview_size"]

# act(observation of the live slots, live slot ids) -> levels (one per live slot)
ActFn = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]
"""A batched policy: (observation dict of k slots, the k slot ids) -> k levels. In the rate-budget mode the
runners add ``obs[ACTION_MASK]``, bool (k, Q): the levels the budget allows (level 0 always); a level outside it
raises ``ValueError`` in the core's step."""
ACTION_MASK = "action_mask"


@dataclass
class EnvSpec:
    """What the environment is built from (the keyword arguments of ``SemanticCodingEnv``)."""

    task: Any = "segmentation"
    codec: Any = "tiny"
    lam: float = 1.0
    eta: float = 10.0
    dataset: str = "streets"
    data_root: str | None = None
    preset: str = "tiny"
    reference: str = "ground_truth"
    device: str = "cpu"
    task_kwargs: dict[str, Any] | None = None
    images: dict[str, Any] = field(default_factory=dict)  # split -> data set used instead of loading one
    sizes: dict[str, int] = field(default_factory=dict)  # split -> load only its first N images
    preview: bool = False  # the observation carries the level preview (rlasc_env.preview)
    pins: dict[str, Any] | None = None  # the id's pins (make_engine): checked when the engine loads its files
    env_id: str | None = None  # the registered id this spec was resolved from (None: a custom environment)
    bpp_budget: float | None = None  # rate-budget mode of every episode (docs/benchmark.md); None: off

    def env_kwargs(self, split: str) -> dict[str, Any]:
        """Keyword arguments for ``SemanticCodingEnv`` / ``BatchedSemanticCodingEnv`` on ``split``
        (``sizes`` is applied by :class:`Engine`, which loads the data sets)."""
        return {"task": self.task, "split": split, "lam": self.lam, "eta": self.eta, "codec": self.codec,
                "dataset": self.dataset, "data_root": self.data_root, "preset": self.preset,
                "reference": self.reference, "device": self.device, "images": self.images.get(split),
                "task_kwargs": self.task_kwargs, "observation": "preview" if self.preview else "paper",
                "bpp_budget": self.bpp_budget}


@dataclass
class EpisodeRecord:
    """One finished episode (one image): its return and the final state's terms (eq. 13-14)."""

    image_index: int
    rewards: list[float]
    levels: list[int]  # level chosen per step, in coding order
    concepts: list[int]  # class id coded per step
    bits: int
    bpp: float
    semantic_loss: float
    perceptual_loss: float
    loss: float
    metric: float
    normalized_score: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))

    @property
    def length(self) -> int:
        return len(self.rewards)


class Engine:
    """The codec, task and both data splits, loaded once; makes batched cores of any size."""

    def __init__(self, spec: EnvSpec) -> None:
        self.spec = spec
        if spec.pins is not None:
            check_pins(spec.pins, spec.codec, spec.task, spec.dataset, None)  # the id's own files (weights from pins)
        first = build_parts(**self._part_kwargs(spec.task, spec.codec, "train"))
        self._parts: dict[str, EnvParts] = {"train": first}
        self.codec, self.task = first.codec, first.task
        self.observation_space = observation_space(self.codec, first.height, first.width, spec.preview)
        self.num_levels = int(self.codec.num_levels)
        self.metric_name = str(self.task.metric_name)
        self.device = self.codec.device

    def _part_kwargs(self, task: Any, codec: Any, split: str) -> dict[str, Any]:
        s = self.spec
        images = s.images.get(split)
        if images is None and split in s.sizes:
            from codec_models.datasets import load_dataset

            extra = {} if s.data_root is None else {"root": s.data_root}
            images = load_dataset(s.dataset, split=split, preset=s.preset, size=int(s.sizes[split]), **extra)
        return {"task": task, "split": split, "codec": codec, "dataset": s.dataset, "data_root": s.data_root,
                "preset": s.preset, "reference": s.reference, "device": s.device, "images": images,
                "task_kwargs": s.task_kwargs, "preview": s.preview}

    def parts(self, split: str) -> EnvParts:
        """Codec, task and images of ``split`` (codec and task shared by all splits)."""
        if split not in self._parts:
            self._parts[split] = build_parts(**self._part_kwargs(self.task, self.codec, split))
        return self._parts[split]

    def num_images(self, split: str) -> int:
        return len(self.parts(split).images)

    def core(self, split: str, num_slots: int) -> EpisodeCore:
        """An :class:`EpisodeCore` of ``num_slots`` slots on ``split``; with the spec's ``bpp_budget``, every episode
        it resets is in the rate-budget mode (unless a reset gives its own budget)."""
        return EpisodeCore(self.parts(split), num_slots, self.spec.lam, self.spec.eta, bpp_budget=self.spec.bpp_budget)

    def weight_hashes(self) -> dict[str, str | None]:
        """sha256 of the codec and task-network files this engine runs (None for an in-process network):
        what a report fitted on it (a class table) must be matched against, beyond names."""
        from rlasc_env.versions import file_sha256

        codec_path = None
        if isinstance(self.spec.codec, str):
            from codec_models.checkpoint import resolve_codec_path

            codec_path = resolve_codec_path(self.spec.codec)
        return {"codec_sha256": file_sha256(codec_path) if codec_path is not None else None,
                "task_sha256": file_sha256(self.task.weights) if self.task.weights else None}

    def env_kwargs(self, split: str) -> dict[str, Any]:
        """Env keyword arguments reusing the loaded codec, task and images."""
        parts = self.parts(split)
        return {**self.spec.env_kwargs(split), "codec": self.codec, "task": self.task, "images": parts.images}


def make_engine(env_id: str = CURRENT_ID, *, task: str = "segmentation", observation: str | None = None,
                lam: float = 1.0, eta: float = 10.0, device: str = "cpu", sizes: dict[str, int] | None = None,
                bpp_budget: float | None = None) -> Engine:
    """The :class:`Engine` of a registered id and its options, resolved like ``gym.make(env_id, ...)`` (pins checked);
    ``sizes`` (split -> N) loads only the first N images of a split; ``bpp_budget``: the rate-budget mode."""
    options: dict[str, Any] = {"task": task, "lam": lam, "eta": eta, "device": str(device), "bpp_budget": bpp_budget}
    if observation is not None:
        options["observation"] = observation
    config = resolve_env(env_id, **options)
    kwargs = config.env_kwargs()
    pins = kwargs["pins"]
    spec = EnvSpec(task=config.task, codec=kwargs["codec"], lam=config.lam, eta=config.eta, dataset=kwargs["dataset"],
                   preset=kwargs["preset"], reference=kwargs["reference"], device=config.device,
                   task_kwargs=with_pinned_weights(pins, config.task, None), sizes=dict(sizes or {}),
                   preview=config.observation == "preview", pins=pins, env_id=env_id, bpp_budget=config.bpp_budget)
    return Engine(spec)


def reset_slots(core: EpisodeCore, images: Any, slots: np.ndarray, indices: Sequence[int],
                bpp_budget: Any = None) -> dict[str, np.ndarray]:
    """Start the episodes of ``slots`` on data set images ``indices`` (Algorithm 2, line 3); ``bpp_budget``: the
    rate-budget mode of :meth:`EpisodeCore.reset` (None: off)."""
    batch, labels = load_items(images, list(indices))
    return core.reset(np.asarray(slots, np.int64), batch, labels, np.asarray(indices, np.int64),
                      bpp_budget=bpp_budget)


def record_from(info: dict[str, np.ndarray], final: dict[str, np.ndarray], row: int, final_row: int,
                metric_name: str, image_index: int, rewards: list[float], levels: list[int],
                concepts: list[int]) -> EpisodeRecord:
    """An :class:`EpisodeRecord` from the core's last-step info (row ``row``) and end-of-episode arrays."""
    return EpisodeRecord(image_index=int(image_index), rewards=list(rewards), levels=list(levels),
                         concepts=list(concepts), bits=int(info["bits"][row]), bpp=float(info["bpp"][row]),
                         semantic_loss=float(info["semantic_loss"][row]),
                         perceptual_loss=float(info["perceptual_loss"][row]), loss=float(info["loss"][row]),
                         metric=float(info[metric_name][row]),
                         normalized_score=float(final["normalized_score"][final_row]))


def run_episodes(core: EpisodeCore, images: Any, indices: Sequence[int], act: ActFn,
                 metric_name: str) -> list[EpisodeRecord]:
    """Play one episode per image of ``indices`` (in chunks of ``core.num_slots``) with ``act``;
    records in the order of ``indices``."""
    return run_copies(core, images, indices, [act], metric_name)[0]


def run_copies(core: EpisodeCore, images: Any, indices: Sequence[int], acts: Sequence[ActFn],
               metric_name: str) -> list[list[EpisodeRecord]]:
    """Play every image of ``indices`` once per entry of ``acts`` (``records[p][i]``: copy p, image i).

    Each image is reset once (the encoder pass and the per-concept caches of Algorithm 2, line 3)
    and its state copied into one slot per copy (:func:`copy_slot`); the copies then step
    together, so P policies cost one reset per image. An act function that appears several
    times (e.g. R stochastic rollouts of one policy) is called once per step for all its slots.
    """
    copies = len(acts)
    if copies < 1:
        raise ValueError("give at least one policy")
    per_chunk = core.num_slots // copies
    if per_chunk < 1:
        raise ValueError(f"{copies} copies per image need a core with at least {copies} slots, got {core.num_slots}")
    groups: dict[int, list[int]] = {}
    for p, fn in enumerate(acts):
        groups.setdefault(id(fn), []).append(p)
    out: list[list[EpisodeRecord]] = [[] for _ in range(copies)]
    indices = [int(i) for i in indices]
    for start in range(0, len(indices), per_chunk):
        chunk = indices[start:start + per_chunk]
        base = np.arange(len(chunk)) * copies
        reset_slots(core, images, base, chunk)
        empty = [chunk[g] for g in np.flatnonzero(core.count[base] == 0).tolist()]
        if empty:
            raise RuntimeError(f"images {empty} have no semantic concept: an episode needs at least one step")
        for g, b in enumerate(base.tolist()):
            copy_slot(core, b, b + np.arange(1, copies))
        slots = np.arange(len(chunk) * copies)
        copy_of = slots % copies
        image_of = [chunk[s // copies] for s in slots.tolist()]
        rewards: list[list[float]] = [[] for _ in slots]
        levels: list[list[int]] = [[] for _ in slots]
        concepts: list[list[int]] = [[] for _ in slots]
        done: dict[int, EpisodeRecord] = {}
        live = slots
        while len(live):
            actions = np.zeros(len(live), np.int64)
            for members in groups.values():
                rows = np.flatnonzero(np.isin(copy_of[live], members))
                if not len(rows):
                    continue
                act = acts[members[0]]
                # a policy that ignores the observation (fixed levels, random) is not given one: -v4's preview
                # costs a decoder pass per level
                obs = (core.observation(live[rows]) if getattr(act, "needs_observation", True)
                       else core.zero_observation(len(rows)))
                if (core.budget_bits[live[rows]] >= 0).any():  # rate-budget mode: the levels allowed
                    obs[ACTION_MASK] = core.action_mask(live[rows])
                chosen = np.asarray(act(obs, live[rows]), np.int64).reshape(-1)
                if chosen.shape != (len(rows),):
                    raise ValueError(f"policy returned {chosen.shape[0]} actions for {len(rows)} envs")
                actions[rows] = chosen
            reward, terminated, info, final = core.step(live, actions)
            for r, slot in enumerate(live.tolist()):
                rewards[slot].append(float(reward[r]))
                levels[slot].append(int(actions[r]))
                concepts[slot].append(int(info["concept"][r]))
            for f, r in enumerate(np.flatnonzero(terminated).tolist()):
                slot = int(live[r])
                done[slot] = record_from(info, final, r, f, metric_name, image_of[slot], rewards[slot],
                                         levels[slot], concepts[slot])
            live = live[~terminated]
        for slot in slots.tolist():
            out[int(copy_of[slot])].append(done[slot])
    return out


# --------------------------------------------------------------------------- slot copies
_SHARED = frozenset({"codec", "task", "generator", "phi", "parts"})


@torch.inference_mode()
def copy_slot(core: EpisodeCore, src: int, dst: Sequence[int] | np.ndarray) -> None:
    """Make slots ``dst`` exact copies of slot ``src`` (episode state, caches, references).

    Copies every per-slot array of the core: NumPy arrays and tensors whose first dimension is
    the number of slots, the fields of the cached :class:`Analysis` (``quantized`` has the slot
    in dimension 1), the lists of per-slot tensors (SPADE modulations, phi features) and the
    per-slot task references. Checked against replaying the episode prefix in
    ``tests/test_agents.py``.
    """
    dst = np.asarray(dst, np.int64).reshape(-1)
    if not len(dst):
        return
    s = core.num_slots
    if src < 0 or src >= s or (dst < 0).any() or (dst >= s).any():
        raise IndexError(f"slots must be in [0, {s}), got src {src}, dst {dst.tolist()}")
    dst_t = torch.as_tensor(dst, device=core.device)
    for name, value in vars(core).items():
        if name in _SHARED:
            continue
        if name == "refs":
            for d in dst.tolist():
                value[d] = value[src]
        elif isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == s:
            value[dst] = value[src].copy()
        elif isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == s:
            value[dst_t] = value[src].clone()
        elif isinstance(value, Analysis):
            for f in dataclasses.fields(value):
                t = getattr(value, f.name)
                if t is None:
                    continue
                if f.name == "quantized":
                    t[:, dst_t] = t[:, src].unsqueeze(1).clone()
                else:
                    t[dst_t] = t[src].clone()
        elif isinstance(value, list) and value and all(isinstance(t, Tensor) for t in value):
            for t in value:
                if t.shape[0] != s:
                    raise RuntimeError(f"EpisodeCore.{name} holds a tensor of shape {tuple(t.shape)} without the slot "
                                       "dimension first: copy_slot does not know how to copy it")
                t[dst_t] = t[src].clone()
