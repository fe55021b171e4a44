"""Training and evaluation of the detection H (:mod:`.detector`, torchvision FCOS) on streets instances.

    python train_tasks.py --task detection --seed 0 --threads 2     # rlasc_env/weights/detection.pt

Targets are the data's *instances*: one box per visible object, from
``StreetsDataset.instance_maps()`` and ``codec_models.streets.instance_targets`` (touching cars
are two boxes). A data set without instance ids is refused (no fallback to connected
components). Training: Adam (learning rate ``LR_SCALE`` x ``--lr``) with a linear warm-up and
cosine decay, gradient-norm clipping, random horizontal flips and the light degradations of
:func:`.training.degrade` (blur, noise, downsample-upsample, quantisation, jitter) on all but ``clean_fraction`` of each batch, so that
L_S changes smoothly with reconstruction quality. Resumable from ``{run_dir}/detection/state.pt``,
tensorboard scalars in ``{run_dir}/detection/tb``.

Figures (val and test, clean and degraded): mAP@0.5 and mAP@[.5:.95] over the thing classes
(torchmetrics ``MeanAveragePrecision``, COCO protocol, pycocotools backend, aggregated over the
images), per-class AP@0.5 and AP@[.5:.95], and the env's per-image metric, eq. 7's mean box IoU,
with detections = boxes scoring at least the score threshold. The threshold is chosen on the
clean val images as the one of :data:`THRESHOLDS` with the largest mean box IoU, and saved in
the checkpoint's meta (``score_threshold``), which :class:`~.detection.DetectionTask` reads.

Measured (seed 0, one thread on a shared 2-core CPU, 0.66 CPU-s per step of 16 images):
lr 2e-3: 400 steps val mAP@0.5 0.18; 900 steps val 0.30, test 0.29 (mAP@[.5:.95] 0.11, mean box
IoU 0.39, threshold 0.40). lr 4e-3: 400 steps val 0.21. The defaults (3000 steps, lr 4e-3, about
25 min with ``--threads 2``) are extrapolated from these, not measured.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from codec_models.checkpoint import atomic_save

from .detection import DETECTION_CLASSES, DETECTION_NAMES, MIN_PIXELS, DetectionTask
from .detector import DETECTOR_NAME, build_detector
from .networks import task_payload, weight_bytes

# FCOSDetH's constructor arguments of the shipped run (saved in the checkpoint's config).
DETECTOR_KWARGS: dict[str, Any] = {}
THRESHOLDS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
WARMUP_STEPS = 50
# Detection's learning rate is this times --lr (4e-3 at the default 2e-3): measured at 400 steps,
# val mAP@0.5 0.209 with 4e-3 vs 0.179 with 2e-3 (seed 0).
LR_SCALE = 2.0
CLIP_NORM = 10.0
Target = dict[str, Tensor]


def split_targets(dataset: str, split: str, preset: str, size: int | None, labels: Tensor,
                  min_pixels: int = MIN_PIXELS) -> list[Target]:
    """One target per image of a split: {"boxes" float32 (K,4) xyxy, "labels" int64 train ids} of the instances.

    Needs instance ids (``StreetsDataset.instance_maps``); ``labels`` (N,H,W) are the split's label maps.
    """
    from codec_models.datasets import load_dataset

    ds = load_dataset(dataset, split=split, preset=preset, size=size)
    if not hasattr(ds, "instance_maps"):
        raise ValueError(f"detection training needs instance ids (one box per object), which data set {dataset!r} "
                         "does not provide; train on the streets data")
    instances = ds.instance_maps()
    if instances.shape != tuple(labels.shape):
        raise ValueError(f"instance maps {instances.shape} do not match the labels {tuple(labels.shape)}")
    return [targets_from_instances(labels[i].numpy(), instances[i], min_pixels) for i in range(len(instances))]


def targets_from_instances(labels: np.ndarray, instances: np.ndarray, min_pixels: int = MIN_PIXELS) -> Target:
    """Detection target of one image from its label and instance maps, the task's classes only."""
    from codec_models.streets import instance_targets

    t = instance_targets(np.asarray(labels), np.asarray(instances), min_pixels)
    keep = np.isin(t["labels"], DETECTION_CLASSES)
    return {"boxes": torch.from_numpy(t["boxes"][keep]).float().reshape(-1, 4),
            "labels": torch.from_numpy(t["labels"][keep]).long()}


