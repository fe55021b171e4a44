"""Data set front end: ``load_dataset(name, split, preset)`` for "streets" and "cityscapes"."""
from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

DATASET_SHAPES: dict[str, tuple[int, int]] = {"tiny": (64, 128), "paper": (256, 512), "test": (32, 64)}
DATASET_NAMES = ("streets", "cityscapes")


def load_dataset(name: str = "streets", split: str = "test", preset: str = "tiny", root: str | None = None,
                 size: int | None = None, **kwargs: Any) -> Dataset:
    """Data set of ``(image float 3xHxW in [0, 1], labels int64 HxW)`` at the preset's shape.

    ``height``/``width`` in ``kwargs`` override the preset shape; other keywords go to the
    data set class (``StreetsDataset`` or ``CityscapesSegmentation``). "cityscapes" needs
    ``root``, a local Cityscapes folder.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if preset not in DATASET_SHAPES:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(DATASET_SHAPES)}")
    height, width = DATASET_SHAPES[preset]
    height, width = kwargs.pop("height", height), kwargs.pop("width", width)
    if name == "streets":
        from .streets import StreetsDataset

        return StreetsDataset(split, height=height, width=width, size=size, **kwargs)
    if root is None:
        raise ValueError("name='cityscapes' needs root=<local Cityscapes folder> (nothing is downloaded)")
    from .cityscapes import CityscapesSegmentation

    return CityscapesSegmentation(root, split=split, height=height, width=width, size=size, **kwargs)
