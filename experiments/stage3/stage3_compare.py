"""BD deltas between two ``evaluate.py`` results (e.g. stage III's codec + policy against stage II's), per task metric.

    python experiments/stage3/stage3_compare.py runs/eval/stage3-v1-100/results.json docs/eval_v1/results.json

For each data-set metric (segmentation per-image mIoU and data-set mIoU, detection mAP@0.5, classification macro AP)
it prints BD-rate / BD-metric of: the test run's rlasc against the anchor run's rlasc; each run's rlasc against its
own rlasc_simplified (the agent's worth on that codec); the test run's rlasc against the anchor's engineered codecs.
Both runs must use the same images (checked).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rlasc_harness.evaluate_codecs.bd import bd_pair
from rlasc_harness.evaluate_codecs.runner import bd_curves

METRICS = ("miou", "miou_dataset", "map50", "macro_ap", "psnr")


def main(test_path: str, anchor_path: str) -> None:
    test, anchor = json.loads(Path(test_path).read_text()), json.loads(Path(anchor_path).read_text())
    if test["images"] != anchor["images"] or test["dataset"] != anchor["dataset"]:
        raise SystemExit(f"different evaluation images: {test['images']} vs {anchor['images']}")
    tc, ac = bd_curves(test["codecs"]), bd_curves(anchor["codecs"])  # simplified = every uniform level
    pairs = [("test rlasc vs anchor rlasc", tc["rlasc"], ac["rlasc"]),
             ("test rlasc_simplified vs anchor rlasc_simplified", tc["rlasc_simplified"], ac["rlasc_simplified"]),
             ("test rlasc vs test rlasc_simplified", tc["rlasc"], tc["rlasc_simplified"]),
             ("anchor rlasc vs anchor rlasc_simplified", ac["rlasc"], ac["rlasc_simplified"])]
    pairs += [(f"test rlasc vs {name}", tc["rlasc"], ac[name]) for name in ("jpeg", "jpeg2000", "webp", "avif", "heif")
              if name in ac]
    print("| comparison | " + " | ".join(f"BD-rate {m} / BD-{m}" for m in METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for label, a, b in pairs:
        cells = []
        for metric in METRICS:
            r = bd_pair(a, b, metric)
            rate = "n/a" if r["bd_rate"] is None else f"{r['bd_rate']:+.1f}%"
            value = "n/a" if r[f"bd_{metric}"] is None else f"{r[f'bd_{metric}']:+.4f}"
            cells.append(f"{rate} / {value}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for name, runs in (("test", tc), ("anchor", ac)):
        print(f"\n{name} rlasc points (bpp, mIoU, mAP@0.5, macro AP, PSNR):")
        for p in runs["rlasc"]:
            print(f"  {p['bpp']:.3f}  {p['miou']:.4f}  {p['map50']:.4f}  {p['macro_ap']:.4f}  {p['psnr']:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
