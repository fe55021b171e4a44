"""Semantic-fidelity decoder training on one CUDA device in one command, for a session lent a GPU (issue 31).

    python -m rlasc_harness.fidelity_device --out "$OUT"             # on the device machine (about 10 minutes)
    python -m rlasc_harness.fidelity_device --out /tmp/smoke --smoke  # CPU check of the same code path

Runs :class:`rlasc_harness.fidelity.FidelityTrainer` (the recipe of ``train_codec.py fidelity``) with a larger batch
and a wall-clock budget, exports the selected codec with the up-right label context (bitstream version 3), then
scores it beside the shipped ``tiny`` with :mod:`rlasc_harness.fidelity_report` (200 test images, real bytes, the
``-v3`` networks and the independent segmenter). Writes into ``--out``: ``tiny-sf-cuda.pt`` and ``.json`` (command,
seed, device, figures), the run folder with its tensorboard log (``run/tb``) and ``report.json``. Ship the weights
only if the report beats the CPU-trained codec's.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import tyro

from rlasc_harness.fidelity import FidelityConfig, FidelityTrainer
from rlasc_harness.fidelity_report import FidelityReportConfig, fidelity_report


@dataclass
class FidelityDeviceConfig:
    """Train the decoder for semantic fidelity on CUDA within a time budget and write everything to --out."""

    out: str = "device_out"
    device: str = "cuda"
    codec: str = "tiny"
    seed: int = 0
    batch_size: int = 32
    lr: float = 8e-5  # 2x the CPU recipe's for 4x its batch
    steps: int = 6000  # the cosine schedule's length; --minutes usually stops it first
    minutes: float = 7.0
    report_images: int = 200
    threads: int = 8  # CPU threads of the report
    smoke: bool = False  # tiny budgets on the CPU: checks the code path, trains nothing useful


def run(cfg: FidelityDeviceConfig, argv: list[str]) -> dict:
    if cfg.smoke:
        cfg = replace(cfg, device="cpu", batch_size=2, steps=2, minutes=0.0, report_images=2, threads=1)
    elif cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --smoke for a CPU check")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    export = out / "tiny-sf-cuda.pt"
    train_cfg = FidelityConfig(codec=cfg.codec, run_dir=str(out / "run"), export=str(export), seed=cfg.seed,
                               device=cfg.device, batch_size=cfg.batch_size, lr=cfg.lr, steps=cfg.steps,
                               minutes=cfg.minutes, label_neighbours="wnne", progress=False,
                               **(dict(train_images=8, val_images=2, eval_every=1, label_images=8) if cfg.smoke else {}))
    trainer = FidelityTrainer(train_cfg)
    try:
        history = trainer.run(argv)
        trainer.export(["--device-run", *argv])
    finally:
        trainer.close()
    report = fidelity_report(FidelityReportConfig(codecs=(cfg.codec, str(export)), images=cfg.report_images,
                                                  threads=cfg.threads, json=str(out / "report.json")))
    summary = {"command": "python -m rlasc_harness.fidelity_device " + shlex.join(argv), "config": asdict(cfg),
               "seconds": time.time() - started, "history": history,
               "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
               "report": report["codecs"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    summary = run(tyro.cli(FidelityDeviceConfig, args=argv), argv)
    print(json.dumps(summary["report"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
