"""Classification at level 0: which classes does the decoded picture lose, and does the bitstream carry them?

    python experiments/semantic_fidelity/level0_classification.py \
        --json experiments/semantic_fidelity/level0_classification.json

Issue 31 asks for a classification macro AP of at least 0.85 with every concept at level 0; `-v7`'s codec `tiny-sf3`
reads 0.825 (the `-v3` classifier, 200 test images). For the first ``--images`` test images this script scores,
per class, against the ground-truth presence vectors (`rlasc_env.tasks.classification.dataset_average_precision`):

- the `-v3` classifier on the originals;
- the `-v3` classifier on every concept at level 0, decoded from real bytes (`codec.compress` / `decompress`);
- the label map the codec sends, read as a classifier: each class's share of F's map is its score (no network);
- the `-v3` classifier on the highest level, decoded from real bytes.

If the label map's AP is above the level-0 picture's, the information is in the bitstream and the decoder drops it,
as it did for segmentation before `tiny-sf` (docs/semantic_fidelity.md, "The problem").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from codec_models.checkpoint import load_codec
from codec_models.datasets import load_dataset
from rlasc_env.tasks import make_task
from rlasc_env.tasks.classification import NUM_TRAIN_CLASSES, dataset_average_precision, presence_vector
from rlasc_env.tasks.networks import WEIGHTS_DIR


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--codec", default="tiny-sf3", help="-v7's codec")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(args.codec)
    classifier = make_task("classification", weights=str(WEIGHTS_DIR / "v3" / "classification.pt"))
    ds = load_dataset("streets", "test", preset="tiny", size=args.images, progress=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.stack([torch.as_tensor(ds[i][1]).long() for i in range(len(ds))])
    targets = presence_vector(y)
    top = codec.num_levels - 1
    with torch.no_grad():
        labels = torch.cat([codec.segment(x[i:i + 50]) for i in range(0, len(x), 50)])
        pictures = {"original": x}
        for name, level in (("level 0", 0), ("highest level", top)):
            pictures[name] = torch.stack([codec.decompress(codec.compress(
                x[i], {int(m): level for m in torch.unique(labels[i])})) for i in range(len(x))])
        scores = {name: torch.cat([classifier.probabilities(p[i:i + 50]) for i in range(0, len(p), 50)])
                  for name, p in pictures.items()}
    shares = torch.stack([torch.bincount(m.reshape(-1), minlength=NUM_TRAIN_CLASSES)[:NUM_TRAIN_CLASSES]
                          for m in labels]).float() / labels[0].numel()
    scores["label map (class share)"] = shares
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "scores": {}}
    for name, probs in scores.items():
        out["scores"][name] = dataset_average_precision(probs, targets)
        print(f"{name}: macro AP {out['scores'][name]['macro_ap']:.4f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
