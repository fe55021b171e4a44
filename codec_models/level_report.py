"""How much the quantization levels matter: the codec-v2 acceptance measurements.

    python -m codec_models.level_report --codec tiny --images 200 --json docs/codec_levels_tiny.json \
        --markdown docs/codec_levels_tiny.md --figure docs/codec_levels_tiny.png

Everything goes through real bytes (``compress`` / ``decompress``) on the streets test split:

- every uniform level: PSNR and bpp, with the label map's and the container's (header + CRCs)
  share of the rate, next to the no-learning references R0 / R1 (:mod:`.references`) and 8x
  bicubic;
- per concept: the PSNR inside the concept's pixels when it alone goes from level 0 to the
  highest level (all others at the highest), and the change outside its pixels (leakage through
  G_g and the attention), per class;
- what each decoder part contributes (tensor path): x_l alone (eq. 29), x_g alone (eq. 30), the
  fused x_hat (eq. 31), and f_hat set to zero.

PSNR is 10 log10(1 / MSE) with MSE pooled over all pixels of all images (data range 1).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from torch import Tensor
from tqdm import tqdm

from .bitstream import unpack
from .checkpoint import load_codec
from .classes import TRAIN_NAMES
from .codec import SemanticCodec
from .datasets import load_dataset
from .references import REFERENCES, bicubic_reference, reference_compress, reference_decompress

__all__ = ["LevelReportConfig", "measure_levels", "render_markdown", "main"]


@dataclass
class LevelReportConfig:
    """Measure how much a codec's quantization levels change its reconstruction."""

    codec: str = "tiny"  # shipped codec name or checkpoint path
    images: int = 200  # test images
    split: str = "test"
    preset: str = "tiny"  # data set shape preset
    json: str | None = None  # write the figures here
    markdown: str | None = None  # and a Markdown report here
    figure: str | None = None  # PNG: originals, level 0, highest level (and label maps)
    figure_images: int = 4
    threads: int = 0  # torch threads (0: leave as is)
    progress: bool = True


def _psnr(sq_err: float, count: float) -> float:
    return 10 * math.log10(count / max(sq_err, 1e-12)) if count else float("nan")


class _Pooled:
    """Pooled squared error and pixel count (PSNR over everything added)."""

    def __init__(self) -> None:
        self.err, self.count = 0.0, 0.0

    def add(self, err: float, count: float) -> None:
        self.err += err
        self.count += count

    @property
    def psnr(self) -> float:
        return _psnr(self.err, self.count)


def _uniform(codec: SemanticCodec, level: int) -> dict[int, int]:
    return {m: level for m in range(codec.num_classes)}


@torch.no_grad()
def _decoder_parts(codec: SemanticCodec, image: Tensor, level: int) -> dict[str, Tensor]:
    """x_l, x_g, x_hat and x_hat with f_hat = 0 for one image at one uniform level (tensor path)."""
    analysis = codec.analyse(image[None])
    levels = torch.full(analysis.present.shape, level, device=codec.device)
    x_hat, parts = codec.decode(analysis, levels, return_parts=True)
    merged = codec.merged_features(analysis, parts["per_concept"], levels)
    x_global = codec.global_(merged, analysis.onehot)
    zero = analysis.quantized.clone().zero_()
    blank = type(analysis)(analysis.labels, analysis.onehot, analysis.features, analysis.mask, analysis.area, zero)
    x_zero = codec.decode(blank, levels)
    return {"x_local": parts["x_local"][0], "x_global": x_global[0], "x_hat": x_hat[0], "f_zero": x_zero[0]}


