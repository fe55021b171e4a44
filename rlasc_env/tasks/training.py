"""Training of the task networks H (Section II-B) on the embedded streets data: ``train_tasks.py``.

    python train_tasks.py --task all --seed 0          # the shipped rlasc_env/weights/*.pt

Each H is trained with Adam (cosine-decayed learning rate) on random batches of the train
split, with light degradations (blur, noise, downsample-upsample, colour quantisation and
jitter) so that its output, and so L_S, changes smoothly with reconstruction quality. The
checkpoint ``{out_dir}/{task}.pt`` holds ``{"format": "rlasc-task", "version": 1 (detection: 2),
"task", "config", "state", "meta"}``; ``{task}.json`` repeats the meta (command, seed, data version,
device, threads, steps, wall seconds, figures). The data-set figures are on the first
``test_size`` test images, clean and degraded: segmentation mIoU (eq. 5 over all pixels) and
per-class IoU, classification macro average precision over classes and per-class AP; the val
figures are per-image means of the task's metric. Detection (a torchvision FCOS trained on
instance boxes) has its own loop and figures (mAP@0.5, mAP@[.5:.95], per-class AP):
:mod:`.detection_training`. Training state and tensorboard scalars go
to ``{run_dir}/{task}/`` so that an interrupted run continues with ``--resume``.
"""
from __future__ import annotations

import json
import math
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from codec_models.checkpoint import atomic_save, safe_load
from codec_models.classes import IGNORE_INDEX, NUM_TRAIN_CLASSES, TRAIN_NAMES
from codec_models.device import resolve_device

from .base import Task
from .classification import ClassificationTask, dataset_average_precision, presence_vector
from .detection import DetectionTask
from .networks import NUM_DET_CLASSES, THING_TRAIN_IDS, ClsNetH, SegNetH, task_payload, weight_bytes
from .segmentation import SegmentationTask, dataset_iou

AUX_WEIGHT = 0.5  # weight of ClsNetH's auxiliary coarse segmentation loss
TASK_NAMES = ("segmentation", "detection", "classification")
DEFAULT_STEPS = {"segmentation": 6000, "detection": 3000, "classification": 8000}
# Per-task constructor arguments, saved in the checkpoint (the classes' defaults stay those of the
# version-1 checkpoints, which keep loading). ClsNetH adds the area-share presence term (eq. 8's
# "covers >= 0.5% of the pixels"): +0.06 macro AP at 1000 steps (0.718 vs 0.660).
NETWORK_KWARGS: dict[str, dict[str, Any]] = {"classification": {"map_presence": True}}
INFERENCE_ONLY_KWARGS = ("flip_average",)  # network options that leave training (and so the weights) unchanged


