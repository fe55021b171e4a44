"""Stage I training (Algorithm 1) and the networks it needs first (F, phi), then the code tables.

Phases, each resumable from ``<run>/last.pt``:

1. ``segmenter``: F trained with cross-entropy on the data's label maps.
2. ``perceptual``: phi (VGG layout) trained with a segmentation head on the same data.
3. ``stage1``: alternate one D step on L_D and one E/G_l/G_g/attention/classifier step on
   adv * L_G + lambda1 * L_P + lambda2 * L_C (+ l1 * |x - x_hat|), Adam(beta1 0.5, beta2 0.999).
4. ``tables``: Huffman/range code tables per level and channel and the label-map context
   model, counted on training images, stored with the weights.

Stage III (``--stage3``: E, decoder, D and the agent fine-tuned together) is run by
``rlasc_harness/stage3.py`` from the same :class:`TrainCodecConfig`; this module knows nothing of RL.
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from . import entropy
from .checkpoint import atomic_save, check_format, codec_payload, safe_load
from .classes import IGNORE_INDEX, colorize
from .classifier import classification_loss
from .codec import SemanticCodec
from .config import codec_preset
from .datasets import load_dataset
from .device import resolve_device
from .discriminator import discriminator_hinge_loss, generator_hinge_loss
from .distributed import DistInfo, barrier, init_distributed, shutdown
from .perceptual import perceptual_loss

TRAIN_STATE_FORMAT = "rlasc-codec-training"
PHASES = ("segmenter", "perceptual", "stage1", "tables", "done")


@dataclass
class TrainCodecConfig:
    """Stage I of RL-ASC: train F, phi, then E, G_l, G_g, attention, D (Algorithm 1)."""

    preset: str = "tiny"  # codec preset: tiny | paper | paper-medium | paper-high | test
    dataset: str = "streets"  # streets (embedded) | cityscapes (needs --data-root)
    data_root: str | None = None
    train_images: int | None = None  # limit the training split (None: the split's size)
    run_dir: str = "runs/codec"  # checkpoints, tensorboard logs, samples
    export: str | None = None  # also write the final codec here (e.g. codec_models/weights/tiny.pt)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 8
    num_workers: int = 0
    segmenter_steps: int = 500
    perceptual_steps: int = 400
    stage1_steps: int = 1200
    table_images: int = 1000
    lr: float = 2e-4  # Algorithm 1
    beta1: float = 0.5
    beta2: float = 0.999
    aux_lr: float = 2e-3  # F and phi
    perceptual_weight: float = 1.0  # lambda1 of eq. 33
    classification_weight: float = 0.1  # lambda2 of eq. 33
    adversarial_weight: float = 0.05  # weight of L_G (1.0 in the paper's eq. 33)
    l1_weight: float = 1.0  # pixel L1 term (not in eq. 33; speeds up small CPU runs; 0 disables)
    level_sampling: Literal["variable", "highest"] = "variable"  # stage I levels: random per concept, or
    # Algorithm 1's highest level for every concept
    uniform_share: float = 0.5  # variable: share of images with one random level for all concepts (the rest
    # draw an independent level per concept, Song et al. ICCV 2021)
    adversarial_start: int = 0  # stage I steps before D and L_G start (warm-up on the other terms)
    lr_decay: bool = False  # cosine decay of the stage I learning rate to 10% at the last step
    val_every: int = 0  # stage I: validation PSNR per uniform level every N steps (0: never)
    val_images: int = 64  # validation images (val split)
    block_init: bool = True  # block_basis codecs: start E's patch analysis and G_l's synthesis from the data's PCA
    encoder_lr_scale: float = 1.0  # stage I: E's learning rate relative to --lr (the fine levels' channels are small
    # values that a fast-moving E overwrites; see docs/codec_v2.md)
    freeze_encoder: bool = False  # keep E fixed in stage I (with block_init: E is then the PCA analysis)
    freeze_block_transform: bool = False  # block_basis codecs: keep E's patch analysis and G_l's block synthesis
    # fixed at their start (the PCA), so stage I trains only the deep paths, as refinements of a linear transform
    stage1_minutes: float = 0.0  # stop stage I after this many minutes of this process (0: run all steps)
    labels: str = "segmenter"  # label map fed to the codec in stage I: segmenter (F) | ground_truth
    codec_overrides: tuple[str, ...] = ()  # codec config fields key=value (YAML values) on top of --preset,
    # e.g. encoder_norm=true code_channels=8 (ablations)
    init_aux: str | None = None  # copy F and phi from this codec or training checkpoint and skip their phases
    init_codec: str | None = None  # start every network (and D) from this codec or training checkpoint; with
    # --perceptual-steps 0 --stage1-steps 0 --no-block-init it retrains F alone and refits the code tables
    log_every: int = 25
    sample_every: int = 250
    checkpoint_every: int = 100
    resume: bool = False  # continue from <run_dir>/last.pt (stage III: <run_dir>/stage3_last.pt)
    progress: bool = True
    # ---- stage III: joint fine-tuning of E, G_l, G_g, attention, D and the agent pi (rlasc_harness/stage3.py)
    stage3: bool = False  # run stage III instead of stage I (needs --policy)
    codec: str | None = None  # stage III: starting codec, shipped name or checkpoint (default: the shipped --preset one)
    policy: str | None = None  # stage III: REINFORCE policy.pt from train_agent.py (stage II)
    task: str = "segmentation"  # stage III: task whose network H gives L_task and the env's L_S
    stage3_steps: int = 300  # stage III codec steps (batches)
    stage3_lr: float = 5e-5  # stage III Adam learning rate of E/G_l/G_g/attention/classifier and D
    stage3_task_weight: float = 1.0  # weight of L_task, H's (frozen) training loss on x_hat (0 disables)
    stage3_agent_every: int = 1  # stage III: codec steps between two agent phases
    stage3_agent_updates: int = 1  # stage III: REINFORCE updates per agent phase
    stage3_levels: Literal["sample", "argmax"] = "sample"  # how the frozen agent picks the codec steps' levels
    stage3_agent_hp: tuple[str, ...] = ()  # REINFORCE overrides key=value on agents/hyperparams/reinforce.yml
    stage3_refit_every: int = 100  # stage III: refit the code tables every N codec steps (0: only at the end)
    lam: float = 1.0  # stage III env: lambda of eq. 13 (per bit per pixel)
    eta: float = 10.0  # stage III env: eta of eq. 13
    reference: Literal["ground_truth", "original"] = "ground_truth"  # stage III: what H's output is compared with
    export_policy: str | None = None  # stage III: also write the policy here (default: <export stem>.policy.pt)


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # Codec v2 on 2 CPU cores (docs/codec_v2.md has the ablations behind these): Adam (beta1 0.9) with
    # cosine decay, variable-rate levels, L1 + L_C (+ a small L_P) for the first 450 steps, then D's hinge loss joins
    # at a small weight; at most 40 minutes of stage I; the block transform starts from the data's PCA.
    # E is the data's block transform (PCA start) and stays fixed: training E at any of the tried learning rates
    # (1e-3, 1e-4) wiped out the finest levels within 50-75 steps (docs/codec_v2.md).
    # Stage I sees the data's label maps (every class, so every class's G_l head trains) rather than F's, whose
    # 500 steps label only 9 of the 19 classes on the test images: a better F can replace it later without
    # retraining the decoder.
    # Adam 3e-4 over 600 steps: at 1e-3 the decoder diverged after step 500 (validation PSNR at level 5 from 22.7 dB
    # to 18.4 dB by step 750).
    "tiny": dict(labels="ground_truth", lr=3e-4, beta1=0.9, lr_decay=True, stage1_steps=600, stage1_minutes=40.0,
                 adversarial_start=450, val_every=100,
                 adversarial_weight=0.01, perceptual_weight=0.02, level_sampling="variable",
                 freeze_encoder=True, freeze_block_transform=True),
    # The first codec (env -v0), as it was trained: Algorithm 1's highest level only.
    "tiny-v0": dict(level_sampling="highest"),
    "paper": dict(segmenter_steps=20000, perceptual_steps=10000, stage1_steps=70 * 2975 // 8,
                  adversarial_weight=1.0, l1_weight=0.0, level_sampling="variable", perceptual_weight=10.0,
                  table_images=2975,
                  stage3_steps=10 * 2975 // 8, stage3_lr=2e-5, stage3_refit_every=500),
    "test": dict(batch_size=2, segmenter_steps=2, perceptual_steps=2, stage1_steps=3, table_images=4,
                 train_images=8, log_every=1, sample_every=2, checkpoint_every=2, progress=False, stage3_steps=2),
}
TRAIN_PRESETS["test-v2"] = dict(TRAIN_PRESETS["test"], adversarial_start=1, val_every=2, val_images=4)
for _name in ("paper-medium", "paper-high"):
    TRAIN_PRESETS[_name] = TRAIN_PRESETS["paper"]


def data_preset_of(preset: str) -> str:
    """The data set shape preset (tiny, paper, test) a codec/training preset trains on."""
    return "paper" if preset.startswith("paper") else ("tiny" if preset.startswith("tiny") else "test")


def train_config_for(preset: str, **overrides: Any) -> TrainCodecConfig:
    """The training defaults of a preset, with overrides."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(TRAIN_PRESETS)}")
    return replace(TrainCodecConfig(preset=preset, **TRAIN_PRESETS[preset]), **overrides)


