"""Semantic-fidelity fine-tuning of the decoder (issue 31): stage I's objective plus the paper's task loss L_S.

    python train_codec.py fidelity --codec tiny --run-dir runs/codec/fidelity --minutes 95
    python train_codec.py fidelity --run-dir runs/codec/fidelity --resume          # continue it

The codec sends its label map losslessly, yet its decoder was trained on pixels (L1, L_P, a small L_G) only, so at
level 0 it paints less of what the map says than a flat class-mean painting does (docs/semantic_fidelity.md). This
trainer keeps F (the segmenter) and E (the block transform, whose symbols and code tables define the bits) fixed and
trains G_l, G_g and the attention, with D, on

    L = l1 * |x - x_hat| + lambda1 * L_P (eq. 11) + adv * L_G (eq. 33) + w * sum_t s_t L_t(H_t(x_hat), y)

where L_t is the training loss of task network H_t (segmentation cross-entropy, FCOS's per-pixel thing
cross-entropy, classification BCE: :func:`rlasc_harness.stage3.task_training_loss`, the differentiable stand-in of
eq. 4-9; s_t = ``--task-scale``, 1 unless set) for the three tasks together, and D takes its hinge step (eq. 32) first. Levels are random per concept
(eq. 24): an image draws one level for all its concepts with probability ``uniform_share``, else each concept draws
level 0 with probability ``level0_share`` and a uniform finer level otherwise, so every operating point trains.

**Scoring integrity.** The task networks in the loss are the ``-v1`` ones (``rlasc_env/weights/*.pt``); the checkpoint
is selected on *validation* images by those same networks, and the codec is scored elsewhere on *test* images by the
``-v3`` networks and by an independently trained segmenter, none of which this trainer loads.

The run resumes from ``<run_dir>/fidelity_last.pt`` (weights, D, optimizers, step, random states, best score); the
best checkpoint by the selection score is ``best.pt`` and the final export ``codec.pt`` (``--export`` too). Because E
and the code tables are unchanged, the bits of every (concept, level) are those of the starting codec, unless the run
starts under a new quantizer (``--channel-step-ratio``, ``--coder``): then the tables are refit once, before the
first step, and the decoder learns the symbols the new quantizer sends:

    python train_codec.py fidelity --codec tiny-hq --channel-step-ratio 16 --coder range --label-neighbours wnne
"""
from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassJaccardIndex
from tqdm import tqdm

from codec_models.classes import IGNORE_INDEX, NUM_TRAIN_CLASSES
from codec_models.checkpoint import atomic_save, build_codec, check_format, codec_payload, safe_load
from codec_models.datasets import load_dataset
from codec_models.device import resolve_device
from codec_models.discriminator import discriminator_hinge_loss, generator_hinge_loss
from codec_models.entropy import LabelMapModel
from codec_models.perceptual import perceptual_loss
from codec_models.training import (data_preset_of, environment_record, export_codec, fit_code_tables,
                                   fit_label_model, label_context, make_grid_image, requantized, write_json)
from rlasc_env.tasks import Task, make_task
from rlasc_env.tasks.classification import dataset_average_precision, presence_vector
from rlasc_harness.stage3 import load_start_codec, task_training_loss, train_and_export

__all__ = ["FIDELITY_FORMAT", "FIDELITY_VERSION", "FidelityConfig", "FidelityTrainer", "level_fraction", "sample_levels",
           "scale_gradient", "run_fidelity"]

FIDELITY_FORMAT = "rlasc-fidelity-training"
FIDELITY_VERSION = 1
STATE_FILE = "fidelity_last.pt"
TASKS = ("segmentation", "detection", "classification")
SELECTIONS = ("segmentation", "segmentation_classification")


