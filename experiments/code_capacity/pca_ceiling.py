"""Issue 31: how much can a decoder render from k block-transform coefficients per 8x8 block?

The codec's E is (up to a frozen, zero-weight body) the Karhunen-Loeve transform of 8x8x3 patches, warm-started by
``codec_models.training.init_block_transform``; its highest level keeps the first 32 of 192 coefficients, with 33
centres. This script projects the first N test images onto the first k principal directions (fitted on 400 training
images, as the warm start is), optionally quantized with a level's centre count on the codec's common scale, and
scores the projections with the networks that score the benchmark (the ``-v3`` ones and the independent segmenter,
``rlasc_harness.fidelity_report.score_images``). No bits, no decoder: the ceiling a purely linear synthesis reaches
from what the code carries.

    python experiments/code_capacity/pca_ceiling.py --images 200 --ks 16 32 48 64 96 128 192 \
        --json experiments/code_capacity/pca_ceiling.json
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from codec_models.datasets import load_dataset
from rlasc_harness.evaluate_codecs.sweep import EvalSet
from rlasc_harness.fidelity_report import FidelityReportConfig, load_scorers, score_images


@dataclass
class Config:
    images: int = 200  # first N test images
    fit_images: int = 400  # training images the KLT is fitted on (init_block_transform's default)
    ks: tuple[int, ...] = (16, 32, 48, 64, 96, 128, 192)  # coefficients kept per 8x8x3 block
    centres: tuple[int, ...] = (0, 33)  # 0: unquantized; otherwise uniform centres on [-1, 1] (common scale)
    batch_size: int = 20
    threads: int = 1
    json: str | None = None


def patches_of(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] -> (B*H/8*W/8, 192) in [-1,1], the order of init_block_transform."""
    x = x * 2.0 - 1.0
    return x.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * 64)


def image_of(p: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    b, c, h, w = shape
    x = p.reshape(b, h // 8, w // 8, c, 8, 8).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    return ((x.clamp(-1, 1) + 1) / 2)


def main(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    started = time.time()
    train = load_dataset("streets", "train", preset="tiny", size=cfg.fit_images, progress=False)
    fit = torch.stack([train[i][0] for i in range(cfg.fit_images)])
    patches = patches_of(fit)
    _, _, vh = torch.linalg.svd(patches, full_matrices=False)
    tasks, independent = load_scorers(FidelityReportConfig())
    data = EvalSet.from_dataset(load_dataset("streets", "test", preset="tiny", size=cfg.images, progress=False),
                                cfg.images, "streets/test")
    out: dict = {"images": data.count, "fit_images": cfg.fit_images, "rows": []}
    orig = [(idx, im, im, lab, None, data.instance_batch(idx)) for idx, im, lab in data.batches(cfg.batch_size)]
    out["originals"] = score_images(orig, tasks, independent, data.count)
    print("originals", out["originals"], file=sys.stderr, flush=True)
    for k in cfg.ks:
        basis = vh[:k]
        coeffs = patches @ basis.T
        mean = coeffs.mean(0)
        scale = 1.0 / (coeffs - mean).abs().max().clamp_min(1e-6)
        for centres in cfg.centres:
            batches = []
            for idx, images, labels in data.batches(cfg.batch_size):
                c = (patches_of(images) @ basis.T - mean) * scale
                if centres:
                    step = 2.0 / (centres - 1)
                    c = (torch.round((c.clamp(-1, 1) + 1) / step) * step - 1)
                x_hat = image_of((c / scale + mean) @ basis, tuple(images.shape))
                batches.append((idx, images, x_hat, labels, None, data.instance_batch(idx)))
            row = {"k": k, "centres": centres, **score_images(batches, tasks, independent, data.count)}
            row["vs_originals"] = {m: row[m] / out["originals"][m] for m in
                                   ("miou_dataset", "map50", "macro_ap", "miou_dataset_independent")}
            out["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    out["seconds"] = time.time() - started
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main(tyro.cli(Config))