@torch.no_grad()
def measure_levels(codec: SemanticCodec, dataset, images: int, progress: bool = True) -> dict[str, Any]:
    """All the figures of the module docstring on the first ``images`` items of ``dataset``."""
    q_high = codec.num_levels - 1
    count = min(images, len(dataset))
    if count < 1:
        raise ValueError("the data set holds no images")
    h, w = codec.config.height, codec.config.width
    level_psnr = [_Pooled() for _ in range(codec.num_levels)]
    level_bytes = np.zeros((codec.num_levels, 3))  # total, label payload, container
    ref_psnr = {name: _Pooled() for name in REFERENCES}
    ref_bytes = {name: 0.0 for name in REFERENCES}
    bicubic = _Pooled()
    parts = {f"{part}_level{q}": _Pooled() for part in ("x_local", "x_global", "x_hat", "f_zero") for q in (0, q_high)}
    concepts: list[dict[str, Any]] = []
    started = time.time()
    for i in tqdm(range(count), desc="levels", disable=not progress, unit="image"):
        image = dataset[i][0].to(codec.device)
        if tuple(image.shape[-2:]) != (h, w):
            raise ValueError(f"image {i} is {tuple(image.shape[-2:])}, the codec codes {h}x{w}")
        pixels = image.numel()
        recon: dict[int, Tensor] = {}
        for q in range(codec.num_levels):
            data = codec.compress(image, _uniform(codec, q))
            x_hat, info = codec.decompress_with_info(data)
            recon[q] = x_hat
            level_psnr[q].add((x_hat - image).pow(2).sum().item(), pixels)
            label_len = len(codec.encode_labels(info["labels"]))
            payload = sum(len(p) for p in unpack(data).concept_payloads)
            level_bytes[q] += (len(data), label_len, len(data) - label_len - payload)
        for name in REFERENCES:
            blob = reference_compress(codec, image, name)
            out = reference_decompress(codec, blob, h, w, name)
            ref_psnr[name].add((out - image).pow(2).sum().item(), pixels)
            ref_bytes[name] += len(blob)
        bicubic.add((bicubic_reference(image) - image).pow(2).sum().item(), pixels)
        for q in (0, q_high):
            for part, x in _decoder_parts(codec, image, q).items():
                parts[f"{part}_level{q}"].add((x.clamp(0, 1) - image).pow(2).sum().item(), pixels)
        # per concept: m alone at level 0, every other concept at the highest level
        labels = info["labels"]
        high_err = (recon[q_high] - image).pow(2).sum(0)
        for m in labels.unique().tolist():
            region = labels == m
            inside = int(region.sum()) * 3
            outside = pixels - inside
            x_low = codec.decompress(codec.compress(image, {m: 0}))
            low_err = (x_low - image).pow(2).sum(0)
            row = {"image": i, "class_id": int(m), "share": inside / pixels,
                   "gain_db": _psnr(high_err[region].sum().item(), inside) - _psnr(low_err[region].sum().item(), inside)}
            if outside:
                row["leak_db"] = abs(_psnr(high_err[~region].sum().item(), outside)
                                     - _psnr(low_err[~region].sum().item(), outside))
            concepts.append(row)
    area = count * h * w
    levels = []
    for q in range(codec.num_levels):
        total, label, container = level_bytes[q] / count
        levels.append({"level": q, "channels": codec.config.channels_at(q), "centres": codec.config.level_centers[q],
                       "psnr": level_psnr[q].psnr, "bpp": 8 * total * count / area,
                       "label_share": label / total, "container_share": container / total,
                       "feature_bpp": 8 * (total - label - container) * count / area})
    references = {name: {"psnr": ref_psnr[name].psnr, "bpp": 8 * ref_bytes[name] / area} for name in REFERENCES}
    references["bicubic_x8"] = {"psnr": bicubic.psnr, "bpp": None}
    gains = np.array([c["gain_db"] for c in concepts])
    leaks = np.array([c["leak_db"] for c in concepts if "leak_db" in c])
    per_class = []
    for m in sorted({c["class_id"] for c in concepts}):
        rows = [c for c in concepts if c["class_id"] == m]
        g = np.array([c["gain_db"] for c in rows])
        lk = [c["leak_db"] for c in rows if "leak_db" in c]
        per_class.append({"class_id": m, "name": TRAIN_NAMES[m] if m < len(TRAIN_NAMES) else str(m),
                          "concepts": len(rows), "mean_share": float(np.mean([c["share"] for c in rows])),
                          "mean_gain_db": float(g.mean()), "median_gain_db": float(np.median(g)),
                          "mean_leak_db": float(np.mean(lk)) if lk else None})
    feature_bits = [lv["feature_bpp"] for lv in levels]
    return {
        "codec": getattr(codec, "source", codec.config.name), "codec_config": codec.config.to_dict(),
        "images": count, "size": [h, w], "levels": levels, "references": references,
        "highest_minus_level0_db": levels[-1]["psnr"] - levels[0]["psnr"],
        "feature_payload_span": feature_bits[-1] / max(feature_bits[0], 1e-12),
        "per_concept": {"count": len(concepts), "mean_gain_db": float(gains.mean()),
                        "median_gain_db": float(np.median(gains)), "share_gain_ge_2db": float((gains >= 2).mean()),
                        "mean_leak_db": float(leaks.mean()) if leaks.size else None,
                        "p95_leak_db": float(np.percentile(leaks, 95)) if leaks.size else None},
        "per_class": per_class,
        "decoder_parts": {k: v.psnr for k, v in parts.items()},
        "seconds": round(time.time() - started, 1),
    }