@dataclass
class FidelityConfig:
    """Decoder fine-tuning for semantic fidelity (rlasc_harness/fidelity.py)."""

    codec: str = "tiny"  # starting codec: shipped name, exported codec.pt, or a finished stage-I/III checkpoint
    run_dir: str = "runs/codec/fidelity"  # fidelity_last.pt, best.pt, codec.pt, tensorboard logs (tb/)
    export: str | None = None  # also write the selected codec here (e.g. codec_models/weights/tiny-sf.pt)
    resume: bool = False  # continue from <run_dir>/fidelity_last.pt
    # --segmenter-from: F comes from that codec and the code tables are refitted on its label maps (--label-images
    # images, --label-neighbours contexts); E and the decoder stay --codec's.
    segmenter_from: str | None = None  # start with F taken from this codec (name or codec.pt)
    # A new quantizer for the start (ignored by --resume, which keeps the run's): the quantization matrix r
    # (channel c of n gets the level's step times r ** (c / (n - 1))) and the concept payloads' entropy coder
    # (huffman | range). The symbol tables are refit on --label-images training images before the first step, so
    # the decoder trains on the symbols it will be sent (codec_models.training.requantized).
    channel_step_ratio: float | None = None
    coder: str | None = None
    seed: int = 0  # torch and data-order seed
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0: torch's default)
    steps: int = 4000  # generator steps; the cosine schedule spans them
    minutes: float = 0.0  # stop after this many minutes of this process (0: run all steps); --resume continues
    batch_size: int = 8
    lr: float = 2.5e-5  # Adam learning rate of G_l, G_g, attention and D (cosine decay to 10%)
    beta1: float = 0.9  # Adam beta1 of the generator (D keeps Algorithm 1's 0.5)
    warmup: int = 50  # linear learning-rate warm-up steps
    grad_clip: float = 1.0  # max gradient norm of the generator step (0: off)
    tasks: tuple[str, ...] = TASKS  # task losses L_t in the objective (the -v1 task networks)
    task_weight: float = 0.5  # w: weight of each task loss
    # Per-task multipliers of w (e.g. ``--task-scale classification 4``): task t's term is w * scale[t] * L_t
    task_scale: dict[str, float] = field(default_factory=dict)
    l1_weight: float = 1.0
    level_l1_boost: float = 0.0  # a pixel's L1 weight: l1_weight * (1 + boost * t), t = its concept's level / (L-1)
    task_level_decay: float = 0.0  # the task terms' gradient at a pixel scaled by 1 - decay * t (0: uniform)
    perceptual_weight: float = 1.0  # lambda1 of eq. 33 (L_P, eq. 11)
    adversarial_weight: float = 0.01  # weight of L_G (hinge, eq. 33); 0 disables D
    uniform_share: float = 0.25  # share of images with one level for all concepts
    level0_share: float = 0.5  # otherwise: probability that a concept is at level 0
    train_images: int | None = None  # limit the training split (None: all of it)
    val_images: int = 64  # validation images for the selection score (val split, never test)
    eval_every: int = 125  # validation and best-checkpoint selection every N steps
    # The task losses can pull the decoder into a sharp region where its gradients explode: a validation PSNR at
    # level 0 this far below the start's rolls back to best.pt and halves the learning rate.
    rollback_db: float = 2.0  # dB below the start's validation PSNR (level 0) that triggers a rollback
    log_every: int = 25  # training scalars to tensorboard every N steps
    checkpoint_every: int = 100  # resumable state (fidelity_last.pt) every N steps
    progress: bool = True  # a tqdm bar
    # The label-map model's context set (wn | wnne: bitstream v3); None keeps the start codec's (wn if it has none).
    # The export refits the model (on label_images training images) only when this differs from the codec's.
    label_neighbours: str | None = None
    label_images: int = 2000  # training images the export's label model is counted on
    task_weights: dict[str, str] = field(default_factory=dict)  # task -> weights file of H (default: the -v1 ones)
    # The targets of the task terms: "ground_truth" (the data's labels) or "original" (H's output on the original
    # image: eq. 4's f_degrade(H(x), H(x_hat)), whose optimum at a fine level is x_hat = x)
    task_reference: str = "ground_truth"
    # best.pt's selection score on the validation images (the loss's own -v1 networks): "segmentation" = the mean of
    # the level-0 and highest-level mIoU; "segmentation_classification" = the mean of those two and the classifier's
    # macro AP at level 0 (issue 31's level-0 classification target)
    selection: str = "segmentation"


