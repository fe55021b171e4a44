"""Rendering: one scene from its seed (image, labels, optionally instance ids) and whole splits."""
from __future__ import annotations

from typing import Literal, overload

import numpy as np

from .background import draw_background
from .canvas import Canvas
from .layout import sample_scene
from .shading import shade

GENERATOR_VERSION = 2  # bump whenever the rendering changes: it keys the on-disk cache
SPLIT_OFFSET: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}
DEFAULT_SIZES: dict[str, int] = {"train": 4000, "val": 200, "test": 200}


@overload
def render_street_scene(seed: int, height: int, width: int,
                        with_instances: Literal[False] = False) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def render_street_scene(seed: int, height: int, width: int,
                        with_instances: Literal[True]) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def render_street_scene(seed: int, height: int, width: int,
                        with_instances: bool = False) -> tuple[np.ndarray, ...]:
    """Render scene ``seed`` at ``height`` x ``width``: (image HxWx3 uint8, train ids HxW uint8).

    With ``with_instances`` also the instance ids (int32 HxW): 0 on stuff, 1..K on the K
    objects visible in the image (one id per object and class, numbered in drawing order,
    i.e. from far to near). Recording them changes neither the image nor the labels.
    """
    rng = np.random.default_rng(seed)
    sc = sample_scene(rng)
    cv = Canvas(height, width)
    draw_background(cv, sc)
    for *_, draw in sorted(sc.sprites, key=lambda item: item[:3]):
        cv.begin_object()
        draw(cv, sc.cam)
    image = shade(cv, sc, rng)
    if not with_instances:
        return image, cv.label
    return image, cv.label, _consecutive(cv.instance)


def _consecutive(instance: np.ndarray) -> np.ndarray:
    """Renumber the ids left visible (objects may be hidden entirely) to 1..K, keeping their order."""
    lut = np.zeros(int(instance.max()) + 1, dtype=np.int32)
    visible = np.unique(instance)
    visible = visible[visible > 0]
    lut[visible] = np.arange(1, visible.size + 1, dtype=np.int32)
    return lut[instance]


def render_split(split: str, size: int, height: int, width: int, progress: bool = True,
                 with_instances: bool = False) -> tuple[np.ndarray, ...]:
    """Render items 0..size-1 of a split: (images NxHxWx3 uint8, labels NxHxW uint8).

    With ``with_instances`` also their instance ids (NxHxW int32, see :func:`render_street_scene`).
    """
    from tqdm.auto import tqdm

    images = np.empty((size, height, width, 3), dtype=np.uint8)
    labels = np.empty((size, height, width), dtype=np.uint8)
    instances = np.empty((size, height, width), dtype=np.int32) if with_instances else None
    for i in tqdm(range(size), desc=f"streets/{split} {height}x{width}", disable=not progress or None, leave=False):
        if instances is None:
            images[i], labels[i] = render_street_scene(SPLIT_OFFSET[split] + i, height, width)
        else:
            images[i], labels[i], instances[i] = render_street_scene(SPLIT_OFFSET[split] + i, height, width, True)
    return (images, labels) if instances is None else (images, labels, instances)
