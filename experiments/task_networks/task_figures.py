"""Data-set figures of the shipped segmentation and classification H on the first 200 and 1000 clean test images.

    python experiments/task_networks/task_figures.py --sets v1 v2 v3 --json docs/task_figures.json

For each weights set (``v1`` = ``rlasc_env/weights/``, ``v2``/``v3`` = ``rlasc_env/weights/v2|v3/``): segmentation
data-set mIoU with per-class IoU (torchmetrics, eq. 5 over all pixels) and classification macro AP with per-class
AP and positive images (torchmetrics, eq. 8's presence), clean and degraded (blur 1.5 + 4x down-up, as in
``train_tasks.py``). One torch thread, CPU; about 5 minutes for the three sets.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from codec_models.classes import TRAIN_NAMES  # noqa: E402
from rlasc_env.tasks.networks import WEIGHTS_DIR, load_task_network  # noqa: E402
from rlasc_env.tasks.training import (TASK_CLASS, TrainTasksConfig, dataset_figures,  # noqa: E402
                                      evaluation_degradation, load_split)


def figures(weights_set: str, images: torch.Tensor, labels: torch.Tensor, sizes: tuple[int, ...]) -> dict:
    """{task: {"{n}_clean" | "{n}_degraded": {value, per_class, positives}}} for one weights set."""
    folder = WEIGHTS_DIR if weights_set == "v1" else WEIGHTS_DIR / weights_set
    out: dict = {}
    for task in ("segmentation", "classification"):
        net, path, _ = load_task_network(task, folder / f"{task}.pt")
        net.eval()
        evaluator = TASK_CLASS[task](net, "ground_truth", type(net).__name__)
        entry: dict = {"weights": str(Path(path).relative_to(REPO)), "network": type(net).__name__}
        for n in sizes:
            for name, transform in (("clean", None), ("degraded", evaluation_degradation)):
                found = dataset_figures(evaluator, images[:n], labels[:n], transform=transform)
                per = found.get("per_class_iou", found.get("per_class_ap"))
                entry[f"{n}_{name}"] = {
                    "value": round(float(found.get("miou", found.get("macro_ap"))), 4),
                    "per_class": {c: round(float(v), 4) for c, v in zip(TRAIN_NAMES, per)},
                    **({"positives": dict(zip(TRAIN_NAMES, map(int, found["positives"])))}
                       if "positives" in found else {})}
        out[task] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["v1", "v2", "v3"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[200, 1000])
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, labels = load_split(TrainTasksConfig(progress=False), "test", max(args.sizes))
    result = {s: figures(s, images, labels, tuple(args.sizes)) for s in args.sets}
    for s, tasks in result.items():
        for task, entry in tasks.items():
            print(f"{s} {task} ({entry['network']}): " + ", ".join(
                f"{k} {v['value']:.4f}" for k, v in entry.items() if isinstance(v, dict)), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