def sample_levels(present: Tensor, num_levels: int, uniform_share: float, level0_share: float,
                  rng: np.random.Generator) -> Tensor:
    """(B, M) levels: per image, one level for all concepts (probability ``uniform_share``), else per concept
    level 0 with probability ``level0_share`` and a uniform level in 1..L-1 otherwise."""
    batch, classes = present.shape
    uniform = rng.random(batch) < uniform_share
    one = rng.integers(0, num_levels, (batch, 1)).repeat(classes, 1)
    zero = rng.random((batch, classes)) < level0_share
    finer = rng.integers(1, num_levels, (batch, classes)) if num_levels > 1 else np.zeros((batch, classes), np.int64)
    per_concept = np.where(zero, 0, finer)
    levels = np.where(uniform[:, None], one, per_concept)
    return torch.as_tensor(levels, dtype=torch.long, device=present.device)


def level_fraction(levels: Tensor, labels: Tensor, num_levels: int) -> Tensor:
    """(B, H, W): the level of each pixel's concept, ``levels[b, labels[b, h, w]]``, divided by L - 1."""
    per_pixel = torch.gather(levels, 1, labels.flatten(1).long()).view_as(labels)
    return per_pixel.float() / max(num_levels - 1, 1)


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (weight,) = ctx.saved_tensors
        return grad * weight, None


def scale_gradient(x: Tensor, weight: Tensor) -> Tensor:
    """``x`` itself in the forward pass (the same floats); in the backward pass the gradient reaching ``x`` is
    multiplied by ``weight`` (broadcast to ``x``): a per-pixel weight for losses that do not take one (FCOS's)."""
    return _ScaleGradient.apply(x, weight.detach())


