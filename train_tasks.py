#!/usr/bin/env python
"""Train the task networks H (segmentation, detection, classification) on the streets data.

    python train_tasks.py --task all --seed 0        # writes rlasc_env/weights/{task}.pt and .json
    python train_tasks.py --task detection --steps 2000 --device cuda --out-dir runs/tasks

Every flag is a field of rlasc_env.tasks.training.TrainTasksConfig.
"""
from __future__ import annotations

import sys

from rlasc_env.tasks.training import main

if __name__ == "__main__":
    sys.exit(main())
