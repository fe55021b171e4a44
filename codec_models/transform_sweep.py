"""How far a linear block transform goes: the numbers behind codec v2's levels (docs/codec_v2.md).

    python -m codec_models.transform_sweep --json docs/transform_sweep.json

The principal components (Karhunen-Loeve transform, uncentred as in
:func:`codec_models.training.init_block_transform`) of the training images' 8x8x3 patches,
quantized two ways and measured on val images with no network at all:

- ``per_channel``: every coefficient scaled to the same spread (standard deviation 0.4), the
  first design of codec v2;
- ``common``: one scale for every coefficient (the largest centred training coefficient at 1),
  i.e. one step size per level in an orthonormal transform, the shipped design.

For each (channels kept, centres) pair: PSNR of the reconstruction (dB, pooled MSE) and the
feature rate in bits per pixel under a factorized model (the entropy of each channel's symbols
on the training patches, the model the code tables of eq. 26 implement).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from .datasets import load_dataset

PER_CHANNEL_SPREAD = 0.4


@dataclass
class TransformSweepConfig:
    """Flags of ``python -m codec_models.transform_sweep``."""

    train_images: int = 400  # training images whose patches give the transform and the entropies
    val_images: int = 64  # val images that are reconstructed
    channels: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32)
    centres: tuple[int, ...] = (2, 3, 5, 9, 13, 17, 25, 33, 49)
    preset: str = "tiny"  # data shape preset
    json: str | None = None  # also write the rows here


def _patches(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] -> (B*H/8*W/8, 192) patches in [-1,1] (E's input range), float64."""
    x = images * 2.0 - 1.0
    return x.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(-1, 192).double()


def _bits_per_pixel(symbols: torch.Tensor) -> float:
    """Sum over channels of the empirical entropy of (N, C) integer symbols, per pixel of an 8x8 block."""
    total = 0.0
    for column in symbols.T:
        _, counts = torch.unique(column, return_counts=True)
        p = counts.double() / counts.sum()
        total += float(-(p * p.log2()).sum())
    return total / 64.0


def _psnr(reconstruction: torch.Tensor, reference: torch.Tensor) -> float:
    mse = (((reconstruction.clamp(-1, 1) + 1) / 2 - (reference + 1) / 2) ** 2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def sweep(cfg: TransformSweepConfig) -> list[dict[str, float | int | str]]:
    """One row per (scaling, channels, centres): PSNR on val and factorized feature bpp on train."""
    train = load_dataset("streets", "train", cfg.preset, size=cfg.train_images, progress=False)
    val = load_dataset("streets", "val", cfg.preset, size=cfg.val_images, progress=False)
    fit = _patches(torch.stack([train[i][0] for i in range(len(train))]))
    test = _patches(torch.stack([val[i][0] for i in range(len(val))]))
    n = max(cfg.channels)
    _, _, vh = torch.linalg.svd(fit, full_matrices=False)
    basis = vh[:n]
    c_fit, c_test = fit @ basis.T, test @ basis.T
    mean = c_fit.mean(0)
    scales = {"per_channel": PER_CHANNEL_SPREAD / c_fit.std(0).clamp_min(1e-9),
              "common": torch.full((n,), 1.0 / (c_fit - mean).abs().max().item(), dtype=torch.float64)}
    rows: list[dict[str, float | int | str]] = [{"scaling": "none", "channels": n, "centres": 0,
                                                 "psnr_db": _psnr(c_test @ basis, test), "feature_bpp": float("nan")}]
    for name, scale in scales.items():
        f_fit = ((c_fit - mean) * scale).clamp(-1, 1)
        f_test = ((c_test - mean) * scale).clamp(-1, 1)
        for kept in cfg.channels:
            for k in cfg.centres:
                index_fit = torch.round((f_fit[:, :kept] + 1) / 2 * (k - 1))
                index_test = torch.round((f_test + 1) / 2 * (k - 1))
                coeffs = (index_test / (k - 1) * 2 - 1) / scale + mean
                coeffs[:, kept:] = mean[kept:]  # channels not sent: their training mean (the decoder's bias)
                rows.append({"scaling": name, "channels": kept, "centres": k, "psnr_db": _psnr(coeffs @ basis, test),
                             "feature_bpp": _bits_per_pixel(index_fit)})
    return rows


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(TransformSweepConfig, args=argv, description=__doc__)
    rows = sweep(cfg)
    print("| scaling | channels | centres | PSNR (dB) | feature bpp |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['scaling']} | {row['channels']} | {row['centres']} | {row['psnr_db']:.2f} | "
              f"{row['feature_bpp']:.3f} |")
    if cfg.json:
        Path(cfg.json).write_text(json.dumps({"config": vars(cfg), "rows": rows}, indent=1, default=list) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