class FidelityTrainer:
    """G_l, G_g, attention and D trained on L1 + L_P + L_G + the three tasks' losses at random levels."""

    def __init__(self, cfg: FidelityConfig) -> None:
        if cfg.steps < 0 or cfg.batch_size < 1 or cfg.val_images < 1 or cfg.eval_every < 1:
            raise ValueError("need --steps >= 0, --batch-size >= 1, --val-images >= 1 and --eval-every >= 1")
        if not 0 <= cfg.uniform_share <= 1 or not 0 <= cfg.level0_share <= 1:
            raise ValueError("--uniform-share and --level0-share are probabilities in [0, 1]")
        unknown = sorted(set(cfg.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"--tasks {unknown}: choose among {list(TASKS)}")
        unscaled = sorted(set(cfg.task_scale) - set(cfg.tasks))
        if unscaled or any(not math.isfinite(v) or v < 0 for v in cfg.task_scale.values()):
            raise ValueError(f"--task-scale: each key one of --tasks {list(cfg.tasks)} (got {unscaled or 'ok'}) and "
                             f"each scale finite and >= 0 (got {dict(cfg.task_scale)})")
        if cfg.selection not in SELECTIONS:
            raise ValueError(f"--selection must be one of {list(SELECTIONS)}, not {cfg.selection!r}")
        if cfg.selection == "segmentation_classification" and not {"segmentation", "classification"} <= set(cfg.tasks):
            raise ValueError("--selection segmentation_classification needs both tasks in --tasks")
        if cfg.label_neighbours not in (None, *LabelMapModel.NEIGHBOURS.values()):
            raise ValueError(f"--label-neighbours must be one of {sorted(LabelMapModel.NEIGHBOURS.values())} (or "
                             f"left out: the start codec's), not {cfg.label_neighbours!r}")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.device = str(resolve_device(cfg.device))
        self.run_dir = Path(cfg.run_dir)
        self.state_path = self.run_dir / STATE_FILE
        self.step = 0
        self.best = -math.inf
        self.lr_scale = 1.0  # halved by every rollback
        self.rollbacks = 0
        self.history: dict[str, float] = {}
        self.seconds = 0.0
        saved = None
        if cfg.resume:
            if not self.state_path.is_file():
                raise FileNotFoundError(f"--resume: {self.state_path} does not exist (start without --resume)")
            saved = safe_load(self.state_path)
            check_format(saved, self.state_path, FIDELITY_FORMAT, FIDELITY_VERSION)
        elif self.state_path.is_file():
            raise FileExistsError(f"{self.state_path} exists: pass --resume to continue it or pick another --run-dir")
        if saved is not None:
            self.codec = build_codec(saved["codec"], self.state_path, self.device)
            self.sources: dict[str, Any] = dict(saved["sources"])
        else:
            self.codec, has_d, path = load_start_codec(cfg.codec, self.device)
            self.sources = {"codec": str(path), "discriminator": "loaded" if has_d else "fresh"}
        record = Path(self.sources["codec"]).with_suffix(".json")
        if "codec_record" not in self.sources and record.is_file():  # how the starting codec was trained (stage I)
            self.sources["codec_record"] = json.loads(record.read_text())
        preset = data_preset_of(self.codec.config.name)
        self.train_set = load_dataset("streets", "train", preset=preset, size=cfg.train_images, progress=False)
        refit = saved is None and cfg.segmenter_from is not None
        if refit:
            donor, _, donor_path = load_start_codec(cfg.segmenter_from, self.device)
            self.codec.segmenter.load_state_dict(donor.segmenter.state_dict())
            self.sources["segmenter"] = str(donor_path)
        if saved is None and (cfg.channel_step_ratio is not None or cfg.coder is not None):
            self.codec = requantized(self.codec, self.train_set, cfg.label_images, cfg.channel_step_ratio, cfg.coder,
                                     label_neighbours=cfg.label_neighbours if refit else None)
            self.sources["quantizer"] = {"channel_step_ratio": self.codec.config.channel_step_ratio,
                                         "coder": self.codec.config.coder, "table_images": cfg.label_images}
            refit = False  # the tables were just refit
        codec = self.codec
        for module in (codec.segmenter, codec.perceptual, codec.encoder, codec.classifier):
            module.requires_grad_(False).eval()
        self.trained = [codec.local, codec.global_, codec.attention]
        self.opt_g = torch.optim.Adam([p for m in self.trained for p in m.parameters()], cfg.lr, (cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(codec.discriminator.parameters(), cfg.lr, (0.5, 0.999))
        if cfg.task_reference not in ("ground_truth", "original"):
            raise ValueError(f"--task-reference must be 'ground_truth' or 'original', not {cfg.task_reference!r}")
        self.tasks: dict[str, Task] = {}
        for name in cfg.tasks:
            weights = cfg.task_weights.get(name)
            extra = {"weights": weights} if weights else {}
            task = make_task(name, reference=cfg.task_reference, device=self.device, **extra)
            task.network.requires_grad_(False).eval()
            self.tasks[name] = task
        self.sources["task_networks"] = {name: str(task.describe().get("weights")) for name, task in self.tasks.items()}
        val = load_dataset("streets", "val", preset=preset, size=cfg.val_images, progress=False)
        self.val_x = torch.stack([val[i][0] for i in range(len(val))])
        self.val_y = torch.stack([torch.as_tensor(val[i][1]).long() for i in range(len(val))])
        self.val_presence = presence_vector(self.val_y, NUM_TRAIN_CLASSES)  # the classification targets
        if refit:  # new label maps: new symbol statistics and label model
            fit_code_tables(codec, self.train_set, cfg.label_images, progress=False,
                            label_neighbours=cfg.label_neighbours)
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        if saved is not None:
            self.step = int(saved["step"])
            self.best = float(saved["best"])
            self.history = dict(saved["history"])
            self.seconds = float(saved.get("seconds", 0.0))
            self.lr_scale = float(saved.get("lr_scale", 1.0))
            self.rollbacks = int(saved.get("rollbacks", 0))
            self.opt_g.load_state_dict(saved["optimizers"]["g"])
            self.opt_d.load_state_dict(saved["optimizers"]["d"])
            self.rng.bit_generator.state = saved["rng"]["numpy"]
            torch.set_rng_state(saved["rng"]["torch"])
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))

    # ---- checkpoints -----------------------------------------------------------
    def save_state(self) -> Path:
        state = {"format": FIDELITY_FORMAT, "version": FIDELITY_VERSION, "step": self.step, "best": self.best,
                 "lr_scale": self.lr_scale, "rollbacks": self.rollbacks,
                 "seconds": self.seconds, "config": asdict(self.cfg), "codec": codec_payload(self.codec),
                 "optimizers": {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict()},
                 "rng": {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()},
                 "sources": self.sources, "history": self.history}
        return atomic_save(state, self.state_path)

    def meta(self, argv: Sequence[str]) -> dict[str, Any]:
        from codec_models.streets import GENERATOR_VERSION

        return {"command": "python train_codec.py fidelity " + shlex.join(list(argv)), "stage": "fidelity",
                "seed": self.cfg.seed, "device": self.device,
                "data": {"dataset": "streets", "generator_version": GENERATOR_VERSION},
                "train_config": asdict(self.cfg), "sources": self.sources, "figures": dict(self.history),
                "environment": environment_record()}

    # ---- steps -------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / max(cfg.steps, 1)))
        return cfg.lr * warm * cosine * self.lr_scale

    def rollback(self) -> None:
        """Back to best.pt's decoder and D with fresh optimizer moments and half the learning rate."""
        best = safe_load(self.run_dir / "best.pt")
        state = {k: v for k, v in best["state"].items()}
        self.codec.load_state_dict(state, strict=False)
        self.codec.invalidate_id()
        for opt in (self.opt_g, self.opt_d):
            opt.state.clear()
        self.lr_scale *= 0.5
        self.rollbacks += 1
        self.log({"rollbacks": self.rollbacks, "lr_scale": self.lr_scale})

    def batch(self) -> tuple[Tensor, Tensor]:
        idx = self.rng.integers(0, len(self.train_set), self.cfg.batch_size)
        x = torch.stack([self.train_set[int(i)][0] for i in idx]).to(self.device)
        y = torch.stack([torch.as_tensor(self.train_set[int(i)][1]).long() for i in idx]).to(self.device)
        return x, y

    def train_step(self) -> dict[str, float]:
        cfg, codec = self.cfg, self.codec
        lr = self.lr_at(self.step)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        x, y = self.batch()
        for module in self.trained + [codec.discriminator]:
            module.train()
        with torch.no_grad():
            analysis = codec.analyse(x)  # F's label map, as in the env
        levels = sample_levels(analysis.present, codec.num_levels, cfg.uniform_share, cfg.level0_share, self.rng)
        x_hat = codec.decode(analysis, levels)
        terms: dict[str, Tensor] = {}
        disc = codec.discriminator
        if cfg.adversarial_weight > 0:
            terms["loss_d"] = discriminator_hinge_loss(disc(x, analysis.onehot), disc(x_hat.detach(), analysis.onehot))
            self.opt_d.zero_grad(set_to_none=True)
            terms["loss_d"].backward()
            self.opt_d.step()
        disc.requires_grad_(False)
        t = level_fraction(levels, analysis.labels, codec.num_levels)  # (B, H, W) in [0, 1]
        try:
            abs_err = (x_hat - x).abs()
            terms["loss_l1"] = abs_err.detach().mean()
            total = cfg.l1_weight * (abs_err * (1 + cfg.level_l1_boost * t).unsqueeze(1)).mean() \
                if cfg.level_l1_boost else cfg.l1_weight * abs_err.mean()
            # The task terms see x_hat's value unchanged, but their gradient at each pixel scaled by its weight.
            task_input = scale_gradient(x_hat, (1 - cfg.task_level_decay * t).unsqueeze(1)) \
                if cfg.task_level_decay else x_hat
            terms["loss_p"] = perceptual_loss(codec.perceptual, x, x_hat).mean()
            total = total + cfg.perceptual_weight * terms["loss_p"]
            if cfg.adversarial_weight > 0:
                terms["loss_g"] = generator_hinge_loss(disc(x_hat, analysis.onehot))
                total = total + cfg.adversarial_weight * terms["loss_g"]
            for name, task in self.tasks.items():
                terms[f"loss_{name}"] = task_training_loss(task, task_input, x, y)
                total = total + cfg.task_weight * cfg.task_scale.get(name, 1.0) * terms[f"loss_{name}"]
            self.opt_g.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip > 0:
                terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    [p for m in self.trained for p in m.parameters()], cfg.grad_clip)
            self.opt_g.step()
        finally:
            disc.requires_grad_(True)
            codec.eval()
            codec.invalidate_id()
        if not torch.isfinite(total):
            raise FloatingPointError(f"step {self.step}: the loss is {total.item()} ({ {k: v.item() for k, v in terms.items()} })")
        mse = F.mse_loss(x_hat.detach().clamp(0, 1), x).item()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out.update(loss_total=float(total.detach()), psnr=10 * math.log10(1 / max(mse, 1e-10)), lr=lr)
        self._last = (x, x_hat.detach(), analysis.labels)
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation images at level 0 and at the highest level: mIoU of the loss's segmenter, PSNR, and the loss's
        classifier's macro AP; the selection score (``cfg.selection``) never sees a test image or a scoring network."""
        codec = self.codec
        codec.eval()
        seg, cls = self.tasks.get("segmentation"), self.tasks.get("classification")
        out: dict[str, float] = {}
        jaccard = MulticlassJaccardIndex(NUM_TRAIN_CLASSES, average="macro", ignore_index=IGNORE_INDEX)
        top = codec.num_levels - 1
        for q in (0, top):
            jaccard.reset()
            sq, probs = [], []
            for i in range(0, len(self.val_x), 16):
                x, y = self.val_x[i:i + 16].to(self.device), self.val_y[i:i + 16].to(self.device)
                analysis = codec.analyse(x)
                x_hat = codec.decode(analysis, torch.full_like(analysis.present, q, dtype=torch.long)).clamp(0, 1)
                sq.append(((x_hat - x) ** 2).flatten(1).mean(1))
                if seg is not None:
                    jaccard.update(seg.network(x_hat).argmax(1).cpu(), y.cpu())
                if cls is not None:
                    probs.append(cls.probabilities(x_hat))
            out[f"val/psnr_level{q}"] = float((10 * torch.log10(1 / torch.cat(sq).clamp_min(1e-10))).mean())
            if seg is not None:
                out[f"val/miou_level{q}"] = float(jaccard.compute())
            if cls is not None:
                out[f"val/cls_ap_level{q}"] = dataset_average_precision(torch.cat(probs), self.val_presence)["macro_ap"]
        if self.cfg.selection == "segmentation_classification":
            out["val/selection"] = (out["val/miou_level0"] + out[f"val/miou_level{top}"] + out["val/cls_ap_level0"]) / 3
        elif seg is not None:
            out["val/selection"] = 0.5 * (out["val/miou_level0"] + out[f"val/miou_level{top}"])
        else:
            out["val/selection"] = 0.5 * (out["val/psnr_level0"] + out[f"val/psnr_level{top}"])
        return out

    def log(self, values: dict[str, float], prefix: str = "") -> None:
        for tag, value in values.items():
            self.history[prefix + tag] = float(value)
            self.writer.add_scalar(prefix + tag, float(value), self.step)

    def run(self, argv: Sequence[str] = ()) -> dict[str, float]:
        cfg = self.cfg
        commands = self.sources.setdefault("commands", [] if self.step == 0 else
                                           ["(the invocations before this one were not recorded by this trainer version)"])
        commands.append(f"python train_codec.py fidelity {shlex.join(list(argv))}  # from step {self.step}")
        if self.step == 0:
            start = self.validate()
            self.log(start)
            self.history["start/psnr_level0"] = start["val/psnr_level0"]
            self.best = start["val/selection"]
            atomic_save(codec_payload(self.codec, self.meta(argv)), self.run_dir / "best.pt")
            print(f"step 0: {start}", flush=True)
        deadline = time.time() + 60 * cfg.minutes if cfg.minutes > 0 else math.inf
        bar = tqdm(total=cfg.steps, initial=min(self.step, cfg.steps), desc="fidelity", unit="step",
                   dynamic_ncols=True, disable=not cfg.progress)
        t0 = time.time()
        try:
            while self.step < cfg.steps:
                if time.time() > deadline:
                    print(f"--minutes {cfg.minutes:g} reached at step {self.step}: --resume continues",
                          file=sys.stderr)
                    break
                terms = self.train_step()
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    self.log(terms, "train/")
                    bar.set_postfix(psnr=f"{terms['psnr']:.2f}", seg=f"{terms.get('loss_segmentation', 0):.3f}")
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    values = self.validate()
                    self.log(values)
                    self.writer.add_image("samples", make_grid_image(*self._last), self.step)
                    if values["val/psnr_level0"] < self.history.get("start/psnr_level0", -math.inf) - cfg.rollback_db:
                        print(f"step {self.step}: validation PSNR {values['val/psnr_level0']:.2f} dB, more than "
                              f"{cfg.rollback_db:g} dB below the start: back to best.pt, learning rate x0.5",
                              file=sys.stderr, flush=True)
                        self.rollback()
                    elif values["val/selection"] > self.best:
                        self.best = values["val/selection"]
                        self.history["best_step"] = float(self.step)
                        atomic_save(codec_payload(self.codec, self.meta(argv)), self.run_dir / "best.pt")
                    print(f"step {self.step}: {values} best {self.best:.4f}", flush=True)
                if self.step % cfg.checkpoint_every == 0:
                    self.seconds += time.time() - t0
                    t0 = time.time()
                    self.save_state()
        finally:
            bar.close()
            self.seconds += time.time() - t0
            self.history["train_seconds"] = self.seconds
            self.save_state()
            self.writer.flush()
        return dict(self.history)

    def export(self, argv: Sequence[str] = ()) -> dict[str, Path]:
        """The best checkpoint by the validation score as ``codec.pt`` (and ``--export``), with its record."""
        best = safe_load(self.run_dir / "best.pt")
        codec = build_codec(best, self.run_dir / "best.pt", self.device)
        wanted = label_context(codec, self.cfg.label_neighbours)
        if codec.label_model is None or codec.label_model.neighbours != wanted:
            fit_label_model(codec, self.train_set, self.cfg.label_images, wanted)
        meta = self.meta(argv)
        meta["selected_step"] = int(self.history.get("best_step", 0))
        paths = {"codec": export_codec(codec, self.run_dir / "codec.pt", meta)}
        write_json(self.run_dir / "codec.json", meta)
        if self.cfg.export:
            paths["export"] = export_codec(codec, self.cfg.export, meta)
            write_json(Path(self.cfg.export).with_suffix(".json"), meta)
        return paths

    def close(self) -> None:
        self.writer.close()


def run_fidelity(cfg: FidelityConfig, argv: Sequence[str] = ()) -> dict[str, Any]:
    """``train_codec.py fidelity``: train (or resume), export the selected codec, print where it went."""
    return train_and_export(FidelityTrainer(cfg), argv, argv)
