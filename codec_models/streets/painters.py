"""Object painters: vehicles, people, two-wheelers, trees, bushes, poles, barriers, shadows.

Each painter draws one sprite of the scene onto a :class:`~.canvas.Canvas` through the camera.
Parts with a label set the label (and the instance id, see :meth:`Canvas.begin_object`);
parts with label ``None`` only repaint (windows, wheels' hubs, lamps) what lies below.
"""
from __future__ import annotations

import numpy as np

from .camera import FOCAL, FOCAL_U, Camera
from .canvas import Canvas, face, px, side_face, side_plane, span, top_face
from .trainids import BIKE, CAR, FENCE, LIGHT, MOTO, POLE, RIDER, SIGN, TRAIN, TRUCK, VEG, WALL


def _wheel(cv: Canvas, cam: Camera, Xs: float, zw: float, r: float, label, tyre: int, hub: int) -> None:
    ua, ub = cam.u(Xs, zw - r), cam.u(Xs, zw + r)
    ru, rv = abs(ua - ub) / 2, FOCAL * r / zw
    cv.blob((ua + ub) / 2, cam.v(r, zw), ru, rv, label, tyre)
    if rv * cv.H > 3:
        cv.blob((ua + ub) / 2, cam.v(r, zw), ru * 0.5, rv * 0.5, None, hub)


def draw_car(cv: Canvas, cam: Camera, X: float, z: float, w: float, h: float, L: float, front: bool, p: dict) -> None:
    """Car seen from behind or the front (body, cabin, roof, wheels; windows, lamps, plate when large)."""
    body_top, floor = 0.52 * h + 0.1, 0.18
    c0, c1 = (z + 1.4, z + L - 0.9) if front else (z + 0.9, z + L - 1.4)
    Xs = side_plane(X, w)
    big = px(cv, h, z) > 8
    if Xs is not None:
        side_face(cv, cam, Xs, z, z + L, floor, body_top, CAR, p["side"])
        side_face(cv, cam, Xs, c0 + 0.3, c1 - 0.2, body_top, h, CAR, p["side"])
        if big:
            side_face(cv, cam, Xs, c0 + 0.45, c1 - 0.35, body_top + 0.07, h - 0.07, None, p["glass"])
        for zw in (z + 0.8, z + L - 0.8):
            _wheel(cv, cam, Xs, zw, 0.32, CAR, p["dark"], p["hub"])
    top_face(cv, cam, X - w / 2 + 0.1, X + w / 2 - 0.1, c1, c1 + 0.8, h, CAR, p["roof"])
    face(cv, cam, X - w / 2 + 0.17, X + w / 2 - 0.17, c0, body_top, h, CAR, p["body"])
    top_face(cv, cam, X - w / 2, X + w / 2, z, c0, body_top, CAR, p["roof"])
    if big:
        face(cv, cam, X - w / 2 + 0.27, X + w / 2 - 0.27, c0, body_top + 0.05, h - 0.06, None, p["glass"])
    face(cv, cam, X - w / 2 + 0.12, X - w / 2 + 0.4, z + 0.8, 0.0, floor + 0.1, CAR, p["dark"])
    face(cv, cam, X + w / 2 - 0.4, X + w / 2 - 0.12, z + 0.8, 0.0, floor + 0.1, CAR, p["dark"])
    face(cv, cam, X - w / 2, X + w / 2, z, floor, body_top, CAR, p["body"])
    if big:
        face(cv, cam, X - w / 2, X + w / 2, z, floor, floor + 0.17, None, p["dark"])
        for a, b in ((X - w / 2 + 0.05, X - w / 2 + 0.38), (X + w / 2 - 0.38, X + w / 2 - 0.05)):
            face(cv, cam, a, b, z, body_top - 0.22, body_top - 0.06, None, p["lamp"])
        face(cv, cam, X - 0.25, X + 0.25, z, 0.38, 0.5, None, p["plate"])
        if front:
            face(cv, cam, X - 0.45, X + 0.45, z, 0.45, body_top - 0.1, None, p["dark"])


