"""Quality metrics of one operating point, averaged over the evaluation images (Section IV-A.3).

- ``miou``: mean over images of the per-image mIoU (eq. 5-6) of the segmentation task network H
  on the reconstruction against the ground-truth labels (``rlasc_env.tasks.batch_miou``, the
  definition the agent is trained with); ``miou_dataset``: torchmetrics
  ``MulticlassJaccardIndex`` (macro over the classes present, ignore 255) over all images.
- ``box_iou`` / ``accuracy``: the detection and classification tasks' per-image metrics (v0's
  figures, the env's per-step ``metric``), detection references from the data set's instance maps
  (one box per object, as the env builds them) when it has them.
- ``map50`` / ``map``: detection mAP@0.5 and mAP@[.5:.95] of H's detections against the data
  set's instance boxes over all images of the point (torchmetrics ``MeanAveragePrecision``,
  ``rlasc_env.tasks.detection_training.mean_average_precision``); ``macro_ap``: classification
  macro average precision over classes against the ground-truth presence over all images
  (``rlasc_env.tasks.classification.dataset_average_precision``). With ``miou_dataset``, these are
  the task networks v2's data-set metrics (:data:`DATASET_KEYS`).
- ``psnr`` / ``ssim``: torchmetrics, per image, then averaged.
- ``fid`` / ``kid``: torchmetrics ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` with a
  custom feature network (:class:`PooledFeatures`, not Inception: no Inception weights here).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
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
from rlasc_env.tasks.classification import ClassificationTask, dataset_average_precision, presence_vector
from rlasc_env.tasks.detection import DetectionTask, detection_loss
from rlasc_env.tasks.detection_training import mean_average_precision, targets_from_instances
from rlasc_env.tasks.segmentation import batch_miou

__all__ = ["DATASET_KEYS", "DATASET_METRICS", "INDEPENDENT_KEY", "INDEPENDENT_SEGMENTER", "PooledFeatures", "QualityMeter", "TASK_KEYS", "instance_targets_of",
           "kid_subset_size", "per_image_miou"]

# task name -> key of its per-image metric in a point's record (v0's figures, the env's per-step metric)
TASK_KEYS = {"segmentation": "miou", "detection": "box_iou", "classification": "accuracy"}
# task name -> key of its data-set metric (task networks v2), the metric of its per-task BD deltas
DATASET_KEYS = {"segmentation": "miou_dataset", "detection": "map50", "classification": "macro_ap"}
# the independent segmenter (issue 31): a segmentation scorer no codec trainer loads
INDEPENDENT_SEGMENTER = Path(__file__).resolve().parents[1] / "weights" / "independent_segmentation.pt"
# the independent segmenter's data-set metric (issue 31: a scorer no codec trainer loads), when one is given
INDEPENDENT_KEY = "miou_dataset_independent"
# data-set metric key -> what it is (report and JSON)
DATASET_METRICS = {
    INDEPENDENT_KEY: "segmentation data-set mIoU of the independent segmenter (rlasc_harness/weights/"
                     "independent_segmentation.pt: trained from scratch with its own seed and width, never seen by a "
                     "codec), same definition as miou_dataset",
    "miou_dataset": "segmentation data-set mIoU: torchmetrics MulticlassJaccardIndex (macro over the classes present, "
                    "ignore 255) over all pixels of all images",
    "map50": "detection mAP@0.5 against the data set's instance boxes (one box per object), torchmetrics "
             "MeanAveragePrecision over all images (rlasc_env.tasks.detection_training.mean_average_precision)",
    "map": "detection mAP@[.5:.95], same protocol as map50",
    "macro_ap": "classification macro average precision over classes against the ground-truth presence vectors, "
                "over all images (rlasc_env.tasks.classification.dataset_average_precision)",
}


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


def instance_targets_of(task: DetectionTask, labels: Tensor, instances: np.ndarray) -> list[dict[str, Tensor]]:
    """mAP targets of a batch: one box per object of the instance maps, the task's classes
    (``detection_training.targets_from_instances``, as train_tasks.py evaluates H)."""
    return [targets_from_instances(lab, ins, int(task.min_pixels))
            for lab, ins in zip(labels.cpu().numpy(), np.asarray(instances))]


class QualityMeter:
    """Accumulates every metric of one operating point over batches of (original, reconstruction, labels).

    The originals' FID/KID features are added once (:meth:`add_real`) and kept across points;
    :meth:`reset` starts a new point, :meth:`update` adds a batch, :meth:`result` averages.
    """

    def __init__(self, tasks: dict[str, Task], feature_net: PooledFeatures | None, num_images: int,
                 device: torch.device | str = "cpu", kid_subsets: int = 100, seed: int = 0,
                 independent: Task | None = None) -> None:
        self.tasks = dict(tasks)
        self.independent = independent  # a second segmenter: its data-set mIoU as INDEPENDENT_KEY
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
        self.jaccard_independent = MulticlassJaccardIndex(NUM_TRAIN_CLASSES, average="macro", ignore_index=IGNORE_INDEX)
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
        self.jaccard_independent.reset()
        self.detections: list[dict[str, Tensor]] = []  # H's raw detections, every image of the point
        self.box_targets: list[dict[str, Tensor]] | None = []  # None once a batch came without instance maps
        self.probabilities: list[Tensor] = []  # classification H's presence probabilities (B, M)
        self.presence: list[Tensor] = []  # ground-truth presence vectors (B, M)

    def _add(self, key: str, value: Tensor) -> None:
        self.values.setdefault(key, []).append(value.detach().float().cpu().reshape(-1))

    @torch.no_grad()
    def task_scores(self, images: Tensor, x_hat: Tensor, labels: Tensor, instances: np.ndarray | None = None
                    ) -> dict[str, Any]:
        """Per-image task metrics {key: (B,)} of reconstructions (B,3,H,W), plus H's outputs for the
        data-set metrics under private keys (``_pred``, ``_detections``, ``_probabilities``).
        References from the originals ``images``, their labels and instance maps (ground truth or
        H(x), as the task is built)."""
        out: dict[str, Any] = {}
        for name, task in self.tasks.items():
            refs = task.references_for(images, labels, instances)
            if name == "segmentation":
                miou, pred = per_image_miou(task, x_hat, refs)
                out["miou"] = miou
                out["_pred"] = pred
            elif isinstance(task, DetectionTask):
                detections = task.detections(x_hat)
                out[TASK_KEYS[name]] = task.loss_of_detections(detections, refs, tuple(x_hat.shape[-2:]))[1]
                out["_detections"] = detections
            else:
                out[TASK_KEYS.get(name, task.metric_name)] = task.loss(x_hat, refs)[1]
                if isinstance(task, ClassificationTask):
                    out["_probabilities"] = task.probabilities(x_hat)
        return out

    @torch.no_grad()
    def update(self, images: Tensor, x_hat: Tensor, labels: Tensor, bits: Tensor | None = None,
               instances: np.ndarray | None = None) -> None:
        """Add a batch: originals and reconstructions (B,3,H,W) in [0,1], labels (B,H,W), bits (B,),
        the data set's instance maps (B,H,W) (detection references and mAP targets) when it has them."""
        images = images.to(self.device, torch.float32)
        x_hat = x_hat.to(self.device, torch.float32).clamp(0.0, 1.0)
        labels = labels.long()
        h, w = images.shape[-2:]
        if bits is not None:
            self._add("bpp", bits.double() / (h * w))
        for key, value in self.task_scores(images, x_hat, labels, instances).items():
            if key == "_pred":
                self.jaccard.update(value.cpu(), labels.cpu())
            elif key == "_detections":
                self._add_detections(value, labels, instances)
            elif key == "_probabilities":
                self.probabilities.append(value.float().cpu())
                self.presence.append(presence_vector(labels, value.shape[1]))
            else:
                self._add(key, value)
        if self.independent is not None:
            self.jaccard_independent.update(self.independent.network(x_hat).argmax(1).cpu(), labels.cpu())
        self._add("psnr", peak_signal_noise_ratio(x_hat, images, data_range=1.0, reduction="none", dim=(1, 2, 3)))
        self._add("ssim", structural_similarity_index_measure(x_hat, images, data_range=1.0, reduction="none"))
        if self.fid is not None:
            self.fid.update(x_hat, real=False)
        if self.kid is not None:
            self.kid.update(x_hat, real=False)
        self.count += images.shape[0]

    def _add_detections(self, detections: list[dict[str, Tensor]], labels: Tensor,
                        instances: np.ndarray | None) -> None:
        """Keep a batch's detections and, from its instance maps, its mAP targets."""
        self.detections += detections
        if instances is None or self.box_targets is None:
            self.box_targets = None  # mAP needs one box per object: not computed for this point
            return
        self.box_targets += instance_targets_of(self.tasks["detection"], labels, instances)

    def dataset_metrics(self) -> dict[str, Any]:
        """The data-set metrics of the point's images: ``map50`` / ``map`` (detection, None without
        instance maps) and ``macro_ap`` (classification), for the tasks present."""
        out: dict[str, Any] = {}
        if "detection" in self.tasks and self.detections:
            out["map50"] = out["map"] = None
            if self.box_targets is not None:
                figures = mean_average_precision(self.detections, self.box_targets, per_class=False)
                # pycocotools answers -1 when no image holds a ground-truth box of the task's classes
                out["map50"], out["map"] = (v if v >= 0 else None for v in (figures["map_50"], figures["map"]))
        if self.probabilities:
            ap = dataset_average_precision(torch.cat(self.probabilities), torch.cat(self.presence))
            out["macro_ap"] = ap["macro_ap"] if math.isfinite(ap["macro_ap"]) else None
        return out

    def result(self) -> dict[str, Any]:
        """Means over the images of this point (plus ``*_std`` for the per-image metrics) and the
        data-set metrics (``miou_dataset``, ``map50``, ``map``, ``macro_ap``)."""
        out: dict[str, Any] = {}
        for key, chunks in self.values.items():
            values = torch.cat(chunks).double()
            finite = values[torch.isfinite(values)]
            out[key] = float(finite.mean()) if finite.numel() else None
            out[f"{key}_std"] = float(finite.std(unbiased=False)) if finite.numel() else None
        if "segmentation" in self.tasks and self.count:
            out["miou_dataset"] = float(self.jaccard.compute())
        if self.independent is not None and self.count:
            out[INDEPENDENT_KEY] = float(self.jaccard_independent.compute())
        out.update(self.dataset_metrics())
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