def augment_detection_batch(images: Tensor, targets: list[Target], gen: torch.Generator,
                            clean_fraction: float, augment: bool = True) -> tuple[Tensor, list[Target]]:
    """Random horizontal flips (boxes flipped too) and, if ``augment``, degradations on ~1-clean_fraction."""
    from .training import degrade

    width = images.shape[-1]
    flip = torch.rand(images.shape[0], generator=gen) < 0.5
    out_images, out_targets = [], []
    for img, tgt, f in zip(images, targets, flip.tolist()):
        boxes = tgt["boxes"]
        if f:
            img = img.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        if augment and float(torch.rand((), generator=gen)) >= clean_fraction:
            img = degrade(img[None], gen)[0]
        out_images.append(img)
        out_targets.append({"boxes": boxes, "labels": tgt["labels"]})
    return torch.stack(out_images), out_targets


# --- evaluation ---------------------------------------------------------------------------------

@torch.no_grad()
def detect_all(task: DetectionTask, images: Tensor, batch_size: int = 50, transform: Any = None) -> list[Target]:
    """The detector's raw detections (every box above its post-processing floor) on images (N,3,H,W)."""
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if transform is not None:
            x = transform(x)
        out += task.detections(x)
    return out


def mean_average_precision(detections: list[Target], targets: list[Target],
                           classes: tuple[int, ...] = DETECTION_CLASSES,
                           names: tuple[str, ...] = DETECTION_NAMES, per_class: bool = True) -> dict[str, Any]:
    """COCO-protocol mAP of detections against targets, aggregated over all images.

    Returns ``map_50`` (mAP at IoU 0.5), ``map`` (mAP@[.5:.95]), ``per_class_ap50`` /
    ``per_class_ap`` by class name (None for a class without ground truth), ``objects_per_class``.
    Uses torchmetrics ``MeanAveragePrecision`` (pycocotools backend, 100 detections per image, all
    areas); boxes xyxy in pixels. Per-class AP@0.5 is read from its precision table (IoU 0.5 row).
    ``per_class=False`` returns ``map_50`` and ``map`` only (the same values, without pycocotools'
    extra pass per class: about half the time, for callers that score many operating points).
    """
    from torchmetrics.detection import MeanAveragePrecision

    keep = torch.tensor(classes)
    preds = [{k: d[k][torch.isin(d["labels"], keep)] for k in ("boxes", "scores", "labels")} for d in detections]
    gts = [{k: t[k][torch.isin(t["labels"], keep)] for k in ("boxes", "labels")} for t in targets]
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=per_class,
                                  extended_summary=per_class, backend="pycocotools")
    metric.update(preds, gts)
    res = metric.compute()
    if not per_class:
        return {"map_50": float(res["map_50"]), "map": float(res["map"])}
    ids = res["classes"].reshape(-1).tolist()
    precision = res["precision"]  # (IoU thresholds, recall points, classes, areas, max detections)
    ap = dict(zip(ids, res["map_per_class"].reshape(-1).tolist()))
    ap50 = {}
    for k, c in enumerate(ids):
        p = precision[0, :, k, 0, -1]
        ap50[c] = float(p.mean()) if bool((p >= 0).any()) else -1.0
    counts = torch.cat([t["labels"] for t in gts]) if gts else torch.zeros(0, dtype=torch.long)
    named = lambda table: {n: (round(table[c], 4) if table.get(c, -1) >= 0 else None) for c, n in zip(classes, names)}
    return {"map_50": float(res["map_50"]), "map": float(res["map"]), "per_class_ap50": named(ap50),
            "per_class_ap": named(ap), "objects_per_class": {n: int((counts == c).sum()) for c, n in zip(classes, names)}}


