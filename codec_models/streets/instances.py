"""Reference boxes from instance maps: one box per visible object (:func:`instance_targets`)."""
from __future__ import annotations

import numpy as np


def instance_targets(labels: np.ndarray, instances: np.ndarray, min_pixels: int = 4) -> dict[str, np.ndarray]:
    """Boxes, classes and ids of the instances in one image.

    ``labels`` (HxW train ids) and ``instances`` (HxW, 0 = no object) as rendered by
    :func:`~.render.render_street_scene` with ``with_instances=True``. Returns ``"boxes"``
    (float32 Kx4, ``x0, y0, x1, y1`` with exclusive ``x1, y1``: the bounding box of the
    visible pixels), ``"labels"`` (int64 train ids) and ``"instance_ids"`` (int64), in
    increasing id order; instances with fewer than ``min_pixels`` visible pixels are dropped.
    Raises ValueError when the shapes differ or an instance covers pixels of two classes.
    """
    labels, instances = np.asarray(labels), np.asarray(instances)
    if labels.shape != instances.shape or labels.ndim != 2:
        raise ValueError(f"labels and instances must be HxW maps of one shape, got {labels.shape} "
                         f"and {instances.shape}")
    rows, cols = np.nonzero(instances > 0)
    ids = instances[rows, cols]
    order = np.argsort(ids, kind="stable")
    ids, rows, cols, classes = ids[order], rows[order], cols[order], labels[rows[order], cols[order]]
    uniq, starts, counts = np.unique(ids, return_index=True, return_counts=True)
    if uniq.size == 0:
        return {"boxes": np.zeros((0, 4), dtype=np.float32), "labels": np.zeros(0, dtype=np.int64),
                "instance_ids": np.zeros(0, dtype=np.int64)}
    cls_lo, cls_hi = np.minimum.reduceat(classes, starts), np.maximum.reduceat(classes, starts)
    if np.any(cls_lo != cls_hi):
        bad = uniq[cls_lo != cls_hi]
        raise ValueError(f"instances {bad.tolist()} cover pixels of more than one class")
    boxes = np.stack([np.minimum.reduceat(cols, starts), np.minimum.reduceat(rows, starts),
                      np.maximum.reduceat(cols, starts) + 1, np.maximum.reduceat(rows, starts) + 1], axis=1)
    keep = counts >= min_pixels
    return {"boxes": boxes[keep].astype(np.float32), "labels": cls_lo[keep].astype(np.int64),
            "instance_ids": uniq[keep].astype(np.int64)}
