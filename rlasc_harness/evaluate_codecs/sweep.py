"""Operating points of every codec: code each image to real bytes, decode, measure.

Engineered codecs are swept over their quality knob: a calibration pass measures the mean
rate of every setting on a few images, settings are picked whose rate is nearest to target
rates (by default :func:`derived_targets`: spaced geometrically over RL-ASC's own measured rate
range, widened by a margin), and ``refine`` extra settings are then added between the two
neighbouring points whose task score differs most (where the curve is steepest).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from codec_models.codec import SemanticCodec

from .classic import ClassicCodec, bits_per_pixel
from .metrics import QualityMeter
from .rlasc import LevelPlan, compress_levels

__all__ = ["EvalSet", "PAPER_TARGETS", "PointResult", "calibrate", "derived_targets", "encode_plans", "evaluate_classic",
           "evaluate_plan", "refine_candidates", "select_settings"]

# the paper's 0-0.5 bpp sweep (256x512 Cityscapes): dense at low rates, where task scores change fastest.
# Not a default any more (64x128 files cost far more per pixel); kept for ``--targets`` by hand.
PAPER_TARGETS = (0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.16, 0.19, 0.22, 0.26, 0.3, 0.35, 0.4, 0.45, 0.5)


def derived_targets(low: float, high: float, count: int) -> tuple[float, ...]:
    """``count`` target rates (bpp) spaced geometrically from ``low`` to ``high``: evenly in log-rate
    (the axis of the BD integrals), so denser at low rates in bpp; rounded to 4 decimals."""
    if not 0.0 < low <= high or count < 1:
        raise ValueError(f"need 0 < low <= high and count >= 1, got low {low}, high {high}, count {count}")
    if count == 1 or low == high:
        return (round(float(high), 4),)
    return tuple(round(float(r), 4) for r in np.geomspace(low, high, count))


@dataclass
class EvalSet:
    """The evaluation images, held as uint8 (N,3,H,W) (lossless for 8-bit data), labels (N,H,W) and,
    when the data set has them, instance maps (N,H,W) int32 (0 = no object): the detection references."""

    images: Tensor
    labels: Tensor
    description: str = ""
    instances: np.ndarray | None = None

    @property
    def count(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def image(self, i: int) -> Tensor:
        return self.images[i].float() / 255.0

    def rgb(self, i: int) -> np.ndarray:
        """Image ``i`` as (H,W,3) uint8 for the engineered codecs."""
        return np.ascontiguousarray(self.images[i].permute(1, 2, 0).numpy())

    def batches(self, batch_size: int) -> Iterator[tuple[list[int], Tensor, Tensor]]:
        for start in range(0, self.count, batch_size):
            idx = list(range(start, min(self.count, start + batch_size)))
            yield idx, self.images[idx].float() / 255.0, self.labels[idx]

    def instance_batch(self, idx: Sequence[int]) -> np.ndarray | None:
        """Instance maps (B,H,W) of images ``idx``; None when the data set has none."""
        return None if self.instances is None else self.instances[list(idx)]

    def head(self, count: int) -> "EvalSet":
        """The first ``count`` images (with their labels and instance maps)."""
        inst = None if self.instances is None else self.instances[:count]
        return EvalSet(self.images[:count], self.labels[:count], self.description, inst)

    @classmethod
    def from_dataset(cls, dataset: Any, count: int, description: str = "", progress: bool = False) -> "EvalSet":
        """The first ``count`` items of a data set of (image float (3,H,W) in [0,1], labels (H,W)), and
        their instance maps when the data set has ``instance_map(i)`` (as the env reads them)."""
        count = min(int(count), len(dataset))
        if count < 1:
            raise ValueError("the evaluation needs at least one image")
        images, labels = [], []
        for i in tqdm(range(count), desc="load images", disable=not progress, leave=False):
            x, y = dataset[i]
            images.append((x.clamp(0, 1) * 255.0).round().to(torch.uint8))
            labels.append(torch.as_tensor(y).long())
        instance_map = getattr(dataset, "instance_map", None)
        instances = (np.stack([np.asarray(instance_map(i), dtype=np.int32) for i in range(count)])
                     if callable(instance_map) else None)
        return cls(torch.stack(images), torch.stack(labels), description, instances)


@dataclass
class PointResult:
    """One operating point: its JSON record, the coded files, and the preview image's reconstruction."""

    family: str
    record: dict[str, Any]
    payloads: list[bytes] = field(repr=False)
    preview: Tensor | None = field(default=None, repr=False)

    @property
    def bpp(self) -> float:
        return float(self.record["bpp"])

    def image_bpp(self, i: int, shape: tuple[int, int]) -> float:
        return bits_per_pixel(self.payloads[i], *shape)


