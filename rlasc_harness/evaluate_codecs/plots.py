"""Figures of the evaluation (matplotlib, Agg): analogues of the paper's Fig. 5, 8, 9, 10, 11, 12."""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

__all__ = ["curves_for_plot", "image_grid", "make_all"]

LABELS = {"rlasc": "RL-ASC", "rlasc_simplified": "Simplified RL-ASC (uniform levels)", "jpeg": "JPEG",
          "jpeg2000": "JPEG2000", "webp": "WebP", "avif": "AVIF", "heif": "HEIF (HEVC / BPG core)"}
SHORT = {"rlasc": "RL-ASC", "rlasc_simplified": "Simplified RL-ASC", "heif": "HEIF (BPG core)"}
STYLES = {"rlasc": ("tab:red", "o", "-"), "rlasc_simplified": ("tab:purple", "s", "--"), "jpeg": ("tab:blue", "v", "-"),
          "jpeg2000": ("tab:green", "^", "-"), "webp": ("tab:orange", "D", "-"), "avif": ("tab:brown", "P", "-"),
          "heif": ("tab:gray", "X", "-")}


# metric key -> axis label of the task-metric figure (data-set metrics first: the per-task BD's)
TASK_PANELS = {"miou_dataset": "segmentation: data-set mIoU", "map50": "detection: mAP@0.5 (instance boxes)",
               "macro_ap": "classification: macro AP", "map": "detection: mAP@[.5:.95]",
               "box_iou": "detection: mean box IoU (eq. 7, per image)",
               "accuracy": "classification: presence accuracy (per image)"}


def curves_for_plot(codecs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[Mapping[str, Any]]]:
    """Curves to draw: ``rlasc_fixed_*`` points join the simplified (uniform-level) curve."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for name, points in codecs.items():
        key = "rlasc_simplified" if name.startswith("rlasc_fixed_") else name
        out.setdefault(key, []).extend(points)
    # RL-ASC last, so that its curve is drawn on top (it may coincide with the simplified one)
    order = sorted(out, key=lambda k: (k == "rlasc", k.startswith("rlasc")))
    return {k: sorted(out[k], key=lambda p: p.get("bpp") or 0.0) for k in order if out[k]}


def _xy(points: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(p["bpp"], p[key]) for p in points if p.get("bpp") is not None and p.get(key) is not None]
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _draw(ax: Any, curves: Mapping[str, Sequence[Mapping[str, Any]]], key: str, ylabel: str,
          max_bpp: float | None = None, reference: float | None = None, transform=None) -> None:
    for name, points in curves.items():
        x, y = _xy(points, key)
        if not len(x):
            continue
        if transform is not None:
            y = transform(y)
        color, marker, line = STYLES.get(name, ("black", ".", "-"))
        ax.plot(x, y, line, color=color, marker=marker, markersize=4, label=LABELS.get(name, name))
        if name == "rlasc_simplified":  # the paper's simplified RL-ASC: highest level everywhere
            top = [(p["bpp"], p[key]) for p in _highest(points) if p.get(key) is not None]
            if top:
                tx, ty = zip(*top)
                ax.plot(tx, transform(np.asarray(ty)) if transform else ty, "*", color=color, markersize=11)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle=":", linewidth=1, label="original images")
    if max_bpp is not None:
        ax.axvline(max_bpp, color="gray", linestyle=":", linewidth=0.8)
    ax.set_xlabel("rate (bpp, real file size)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return str(path)


def make_all(result: Mapping[str, Any], out_dir: Path) -> dict[str, str]:
    """Write fig5/8/9/11/12 (and the other task metrics) as PNG; returns {figure: path}."""
    out_dir = Path(out_dir)
    curves = curves_for_plot(result["codecs"])
    ref = result.get("reference", {})
    max_bpp = (result.get("config") or {}).get("max_bpp")
    title = f"{result['dataset']}, {result['images']} images"
    figures: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _draw(ax, curves, "miou", "mIoU of the segmentation network H", max_bpp, ref.get("miou"))
    ax.set_title(f"Fig. 5 analogue: semantic performance\n{title}", fontsize=9)
    ax.legend(fontsize=7)
    figures["fig5"] = _save(fig, out_dir / "fig5_miou_vs_bpp.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _draw(axes[0], curves, "fid", "FID (lower is better)", max_bpp)
    _draw(axes[1], curves, "kid", "KID (lower is better)", max_bpp)
    note = ((result.get("networks") or {}).get("fid_kid_features") or {}).get("note", "")
    fig.suptitle(textwrap.fill(f"Fig. 8 analogue: perceptual performance, {title}. {note}", 150), fontsize=8)
    axes[0].legend(fontsize=7)
    figures["fig8"] = _save(fig, out_dir / "fig8_fid_kid_vs_bpp.png")

    figures["fig9"] = _rate_semantic_perceptual(curves, out_dir / "fig9_rate_semantic_perceptual.png", title)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _draw(axes[0], curves, "psnr", "PSNR (dB)", max_bpp)
    _draw(axes[1], curves, "ssim", "SSIM", max_bpp)
    fig.suptitle(f"Fig. 11 analogue: rate-distortion. {title}", fontsize=9)
    axes[0].legend(fontsize=7)
    figures["fig11"] = _save(fig, out_dir / "fig11_psnr_ssim_vs_bpp.png")

    extra = [k for k in TASK_PANELS if any(p.get(k) is not None for c in curves.values() for p in c)]
    if extra:
        cols = min(3, len(extra))
        rows = -(-len(extra) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows), squeeze=False)
        for ax, key in zip(axes.flat, extra):
            _draw(ax, curves, key, TASK_PANELS[key], max_bpp, ref.get(key))
        for ax in list(axes.flat)[len(extra):]:
            ax.set_visible(False)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"Task networks' metrics (data-set metrics: the per-task BD deltas). {title}", fontsize=9)
        figures["tasks"] = _save(fig, out_dir / "tasks_vs_bpp.png")

    if result.get("awgn"):
        figures["fig12"] = _awgn(result, out_dir / "fig12_score_vs_snr.png", title)
    return figures


def _highest(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The uniform-level points at each codec's highest level (the paper's simplified RL-ASC)."""
    top: dict[str, int] = {}
    for p in points:
        if p.get("level") is not None:
            top[p.get("codec", "")] = max(top.get(p.get("codec", ""), -1), int(p["level"]))
    return [p for p in points if p.get("level") is not None and int(p["level"]) == top.get(p.get("codec", ""))]


