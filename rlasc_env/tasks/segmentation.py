"""Semantic segmentation task: L_S = 1 - mIoU (eq. 5-6), H = :class:`SegNetH` (a mini PSPNet)."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from codec_models.classes import IGNORE_INDEX, NUM_TRAIN_CLASSES

from .base import Task, register_task
from .networks import load_task_network, network_input


def batch_miou(pred: Tensor, ref: Tensor, num_classes: int = NUM_TRAIN_CLASSES) -> Tensor:
    """Per-image mIoU (B,) of label maps (B,H,W) (eq. 5-6).

    IoU is averaged over the classes present in the reference or the prediction of that image;
    reference pixels equal to ``IGNORE_INDEX`` (or >= ``num_classes``) count for neither. An image
    with no valid pixel scores 1.
    """
    pred, ref = pred.long().cpu(), ref.long().cpu()
    k = num_classes
    valid = (ref >= 0) & (ref < k)
    batch = torch.arange(pred.shape[0]).view(-1, 1, 1).expand_as(ref)
    index = (batch * k * k + ref.clamp(0, k - 1) * k + pred.clamp(0, k - 1))[valid]
    conf = torch.bincount(index, minlength=pred.shape[0] * k * k).view(-1, k, k).double()
    tp = conf.diagonal(dim1=1, dim2=2)
    union = conf.sum(2) + conf.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    count = present.sum(1)
    miou = torch.where(count > 0, iou.sum(1) / count.clamp(min=1), torch.ones_like(iou[:, 0]))
    return miou.float()


def dataset_iou(preds: Tensor, refs: Tensor, num_classes: int = NUM_TRAIN_CLASSES) -> dict[str, Any]:
    """Data-set (not per-image) IoU of label maps (N,H,W): the aggregate figure of eq. 5.

    One confusion matrix over all pixels of all images (torchmetrics ``MulticlassJaccardIndex``,
    ``ignore_index=255``). ``miou`` is the macro average over the classes present (union > 0, i.e.
    in the ground truth or the prediction); ``per_class_iou`` is NaN for the other classes;
    ``pixels`` is the number of ground-truth pixels of each class.
    """
    from torchmetrics.classification import MulticlassJaccardIndex

    preds, refs = preds.long().cpu(), refs.long().cpu()
    metric = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE_INDEX, average="none")
    metric.update(preds, refs)
    conf = metric.confmat.double()
    union = conf.sum(0) + conf.sum(1) - conf.diagonal()
    per_class = metric.compute().double()
    macro = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE_INDEX, average="macro")
    miou = float(macro(preds, refs))
    return {"miou": miou, "per_class_iou": [float(v) if u > 0 else float("nan") for v, u in zip(per_class, union)],
            "pixels": [int(v) for v in conf.sum(1)]}


class SegmentationTask(Task):
    """H = semantic segmentation network; reference = label map (ground truth or H(x))."""

    name = "segmentation"
    metric_name = "miou"
    loss_scale = "[0, 1]"

    def __init__(self, network: nn.Module, reference: str = "ground_truth", network_name: str = "",
                 weights: str = "", meta: dict[str, Any] | None = None) -> None:
        super().__init__(network, reference, network_name, weights, meta)
        self.num_classes = int(getattr(network, "num_classes", NUM_TRAIN_CLASSES))

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """H's label maps (B,H,W) int64 on the CPU."""
        # max(1).indices: argmax(1)'s indices (the first maximum on ties), about 3x faster on NCHW logits on the CPU
        return self.network(network_input(self.network, images)).max(1).indices.cpu()

    def references(self, images: Tensor, labels: Tensor) -> list[Tensor]:
        """Label maps (H,W) int64: the data's (ignore = 255 kept) or H's on the originals."""
        if self.reference_mode == "ground_truth":
            if labels.dim() == 2:
                labels = labels.unsqueeze(0)
            return [lab.detach().long().cpu().clone() for lab in labels]
        return list(self.predict(images))

    def loss(self, x_hat: Tensor, references: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(1 - mIoU, mIoU) per image (eq. 6), one forward pass of H for the batch."""
        pred = self.predict(x_hat)
        miou = batch_miou(pred, torch.stack([r.long().cpu() for r in references]), self.num_classes)
        return 1.0 - miou, miou

def make_segmentation_task(reference: str = "ground_truth", device: torch.device | str = "cpu",
                           weights: str | os.PathLike | None = None) -> SegmentationTask:
    """The registered factory: shipped (or given) SegNetH weights."""
    network, path, meta = load_task_network("segmentation", weights, device)
    return SegmentationTask(network, reference, "SegNetH", str(path), meta)


register_task("segmentation", make_segmentation_task)
