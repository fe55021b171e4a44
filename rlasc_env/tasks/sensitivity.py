"""Dynamic range, measured: how much the task metric moves with the quantization levels.

    python -m rlasc_env.tasks.sensitivity --task all --images 100 \\
        --json runs/sensitivity/sensitivity.json --markdown runs/sensitivity/sensitivity.md

On the first ``--images`` images of the streets test split, with the codec ``--codec`` and the
shipped task networks H (whatever :func:`rlasc_env.tasks.make_task` returns), it reports two
tables per task:

1. **Per uniform level**: every concept coded at level q (0 = coarsest ... Q-1 = finest), for
   every q, and the original (uncoded) images as the reference row: the mean per-image
   semantic loss L_S = f_degrade(H(x), H(x_hat)) (eq. 4; 1 - mIoU for segmentation, eq. 5-6;
   -ln mean box IoU for detection, eq. 7; cross-entropy for classification, eq. 8-9), the
   mean per-image task metric, and the data-set figure where the task module defines one
   (segmentation: data-set mIoU over all pixels, torchmetrics ``MulticlassJaccardIndex(19,
   ignore_index=255)``; detection: mAP@0.5 against the instance boxes; classification: macro
   average precision over classes), always against the data's ground truth. Then the range:
   highest level minus level 0.
2. **Per class**: for each class m, over the images whose concept set (the codec's label map,
   the concepts the environment codes) holds m: the change of the per-image metric and L_S
   when concept m alone goes from the highest level to level 0, every other concept at the
   highest level. Mean, median and number of images, sorted by the mean metric change (the
   largest drop first). This is what an agent can learn from: where a coarse level costs task
   quality and where it is free.

References follow the environment (:class:`rlasc_env.env.EpisodeCore`):
``task.references(images, labels)`` with the data's label maps (and, for a task that uses them, the
data set's instance maps) (``--reference ground_truth``, the default) or H on the originals (``--reference original``). Decodes are batched: one
``codec.analyse`` per image batch, Q uniform decodes per batch and one decode per (image,
present class) pair, ``--batch-size`` pairs at a time. Everything runs in inference mode in a
fixed image order, so the output is deterministic for given weights and device.
"""
from __future__ import annotations

import json
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro
from torch import Tensor
from tqdm import tqdm

from codec_models.classes import NUM_TRAIN_CLASSES, TRAIN_NAMES
from codec_models.device import resolve_device

from .base import Task, make_task, registered_tasks

PAPER_TASKS: tuple[str, ...] = ("segmentation", "detection", "classification")


@dataclass
class SensitivityConfig:
    """Flags of ``python -m rlasc_env.tasks.sensitivity``."""

    task: str = "all"  # segmentation | detection | classification | all (or any registered task)
    codec: str = "tiny"  # shipped codec name or checkpoint path (codec_models.checkpoint.load_codec)
    images: int = 100  # the first N images of the split
    dataset: str = "streets"
    split: str = "test"
    preset: str = "tiny"  # data preset (image size) of codec_models.datasets.load_dataset
    reference: Literal["ground_truth", "original"] = "ground_truth"  # as SemanticCodingEnv(reference=...)
    task_weights: str = ""  # folder of the task networks ({folder}/{task}.pt, e.g. rlasc_env/weights/v2); "" = shipped -v1 set
    device: str = "cpu"  # "cpu", "cuda", or "auto" (CUDA when available)
    batch_size: int = 16  # images per analyse, and (image, class) pairs per per-class decode
    json: str | None = None  # write the full report here
    markdown: str | None = None  # write both tables as markdown here
    progress: bool = True  # tqdm progress bars


# --------------------------------------------------------------------------- setup
def resolve_task_names(task: str) -> list[str]:
    """``"all"`` -> the paper's three tasks; a registered task name -> [name]; else ValueError."""
    if task == "all":
        return list(PAPER_TASKS)
    known = registered_tasks()
    if task not in known:
        raise ValueError(f"unknown --task {task!r}: choose one of {sorted(set(PAPER_TASKS) | {'all'})} "
                         f"(registered tasks: {known})")
    return [task]