def draw_truck(cv: Canvas, cam: Camera, X: float, z: float, w: float, h: float, L: float, front: bool,
                p: dict, label: int) -> None:
    """Truck (cab + cargo box) or, with ``label`` BUS/TRAIN, a single long box with a window band."""
    Xs = side_plane(X, w)
    big = px(cv, h, z) > 8
    box = label != TRUCK
    cab_h, cab_L = (h, 0.0) if box else (min(h - 0.4, 2.9), 2.3)
    cab = (z, z + cab_L) if front else (z + L - cab_L, z + L)
    load = (z + cab_L + 0.3, z + L) if front else (z, z + L - cab_L - 0.2)
    if Xs is not None:
        if box:
            side_face(cv, cam, Xs, z, z + L, 0.35, h, label, p["side"])
            if big:
                side_face(cv, cam, Xs, z + 0.4, z + L - 0.4, 1.15, h - 0.4, None, p["glass"])
                side_face(cv, cam, Xs, z, z + L, 0.45, 0.75, None, p["stripe"])
        else:
            side_face(cv, cam, Xs, z, z + L, 0.45, 0.95, label, p["dark"])
            side_face(cv, cam, Xs, load[0], load[1], 0.9, h, label, p["cargo_side"])
            side_face(cv, cam, Xs, cab[0], cab[1], 0.5, cab_h, label, p["side"])
            if big:
                side_face(cv, cam, Xs, cab[0] + 0.3, cab[1] - 0.5, cab_h - 1.0, cab_h - 0.15, None, p["glass"])
        step = 7.0 if label == TRAIN else max(L - 3.5, 2.0)
        for zw in np.arange(z + 1.6, z + L - 1.0, step):
            _wheel(cv, cam, Xs, float(zw), 0.5, label, p["dark"], p["hub"])
    if label == TRAIN:  # pantograph
        zc = z + L / 2
        face(cv, cam, X - 0.05, X + 0.05, zc, h, h + 1.0, label, p["dark"], thin=True)
        face(cv, cam, X - 0.7, X + 0.7, zc, h + 0.9, h + 1.0, label, p["dark"], thin=True)
    for a, b in ((X - w / 2 + 0.15, X - w / 2 + 0.55), (X + w / 2 - 0.55, X + w / 2 - 0.15)):
        face(cv, cam, a, b, z + 1.0, 0.0, 0.6, label, p["dark"])
    if box:
        face(cv, cam, X - w / 2, X + w / 2, z, 0.35, h, label, p["body"])
        if big:
            lo = 1.0 if front else h - 1.6
            face(cv, cam, X - w / 2 + 0.12, X + w / 2 - 0.12, z, lo, h - 0.5, None, p["glass"])
            face(cv, cam, X - w / 2, X + w / 2, z, 0.45, 0.75, None, p["stripe"])
            if front:
                face(cv, cam, X - w / 2 + 0.3, X + w / 2 - 0.3, z, h - 0.45, h - 0.15, None, p["display"])
    elif front:
        face(cv, cam, X - w / 2, X + w / 2, load[0], cab_h, h, label, p["cargo"])
        face(cv, cam, X - w / 2, X + w / 2, z, 0.45, cab_h, label, p["body"])
        if big:
            face(cv, cam, X - w / 2 + 0.12, X + w / 2 - 0.12, z, cab_h - 1.0, cab_h - 0.15, None, p["glass"])
            face(cv, cam, X - 0.6, X + 0.6, z, 0.6, 1.2, None, p["dark"])
    else:
        face(cv, cam, X - w / 2, X + w / 2, z, 0.4, 0.95, label, p["dark"])
        face(cv, cam, X - w / 2, X + w / 2, z, 0.9, h, label, p["cargo"])
        if big:
            face(cv, cam, X - 0.03, X + 0.03, z, 1.0, h - 0.1, None, p["dark"], thin=True)
    if big:
        for a, b in ((X - w / 2 + 0.1, X - w / 2 + 0.4), (X + w / 2 - 0.4, X + w / 2 - 0.1)):
            face(cv, cam, a, b, z, 0.5, 0.7, None, p["lamp"])


def draw_shadow(cv: Canvas, cam: Camera, X: float, z: float, w: float, L: float, strength: float) -> None:
    """Darken the ground under a vehicle (shadow buffer only)."""
    zm = z + L / 2
    u0, u1 = cam.u(X - w / 2 - 0.2, z), cam.u(X + w / 2 + 0.2, z)
    va, vb = cam.v(0, z + L), cam.v(0, z - 0.3)
    cv.shade_blob((u0 + u1) / 2, (va + vb) / 2, (u1 - u0) / 2, max((vb - va) / 2, FOCAL * 0.2 / zm), strength)


def draw_person(cv: Canvas, cam: Camera, X: float, z: float, h: float, label: int, p: dict, apart: bool) -> None:
    """Standing person (legs, torso, arms, head) with label ``label``."""
    big = px(cv, h, z) > 14
    if big and apart:
        face(cv, cam, X - 0.2, X - 0.05, z, 0.0, 0.5 * h, label, p["bottom"])
        face(cv, cam, X + 0.05, X + 0.2, z, 0.0, 0.5 * h, label, p["bottom"])
    else:
        face(cv, cam, X - 0.15, X + 0.15, z, 0.0, 0.5 * h, label, p["bottom"], thin=True)
    if big:
        face(cv, cam, X - 0.29, X + 0.29, z, 0.46 * h, 0.8 * h, label, p["skin"])
    face(cv, cam, X - 0.22, X + 0.22, z, 0.46 * h, 0.83 * h, label, p["top"], thin=True)
    uc, vc = cam.u(X, z), cam.v(0.91 * h, z)
    ru, rv = FOCAL_U * 0.1 / z, FOCAL * 0.12 / z
    cv.blob(uc, vc, ru, rv, label, p["hair"], thin=True)
    if big:
        cv.blob(uc, vc + rv * 0.25, ru * 0.85, rv * 0.75, None, p["skin"])


