"""Command line of train_codec.py's stage I: preset defaults, then tyro-generated flags.

``train_codec.py`` parses once (:func:`parse_config`) and dispatches: stage I runs here (:func:`run_stage1`),
``--stage3`` runs ``rlasc_harness.stage3`` (the script layer imports it; codec_models knows nothing of RL)."""
from __future__ import annotations

import argparse
import shlex

import tyro

from .training import CodecTrainer, TrainCodecConfig, environment_record, export_codec, train_config_for, write_json


def parse_config(argv: list[str]) -> TrainCodecConfig:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="tiny")
    known, _ = pre.parse_known_args(argv)
    defaults = train_config_for(known.preset)
    return tyro.cli(TrainCodecConfig, default=defaults, args=argv, description=__doc__)


def run_stage1(cfg: TrainCodecConfig, argv: list[str]) -> int:
    """Stage I (Algorithm 1): train, export ``codec.pt`` and its record (``--export`` too)."""
    if cfg.stage3:
        raise ValueError("--stage3 is run by train_codec.py through rlasc_harness.stage3, not by stage I")
    stray = [flag for flag, value in (("--policy", cfg.policy), ("--codec", cfg.codec)) if value is not None]
    if stray:
        raise SystemExit(f"{' and '.join(stray)} only apply to stage III: add --stage3")
    trainer = CodecTrainer(cfg)
    history = trainer.run()
    if trainer.dist.is_main:
        data = {"dataset": cfg.dataset}
        if cfg.dataset == "streets":
            from .streets import GENERATOR_VERSION

            data["generator_version"] = GENERATOR_VERSION
        meta = {"command": "python train_codec.py " + shlex.join(argv), "seed": cfg.seed, "device": trainer.device,
                "data": data,
                "train_config": {k: v for k, v in vars(cfg).items()}, "figures": history,
                "environment": environment_record()}
        final = trainer.run_dir / "codec.pt"
        export_codec(trainer.codec, final, meta)
        write_json(trainer.run_dir / "codec.json", meta)
        print(f"codec written to {final}")
        if cfg.export:
            export_codec(trainer.codec, cfg.export, meta)
            print(f"codec exported to {cfg.export}")
    return 0
