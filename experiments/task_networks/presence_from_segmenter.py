"""Classification macro AP (eq. 8's presence labels) of the shipped classification H against presence scores read
off the shipped segmentation H, on clean streets test images.

    python experiments/task_networks/presence_from_segmenter.py --images 1000
    python experiments/task_networks/presence_from_segmenter.py --images 1000 --weights-dir rlasc_env/weights/v2

A class is present when it covers at least 0.5% of the pixels (eq. 8, ``presence_vector``). Scores compared, per
image and class: ClsNetH's probability; the segmenter's mean softmax probability over the image; the share of pixels
where the segmenter's argmax is the class; its soft-max share sharpened at temperature 0.3 (SegPresenceH's score,
the -v2 classification H). AP is rank-based, so a share is a valid score without calibration. ``--weights-dir``
takes both networks from a weights folder (e.g. the -v2 set) instead of the shipped -v1 ones.
Macro AP over the classes present in at least one image (``dataset_average_precision``).
"""
from __future__ import annotations

import argparse

import torch

from codec_models.datasets import load_dataset
from rlasc_env.tasks import make_task
from rlasc_env.tasks.classification import dataset_average_precision, presence_vector


@torch.no_grad()
def main(images: int, weights_dir: str = "", batch: int = 50) -> None:
    torch.set_num_threads(1)
    data = load_dataset("streets", split="test", preset="tiny", size=images)
    extra = (lambda task: {"weights": f"{weights_dir}/{task}.pt"}) if weights_dir else (lambda task: {})
    seg, cls = make_task("segmentation", **extra("segmentation")), make_task("classification", **extra("classification"))
    cls_name = f"{cls.network_name} probability (the classification H)"
    scores: dict[str, list[torch.Tensor]] = {cls_name: [], "segmenter softmax share": [],
                                             "segmenter softmax share, temperature 0.3": [],
                                             "segmenter argmax share": []}
    labels = []
    for start in range(0, images, batch):
        items = [data[i] for i in range(start, min(images, start + batch))]
        x = torch.stack([im for im, _ in items]).float()
        x = x / 255.0 if x.max() > 1.5 else x
        labels.append(torch.stack([lab for _, lab in items]).long())
        logits = seg.network(x)
        classes = logits.shape[1]
        scores[cls_name].append(cls.probabilities(x))
        scores["segmenter softmax share"].append(logits.softmax(1).mean((2, 3)))
        scores["segmenter softmax share, temperature 0.3"].append((logits / 0.3).softmax(1).mean((2, 3)))
        winner = logits.argmax(1)
        scores["segmenter argmax share"].append(
            torch.stack([(winner == c).float().mean((1, 2)) for c in range(classes)], 1))
    targets = presence_vector(torch.cat(labels))
    print(f"{images} test images; positives per class: {targets.sum(0).int().tolist()}")
    for name, parts in scores.items():
        result = dataset_average_precision(torch.cat(parts).double(), targets)
        per_class = " ".join(f"{v:.2f}" for v in result["per_class_ap"])
        print(f"{name}: macro AP {result['macro_ap']:.4f}; per class {per_class}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--weights-dir", default="", help="folder of segmentation.pt and classification.pt")
    args = parser.parse_args()
    main(args.images, args.weights_dir)
