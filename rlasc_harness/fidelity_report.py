"""Issue 31's figures for one or more codecs: what the networks that score the benchmark read at the lowest and the
highest level, through real bytes.

    python -m rlasc_harness.fidelity_report --codecs tiny runs/codec/fidelity-s0/codec.pt --images 200 \\
        --json docs/semantic_fidelity/report.json

For every codec, every test image is coded with all its concepts at level 0 and, separately, at the highest level
(``SemanticCodec.compress`` byte for byte, decoded with ``decompress``); the originals are scored once. Scorers:

- the ``-v3`` task networks (``rlasc_env/weights/v3``): segmentation data-set mIoU, detection mAP@0.5 and
  classification macro AP (:class:`~rlasc_harness.evaluate_codecs.metrics.QualityMeter`, the definitions of
  ``evaluate.py``). No codec trainer of this project loads them (``rlasc_harness.fidelity`` trains against ``-v1``);
- an independent segmenter (``--independent``, trained from scratch for the purpose with another seed and width,
  never seen by a codec): data-set mIoU.

Also: bpp of the files (8 * bytes / pixels), PSNR, and the mean per-concept PSNR gain of a level: for each image and
present concept, the PSNR inside the concept's region when that concept alone is at the highest level (the others
at level 0), minus the PSNR there with every concept at level 0 (what an agent's one step changes).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from torchmetrics.classification import MulticlassJaccardIndex

from codec_models.checkpoint import load_codec
from codec_models.classes import IGNORE_INDEX, NUM_TRAIN_CLASSES
from codec_models.codec import Analysis, SemanticCodec
from codec_models.datasets import load_dataset
from rlasc_env.tasks import Task, make_task
from rlasc_env.tasks.networks import WEIGHTS_DIR
from rlasc_harness.evaluate_codecs.metrics import INDEPENDENT_SEGMENTER, QualityMeter
from rlasc_harness.evaluate_codecs.rlasc import compress_levels
from rlasc_harness.evaluate_codecs.sweep import EvalSet

__all__ = ["FidelityReportConfig", "INDEPENDENT_SEGMENTER", "concept_psnr_gain", "fidelity_report", "uniform_level_batches",
           "main"]

TASKS = ("segmentation", "detection", "classification")


@dataclass
class FidelityReportConfig:
    """Level-0 and highest-level task figures of codecs, through real bytes, scored by networks no codec trains on."""

    codecs: tuple[str, ...] = ("tiny",)  # shipped names or codec.pt files
    images: int = 200  # the first N test images
    split: str = "test"
    scorers: str = str(WEIGHTS_DIR / "v3")  # folder of the scoring task networks ({task}.pt)
    independent: str | None = str(INDEPENDENT_SEGMENTER)  # independent segmenter (None: skip)
    batch_size: int = 20
    threads: int = 1
    json: str | None = None  # write the report here
    figure: str | None = None  # also draw originals, level 0 and the highest level of every codec, with what the -v3
    # segmenter sees on each, for the first --figure-images images (PNG)
    figure_images: int = 4


def load_scorers(cfg: FidelityReportConfig) -> tuple[dict[str, Task], Task | None]:
    folder = Path(cfg.scorers)
    tasks = {t: make_task(t, reference="ground_truth", weights=str(folder / f"{t}.pt")) for t in TASKS}
    independent = None
    if cfg.independent is not None:
        if not Path(cfg.independent).is_file():
            raise FileNotFoundError(f"--independent {cfg.independent} does not exist: train it with the command in "
                                    "docs/semantic_fidelity.md or pass --independent None")
        independent = make_task("segmentation", reference="ground_truth", weights=str(cfg.independent))
    for task in [*tasks.values(), independent]:
        if task is not None:
            task.network.eval()
    return tasks, independent


@torch.no_grad()
def concept_psnr_gain(codec: SemanticCodec, images: torch.Tensor) -> list[float]:
    """Per (image, present concept): PSNR inside the concept's region with that concept alone at the highest level,
    minus the PSNR there with every concept at level 0 (dB)."""
    gains: list[float] = []
    top = codec.num_levels - 1
    for x in images:
        analysis = codec.analyse(x[None])
        present = analysis.present[0].nonzero().flatten().tolist()
        base = torch.zeros(1, codec.num_classes, dtype=torch.long)
        levels = base.repeat(len(present) + 1, 1)
        for row, m in enumerate(present, start=1):
            levels[row, m] = top
        n = len(levels)
        batch = Analysis(labels=analysis.labels.expand(n, -1, -1), onehot=analysis.onehot.expand(n, -1, -1, -1),
                         features=analysis.features.expand(n, -1, -1, -1), mask=analysis.mask.expand(n, -1, -1, -1),
                         area=analysis.area.expand(n, -1, -1, -1),
                         quantized=analysis.quantized.expand(-1, n, -1, -1, -1))
        x_hat = codec.decode(batch, levels).clamp(0, 1)
        for row, m in enumerate(present, start=1):
            region = analysis.labels[0] == m
            if region.sum() == 0:
                continue
            mse0 = ((x_hat[0] - x) ** 2).mean(0)[region].mean()
            mse1 = ((x_hat[row] - x) ** 2).mean(0)[region].mean()
            gains.append(float(10 * torch.log10(mse0.clamp_min(1e-10) / mse1.clamp_min(1e-10))))
    return gains


@torch.no_grad()
def score_images(batches: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None,
                                   np.ndarray | None]],
                 tasks: dict[str, Task], independent: Task | None, count: int) -> dict[str, Any]:
    """QualityMeter's figures (v3 networks) plus the independent segmenter's data-set mIoU."""
    meter = QualityMeter(tasks, None, count)
    jaccard = MulticlassJaccardIndex(NUM_TRAIN_CLASSES, average="macro", ignore_index=IGNORE_INDEX)
    for _, images, x_hat, labels, bits, instances in batches:
        meter.update(images, x_hat, labels, bits, instances)
        if independent is not None:
            jaccard.update(independent.network(x_hat.clamp(0, 1)).argmax(1), labels)
    out = meter.result()
    keep = {k: out.get(k) for k in ("bpp", "psnr", "ssim", "miou_dataset", "map50", "macro_ap", "images")}
    if independent is not None:
        keep["miou_dataset_independent"] = float(jaccard.compute())
    return keep


def uniform_level_batches(codec: SemanticCodec, data: EvalSet, level: int, batch_size: int) -> list[tuple[Any, ...]]:
    """Every concept of every image of ``data`` at ``level``, through real files: the batches
    :func:`score_images` takes (indices, originals, decoded images, labels, bits of each file, instances)."""
    batches = []
    for idx, images, labels in data.batches(batch_size):
        files = [compress_levels(codec, x, [{m: level for m in range(codec.num_classes)}])[0] for x in images]
        x_hat = torch.stack([codec.decompress(f) for f in files])
        bits = torch.tensor([8.0 * len(f) for f in files])
        batches.append((idx, images, x_hat, labels, bits, data.instance_batch(idx)))
    return batches


@torch.no_grad()
def draw_figure(path: str, columns: list[tuple[str, torch.Tensor]], segmenter: Task, labels: torch.Tensor) -> str:
    """One row pair per image: the pictures of every column, then the segmenter's label maps of them (the first
    column's second row is the ground truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codec_models.classes import colorize

    count = labels.shape[0]
    fig, axes = plt.subplots(2 * count, len(columns), figsize=(2.2 * len(columns), 2.3 * count), squeeze=False)
    for c, (title, images) in enumerate(columns):
        seen = segmenter.network(images).argmax(1) if c else labels
        for i in range(count):
            axes[2 * i, c].imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[2 * i + 1, c].imshow(colorize(seen[i].numpy().astype(np.int64).clip(0, 255)))
            if i == 0:
                axes[0, c].set_title(title, fontsize=7)
        for ax in axes[:, c]:
            ax.set_axis_off()
    axes[1, 0].set_title("ground truth", fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fidelity_report(cfg: FidelityReportConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    started = time.time()
    tasks, independent = load_scorers(cfg)
    data = EvalSet.from_dataset(load_dataset("streets", cfg.split, preset="tiny", size=cfg.images, progress=False),
                                cfg.images, f"streets/{cfg.split}")
    report: dict[str, Any] = {"images": data.count, "split": cfg.split,
                              "scorers": {t: task.describe().get("weights") for t, task in tasks.items()},
                              "independent": None if independent is None else independent.weights, "codecs": {}}
    batches = []
    for idx, images, labels in data.batches(cfg.batch_size):
        batches.append((idx, images, images, labels, None, data.instance_batch(idx)))
    report["originals"] = score_images(batches, tasks, independent, data.count)
    shown = min(cfg.figure_images, data.count)
    columns: list[tuple[str, torch.Tensor]] = [("original", data.images[:shown].float() / 255.0)]
    for name in cfg.codecs:
        codec = load_codec(name).eval()
        top = codec.num_levels - 1
        row: dict[str, Any] = {"source": str(getattr(codec, "source", name))}
        for level in (0, top):
            batches = uniform_level_batches(codec, data, level, cfg.batch_size)
            row[f"level{level}"] = score_images(batches, tasks, independent, data.count)
            pictures = torch.cat([b[2] for b in batches])[:shown]
            columns.append((f"{Path(name).stem} level {level}\n{row[f'level{level}']['bpp']:.3f} bpp", pictures))
            print(f"{name} level {level}: {row[f'level{level}']}", file=sys.stderr, flush=True)
        gains = concept_psnr_gain(codec, data.images.float() / 255.0)
        row["concept_psnr_gain_db"] = float(np.mean(gains)) if gains else math.nan
        row["concepts"] = len(gains)
        orig = report["originals"]
        row["highest_vs_originals"] = {k: row[f"level{top}"][k] / orig[k] for k in
                                       ("miou_dataset", "map50", "macro_ap", "miou_dataset_independent")
                                       if row[f"level{top}"].get(k) is not None and orig.get(k)}
        report["codecs"][name] = row
    if cfg.figure:
        report["figure"] = draw_figure(cfg.figure, columns, tasks["segmentation"], data.labels[:shown])
    report["seconds"] = time.time() - started
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(FidelityReportConfig, args=argv)
    report = fidelity_report(cfg)
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
