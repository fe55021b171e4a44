#!/usr/bin/env python
"""Throughput of the RL-ASC environment: single env, SyncVectorEnv, batched env, forward-only.

    python benchmark.py --batch-size 16 --device auto --json runs/benchmark.json   # the current id beside -v4

Every flag is a field of rlasc_harness.throughput.BenchmarkConfig (python benchmark.py --help).
"""
from __future__ import annotations

import sys

from rlasc_harness.throughput import main

if __name__ == "__main__":
    sys.exit(main())