def draw_cycle(cv: Canvas, cam: Camera, X: float, z: float, motor: bool, side: bool, d: int,
                rider: dict | None, p: dict) -> None:
    """Bicycle or motorcycle, seen from the side (direction d = +-1) or from behind, with a rider."""
    label = MOTO if motor else BIKE
    r = 0.32 if motor else 0.34
    if side:
        half = 0.7 if motor else 0.55
        for xw in (X - half, X + half):
            cv.blob(cam.u(xw, z), cam.v(r, z), FOCAL_U * r / z, FOCAL * r / z, label, p["dark"])
            cv.blob(cam.u(xw, z), cam.v(r, z), FOCAL_U * r * 0.75 / z, FOCAL * r * 0.75 / z, None, p["spokes"])
        if motor:
            face(cv, cam, X - 0.55, X + 0.5, z, 0.3, 0.8, label, p["frame"])
            face(cv, cam, X - 0.45 * d - 0.25, X - 0.45 * d + 0.25, z, 0.75, 0.9, label, p["dark"])
        else:
            face(cv, cam, X - 0.3, X + 0.35, z, 0.62, 0.68, label, p["frame"], thin=True)
            face(cv, cam, X - 0.04, X + 0.04, z, 0.34, 0.7, label, p["frame"], thin=True)
        hx = X + d * (half - 0.1)
        face(cv, cam, hx - 0.04, hx + 0.04, z, r, 1.0, label, p["frame"], thin=True)
        if rider is not None:
            sx = X - d * 0.1
            face(cv, cam, sx - 0.12, sx + 0.14, z, 0.45, 1.0, RIDER, rider["bottom"], thin=True)
            face(cv, cam, sx - 0.2 + d * 0.05, sx + 0.2 + d * 0.05, z, 0.95, 1.5, RIDER, rider["top"], thin=True)
            ax0, ax1 = sorted((sx + d * 0.1, hx))
            face(cv, cam, ax0, ax1, z, 1.1, 1.2, RIDER, rider["top"])
            head_u = cam.u(sx + d * 0.08, z)
            cv.blob(head_u, cam.v(1.62, z), FOCAL_U * 0.12 / z, FOCAL * 0.13 / z, RIDER, rider["hair"], thin=True)
    else:
        ww = 0.14 if motor else 0.05
        face(cv, cam, X - ww, X + ww, z, 0.0, 2 * r, label, p["dark"], thin=True)
        if motor:
            face(cv, cam, X - 0.3, X + 0.3, z + 0.2, 0.45, 0.95, label, p["frame"])
            face(cv, cam, X - 0.08, X + 0.08, z, 0.75, 0.85, None, p["lamp"])
        face(cv, cam, X - 0.3, X + 0.3, z + 1.0, 0.95, 1.02, label, p["frame"], thin=True)
        if rider is not None:
            face(cv, cam, X - 0.2, X - 0.07, z + 0.3, 0.4, 1.0, RIDER, rider["bottom"])
            face(cv, cam, X + 0.07, X + 0.2, z + 0.3, 0.4, 1.0, RIDER, rider["bottom"])
            face(cv, cam, X - 0.22, X + 0.22, z + 0.3, 0.95, 1.55, RIDER, rider["top"], thin=True)
            zr = z + 0.3
            cv.blob(cam.u(X, zr), cam.v(1.67, zr), FOCAL_U * 0.12 / zr, FOCAL * 0.13 / zr, RIDER, rider["hair"], thin=True)


