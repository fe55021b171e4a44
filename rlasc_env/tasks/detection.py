"""Object detection task: L_S = -ln(mean class-wise box IoU) (eq. 7), H = a torchvision detector.

H is any model with torchvision's detection interface: in eval mode ``model(list of 3xHxW
images in [0, 1]) -> list of {"boxes" (K,4) xyxy, "labels" (K,), "scores" (K,)}``. The shipped H
is ``FCOSDetH`` (:mod:`.detector`: torchvision FCOS on a small backbone + FPN, trained on the
streets instances by ``python train_tasks.py --task detection``). Labels are Cityscapes *train
ids*; a model with other labels (e.g. a COCO-trained torchvision detector) is plugged in with
``label_map`` = {its label: train id} (labels not in the map are dropped). Detections are its
boxes scoring at least ``score_threshold`` (the shipped H's is chosen on val and saved in its
meta), of the task's classes (:data:`DETECTION_CLASSES`: the thing classes but traffic lights,
which are too small at 64x128: median 2x5 px), rounded to whole pixels.

References: ``"ground_truth"``: one box per object from the instance maps
(``references(images, labels, instances=...)``, ``codec_models.streets.instance_targets``); a
caller with label maps only (the env) gets the boxes of the connected components of each thing
class, where touching objects merge, with a warning. ``"original"``: H's detections on the original.

For each thing class m of the reference, B_g^m is the region covered by the union of its
reference boxes and B_d^m the region covered by the union of its detected boxes; the box IoU
is |B_g^m & B_d^m| / |B_g^m | B_d^m| (0 when nothing of class m was detected). L_S is
-ln of the mean over the reference classes, the mean clamped at 1e-3 (so L_S <= 6.91).
Detections of classes absent from the reference do not enter eq. 7. An image with no thing
class in its reference has L_S = 0 and metric 1.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from .base import Task, register_task
from .networks import THING_NAMES, THING_TRAIN_IDS, load_task_network

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), pixel indices, x1 and y1 exclusive
MIN_PIXELS = 4
# Classes of the detection task: the thing classes except traffic lights, which are too small at
# 64x128 to be detected (streets val: median box 2x5 px, 90th percentile 3x7, largest 4x9).
DETECTION_NAMES: tuple[str, ...] = tuple(n for n in THING_NAMES if n != "traffic light")
DETECTION_CLASSES: tuple[int, ...] = tuple(c for c, n in zip(THING_TRAIN_IDS, THING_NAMES) if n in DETECTION_NAMES)
MIN_MEAN_IOU = 1e-3
_EIGHT = np.ones((3, 3), dtype=bool)


def extract_boxes(label_map: Tensor | np.ndarray, classes: Iterable[int] = THING_TRAIN_IDS,
                  min_pixels: int = MIN_PIXELS) -> dict[int, list[Box]]:
    """Boxes of the 8-connected components of each class mask of a (H,W) train-id map.

    Components smaller than ``min_pixels`` pixels are dropped; classes without a box are left out.
    """
    lm = label_map.cpu().numpy() if isinstance(label_map, Tensor) else np.asarray(label_map)
    boxes: dict[int, list[Box]] = {}
    for c in classes:
        mask = lm == c
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=_EIGHT)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        found = [(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
                 for i, sl in enumerate(ndimage.find_objects(comp), start=1)
                 if sl is not None and sizes[i] >= min_pixels]
        if found:
            boxes[int(c)] = found
    return boxes


def box_region(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H,W) mask of the union of boxes."""
    region = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        region[y0:y1, x0:x1] = True
    return region


def class_box_iou(reference: dict[int, list[Box]], detected: dict[int, list[Box]],
                  shape: tuple[int, int]) -> dict[int, float]:
    """IoU(B_g^m, B_d^m) of eq. 5 for every reference class m, on box-union regions."""
    ious = {}
    for c, ref_boxes in reference.items():
        g = box_region(ref_boxes, shape)
        d = box_region(detected.get(c, []), shape)
        union = np.logical_or(g, d).sum()
        ious[c] = float(np.logical_and(g, d).sum() / union) if union else 0.0
    return ious