def load_tasks(names: list[str], reference: str, device: torch.device, strict: bool, weights_dir: str = ""
               ) -> tuple[dict[str, Task], dict[str, str]]:
    """Build each task (H from ``{weights_dir}/{name}.pt`` when a folder is given, else the shipped default);
    with ``strict`` a failure raises, else it is returned as {name: error}."""
    tasks, errors = {}, {}
    for name in names:
        try:
            extra = {"weights": str(Path(weights_dir) / f"{name}.pt")} if weights_dir else {}
            tasks[name] = make_task(name, reference=reference, device=device, **extra)
        except Exception as exc:  # noqa: BLE001 - reported per task in --task all
            if strict:
                raise
            errors[name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"task {name!r} skipped: {errors[name]}", stacklevel=2)
    return tasks, errors


def load_images(cfg: SensitivityConfig) -> tuple[Any, Tensor, Tensor]:
    """(data set, images (N,3,H,W) float, labels (N,H,W) int64) of the first ``cfg.images`` items."""
    from codec_models.datasets import load_dataset

    data = load_dataset(cfg.dataset, split=cfg.split, preset=cfg.preset)
    n = min(int(cfg.images), len(data))
    if n < 1:
        raise ValueError(f"--images must be >= 1 (the {cfg.split} split holds {len(data)} images)")
    items = [data[i] for i in range(n)]
    return data, torch.stack([x for x, _ in items]).float(), torch.stack([torch.as_tensor(y) for _, y in items]).long()


# --------------------------------------------------------------------------- data-set figures
@dataclass
class DatasetFigure:
    """A task's data-set (not per-image) figure: collect H's outputs per condition, then score."""

    name: str  # headline key, e.g. "miou"
    collect: Callable[[Tensor], Any]  # x_hat (B,3,H,W) -> H's outputs for the batch (CPU)
    score: Callable[[list[Any]], dict[str, Any]]  # outputs of all N images, in order -> figures
    note: str = ""


def dataset_figure(task: Task, data: Any, labels: Tensor) -> tuple[DatasetFigure | None, str]:
    """The data-set figure the task's module defines (public helpers only), or (None, why not)."""
    from . import classification, detection, segmentation

    if isinstance(task, segmentation.SegmentationTask) and hasattr(segmentation, "dataset_iou"):
        k = int(getattr(task, "num_classes", NUM_TRAIN_CLASSES))
        return DatasetFigure("miou", lambda x: task.predict(x).to(torch.uint8),
                             lambda outs: segmentation.dataset_iou(torch.cat(outs).long(), labels, k),
                             "data-set mIoU vs ground truth, segmentation.dataset_iou (MulticlassJaccardIndex, "
                             "ignore_index=255)"), ""
    if isinstance(task, classification.ClassificationTask) and hasattr(classification, "dataset_average_precision"):
        k = int(getattr(task, "num_classes", NUM_TRAIN_CLASSES))
        targets = classification.presence_vector(labels, k)
        return DatasetFigure("macro_ap", task.probabilities,
                             lambda outs: classification.dataset_average_precision(torch.cat(outs), targets),
                             "macro AP over classes vs ground-truth presence, "
                             "classification.dataset_average_precision"), ""
    if isinstance(task, detection.DetectionTask):
        try:
            from codec_models.streets import instance_targets

            from .detection_training import mean_average_precision
        except ImportError as exc:
            return None, f"no data-set figure: {exc}"
        if not hasattr(data, "instance_map"):
            return None, "no data-set figure: the data set has no instance maps for ground-truth boxes"
        targets = []
        for i, lab in enumerate(labels.numpy()):
            t = instance_targets(lab, data.instance_map(i), int(getattr(task, "min_pixels", 4)))
            targets.append({"boxes": torch.from_numpy(t["boxes"]).float(), "labels": torch.from_numpy(t["labels"])})
        return DatasetFigure("map_50", task.detections,
                             lambda outs: mean_average_precision([d for batch in outs for d in batch], targets),
                             "mAP@0.5 vs instance boxes (detection_training.mean_average_precision, torchmetrics "
                             "MeanAveragePrecision); per-image metric uses the env's references"), ""
    return None, f"no data-set figure: task {task.name!r} defines none (per-image metric only)"