def _measure(data: EvalSet, meter: QualityMeter, encode: Callable[[int], bytes], decode: Callable[[bytes], Tensor],
             batch_size: int, preview_index: int, desc: str, progress: bool) -> tuple[dict[str, Any], list[bytes], Tensor]:
    """Code every image, decode it back, feed the meter; returns (metrics, files, preview reconstruction)."""
    meter.reset()
    payloads: list[bytes] = []
    preview = None
    with tqdm(total=data.count, desc=desc, disable=not progress, leave=False, unit="img") as bar:
        for idx, images, labels in data.batches(batch_size):
            x_hat, bits = [], []
            for i in idx:
                blob = encode(i)
                image = decode(blob).detach().float().cpu().clamp(0, 1)
                if tuple(image.shape) != (3, *data.shape):
                    raise RuntimeError(f"{desc}: image {i} decoded to shape {tuple(image.shape)}")
                payloads.append(blob)
                x_hat.append(image)
                bits.append(len(blob) * 8)
                if i == preview_index:
                    preview = image
                bar.update(1)
            meter.update(images, torch.stack(x_hat), labels, torch.tensor(bits, dtype=torch.float64),
                         data.instance_batch(idx))
    return meter.result(), payloads, preview


def encode_plans(plans: Sequence[LevelPlan], data: EvalSet, progress: bool = True) -> list[list[bytes]]:
    """The files of every plan (plans[k] -> one file per image), each image analysed once per codec."""
    files: list[list[bytes]] = [[] for _ in plans]
    groups: dict[int, list[int]] = {}
    for k, plan in enumerate(plans):
        groups.setdefault(id(plan.codec), []).append(k)
    with tqdm(total=data.count * len(groups), desc="RL-ASC encode", disable=not progress, leave=False,
              unit="img") as bar:
        for members in groups.values():
            codec = plans[members[0]].codec
            for i in range(data.count):
                blobs = compress_levels(codec, data.image(i).to(codec.device), [plans[k].levels[i] for k in members])
                for k, blob in zip(members, blobs):
                    files[k].append(blob)
                bar.update(1)
    return files


def evaluate_plan(plan: LevelPlan, data: EvalSet, meter: QualityMeter, batch_size: int = 16, preview_index: int = 0,
                  progress: bool = True, files: Sequence[bytes] | None = None) -> PointResult:
    """RL-ASC at one level plan: ``codec.compress(image, levels)`` -> bytes -> ``codec.decompress``.

    ``files``: the plan's files made beforehand (:func:`encode_plans`, byte-identical to compress)."""
    codec: SemanticCodec = plan.codec

    def encode(i: int) -> bytes:
        if files is not None:
            return files[i]
        return codec.compress(data.image(i).to(codec.device), plan.levels[i])

    def decode(blob: bytes) -> Tensor:
        return codec.decompress(blob)

    k = plan.extra.get("level_offset") or 0
    tag = plan.name + (f" {'-' if k > 0 else '+'}{abs(k)}" if k else "")
    metrics, payloads, preview = _measure(data, meter, encode, decode, batch_size, preview_index, tag, progress)
    levels = [q for lv in plan.levels for q in lv.values()]
    record = {**metrics, "codec": plan.codec_name, **plan.extra,
              "level_mean": float(np.mean(levels)) if levels else None}
    return PointResult(plan.name, record, payloads, preview)


