"""Stage I of codec v2 on a CUDA device in one command, for a session lent a GPU.

    python -m codec_models.device_run --out "$OUT"            # tiny, on the device machine (about 10 minutes)
    python -m codec_models.device_run --out "$OUT" --presets paper paper-medium paper-high --stage1-minutes 2 \
        --batch-size 8 --segmenter-steps 400 --perceptual-steps 300 --report-images 50
                                                              # the paper's three modes n = 16 / 32 / 64, 256x512
    python -m codec_models.device_run --out /tmp/smoke --smoke # CPU check of the same code path (seconds)

For each preset: trains F, phi and stage I (variable-rate, as ``python train_codec.py --preset P``) with a
larger batch and a wall-clock budget for stage I, fits the code tables, then writes into ``--out``:
``P-cuda.pt`` (the codec), ``P-cuda.json`` (command, seed, device, figures), the tensorboard log
(``run-P/tb``; ``run/`` for tiny) and the level report (``levels[-P].md`` / ``.json``, through real
bytes on the test split of the preset's image size). Ship ``tiny-cuda.pt`` as ``codec_models/weights/tiny.pt`` only if
its level report beats the CPU-trained weights. The paper presets keep their own objective (adversarial weight 1,
no L1, eq. 33) with the schedule scaled to the budget.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import tyro

from .level_report import measure_levels, render_markdown
from .training import CodecTrainer, data_preset_of, environment_record, export_codec, train_config_for


@dataclass
class DeviceRunConfig:
    """Train codec v2 presets on CUDA within a time budget and write everything to --out."""

    out: str = "device_out"  # folder for weights, logs and the level report
    presets: tuple[str, ...] = ("tiny",)  # codec presets, run one after the other (paper modes: paper, paper-medium,
    # paper-high = n 16 / 32 / 64 at 256x512)
    device: str = "cuda"
    seed: int = 0
    batch_size: int = 32
    stage1_steps: int = 20000  # upper bound; --stage1-minutes usually stops it first
    stage1_minutes: float = 6.0
    segmenter_steps: int = 800
    perceptual_steps: int = 600
    report_images: int = 200
    smoke: bool = False  # tiny budgets on the CPU: checks the code path, trains nothing useful


def run(cfg: DeviceRunConfig, argv: list[str]) -> dict:
    """Every preset of ``--presets`` in turn; returns the first one's record (all are written)."""
    records = [run_preset(cfg, preset, argv) for preset in cfg.presets]
    return records[0]


def run_preset(cfg: DeviceRunConfig, preset: str, argv: list[str]) -> dict:
    if cfg.smoke:
        cfg = replace(cfg, device="cpu", batch_size=2, stage1_steps=2, stage1_minutes=0.0, segmenter_steps=2,
                      perceptual_steps=2, report_images=2)
    elif cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --smoke for a CPU check")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # the tiny preset's schedule, with the warm-up and the learning-rate decay scaled to the budget
    adversarial_start = int(0.4 * cfg.stage1_steps)
    suffix = "" if preset == "tiny" else f"-{preset}"
    train_cfg = train_config_for(
        preset, run_dir=str(out / f"run{suffix}"), device=cfg.device, seed=cfg.seed, batch_size=cfg.batch_size,
        stage1_steps=cfg.stage1_steps, stage1_minutes=cfg.stage1_minutes, segmenter_steps=cfg.segmenter_steps,
        perceptual_steps=cfg.perceptual_steps, adversarial_start=adversarial_start, progress=not cfg.smoke,
        **({"train_images": 16, "table_images": 8, "val_images": 4, "val_every": 1} if cfg.smoke else {}))
    started = time.time()
    trainer = CodecTrainer(train_cfg)
    history = trainer.run()
    meta = {"command": "python -m codec_models.device_run " + shlex.join(argv), "seed": cfg.seed,
            "device": str(trainer.device), "device_name": environment_record()["cuda"],
            "train_config": vars(train_cfg), "figures": history, "environment": environment_record(),
            "wall_seconds": round(time.time() - started, 1)}
    codec = trainer.codec.eval()
    export_codec(codec, out / f"{preset}-cuda.pt", meta)
    from .datasets import load_dataset

    test = load_dataset("streets", "test", preset=data_preset_of(preset), size=cfg.report_images,
                        progress=False)
    levels = measure_levels(codec, test, cfg.report_images, progress=False)
    meta["level_report"] = {k: levels[k] for k in ("levels", "references", "highest_minus_level0_db", "per_concept")}
    (out / f"levels{suffix}.md").write_text(render_markdown(levels, meta["command"]))
    (out / f"levels{suffix}.json").write_text(json.dumps(levels, indent=2) + "\n")
    (out / f"{preset}-cuda.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = tyro.cli(DeviceRunConfig, args=argv, description=__doc__)
    meta = run(cfg, argv)
    print(json.dumps({"wall_seconds": meta["wall_seconds"], "device": meta["device"],
                      "levels_psnr": [round(lv["psnr"], 2) for lv in meta["level_report"]["levels"]]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