def _rate_semantic_perceptual(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, title: str) -> str:
    """Fig. 9: rate, semantic loss (1 - mIoU) and perceptual loss (FID/FIDmax + KID/KIDmax)."""
    fids = [p["fid"] for c in curves.values() for p in c if p.get("fid") is not None]
    kids = [p["kid"] for c in curves.values() for p in c if p.get("kid") is not None]
    fmax = max(fids) if fids else 1.0
    kmax = max(max(kids), 1e-12) if kids else 1.0
    fig = plt.figure(figsize=(11, 4.6))
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax2 = fig.add_subplot(1, 2, 2)
    for name, points in curves.items():
        rows = [(p["bpp"], 1.0 - p["miou"], p["fid"] / fmax + (p["kid"] / kmax if p.get("kid") is not None else 0.0))
                for p in points if p.get("miou") is not None and p.get("fid") is not None]
        if not rows:
            continue
        x, s, q = (np.asarray(v) for v in zip(*rows))
        color, marker, line = STYLES.get(name, ("black", ".", "-"))
        ax3.plot(x, s, q, line, color=color, marker=marker, markersize=3, label=LABELS.get(name, name))
        ax2.plot(s, q, line, color=color, marker=marker, markersize=4, label=LABELS.get(name, name))
    ax3.set_xlabel("bpp")
    ax3.set_ylabel("1 - mIoU")
    ax3.set_zlabel("perceptual loss")
    ax2.set_xlabel("semantic loss 1 - mIoU")
    ax2.set_ylabel("perceptual loss FID/FIDmax + KID/KIDmax")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle(f"Fig. 9 analogue: rate-semantic-perceptual (lower-left is better). {title}", fontsize=9)
    return _save(fig, path)