def trained_kwargs(network_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments that decide the trained weights (``INFERENCE_ONLY_KWARGS`` left out)."""
    return {k: v for k, v in network_kwargs.items() if k not in INFERENCE_ONLY_KWARGS}
NETWORK_OF = {"segmentation": SegNetH, "classification": ClsNetH}  # detection: detection_training (FCOS)
TASK_CLASS = {"segmentation": SegmentationTask, "detection": DetectionTask, "classification": ClassificationTask}


@dataclass
class TrainTasksConfig:
    """Flags of train_tasks.py (one field per flag)."""

    task: Literal["segmentation", "detection", "classification", "all"] = "all"
    """Which task network H to train ("all" = the three, one after the other)."""
    steps: int | None = None
    """Optimiser steps; default per task (DEFAULT_STEPS): segmentation 6000 (~20 min wall with
    --threads 2 on an idle 2-core machine), classification 8000 (~10 min), detection 3000 (FCOS,
    0.66 CPU-s per step of 16 images: ~25 min estimated with --threads 2)."""
    batch_size: int = 16
    lr: float = 2e-3
    """Adam learning rate at the start (cosine decay to 5% of it)."""
    seed: int = 0
    out_dir: str = "rlasc_env/weights"
    """Folder of {task}.pt and {task}.json."""
    device: str = "auto"
    """"auto" (cuda when available), "cpu", "cuda", "cuda:1", ..."""
    dataset: str = "streets"
    preset: str = "tiny"
    train_size: int | None = None
    """Images of the train split (None = the split's default size)."""
    val_size: int | None = None
    """Images of the val split used for the figures (None = the split's default size)."""
    augment: bool = True
    """Train on degraded copies too (blur, noise, downsample-upsample, quantisation, jitter)."""
    clean_fraction: float = 0.35
    """Share of each batch left undegraded when augmenting."""
    crop_width: int = 0
    """Train on random full-height crops of this width (cheaper steps); 0 = whole images."""
    threads: int = 1
    """torch CPU threads (1 is fastest on a shared 2-core machine); 0 = torch's default."""
    progress: bool = True
    test_size: int = 200
    """Images of the test split (the first ones) for the data-set figures (mIoU, macro AP)."""
    run_dir: str = "runs/tasks"
    """Folder of the resumable training state ({run_dir}/{task}/state.pt) and tensorboard logs
    ({run_dir}/{task}/tb); not shipped."""
    resume: bool = False
    """Continue from {run_dir}/{task}/state.pt (same seed, steps and batch settings) instead of
    starting over; a resumed run gives the same weights as an uninterrupted one."""
    state_every: int = 200
    """Write the resumable training state every this many steps (0 = only at the end)."""
    init_from: str = ""
    """Start from the network of this task checkpoint (e.g. the shipped rlasc_env/weights/{task}.pt) instead of
    a random initialisation: a fine-tuning stage with a fresh optimiser and its own cosine schedule (a warm
    restart). Only with one --task; use another --seed than the first stage so the batches differ."""
    flip_average: bool = False
    """Segmentation only: the saved SegNetH averages its soft-max over the image and its mirror image at
    inference (eval mode; training is unchanged, so a run resumed with this flag gives the same weights)."""
    segmenter: str = ""
    """Classification only: build H as a SegPresenceH on this segmentation checkpoint (presence read off its
    predicted area shares, eq. 8) and fit only the per-class calibration (2 x 19 parameters, the segmenter
    frozen) on the train split; --steps then counts full-batch Adam iterations (default 500)."""
    presence_finetune_steps: int = 0
    """Classification with --segmenter only: after fitting the calibration, train the whole SegPresenceH (segmenter
    and calibration) end to end for this many steps of --batch-size images, flipped and degraded as in training:
    the segmenter's class-weighted cross-entropy plus --presence-weight times eq. 9's presence cross-entropy
    through the sharpened area shares (Adam, cosine decay). 0 = calibration only. Resumable (--resume)."""
    presence_weight: float = 5.0
    """Weight of eq. 9's presence cross-entropy in --presence-finetune-steps (the segmentation term has weight 1)."""
    presence_finetune_lr: float = 3e-4
    """Adam learning rate at the start of --presence-finetune-steps (cosine decay to 5% of it)."""
    width: int = 0
    """Segmentation only: trunk width of SegNetH (0 = its default, 40); a wider H is slower in the environment."""


def load_split(cfg: TrainTasksConfig, split: str, size: int | None) -> tuple[Tensor, Tensor]:
    """A whole split in memory: images (N,3,H,W) uint8 and labels (N,H,W) uint8."""
    from codec_models.datasets import load_dataset

    ds = load_dataset(cfg.dataset, split=split, preset=cfg.preset, size=size)
    if hasattr(ds, "arrays"):  # streets: the whole split as uint8 arrays (NxHxWx3, NxHxW)
        img, lab = ds.arrays()
        return torch.from_numpy(np.array(img)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.array(lab))
    images, labels = [], []
    for i in tqdm(range(len(ds)), desc=f"load {split}", disable=not cfg.progress, leave=False):
        img, lab = ds[i]
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        labels.append(lab.to(torch.uint8))
    return torch.stack(images), torch.stack(labels)


# --- degradations ------------------------------------------------------------------------------

def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B,3,H,W) with reflect padding."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect" if x.shape[-1] > radius else "replicate")
    x = F.conv2d(x, k, groups=x.shape[1])
    x = F.pad(x, (0, 0, radius, radius), mode="reflect" if x.shape[-2] > radius else "replicate")
    return F.conv2d(x, k.transpose(-1, -2), groups=x.shape[1])


def down_up(x: Tensor, factor: float, mode: str = "bilinear") -> Tensor:
    """Downsample by ``factor`` (antialiased) and upsample back: JPEG-like loss of detail."""
    size = x.shape[-2:]
    small = (max(1, round(size[0] / factor)), max(1, round(size[1] / factor)))
    low = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    if mode == "nearest":
        return F.interpolate(low, size=size, mode="nearest")
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


def degrade(x: Tensor, gen: torch.Generator) -> Tensor:
    """One random mix of the degradations for one image batch (1,3,H,W) in [0,1]."""
    def u(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand((), generator=gen))

    if u(0, 1) < 0.5:
        x = gaussian_blur(x, u(0.4, 2.0))
    if u(0, 1) < 0.5:
        x = down_up(x, u(1.5, 4.0), "nearest" if u(0, 1) < 0.3 else "bilinear")
    if u(0, 1) < 0.3:
        levels = int(u(6, 32))
        x = torch.round(x * levels) / levels
    if u(0, 1) < 0.5:
        mean = x.mean((-2, -1), keepdim=True)
        x = (x - mean) * u(0.75, 1.25) + mean + u(-0.08, 0.08)
    if u(0, 1) < 0.5:
        x = x + u(0.0, 0.08) * torch.randn(x.shape, generator=gen).to(x.device)
    return x.clamp(0, 1)


