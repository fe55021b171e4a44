#!/usr/bin/env python
"""Evaluate RL-ASC against engineered codecs (paper Section IV: Fig. 5, 8-12, Table II).

    python evaluate.py --policy runs/<run>/policy.pt --images 100 --out-dir results/eval   # the current id's codec
    python evaluate.py --quick                       # a few images, points and SNRs
    python evaluate.py --env-id None --dataset cityscapes --data-root /data/cityscapes --preset paper \
        --codec paper paper-medium paper-high --split val --images 500                   # a custom comparison

Writes OUT_DIR/results.json (or --json PATH), OUT_DIR/report.md and the figures. Every flag
is a field of rlasc_harness.evaluate_codecs.runner.EvalConfig.
"""
from __future__ import annotations

import sys

from rlasc_harness.evaluate_codecs.runner import main

if __name__ == "__main__":
    sys.exit(main())
