"""Stage III of RL-ASC (Section III-C): the semantic encoder E, the decoder (G_l, G_g, attention),
D and the agent pi fine-tuned together, from a stage-I codec and a stage-II REINFORCE policy.

    python train_codec.py --stage3 --preset tiny --codec tiny --policy runs/agent/reinforce-segmentation-0/policy.pt \\
        --task segmentation --run-dir runs/codec/tiny-stage3

One round is ``stage3_agent_every`` codec steps followed by ``stage3_agent_updates`` REINFORCE
updates (so any ratio of codec steps to agent updates):

(a) codec step, pi frozen (eval mode, no dropout): the batch's images are played as env
    episodes, so pi sees exactly the observations of stage II, and picks one level per present
    concept. ``stage3_levels="sample"`` (default) draws the level from pi: those are the levels
    the agent keeps exploring in (b), so the decoder is trained on all of them rather than only
    on today's greedy choice; ``"argmax"`` takes the most probable level. E then runs, each
    concept is quantized at its level (eq. 24 forward, eq. 25 backward) and decoded; D takes its
    hinge step (eq. 32) and E/G_l/G_g/attention/classifier one Adam step on eq. 33 as in stage I
    (adv * L_G + lambda1 * L_P + lambda2 * L_C, + l1 * |x - x_hat|) plus ``stage3_task_weight *
    L_task``: the training loss of the frozen task network H on x_hat (:func:`task_training_loss`,
    a differentiable stand-in of the env's L_S), which makes the codec task aware.
(b) agent step: :meth:`ReinforceTrainer.update` on env episodes of the same training images.
    The env (:class:`Engine`) holds the very codec object being trained, is only run with the
    codec in eval mode, and every episode starts with a reset that recomputes all its caches
    (analysis, G_l images, SPADE modulations, bitstream sizes), so no episode sees stale weights.

At the end the code tables are refitted (E changed), the codec is exported (``codec.pt``, and
``--export``) and the policy saved beside it (``policy.pt``, and ``--export-policy``, default
``<export stem>.policy.pt``). ``--resume`` continues from ``<run_dir>/stage3_last.pt`` (codec, D,
both codec optimizers, the policy and its optimizer, counters and random generator states;
--codec and --policy are then not read).
The run folder defaults to ``runs/codec/stage3-<task>``; a stage-I run folder is refused (its
``codec.pt`` would be overwritten). Single process (no DDP): the RL loop is sequential.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from agents.checkpoint import load_policy, save_policy
from agents.hyperparams import apply_overrides, load_hyperparams
from agents.policy import PaperPolicy, check_policy_fits
from agents.reinforce import ReinforceConfig, ReinforceTrainer
from codec_models.checkpoint import (CheckpointError, atomic_save, build_codec, check_format, codec_payload,
                                     resolve_codec_path, safe_load)
from codec_models.classes import IGNORE_INDEX
from codec_models.codec import SemanticCodec
from codec_models.datasets import load_dataset
from codec_models.device import resolve_device
from codec_models.discriminator import discriminator_hinge_loss, generator_hinge_loss
from codec_models.distributed import DistInfo
from codec_models.perceptual import perceptual_loss
from codec_models.training import (TRAIN_STATE_FORMAT, GeneratorObjective, TrainCodecConfig, data_preset_of,
                                   environment_record, export_codec, fit_code_tables, infinite_batches, make_grid_image,
                                   seed_everything, write_json)
from rlasc_env.engine import Engine, EnvSpec, EpisodeRecord, run_episodes
from rlasc_env.tasks import ClassificationTask, DetectionTask, SegmentationTask, Task, presence_vector

__all__ = ["STAGE3_FORMAT", "STAGE3_VERSION", "STATE_FILE", "Stage3Trainer", "load_start_codec", "load_start_policy",
           "task_training_loss", "run_stage3", "train_and_export"]

STAGE3_FORMAT = "rlasc-stage3-training"
STAGE3_VERSION = 1
STATE_FILE = "stage3_last.pt"


# --------------------------------------------------------------------------- inputs
def load_start_codec(name_or_path: str, device: str) -> tuple[SemanticCodec, bool, Path]:
    """(codec, whether the file held D's weights, path) from a shipped name, an exported codec, or the
    ``last.pt`` of a finished stage-I or stage-III run. A codec without D gets a fresh D."""
    path = resolve_codec_path(name_or_path)
    obj = safe_load(path)
    if obj.get("format") == TRAIN_STATE_FORMAT:
        if obj.get("phase") != "done":
            raise CheckpointError(f"{path} is a stage-I run stopped in phase {obj.get('phase')!r}: finish it with "
                                  "`python train_codec.py --resume --run-dir <its folder>` first")
        obj = obj["codec"]
    elif obj.get("format") == STAGE3_FORMAT:
        obj = obj["codec"]
    codec = build_codec(obj, path, device)
    if codec.tables is None or codec.label_model is None:
        raise CheckpointError(f"{path} has no fitted code tables; the env counts real bits and needs them")
    has_d = any(k.startswith("discriminator.") for k in obj.get("state", {}))
    return codec, has_d, path


def load_start_policy(path: str | os.PathLike | None, device: str) -> tuple[PaperPolicy, dict[str, Any], Path]:
    """(policy, its metadata, path) of a stage-II REINFORCE ``policy.pt``; clear errors otherwise."""
    hint = ("train the stage-II agent first, e.g. `python train_agent.py --codec <codec> --task <task>`, which "
            "writes runs/agent/reinforce-<task>-<seed>/policy.pt")
    if path is None:
        raise ValueError(f"stage III needs --policy PATH, a REINFORCE policy.pt: {hint}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--policy {path} does not exist: {hint}")
    try:
        policy, meta = load_policy(path, device)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (stage III fine-tunes the REINFORCE policy.pt of train_agent.py; SB3 "
                              "model.zip files are not supported)") from None
    return policy, meta, path


# --------------------------------------------------------------------------- L_task
def task_training_loss(task: Task, x_hat: Tensor, images: Tensor, labels: Tensor) -> Tensor:
    """L_task: H's (frozen) training loss on x_hat, differentiable w.r.t. x_hat.

    The env's L_S (1 - mIoU, -ln box IoU, thresholded BCE) has no useful gradient, so the codec
    step uses the loss H was trained with: cross-entropy against the label map (segmentation;
    detection on thing classes) or BCE against the presence vector (classification). The target
    is the data's labels (``reference="ground_truth"``) or H's output on x (``"original"``), as in
    the env. Another task type can define ``training_loss(x_hat, images, labels) -> Tensor``.
    """
    custom = getattr(task, "training_loss", None)
    if callable(custom):
        return custom(x_hat, images, labels)
    net = task.network
    original = task.reference_mode == "original"
    labels = labels.to(x_hat.device).long()
    if isinstance(task, SegmentationTask):
        with torch.no_grad():
            target = net(images).argmax(1) if original else labels.masked_fill(labels >= task.num_classes,
                                                                               IGNORE_INDEX)
        return F.cross_entropy(net(x_hat), target, ignore_index=IGNORE_INDEX)
    if isinstance(task, DetectionTask):
        from rlasc_env.tasks.training import det_targets

        with torch.no_grad():
            target = net(images).argmax(1) if original else det_targets(labels)
        return F.cross_entropy(net(x_hat), target, ignore_index=IGNORE_INDEX)
    if isinstance(task, ClassificationTask):
        with torch.no_grad():
            target = ((torch.sigmoid(net(images)) >= task.threshold).float() if original
                      else presence_vector(labels, task.num_classes).to(x_hat.device).float())
        return F.binary_cross_entropy_with_logits(net(x_hat), target)
    raise TypeError(f"task {task.name!r} has no differentiable loss for stage III: give it a method "
                    "training_loss(x_hat, images, labels) or pass --stage3-task-weight 0")


def fields_default(name: str) -> Any:
    """The dataclass default of a :class:`TrainCodecConfig` field."""
    return TrainCodecConfig.__dataclass_fields__[name].default


# --------------------------------------------------------------------------- trainer
class Stage3Trainer:
    """Alternates codec steps (pi frozen) and REINFORCE updates (codec frozen) on the current weights."""

    def __init__(self, cfg: TrainCodecConfig) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError("stage III runs in one process (its RL loop is sequential): run it without torchrun")
        if cfg.stage3_steps < 0 or cfg.stage3_agent_every < 1 or cfg.stage3_agent_updates < 0:
            raise ValueError("need --stage3-steps >= 0, --stage3-agent-every >= 1 and --stage3-agent-updates >= 0")
        if cfg.stage3_task_weight < 0 or cfg.stage3_refit_every < 0:
            raise ValueError("--stage3-task-weight and --stage3-refit-every must be >= 0")
        self.cfg = cfg
        self.device = str(resolve_device(cfg.device))
        seed_everything(cfg.seed)
        self.run_dir = Path(cfg.run_dir)
        if cfg.run_dir == fields_default("run_dir"):  # never the stage-I default folder itself
            self.run_dir = self.run_dir / f"stage3-{cfg.task}"
        if (self.run_dir / "last.pt").is_file():
            raise ValueError(f"{self.run_dir} holds a stage-I run (last.pt) whose codec.pt stage III would overwrite: "
                             "give stage III its own --run-dir")
        self.state_path = self.run_dir / STATE_FILE
        self.step = 0
        self.history: dict[str, float] = {}
        saved = self._read_state() if cfg.resume and self.state_path.is_file() else None
        if cfg.resume and saved is None:
            print(f"--resume: no {self.state_path}, starting from the given codec and policy", file=sys.stderr)

        # codec: from the resumable state, or the stage-I codec (fresh D when it has none)
        if saved is not None:
            self.codec = build_codec(saved["codec"], self.state_path, self.device)
            self.sources: dict[str, Any] = dict(saved["sources"])
        else:
            self.codec, has_d, codec_path = load_start_codec(cfg.codec or cfg.preset, self.device)
            self.sources = {"codec": str(codec_path), "discriminator": "loaded" if has_d else "fresh"}
        codec = self.codec
        codec.segmenter.requires_grad_(False).eval()
        codec.perceptual.requires_grad_(False).eval()

        # data (the codec's and the agent's training images are the same)
        kwargs: dict[str, Any] = {}
        if cfg.dataset == "cityscapes":
            kwargs.update(root=cfg.data_root, height=codec.config.height, width=codec.config.width)
        self.train_set = load_dataset(cfg.dataset, "train", preset=data_preset_of(cfg.preset), size=cfg.train_images,
                                      **kwargs)
        shape = tuple(self.train_set[0][0].shape[-2:])
        if shape != (codec.config.height, codec.config.width):
            raise ValueError(f"codec {self.sources['codec']} works at {codec.config.height}x{codec.config.width} but "
                             f"the --preset {cfg.preset} images are {shape[0]}x{shape[1]}: pick the codec's preset")

        # env on the very codec object being trained, and the agent
        spec = EnvSpec(task=cfg.task, codec=codec, lam=cfg.lam, eta=cfg.eta, dataset=cfg.dataset,
                       data_root=cfg.data_root, preset=data_preset_of(cfg.preset), reference=cfg.reference,
                       device=self.device, images={"train": self.train_set})
        self.engine = Engine(spec)
        if saved is not None:
            policy = PaperPolicy.from_spec(saved["agent"]["spec"])
            policy.load_state_dict(saved["agent"]["state"])
            policy.to(self.device)
            policy_path: Path | str = self.state_path
        else:
            policy, meta, policy_path = load_start_policy(cfg.policy, self.device)
            self.sources.update(policy=str(policy_path), policy_task=str(meta.get("task", "")),
                                policy_episodes=int(meta.get("train_episodes") or 0))
            if meta.get("task") not in (None, cfg.task):
                print(f"warning: {policy_path} was trained for task {meta.get('task')!r}, fine-tuning it for "
                      f"{cfg.task!r}", file=sys.stderr)
        check_policy_fits(policy, self.engine, policy_path)
        self.agent = ReinforceTrainer(self.engine, self._agent_config(policy), seed=cfg.seed, device=self.device,
                                      policy=policy)
        self.level_core = self.engine.core("train", cfg.batch_size)

        # codec optimizers (Algorithm 1's Adam betas)
        self.gen_modules = [codec.encoder, codec.classifier, codec.local, codec.global_, codec.attention]
        betas = (cfg.beta1, cfg.beta2)
        if cfg.freeze_encoder:  # as in stage I: E is the fixed block transform (docs/codec_v2.md)
            codec.encoder.requires_grad_(False)
        if cfg.freeze_block_transform and codec.config.block_basis:
            codec.encoder.patch.requires_grad_(False)
            codec.local.skip.requires_grad_(False)
        self.opt_g = torch.optim.Adam([p for m in self.gen_modules for p in m.parameters() if p.requires_grad],
                                      cfg.stage3_lr, betas)
        self.opt_d = torch.optim.Adam(codec.discriminator.parameters(), cfg.stage3_lr, betas)
        self.objective = GeneratorObjective(codec, cfg)
        if saved is not None:
            self._restore(saved)
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))

    def _agent_config(self, policy: PaperPolicy) -> ReinforceConfig:
        """REINFORCE hyperparameters: agents/hyperparams/reinforce.yml (tiny or paper) + --stage3-agent-hp."""
        preset = "paper" if self.cfg.preset.startswith("paper") else "tiny"
        hp = apply_overrides(load_hyperparams("reinforce", preset, observation="paper"),  # stage III: paper obs
                             self.cfg.stage3_agent_hp)
        for budget in ("n_episodes", "n_timesteps"):
            hp.pop(budget, None)
        hp.update(policy.arch)  # the network is the loaded one
        try:
            return ReinforceConfig(**hp)
        except TypeError as exc:
            raise ValueError(f"--stage3-agent-hp: {exc}") from None

    # ---- checkpoint --------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        obj = safe_load(self.state_path)
        check_format(obj, self.state_path, STAGE3_FORMAT, STAGE3_VERSION)
        saved = obj["train_config"]
        for key in ("preset", "task", "dataset"):
            if saved.get(key) != getattr(self.cfg, key):
                raise ValueError(f"{self.state_path} is a stage-III run with {key} {saved.get(key)!r}, not "
                                 f"{getattr(self.cfg, key)!r}: use another --run-dir or the same --{key}")
        return obj

    def save_state(self) -> Path:
        """Everything needed to resume, written atomically to ``<run_dir>/stage3_last.pt``."""
        agent = self.agent
        state = {
            "format": STAGE3_FORMAT, "version": STAGE3_VERSION, "step": self.step,
            "train_config": asdict(self.cfg), "codec": codec_payload(self.codec),
            "optimizers": {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict()},
            "agent": {"spec": agent.policy.spec(),
                      "state": {k: v.detach().cpu() for k, v in agent.policy.state_dict().items()},
                      **agent.trainer_state()},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "sources": dict(self.sources), "history": dict(self.history),
        }
        return atomic_save(state, self.state_path)

    def _restore(self, obj: dict[str, Any]) -> None:
        self.step = int(obj["step"])
        self.history = dict(obj.get("history", {}))
        self.opt_g.load_state_dict(obj["optimizers"]["g"])
        self.opt_d.load_state_dict(obj["optimizers"]["d"])
        agent, saved = self.agent, obj["agent"]
        agent.load_trainer_state(saved)
        for opt, lr in ((self.opt_g, self.cfg.stage3_lr), (self.opt_d, self.cfg.stage3_lr),
                        (agent.optimizer, agent.config.learning_rate)):
            for group in opt.param_groups:  # the flags of this run win over the saved learning rates
                group["lr"] = lr
        torch.set_rng_state(obj["rng"]["torch"])
        if obj["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(obj["rng"]["cuda"])

    # ---- steps ---------------------------------------------------------------
    def pick_levels(self, images: Tensor, labels: Tensor) -> tuple[Tensor, list[EpisodeRecord]]:
        """Levels (B, M) chosen by the frozen agent on env episodes of the batch (absent classes: highest)."""
        self.codec.eval()
        policy, deterministic = self.agent.policy, self.cfg.stage3_levels == "argmax"

        def act(obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
            return policy.act(obs, deterministic=deterministic)  # eval mode: no dropout

        items = list(zip(images.cpu(), labels.cpu()))
        records = run_episodes(self.level_core, items, range(len(items)), act, self.engine.metric_name)
        levels = torch.full((len(items), self.codec.num_classes), self.codec.num_levels - 1, dtype=torch.long)
        for i, rec in enumerate(records):
            levels[i, rec.concepts] = torch.as_tensor(rec.levels, dtype=torch.long)
        return levels.to(self.device), records

    def codec_step(self, images: Tensor, gt: Tensor) -> dict[str, Any]:
        """One D step and one E/G step (eq. 32, 33 + L_task) at the agent's levels."""
        cfg, codec = self.cfg, self.codec
        levels, records = self.pick_levels(images, gt)
        images, gt = images.to(self.device), gt.to(self.device)
        for module in self.gen_modules + [codec.discriminator]:
            module.train(not (cfg.freeze_encoder and module is codec.encoder))  # a frozen E keeps its BN statistics
        with torch.no_grad():
            labels = codec.segment(images)  # the env's concepts come from F too
        x_hat, onehot, loss_c = self.objective(images, labels, levels, None)
        disc = codec.discriminator
        loss_d = discriminator_hinge_loss(disc(images, onehot), disc(x_hat.detach(), onehot))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        disc.requires_grad_(False)
        try:
            loss_g = generator_hinge_loss(disc(x_hat, onehot))
            loss_p = perceptual_loss(codec.perceptual, images, x_hat).mean()
            loss_l1 = (x_hat - images).abs().mean()
            total = (cfg.adversarial_weight * loss_g + cfg.perceptual_weight * loss_p
                     + cfg.classification_weight * loss_c + cfg.l1_weight * loss_l1)
            loss_t = None
            if cfg.stage3_task_weight > 0:
                loss_t = task_training_loss(self.engine.task, x_hat, images, gt)
                total = total + cfg.stage3_task_weight * loss_t
            self.opt_g.zero_grad(set_to_none=True)
            total.backward()
            self.opt_g.step()
        finally:
            disc.requires_grad_(True)
            codec.eval()
            codec.invalidate_id()  # weights changed: the bitstream fingerprint is recomputed on next use
        mse = F.mse_loss(x_hat.detach().clamp(0, 1), images).item()
        terms = {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "loss_p": loss_p.item(), "loss_c": loss_c.item(),
                 "loss_l1": loss_l1.item(), "loss_total": total.item(), "psnr": 10 * np.log10(1.0 / max(mse, 1e-10)),
                 "level_mean": float(np.mean([q for r in records for q in r.levels])),
                 "policy_return": float(np.mean([r.episode_return for r in records])),
                 "policy_bpp": float(np.mean([r.bpp for r in records]))}
        if loss_t is not None:
            terms["loss_task"] = loss_t.item()
        return {"terms": terms, "x_hat": x_hat.detach(), "images": images, "labels": labels}

    def agent_phase(self) -> None:
        """``stage3_agent_updates`` REINFORCE updates on env episodes of the current codec."""
        self.codec.eval()
        for _ in range(self.cfg.stage3_agent_updates):
            self.agent.update()

    def refit_tables(self) -> None:
        fit_code_tables(self.codec, self.train_set, self.cfg.table_images, self.cfg.batch_size, progress=False)

    def log(self, tag: str, value: float) -> None:
        self.history[tag] = float(value)
        self.writer.add_scalar(tag, float(value), self.step)

    def _log_agent(self) -> None:
        agent = self.agent
        if not agent.stats.updates:
            return
        for key, tag in (("ep_rew_mean", "return"), ("bpp_mean", "bpp"), ("normalized_score_mean", "normalized_score"),
                         ("level_mean", "level_mean"), (f"{self.engine.metric_name}_mean", self.engine.metric_name)):
            value = agent.window_mean(key)
            if np.isfinite(value):
                self.log(f"stage3/agent_{tag}", value)
        self.log("stage3/agent_loss", agent.last_loss)
        self.log("stage3/agent_updates", agent.stats.updates)

    # ---- loop ------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train up to ``stage3_steps`` codec steps, refit the code tables, save the state; returns the history."""
        cfg = self.cfg
        started = time.time()
        batches = infinite_batches(self.train_set, cfg, DistInfo(), self.step)
        bar = tqdm(total=cfg.stage3_steps, initial=min(self.step, cfg.stage3_steps), desc="stage III", unit="step",
                   dynamic_ncols=True, disable=not cfg.progress)
        try:
            while self.step < cfg.stage3_steps:
                images, gt = next(batches)
                out = self.codec_step(images, gt)
                self.step += 1
                if self.step % cfg.stage3_agent_every == 0:
                    self.agent_phase()
                if (cfg.stage3_refit_every and self.step % cfg.stage3_refit_every == 0
                        and self.step < cfg.stage3_steps):  # the env's rates follow E; the last refit is below
                    self.refit_tables()
                bar.update(1)
                terms = out["terms"]
                if self.step % cfg.log_every == 0 or self.step == cfg.stage3_steps:
                    for tag, value in terms.items():
                        self.log(f"stage3/{tag}", value)
                    self._log_agent()
                    bar.set_postfix(psnr=f"{terms['psnr']:.2f}", task=f"{terms.get('loss_task', float('nan')):.3f}",
                                    ret=f"{self.agent.window_mean('ep_rew_mean'):.4f}")
                if self.step % cfg.sample_every == 0 or self.step == cfg.stage3_steps:
                    self.writer.add_image("stage3/samples", make_grid_image(out["images"], out["x_hat"], out["labels"]),
                                          self.step)
                if self.step % cfg.checkpoint_every == 0:
                    self.save_state()
        finally:
            bar.close()
        self.refit_tables()  # E changed: new symbol statistics
        self.history["stage3/train_seconds"] = self.history.get("stage3/train_seconds", 0.0) + time.time() - started
        self.save_state()
        self.writer.flush()
        return dict(self.history)

    def export(self, argv: Sequence[str] = ()) -> dict[str, Path]:
        """Write codec.pt, codec.json and policy.pt to the run folder, and to --export / --export-policy."""
        cfg, agent = self.cfg, self.agent
        meta = {"command": "python train_codec.py " + shlex.join(list(argv)), "stage": 3, "seed": cfg.seed,
                "device": self.device, "task": self.engine.task.describe(), "sources": dict(self.sources),
                "train_config": asdict(cfg), "figures": dict(self.history), "environment": environment_record()}
        paths = {"codec": export_codec(self.codec, self.run_dir / "codec.pt", meta)}
        write_json(self.run_dir / "codec.json", meta)
        stage2 = int(self.sources.get("policy_episodes", 0))
        policy_meta = {"algo": "reinforce", "stage": 3, "task": str(self.engine.task.name), "seed": cfg.seed,
                       "config": asdict(agent.config), "train_episodes": stage2 + agent.stats.episodes,
                       "stage3_episodes": agent.stats.episodes, "train_steps": agent.stats.steps,
                       "codec": str(cfg.export or paths["codec"]), "source_policy": self.sources.get("policy")}
        agent.policy.eval()
        paths["policy"] = save_policy(self.run_dir / "policy.pt", agent.policy, policy_meta)
        if cfg.export:
            paths["export"] = export_codec(self.codec, cfg.export, meta)
        target = cfg.export_policy or (Path(cfg.export).with_suffix(".policy.pt") if cfg.export else None)
        if target is not None:
            paths["export_policy"] = save_policy(target, agent.policy, policy_meta)
        return paths

    def close(self) -> None:
        self.writer.close()


def train_and_export(trainer: Any, argv: Sequence[str] = (), *run_args: Any) -> dict[str, Any]:
    """Run a codec trainer (``run``, ``export``, ``close``), print where everything went; returns history and paths."""
    try:
        history = trainer.run(*run_args)
        paths = trainer.export(argv)
    finally:
        trainer.close()
    for name, path in paths.items():
        print(f"{name} written to {path}")
    return {"history": history, "paths": paths}


def run_stage3(cfg: TrainCodecConfig, argv: Sequence[str] = ()) -> dict[str, Any]:
    """``train_codec.py --stage3``: train, export, print where everything went; returns history and paths."""
    return train_and_export(Stage3Trainer(cfg), argv)