# --------------------------------------------------------------------------- helpers
def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: YAML value}`` (lists become tuples)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value")
        parsed = yaml.safe_load(value)
        out[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def infinite_batches(dataset: Dataset, cfg: TrainCodecConfig, info: DistInfo, start_step: int) -> Iterator:
    """Endless shuffled batches; the epoch order depends only on the seed and the epoch."""
    steps_per_epoch = max(1, len(dataset) // (cfg.batch_size * info.world_size))
    epoch, skip = divmod(start_step, steps_per_epoch)
    while True:
        if info.enabled:
            sampler = DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
            sampler.set_epoch(epoch)
            loader = DataLoader(dataset, cfg.batch_size, sampler=sampler, drop_last=True, num_workers=cfg.num_workers)
        else:
            gen = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch)
            loader = DataLoader(dataset, cfg.batch_size, shuffle=True, generator=gen, drop_last=True,
                                num_workers=cfg.num_workers)
        for i, batch in enumerate(loader):
            if i < skip:
                continue
            yield batch
        skip = 0
        epoch += 1


def random_levels(present: Tensor, num_levels: int, sampling: str, uniform_share: float,
                  generator: torch.Generator) -> Tensor:
    """Stage I levels (B,M): ``highest`` for all concepts (Algorithm 1), or ``variable``: per
    image, with probability ``uniform_share`` one random level for all its concepts, else an
    independent random level per concept, so E and the decoder learn every level an agent can
    pick (variable-rate training with random per-class quality maps, the paper's ref. [41])."""
    batch, classes = present.shape
    if sampling == "highest":
        return torch.full((batch, classes), num_levels - 1, dtype=torch.long, device=present.device)
    if sampling != "variable":
        raise ValueError(f"level_sampling must be 'variable' or 'highest', not {sampling!r}")
    uniform = torch.rand(batch, generator=generator) < uniform_share
    one_level = torch.randint(0, num_levels, (batch, 1), generator=generator).expand(batch, classes)
    per_class = torch.randint(0, num_levels, (batch, classes), generator=generator)
    return torch.where(uniform.view(-1, 1), one_level, per_class).to(present.device)


class GeneratorObjective(nn.Module):
    """E, G_l, G_g, attention and classifier under one module, so DDP can wrap them together."""

    def __init__(self, codec: SemanticCodec, cfg: TrainCodecConfig) -> None:
        super().__init__()
        self.codec = codec
        self.cfg = cfg

    def forward(self, images: Tensor, labels: Tensor, levels: Tensor | None, generator: torch.Generator):
        codec = self.codec
        analysis = codec.analyse(images, labels)
        if levels is None:
            levels = random_levels(analysis.present, codec.num_levels, self.cfg.level_sampling,
                                   self.cfg.uniform_share, generator)
        x_hat, parts = codec.decode(analysis, levels, return_parts=True)
        batch_index, class_ids = parts["batch_index"], parts["class_ids"]
        concepts = analysis.features.unsqueeze(1) * analysis.mask.unsqueeze(2)
        logits = codec.classifier(concepts[batch_index, class_ids], analysis.mask[batch_index, class_ids])
        return x_hat, analysis.onehot, classification_loss(logits, class_ids)


def make_grid_image(images: Tensor, x_hat: Tensor, labels: Tensor) -> Tensor:
    """Rows: originals, reconstructions, label maps (for tensorboard)."""
    from torchvision.utils import make_grid

    colours = torch.from_numpy(colorize(labels.cpu().numpy().astype(np.uint8))).permute(0, 3, 1, 2).float() / 255
    k = min(4, images.shape[0])
    stacked = torch.cat([images[:k].cpu(), x_hat[:k].detach().cpu().clamp(0, 1), colours[:k]])
    return make_grid(stacked, nrow=k, padding=2)


# --------------------------------------------------------------------------- trainer
class CodecTrainer:
    """Runs the phases of :data:`PHASES`, checkpointing atomically and resuming on request."""

    def __init__(self, cfg: TrainCodecConfig) -> None:
        self.cfg = cfg
        self.dist = init_distributed(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.device = str(resolve_device(cfg.device, self.dist.local_rank if self.dist.enabled else None))
        seed_everything(cfg.seed + self.dist.rank)
        self.run_dir = Path(cfg.run_dir)
        self.codec = SemanticCodec(codec_preset(cfg.preset, **parse_overrides(cfg.codec_overrides))).to(self.device)
        size = self.codec.config.height, self.codec.config.width
        kwargs: dict[str, Any] = {}
        if cfg.dataset == "cityscapes":
            kwargs.update(root=cfg.data_root, height=size[0], width=size[1])
        self.train_set = load_dataset(cfg.dataset, "train", preset=self._data_preset(), size=cfg.train_images, **kwargs)
        self.phase = PHASES[0]
        self.step = 0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.history: dict[str, float] = {}
        self.writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def _data_preset(self) -> str:
        return data_preset_of(self.cfg.preset)

    # ---- checkpoint --------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    def save_state(self) -> None:
        if not self.dist.is_main:
            return
        state = {
            "format": TRAIN_STATE_FORMAT, "version": 1, "phase": self.phase, "step": self.step,
            "train_config": asdict(self.cfg), "codec": codec_payload(self.codec),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "torch_rng": torch.get_rng_state(), "gen_rng": self.generator.get_state(),
            "history": dict(self.history),
        }
        atomic_save(state, self.last_path)

    def load_state(self) -> None:
        obj = safe_load(self.last_path)
        check_format(obj, self.last_path, TRAIN_STATE_FORMAT, 1)
        saved = obj["train_config"]
        if saved.get("preset") != self.cfg.preset:
            raise ValueError(f"{self.last_path} was trained with preset {saved.get('preset')!r}, not {self.cfg.preset!r}")
        from .checkpoint import build_codec

        loaded = build_codec(obj["codec"], self.last_path, self.device)
        self.codec.load_state_dict(loaded.state_dict())
        self.codec.tables, self.codec.label_model = loaded.tables, loaded.label_model
        self.phase, self.step = obj["phase"], int(obj["step"])
        self._pending_optimizers = obj["optimizers"]
        torch.set_rng_state(obj["torch_rng"])
        self.generator.set_state(obj["gen_rng"])
        self.history = dict(obj.get("history", {}))

    def copy_codec(self, path: str) -> None:
        """Every network of a codec or training checkpoint of the same preset (D too when it has one)."""
        from .checkpoint import build_codec

        obj = safe_load(path)
        payload = obj["codec"] if obj.get("format") == TRAIN_STATE_FORMAT else obj
        loaded = build_codec(payload, path, self.device)
        if loaded.config != self.codec.config:
            raise ValueError(f"{path} holds a {loaded.config.name!r} codec whose config differs from preset "
                             f"{self.cfg.preset!r} (with --codec-overrides): use the preset it was trained with")
        self.codec.load_state_dict(loaded.state_dict(), strict=False)
        self.codec.tables, self.codec.label_model = loaded.tables, loaded.label_model

    def copy_aux(self, path: str) -> None:
        """F and phi from a codec checkpoint or a training state (``last.pt``) of the same shapes."""
        obj = safe_load(path)
        state = obj["codec"]["state"] if obj.get("format") == TRAIN_STATE_FORMAT else obj.get("state")
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds no codec weights")
        for prefix, module in (("segmenter.", self.codec.segmenter), ("perceptual.", self.codec.perceptual)):
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub)
            except RuntimeError as exc:
                raise ValueError(f"{path}: its {prefix.rstrip('.')} does not fit this preset: {exc}") from exc

    def optimizer(self, name: str, params, lr: float, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
        if name not in self.optimizers:
            opt = torch.optim.Adam(params, lr=lr, betas=betas)
            pending = getattr(self, "_pending_optimizers", {}).pop(name, None)
            if pending is not None:
                opt.load_state_dict(pending)
            self.optimizers[name] = opt
        return self.optimizers[name]

    def log(self, tag: str, value: float) -> None:
        self.history[tag] = float(value)
        if self.writer is not None:
            self.writer.add_scalar(tag, float(value), self.step)

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.dist.enabled:
            return DistributedDataParallel(module, device_ids=[self.dist.local_rank] if self.device.startswith("cuda") else None)
        return module

    def progress(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, initial=min(self.step, total), desc=desc, dynamic_ncols=True,
                    disable=not (self.cfg.progress and self.dist.is_main), unit="step")

    # ---- phases ------------------------------------------------------------
    def run(self) -> dict[str, float]:
        if self.cfg.resume and self.last_path.is_file():
            self.load_state()
            done = int(self.history.get("stage1/steps_done", 0))
            if self.phase in ("tables", "done") and 0 < done < self.cfg.stage1_steps:
                # a finished run asked for more stage I steps: continue stage I, then refit the tables
                self.phase, self.step = "stage1", done
        elif self.cfg.resume and self.dist.is_main:
            print(f"--resume: no {self.last_path}, starting from scratch", file=sys.stderr)
        if self.cfg.init_codec and self.phase == PHASES[0] and self.step == 0:
            self.copy_codec(self.cfg.init_codec)
        if self.cfg.init_aux and self.phase in PHASES[:2] and self.step == 0:
            self.copy_aux(self.cfg.init_aux)
            self.phase = "stage1"
        started = time.time()
        while self.phase != "done":
            getattr(self, f"train_{self.phase}")()
            self.phase = PHASES[PHASES.index(self.phase) + 1]
            self.step = 0
            self.optimizers = {}
            self.save_state()
        self.history["train_seconds"] = self.history.get("train_seconds", 0.0) + time.time() - started
        barrier(self.dist)
        if self.writer is not None:
            self.writer.close()
        shutdown(self.dist)
        return self.history

    def _supervised(self, name: str, model: nn.Module, steps: int) -> None:
        """Cross-entropy training of a segmentation-style network (F or phi)."""
        net = self.wrap(model.train())
        opt = self.optimizer(name, model.parameters(), self.cfg.aux_lr)
        sched_start = self.step
        batches = infinite_batches(self.train_set, self.cfg, self.dist, self.step)
        bar = self.progress(steps, name)
        while self.step < steps:
            images, labels = next(batches)
            images, labels = images.to(self.device), labels.to(self.device)
            lr = self.cfg.aux_lr * 0.5 * (1 + math.cos(math.pi * self.step / max(steps, 1)))
            for group in opt.param_groups:
                group["lr"] = lr
            logits = net(images)
            loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.step += 1
            bar.update(1)
            if self.step % self.cfg.log_every == 0 or self.step == steps:
                acc = (logits.argmax(1) == labels).float().mean().item()
                self.log(f"{name}/loss", loss.item())
                self.log(f"{name}/pixel_accuracy", acc)
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}")
            if self.step % self.cfg.checkpoint_every == 0:
                self.save_state()
        bar.close()
        del sched_start
        model.eval()

    def train_segmenter(self) -> None:
        """F is trained whatever stage I's labels are: at inference the label map (and the concepts) come from F."""
        self._supervised("segmenter", self.codec.segmenter, self.cfg.segmenter_steps)
        self.codec.segmenter.requires_grad_(False)

    def train_perceptual(self) -> None:
        self._supervised("perceptual", self.codec.perceptual, self.cfg.perceptual_steps)
        self.codec.perceptual.requires_grad_(False)

    def train_stage1(self) -> None:
        """Algorithm 1: alternate D and generator steps (eq. 32, 33)."""
        cfg, codec = self.cfg, self.codec
        if self.step == 0 and codec.config.block_basis and cfg.block_init:
            for tag, value in init_block_transform(codec, self.train_set).items():
                self.log(tag, value)
        if self.step == 0 and cfg.val_every and self.dist.is_main:  # the starting point, for the curve
            for q, value in enumerate(self.validation_psnr()):
                self.log(f"val/psnr_level{q}", value)
        codec.segmenter.requires_grad_(False).eval()
        codec.perceptual.requires_grad_(False).eval()
        gen_modules = [codec.encoder, codec.classifier, codec.local, codec.global_, codec.attention]
        for module in gen_modules + [codec.discriminator]:
            module.train()
        if cfg.freeze_encoder:
            codec.encoder.requires_grad_(False)
            codec.encoder.eval()
        if cfg.freeze_block_transform and codec.config.block_basis:
            codec.encoder.patch.requires_grad_(False)
            codec.local.skip.requires_grad_(False)
        objective = self.wrap(GeneratorObjective(codec, cfg))
        disc = self.wrap(codec.discriminator)
        betas = (cfg.beta1, cfg.beta2)
        groups = [{"params": [p for p in m.parameters() if p.requires_grad],
                   "base_lr": cfg.lr * (cfg.encoder_lr_scale if m is codec.encoder else 1.0)} for m in gen_modules]
        groups = [g for g in groups if g["params"]]
        for group in groups:
            group["lr"] = group["base_lr"]
        opt_g = self.optimizer("stage1_g", groups, cfg.lr, betas)
        opt_d = self.optimizer("stage1_d", codec.discriminator.parameters(), cfg.lr, betas)
        batches = infinite_batches(self.train_set, cfg, self.dist, self.step)
        bar = self.progress(cfg.stage1_steps, "stage I")
        deadline = time.time() + 60 * cfg.stage1_minutes if cfg.stage1_minutes > 0 else math.inf
        while self.step < cfg.stage1_steps:
            if time.time() > deadline:
                self.log("stage1/stopped_at_step", self.step)
                if self.dist.is_main:
                    print(f"stage I: --stage1-minutes {cfg.stage1_minutes:g} reached at step {self.step}",
                          file=sys.stderr)
                break
            images, gt = next(batches)
            images = images.to(self.device)
            with torch.no_grad():
                labels = codec.segment(images) if cfg.labels == "segmenter" else gt.to(self.device).clamp_max(codec.num_classes - 1)
            if cfg.lr_decay:
                scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * self.step / max(cfg.stage1_steps, 1)))
                for opt in (opt_g, opt_d):
                    for group in opt.param_groups:
                        group["lr"] = group.get("base_lr", cfg.lr) * scale
            x_hat, onehot, loss_c = objective(images, labels, None, self.generator)
            adversarial = self.step >= cfg.adversarial_start and cfg.adversarial_weight > 0
            if adversarial:  # D step (Algorithm 1, line 7)
                loss_d = discriminator_hinge_loss(disc(images, onehot), disc(x_hat.detach(), onehot))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            else:
                loss_d = torch.zeros((), device=self.device)
            # E/G step (line 8), D frozen
            codec.discriminator.requires_grad_(False)
            loss_g = generator_hinge_loss(disc(x_hat, onehot)) if adversarial else torch.zeros((), device=self.device)
            loss_p = perceptual_loss(codec.perceptual, images, x_hat).mean()
            loss_l1 = (x_hat - images).abs().mean()
            total = (cfg.adversarial_weight * loss_g + cfg.perceptual_weight * loss_p
                     + cfg.classification_weight * loss_c + cfg.l1_weight * loss_l1)
            opt_g.zero_grad(set_to_none=True)
            total.backward()
            opt_g.step()
            codec.discriminator.requires_grad_(True)
            self.step += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.stage1_steps:
                mse = F.mse_loss(x_hat.detach().clamp(0, 1), images).item()
                psnr = 10 * math.log10(1.0 / max(mse, 1e-10))
                for tag, value in (("loss_d", loss_d), ("loss_g", loss_g), ("loss_p", loss_p), ("loss_c", loss_c),
                                   ("loss_l1", loss_l1), ("loss_total", total)):
                    self.log(f"stage1/{tag}", value.item())
                self.log("stage1/psnr", psnr)
                bar.set_postfix(psnr=f"{psnr:.2f}", lp=f"{loss_p.item():.3f}", d=f"{loss_d.item():.2f}")
            if self.writer is not None and (self.step % cfg.sample_every == 0 or self.step == cfg.stage1_steps):
                self.writer.add_image("stage1/samples", make_grid_image(images, x_hat, labels), self.step)
            if cfg.val_every and self.dist.is_main and (self.step % cfg.val_every == 0 or self.step == cfg.stage1_steps):
                for q, value in enumerate(self.validation_psnr()):
                    self.log(f"val/psnr_level{q}", value)
                for module in gen_modules:
                    module.train(not (cfg.freeze_encoder and module is codec.encoder))
            if self.step % cfg.checkpoint_every == 0:
                self.save_state()
        bar.close()
        self.history["stage1/steps_done"] = float(self.step)
        codec.eval()

    @torch.no_grad()
    def validation_psnr(self) -> list[float]:
        """PSNR (dB, over the whole val subset) with every concept at level q, for each q."""
        codec = self.codec
        codec.eval()
        if not hasattr(self, "_val_set"):
            self._val_set = load_dataset(self.cfg.dataset, "val", preset=self._data_preset(), size=self.cfg.val_images,
                                         progress=False) if self.cfg.dataset == "streets" else None
        if self._val_set is None:
            return []
        loader = DataLoader(self._val_set, batch_size=32)
        errors = [0.0] * codec.num_levels
        count = 0
        for images, _ in loader:
            images = images.to(self.device)
            analysis = codec.analyse(images)
            for q in range(codec.num_levels):
                levels = torch.full(analysis.present.shape, q, dtype=torch.long, device=self.device)
                errors[q] += F.mse_loss(codec.decode(analysis, levels).clamp(0, 1), images, reduction="sum").item()
            count += images.numel()
        return [10 * math.log10(count / max(e, 1e-10)) for e in errors]

    def train_tables(self) -> None:
        """Fit the entropy-code tables (eq. 26) and label-map model (eq. 27); rank 0 only."""
        if self.dist.is_main:
            fit_code_tables(self.codec, self.train_set, self.cfg.table_images, self.cfg.batch_size,
                            progress=self.cfg.progress)
        barrier(self.dist)