def augment_batch(images: Tensor, labels: Tensor, gen: torch.Generator, clean_fraction: float) -> tuple[Tensor, Tensor]:
    """Random horizontal flips for all, degradations for all but ~clean_fraction of the batch."""
    flip = torch.rand(images.shape[0], generator=gen) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
    labels = torch.where(flip.view(-1, 1, 1).to(labels.device), labels.flip(-1), labels)
    out = [img if float(torch.rand((), generator=gen)) < clean_fraction else degrade(img, gen)[0]
           for img in images.unsqueeze(1)]
    return torch.cat([o.view(1, *o.shape[-3:]) for o in out]), labels


def evaluation_degradation(x: Tensor) -> Tensor:
    """The fixed degradation of the 'degraded' figures: blur sigma 1.5 + 4x downsample-upsample."""
    return down_up(gaussian_blur(x, 1.5), 4.0)


# --- per-task targets and losses ----------------------------------------------------------------

def det_targets(labels: Tensor) -> Tensor:
    """Train-id maps -> dense thing classes: 0 background, 1..11 thing classes, 255 ignored (v1 detector's targets)."""
    lut = torch.zeros(256, dtype=torch.long, device=labels.device)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for i, c in enumerate(THING_TRAIN_IDS, start=1):
        lut[c] = i
    return lut[labels.long()]


def class_weights(counts: Tensor) -> Tensor:
    """Inverse square-root frequency weights, mean 1, capped at 10 (helps thin/small classes)."""
    freq = counts.double() / counts.sum().clamp(min=1)
    w = (freq + 1e-4).rsqrt()
    w = w / w[counts > 0].mean() if (counts > 0).any() else torch.ones_like(w)
    return w.clamp(max=10.0).float()


def training_objective(task: str, labels: Tensor) -> tuple[Any, Tensor | None]:
    """(loss function of (logits, labels), class weights) for one task."""
    if task == "segmentation":
        valid = labels[labels < NUM_TRAIN_CLASSES].long()
        weights = class_weights(torch.bincount(valid, minlength=NUM_TRAIN_CLASSES))

        def seg_loss(logits: Tensor, lab: Tensor) -> Tensor:
            return F.cross_entropy(logits, lab.long(), weight=weights.to(logits.device), ignore_index=IGNORE_INDEX)
        return seg_loss, weights
    if task == "detection":
        tgt = det_targets(labels)
        weights = class_weights(torch.bincount(tgt[tgt != IGNORE_INDEX], minlength=NUM_DET_CLASSES))

        def det_loss(logits: Tensor, lab: Tensor) -> Tensor:
            return F.cross_entropy(logits, det_targets(lab), weight=weights.to(logits.device),
                                   ignore_index=IGNORE_INDEX)
        return det_loss, weights

    valid = labels[labels < NUM_TRAIN_CLASSES].long()
    weights = class_weights(torch.bincount(valid, minlength=NUM_TRAIN_CLASSES))

    def cls_loss(outputs: tuple[Tensor, Tensor], lab: Tensor) -> Tensor:
        logits, aux = outputs
        presence = F.binary_cross_entropy_with_logits(logits, presence_vector(lab).to(logits.device))
        coarse = F.interpolate(lab[:, None].float(), size=aux.shape[-2:], mode="nearest")[:, 0].long()
        dense = F.cross_entropy(aux, coarse, weight=weights.to(aux.device), ignore_index=IGNORE_INDEX)
        return presence + AUX_WEIGHT * dense
    return cls_loss, weights


# --- evaluation ---------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_task(task: Task, images: Tensor, labels: Tensor, batch_size: int = 64,
                  transform: Any = None) -> dict[str, float]:
    """Mean L_S and metric of ``task`` against ground truth on images (N,3,H,W) (uint8 or float)."""
    losses, metrics, has_ref = [], [], []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        lab = labels[i:i + batch_size].long()
        refs = task.references(x, lab)
        if transform is not None:
            x = transform(x)
        ls, metric = task.loss(x, refs)
        losses.append(ls)
        metrics.append(metric)
        has_ref += [bool(r) if isinstance(r, dict) else True for r in refs]
    ls, metric, mask = torch.cat(losses), torch.cat(metrics), torch.tensor(has_ref)
    out = {"semantic_loss": float(ls.mean()), task.metric_name: float(metric.mean())}
    if isinstance(task, DetectionTask):  # also over the images that hold a thing class
        out[f"{task.metric_name}_images_with_things"] = float(metric[mask].mean()) if mask.any() else 1.0
        out["images_with_things"] = int(mask.sum())
    return out


@torch.no_grad()
def dataset_figures(task: Task, images: Tensor, labels: Tensor, batch_size: int = 64,
                    transform: Any = None) -> dict[str, Any]:
    """Data-set figures of H against ground truth on images (N,3,H,W) (uint8 or float).

    Segmentation: data-set mIoU and per-class IoU (:func:`dataset_iou`, eq. 5 over all pixels).
    Classification: macro average precision over classes and per-class AP
    (:func:`dataset_average_precision`). Other tasks: an empty dict.
    """
    if not isinstance(task, (SegmentationTask, ClassificationTask)):
        return {}
    outputs = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if transform is not None:
            x = transform(x)
        outputs.append(task.predict(x) if isinstance(task, SegmentationTask) else task.probabilities(x))
    if isinstance(task, SegmentationTask):
        return dataset_iou(torch.cat(outputs), labels.long(), task.num_classes)
    return dataset_average_precision(torch.cat(outputs), presence_vector(labels, task.num_classes))