# --------------------------------------------------------------------------- measurement
@dataclass
class Accumulator:
    """Per-task results gathered over the image batches."""

    num_levels: int
    loss: dict[str, list[Tensor]] = field(default_factory=dict)  # condition -> per-image L_S (B,)
    metric: dict[str, list[Tensor]] = field(default_factory=dict)
    outputs: dict[str, list[Any]] = field(default_factory=dict)  # condition -> H's outputs (data-set figure)
    pair_image: list[int] = field(default_factory=list)  # per (image, class) pair: image index
    pair_class: list[int] = field(default_factory=list)
    pair_share: list[float] = field(default_factory=list)  # pixel share of the class in that image
    pair_loss: list[float] = field(default_factory=list)  # L_S with the class alone at level 0
    pair_metric: list[float] = field(default_factory=list)

    def add(self, condition: str, loss: Tensor, metric: Tensor, outputs: Any = None) -> None:
        self.loss.setdefault(condition, []).append(loss.double().cpu())
        self.metric.setdefault(condition, []).append(metric.double().cpu())
        if outputs is not None:
            self.outputs.setdefault(condition, []).append(outputs)


def level_condition(q: int) -> str:
    """Accumulator key of the uniform level q."""
    return f"level_{q}"


def evaluate(task: Task, figure: DatasetFigure | None, acc: Accumulator, condition: str, x_hat: Tensor,
             refs: list[Any]) -> None:
    """L_S and metric of the task on x_hat (and H's outputs for the data-set figure) into ``acc``."""
    loss, metric = task.loss(x_hat, refs)
    acc.add(condition, loss, metric, figure.collect(x_hat) if figure is not None else None)


def sub_analysis(an: Any, rows: Tensor) -> Any:
    """The codec's Analysis restricted (or repeated) to image rows ``rows``."""
    return type(an)(labels=an.labels[rows], onehot=an.onehot[rows], features=an.features[rows], mask=an.mask[rows],
                    area=an.area[rows], quantized=an.quantized[:, rows])


@torch.inference_mode()
def measure_batch(codec: Any, tasks: dict[str, Task], figures: dict[str, DatasetFigure | None],
                  accs: dict[str, Accumulator], images: Tensor, labels: Tensor, offset: int, pair_batch: int,
                  instances: np.ndarray | None = None) -> int:
    """Originals, every uniform level and every (image, present class) pair of one image batch.

    Returns the number of (image, class) pairs decoded.
    """
    dev = codec.device
    images, labels = images.to(dev), labels.to(dev)
    refs = {name: (task.references(images, labels, instances=instances)
                   if task.uses_instances and task.reference_mode == "ground_truth" and instances is not None
                   else task.references(images, labels)) for name, task in tasks.items()}
    for name, task in tasks.items():
        evaluate(task, figures[name], accs[name], "original", images, refs[name])
    an = codec.analyse(images)
    b, m, q_high = images.shape[0], codec.num_classes, codec.num_levels - 1
    for q in range(codec.num_levels):
        x_hat = codec.decode(an, torch.full((b, m), q, dtype=torch.long, device=dev))
        for name, task in tasks.items():
            evaluate(task, figures[name], accs[name], level_condition(q), x_hat, refs[name])
    share = an.area.mean((-2, -1)).double().cpu()
    rows, classes = an.present.nonzero(as_tuple=True)
    for start in range(0, len(rows), pair_batch):
        r, c = rows[start:start + pair_batch], classes[start:start + pair_batch]
        levels = torch.full((len(r), m), q_high, dtype=torch.long, device=dev)
        levels[torch.arange(len(r), device=dev), c] = 0
        x_hat = codec.decode(sub_analysis(an, r), levels)
        for name, task in tasks.items():
            loss, metric = task.loss(x_hat, [refs[name][i] for i in r.tolist()])
            acc = accs[name]
            acc.pair_image += (r.cpu() + offset).tolist()
            acc.pair_class += c.tolist()
            acc.pair_share += share[r.cpu(), c.cpu()].tolist()
            acc.pair_loss += loss.double().cpu().tolist()
            acc.pair_metric += metric.double().cpu().tolist()
    return len(rows)