@torch.no_grad()
def init_block_transform(codec: SemanticCodec, dataset: Dataset, images: int = 400, spread: float = 0.4) -> dict[str, float]:
    """Warm start of the block transform (``block_basis`` codecs) from the data: the Karhunen-Loeve
    transform (uncentred PCA) of the training set's 8x8 patches.

    E's linear patch analysis gets the first n principal directions, scaled so that each channel
    has standard deviation ``spread`` around 0, or with ``block_scale="common"`` one scale for every
    channel (the largest centred coefficient at 1, so a level's centre spacing is one step size for
    all channels); offsets go in the projection's bias, whose weights start at zero. G_l's skip
    synthesis gets the inverse map into logits, 4 (p - 1/2) (the sigmoid's slope at 0, exact with
    ``local_output="linear"``); G_l's heads start near zero and the attention favours x_l. So stage I
    starts from a reconstruction whose channels are ordered by energy, which is also the order in
    which the levels keep them. Returns the unquantized PSNR of that linear start on the images used.
    """
    enc, local = codec.encoder, codec.local
    if enc.patch is None or local.skip is None or not local.block_basis:
        raise ValueError("init_block_transform needs a codec with block_basis (and G_l's skip)")
    n = codec.config.code_channels
    common = codec.config.block_scale == "common"
    count = min(images, len(dataset))
    x = torch.stack([dataset[i][0] for i in range(count)]).to(codec.device) * 2.0 - 1.0  # E's input range
    patches = x.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * 64)  # (N, 3*8*8)
    _, _, vh = torch.linalg.svd(patches, full_matrices=False)
    basis = vh[:n]  # (n, 192), rows orthonormal, by energy
    coeffs = patches @ basis.T  # (N, n)
    mean, std = coeffs.mean(0), coeffs.std(0).clamp_min(1e-6)
    if common:  # orthonormal transform, one scale: the largest centred coefficient maps to 1 (equal steps)
        scale = torch.full_like(std, 1.0 / (coeffs - mean).abs().max().clamp_min(1e-6).item())
    else:
        scale = spread / std
    enc.patch.weight.copy_((basis * scale[:, None]).view(n, 3, 8, 8))
    enc.project.weight.zero_()
    enc.project.bias.copy_(-mean * scale)
    # f = (c - mean) * scale  =>  c = f / scale + mean;  patch (in [-1,1]) = basis^T c;  pixel = (patch + 1) / 2
    # logit ~ 4 (pixel - 1/2) = 2 * patch.  pixel_shuffle reads channel (3*64) as (colour, row, col): same order.
    synth = 2.0 * basis.T / scale[None, :]  # (192, n)
    local.skip.weight.copy_(synth.view(3 * 64, n, 1, 1))
    local.skip.bias.copy_(2.0 * (basis.T @ mean))
    local.head_weight.mul_(0.1)
    local.head_bias.zero_()
    last = codec.attention.body[-1]
    last.bias.copy_(torch.tensor([2.0, -2.0], device=last.bias.device))  # softmax -> about 0.98 on x_l
    recon = ((coeffs @ basis).clamp(-1, 1) + 1) / 2
    mse = (recon - (patches + 1) / 2).pow(2).mean().item()
    return {"block_transform/init_psnr": 10 * math.log10(1.0 / max(mse, 1e-12))}


