"""Quality metrics of one operating point, averaged over the evaluation images (Section IV-A.3).

- ``miou``: mean over images of the per-image mIoU (eq. 5-6) of the segmentation task network H
  on the reconstruction against the ground-truth labels (``rlasc_env.tasks.batch_miou``, the
  definition the agent is trained with); ``miou_dataset``: torchmetrics
  ``MulticlassJaccardIndex`` (macro over the classes present, ignore 255) over all images.
- ``box_iou`` / ``accuracy``: the detection and classification task metrics (their tasks' own).
- ``psnr`` / ``ssim``: torchmetrics, per image, then averaged.
- ``fid`` / ``kid``: torchmetrics ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` with a
  custom feature network (:class:`PooledFeatures`, not Inception: no Inception weights here).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from codec_models.classes import IGNORE_INDEX, NUM_TRAIN_CLASSES
from rlasc_env.tasks import Task
from rlasc_env.tasks.segmentation import batch_miou

__all__ = ["PooledFeatures", "QualityMeter", "TASK_KEYS", "kid_subset_size", "per_image_miou"]

# task name -> key of its metric in a point's record
TASK_KEYS = {"segmentation": "miou", "detection": "box_iou", "classification": "accuracy"}


class PooledFeatures(nn.Module):
    """A feature network's stage activations, global-average-pooled and concatenated.

    Wraps any module with ``features(x) -> list[(B,C,h,w)]`` (the codec's perceptual network phi)
    as torchmetrics' custom ``feature`` module: input float (B,3,H,W) in [0,1], output (B, F).
    """

    def __init__(self, network: nn.Module, name: str) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.name = name
        device = next(network.parameters()).device
        with torch.no_grad():
            self.num_features = int(self.forward(torch.rand(1, 3, 32, 32, device=device)).shape[1])

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        device = next(self.network.parameters()).device
        feats = self.network.features(x.to(device=device, dtype=torch.float32))
        return torch.cat([f.mean((-2, -1)) for f in feats], 1).float()


def kid_subset_size(num_images: int) -> int | None:
    """KID subset size for ``num_images`` images: half of them (at most 1000); None below 4 images."""
    return None if num_images < 4 else min(1000, num_images // 2)


def per_image_miou(task: Task, x_hat: Tensor, references: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(per-image mIoU (B,), predicted label maps (B,H,W)) of the segmentation task on ``x_hat``."""
    pred = task.predict(x_hat)
    ref = torch.stack([r.long().cpu() for r in references])
    return batch_miou(pred, ref, getattr(task, "num_classes", NUM_TRAIN_CLASSES)), pred


class QualityMeter:
    """Accumulates every metric of one operating point over batches of (original, reconstruction, labels).

    The originals' FID/KID features are added once (:meth:`add_real`) and kept across points;
    :meth:`reset` starts a new point, :meth:`update` adds a batch, :meth:`result` averages.
    """

    def __init__(self, tasks: dict[str, Task], feature_net: PooledFeatures | None, num_images: int,
                 device: torch.device | str = "cpu", kid_subsets: int = 100, seed: int = 0) -> None:
        self.tasks = dict(tasks)
        self.device = torch.device(device)
        self.seed = seed
        self.feature_net = feature_net
        self.fid = self.kid = None
        self.kid_subset = kid_subset_size(num_images)
        if feature_net is not None:
            self.fid = FrechetInceptionDistance(feature=feature_net, reset_real_features=False, normalize=True).to(self.device)
            if self.kid_subset is not None:
                with warnings.catch_warnings():  # "KID keeps every feature in memory": a few KB per image here
                    warnings.simplefilter("ignore", UserWarning)
                    self.kid = KernelInceptionDistance(feature=feature_net, subsets=kid_subsets, subset_size=self.kid_subset,
                                                       reset_real_features=False, normalize=True).to(self.device)
        self.jaccard = MulticlassJaccardIndex(NUM_TRAIN_CLASSES, average="macro", ignore_index=IGNORE_INDEX)
        self.real_count = 0
        self.reset()

    @torch.no_grad()
    def add_real(self, images: Tensor) -> None:
        """Add originals (B,3,H,W) in [0,1] to the FID/KID reference statistics."""
        images = images.to(self.device, torch.float32)
        if self.fid is not None:
            self.fid.update(images, real=True)
        if self.kid is not None:
            self.kid.update(images, real=True)
        self.real_count += images.shape[0]

    def reset(self) -> None:
        """Start a new operating point (the originals' FID/KID statistics are kept)."""
        self.values: dict[str, list[Tensor]] = {}
        self.count = 0
        if self.fid is not None and self.fid.fake_features_num_samples > 0:
            self.fid.reset()
        if self.kid is not None and len(self.kid.fake_features) > 0:
            self.kid.reset()
        self.jaccard.reset()

    def _add(self, key: str, value: Tensor) -> None:
        self.values.setdefault(key, []).append(value.detach().float().cpu().reshape(-1))

    @torch.no_grad()
    def task_scores(self, images: Tensor, x_hat: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Per-image task metrics {key: (B,)} of reconstructions (B,3,H,W); references from the
        originals ``images`` and their labels (ground truth or H(x), as the task is built)."""
        out = {}
        for name, task in self.tasks.items():
            refs = task.references(images, labels)
            if name == "segmentation":
                miou, pred = per_image_miou(task, x_hat, refs)
                out["miou"] = miou
                out["_pred"] = pred
            else:
                out[TASK_KEYS.get(name, task.metric_name)] = task.loss(x_hat, refs)[1]
        return out

    @torch.no_grad()
    def update(self, images: Tensor, x_hat: Tensor, labels: Tensor, bits: Tensor | None = None) -> None:
        """Add a batch: originals and reconstructions (B,3,H,W) in [0,1], labels (B,H,W), bits (B,)."""
        images = images.to(self.device, torch.float32)
        x_hat = x_hat.to(self.device, torch.float32).clamp(0.0, 1.0)
        labels = labels.long()
        h, w = images.shape[-2:]
        if bits is not None:
            self._add("bpp", bits.double() / (h * w))
        for key, value in self.task_scores(images, x_hat, labels).items():
            if key == "_pred":
                self.jaccard.update(value.cpu(), labels.cpu())
            else:
                self._add(key, value)
        self._add("psnr", peak_signal_noise_ratio(x_hat, images, data_range=1.0, reduction="none", dim=(1, 2, 3)))
        self._add("ssim", structural_similarity_index_measure(x_hat, images, data_range=1.0, reduction="none"))
        if self.fid is not None:
            self.fid.update(x_hat, real=False)
        if self.kid is not None:
            self.kid.update(x_hat, real=False)
        self.count += images.shape[0]

    def result(self) -> dict[str, Any]:
        """Means over the images of this point (plus ``*_std`` for the per-image metrics)."""
        out: dict[str, Any] = {}
        for key, chunks in self.values.items():
            values = torch.cat(chunks).double()
            finite = values[torch.isfinite(values)]
            out[key] = float(finite.mean()) if finite.numel() else None
            out[f"{key}_std"] = float(finite.std(unbiased=False)) if finite.numel() else None
        if "segmentation" in self.tasks and self.count:
            out["miou_dataset"] = float(self.jaccard.compute())
        torch.manual_seed(self.seed)  # KID draws its subsets with torch's global generator
        out["fid"] = _finite(self.fid.compute()) if self.fid is not None and self.count >= 2 else None
        if self.kid is not None and self.count >= self.kid_subset:
            kid_mean, kid_std = self.kid.compute()
            out["kid"], out["kid_std"] = _finite(kid_mean), _finite(kid_std)
        else:
            out["kid"] = None
        out["images"] = self.count
        return out


def _finite(value: Tensor) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def summarize(values: list[float]) -> tuple[float, float]:
    """(mean, population std) of a list of floats."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())
