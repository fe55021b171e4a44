"""How cheap can the label map get? Richer causal contexts (lossless) and a majority pre-filter of F's map (lossy).

    python experiments/semantic_fidelity/label_map_coding.py --json experiments/semantic_fidelity/label_map_coding.json

Codec ``tiny``: F's label maps of the first ``--train`` training images fit static context models (counts with
additive smoothing ``alpha``); the ideal code length of the first ``--test`` test images' maps is reported in bits
per pixel for several causal neighbour sets (W left, N up, NW, NE up-right, WW, NN). Then F's map is cleaned by a
k x k majority filter (once or twice) or sent at half resolution, and for each: the label bits with the (W, N, NE)
context, the map's data-set mIoU against the ground truth, and the data-set mIoU that the ``-v3`` segmenter reads on
the *current* decoder's reconstruction with every concept at level 0 (the decoder was not trained on filtered maps).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from codec_models.checkpoint import load_codec
from codec_models.datasets import load_dataset
from rlasc_env.tasks import make_task
from rlasc_env.tasks.networks import WEIGHTS_DIR
from torchmetrics.classification import MulticlassJaccardIndex

M = 19
SETS = (("W", "N"), ("W", "N", "NE"), ("W", "N", "NW", "NE"), ("W", "N", "NW", "NE", "WW"),
        ("W", "N", "NW", "NE", "NN"), ("W", "N", "NW", "NE", "WW", "NN"))


def neighbours(maps: np.ndarray) -> dict[str, np.ndarray]:
    b, h, w = maps.shape
    padded = np.full((b, h + 2, w + 4), M, np.int64)
    padded[:, 2:, 2:-2] = maps
    at = lambda di, dj: padded[:, 2 + di:2 + di + h, 2 + dj:2 + dj + w]  # noqa: E731
    return {"W": at(0, -1), "N": at(-1, 0), "NW": at(-1, -1), "NE": at(-1, 1), "WW": at(0, -2), "NN": at(-2, 0)}


def code_length(train: np.ndarray, test: np.ndarray, keys, alpha: float) -> float:
    """Bits per pixel of ``test`` under static context counts of ``train``."""
    def ctx(n):
        c = np.zeros(n[keys[0]].shape, np.int64)
        for k in keys:
            c = c * (M + 1) + n[k]
        return c.ravel()

    c_train, c_test = ctx(neighbours(train)), ctx(neighbours(test))
    _, inv = np.unique(np.concatenate([c_train, c_test]), return_inverse=True)
    i_train, i_test = inv[:len(c_train)], inv[len(c_train):]
    counts = np.zeros((inv.max() + 1, M))
    np.add.at(counts, (i_train, train.ravel()), 1)
    p = (counts[i_test, test.ravel()] + alpha) / (counts[i_test].sum(1) + alpha * M)
    return float(-np.log2(p).sum() / test.size)


def majority(maps: torch.Tensor, k: int, times: int) -> torch.Tensor:
    for _ in range(times):
        onehot = F.one_hot(maps, M).permute(0, 3, 1, 2).float()
        maps = (F.avg_pool2d(onehot, k, 1, k // 2, count_include_pad=False) + 0.01 * onehot).argmax(1)
    return maps


def half_resolution(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    small = F.avg_pool2d(F.one_hot(maps, M).permute(0, 3, 1, 2).float(), 2, 2).argmax(1)
    return small, small.repeat_interleave(2, 1).repeat_interleave(2, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--codec", default="tiny", help="codec whose F makes the maps (name or codec.pt)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(args.codec)
    v3 = make_task("segmentation", weights=str(WEIGHTS_DIR / "v3" / "segmentation.pt")).network.eval()

    def images(split, n):
        ds = load_dataset("streets", split, preset="tiny", size=n, progress=False)
        return (torch.stack([ds[i][0] for i in range(len(ds))]),
                torch.stack([torch.as_tensor(ds[i][1]).long() for i in range(len(ds))]))

    x_train, _ = images("train", args.train)
    x_test, y_test = images("test", args.test)
    with torch.no_grad():
        f_train = torch.cat([codec.segment(x_train[i:i + 50]) for i in range(0, len(x_train), 50)])
        f_test = torch.cat([codec.segment(x_test[i:i + 50]) for i in range(0, len(x_test), 50)])
    out = {"args": vars(args) | {"json": str(args.json)}, "lossless": [], "cleaned": []}
    for keys in SETS:
        for alpha in (1.0, 0.1):
            bpp = code_length(f_train.numpy(), f_test.numpy(), keys, alpha)
            out["lossless"].append({"context": "+".join(keys), "alpha": alpha, "bpp": bpp})
            print(out["lossless"][-1], flush=True)
    variants = {"F's map": lambda m: (m, m), "majority 3x3": lambda m: (majority(m, 3, 1),) * 2,
                "majority 3x3 twice": lambda m: (majority(m, 3, 2),) * 2,
                "majority 5x5": lambda m: (majority(m, 5, 1),) * 2, "half resolution": half_resolution}
    for name, transform in variants.items():
        coded_train, _ = transform(f_train)
        coded_test, full_test = transform(f_test)
        bits = code_length(coded_train.numpy(), coded_test.numpy(), ("W", "N", "NE"), 0.1)
        bits *= coded_test[0].numel() / full_test[0].numel()
        map_jaccard = MulticlassJaccardIndex(M, average="macro", ignore_index=255)
        map_jaccard.update(full_test, y_test)
        decoded_jaccard = MulticlassJaccardIndex(M, average="macro", ignore_index=255)
        with torch.no_grad():
            for i in range(0, len(x_test), 20):
                analysis = codec.analyse(x_test[i:i + 20], full_test[i:i + 20])
                x_hat = codec.decode(analysis, torch.zeros_like(analysis.present, dtype=torch.long)).clamp(0, 1)
                decoded_jaccard.update(v3(x_hat).argmax(1), y_test[i:i + 20])
        out["cleaned"].append({"map": name, "label_bpp_wnne": bits, "map_miou": float(map_jaccard.compute()),
                               "decoded_level0_miou_v3": float(decoded_jaccard.compute())})
        print(out["cleaned"][-1], flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
