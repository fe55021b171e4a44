"""Real Cityscapes (local folder only, nothing is downloaded) as (image, labels) pairs.

Wraps ``torchvision.datasets.Cityscapes(root, split, mode="fine", target_type="semantic")``
and returns the same item format as the embedded "streets" data set: image float32 3xHxW in
[0, 1] (bilinear, antialiased resize) and labels int64 HxW (nearest resize) as train ids
(``"train19"``, 255 = ignore) or as the paper's 30 classes (``"paper30"``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .classes import label_id_to_paper30_lut, label_id_to_train_id_lut

SPLITS = ("train", "val", "test")
CLASS_SETS = {"train19": label_id_to_train_id_lut, "paper30": label_id_to_paper30_lut}
EXPECTED_LAYOUT = (
    "expected a local Cityscapes folder laid out as <root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png "
    "and <root>/gtFine/<split>/<city>/*_gtFine_labelIds.png (leftImg8bit_trainvaltest.zip and "
    "gtFine_trainvaltest.zip unpacked into <root>; nothing is downloaded)"
)


def check_cityscapes_root(root: str | os.PathLike, split: str) -> int:
    """Check the folder layout for ``split``; return the number of images or raise FileNotFoundError."""
    root = Path(root)
    images_dir, labels_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for path in (root, images_dir, labels_dir):
        if not path.is_dir():
            raise FileNotFoundError(f"Cityscapes folder {path} not found; {EXPECTED_LAYOUT}")
    images = sorted(images_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise FileNotFoundError(f"no */*_leftImg8bit.png images under {images_dir}; {EXPECTED_LAYOUT}")
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        label = labels_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise FileNotFoundError(f"label map {label} for image {image} is missing; {EXPECTED_LAYOUT}")
    return len(images)


class CityscapesSegmentation(Dataset):
    """Cityscapes fine annotations: items ``(image float32 3xHxW in [0, 1], labels int64 HxW)``."""

    def __init__(self, root: str | os.PathLike, split: str = "val", height: int = 256, width: int = 512,
                 classes: str = "train19", size: int | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown Cityscapes split {split!r}; valid splits: {', '.join(SPLITS)}")
        if classes not in CLASS_SETS:
            raise ValueError(f"unknown class set {classes!r}; valid: {', '.join(CLASS_SETS)}")
        count = check_cityscapes_root(root, split)
        from torchvision.datasets import Cityscapes

        self.root, self.split, self.classes = Path(root), split, classes
        self.height, self.width = int(height), int(width)
        self.base = Cityscapes(str(root), split=split, mode="fine", target_type="semantic")
        # torchvision lists files in os.listdir order; keep only the images, in a stable order
        pairs = sorted((i, t) for i, t in zip(self.base.images, self.base.targets, strict=True) if i.endswith("_leftImg8bit.png"))
        self.base.images, self.base.targets = [i for i, _ in pairs], [t for _, t in pairs]
        self.size = count if size is None else min(int(size), count)
        self.lut = CLASS_SETS[classes]()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        image, target = self.base[index % self.size]
        size = (self.width, self.height)
        image = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)  # PIL antialiases when shrinking
        target = target.resize(size, Image.Resampling.NEAREST)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        labels = self.lut[np.asarray(target, dtype=np.uint8)]
        return pixels, torch.from_numpy(labels.astype(np.int64))