def draw_tree(cv: Canvas, cam: Camera, X: float, z: float, trunk_h: float, blobs: list, p: dict) -> None:
    """Trunk and a canopy of overlapping discs (later discs on top), all vegetation."""
    face(cv, cam, X - 0.18, X + 0.18, z, 0.0, trunk_h + 0.5, VEG, p["trunk"], thin=True)
    b = np.array([(cam.u(X + dx, z), cam.v(trunk_h + dy, z), r) for dx, dy, r, _ in blobs])
    ru, rv = FOCAL_U * b[:, 2] / z, FOCAL * b[:, 2] / z
    x0, x1 = span(float(np.min(b[:, 0] - ru)), float(np.max(b[:, 0] + ru)), cv.W, True)
    y0, y1 = span(float(np.min(b[:, 1] - rv)), float(np.max(b[:, 1] + rv)), cv.H, True)
    if x0 >= x1 or y0 >= y1:
        return
    dx = (cv.xc[x0:x1][None, None, :] - b[:, 0, None, None]) / ru[:, None, None]
    dy = (cv.yc[y0:y1][None, :, None] - b[:, 1, None, None]) / rv[:, None, None]
    inside = dx * dx + dy * dy <= 1.0  # (blobs, h, w)
    top = len(blobs) - np.argmax(inside[::-1], axis=0) - 1  # last disc covering each pixel
    mask = inside.any(axis=0)
    if not mask.any():  # sub-pixel canopy: keep one pixel at its centre
        mask[min(max(int(b[0, 1] * cv.H) - y0, 0), y1 - y0 - 1), min(max(int(b[0, 0] * cv.W) - x0, 0), x1 - x0 - 1)] = True
    paints = np.array([paint for *_, paint in blobs], dtype=np.uint16)
    cv.put(y0, y1, x0, x1, mask, VEG, paints[top[mask]])


def draw_bush(cv: Canvas, cam: Camera, X: float, z: float, w: float, h: float, paint: int) -> None:
    """Bush: one vegetation ellipse."""
    cv.blob(cam.u(X, z), cam.v(h * 0.4, z), FOCAL_U * w / 2 / z, FOCAL * h * 0.6 / z, VEG, paint)


def draw_pole(cv: Canvas, cam: Camera, X: float, z: float, h: float, kind: str, d: int, p: dict) -> None:
    """Street lamp, traffic light (on the pole or on a mast arm), or traffic sign; d points to the road."""
    face(cv, cam, X - 0.07, X + 0.07, z, 0.0, h, POLE, p["pole"], thin=True)
    if kind == "lamp":
        a0, a1 = sorted((X, X + d * 1.6))
        face(cv, cam, a0, a1, z, h - 0.12, h, POLE, p["pole"], thin=True)
        e = X + d * 1.6
        face(cv, cam, e - 0.3, e + 0.3, z, h - 0.22, h - 0.02, POLE, p["head"], thin=True)
    elif kind in ("light", "mast"):
        xb = X
        if kind == "mast":
            xb = X + d * p["arm"]
            a0, a1 = sorted((X, xb))
            face(cv, cam, a0, a1, z, h - 0.15, h, POLE, p["pole"], thin=True)
        y0 = h if kind == "light" else h - 1.05
        face(cv, cam, xb - 0.17, xb + 0.17, z, y0, y0 + 0.95, LIGHT, p["box"], thin=True)
        if px(cv, 0.95, z) > 6:
            for i, paint in enumerate(p["lamps"]):
                cv.blob(cam.u(xb, z), cam.v(y0 + 0.78 - 0.3 * i, z), FOCAL_U * 0.1 / z, FOCAL * 0.1 / z, None, paint)
    else:  # sign
        shape, size = p["shape"], p["size"]
        uc, vc = cam.u(X, z), cam.v(h + size / 2, z)
        ru, rv = FOCAL_U * size / 2 / z, FOCAL * size / 2 / z
        if shape == "rect":
            cv.rect(uc - ru, vc - rv, uc + ru, vc + rv, SIGN, p["rim"], thin=True)
            if rv * cv.H > 3:
                cv.rect(uc - ru * 0.75, vc - rv * 0.75, uc + ru * 0.75, vc + rv * 0.75, None, p["face"])
        else:
            cv.blob(uc, vc, ru, rv, SIGN, p["rim"], shape, thin=True)
            if rv * cv.H > 3:
                cv.blob(uc, vc + (rv * 0.15 if shape == "triangle" else 0), ru * 0.65, rv * 0.65, None, p["face"], shape)


def draw_barrier(cv: Canvas, cam: Camera, X: float, z0: float, z1: float, h: float, label: int, p: dict) -> None:
    """Wall or fence along the street (plane X = const, depths z0..z1) with rails or posts."""
    got = side_face(cv, cam, X, z0, z1, 0.0, h, label, p["main"] if label == WALL else p["keep"])
    if got is None:
        return
    y0, y1, x0, x1, mask, uc, vc, top, bot = got
    rail = mask & (vc < top + 0.12 * (bot - top))
    if label == FENCE:
        zc = FOCAL_U * X / np.where(np.abs(uc - cam.u_vp) < 1e-9, 1e-9, uc - cam.u_vp)
        rail |= mask & ((zc % p["spacing"]) < 0.35 * p["spacing"])
    cv.paint[y0:y1, x0:x1][rail] = p["rail"]
