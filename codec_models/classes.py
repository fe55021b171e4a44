"""Cityscapes class table: train ids, names, colours, label-id mappings (paper Table I).

The codec works on *train ids* (19 evaluation classes, ``M = 19``) by default. The paper's
30-class option maps every Cityscapes label id of Table I (void classes included) to its
own index; see :data:`PAPER30_LABEL_IDS`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CityscapesClass:
    name: str
    label_id: int
    train_id: int  # 255 = ignored in the 19-class evaluation
    category: str
    color: tuple[int, int, int]


# Official Cityscapes label table (cityscapesScripts/helpers/labels.py).
CITYSCAPES_CLASSES: tuple[CityscapesClass, ...] = (
    CityscapesClass("unlabeled", 0, 255, "void", (0, 0, 0)),
    CityscapesClass("ego vehicle", 1, 255, "void", (0, 0, 0)),
    CityscapesClass("rectification border", 2, 255, "void", (0, 0, 0)),
    CityscapesClass("out of roi", 3, 255, "void", (0, 0, 0)),
    CityscapesClass("static", 4, 255, "void", (0, 0, 0)),
    CityscapesClass("dynamic", 5, 255, "void", (111, 74, 0)),
    CityscapesClass("ground", 6, 255, "void", (81, 0, 81)),
    CityscapesClass("road", 7, 0, "flat", (128, 64, 128)),
    CityscapesClass("sidewalk", 8, 1, "flat", (244, 35, 232)),
    CityscapesClass("parking", 9, 255, "flat", (250, 170, 160)),
    CityscapesClass("rail track", 10, 255, "flat", (230, 150, 140)),
    CityscapesClass("building", 11, 2, "construction", (70, 70, 70)),
    CityscapesClass("wall", 12, 3, "construction", (102, 102, 156)),
    CityscapesClass("fence", 13, 4, "construction", (190, 153, 153)),
    CityscapesClass("guard rail", 14, 255, "construction", (180, 165, 180)),
    CityscapesClass("bridge", 15, 255, "construction", (150, 100, 100)),
    CityscapesClass("tunnel", 16, 255, "construction", (150, 120, 90)),
    CityscapesClass("pole", 17, 5, "object", (153, 153, 153)),
    CityscapesClass("polegroup", 18, 255, "object", (153, 153, 153)),
    CityscapesClass("traffic light", 19, 6, "object", (250, 170, 30)),
    CityscapesClass("traffic sign", 20, 7, "object", (220, 220, 0)),
    CityscapesClass("vegetation", 21, 8, "nature", (107, 142, 35)),
    CityscapesClass("terrain", 22, 9, "nature", (152, 251, 152)),
    CityscapesClass("sky", 23, 10, "sky", (70, 130, 180)),
    CityscapesClass("person", 24, 11, "human", (220, 20, 60)),
    CityscapesClass("rider", 25, 12, "human", (255, 0, 0)),
    CityscapesClass("car", 26, 13, "vehicle", (0, 0, 142)),
    CityscapesClass("truck", 27, 14, "vehicle", (0, 0, 70)),
    CityscapesClass("bus", 28, 15, "vehicle", (0, 60, 100)),
    CityscapesClass("caravan", 29, 255, "vehicle", (0, 0, 90)),
    CityscapesClass("trailer", 30, 255, "vehicle", (0, 0, 110)),
    CityscapesClass("train", 31, 16, "vehicle", (0, 80, 100)),
    CityscapesClass("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    CityscapesClass("bicycle", 33, 18, "vehicle", (119, 11, 32)),
)

IGNORE_INDEX = 255
NUM_TRAIN_CLASSES = 19

TRAIN_CLASSES: tuple[CityscapesClass, ...] = tuple(
    sorted((c for c in CITYSCAPES_CLASSES if c.train_id != IGNORE_INDEX), key=lambda c: c.train_id)
)
TRAIN_NAMES: tuple[str, ...] = tuple(c.name for c in TRAIN_CLASSES)
TRAIN_ID: dict[str, int] = {c.name: c.train_id for c in TRAIN_CLASSES}
TRAIN_COLORS = np.array([c.color for c in TRAIN_CLASSES], dtype=np.uint8)  # (19, 3)

# Paper's 30-class option: the 30 label ids of Table I (ids 4..33 less those the paper
# does not list, keeping the void group "ground, dynamic, static").
PAPER30_LABEL_IDS: tuple[int, ...] = tuple(range(4, 34))
assert len(PAPER30_LABEL_IDS) == 30


def label_id_to_train_id_lut() -> np.ndarray:
    """Lookup table (256,) mapping Cityscapes label ids to train ids (255 = ignore)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in CITYSCAPES_CLASSES:
        lut[c.label_id] = c.train_id
    return lut


def label_id_to_paper30_lut() -> np.ndarray:
    """Lookup table (256,) mapping label ids to the paper's 30 classes (255 = ignore)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for index, label_id in enumerate(PAPER30_LABEL_IDS):
        lut[label_id] = index
    return lut


def colorize(labels: np.ndarray) -> np.ndarray:
    """HxW train-id map -> HxWx3 uint8 Cityscapes colours (ignored pixels black)."""
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = labels < NUM_TRAIN_CLASSES
    out[valid] = TRAIN_COLORS[labels[valid]]
    return out