def detection_loss(reference: dict[int, list[Box]], detected: dict[int, list[Box]],
                   shape: tuple[int, int]) -> tuple[float, float]:
    """(L_S, mean box IoU) of one image (eq. 7); (0, 1) when the reference has no thing class."""
    if not reference:
        return 0.0, 1.0
    mean = float(np.mean(list(class_box_iou(reference, detected, shape).values())))
    return 0.0 - math.log(max(mean, MIN_MEAN_IOU)), mean


DEFAULT_SCORE_THRESHOLD = 0.3  # for a plugged-in detector without a recorded threshold


def round_boxes(boxes: Tensor, shape: tuple[int, int]) -> list[Box]:
    """Float xyxy boxes (K,4) -> whole-pixel boxes (x1, y1 exclusive, at least one pixel), clipped to shape."""
    h, w = shape
    b = torch.floor(boxes.detach().float().cpu() + 0.5).long()
    x0, y0 = b[:, 0].clamp(0, w - 1), b[:, 1].clamp(0, h - 1)
    x1, y1 = torch.maximum(b[:, 2].clamp(max=w), x0 + 1), torch.maximum(b[:, 3].clamp(max=h), y0 + 1)
    return [tuple(int(v) for v in row) for row in torch.stack([x0, y0, x1, y1], 1)]


