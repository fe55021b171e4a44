"""Image classification task: L_S = cross-entropy (eq. 8-9, multi-label form), H = :class:`ClsNetH`.

A street scene holds many classes, so the one-hot p of eq. 8 becomes a presence vector p in
{0,1}^M (M = 19) and eq. 9 the mean binary cross-entropy over the M classes between p and H's
sigmoid outputs p_hat on x_hat. p_hat is clamped to [1e-3, 1 - 1e-3], which bounds L_S by 6.91;
in practice L_S stays below about 2.

Metrics: the per-step ``metric`` of the environment is per image, the accuracy of the
thresholded presence vector over the M classes (AP over one image's 19 labels is ill-defined
and would not be comparable between images); the data-set figure reported for H (weights'
JSON, aggregate reports) is the macro average precision over classes,
:func:`dataset_average_precision`, which is not inflated by the classes present in nearly
every image the way plain accuracy is.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from codec_models.classes import NUM_TRAIN_CLASSES

from .base import Task, register_task
from .networks import load_task_network, network_input

MIN_FRACTION = 0.005  # a class is present when it covers >= 0.5% of the (non-ignored) pixels
PROB_EPS = 1e-3


def presence_vector(labels: Tensor, num_classes: int = NUM_TRAIN_CLASSES, min_fraction: float = MIN_FRACTION) -> Tensor:
    """Ground-truth presence (B, M) float in {0, 1} of label maps (B,H,W) (or one map (H,W))."""
    labels = labels.long().cpu()
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    flat = labels.reshape(labels.shape[0], -1)
    valid = (flat >= 0) & (flat < num_classes)
    counts = torch.zeros(flat.shape[0], num_classes, dtype=torch.float64)
    counts.scatter_add_(1, flat.clamp(0, num_classes - 1), valid.double())
    total = valid.sum(1, keepdim=True).clamp(min=1)
    return (counts / total >= min_fraction).float()


def dataset_average_precision(probs: Tensor, targets: Tensor) -> dict[str, Any]:
    """Macro average precision over classes of presence probabilities (N, M) vs targets (N, M).

    The data-set figure of the classification H (torchmetrics ``MultilabelAveragePrecision``,
    one AP per class over the N images, then the mean). AP is undefined for a class absent from
    every image: such classes get NaN in ``per_class_ap``, are listed in ``absent_classes`` and
    are excluded from ``macro_ap``. ``positives`` counts the images holding each class.
    """
    from torchmetrics.classification import MultilabelAveragePrecision

    probs, targets = probs.float().cpu(), targets.long().cpu()
    num = targets.shape[1]
    positives = targets.sum(0)
    present = positives > 0
    per_class = torch.full((num,), float("nan"), dtype=torch.float64)
    if present.any():
        metric = MultilabelAveragePrecision(num_labels=int(present.sum()), average="none")
        per_class[present] = metric(probs[:, present], targets[:, present]).double()
    macro = float(per_class[present].mean()) if present.any() else float("nan")
    return {"macro_ap": macro, "per_class_ap": [float(v) for v in per_class],
            "absent_classes": [int(i) for i in torch.nonzero(~present).flatten()],
            "positives": [int(v) for v in positives]}


class ClassificationTask(Task):
    """H = multi-label classifier; reference = presence vector (ground truth or thresholded H(x))."""

    name = "classification"
    metric_name = "accuracy"  # per image; the data-set figure is macro AP (dataset_average_precision)
    loss_scale = "[0, ~2] (hard bound 6.91)"

    def __init__(self, network: nn.Module, reference: str = "ground_truth", network_name: str = "",
                 weights: str = "", meta: dict[str, Any] | None = None, threshold: float = 0.5) -> None:
        super().__init__(network, reference, network_name, weights, meta)
        self.num_classes = int(getattr(network, "num_classes", NUM_TRAIN_CLASSES))
        self.threshold = threshold

    @torch.no_grad()
    def probabilities(self, images: Tensor) -> Tensor:
        """H's class probabilities p_hat (B, M) on the CPU."""
        return torch.sigmoid(self.network(network_input(self.network, images))).float().cpu()

    def references(self, images: Tensor, labels: Tensor) -> list[Tensor]:
        """Presence vectors (M,): classes covering >= 0.5% of the pixels, or H(x) >= threshold."""
        if self.reference_mode == "ground_truth":
            return list(presence_vector(labels, self.num_classes))
        return list((self.probabilities(images) >= self.threshold).float())

    def loss(self, x_hat: Tensor, references: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(mean BCE over the M classes, accuracy of the thresholded presence) per image (eq. 9)."""
        p_hat = self.probabilities(x_hat).clamp(PROB_EPS, 1.0 - PROB_EPS)
        p = torch.stack([r.float().cpu() for r in references])
        bce = -(p * p_hat.log() + (1.0 - p) * (1.0 - p_hat).log()).mean(1)
        accuracy = ((p_hat >= self.threshold).float() == p).float().mean(1)
        return bce, accuracy

def make_classification_task(reference: str = "ground_truth", device: torch.device | str = "cpu",
                             weights: str | os.PathLike | None = None) -> ClassificationTask:
    """The registered factory: shipped (or given) ClsNetH weights."""
    network, path, meta = load_task_network("classification", weights, device)
    return ClassificationTask(network, reference, type(network).__name__, str(path), meta)


register_task("classification", make_classification_task)
