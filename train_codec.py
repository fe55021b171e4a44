#!/usr/bin/env python
"""Train the RL-ASC codec: stage I (Algorithm 1, with F and phi first) or stage III.

    python train_codec.py --preset tiny --export codec_models/weights/tiny.pt
    python train_codec.py --preset tiny --resume          # continue an interrupted run
    python train_codec.py --stage3 --preset tiny --codec tiny --task segmentation \
        --policy runs/agent/reinforce-segmentation-0/policy.pt --run-dir runs/codec/tiny-stage3   # stage III
    python train_codec.py fidelity --codec tiny --run-dir runs/codec/fidelity --minutes 95   # semantic fidelity
    python train_codec.py repack --codec tiny-sf-f6k --export codec_models/weights/tiny-sf2.pt   # bitstream format 4
    torchrun --nproc_per_node 4 train_codec.py --preset paper --dataset cityscapes --data-root /data/cityscapes

Every flag is a field of codec_models.training.TrainCodecConfig; --preset picks its defaults. Stage III trains the
codec together with the agent, and ``fidelity`` (rlasc_harness.fidelity.FidelityConfig's flags) trains the decoder
with the task networks' losses, so both are dispatched here, at the script layer (rlasc_harness).
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from codec_models.cli_train import parse_config, run_stage1

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["repack"]:
        from codec_models.repack import main as repack_main

        return repack_main(argv[1:])
    if argv[:1] == ["fidelity"]:
        import tyro

        from rlasc_harness.fidelity import FidelityConfig, run_fidelity

        run_fidelity(tyro.cli(FidelityConfig, args=argv[1:]), argv[1:])
        return 0
    cfg = parse_config(argv)
    if cfg.stage3:
        from rlasc_harness.stage3 import run_stage3

        run_stage3(cfg, argv)
        return 0
    return run_stage1(cfg, argv)


if __name__ == "__main__":
    sys.exit(main())
