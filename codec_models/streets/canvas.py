"""The canvas (label, paint, shadow and instance buffers) and its primitive fills.

Primitives take normalised image coordinates (:class:`Canvas`) or world coordinates through
the camera (:func:`face`, :func:`side_face`, :func:`top_face`).
"""
from __future__ import annotations

import math

import numpy as np

from .camera import FOCAL, Camera
from .trainids import IS_INSTANCE_CLASS, SKY


def span(a: float, b: float, n: int, thin: bool) -> tuple[int, int]:
    """Pixel index range whose centres lie in [a, b) (normalised); ``thin`` keeps >= 1 px."""
    i0 = math.ceil(a * n - 0.5)
    i1 = math.ceil(b * n - 0.5)
    if thin and i1 <= i0:
        i0 = math.floor((a + b) * 0.5 * n)
        i1 = i0 + 1
    return max(i0, 0), min(i1, n)


class Canvas:
    """Label, paint, ground-shadow and instance buffers with primitive fills in normalised coordinates.

    Instances: :meth:`begin_object` starts a new object (one sprite); every labelled fill
    then writes, next to the label, the instance id of the pair (object, label), allocated on
    the pair's first fill: one id per semantic object and class (a bicycle and its rider, a
    pole and its sign are separate instances). Stuff labels write id 0. Because ids are
    written exactly where labels are, occlusion by later fills applies to both alike.
    """

    def __init__(self, height: int, width: int) -> None:
        self.H, self.W = height, width
        self.label = np.full((height, width), SKY, dtype=np.uint8)
        self.paint = np.zeros((height, width), dtype=np.uint16)
        self.shadow = np.ones((height, width), dtype=np.float32)
        self.instance = np.zeros((height, width), dtype=np.int32)
        self.xc = (np.arange(width) + 0.5) / width  # pixel centres, normalised
        self.yc = (np.arange(height) + 0.5) / height
        self._ids: dict[int, int] = {}  # label -> instance id within the current object
        self._next_id = 1

    def begin_object(self) -> None:
        """Start a new object: its labelled fills get fresh instance ids (one per class)."""
        self._ids = {}

    def _instance_id(self, label: int) -> int:
        if not IS_INSTANCE_CLASS[label]:
            return 0
        got = self._ids.get(label)
        if got is None:
            got = self._ids[label] = self._next_id
            self._next_id += 1
        return got

    def put(self, y0: int, y1: int, x0: int, x1: int, mask: np.ndarray | None, label: int | None,
            paint: int | np.ndarray) -> None:
        """Fill the block [y0:y1, x0:x1] (where ``mask``): paint, and label and instance unless ``label`` is None."""
        if mask is None:
            if label is not None:
                self.label[y0:y1, x0:x1] = label
                self.instance[y0:y1, x0:x1] = self._instance_id(label)
            self.paint[y0:y1, x0:x1] = paint
        else:
            if label is not None:
                self.label[y0:y1, x0:x1][mask] = label
                self.instance[y0:y1, x0:x1][mask] = self._instance_id(label)
            self.paint[y0:y1, x0:x1][mask] = paint

    def rect(self, u0: float, v0: float, u1: float, v1: float, label, paint: int, thin: bool = False) -> None:
        """Fill the pixels whose centres lie in [u0, u1) x [v0, v1)."""
        x0, x1 = span(u0, u1, self.W, thin)
        y0, y1 = span(v0, v1, self.H, thin)
        if x0 < x1 and y0 < y1:
            self.put(y0, y1, x0, x1, None, label, paint)

    def _blob_mask(self, uc: float, vc: float, ru: float, rv: float, shape: str, thin: bool):
        x0, x1 = span(uc - ru, uc + ru, self.W, thin)
        y0, y1 = span(vc - rv, vc + rv, self.H, thin)
        if x0 >= x1 or y0 >= y1:
            return None
        if thin and x1 - x0 == 1 and y1 - y0 == 1:
            return y0, y1, x0, x1, None
        dx = (self.xc[x0:x1] - uc) * (1.0 / max(ru, 1e-9))
        dy = ((self.yc[y0:y1] - vc) * (1.0 / max(rv, 1e-9)))[:, None]
        if shape == "ellipse":
            mask = dx * dx + dy * dy <= 1.0
        elif shape == "diamond":
            mask = np.abs(dx) + np.abs(dy) <= 1.0
        else:  # triangle, apex up
            mask = 2.0 * np.abs(dx) <= dy + 1.0
        return y0, y1, x0, x1, mask

    def blob(self, uc: float, vc: float, ru: float, rv: float, label, paint: int,
             shape: str = "ellipse", thin: bool = False) -> None:
        """Fill an ellipse, diamond or apex-up triangle centred at (uc, vc) with radii (ru, rv)."""
        got = self._blob_mask(uc, vc, ru, rv, shape, thin)
        if got is not None:
            self.put(*got, label, paint)

    def shade_blob(self, uc: float, vc: float, ru: float, rv: float, factor: float) -> None:
        """Multiply the ground-shadow buffer by ``factor`` inside an ellipse."""
        got = self._blob_mask(uc, vc, ru, rv, "ellipse", False)
        if got is not None:
            y0, y1, x0, x1, mask = got
            if mask is None:
                self.shadow[y0:y1, x0:x1] *= factor
            else:
                self.shadow[y0:y1, x0:x1][mask] *= factor

    def vquad(self, ua: float, ub: float, ta: float, ba: float, tb: float, bb: float, label, paint: int):
        """Quad with vertical sides: column ua spans rows [ta, ba), column ub spans [tb, bb)."""
        if ua > ub:
            ua, ub, ta, ba, tb, bb = ub, ua, tb, bb, ta, ba
        x0, x1 = span(ua, ub, self.W, False)
        y0, y1 = span(min(ta, tb), max(ba, bb), self.H, False)
        if x0 >= x1 or y0 >= y1:
            return None
        uc = self.xc[x0:x1]
        t = (uc - ua) * (1.0 / max(ub - ua, 1e-9))
        top = ta + t * (tb - ta)
        bot = ba + t * (bb - ba)
        vc = self.yc[y0:y1, None]
        mask = (vc >= top) & (vc < bot)
        self.put(y0, y1, x0, x1, mask, label, paint)
        return y0, y1, x0, x1, mask, uc, vc, top, bot