def mean_box_iou(task: DetectionTask, detections: list[Target], targets: list[Target], shape: tuple[int, int],
                 threshold: float) -> float:
    """Mean over images of eq. 7's class-wise box IoU, detections scoring >= threshold."""
    from .detection import detection_loss

    refs = [task.boxes_by_class(t) for t in targets]
    dets = [task.boxes_by_class(d, threshold) for d in detections]
    return float(np.mean([detection_loss(r, d, shape)[1] for r, d in zip(refs, dets)]))


def choose_threshold(task: DetectionTask, detections: list[Target], targets: list[Target],
                     shape: tuple[int, int]) -> tuple[float, dict[str, float]]:
    """The score threshold of :data:`THRESHOLDS` with the largest mean box IoU (eq. 7) on these images."""
    sweep = {f"{t:.2f}": mean_box_iou(task, detections, targets, shape, t) for t in THRESHOLDS}
    best = max(THRESHOLDS, key=lambda t: sweep[f"{t:.2f}"])
    return best, sweep


def detection_figures(task: DetectionTask, images: Tensor, targets: list[Target], transform: Any = None,
                      detections: list[Target] | None = None) -> dict[str, Any]:
    """mAP@0.5, mAP@[.5:.95], per-class AP and mean box IoU (eq. 7) at the task's threshold.

    ``detections``: H's detections on these (transformed) images when already computed.
    """
    dets = detections if detections is not None else detect_all(task, images, transform=transform)
    out = mean_average_precision(dets, targets)
    out["box_iou"] = mean_box_iou(task, dets, targets, tuple(images.shape[-2:]), task.score_threshold)
    return out


# --- training -----------------------------------------------------------------------------------