# --- training -----------------------------------------------------------------------------------

def write_training_state(state_path: Path, key: dict[str, Any], step: int, running: Any, network: torch.nn.Module,
                         opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator, device: torch.device,
                         train_seconds: float, train_cpu_seconds: float) -> None:
    """Write the resumable state of a task network's training (atomically), read back by :func:`restore_training_state`."""
    atomic_save({"format": "rlasc-task-train-state", "key": key, "step": step, "running": running,
                 "network": network.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                 "train_seconds": train_seconds, "train_cpu_seconds": train_cpu_seconds}, state_path)


def restore_training_state(state_path: Path, key: dict[str, Any], network: torch.nn.Module,
                           opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator,
                           device: torch.device) -> tuple[int, Any, float, float]:
    """Load a resumable training state written with ``key`` into the network, optimiser, schedule and random
    generators; returns (step, running loss, train seconds, train CPU seconds). A state of another run is refused."""
    state = safe_load(state_path)
    if state.get("key") != key:
        raise ValueError(f"cannot resume from {state_path}: it was written with {state.get('key')}, this run has "
                         f"{key}; rerun without --resume (or with a fresh --run-dir) to start over")
    network.load_state_dict(state["network"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return int(state["step"]), state["running"], float(state["train_seconds"]), float(state["train_cpu_seconds"])


class ResumableRun:
    """One task network's training as a run that resumes: the state file ``path`` (the network, optimiser, schedule
    and random generators, written under ``key``; a state of another run is refused), the step the run starts at
    with its running loss, and the wall and CPU seconds of the runs before this one. ``save`` is :func:`run_steps`'
    ``save_state``."""

    def __init__(self, path: Path, key: dict[str, Any], network: torch.nn.Module, opt: torch.optim.Optimizer,
                 sched: Any, gen: torch.Generator, device: torch.device) -> None:
        self.path, self.key = path, key
        self._parts = (network, opt, sched, gen, device)
        self.first: int = 0
        self.running: Any = None
        self.earlier: tuple[float, float] = (0.0, 0.0)  # wall and CPU seconds of the runs before this one
        self._clock = (time.time(), time.process_time())

    def resume(self, asked: bool, name: str) -> None:
        """With ``asked`` (``--resume``), continue from the state at ``path``, or say there is none and start at 0."""
        if asked and self.path.is_file():
            self.first, self.running, wall, cpu = restore_training_state(self.path, self.key, *self._parts)
            self.earlier = (wall, cpu)
        elif asked:
            print(f"{name}: no training state at {self.path}; starting from step 0")
        self._clock = (time.time(), time.process_time())

    def seconds(self) -> tuple[float, float]:
        """Wall and CPU seconds of training so far, the runs before this one included."""
        return (self.earlier[0] + time.time() - self._clock[0], self.earlier[1] + time.process_time() - self._clock[1])

    def save(self, step: int, running: Any) -> None:
        """Write the state after ``step`` steps (atomically)."""
        write_training_state(self.path, self.key, step, running, *self._parts, *self.seconds())


def _resume_key(task: str, cfg: TrainTasksConfig, steps: int, network_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the run that wrote the state."""
    key = {"task": task, "seed": cfg.seed, "steps": steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
           "augment": cfg.augment, "clean_fraction": cfg.clean_fraction, "crop_width": cfg.crop_width,
           "dataset": cfg.dataset, "preset": cfg.preset, "train_size": cfg.train_size,
           "network_kwargs": trained_kwargs(network_kwargs)}
    if cfg.init_from:  # a fine-tuning stage resumes only from the same starting weights
        from ..versions import file_sha256

        key["init_sha256"] = file_sha256(cfg.init_from)
    return key


def initialise_from(task: str, path: str, network: torch.nn.Module, network_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Load the network weights of the task checkpoint at ``path`` into ``network`` (``--init-from``), refusing a
    checkpoint of another task, network or constructor arguments; returns what the meta records about it."""
    from ..versions import file_sha256
    from .networks import load_task_network

    loaded, found, meta = load_task_network(task, path)
    saved_kwargs, wanted_kwargs = trained_kwargs(meta.get("network_kwargs") or {}), trained_kwargs(network_kwargs)
    if type(loaded).__name__ != type(network).__name__ or saved_kwargs != wanted_kwargs:
        raise ValueError(f"--init-from {path}: it holds a {type(loaded).__name__} {saved_kwargs}, this run trains a "
                         f"{type(network).__name__} {dict(network_kwargs)}")
    network.load_state_dict(loaded.state_dict())
    return {"path": str(found), "sha256": file_sha256(found), "steps": meta.get("steps"),
            "command": meta.get("command"), "figures_before": {k: v for k, v in (meta.get("figures") or {}).items()
                                                             if isinstance(v, float) and k.startswith("test")}}


def data_version(dataset: str) -> int | None:
    """``codec_models.streets.GENERATOR_VERSION`` for the streets data (None for other data sets)."""
    if dataset != "streets":
        return None
    from codec_models.streets import GENERATOR_VERSION

    return int(GENERATOR_VERSION)


def _named(values: list[float], names: tuple[str, ...] = TRAIN_NAMES) -> dict[str, float | None]:
    """Per-class list -> {class name: value rounded to 4 digits (None for NaN)}."""
    return {n: (None if v != v else round(float(v), 4)) for n, v in zip(names, values)}


def cosine_factor(step: int, steps: int) -> float:
    """Learning-rate factor of a cosine decay from 1 to 0.05 over ``steps`` steps."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1)))


def cosine_schedule(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Adam's cosine decay to 5% of the initial rate over ``steps`` steps (every task network's schedule)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, steps))


def train_batch(train: tuple[Tensor, Tensor], idx: Tensor, device: torch.device, gen: torch.Generator,
                cfg: TrainTasksConfig, crop: int = 0) -> tuple[Tensor, Tensor]:
    """Images (float in [0, 1]) and labels of train rows ``idx`` on ``device``: a random full-height crop of width
    ``crop`` when set, flipped and degraded when ``cfg.augment``."""
    images, labels = train
    x = images[idx].to(device).float() / 255.0
    lab = labels[idx].to(device).long()
    if 0 < crop < x.shape[-1]:
        x0 = int(torch.randint(0, x.shape[-1] - crop + 1, (), generator=gen))
        x, lab = x[..., x0:x0 + crop], lab[..., x0:x0 + crop]
    if cfg.augment:
        x, lab = augment_batch(x, lab, gen, cfg.clean_fraction)
    return x, lab


def run_steps(desc: str, first: int, steps: int, running: Any, cfg: TrainTasksConfig, num_images: int,
              gen: torch.Generator, step_loss: Any, opt: torch.optim.Optimizer, sched: Any, writer: Any,
              save_state: Any, clip_norm: float | None = None) -> Any:
    """Steps ``first`` .. ``steps`` of Adam, each on ``cfg.batch_size`` random train rows: ``step_loss(idx)``
    returns (loss, {name: part}) for the rows ``idx``; the gradient norm is clipped to ``clip_norm`` when set,
    tensorboard gets the loss, its parts and the learning rate, and ``save_state(step, running)`` is called every
    ``cfg.state_every`` steps and at the end. Every task network's loop (detection's too). Returns the running
    (exponentially smoothed) loss."""
    params = [q for group in opt.param_groups for q in group["params"]]
    bar = tqdm(range(first, steps), initial=first, total=steps, desc=desc, disable=not cfg.progress,
               dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, num_images, (cfg.batch_size,), generator=gen)
        loss, parts = step_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        opt.step()
        sched.step()
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{sched.get_last_lr()[0]:.1e}")
            writer.add_scalar("train/loss", value, step + 1)
            writer.add_scalar("train/loss_smoothed", running, step + 1)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step + 1)
            for name, part in parts.items():
                writer.add_scalar(f"train/loss_{name}", float(part.detach()), step + 1)
        if cfg.state_every > 0 and (step + 1) % cfg.state_every == 0 and step + 1 < steps:
            save_state(step + 1, running)
    bar.close()
    save_state(steps, running)
    return running


def train_one(task: str, cfg: TrainTasksConfig, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
              device: torch.device, command: str, test: tuple[Tensor, Tensor] | None = None) -> dict[str, Any]:
    """Train H of ``task``, evaluate it on val (and test), write ``{task}.pt`` and ``{task}.json``.

    Deterministic given ``cfg.seed`` and independent of the other tasks: every task reseeds
    torch, numpy and its own batch/augmentation generator. With ``cfg.resume`` the run continues
    from ``{run_dir}/{task}/state.pt`` (network, optimiser, schedule and random states), which
    is written every ``cfg.state_every`` steps. Returns the meta (also saved in the JSON).
    """
    if task == "detection":  # FCOS on instance boxes: its own loop (detection_training.py)
        from .detection_training import train_detection

        return train_detection(cfg, train, val, device, command, test,
                               steps=cfg.steps if cfg.steps is not None else DEFAULT_STEPS[task])
    if task == "classification" and cfg.segmenter:
        return fit_presence_head(cfg, train, val, device, command, test)
    wall_start = time.time()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.steps if cfg.steps is not None else DEFAULT_STEPS[task]
    crop = cfg.crop_width
    network_kwargs = dict(NETWORK_KWARGS.get(task, {}))
    if cfg.width:
        network_kwargs["width"] = cfg.width
    if cfg.flip_average:
        network_kwargs["flip_average"] = True
    network = NETWORK_OF[task](**network_kwargs).to(device)
    initialised = initialise_from(task, cfg.init_from, network, network_kwargs) if cfg.init_from else None
    objective, weights = training_objective(task, train[1])
    opt = torch.optim.Adam(network.parameters(), lr=cfg.lr)
    sched = cosine_schedule(opt, steps)
    images, labels = train
    run_dir = Path(cfg.run_dir) / task
    state_path = run_dir / "state.pt"
    state = ResumableRun(state_path, _resume_key(task, cfg, steps, network_kwargs), network, opt, sched, gen, device)
    state.resume(cfg.resume, task)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=state.first if state.first else None)

    def step_loss(idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x, lab = train_batch(train, idx, device, gen, cfg, crop)
        return objective(network.forward_with_aux(x) if isinstance(network, ClsNetH) else network(x), lab), {}

    network.train()
    running = run_steps(f"train {task}", state.first, steps, state.running, cfg, int(images.shape[0]), gen,
                        step_loss, opt, sched, writer, state.save)
    train_seconds, cpu_seconds = state.seconds()
    return finish_task(task, cfg, network, network_kwargs, weights, val, test, writer, command, steps=steps,
                       first=state.first, running=running, train_seconds=train_seconds, cpu_seconds=cpu_seconds,
                       wall_start=wall_start, train_images=int(images.shape[0]), initialised=initialised)


def finish_task(task: str, cfg: TrainTasksConfig, network: torch.nn.Module, network_kwargs: dict[str, Any],
                weights: Tensor | None, val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor] | None, writer: Any,
                command: str, *, steps: int, first: int, running: Any, train_seconds: float, cpu_seconds: float,
                wall_start: float, train_images: int, initialised: dict[str, Any] | None,
                extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a trained segmentation or classification H on val and test, write ``{task}.pt`` and
    ``{task}.json`` into ``cfg.out_dir`` and return the meta."""
    network.eval()
    evaluator = TASK_CLASS[task](network, "ground_truth", type(network).__name__)
    figures: dict[str, Any] = {f"val_{k}": v for k, v in evaluate_task(evaluator, *val).items()}
    figures.update({f"val_degraded_{k}": v
                    for k, v in evaluate_task(evaluator, *val, transform=evaluation_degradation).items()})
    figures["final_train_loss"] = running
    for prefix, transform in (("test", None), ("test_degraded", evaluation_degradation)):
        if test is None:
            break
        found = dataset_figures(evaluator, *test, transform=transform)
        if "miou" in found:
            figures[f"{prefix}_miou"] = found["miou"]
            figures[f"{prefix}_per_class_iou"] = _named(found["per_class_iou"])
            if transform is None:
                figures["test_pixels_per_class"] = dict(zip(TRAIN_NAMES, found["pixels"]))
        elif "macro_ap" in found:
            figures[f"{prefix}_macro_ap"] = found["macro_ap"]
            figures[f"{prefix}_per_class_ap"] = _named(found["per_class_ap"])
            if transform is None:
                figures["test_images_per_class"] = dict(zip(TRAIN_NAMES, found["positives"]))
                figures["test_classes_absent_excluded_from_ap"] = [TRAIN_NAMES[i] for i in found["absent_classes"]]
    for name, value in figures.items():
        if isinstance(value, float):
            writer.add_scalar(f"figures/{name}", value, steps)
    writer.close()
    device = next(network.parameters()).device
    meta = {"command": command, "seed": cfg.seed, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch_threads": torch.get_num_threads(),
            "steps": steps, "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1), "resumed_from_step": first,
            "initialised_from": initialised, "train_images": train_images, "val_images": int(val[0].shape[0]),
            "test_images": 0 if test is None else int(test[0].shape[0]), "dataset": cfg.dataset,
            "preset": cfg.preset, "data_version": data_version(cfg.dataset),
            "network": type(network).__name__, "network_kwargs": network_kwargs,
            "weight_bytes": weight_bytes(network),
            "class_weights": None if weights is None else [round(float(w), 4) for w in weights],
            "degraded_figures": "images blurred (sigma 1.5) then 4x downsampled-upsampled",
            "dataset_figures": "test_*: the first test_images images of the test split; segmentation: data-set "
                               "mIoU (torchmetrics MulticlassJaccardIndex, macro over classes present, 255 "
                               "ignored); classification: macro average precision over the classes present in "
                               "at least one test image (torchmetrics MultilabelAveragePrecision)",
            "figures": figures, "python": platform.python_version(), "torch": str(torch.__version__),
            **(extra_meta or {})}
    out_dir = Path(cfg.out_dir)
    train_config = asdict(cfg) | {"task": task, "steps": steps}
    payload = task_payload(task, network, type(network).__name__, network_kwargs, train_config, meta)
    meta["wall_seconds"] = round(time.time() - wall_start, 1)
    payload["meta"]["wall_seconds"] = meta["wall_seconds"]
    atomic_save(payload, out_dir / f"{task}.pt")
    tmp = out_dir / f".{task}.json.tmp"
    tmp.write_text(json.dumps({"task": task, "format": payload["format"], "version": payload["version"],
                               "meta": meta}, indent=2) + "\n")
    tmp.replace(out_dir / f"{task}.json")
    return meta


PRESENCE_FIT_STEPS = 500  # full-batch Adam iterations of SegPresenceH's calibration (38 parameters)


def fit_presence_head(cfg: TrainTasksConfig, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
                      device: torch.device, command: str, test: tuple[Tensor, Tensor] | None = None) -> dict[str, Any]:
    """The classification H as a :class:`SegPresenceH` on the segmentation checkpoint ``cfg.segmenter``.

    First the calibration (:func:`fit_presence_calibration`, the segmenter frozen); then, with
    ``cfg.presence_finetune_steps``, every parameter end to end (:func:`finetune_presence_end_to_end`, resumable).
    Deterministic given ``cfg.seed`` on one device.
    """
    from ..versions import file_sha256
    from .networks import SegPresenceH, load_task_network

    wall_start, cpu_start = time.time(), time.process_time()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    segmenter, seg_path, seg_meta = load_task_network("segmentation", cfg.segmenter, device)
    if not isinstance(segmenter, SegNetH):
        raise ValueError(f"--segmenter {cfg.segmenter}: holds a {type(segmenter).__name__}, not a SegNetH")
    network_kwargs: dict[str, Any] = {"temperature": 0.3,
                                      "flip_average": bool(getattr(segmenter, "flip_average", False))}
    if segmenter.width != 40:  # a --width segmenter (the default keeps the saved arguments of earlier heads)
        network_kwargs["width"] = segmenter.width
    network = SegPresenceH(**network_kwargs).to(device)
    network.segmenter.load_state_dict(segmenter.state_dict())
    images, labels = train
    steps = cfg.steps if cfg.steps is not None else PRESENCE_FIT_STEPS
    finetune_steps = cfg.presence_finetune_steps
    state_path = Path(cfg.run_dir) / "classification" / "state.pt"
    key = {"task": "classification", "segmenter_sha256": file_sha256(seg_path), "seed": cfg.seed,
           "calibration_steps": steps, "finetune_steps": finetune_steps, "batch_size": cfg.batch_size,
           "lr": cfg.presence_finetune_lr, "presence_weight": cfg.presence_weight, "augment": cfg.augment,
           "clean_fraction": cfg.clean_fraction, "dataset": cfg.dataset, "preset": cfg.preset,
           "train_size": cfg.train_size, "network_kwargs": trained_kwargs(network_kwargs)}
    resuming = cfg.resume and finetune_steps > 0 and state_path.is_file()
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(Path(cfg.run_dir) / "classification" / "tb"))
    running = None
    if not resuming:  # a resumed fine-tune restores the calibrated network with its state
        running = fit_presence_calibration(network, images, labels, gen, cfg, device, steps, writer)
    fit = "per-class calibration only (segmenter frozen), full-batch Adam lr 0.05"
    first, done_seconds, done_cpu = 0, 0.0, 0.0
    if finetune_steps > 0:
        first, running, done_seconds, done_cpu = finetune_presence_end_to_end(
            network, train, gen, cfg, device, writer, key, state_path, resuming)
        fit = (f"per-class calibration (segmenter frozen, {steps} full-batch Adam iterations at lr 0.05), then "
               f"{finetune_steps} end-to-end steps of {cfg.batch_size} images (segmentation cross-entropy + "
               f"{cfg.presence_weight} x presence cross-entropy, Adam lr {cfg.presence_finetune_lr}, cosine decay)")
    segmenter_record = {"path": str(seg_path), "sha256": file_sha256(seg_path), "command": seg_meta.get("command"),
                        "test_miou": (seg_meta.get("figures") or {}).get("test_miou")}
    return finish_task("classification", cfg, network, network_kwargs, None, val, test, writer, command,
                       steps=steps + finetune_steps, first=first, running=running,
                       train_seconds=done_seconds + time.time() - wall_start,
                       cpu_seconds=done_cpu + time.process_time() - cpu_start, wall_start=wall_start,
                       train_images=int(images.shape[0]), initialised=None,
                       extra_meta={"segmenter": segmenter_record, "fit": fit})


def fit_presence_calibration(network: torch.nn.Module, images: Tensor, labels: Tensor, gen: torch.Generator,
                             cfg: TrainTasksConfig, device: torch.device, steps: int, writer: Any) -> float | None:
    """Fit SegPresenceH's per-class scale and bias (its segmenter frozen) to eq. 8's presence labels by
    minimising eq. 9's cross-entropy with full-batch Adam on the train split's area shares, each image flipped
    and degraded as in training; returns the final loss."""
    network.segmenter.eval().requires_grad_(False)
    shares, targets = [], []
    with torch.no_grad():
        for i in tqdm(range(0, images.shape[0], 64), desc="presence shares", disable=not cfg.progress, leave=False):
            x = images[i:i + 64].to(device).float() / 255.0
            lab = labels[i:i + 64].to(device).long()
            if cfg.augment:
                x, lab = augment_batch(x, lab, gen, cfg.clean_fraction)
            shares.append(network.shares(x))
            targets.append(presence_vector(lab.cpu()).to(device))
    share, target = torch.cat(shares), torch.cat(targets)
    opt = torch.optim.Adam([network.raw_scale, network.bias], lr=0.05)
    running = None
    for step in range(steps):
        loss = F.binary_cross_entropy_with_logits(network.logits_from_shares(share), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item()
        if step % 10 == 0 or step == steps - 1:
            writer.add_scalar("calibration/loss", running, step + 1)
    network.segmenter.requires_grad_(True)
    return running


def finetune_presence_end_to_end(network: torch.nn.Module, train: tuple[Tensor, Tensor], gen: torch.Generator,
                                 cfg: TrainTasksConfig, device: torch.device, writer: Any, key: dict[str, Any],
                                 state_path: Path, resume: bool) -> tuple[int, Any, float, float]:
    """Train every parameter of a calibrated SegPresenceH for ``cfg.presence_finetune_steps`` steps: the
    segmenter's class-weighted cross-entropy (eq. 5-6's labels) plus ``cfg.presence_weight`` times eq. 9's
    presence cross-entropy through the sharpened area shares, on flipped and degraded train batches.

    Measured on the -v2 H (CPU, 2000 steps, weight 5): macro AP 0.864 -> 0.867 on the first 200 test images,
    0.883 -> 0.898 on 1000 (docs/task_networks_v2.md). Returns (first step run, running loss, seconds and CPU
    seconds of earlier runs) like :func:`train_one`'s loop; resumable from ``state_path``."""
    images, labels = train
    steps = cfg.presence_finetune_steps
    seg_loss, _ = training_objective("segmentation", labels)
    opt = torch.optim.Adam(network.parameters(), lr=cfg.presence_finetune_lr)
    sched = cosine_schedule(opt, steps)
    state = ResumableRun(state_path, key, network, opt, sched, gen, device)
    state.resume(resume, "presence end to end")

    def step_loss(idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x, lab = train_batch(train, idx, device, gen, cfg)
        logits = network.segmenter.logits(x)
        presence = network.logits_from_shares(torch.softmax(logits / network.temperature, 1).mean((2, 3)))
        return seg_loss(logits, lab) + cfg.presence_weight * F.binary_cross_entropy_with_logits(
            presence, presence_vector(lab).to(device)), {}

    network.train()
    running = run_steps("presence end to end", state.first, steps, state.running, cfg, int(images.shape[0]), gen,
                        step_loss, opt, sched, writer, state.save)
    network.eval()
    return state.first, running, *state.earlier


def run(cfg: TrainTasksConfig, command: str = "") -> dict[str, dict[str, Any]]:
    """Train the configured task network(s); returns {task: meta}."""
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    tasks = TASK_NAMES if cfg.task == "all" else (cfg.task,)
    if cfg.init_from and len(tasks) != 1:
        raise ValueError("--init-from names one task's checkpoint: pass it with one --task, not 'all'")
    if cfg.flip_average and cfg.task != "segmentation":
        raise ValueError("--flip-average is an option of the segmentation H: pass it with --task segmentation")
    if cfg.segmenter and cfg.task != "classification":
        raise ValueError("--segmenter builds the classification H: pass it with --task classification")
    if cfg.presence_finetune_steps and not cfg.segmenter:
        raise ValueError("--presence-finetune-steps fine-tunes a SegPresenceH: pass it with --segmenter")
    if cfg.width and cfg.task != "segmentation":
        raise ValueError("--width is an option of the segmentation H: pass it with --task segmentation")
    if cfg.init_from and not Path(cfg.init_from).is_file():
        raise FileNotFoundError(f"--init-from {cfg.init_from}: no such checkpoint")
    train = load_split(cfg, "train", cfg.train_size)
    val = load_split(cfg, "val", cfg.val_size)
    test = load_split(cfg, "test", cfg.test_size) if cfg.test_size > 0 else None
    results = {}
    for task in tasks:
        results[task] = train_one(task, cfg, train, val, device, command, test=test)
        figs = results[task]["figures"]
        print(f"{task}: " + ", ".join(f"{k}={v:.4f}" for k, v in figs.items() if isinstance(v, float)))
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of train_tasks.py."""
    import tyro

    argv = sys.argv[1:] if argv is None else argv
    cfg = tyro.cli(TrainTasksConfig, args=argv, description=__doc__)
    run(cfg, command="python train_tasks.py " + shlex.join(argv))
    return 0