def label_context(codec: SemanticCodec, wanted: str | None = None) -> str:
    """The label model's context set (eq. 27) to fit for ``codec``: ``wanted`` if given, else the codec's own,
    "wn" for a codec without a label model."""
    if wanted is not None:
        return wanted
    return codec.label_model.neighbours if codec.label_model is not None else "wn"


@torch.no_grad()
def fit_code_tables(codec: SemanticCodec, dataset: Dataset, images: int, batch_size: int = 16,
                    progress: bool = True, label_neighbours: str | None = None) -> None:
    """Count quantization symbols per (level, channel) and label-map contexts on ``images`` images.
    ``label_neighbours``: the label model's context set ("wn" or "wnne"; None: the codec's current one,
    "wn" for a codec without one)."""
    label_neighbours = label_context(codec, label_neighbours)
    codec.eval()
    cfg = codec.config
    counts = [np.zeros((cfg.channels_at(q), k), np.int64) for q, k in enumerate(cfg.level_centers)]
    label_maps: list[np.ndarray] = []
    total = min(images, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, range(total)), batch_size)
    for batch_images, _ in tqdm(loader, desc="code tables", disable=not progress, unit="batch"):
        analysis = codec.analyse(batch_images.to(codec.device))
        label_maps.extend(analysis.labels.cpu().numpy().astype(np.uint8))
        covered = analysis.mask.sum(1) > 0  # every position is coded at least once
        weight = analysis.mask.sum(1)  # number of concepts that code this position
        for q, k in enumerate(cfg.level_centers):
            idx = codec.quantizer.indices(analysis.features, q)  # (B,n,h,w)
            for ch in range(cfg.channels_at(q)):
                values = idx[:, ch][covered]
                counts[q][ch] += np.bincount(values.cpu().numpy(), weights=weight[covered].cpu().numpy(),
                                             minlength=k).astype(np.int64)
    codec.tables = entropy.SymbolTables.from_counts(counts)
    codec.label_model = entropy.LabelMapModel.from_label_maps(label_maps, cfg.num_classes, label_neighbours)
    codec.invalidate_id()