def train_detection(cfg: Any, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], device: torch.device,
                    command: str, test: tuple[Tensor, Tensor] | None = None, steps: int = 3000) -> dict[str, Any]:
    """Train FCOSDetH on instance boxes, choose the score threshold on val, write ``detection.pt`` / ``.json``.

    ``cfg`` is a :class:`~.training.TrainTasksConfig`. Deterministic given ``cfg.seed`` (own
    generator for batches, flips and degradations) and independent of the other tasks.
    """
    from torch.utils.tensorboard import SummaryWriter

    from .training import (ResumableRun, _resume_key, cosine_factor, data_version, evaluation_degradation,
                           initialise_from, run_steps)

    wall_start = time.time()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    images, labels = train
    train_targets = split_targets(cfg.dataset, "train", cfg.preset, cfg.train_size, labels)
    val_targets = split_targets(cfg.dataset, "val", cfg.preset, cfg.val_size, val[1])
    test_targets = None if test is None else split_targets(cfg.dataset, "test", cfg.preset, test[0].shape[0], test[1])
    kwargs = dict(DETECTOR_KWARGS)
    network = build_detector(**kwargs).to(device)
    initialised = initialise_from("detection", cfg.init_from, network, kwargs) if cfg.init_from else None
    opt = torch.optim.Adam(network.parameters(), lr=cfg.lr * LR_SCALE)

    def schedule(s: int) -> float:
        warm = min(1.0, (s + 1) / WARMUP_STEPS)
        return warm * cosine_factor(s, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    run_dir = Path(cfg.run_dir) / "detection"
    state_path = run_dir / "state.pt"
    key = _resume_key("detection", cfg, steps, kwargs) | {"network": DETECTOR_NAME}
    state = ResumableRun(state_path, key, network, opt, sched, gen, device)
    state.resume(cfg.resume, "detection")
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=state.first if state.first else None)

    def step_loss(idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x = images[idx].float() / 255.0
        x, tgts = augment_detection_batch(x, [train_targets[i] for i in idx.tolist()], gen, cfg.clean_fraction,
                                          cfg.augment)
        tgts = [{k: v.to(device) for k, v in t.items()} for t in tgts]
        losses = network(list(x.to(device)), tgts)
        return sum(losses.values()), losses

    network.train()
    running = run_steps("train detection", state.first, steps, state.running, cfg, int(images.shape[0]), gen,
                        step_loss, opt, sched, writer, state.save, clip_norm=CLIP_NORM)
    train_seconds, cpu_seconds = state.seconds()

    network.eval()
    task = DetectionTask(network, "ground_truth", DETECTOR_NAME)
    shape = tuple(val[0].shape[-2:])
    val_detections = detect_all(task, val[0])
    threshold, sweep = choose_threshold(task, val_detections, val_targets, shape)
    task.score_threshold = threshold
    figures: dict[str, Any] = {}
    sets = [("val", val[0], val_targets)] + ([] if test is None else [("test", test[0], test_targets)])
    for name, imgs, tgts in sets:
        for suffix, transform in (("", None), ("_degraded", evaluation_degradation)):
            known = val_detections if (name, transform) == ("val", None) else None
            found = detection_figures(task, imgs, tgts, transform, known)
            for k, v in found.items():
                figures[f"{name}{suffix}_{k}"] = v
    figures["final_train_loss"] = running
    for name, value in figures.items():
        if isinstance(value, float):
            writer.add_scalar(f"figures/{name}", value, steps)
    writer.close()
    meta = {"command": command, "seed": cfg.seed, "device": str(device), "torch_threads": torch.get_num_threads(),
            "steps": steps, "batch_size": cfg.batch_size, "lr": cfg.lr * LR_SCALE, "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1), "resumed_from_step": state.first,
            "initialised_from": initialised,
            "train_images": int(images.shape[0]), "val_images": int(val[0].shape[0]),
            "test_images": 0 if test is None else int(test[0].shape[0]), "dataset": cfg.dataset,
            "preset": cfg.preset, "data_version": data_version(cfg.dataset), "network": DETECTOR_NAME,
            "network_kwargs": kwargs, "weight_bytes": weight_bytes(network),
            "label_mapping": "labels are Cityscapes train ids; detection classes: "
                             + ", ".join(f"{c} {n}" for c, n in zip(DETECTION_CLASSES, DETECTION_NAMES)),
            "classes_left_out": {"traffic light": "too small at 64x128 (val boxes: median 2x5 px, 90th "
                                                  "percentile 3x7, largest 4x9)"},
            "targets": "one box per instance (codec_models.streets.instance_targets, min_pixels "
                       f"{MIN_PIXELS}) of the detection classes",
            "score_threshold": threshold, "score_threshold_sweep_val_box_iou": sweep,
            "score_threshold_rule": "the threshold of the sweep with the largest mean box IoU (eq. 7) on clean val",
            "degraded_figures": "images blurred (sigma 1.5) then 4x downsampled-upsampled",
            "dataset_figures": "map_50 / map: mAP at IoU 0.5 / averaged over IoU 0.5:0.95 (COCO protocol, "
                               "torchmetrics MeanAveragePrecision, pycocotools), over the thing classes with "
                               "ground truth, aggregated over the images; box_iou: per-image eq. 7 mean box IoU "
                               "at score_threshold, averaged over the images",
            "figures": figures, "python": platform.python_version(), "torch": str(torch.__version__)}
    out_dir = Path(cfg.out_dir)
    train_config = asdict(cfg) | {"task": "detection", "steps": steps}
    payload = task_payload("detection", network, DETECTOR_NAME, kwargs, train_config, meta)
    meta["wall_seconds"] = round(time.time() - wall_start, 1)
    payload["meta"]["wall_seconds"] = meta["wall_seconds"]
    atomic_save(payload, out_dir / "detection.pt")
    tmp = out_dir / ".detection.json.tmp"
    tmp.write_text(json.dumps({"task": "detection", "format": payload["format"], "version": payload["version"],
                               "meta": meta}, indent=2) + "\n")
    tmp.replace(out_dir / "detection.json")
    return meta