# --------------------------------------------------------------------------- tables
def clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tensors and NumPy values -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (Tensor, np.ndarray)):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def condition_row(acc: Accumulator, condition: str, level: int | None, figure: DatasetFigure | None
                  ) -> dict[str, Any]:
    """One row of the per-level table: means over the images and the data-set figure."""
    loss, metric = torch.cat(acc.loss[condition]), torch.cat(acc.metric[condition])
    row: dict[str, Any] = {"condition": condition, "level": level, "images": int(loss.numel()),
                           "semantic_loss_mean": float(loss.mean()), "metric_mean": float(metric.mean()),
                           "metric_median": float(metric.median())}
    if figure is not None:
        figures = figure.score(acc.outputs[condition])
        row["dataset_metric"] = clean(figures.get(figure.name))
        row["dataset"] = clean(figures)
    return row


def level_table(acc: Accumulator, figure: DatasetFigure | None) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                                          dict[str, Any]]:
    """(original row, level rows in increasing level order, highest-minus-level-0 drop)."""
    original = condition_row(acc, "original", None, figure)
    levels = [condition_row(acc, level_condition(q), q, figure) for q in range(acc.num_levels)]
    low, high = levels[0], levels[-1]
    drop = {"metric_mean": high["metric_mean"] - low["metric_mean"],
            "semantic_loss_mean": high["semantic_loss_mean"] - low["semantic_loss_mean"]}
    if figure is not None:
        a, b = high.get("dataset_metric"), low.get("dataset_metric")
        drop["dataset_metric"] = None if a is None or b is None else a - b
    return original, levels, drop


def class_table(acc: Accumulator) -> list[dict[str, Any]]:
    """Per present class: change of metric and L_S (class m alone at level 0 minus all highest).

    Sorted by the mean metric change, the most harmful (most negative) first.
    """
    high = level_condition(acc.num_levels - 1)
    base_metric, base_loss = torch.cat(acc.metric[high]), torch.cat(acc.loss[high])
    img = torch.tensor(acc.pair_image, dtype=torch.long)
    cls = torch.tensor(acc.pair_class, dtype=torch.long)
    d_metric = torch.tensor(acc.pair_metric, dtype=torch.float64) - base_metric[img]
    d_loss = torch.tensor(acc.pair_loss, dtype=torch.float64) - base_loss[img]
    share = torch.tensor(acc.pair_share, dtype=torch.float64)
    rows = []
    for c in sorted(set(acc.pair_class)):
        sel = cls == c
        name = TRAIN_NAMES[c] if c < len(TRAIN_NAMES) else str(c)
        rows.append({"class_id": c, "class": name, "images": int(sel.sum()),
                     "metric_change_mean": float(d_metric[sel].mean()),
                     "metric_change_median": float(d_metric[sel].median()),
                     "semantic_loss_change_mean": float(d_loss[sel].mean()),
                     "semantic_loss_change_median": float(d_loss[sel].median()),
                     "share_mean": float(share[sel].mean())})
    rows.sort(key=lambda row: (row["metric_change_mean"], row["class_id"]))
    return rows