def _awgn(result: Mapping[str, Any], path: Path, title: str) -> str:
    meta = result.get("awgn_meta") or {}
    has_map = any(p.get("map50") is not None for points in result["awgn"].values() for p in points)
    panels = [("score", "segmentation mIoU (failed file: 0)")]
    panels += [("map50", "detection mAP@0.5 (failed file: no box)")] if has_map else []
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.5 * (len(panels) + 1), 4.2))
    for name, points in sorted(result["awgn"].items(), key=lambda kv: kv[0] == "rlasc"):
        if not points:
            continue
        color, marker, line = STYLES.get(name, ("black", ".", "-"))
        snr = [p["snr_db"] for p in points]
        bpp = (meta.get(name) or {}).get("bpp")
        label = LABELS.get(name, name) + (f" ({bpp:.3f} bpp)" if bpp is not None else "")
        for ax, (key, _) in zip(axes, panels):
            pts = [p for p in points if p.get(key) is not None]
            ax.errorbar([p["snr_db"] for p in pts], [p[key] for p in pts],
                        yerr=[p.get(f"{key}_std") or 0.0 for p in pts], fmt=line, color=color, marker=marker,
                        markersize=4, capsize=2, label=label)
        axes[-1].plot(snr, [p["failed_share"] for p in points], line, color=color, marker=marker, markersize=4,
                      label=label)
    for ax, (_, ylabel) in zip(axes, panels):
        ax.set_xlabel("SNR (dB), BPSK over AWGN")
        ax.set_ylabel(ylabel)
    axes[-1].set_xlabel("SNR (dB)")
    axes[-1].set_ylabel("share of files that failed to decode")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    what = "segmentation and detection scores" if has_map else "segmentation score"
    fig.suptitle(f"Fig. 12 analogue: {what} vs SNR at about equal rate. {title}", fontsize=9)
    return _save(fig, path)


def _label_tile(image: torch.Tensor, text: str, scale: int) -> torch.Tensor:
    """An image (3,H,W) in [0,1], upscaled ``scale`` times, with ``text`` on a white band below."""
    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    tile = Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST)
    band = 28
    canvas = Image.new("RGB", (tile.width, tile.height + band), "white")
    canvas.paste(tile, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, line in enumerate(text.split("\n")[:2]):
        draw.text((4, tile.height + 2 + 12 * k), line, fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255.0


def image_grid(data: Any, results: Mapping[str, Sequence[Any]], primary: str, path: Path, index: int = 0,
               scale: int = 2) -> Path | None:
    """Fig. 10: the original image and each codec's reconstruction at about RL-ASC's rate.

    The target is the rate of RL-ASC (the agent, else the simplified model) on this image; each
    other codec shows its point at the smallest rate not below the target (else its largest).
    """
    shape = data.shape
    ref_family = "rlasc" if results.get("rlasc") else "rlasc_simplified"
    ref_points = [p for p in results.get(ref_family, []) if p.preview is not None and not p.record.get("level_offset")
                  and p.record.get("codec") == primary]
    if not ref_points:
        return None
    ref = ref_points[0]
    target = ref.image_bpp(index, shape)
    tiles = [_label_tile(data.image(index), "original", scale), _label_tile(ref.preview, f"{SHORT.get(ref_family)}\n"
                                                                           f"{target:.3f} bpp", scale)]
    families = [k for k in results if k != ref_family and not k.startswith("rlasc_fixed_")]
    for family in families:
        points = [p for p in results[family] if p.preview is not None]
        if family.startswith("rlasc"):
            points = [p for p in points if p.record.get("codec") == primary]
        if not points:
            continue
        above = [p for p in points if p.image_bpp(index, shape) >= target]
        pick = min(above, key=lambda p: p.image_bpp(index, shape)) if above else \
            max(points, key=lambda p: p.image_bpp(index, shape))
        tiles.append(_label_tile(pick.preview, f"{SHORT.get(family, LABELS.get(family, family))}\n{pick.image_bpp(index, shape):.3f} bpp",
                                 scale))
    grid = make_grid(torch.stack(tiles), nrow=4, padding=4, pad_value=1.0)
    Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).numpy()).save(path)
    return path