def side_plane(X: float, w: float) -> float | None:
    """Lateral position of the visible side face of a box centred at X, width w."""
    if X - w / 2 > 0.3:
        return X - w / 2
    if X + w / 2 < -0.3:
        return X + w / 2
    return None


def side_face(cv: Canvas, cam: Camera, Xs: float, za: float, zb: float, y0: float, y1: float, label, paint: int):
    """Side face of a box in the plane X = Xs between depths za and zb, heights y0..y1 (a vertical-sided quad)."""
    return cv.vquad(cam.u(Xs, za), cam.u(Xs, zb), cam.v(y1, za), cam.v(y0, za), cam.v(y1, zb), cam.v(y0, zb), label, paint)


def face(cv: Canvas, cam: Camera, X0: float, X1: float, z: float, y0: float, y1: float, label, paint: int,
          thin: bool = False) -> None:
    """Front face X0..X1, heights y0..y1 at depth z (a rect); ``thin`` keeps at least one pixel."""
    cv.rect(cam.u(X0, z), cam.v(y1, z), cam.u(X1, z), cam.v(y0, z), label, paint, thin)


def top_face(cv: Canvas, cam: Camera, X0: float, X1: float, za: float, zb: float, y: float, label, paint: int) -> None:
    """Horizontal face at height y (< CAM_H) between depths za < zb, approximated by a rect."""
    cv.rect(cam.u(X0, za), cam.v(y, zb), cam.u(X1, za), cam.v(y, za), label, paint)


def px(cv: Canvas, metres: float, z: float) -> float:
    """Projected size in pixels of a vertical extent at depth z."""
    return FOCAL * metres / z * cv.H