def evaluate_classic(codec: ClassicCodec, setting: Any, data: EvalSet, meter: QualityMeter, batch_size: int = 16,
                     preview_index: int = 0, progress: bool = True) -> PointResult:
    """An engineered codec at one setting: encode with the library, decode the file back, measure."""
    shape = data.shape

    def encode(i: int) -> bytes:
        return codec.encode(data.rgb(i), setting)

    def decode(blob: bytes) -> Tensor:
        return torch.from_numpy(codec.decode(blob, shape).copy()).permute(2, 0, 1).float() / 255.0

    metrics, payloads, preview = _measure(data, meter, encode, decode, batch_size, preview_index,
                                          f"{codec.name} {codec.knob} {setting}", progress)
    record = {**metrics, "setting": {codec.knob: setting}}
    return PointResult(codec.name, record, payloads, preview)


def evaluate_reference(codec: SemanticCodec, name: str, data: EvalSet, meter: QualityMeter, batch_size: int = 16,
                       preview_index: int = 0, progress: bool = True) -> PointResult:
    """A no-learning reference (R0 / R1 of :mod:`codec_models.references`) on ``codec``'s label map,
    through its real bytes."""
    from codec_models.references import reference_compress, reference_decompress

    h, w = data.shape
    metrics, payloads, preview = _measure(
        data, meter, lambda i: reference_compress(codec, data.image(i).to(codec.device), name),
        lambda blob: reference_decompress(codec, blob, h, w, name), batch_size, preview_index, name, progress)
    return PointResult(name, {**metrics, "setting": {"reference": name}}, payloads, preview)


def calibrate(codec: ClassicCodec, data: EvalSet, images: int = 4, stride: int = 1) -> list[tuple[int, Any, float]]:
    """``[(grid index, setting, mean bpp)]`` of every ``stride``-th setting on the first ``images`` images."""
    count = max(1, min(images, data.count))
    rgbs = [data.rgb(i) for i in range(count)]
    out = []
    for g in range(0, len(codec.grid), max(1, stride)):
        setting = codec.grid[g]
        out.append((g, setting, float(np.mean([bits_per_pixel(codec.encode(im, setting), *data.shape) for im in rgbs]))))
    return out


def _far_enough(bpp: float, others: Sequence[float], spacing: float) -> bool:
    return all(abs(bpp - o) > spacing * max(o, 1e-9) for o in others)


def select_settings(table: Sequence[tuple[int, Any, float]], targets: Sequence[float], max_bpp: float,
                    min_points: int, spacing: float = 0.02) -> list[int]:
    """Grid indices whose calibrated rate is nearest to each target (at most ~max_bpp); the cheapest
    further settings are added until there are ``min_points``. Settings whose rate lies within
    ``spacing`` (relative) of one already chosen are skipped (e.g. JPEG qualities 1 and 2)."""
    chosen: dict[int, float] = {}
    in_range = [row for row in table if row[2] <= max_bpp * 1.05]
    for t in targets:
        if in_range:
            g, _, bpp = min(in_range, key=lambda row: abs(row[2] - t))
            if g not in chosen and _far_enough(bpp, list(chosen.values()), spacing):
                chosen[g] = bpp
    for g, _, bpp in sorted(table, key=lambda row: (row[2], row[0])):
        if len(chosen) >= min_points:
            break
        if g not in chosen and _far_enough(bpp, list(chosen.values()), spacing):
            chosen[g] = bpp
    return sorted(chosen)


def refine_candidates(points: Sequence[tuple[int, dict[str, Any]]], key: str, max_bpp: float) -> list[int]:
    """Grid indices halfway between neighbouring points (in grid order), the pair whose ``key``
    differs most first; among points up to ~max_bpp (all points when fewer than two are in range)."""
    pts = sorted(points, key=lambda p: p[0])
    usable = [p for p in pts if p[1].get("bpp", 1e9) <= max_bpp * 1.05]
    if len(usable) < 2:
        usable = pts
    gaps = []
    for (g0, r0), (g1, r1) in zip(usable, usable[1:]):
        v0, v1 = r0.get(key), r1.get(key)
        if g1 - g0 >= 2 and v0 is not None and v1 is not None and v0 != v1:
            gaps.append((abs(v1 - v0), (g0 + g1) // 2))
    return [g for _, g in sorted(gaps, reverse=True)]
