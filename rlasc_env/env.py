"""The MDP of Section II-C as a Gymnasium environment (Algorithm 2, stage II).

:class:`EpisodeCore` holds the per-episode caches of ``num_slots`` images and does the
batched work; :class:`SemanticCodingEnv` is one slot of it with Gymnasium's single-env API,
and :class:`rlasc_env.vector.BatchedSemanticCodingEnv` steps many slots together. Both run
the same code, so they give the same rewards for the same images and actions.

Per episode the encoder runs once (``codec.analyse``). A step codes one concept and rebuilds
x_hat(m) from caches: x_l changes only inside the region of the coded concept (eq. 29, the
concept image y(m, a) of G_l), the merged features are re-selected from the cached quantized
levels, and only G_g + attention (eq. 30-31, with SPADE's label-map branch cached, see
:meth:`GlobalGenerator.modulations`), the task network H and phi run per step. Those network
terms are a function of the image and the levels chosen so far, so they are memoized exactly
(:class:`rlasc_env.memo.TransitionMemo`): a revisited prefix, or a concept coded at level 0
(which leaves x_hat unchanged), costs no network pass.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from codec_models import fast_paths
from codec_models.classes import TRAIN_COLORS, colorize
from codec_models.codec import Analysis, SemanticCodec
from codec_models.device import resolve_device
from codec_models.generators import LocalGenerator
from codec_models.perceptual import feature_distance

from .chunks import network_chunk
from .memo import StepLosses, TransitionMemo, image_key, losses_array
from .preview import level_preview, preview_size, preview_stats
from .registration import check_weight
from .reward import normalized_score, rsp_loss, step_reward
from .tasks import Task, make_task
from .versions import apply_pins

__all__ = ["EpisodeCore", "SemanticCodingEnv", "EnvParts", "build_parts", "check_action", "check_budget", "check_lam",
           "lam_feature", "NUM_STATS"]

NUM_STATS = 8  # length of the "stats" observation, see SemanticCodingEnv
NUM_STATS_V0 = 7  # SemanticCoding-v0 (the first codec): no operating-point entry


def stats_size(codec: SemanticCodec, preview: bool = False) -> int:
    """Length of the "stats" observation for ``codec``: v0's first codec keeps its 7 entries (its results stay
    reproducible), codec v2 (``-v1``) adds the operating point lam; ``preview`` (``-v4``) adds the level preview of
    :mod:`rlasc_env.preview` (1 + 2Q entries)."""
    base = NUM_STATS if codec.level_aware else NUM_STATS_V0
    return base + (preview_size(codec.num_levels) if preview else 0)


# --------------------------------------------------------------------------- components
@dataclass
class EnvParts:
    """What an environment is built from: the frozen codec, the task and the images; ``memo`` holds the
    network terms of the transitions seen so far, shared by every env and core built on these parts."""

    codec: SemanticCodec
    task: Task
    images: Any  # indexable data set of (image (3,H,W) float in [0,1], labels (H,W) int64)
    height: int
    width: int
    memo: TransitionMemo = field(default_factory=TransitionMemo)
    preview: bool = False  # the observation carries the level preview (rlasc_env.preview; SemanticCoding-v4)
    preview_memo: TransitionMemo = field(default_factory=TransitionMemo)  # (image, levels so far) -> preview

    def __post_init__(self) -> None:
        if not self.memo.watch:
            self.memo.watch = [m for m in (self.codec, getattr(self.task, "network", None))
                               if isinstance(m, torch.nn.Module)]
        if not self.preview_memo.watch:
            self.preview_memo.watch = [self.codec]


def build_parts(task: str | Task = "segmentation", split: str = "train", codec: str | os.PathLike | SemanticCodec = "tiny",
                dataset: str = "streets", data_root: str | os.PathLike | None = None, preset: str = "tiny",
                reference: str = "ground_truth", device: str | torch.device = "cpu", images: Any = None,
                task_kwargs: dict[str, Any] | None = None, preview: bool = False) -> EnvParts:
    """Load (or take) the codec, the task and the data set of an environment (``preview``: the observation carries
    the level preview of :mod:`rlasc_env.preview`)."""
    dev = resolve_device(device)
    if isinstance(codec, SemanticCodec):
        codec_obj = codec.to(dev).eval()
    else:
        from codec_models.checkpoint import load_codec

        codec_obj = load_codec(codec, device=dev).eval()
    if codec_obj.tables is None or codec_obj.label_model is None:
        raise ValueError("the codec has no fitted code tables (codec_models.training.fit_code_tables); the env "
                         "counts real bitstream bits and needs them")
    if isinstance(task, Task):
        task_obj = task.to(dev)
    elif isinstance(task, str):
        task_obj = make_task(task, reference=reference, device=dev, **(task_kwargs or {}))
    else:
        raise TypeError(f"task must be a registered task name or a Task, not {type(task).__name__}")
    if images is None:
        from codec_models.datasets import load_dataset

        extra = {} if data_root is None else {"root": data_root}
        images = load_dataset(dataset, split=split, preset=preset, **extra)
    if len(images) == 0:
        raise ValueError("the image data set is empty")
    first, first_labels = images[0]
    if not isinstance(first, Tensor) or first.dim() != 3 or first.shape[0] != 3:
        raise ValueError(f"data set items must be (image (3,H,W) tensor, labels (H,W)), got image {type(first).__name__}"
                         f" {tuple(getattr(first, 'shape', ()))}")
    height, width = int(first.shape[1]), int(first.shape[2])
    if height % 8 or width % 8:
        raise ValueError(f"image size {height}x{width} must be a multiple of 8")
    if tuple(first_labels.shape) != (height, width):
        raise ValueError(f"labels of shape {tuple(first_labels.shape)} do not match the image {height}x{width}")
    return EnvParts(codec_obj, task_obj, images, height, width, preview=bool(preview))


def check_action(action: Any, num_levels: int) -> int:
    """A level index in [0, Q): int, NumPy integer or 0-d integer array; anything else raises ValueError."""
    value = action
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"action must be an integer quantization level in [0, {num_levels}), got {action!r} "
                         f"({type(action).__name__})")
    if not 0 <= int(value) < num_levels:
        raise ValueError(f"action {int(value)} is not a quantization level in [0, {num_levels})")
    return int(value)


def check_actions(actions: Any, count: int, num_levels: int) -> np.ndarray:
    """A batch of ``count`` level indices (sequence or integer array) -> int64 array; else ValueError."""
    arr = np.asarray(actions)
    if arr.shape != (count,):
        raise ValueError(f"actions must have shape ({count},), got {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"actions must be integer quantization levels in [0, {num_levels}), got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= num_levels)
    if bad.any():
        raise ValueError(f"actions {arr[bad].tolist()} are not quantization levels in [0, {num_levels})")
    return arr.astype(np.int64)


def check_lam(lam: Any, count: int) -> np.ndarray:
    """``lam`` (a number or ``count`` numbers) as a float64 array; each must be finite and >= 0."""
    if isinstance(lam, (bool, np.bool_, str, bytes)):
        raise ValueError(f"lam must be a finite number >= 0 or {count} of them, got {lam!r}")
    try:
        arr = np.asarray(lam, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a finite number >= 0 or {count} of them, got {lam!r}") from None
    if arr.ndim == 0:
        arr = np.full(count, float(arr))
    if arr.shape != (count,) or not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"lam must be a finite number >= 0 or {count} of them, got {lam!r}")
    return arr


def check_budget(budget: Any, count: int) -> np.ndarray:
    """Rate budgets in bpp, one per slot (NaN: no budget): None, a number, or ``count`` of them, each finite and
    > 0 (or None / NaN for no budget); else ``ValueError``."""
    if budget is None:
        return np.full(count, np.nan)
    values = np.asarray([np.nan if b is None else b for b in np.ravel(np.asarray(budget, dtype=object))], dtype=object)
    if values.size == 1:
        values = np.repeat(values, count)
    if values.size != count:
        raise ValueError(f"bpp_budget needs one value per env ({count}), got {values.size}")
    out = np.empty(count)
    for i, v in enumerate(values.tolist()):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"bpp_budget must be a number > 0 (bits per pixel) or None, got {v!r}")
        v = float(v)
        if not (math.isnan(v) or (math.isfinite(v) and v > 0)):
            raise ValueError(f"bpp_budget must be a finite number > 0 (bits per pixel) or None, got {v!r}")
        out[i] = v
    return out


def lam_feature(lam: np.ndarray) -> np.ndarray:
    """The operating point as the agent sees it (``stats[7]``): lam / (1 + lam), in [0, 1)."""
    lam = np.asarray(lam, np.float64)
    return lam / (1.0 + lam)


def observation_space(codec: SemanticCodec, height: int, width: int, preview: bool = False) -> spaces.Dict:
    """Observation of one env: f(m) masked (eq. 2), s_d(m), the concept one-hot and stats (``preview``: with the
    level preview's entries, :mod:`rlasc_env.preview`)."""
    n, m = codec.config.code_channels, codec.num_classes
    h, w = height // 8, width // 8
    return spaces.Dict({
        "features": spaces.Box(-1.0, 1.0, (n, h, w), np.float32),
        "mask": spaces.Box(0.0, 1.0, (1, h, w), np.float32),
        "concept": spaces.Box(0.0, 1.0, (m,), np.float32),
        "stats": spaces.Box(-1.0, 1.0, (stats_size(codec, preview),), np.float32),
    })


# --------------------------------------------------------------------------- batched core
class EpisodeCore:
    """Per-episode caches and the batched step arithmetic for ``num_slots`` images.

    ``reset(slots, ...)`` starts episodes in some slots with one batched pass: the encoder
    (label map, f, s_d(m), every quantized level), SPADE's modulations of the label map, G_l
    on every present concept at the coarsest and at the highest level, x_hat(0) and x_hat(all
    highest) (for L(0) and L_high), the task references and phi(x). ``step(slots, actions)``
    codes the next concept of each of those slots (Algorithm 2, lines 5-10). Every method
    returns NumPy arrays, one row per slot.

    The concept images y(m, q) and the byte size of each concept's bitstream section at each
    level are computed on first use: levels 0 and Q-1 at reset, an intermediate level when the
    agent picks it. That is at most 3P G_l passes and entropy encodings per episode of P
    concepts, where a full (m, q) precompute would do Q*P. ``y_levels[slot, q]`` holds, in the
    region of every concept m whose y(m, q) was computed, that concept image, so x_l of any levels
    is one gather (eq. 29).

    A step runs the decoder and the networks only for transitions the memo (``parts.memo``) has not
    seen; several slots that reach the same prefix of the same image in one call share one pass.
    x_hat of a slot whose step was served by the memo is rebuilt on demand (:attr:`x_hat`, render).
    """

    def __init__(self, parts: EnvParts, num_slots: int, lam: float, eta: float,
                 bpp_budget: float | None = None) -> None:
        if num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        fast_paths.tune_allocator()  # glibc keeps the step's freed tensors (codec_models.fast_paths)
        self.codec, self.task = parts.codec, parts.task
        self.data = parts.images  # the data set, for instance maps (detection references)
        self.lam, self.eta = float(lam), float(eta)
        # the rate-budget mode of a reset that gives no budget (None: off; the engine's cores for budget rows)
        self.default_budget = None if bpp_budget is None else float(check_budget(bpp_budget, 1)[0])
        self.num_slots = num_slots
        self.height, self.width = parts.height, parts.width
        self.pixels = parts.height * parts.width
        self.device = self.codec.device
        cfg = self.codec.config
        self.M, self.Q, self.n = self.codec.num_classes, self.codec.num_levels, cfg.code_channels
        self.preview = bool(parts.preview)
        if self.preview and not self.codec.level_aware:
            raise ValueError("the level preview needs codec v2 (a level-aware local generator)")
        self.num_stats = stats_size(self.codec, self.preview)
        self.h, self.w = parts.height // 8, parts.width // 8
        self.generator = self.codec.global_
        self.phi = self.codec.perceptual
        self.metric_name = self.task.metric_name
        s, m, q = num_slots, self.M, self.Q
        # NumPy bookkeeping (one row per slot)
        self.order = np.full((s, m), -1, np.int64)  # present class ids in label order
        self.count = np.zeros(s, np.int64)  # number of present concepts (episode length)
        self.t = np.zeros(s, np.int64)  # concepts coded so far
        self.levels_np = np.zeros((s, m), np.int64)
        self.coded = np.zeros((s, m), bool)
        self.cost = np.full((s, m, q), -1, np.int64)  # bits concept m adds to the file at level q (lazy)
        self.base_bits = np.zeros(s, np.int64)  # header + label map, no concept
        self.level0_bits = np.zeros(s, np.int64)  # what the concepts at level 0 add (format 4 pads it to a byte)
        self.label_len = np.zeros(s, np.int64)  # bytes of the label map payload r_s
        self.share = np.zeros((s, m), np.float64)  # pixel share of each class
        self.bits = np.zeros(s, np.int64)
        self.bits0 = np.zeros(s, np.int64)
        self.bits_high = np.zeros(s, np.int64)
        self.loss_prev = np.zeros(s, np.float64)
        self.loss0 = np.zeros(s, np.float64)
        self.loss_high = np.zeros(s, np.float64)
        self.returns = np.zeros(s, np.float64)
        self.index = np.full(s, -1, np.int64)  # data set index of each slot's image
        self.lam_slot = np.full(s, self.lam)  # rate weight (eq. 13) of each slot's episodes (reset(lam=...))
        self.budget_bits = np.full(s, -1, np.int64)  # rate-budget mode: the episode's bits may not exceed this (-1: off)
        self.budget_bpp = np.full(s, np.nan)  # the budget as given (bpp), NaN: off
        self.image_key = np.zeros(s, np.int64)  # memo key of each slot's image (rlasc_env.memo.image_key)
        self.started = np.zeros(s, bool)
        self.y_ready = np.zeros((s, m, q), bool)  # y(m, q) present in y_levels[slot, q]
        self.hat_stale = np.zeros(s, bool)  # x_hat of the slot not rebuilt since a memoized step
        self.phi_hat_ok = np.zeros(s, bool)  # phi_hat holds phi(x_hat) of the slot's current x_hat (preview only)
        self.net_prev = np.zeros((s, 3), np.float64)  # (L_S, metric, L_P) of the current x_hat
        self.refs: list[Any] = [None] * s
        self.memo = parts.memo
        self.preview_memo = parts.preview_memo
        self._alloc_tensors()

    @torch.inference_mode()
    def _alloc_tensors(self) -> None:
        s, m, q, n, h, w = self.num_slots, self.M, self.Q, self.n, self.h, self.w
        hh, ww, dev = self.height, self.width, self.device
        z = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=dev)  # noqa: E731
        self.store = Analysis(labels=z(s, hh, ww, dtype=torch.long), onehot=z(s, m, hh, ww), features=z(s, n, h, w),
                              mask=z(s, m, h, w), area=z(s, m, h, w), quantized=z(q, s, n, h, w))
        self.images = z(s, 3, hh, ww)
        self.levels = z(s, m, dtype=torch.long)
        self.y_levels = z(s, q, 3, hh, ww)  # concept images y(m, q) in their regions, per level (eq. 29)
        self.x_hat_store = z(s, 3, hh, ww)
        self.mods: list[Tensor] | None = None
        self.phi_feats: list[Tensor] | None = None
        self.phi_hat: list[Tensor] | None = None  # phi's activations of each slot's x_hat (the preview's base)

    # ---------------------------------------------------------------- helpers
    def _sel(self, slots: np.ndarray) -> slice | Tensor:
        if len(slots) == self.num_slots and np.array_equal(slots, np.arange(self.num_slots)):
            return slice(None)
        return torch.as_tensor(slots, device=self.device)

    def _concept_bits(self, slot: int, class_id: int, level: int) -> int:
        """Bits that concept ``class_id`` at ``level`` adds to the bitstream (``SemanticCodec.concept_bits``)."""
        c = self.cost[slot, class_id, level]
        if c < 0:
            c = self.codec.concept_bits(self.store, slot, class_id, level)
            self.cost[slot, class_id, level] = c
        return int(c)

    def _recode(self, slot: int, class_id: int, level: int) -> int:
        """Code concept ``class_id`` (at level 0 so far) at ``level``: returns the change of the file's bits."""
        old0 = self.level0_bits[slot]
        new0 = old0 - (self.cost[slot, class_id, 0] if level else 0)
        self.level0_bits[slot] = new0
        pad = self.codec.file_bits(0, 0, int(new0)) - self.codec.file_bits(0, 0, int(old0))
        return int(self.cost[slot, class_id, level] - self.cost[slot, class_id, 0] + pad)

    def _rate_weight(self, slots: np.ndarray) -> np.ndarray:
        """lam of eq. 13 per slot: 0 in rate-budget mode (the reward drops the rate term), else the slot's lam."""
        return np.where(self.budget_bits[slots] >= 0, 0.0, self.lam_slot[slots])

    def _allocation_bits(self, slot: int, classes: np.ndarray, levels: np.ndarray) -> int:
        """Change of the file's bits when ``classes`` (at level 0 so far) are coded at ``levels``, nothing kept."""
        old0 = int(self.level0_bits[slot])
        new0, delta = old0, 0
        for m, q in zip(np.asarray(classes).tolist(), np.asarray(levels).tolist()):
            delta += self._concept_bits(slot, m, q) - self._concept_bits(slot, m, 0)
            new0 -= self._concept_bits(slot, m, 0) if q else 0
        return delta + self.codec.file_bits(0, 0, new0) - self.codec.file_bits(0, 0, old0)

    @torch.inference_mode()
    def action_mask(self, slots: np.ndarray) -> np.ndarray:
        """(k, Q) bool: the levels of each slot's next concept that keep the image within its rate budget, the
        concepts not coded yet counted at level 0 (level 0 is always allowed, so every episode can finish within
        its budget); all True outside rate-budget mode and for slots whose episode is over."""
        slots = np.asarray(slots, np.int64)
        mask = np.ones((len(slots), self.Q), bool)
        for j, slot in enumerate(slots.tolist()):
            if self.budget_bits[slot] < 0 or not self.started[slot] or self.t[slot] >= self.count[slot]:
                continue
            m = np.array([self.order[slot, self.t[slot]]])
            for q in range(1, self.Q):
                mask[j, q] = self.bits[slot] + self._allocation_bits(slot, m, np.array([q])) <= self.budget_bits[slot]
        return mask

    def _check_budget(self, slots: np.ndarray, actions: np.ndarray) -> None:
        if not (self.budget_bits[slots] >= 0).any():
            return
        mask = self.action_mask(slots)
        bad = ~mask[np.arange(len(slots)), np.asarray(actions, np.int64)]
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            allowed = np.flatnonzero(mask[j]).tolist()
            raise ValueError(f"level {int(actions[j])} would take env {int(slots[j])}'s image over its rate budget "
                             f"({self.budget_bits[slots[j]] / self.pixels:.4f} bpp): allowed levels {allowed} "
                             "(info['action_mask'], env.action_masks())")

    def _references(self, images: Tensor, labels: Tensor, indices: np.ndarray) -> list[Any]:
        """The task's references; a task that uses instances gets the data set's instance maps of ``indices``
        (a data set without ``instance_map`` leaves the task to its label-map fallback, which warns)."""
        instance_map = getattr(self.data, "instance_map", None)
        instances = None
        if self.task.wants_instances and callable(instance_map):
            instances = np.stack([instance_map(int(i)) for i in np.asarray(indices).tolist()])
        return self.task.references_for(images, labels, instances)

    def _fuse(self, merged: Tensor, x_local: Tensor, mods: Sequence[Tensor]) -> Tensor:
        """x_hat = W_l ⊙ x_l + W_g ⊙ G_g(f_hat, s) (eq. 30-31)."""
        return self.codec.attention(merged, x_local, self.generator(merged, modulations=mods))

    def _evaluate(self, x_hat: Tensor, refs: list[Any], phi_feats: list[Tensor],
                  keep: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(L_S, metric, L_P) per image for reconstructions (B,3,H,W). The task network takes the whole batch (its
        metrics are argmaxes, which a last-bit change of a logit can flip); phi goes in passes of at most
        :func:`network_chunk` images. ``keep``: slots whose current x_hat are the first ``len(keep)`` images; with
        the windowed level preview on their phi activations are kept for it (:attr:`phi_hat`)."""
        semantic, metric = self.task.loss(x_hat, refs)
        size = network_chunk(self.device)
        parts = []
        for a in range(0, len(x_hat), size):
            out = self.phi.features(x_hat[a:a + size])
            parts.append(feature_distance([f[a:a + size] for f in phi_feats], out))  # eq. 11
            if keep is not None and self.preview and a < len(keep) and fast_paths.windowed_preview_enabled():
                self._keep_phi_hat(keep[a:a + size], [f[:len(keep) - a] for f in out])
        perceptual = torch.cat(parts)
        return (semantic.detach().cpu().double().numpy(), metric.detach().cpu().double().numpy(),
                perceptual.detach().cpu().double().numpy())

    def _keep_phi_hat(self, slots: np.ndarray, feats: list[Tensor]) -> None:
        """Store phi's activations of the current x_hat of ``slots`` (rows of ``feats``) for the level preview."""
        if self.phi_hat is None:
            self.phi_hat = [torch.zeros(self.num_slots, *f.shape[1:], device=self.device) for f in feats]
        sel = self._sel(np.asarray(slots, np.int64))
        for dst, src in zip(self.phi_hat, feats):
            dst[sel] = src
        self.phi_hat_ok[slots] = True

    def _info(self, slots: np.ndarray, semantic: np.ndarray, metric: np.ndarray, perceptual: np.ndarray,
              concept: np.ndarray, level: np.ndarray) -> dict[str, np.ndarray]:
        levels = np.where(self.coded[slots], self.levels_np[slots], -1)
        info = {"bits": self.bits[slots].copy(), "bpp": self.bits[slots] / self.pixels, "semantic_loss": semantic,
                "perceptual_loss": perceptual, "loss": self.loss_prev[slots].copy(), "concept": concept,
                "level": level, self.metric_name: metric, "levels": levels, "image_index": self.index[slots].copy(),
                "lam": self.lam_slot[slots].copy()}
        if (self.budget_bits[slots] >= 0).any():  # rate-budget mode (NaN: a slot without a budget)
            info["bpp_budget"] = self.budget_bpp[slots].copy()
        return info

    # ---------------------------------------------------------------- reset
    @torch.inference_mode()
    def reset(self, slots: np.ndarray, images: Tensor, labels: Tensor, indices: np.ndarray,
              lam: float | np.ndarray | None = None, bpp_budget: Any = None) -> dict[str, np.ndarray]:
        """Start episodes in ``slots`` with images (k,3,H,W) and data labels (k,H,W) (Algorithm 2, line 3).
        ``lam``: the rate weight of eq. 13 for these slots, a number or one per slot; it stays with the slot
        for its later episodes (default: the slot keeps its current one, at first the core's ``lam``).
        ``bpp_budget`` (a number or one per slot, NaN: off; None: the core's ``default_budget``): rate-budget mode
        for these episodes, see :meth:`action_mask`; an image whose every concept at level 0 already exceeds its
        budget raises ``ValueError``."""
        slots = np.asarray(slots, np.int64)
        k = len(slots)
        budget = check_budget(self.default_budget if bpp_budget is None else bpp_budget, k)
        if lam is not None:
            self.lam_slot[slots] = check_lam(lam, k)
        if tuple(images.shape) != (k, 3, self.height, self.width):
            raise ValueError(f"images of shape {tuple(images.shape)}, expected ({k}, 3, {self.height}, {self.width})")
        codec, sel = self.codec, self._sel(slots)
        images = codec.check_images(images)
        labels = labels.to(self.device).long()
        an = codec.analyse(images)  # s = F(x), f = E(x), masks, every level: once per episode
        present = an.present
        present_np = present.cpu().numpy()
        # G_l on every present concept at the coarsest and the highest level, one batched call
        b_idx, c_idx = present.nonzero(as_tuple=True)
        masks = an.mask[b_idx, c_idx].unsqueeze(1)
        low, high = an.quantized[0][b_idx] * masks, an.quantized[-1][b_idx] * masks
        lows = torch.zeros_like(c_idx)
        y = codec.concept_images(torch.cat([low, high]), torch.cat([c_idx, c_idx]),
                                 torch.cat([lows, lows + self.Q - 1]), torch.cat([masks, masks]))
        p = len(c_idx)
        x_l0 = LocalGenerator.compose(y[:p], c_idx, b_idx, an.labels)
        x_lh = LocalGenerator.compose(y[p:], c_idx, b_idx, an.labels)
        mods = self.generator.modulations(an.onehot, (self.h, self.w))
        lev0 = torch.zeros(k, self.M, dtype=torch.long, device=self.device)
        levh = lev0 + self.Q - 1
        merged0 = codec.merged_features(an, codec.select_levels(an, lev0) * an.mask.unsqueeze(2), lev0)
        mergedh = codec.merged_features(an, codec.select_levels(an, levh) * an.mask.unsqueeze(2), levh)
        x_hat = self._fuse(torch.cat([merged0, mergedh]), torch.cat([x_l0, x_lh]), [torch.cat([t, t]) for t in mods])
        refs = self._references(images, labels, indices)
        feats = self.phi.features(images)
        self.phi_hat_ok[slots] = False  # a new x_hat: what was kept of the slots' last episode is stale
        semantic, metric, perceptual = self._evaluate(x_hat, list(refs) + list(refs), [torch.cat([f, f]) for f in feats],
                                                      keep=slots)

        # write the caches into the slots
        st = self.store
        st.labels[sel], st.onehot[sel], st.features[sel] = an.labels, an.onehot, an.features
        st.mask[sel], st.area[sel], st.quantized[:, sel] = an.mask, an.area, an.quantized
        self.images[sel], self.levels[sel] = images, 0
        self.y_levels[sel, 0], self.y_levels[sel, self.Q - 1], self.x_hat_store[sel] = x_l0, x_lh, x_hat[:k]
        self.y_ready[slots] = False
        self.y_ready[slots, :, 0] = self.y_ready[slots, :, self.Q - 1] = True
        self.hat_stale[slots] = False
        self.net_prev[slots] = np.stack([semantic[:k], metric[:k], perceptual[:k]], 1)
        self.memo.validate(full=True)
        self.image_key[slots] = [image_key(images[j], labels[j], int(indices[j])) for j in range(k)]
        if self.mods is None:
            self.mods = [torch.zeros(self.num_slots, *t.shape[1:], device=self.device) for t in mods]
            self.phi_feats = [torch.zeros(self.num_slots, *f.shape[1:], device=self.device) for f in feats]
        for dst, src in zip(self.mods, mods):
            dst[sel] = src
        for dst, src in zip(self.phi_feats, feats):
            dst[sel] = src
        self.share[slots] = an.area.mean((-2, -1)).double().cpu().numpy()

        # real bitstream sizes: label map, and every concept at the coarsest / highest level
        self.cost[slots] = -1
        for j, slot in enumerate(slots.tolist()):
            self.refs[slot] = refs[j]
            self.label_len[slot] = len(codec.encode_labels(an.labels[j]))
            self.base_bits[slot] = codec.base_bits(self.height, self.width, int(self.label_len[slot]))
            classes = np.flatnonzero(present_np[j])
            self.order[slot] = -1
            self.order[slot, :len(classes)] = classes
            self.count[slot] = len(classes)
        bits0 = np.zeros(k, np.int64)
        bits_high = np.zeros(k, np.int64)
        for j, slot in enumerate(slots.tolist()):
            classes = self.order[slot, :self.count[slot]].tolist()
            level0 = sum(self._concept_bits(slot, c, 0) for c in classes)
            self.level0_bits[slot] = level0
            bits0[j] = codec.file_bits(int(self.base_bits[slot]), level0, level0)
            bits_high[j] = codec.file_bits(int(self.base_bits[slot]),
                                           sum(self._concept_bits(slot, c, self.Q - 1) for c in classes), 0)

        self.t[slots], self.levels_np[slots], self.coded[slots] = 0, 0, False
        self.bits[slots], self.bits0[slots], self.bits_high[slots] = bits0, bits0, bits_high
        self.budget_bits[slots] = np.where(np.isnan(budget), -1, np.floor(np.nan_to_num(budget) * self.pixels))
        self.budget_bpp[slots] = budget
        over = (self.budget_bits[slots] >= 0) & (bits0 > self.budget_bits[slots])
        if over.any():
            self.started[slots] = False
            j = int(np.flatnonzero(over)[0])
            raise ValueError(f"image {int(indices[j])}: every concept at level 0 already takes "
                             f"{bits0[j] / self.pixels:.4f} bpp, above its budget {budget[j]:.4f} bpp")
        lam_k = self._rate_weight(slots)
        self.loss0[slots] = rsp_loss(bits0, bits0, self.pixels, semantic[:k], perceptual[:k], lam_k, self.eta)
        self.loss_high[slots] = rsp_loss(bits_high, bits0, self.pixels, semantic[k:], perceptual[k:], lam_k, self.eta)
        self.loss_prev[slots] = self.loss0[slots]
        self.returns[slots] = 0.0
        self.index[slots] = indices
        self.started[slots] = True
        minus = np.full(k, -1, np.int64)
        return self._info(slots, semantic[:k], metric[:k], perceptual[:k], minus, minus)

    # ---------------------------------------------------------------- step
    @torch.inference_mode()
    def step(self, slots: np.ndarray, actions: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Code the next concept of each slot at ``actions`` (validated levels).

        Returns reward (eq. 14), terminated, info arrays (one row per slot) and the end-of-episode
        arrays ``normalized_score``, ``episode_return``, ``episode_length`` (one row per
        terminated slot). Slots whose episode is over raise ``RuntimeError``."""
        slots = np.asarray(slots, np.int64)
        over = ~self.started[slots] | (self.t[slots] >= self.count[slots])
        if over.any():
            raise RuntimeError(f"episode of env(s) {slots[over].tolist()} is over (or never started): call reset() "
                               "before step()")
        self._check_budget(slots, actions)
        sel, dev = self._sel(slots), self.device
        cls = self.order[slots, self.t[slots]]
        self.levels_np[slots, cls] = actions
        self.coded[slots, cls] = True
        levels = self.levels[sel]
        levels[torch.arange(len(slots), device=dev), torch.as_tensor(cls, device=dev)] = torch.as_tensor(actions,
                                                                                                      device=dev)
        self.levels[sel] = levels
        semantic, metric, perceptual = losses_array(self._network_terms(slots, actions))

        # rate of the real bitstream, eq. 13 and eq. 14
        for j in np.flatnonzero(self.cost[slots, cls, actions] < 0).tolist():
            self._concept_bits(int(slots[j]), int(cls[j]), int(actions[j]))  # encode r(m) at the new level
        self.bits[slots] += [self._recode(int(sl), int(c), int(a)) for sl, c, a in zip(slots, cls, actions)]
        loss = rsp_loss(self.bits[slots], self.bits0[slots], self.pixels, semantic, perceptual,
                        self._rate_weight(slots), self.eta)
        reward = step_reward(self.loss_prev[slots], loss)
        self.loss_prev[slots] = loss
        self.returns[slots] += reward
        self.t[slots] += 1
        terminated = self.t[slots] == self.count[slots]
        info = self._info(slots, semantic, metric, perceptual, cls, actions.astype(np.int64))
        ended = slots[terminated]
        final = {"normalized_score": normalized_score(self.loss0[ended], self.loss_prev[ended], self.loss_high[ended]),
                 "episode_return": self.returns[ended].copy(), "episode_length": self.count[ended].copy()}
        return reward, terminated, info, final

    @torch.inference_mode()
    def finish(self, slots: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Code every concept a slot has left at once: ``levels`` (k, M) gives the level of each class id (entries
        of absent or already coded classes are ignored). The episode ends where the same levels, stepped one
        concept at a time, would end it: the return is L(0) - L(final) whatever the path (eq. 14 telescopes), and
        the final state, the memo entry and the end-of-episode arrays are the last step's. One decoder + networks
        pass per slot instead of one per concept: what allocation searches (rollouts, oracles) need.

        Returns the episode returns (k,) and the end-of-episode arrays of :meth:`step` plus its info arrays."""
        slots = np.asarray(slots, np.int64)
        k = len(slots)
        levels = np.asarray(levels)
        if levels.shape != (k, self.M):
            raise ValueError(f"levels must be (slots, classes) = ({k}, {self.M}), got {levels.shape}")
        if not k:
            raise ValueError("finish needs at least one slot")
        over = ~self.started[slots] | (self.t[slots] >= self.count[slots])
        if over.any():
            raise RuntimeError(f"episode of env(s) {slots[over].tolist()} is over (or never started): call reset() "
                               "before finish()")
        if len(np.unique(slots)) != k:
            raise ValueError(f"finish got slot(s) twice: {slots.tolist()}")
        left_of = [self.order[slot, self.t[slot]:self.count[slot]] for slot in slots.tolist()]
        for j, left in enumerate(left_of):  # every slot checked before any is changed
            check_actions(levels[j, left], len(left), self.Q)
            slot = int(slots[j])
            if self.budget_bits[slot] >= 0:
                bits = self.bits[slot] + self._allocation_bits(slot, left, levels[j, left])
                if bits > self.budget_bits[slot]:
                    raise ValueError(f"these levels take env {slot}'s image to {bits / self.pixels:.4f} bpp, above "
                                     f"its budget {self.budget_bits[slot] / self.pixels:.4f} bpp")
        for j, slot in enumerate(slots.tolist()):
            for m in left_of[j].tolist():
                level = int(levels[j, m])
                self._concept_bits(slot, m, level)
                self.bits[slot] += self._recode(slot, m, level)
                self.levels_np[slot, m] = level
                self.coded[slot, m] = True
            self.levels[slot] = torch.as_tensor(self.levels_np[slot], device=self.device)
            self.t[slot] = self.count[slot]
        out: list[StepLosses | None] = [None] * k
        todo: list[int] = []
        for j, slot in enumerate(slots.tolist()):
            if not levels[j, left_of[j]].any():  # every concept left stays at level 0: x_hat as it was (as in step)
                out[j] = StepLosses(*self.net_prev[slot].tolist())
                self.memo.put(self._prefix_key_done(slot), out[j])
                continue
            out[j] = self.memo.get(self._prefix_key_done(slot))
            if out[j] is None:
                todo.append(j)
            else:
                self.hat_stale[slot], self.phi_hat_ok[slot] = True, False
        if todo:
            rows = slots[todo]
            x_hat = self._decode(rows)
            refs = [self.refs[s] for s in rows.tolist()]
            terms = self._evaluate(x_hat, refs, [f[self._sel(rows)] for f in self.phi_feats], keep=rows)
            for i, j in enumerate(todo):
                out[j] = StepLosses(float(terms[0][i]), float(terms[1][i]), float(terms[2][i]))
                self.memo.put(self._prefix_key_done(int(slots[j])), out[j])
        self.net_prev[slots] = np.asarray(out, np.float64)
        semantic, metric, perceptual = losses_array(out)  # type: ignore[arg-type]
        loss = rsp_loss(self.bits[slots], self.bits0[slots], self.pixels, semantic, perceptual,
                        self._rate_weight(slots), self.eta)
        self.returns[slots] += step_reward(self.loss_prev[slots], loss)
        self.loss_prev[slots] = loss
        minus = np.full(k, -1, np.int64)
        info = self._info(slots, semantic, metric, perceptual, minus, minus)
        info.update({"normalized_score": normalized_score(self.loss0[slots], loss, self.loss_high[slots]),
                     "episode_return": self.returns[slots].copy(), "episode_length": self.count[slots].copy()})
        return self.returns[slots].copy(), info

    @torch.inference_mode()
    def share_image_caches(self, src: int, dst: Sequence[int] | np.ndarray) -> None:
        """Give slots ``dst`` what slot ``src`` has computed about their common image that no choice of levels
        changes: the concept images y(m, q) and the byte size of every concept section coded so far. A slot that
        starts from a copy of the reset state then reuses them instead of recomputing them (the state itself, levels
        and losses, is not touched)."""
        dst = np.asarray(dst, np.int64).reshape(-1)
        if not (self.started[src] and self.started[dst].all() and (self.image_key[dst] == self.image_key[src]).all()):
            raise ValueError(f"slots {dst.tolist()} do not hold slot {src}'s image")
        if (self.y_ready[dst] & ~self.y_ready[src]).any():
            raise ValueError(f"slots {dst.tolist()} hold concept images slot {src} lacks: cannot merge")
        self.y_levels[torch.as_tensor(dst, device=self.device)] = self.y_levels[src].clone()
        self.y_ready[dst] = self.y_ready[src]
        known = self.cost[src] >= 0
        self.cost[dst] = np.where(known, self.cost[src], self.cost[dst])

    def _prefix_key_done(self, slot: int) -> tuple[int, tuple[int, ...]]:
        """Memo key of a slot whose every concept is coded (the key its last step would have used)."""
        return int(self.image_key[slot]), tuple(self.levels_np[slot, self.order[slot, :self.count[slot]]].tolist())

    def _prefix_key(self, slot: int) -> tuple[int, tuple[int, ...]]:
        """Memo key of a slot in ``step``: its image and the levels of its concepts coded so far (the current
        one included), in coding order."""
        return int(self.image_key[slot]), tuple(self.levels_np[slot, self.order[slot, :self.t[slot] + 1]].tolist())

    def _network_terms(self, slots: np.ndarray, actions: np.ndarray) -> list[StepLosses]:
        """(L_S, metric, L_P) of x_hat after this step's levels (already written), per slot: level 0 leaves
        x_hat as it was, the memo answers the transitions it has seen, and one decoder + networks pass
        serves every other distinct (image, prefix) of the call (eq. 29-31, 13)."""
        self.memo.validate()
        out: list[StepLosses | None] = [None] * len(slots)
        todo: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for j, slot in enumerate(slots.tolist()):
            key = self._prefix_key(slot)
            if actions[j] == 0:  # the concept stays at level 0, where it already was: same x_hat
                out[j] = StepLosses(*self.net_prev[slot].tolist())
                self.memo.put(key, out[j])
                continue
            cached = self.memo.get(key)
            if cached is not None:
                out[j] = cached
                self.hat_stale[slot], self.phi_hat_ok[slot] = True, False
            else:
                todo.setdefault(key, []).append(j)
        if todo:
            firsts = np.array([rows[0] for rows in todo.values()], np.int64)
            x_hat = self._decode(slots[firsts])
            refs = [self.refs[s] for s in slots[firsts].tolist()]
            sel = self._sel(slots[firsts])
            terms = self._evaluate(x_hat, refs, [f[sel] for f in self.phi_feats], keep=slots[firsts])
            for i, (key, rows) in enumerate(todo.items()):
                value = StepLosses(float(terms[0][i]), float(terms[1][i]), float(terms[2][i]))
                self.memo.put(key, value)
                for j in rows:
                    out[j] = value
                    if j != rows[0]:  # a copy of the same state: same x_hat
                        self.x_hat_store[int(slots[j])] = x_hat[i]
                        self.hat_stale[int(slots[j])] = False
                        if self.phi_hat_ok[int(slots[rows[0]])]:
                            for f in self.phi_hat:
                                f[int(slots[j])] = f[int(slots[rows[0]])]
                            self.phi_hat_ok[int(slots[j])] = True
        self.net_prev[slots] = np.asarray(out, np.float64)
        return out  # type: ignore[return-value]

    def _decode(self, slots: np.ndarray) -> Tensor:
        """x_hat (k,3,H,W) of ``slots`` at their current levels: x_l gathered from the concept images
        (computing the y(m, q) still missing), G_g + attention (eq. 28-31); stored, no longer stale."""
        codec, dev, st = self.codec, self.device, self.store
        need = [(s, m, int(self.levels_np[s, m])) for s in slots.tolist() for m in np.flatnonzero(self.coded[s]).tolist()
                if not self.y_ready[s, m, self.levels_np[s, m]]]
        if need:
            s_t, m_t, q_t = (torch.as_tensor(v, device=dev) for v in zip(*need))
            concept_masks = st.mask[s_t, m_t].unsqueeze(1)
            y = codec.concept_images(st.quantized[q_t, s_t] * concept_masks, m_t, q_t, concept_masks)
            for i, (s, m, q) in enumerate(need):  # one at a time: two concepts of a slot may share a level
                region = (st.labels[s] == m).unsqueeze(0)
                self.y_levels[s, q] = torch.where(region, y[i], self.y_levels[s, q])
                self.y_ready[s, m, q] = True
        sel = self._sel(slots)
        labels, mask, levels = st.labels[sel], st.mask[sel], self.levels[sel]
        k = labels.shape[0]
        pixel_level = levels.gather(1, labels.view(k, -1))  # (k, H*W): the level of each pixel's concept
        y_all = self.y_levels[sel].view(k, self.Q, 3, -1)
        x_local = y_all.gather(1, pixel_level.view(k, 1, 1, -1).expand(k, 1, 3, -1)).view(k, 3, self.height, self.width)
        sub = Analysis(labels, None, None, mask, st.area[sel], st.quantized[:, sel])
        merged = codec.merged_features(sub, codec.select_levels(sub, levels) * mask.unsqueeze(2), levels)
        x_hat = self._fuse(merged, x_local, [t[sel] for t in self.mods])
        self.x_hat_store[sel] = x_hat
        self.hat_stale[slots] = False
        self.phi_hat_ok[slots] = False  # until _evaluate keeps phi(x_hat)
        return x_hat

    @property
    def x_hat(self) -> Tensor:
        """x_hat (num_slots,3,H,W) of every slot's current levels (rebuilt where a memoized step left it stale)."""
        stale = np.flatnonzero(self.hat_stale & self.started)
        if len(stale):
            with torch.inference_mode():
                self._decode(stale)
        return self.x_hat_store

    # ---------------------------------------------------------------- observation
    @torch.inference_mode()
    def observation(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """State of Section II-C for the next concept of each slot; zeros where the episode is over."""
        slots = np.asarray(slots, np.int64)
        k, sel = len(slots), self._sel(slots)
        live = self.t[slots] < self.count[slots]
        cls = np.where(live, self.order[slots, np.minimum(self.t[slots], self.M - 1)], 0)
        live_t = torch.as_tensor(live, device=self.device)
        rows = torch.arange(k, device=self.device)
        mask = self.store.mask[sel][rows, torch.as_tensor(cls, device=self.device)] * live_t.view(-1, 1, 1)
        features = self.store.features[sel] * mask.unsqueeze(1)
        concept = np.zeros((k, self.M), np.float32)
        concept[np.flatnonzero(live), cls[live]] = 1.0
        stats = np.zeros((k, self.num_stats), np.float64)
        count = np.maximum(self.count[slots], 1)
        high_total = np.maximum(self.bits_high[slots] // 8, 1)  # bytes
        span = self.bits_high[slots] - self.bits0[slots]
        score = normalized_score(self.loss0[slots], self.loss_prev[slots], self.loss_high[slots])
        stats[:, 0] = self.share[slots, cls]
        stats[:, 1] = self.t[slots] / count
        stats[:, 2] = self.count[slots] / self.M
        stats[:, 3] = np.clip((self.bits[slots] - self.bits0[slots]) / np.maximum(span, 1), 0.0, 1.0)
        stats[:, 4] = np.clip(self.cost[slots, cls, 0] / 8 / high_total, 0.0, 1.0)
        stats[:, 5] = np.clip(self.cost[slots, cls, self.Q - 1] / 8 / high_total, 0.0, 1.0)
        stats[:, 6] = np.clip(np.nan_to_num(score, nan=0.0), -1.0, 1.0)
        if self.codec.level_aware:
            budget = self.budget_bits[slots]
            left = np.clip((budget - self.bits[slots]) / np.maximum(span, 1), 0.0, 1.0)  # rate-budget mode
            stats[:, 7] = np.where(budget >= 0, left, lam_feature(self.lam_slot[slots]))
        if self.preview and live.any():
            rows = np.flatnonzero(live)
            stats[rows, NUM_STATS:] = preview_stats(*level_preview(self, slots[rows]))
        stats[~live] = 0.0
        return {"features": features.float().cpu().numpy(), "mask": mask.unsqueeze(1).float().cpu().numpy(),
                "concept": concept, "stats": stats.astype(np.float32)}

    def zero_observation(self, k: int) -> dict[str, np.ndarray]:
        return {"features": np.zeros((k, self.n, self.h, self.w), np.float32),
                "mask": np.zeros((k, 1, self.h, self.w), np.float32),
                "concept": np.zeros((k, self.M), np.float32), "stats": np.zeros((k, self.num_stats), np.float32)}

    # ---------------------------------------------------------------- render
    def render(self, slot: int) -> np.ndarray:
        """original | x_hat | label map s | one bar per concept (height = level chosen)."""
        def rgb(img: Tensor) -> np.ndarray:
            return (img.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)

        hh, ww = self.height, self.width
        labels = self.store.labels[slot].cpu().numpy()
        strip = np.full((hh, ww, 3), 24, np.uint8)
        count = int(self.count[slot])
        if count:
            width = max(ww // count, 1)
            for j, cls in enumerate(self.order[slot, :count].tolist()):
                x0, x1 = j * width, min((j + 1) * width - 1, ww)
                colour = TRAIN_COLORS[cls] if cls < len(TRAIN_COLORS) else np.array([128, 128, 128], np.uint8)
                level = int(self.levels_np[slot, cls]) if self.coded[slot, cls] else 0
                top = hh - max(1, round(hh * (level + 1) / self.Q))
                strip[top:, x0:x1] = colour if self.coded[slot, cls] else colour // 3
                if j == self.t[slot]:
                    strip[:2, x0:x1] = 255  # the concept coded next
        sep = np.full((hh, 2, 3), 255, np.uint8)
        return np.concatenate([rgb(self.images[slot]), sep, rgb(self.x_hat[slot]), sep, colorize(labels), sep, strip],
                              axis=1)


def observation_flag(observation: Any) -> bool:
    """``observation`` ("paper": the paper's concept observation; "preview": with the level preview of
    :mod:`rlasc_env.preview`) -> whether the stats carry the preview; else ``ValueError``."""
    if observation not in ("paper", "preview"):
        raise ValueError(f"observation must be 'paper' or 'preview', got {observation!r}")
    return observation == "preview"


def pick_index(rng: np.random.Generator, size: int, index: Any = None) -> int:
    """The data set index of an episode: ``index`` when given (validated), else drawn from ``rng``."""
    if index is None:
        return int(rng.integers(size))
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < size:
        raise ValueError(f"options['index'] must be an image index in [0, {size}), got {index!r}")
    return int(index)


def load_items(images: Any, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Stack data set items ``indices`` -> images (k,3,H,W), labels (k,H,W)."""
    pairs = [images[i] for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([torch.as_tensor(p[1]).long() for p in pairs])


# --------------------------------------------------------------------------- the single env
class SemanticCodingEnv(gym.Env):
    """RL-based semantic bit allocation (RL-ASC, arXiv 2208.04094, Section II-C, Algorithm 2).

    ## Description
    An episode codes one image. The frozen semantic codec segments it (label map s = F(x)),
    extracts f = E(x) and splits it into one concept f(m) per class present (eq. 2). Starting
    from x_hat(0), every concept at the coarsest level l1 (Algorithm 2, line 3), each step codes
    the next present concept, in label order, at the quantization level chosen by the agent;
    the decoder rebuilds x_hat(m) and the step is rewarded by the drop of the
    rate-semantic-perceptual criterion.

    ## Action space
    ``Discrete(Q)``: the quantization level of the current concept, 0 the coarsest (fewest
    centres, fewest bits), Q - 1 the finest. An int, NumPy integer or 0-d integer array;
    anything else raises ``ValueError``.

    ## Observation space
    ``Dict`` (SB3 ``MultiInputPolicy`` compatible), for the concept m coded next:

    - ``"features"`` Box(-1, 1, (n, H/8, W/8)): f(m) = f ⊙ s_d(m) (eq. 2), unquantized.
    - ``"mask"`` Box(0, 1, (1, H/8, W/8)): s_d(m), the positions coded for m.
    - ``"concept"`` Box(0, 1, (M,)): one-hot of the class id m.
    - ``"stats"`` Box(-1, 1, (8,)): [pixel share of m; fraction of the image's concepts coded;
      number of concepts / M; rate spent so far, (bits - bits(0)) / (bits(all highest) - bits(0))
      clipped to [0, 1]; bytes of m at the coarsest level and at the highest level, each over the
      all-highest bitstream size; normalized score so far (below) clipped to [-1, 1], 0 if undefined;
      the episode's rate weight as lam / (1 + lam)].

    After the last concept the observation is all zeros.

    ## Rewards
    With psi the length in bits of the real bitstream (label map r_s and the coded concepts;
    concepts not coded yet count at level 0), eq. 13 and eq. 14::

        L(m) = lam * (psi(x_hat(m)) - psi(x_hat(0))) / (H*W) + L_S(x, x_hat(m)) + eta * L_P(x, x_hat(m))
        r(m) = L(m-1) - L(m)

    L_S is the task's semantic loss (e.g. 1 - mIoU), L_P the perceptual loss of eq. 11.
    The sum of the rewards of an episode is L(0) - L(final).

    ## Starting state
    A data set image drawn with ``self.np_random`` (``options={"index": i}`` picks one), all
    concepts at level 0. ``options={"lam": x}`` sets the rate weight of eq. 13 for this episode and
    the following ones (the operating point: researchers trace a rate-semantic curve by changing
    lam, Section IV); the agent sees it in ``stats[7]``.

    ## Episode end
    Terminates after the last present concept (1 to M steps); never truncated.

    ## Arguments
    Through a registered id (``gym.make("rlasc/SemanticCoding-v7", ...)``) the options are ``task``,
    ``observation`` (``"preview"``, the default, or ``"paper"``), ``lam``, ``eta``, ``split``, ``render_mode`` and
    ``device``, validated by :func:`rlasc_env.registration.resolve_env`; the id pins everything else. Built directly,
    the class also takes ``codec`` (shipped name, checkpoint path or a ``SemanticCodec`` with code tables),
    ``dataset``, ``data_root``, ``preset`` (data set size preset), ``reference`` (``"ground_truth"`` or
    ``"original"``: what H's output is compared with), ``images`` (a data set object used instead of loading one),
    ``task_kwargs`` (extra task factory args) and ``pins`` (the codec, task-network and data versions an id stands
    for; the env refuses other shipped files). ``observation="preview"``: ``stats`` gains the level preview of
    :mod:`rlasc_env.preview`, 1 + 2Q entries after the 8 above: what each level of the concept would add in rate and
    remove in perceptual loss, measured by the encoder.

    ## Render
    ``render_mode="rgb_array"``: one (H, 4W + 6, 3) uint8 frame of four panels separated by white columns: the
    original x | the decoded x_hat of the levels chosen so far (also :meth:`decoded_image`) | the label map s the
    codec sends (Cityscapes colours) | one bar per concept in coding order, coloured by class, its height the level
    chosen (dimmed: not coded yet; a white cap marks the concept coded next).

    ## Pickling
    An env built from names (every registered id) pickles as its configuration plus the episode (image, rate weight,
    levels chosen, random generator); unpickling reloads the weights by name, checks the pins and replays the levels.

    ## Info (reset and every step)
    ``bits`` (int, equals ``len(codec.compress(image, levels)) * 8`` for ``levels``), ``bpp``
    (bits / (H*W)), ``semantic_loss``, ``perceptual_loss``, ``loss`` (L), ``concept`` (class
    coded, -1 at reset), ``level`` (-1 at reset), the task metric under ``task.metric_name``,
    ``levels`` ({class id: level} of the concepts coded so far; the others are at 0),
    ``image_index``, ``lam`` (the episode's rate weight); on the last step also ``episode_return`` and ``normalized_score`` =
    (L(0) - L_final) / (L(0) - L_high), L_high being L with every concept at the highest level:
    0 = all coarsest, 1 = all highest, > 1 better than all highest (NaN when L(0) == L_high). The benchmark score
    (:mod:`rlasc_env.score`) is another normalisation, over a policy's returns on the protocol's images.

    ## Version History
    - ``rlasc/SemanticCoding-v7``: the current id: -v6 with the codec ``tiny-sf3`` (``tiny-sf2``'s networks, the
      concepts above level 0 range-coded: the same decoded images in 10-20% fewer bits at levels 1-5); score
      references in ``rlasc_env/references/``.
    - ``rlasc/SemanticCoding-v6``: -v5 with the semantic-fidelity codec ``tiny-sf2`` (bitstream format 4: every
      concept at level 0 in 0.295 bpp); frozen.
    - ``rlasc/SemanticCoding-v5``: codec v2 ``tiny`` + task networks v3 (-v3's rewards); the observation is an
      option (``"preview"`` default, ``"paper"``); frozen.
    - ``rlasc/SemanticCoding-v4``: -v1 with the level preview in the observation; frozen.
    - ``rlasc/SemanticCoding-v3``: -v1 with the GPU-trained task networks v3; frozen.
    - ``rlasc/SemanticCoding-v2``: -v1 with the CPU-trained task networks v2; frozen.
    - ``rlasc/SemanticCoding-v1``: codec v2 ``tiny`` (levels matter), task networks v1; frozen.
    - ``rlasc/SemanticCoding-v0``: the first codec ``tiny-v0``, 7 stats; frozen.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, task: str | Task = "segmentation", split: str = "train", lam: float = 1.0, eta: float = 10.0,
                 codec: str | os.PathLike | SemanticCodec = "tiny", dataset: str = "streets",
                 data_root: str | os.PathLike | None = None, preset: str = "tiny", reference: str = "ground_truth",
                 render_mode: str | None = None, device: str | torch.device = "cpu", images: Any = None,
                 task_kwargs: dict[str, Any] | None = None, pins: dict[str, Any] | None = None,
                 observation: str = "paper", bpp_budget: float | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, not {render_mode!r}")
        preview = observation_flag(observation)
        lam, eta = check_weight("lam", lam), check_weight("eta", eta)
        self.bpp_budget = None if bpp_budget is None else float(check_budget(bpp_budget, 1)[0])
        names_only = isinstance(codec, (str, os.PathLike)) and isinstance(task, str) and images is None
        self._init_kwargs: dict[str, Any] | None = (
            {"task": task, "split": split, "lam": lam, "eta": eta, "codec": str(codec), "dataset": dataset,
             "data_root": None if data_root is None else str(data_root), "preset": preset, "reference": reference,
             "render_mode": render_mode, "device": str(device), "task_kwargs": task_kwargs, "pins": pins,
             "observation": observation, "bpp_budget": self.bpp_budget} if names_only else None)
        self.config: Any = None  # the id's rlasc_env.registration.EnvConfig when made through an id
        self._actions: list[int] = []
        task_kwargs = apply_pins(pins, codec, task, dataset, task_kwargs, images)  # the id's files, checked
        self.render_mode = render_mode
        self.pins = pins
        self.parts = build_parts(task, split, codec, dataset, data_root, preset, reference, device, images, task_kwargs,
                                 preview)
        self.core = EpisodeCore(self.parts, 1, lam, eta)
        self.codec, self.task = self.parts.codec, self.parts.task
        self.lam, self.eta = float(lam), float(eta)
        self.action_space = spaces.Discrete(self.codec.num_levels)
        self.observation_space = observation_space(self.codec, self.parts.height, self.parts.width, self.parts.preview)
        self._slot = np.zeros(1, np.int64)

    @property
    def num_images(self) -> int:
        return len(self.parts.images)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"options must be a dict, got {type(options).__name__}")
        options = dict(options or {})
        unknown = set(options) - {"index", "lam", "bpp_budget"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; known: 'index', 'lam', 'bpp_budget'")
        lam = None if options.get("lam") is None else check_lam(options["lam"], 1)  # validated before any change
        budget = check_budget(options.get("bpp_budget", self.bpp_budget), 1)
        if options.get("index") is not None:
            pick_index(self.np_random, self.num_images, options["index"])
        super().reset(seed=seed)
        index = pick_index(self.np_random, self.num_images, options.get("index"))
        images, labels = load_items(self.parts.images, [index])
        info = self.core.reset(self._slot, images, labels, np.array([index]), lam=lam, bpp_budget=budget)
        self._actions = []
        return self._obs(), self._with_mask(self._single_info(info))

    def action_masks(self) -> np.ndarray:
        """The levels the next concept may take (bool (Q,)): all of them, except in rate-budget mode
        (``bpp_budget``), where a level that would take the image over its budget is masked. sb3-contrib's
        MaskablePPO reads this method."""
        return self.core.action_mask(self._slot)[0]

    def _with_mask(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.core.budget_bits[0] >= 0:
            info["action_mask"] = self.action_masks()
        return info

    def step(self, action: Any):
        level = check_action(action, self.codec.num_levels)
        if not self.core.started[0]:
            raise RuntimeError("call reset() before step()")
        if self.core.t[0] >= self.core.count[0]:
            raise RuntimeError("the episode has terminated: call reset() before step()")
        reward, terminated, info, final = self.core.step(self._slot, np.array([level], np.int64))
        self._actions.append(level)
        done = bool(terminated[0])
        if done:
            info.update(final)
        obs = {k: v[0] for k, v in self.core.zero_observation(1).items()} if done else self._obs()
        return obs, float(reward[0]), done, False, self._with_mask(self._single_info(info))

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; create the env with render_mode='rgb_array'")
            return None
        if not self.core.started[0]:
            raise RuntimeError("call reset() before render()")
        return self.core.render(0)

    def decoded_image(self) -> np.ndarray:
        """x_hat of the current levels: float32 (3, H, W) in [0, 1] (the second panel of ``render()``)."""
        if not self.core.started[0]:
            raise RuntimeError("call reset() before decoded_image()")
        return self.core.x_hat[0].detach().clamp(0, 1).float().cpu().numpy()

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """Configuration + episode (image, rate weight, levels chosen so far, random generator); the networks are
        reloaded by name on unpickling and checked against the id's pins."""
        if self._init_kwargs is None:
            raise TypeError("only an env built from names pickles (gym.make(id, ...), or SemanticCodingEnv with a "
                            "shipped codec name or path, a task name and no images=): in-process codecs, tasks and "
                            "data sets are not serialized")
        started = bool(self.core.started[0])
        budget = self.core.budget_bits[0]
        episode = ({"index": int(self.core.index[0]), "lam": float(self.core.lam_slot[0]),
                    "bpp_budget": float(self.core.budget_bpp[0]) if budget >= 0 else None,
                    "actions": list(self._actions)} if started else None)
        rng = self._np_random.bit_generator.state if self._np_random is not None else None
        return {"init": self._init_kwargs, "config": self.config, "episode": episode, "rng": rng,
                "rng_seed": self._np_random_seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["init"])
        self.config = state["config"]
        episode = state["episode"]
        if episode is not None:
            self.reset(options={"index": episode["index"], "lam": episode["lam"],
                                "bpp_budget": episode.get("bpp_budget")})
            for level in episode["actions"]:
                self.step(level)
        if state["rng"] is not None:
            from gymnasium.utils import seeding

            self._np_random, _ = seeding.np_random(0)
            self._np_random.bit_generator.state = state["rng"]
            self._np_random_seed = state["rng_seed"]

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observation(self._slot).items()}

    @staticmethod
    def _single_info(info: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in info.items():
            item = value[0]
            if key == "levels":
                out[key] = {int(m): int(q) for m, q in enumerate(item.tolist()) if q >= 0}
            elif isinstance(item, np.integer):
                out[key] = int(item)
            else:
                out[key] = float(item)
        return out
