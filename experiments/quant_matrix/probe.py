"""Probe: what a quantization matrix (codec_models.quantizer, ``channel_step_ratio``) does to a trained codec's
levels before any retraining: rate, PSNR and the -v3 networks' figures of every uniform level, through real bytes.

    python experiments/quant_matrix/probe.py --codec tiny-hq --ratios 1 4 8 16 --images 64 --json runs/qm/probe.json

The codec's weights are kept; only the quantizer's steps change and the symbol tables are refit on training images.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import tyro

from codec_models.checkpoint import load_codec
from codec_models.codec import SemanticCodec
from codec_models.datasets import load_dataset
from codec_models.training import fit_code_tables
from rlasc_harness.evaluate_codecs.sweep import EvalSet
from rlasc_harness.fidelity_report import FidelityReportConfig, load_scorers, score_images, uniform_level_batches


@dataclass
class ProbeConfig:
    codec: str = "tiny-hq"
    ratios: tuple[float, ...] = (1.0, 4.0, 8.0, 16.0)
    images: int = 64  # first N test images
    table_images: int = 1000  # training images the symbol tables are counted on
    levels: tuple[int, ...] = ()  # uniform levels to score (empty: all)
    top_centres: tuple[int, ...] = ()  # also try these centre counts for the highest level (odd)
    coder: str = ""  # "range": range-code the concepts (no base section, no 1-bit floor per symbol); "": as trained
    threads: int = 1
    json: str | None = None


def with_ratio(codec: SemanticCodec, ratio: float, train_set, table_images: int, top: int = 0,
               coder: str = "") -> SemanticCodec:
    """The same networks with a quantization matrix of ``ratio`` (and ``top`` centres at the highest level, 0: as
    trained), symbol tables refit."""
    centres = codec.config.level_centers[:-1] + (top or codec.config.level_centers[-1],)
    config = replace(codec.config, channel_step_ratio=ratio, level_centers=centres)
    if coder:
        config = replace(config, coder=coder, base_section=config.base_section and coder == "huffman")
    graded = SemanticCodec(config).to(codec.device)
    graded.load_state_dict(codec.state_dict())
    graded.label_model = codec.label_model
    fit_code_tables(graded, train_set, table_images, progress=False)
    return graded.eval()


def main() -> None:
    cfg = tyro.cli(ProbeConfig)
    torch.set_num_threads(cfg.threads)
    base = load_codec(cfg.codec).eval()
    train_set = load_dataset("streets", "train", preset="tiny", size=cfg.table_images, progress=False)
    data = EvalSet.from_dataset(load_dataset("streets", "test", preset="tiny", size=cfg.images, progress=False),
                                cfg.images, "streets/test")
    tasks, _ = load_scorers(FidelityReportConfig(independent=None))
    levels = cfg.levels or tuple(range(base.num_levels))
    out = {"codec": cfg.codec, "images": data.count, "rows": []}
    variants = [(r, 0) for r in cfg.ratios] + [(r, k) for k in cfg.top_centres for r in cfg.ratios]
    for ratio, top in variants:
        started = time.time()
        codec = with_ratio(base, ratio, train_set, cfg.table_images, top, cfg.coder)
        for level in levels:
            batches = uniform_level_batches(codec, data, level, 16)
            row = {"ratio": ratio, "level": level, "centres": codec.config.level_centers[level],
                   **score_images(batches, tasks, None, data.count)}
            out["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        print(f"ratio {ratio}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
