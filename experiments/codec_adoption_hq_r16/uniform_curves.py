"""Uniform-level curves of codecs through real bytes, and their BD figures against the classic codecs of a stored
``evaluate.py`` run (the same first test images), per task: a cheap screen of a candidate codec before an id.

    python experiments/codec_adoption_hq_r16/uniform_curves.py --codecs tiny-sf3 runs/codec/fidelity-hq-r16/codec.pt \
        --images 100 --classic docs/eval_v7/results.json --json runs/hq_r16/uniform.json

Every concept of an image takes the same level (the "simplified RL-ASC" of the paper, one point per level); the
scorers are the ``-v3`` networks and the independent segmenter (``rlasc_harness.fidelity_report``), none of which a
codec trains on. The codecs are used as stored (no table refit).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from codec_models.checkpoint import load_codec
from codec_models.datasets import load_dataset
from rlasc_harness.evaluate_codecs.bd import bd_pair
from rlasc_harness.evaluate_codecs.sweep import EvalSet
from rlasc_harness.fidelity_report import FidelityReportConfig, load_scorers, score_images, uniform_level_batches

METRICS = {"segmentation": "miou_dataset", "detection": "map50", "classification": "macro_ap",
           "segmentation_independent": "miou_dataset_independent", "psnr": "psnr"}


@dataclass
class CurvesConfig:
    codecs: tuple[str, ...] = ("tiny-sf3",)
    images: int = 100  # the first N test images (the stored evaluate.py run's count)
    classic: str = "docs/eval_v7/results.json"  # evaluate.py results whose classic codecs are the anchors
    anchors: tuple[str, ...] = ("jpeg", "jpeg2000", "webp", "avif", "heif")
    threads: int = 1
    json: str | None = None


def main() -> None:
    cfg = tyro.cli(CurvesConfig)
    torch.set_num_threads(cfg.threads)
    stored = json.loads(Path(cfg.classic).read_text())
    if stored["images"] != cfg.images:
        raise ValueError(f"{cfg.classic} scored {stored['images']} images, not --images {cfg.images}")
    data = EvalSet.from_dataset(load_dataset("streets", "test", preset="tiny", size=cfg.images, progress=False),
                                cfg.images, "streets/test")
    tasks, independent = load_scorers(FidelityReportConfig())
    out: dict = {"images": cfg.images, "classic": cfg.classic, "curves": {}, "bd": {}}
    for name in cfg.codecs:
        started = time.time()
        codec = load_codec(name).eval()
        rows = []
        for level in range(codec.num_levels):
            batches = uniform_level_batches(codec, data, level, 20)
            row = {"level": level, **score_images(batches, tasks, independent, data.count)}
            rows.append(row)
            print(name, json.dumps(row), file=sys.stderr, flush=True)
        out["curves"][name] = rows
        out["bd"][name] = {task: {a: bd_pair(rows, stored["codecs"][a], metric) for a in cfg.anchors}
                           for task, metric in METRICS.items()}
        print(f"{name}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    for name, table in out["bd"].items():
        for task, pairs in table.items():
            def rounded(value, digits):
                return None if value is None else round(value, digits)
            cells = [f"{a} {rounded(p['bd_rate'], 1)}% / {rounded(p['bd_' + METRICS[task]], 4)}"
                     for a, p in pairs.items()]
            print(f"{name} {task}: " + "; ".join(cells))
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