def _f(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(result: dict[str, Any], command: str = "") -> str:
    """The Markdown report of :func:`measure_levels`' result."""
    lines = [f"# Quantization levels of `{result['codec']}`", ""]
    if command:
        lines += [f"Regenerate: `{command}`", ""]
    lines += [f"{result['images']} streets test images ({result['size'][0]}x{result['size'][1]}), through real bytes. "
              "PSNR pools the squared error of all pixels of all images.", "",
              "| level | channels | centres | PSNR (dB) | bpp | label map share | header+CRC share | feature bpp |",
              "|---|---|---|---|---|---|---|---|"]
    for lv in result["levels"]:
        lines.append(f"| {lv['level']} | {lv['channels']} | {lv['centres']} | {_f(lv['psnr'])} | {_f(lv['bpp'], 3)} | "
                     f"{_f(100 * lv['label_share'], 0)}% | {_f(100 * lv['container_share'], 0)}% | "
                     f"{_f(lv['feature_bpp'], 3)} |")
    refs = result["references"]
    lines += ["", "| reference (no learning) | PSNR (dB) | bpp |", "|---|---|---|",
              f"| R0: label map + mean colour per class | {_f(refs['r0']['psnr'])} | {_f(refs['r0']['bpp'], 3)} |",
              f"| R1: label map + mean colour per (class, 8x8 block) | {_f(refs['r1']['psnr'])} | "
              f"{_f(refs['r1']['bpp'], 3)} |",
              f"| 8x area downsampling, bicubic upsampling | {_f(refs['bicubic_x8']['psnr'])} | (not coded) |", "",
              f"Highest level minus level 0: **{_f(result['highest_minus_level0_db'])} dB**; feature payload span "
              f"(highest / level 0): **{_f(result['feature_payload_span'], 1)}x**.", ""]
    pc = result["per_concept"]
    lines += ["## Per concept", "",
              f"One concept alone from level 0 to the highest level, the others at the highest ({pc['count']} "
              f"concepts): PSNR inside its pixels rises by **{_f(pc['mean_gain_db'])} dB** on average (median "
              f"{_f(pc['median_gain_db'])} dB; {_f(100 * pc['share_gain_ge_2db'], 0)}% of concepts gain 2 dB or more). "
              f"Outside its pixels the PSNR changes by {_f(pc['mean_leak_db'], 3)} dB on average (95th percentile "
              f"{_f(pc['p95_leak_db'], 3)} dB): the leakage through G_g and the attention.", "",
              "| class | concepts | mean pixel share | mean gain (dB) | median gain (dB) | mean leakage (dB) |",
              "|---|---|---|---|---|---|"]
    for row in result["per_class"]:
        lines.append(f"| {row['name']} | {row['concepts']} | {_f(100 * row['mean_share'], 1)}% | "
                     f"{_f(row['mean_gain_db'])} | {_f(row['median_gain_db'])} | {_f(row['mean_leak_db'], 3)} |")
    parts = result["decoder_parts"]
    high = len(result["levels"]) - 1
    lines += ["", "## What each decoder part gives (PSNR, dB)", "",
              "| output | level 0 | highest level |", "|---|---|---|"]
    for part, text in (("x_local", "x_l alone: G_l per class (eq. 29)"), ("x_global", "x_g alone: G_g with SPADE (eq. 30)"),
                       ("x_hat", "x_hat: attention fusion (eq. 31)"), ("f_zero", "x_hat with f_hat set to 0")):
        lines.append(f"| {text} | {_f(parts[f'{part}_level0'])} | {_f(parts[f'{part}_level{high}'])} |")
    lines += ["", f"({result['seconds']:.0f} s)", ""]
    return "\n".join(lines)


@torch.no_grad()
def save_figure(codec: SemanticCodec, dataset, path: str | os.PathLike, images: int = 4, scale: int = 2) -> Path:
    """Rows: originals, every concept at level 0, every concept at the highest level, label maps
    (each picture enlarged ``scale`` x, nearest neighbour)."""
    from torchvision.utils import save_image

    from .classes import colorize

    rows: list[list[Tensor]] = [[], [], [], []]
    for i in range(min(images, len(dataset))):
        image = dataset[i][0].to(codec.device)
        low, info = codec.decompress_with_info(codec.compress(image, _uniform(codec, 0)))
        high = codec.decompress(codec.compress(image, _uniform(codec, codec.num_levels - 1)))
        colours = torch.from_numpy(colorize(info["labels"].cpu().numpy().astype(np.uint8))).permute(2, 0, 1) / 255
        for row, x in zip(rows, (image, low, high, colours.to(image.device))):
            row.append(x.clamp(0, 1).cpu())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = torch.stack([x for row in rows for x in row])
    grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest") if scale > 1 else grid
    save_image(grid, path, nrow=len(rows[0]), padding=2, pad_value=1.0)
    return path


def main(argv: list[str] | None = None) -> int:
    import shlex
    import sys

    cfg = tyro.cli(LevelReportConfig, args=argv, description=__doc__)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    codec = load_codec(cfg.codec, device="cpu")
    dataset = load_dataset("streets", cfg.split, preset=cfg.preset, size=cfg.images, progress=cfg.progress)
    result = measure_levels(codec, dataset, cfg.images, cfg.progress)
    command = "python -m codec_models.level_report " + shlex.join(sys.argv[1:] if argv is None else argv)
    result["command"] = command
    result["config"] = asdict(cfg)
    text = render_markdown(result, command)
    print(text)
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(result, indent=2) + "\n")
    if cfg.markdown:
        Path(cfg.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.markdown).write_text(text)
    if cfg.figure:
        save_figure(codec, dataset, cfg.figure, cfg.figure_images)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
