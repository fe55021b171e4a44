"""Object detection task: L_S = -ln(mean class-wise box IoU) (eq. 7), H = :class:`DetNetH`.

H is a *segmentation-based* detector: it labels every pixel with background or one of the
11 thing classes, and its detections are the bounding boxes of the connected components of
each predicted class mask (:func:`extract_boxes`). Reference boxes come the same way from the
ground-truth label map or from H's output on the original image.

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
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from .base import Task, register_task
from .networks import THING_TRAIN_IDS, load_task_network, network_input

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), pixel indices, x1 and y1 exclusive
MIN_PIXELS = 4
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


class DetectionTask(Task):
    """H = dense thing-class detector; reference = boxes per thing class."""

    name = "detection"
    metric_name = "box_iou"
    loss_scale = "[0, 6.91]"

    def __init__(self, network: nn.Module, reference: str = "ground_truth", network_name: str = "",
                 weights: str = "", meta: dict[str, Any] | None = None, min_pixels: int = MIN_PIXELS) -> None:
        super().__init__(network, reference, network_name, weights, meta)
        self.min_pixels = min_pixels

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """H's thing label maps (B,H,W) int64 in train ids (255 = background), on the CPU."""
        return self.network.predict(network_input(self.network, images)).cpu()

    def detect(self, images: Tensor) -> list[dict[int, list[Box]]]:
        """Detected boxes per thing class, one dictionary per image."""
        return [extract_boxes(m, THING_TRAIN_IDS, self.min_pixels) for m in self.predict(images)]

    def references(self, images: Tensor, labels: Tensor) -> list[dict[int, list[Box]]]:
        """Boxes per thing class: from the data's label maps or from H on the originals."""
        if self.reference_mode == "ground_truth":
            if labels.dim() == 2:
                labels = labels.unsqueeze(0)
            return [extract_boxes(lab, THING_TRAIN_IDS, self.min_pixels) for lab in labels]
        return self.detect(images)

    def loss(self, x_hat: Tensor, references: list[dict[int, list[Box]]]) -> tuple[Tensor, Tensor]:
        """(-ln mean box IoU, mean box IoU) per image (eq. 7), one forward pass of H for the batch."""
        maps = self.predict(x_hat)
        shape = tuple(maps.shape[-2:])
        out = [detection_loss(ref, extract_boxes(m, ref.keys(), self.min_pixels), shape)
               for m, ref in zip(maps, references)]
        return (torch.tensor([o[0] for o in out], dtype=torch.float32),
                torch.tensor([o[1] for o in out], dtype=torch.float32))

def make_detection_task(reference: str = "ground_truth", device: torch.device | str = "cpu",
                        weights: str | os.PathLike | None = None, min_pixels: int = MIN_PIXELS) -> DetectionTask:
    """The registered factory: shipped (or given) DetNetH weights."""
    network, path, meta = load_task_network("detection", weights, device)
    return DetectionTask(network, reference, "DetNetH", str(path), meta, min_pixels)


register_task("detection", make_detection_task)
