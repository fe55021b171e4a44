#!/usr/bin/env python
"""Train the RL-ASC codec: stage I (Algorithm 1, with F and phi first) or stage III.

    python train_codec.py --preset tiny --export codec_models/weights/tiny.pt
    python train_codec.py --preset tiny --resume          # continue an interrupted run
    python train_codec.py --stage3 --preset tiny --codec tiny --task segmentation \
        --policy runs/agent/reinforce-segmentation-0/policy.pt --run-dir runs/codec/tiny-stage3   # stage III
    torchrun --nproc_per_node 4 train_codec.py --preset paper --dataset cityscapes --data-root /data/cityscapes

Every flag is a field of codec_models.training.TrainCodecConfig; --preset picks its defaults.
"""
from __future__ import annotations

import sys

from codec_models.cli_train import main

if __name__ == "__main__":
    sys.exit(main())