# --------------------------------------------------------------------------- run
def codec_record(codec: Any, name: str) -> dict[str, Any]:
    """Codec name, source, levels and the meta saved beside its weights (if any)."""
    return {"name": name, "source": str(getattr(codec, "source", "")), "num_levels": int(codec.num_levels),
            "num_classes": int(codec.num_classes), "meta": clean(getattr(codec, "meta", None) or {})}


def run(cfg: SensitivityConfig) -> dict[str, Any]:
    """Measure every requested task; return the report (also written to --json / --markdown)."""
    start = time.time()
    names = resolve_task_names(cfg.task)
    if cfg.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    torch.manual_seed(0)
    device = resolve_device(cfg.device)
    from codec_models.checkpoint import load_codec

    codec = load_codec(cfg.codec, device=device).eval()
    tasks, errors = load_tasks(names, cfg.reference, device, strict=cfg.task != "all", weights_dir=cfg.task_weights)
    data, images, labels = load_images(cfg)
    figures, figure_notes = {}, {}
    for name, task in tasks.items():
        figures[name], figure_notes[name] = dataset_figure(task, data, labels)
    accs = {name: Accumulator(codec.num_levels) for name in tasks}
    concepts = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        starts = range(0, images.shape[0], cfg.batch_size)
        for i in tqdm(starts, desc="sensitivity", unit="batch", disable=not cfg.progress):
            stop = min(i + cfg.batch_size, images.shape[0])
            instances = (np.stack([data.instance_map(j) for j in range(i, stop)])
                         if callable(getattr(data, "instance_map", None)) else None)  # detection: one box per object
            concepts += measure_batch(codec, tasks, figures, accs, images[i:stop], labels[i:stop], i, cfg.batch_size,
                                      instances)
    notes = sorted({str(w.message) for w in caught})
    report: dict[str, Any] = {
        "config": asdict(cfg), "codec": codec_record(codec, cfg.codec),
        "data": {"dataset": cfg.dataset, "split": cfg.split, "preset": cfg.preset, "images": int(images.shape[0]),
                 "height": int(images.shape[-2]), "width": int(images.shape[-1]), "concepts": concepts,
                 "concept_set": "classes of the codec's label map (codec.analyse(images).present), as in the env"},
        "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "warnings": notes, "tasks": {}}
    for name in names:
        if name in errors:
            report["tasks"][name] = {"error": errors[name]}
            continue
        task, figure = tasks[name], figures[name]
        original, levels, drop = level_table(accs[name], figure)
        report["tasks"][name] = {
            "describe": clean(task.describe()), "metric_name": task.metric_name,
            "dataset_metric_name": figure.name if figure is not None else None,
            "dataset_note": figure.note if figure is not None else figure_notes[name],
            "original": original, "levels": levels, "drop_highest_minus_level0": drop,
            "per_class": class_table(accs[name])}
    report["wall_seconds"] = time.time() - start
    write_outputs(report, cfg)
    return report


# --------------------------------------------------------------------------- output
def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` decimals, None as "-"."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def task_markdown(name: str, rec: dict[str, Any], num_levels: int) -> list[str]:
    """Both tables of one task as markdown lines."""
    if "error" in rec:
        return [f"## {name}", "", f"Not measured: {rec['error']}", ""]
    d = rec["describe"]
    metric, ds = rec["metric_name"], rec["dataset_metric_name"]
    lines = [f"## {name}", "",
             f"H = {d.get('network')} ({d.get('weights', 'in-process')}), reference = {d.get('reference')}, "
             f"per-image metric = {metric}, L_S range {d.get('loss_scale')}. Data-set figure: "
             f"{rec['dataset_note'] or '-'}.", "",
             "### Per uniform level", "",
             f"| condition | L_S mean | {metric} mean | {metric} median | data-set {ds or 'figure'} |",
             "|---|---|---|---|---|"]
    for row in [rec["original"]] + rec["levels"]:
        label = "original (uncoded)" if row["level"] is None else f"level {row['level']}"
        lines.append(f"| {label} | {fmt(row['semantic_loss_mean'])} | {fmt(row['metric_mean'])} | "
                     f"{fmt(row['metric_median'])} | {fmt(row.get('dataset_metric'))} |")
    drop = rec["drop_highest_minus_level0"]
    lines += [f"| level {num_levels - 1} - level 0 | {fmt(drop['semantic_loss_mean'])} | {fmt(drop['metric_mean'])} "
              f"| | {fmt(drop.get('dataset_metric'))} |", "",
              "### Per class: concept m alone at level 0, others at the highest level", "",
              f"Change = value with m at level 0 minus value with every concept at level {num_levels - 1}, over the "
              "images whose concept set holds m; sorted by the mean metric change.", "",
              f"| class | id | images | mean share | d{metric} mean | d{metric} median | dL_S mean | dL_S median |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rec["per_class"]:
        lines.append(f"| {row['class']} | {row['class_id']} | {row['images']} | {fmt(row['share_mean'], 3)} | "
                     f"{fmt(row['metric_change_mean'])} | {fmt(row['metric_change_median'])} | "
                     f"{fmt(row['semantic_loss_change_mean'])} | {fmt(row['semantic_loss_change_median'])} |")
    return lines + [""]


def to_markdown(report: dict[str, Any]) -> str:
    """The markdown report: a header, then both tables for every task."""
    cfg, data, codec = report["config"], report["data"], report["codec"]
    lines = ["# Dynamic range of the task metric over quantization levels", "",
             f"Codec `{codec['name']}` ({codec['source']}, Q = {codec['num_levels']} levels), {data['images']} "
             f"{data['dataset']} {data['split']} images ({data['height']}x{data['width']}), {data['concepts']} "
             f"concepts, reference `{cfg['reference']}`, device {report['device']}, "
             f"{report['wall_seconds']:.1f} s.", ""]
    for note in report.get("warnings", []):
        lines += [f"> note: {note}", ""]
    for name, rec in report["tasks"].items():
        lines += task_markdown(name, rec, codec["num_levels"])
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], cfg: SensitivityConfig) -> None:
    """Write the JSON (strict, NaN as null) and the markdown report where the flags ask."""
    if cfg.json:
        path = Path(cfg.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(clean(report), indent=2, allow_nan=False) + "\n")
    if cfg.markdown:
        path = Path(cfg.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_markdown(report))


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: level 0 vs highest and the top classes per task."""
    out = []
    for name, rec in report["tasks"].items():
        if "error" in rec:
            out.append(f"{name}: not measured ({rec['error']})")
            continue
        low, high, metric = rec["levels"][0], rec["levels"][-1], rec["metric_name"]
        line = (f"{name}: {metric} original {rec['original']['metric_mean']:.4f}, level 0 {low['metric_mean']:.4f}, "
                f"highest {high['metric_mean']:.4f}")
        if rec["dataset_metric_name"]:
            line += (f"; {rec['dataset_metric_name']} original {fmt(rec['original'].get('dataset_metric'))}, "
                     f"level 0 {fmt(low.get('dataset_metric'))}, highest {fmt(high.get('dataset_metric'))}")
        top = ", ".join(f"{r['class']} {r['metric_change_mean']:+.4f}" for r in rec["per_class"][:3])
        out += [line, f"  most sensitive classes: {top}"]
    out.append(f"wall {report['wall_seconds']:.1f} s")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line: parse the flags, check --task before loading anything, run, print a summary."""
    cfg = tyro.cli(SensitivityConfig, args=argv, description=__doc__)
    try:
        resolve_task_names(cfg.task)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    report = run(cfg)
    print(summary(report))
    return report


if __name__ == "__main__":
    main()