def requantized(codec: SemanticCodec, dataset: Dataset, images: int, channel_step_ratio: float | None = None,
                coder: str | None = None, label_neighbours: str | None = None) -> SemanticCodec:
    """A copy of ``codec`` with the same networks under another quantizer or entropy coder: the quantization matrix
    ``channel_step_ratio`` (``CodecConfig.channel_step_ratio``: channel c of n gets the level's step times
    r ** (c / (n - 1))) and the concept payloads' ``coder`` ("huffman" or "range"); None keeps the codec's own.
    A new matrix changes the symbols, so the symbol tables and the label-map model are refit on ``images`` images
    of ``dataset`` (the label model with ``label_neighbours``' contexts, None: the codec's own); the source codec is
    left as it was."""
    changes: dict[str, Any] = {}
    if channel_step_ratio is not None:
        changes["channel_step_ratio"] = float(channel_step_ratio)
    if coder is not None:
        changes["coder"] = coder
    config = replace(codec.config, **changes).validate()
    out = SemanticCodec(config).to(codec.device)
    out.load_state_dict(codec.state_dict())
    out.label_model = codec.label_model
    out.meta = dict(getattr(codec, "meta", {}) or {})
    fit_code_tables(out, dataset, images, progress=False, label_neighbours=label_neighbours)
    return out


@torch.no_grad()
def fit_label_model(codec: SemanticCodec, dataset: Dataset, images: int, neighbours: str, batch_size: int = 32) -> None:
    """Refit only the label-map model (eq. 27) on F's label maps of ``images`` training images, with the
    context set ``neighbours``; the symbol tables (and so every concept's bits) stay as they are."""
    codec.eval()
    total = min(images, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, range(total)), batch_size)
    maps = [lab for x, _ in loader for lab in codec.segment(x.to(codec.device)).cpu().numpy().astype(np.uint8)]
    codec.label_model = entropy.LabelMapModel.from_label_maps(maps, codec.num_classes, neighbours)
    codec.invalidate_id()


def export_codec(codec: SemanticCodec, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write the inference checkpoint (with D, for stage III) atomically."""
    return atomic_save(codec_payload(codec, meta), path)


def environment_record() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": str(torch.__version__), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