class DetectionTask(Task):
    """H = a torchvision-interface detector; reference = boxes per thing class (eq. 7)."""

    name = "detection"
    metric_name = "box_iou"
    loss_scale = "[0, 6.91]"
    uses_instances = True  # ground-truth references: one box per object of the data's instance maps

    def __init__(self, network: nn.Module, reference: str = "ground_truth", network_name: str = "",
                 weights: str = "", meta: dict[str, Any] | None = None, min_pixels: int = MIN_PIXELS,
                 score_threshold: float | None = None, label_map: dict[int, int] | None = None,
                 classes: Iterable[int] = DETECTION_CLASSES) -> None:
        super().__init__(network, reference, network_name, weights, meta)
        self.min_pixels = min_pixels
        if score_threshold is None:
            score_threshold = float(self.meta.get("score_threshold", DEFAULT_SCORE_THRESHOLD))
        self.score_threshold = float(score_threshold)
        self.label_map = None if label_map is None else {int(k): int(v) for k, v in label_map.items()}
        self.classes = tuple(int(c) for c in classes)
        self._warned = False

    def _device(self) -> torch.device:
        p = next(self.network.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @torch.no_grad()
    def detections(self, images: Tensor) -> list[dict[str, Tensor]]:
        """H's raw detections (CPU tensors, labels as train ids) for images (B,3,H,W) or 3xHxW in [0, 1]."""
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.detach().to(device=self._device(), dtype=torch.float32).clamp(0.0, 1.0)
        out = []
        for d in self.network(list(x)):
            boxes, labels, scores = d["boxes"].cpu().float(), d["labels"].cpu().long(), d["scores"].cpu().float()
            if self.label_map is not None:
                mapped = torch.tensor([self.label_map.get(int(v), -1) for v in labels], dtype=torch.long)
                keep = mapped >= 0
                boxes, labels, scores = boxes[keep], mapped[keep], scores[keep]
            out.append({"boxes": boxes.reshape(-1, 4), "labels": labels, "scores": scores})
        return out

    def boxes_by_class(self, detection: dict[str, Tensor], threshold: float | None = None,
                       shape: tuple[int, int] | None = None) -> dict[int, list[Box]]:
        """{thing class: whole-pixel boxes} of one detection/target dict, scores >= threshold if given."""
        boxes, labels = detection["boxes"], detection["labels"]
        if threshold is not None and "scores" in detection:
            keep = detection["scores"] >= threshold
            boxes, labels = boxes[keep], labels[keep]
        shape = shape or (1 << 30, 1 << 30)
        out: dict[int, list[Box]] = {}
        for box, c in zip(round_boxes(boxes.reshape(-1, 4), shape), labels.tolist()):
            if c in self.classes:
                out.setdefault(int(c), []).append(box)
        return out

    def detect(self, images: Tensor) -> list[dict[int, list[Box]]]:
        """Detected boxes per thing class (score >= score_threshold), one dictionary per image."""
        shape = tuple(images.shape[-2:])
        return [self.boxes_by_class(d, self.score_threshold, shape) for d in self.detections(images)]

    def references(self, images: Tensor, labels: Tensor, instances: Tensor | np.ndarray | None = None
                   ) -> list[dict[int, list[Box]]]:
        """Boxes per thing class: one per object of the instance maps, or H's detections on the originals.

        ``instances`` (B,H,W) (0 = no object) give the ground-truth boxes (``instance_targets``);
        without them the ground truth falls back, with a warning, to connected components of the
        label maps (touching objects of one class become one box).
        """
        if self.reference_mode != "ground_truth":
            return self.detect(images)
        if labels.dim() == 2:
            labels = labels.unsqueeze(0)
        if instances is None:
            if not self._warned:
                warnings.warn("detection ground truth from label maps only: boxes are connected components, so "
                              "touching objects of one class merge; pass instances= (instance maps) for one box "
                              "per object", stacklevel=2)
                self._warned = True
            return [extract_boxes(lab, self.classes, self.min_pixels) for lab in labels]
        from codec_models.streets import instance_targets

        inst = instances.cpu().numpy() if isinstance(instances, Tensor) else np.asarray(instances)
        if inst.ndim == 2:
            inst = inst[None]
        refs = []
        for lab, ins in zip(labels.cpu().numpy(), inst):
            t = instance_targets(lab, ins, self.min_pixels)
            refs.append(self.boxes_by_class({"boxes": torch.from_numpy(t["boxes"]),
                                             "labels": torch.from_numpy(t["labels"])}))
        return refs

    def loss(self, x_hat: Tensor, references: list[dict[int, list[Box]]]) -> tuple[Tensor, Tensor]:
        """(-ln mean box IoU, mean box IoU) per image (eq. 7), one forward pass of H for the batch."""
        return self.loss_of_detections(self.detections(x_hat), references, tuple(x_hat.shape[-2:]))

    def loss_of_detections(self, detections: list[dict[str, Tensor]], references: list[dict[int, list[Box]]],
                           shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """:meth:`loss` from H's raw :meth:`detections` of images of ``shape`` (score threshold, whole-pixel
        boxes, eq. 7), so that one forward pass can serve both eq. 7 and mAP."""
        found = [self.boxes_by_class(d, self.score_threshold, shape) for d in detections]
        out = [detection_loss(ref, det, shape) for det, ref in zip(found, references)]
        return (torch.tensor([o[0] for o in out], dtype=torch.float32),
                torch.tensor([o[1] for o in out], dtype=torch.float32))

    def training_loss(self, x_hat: Tensor, images: Tensor, labels: Tensor) -> Tensor:
        """Stage III's differentiable L_task: FCOS's training loss of H (frozen, eval mode) on x_hat.

        Targets: H's detections on the originals (``reference="original"``) or the connected-component
        boxes of the label maps (``"ground_truth"``; the stage III batches carry no instance maps).
        Needs an FCOS-like H (``.transform``, ``.backbone``, ``.head``, ``.compute_loss``).
        """
        from .detector import detector_losses

        if not all(hasattr(self.network, a) for a in ("transform", "backbone", "head", "compute_loss")):
            raise TypeError(f"{self.network_name} has no FCOS-style training loss for stage III: "
                            "pass --stage3-task-weight 0")
        if self.reference_mode == "original":
            dets = self.detections(images)
            targets = [{"boxes": d["boxes"][d["scores"] >= self.score_threshold],
                        "labels": d["labels"][d["scores"] >= self.score_threshold]} for d in dets]
        else:
            targets = []
            for lab in labels.cpu():
                boxes = extract_boxes(lab, self.classes, self.min_pixels)
                flat = [(b, c) for c, bs in boxes.items() for b in bs]
                targets.append({"boxes": torch.tensor([b for b, _ in flat], dtype=torch.float32).reshape(-1, 4),
                                "labels": torch.tensor([c for _, c in flat], dtype=torch.long)})
        losses = detector_losses(self.network, list(x_hat.clamp(0, 1)), targets)
        return sum(losses.values())


def make_detection_task(reference: str = "ground_truth", device: torch.device | str = "cpu",
                        weights: str | os.PathLike | None = None, min_pixels: int = MIN_PIXELS,
                        score_threshold: float | None = None) -> DetectionTask:
    """The registered factory: shipped (or given) FCOSDetH weights and their recorded score threshold."""
    network, path, meta = load_task_network("detection", weights, device)
    return DetectionTask(network, reference, "FCOSDetH", str(path), meta, min_pixels, score_threshold)


register_task("detection", make_detection_task)
