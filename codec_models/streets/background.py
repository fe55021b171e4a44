"""Background rasterisation: skyline, ground (road, sidewalks, markings, shadows) and facades.

Facades are painted per column in depth order (far row, cross street, near row). The
background is stuff only and is painted before any object, so it never sets instance ids.
"""
from __future__ import annotations

import math

import numpy as np

from .camera import CAM_H, FOCAL, FOCAL_U, Camera
from .canvas import Canvas
from .scene import Facade, Scene
from .trainids import BUILDING, ROAD, SIDEWALK, TERRAIN, VEG


def _facade_columns(fac: Facade, s: np.ndarray) -> dict:
    """Per-column attributes of a facade at facade coordinates s (metres along the plane)."""
    idx = np.clip(np.searchsorted(fac.starts, s, side="right") - 1, 0, len(fac.starts) - 1)
    inside = (s >= fac.starts[idx]) & (s < fac.ends[idx])
    kind = np.where(inside, fac.kind[idx], 2)
    local = s - fac.starts[idx]
    length = fac.ends[idx] - fac.starts[idx]
    top = fac.top[idx] + fac.roof[idx] * (1 - np.abs(2 * local / np.maximum(length, 1e-6) - 1))
    wobble = 1.2 * np.sin(0.8 * s + fac.phase[idx]) + 0.5 * np.sin(2.3 * s + 2 * fac.phase[idx])
    top = np.where(kind == 1, fac.top[idx] + wobble, top)
    win_col = np.abs((local / fac.sx[idx]) % 1.0 - 0.5) < fac.wf[idx] / 2
    shop_col = np.abs((local / (2 * fac.sx[idx])) % 1.0 - 0.5) < 0.4
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    return {"kind": kind, "top": f32(top), "flat_top": f32(fac.top[idx]), "wall": fac.wall[idx], "win": fac.win[idx],
            "shop": fac.shop[idx], "cornice": fac.cornice[idx], "fh": f32(fac.fh[idx]), "hf": f32(fac.hf[idx]),
            "gf": f32(fac.gf[idx]), "win_col": win_col, "shop_col": shop_col}


def _join(left: dict, right: dict) -> dict:
    return {k: np.concatenate([left[k], right[k]]) for k in left}


def _angular_top(cols: dict, z: np.ndarray) -> np.ndarray:
    """Elevation (tangent) of a facade's top edge per column; -inf where nothing stands."""
    return np.where(cols["kind"] < 2, (cols["top"] - CAM_H) / z, -np.inf)


def _paint_facade(cv: Canvas, cam: Camera, cols: dict, z: np.ndarray, dv: np.ndarray, select: np.ndarray) -> None:
    """Paint a facade over the canvas in the columns ``select`` where it stands above the ground."""
    idx = np.flatnonzero(select & (cols["kind"] < 2))
    if idx.size == 0:
        return
    c = {k: v[idx] for k, v in cols.items()}
    zi = z[idx].astype(np.float32)
    r0 = max(math.floor((cam.v_h + float(np.min((CAM_H - c["top"]) * FOCAL / zi))) * cv.H - 1), 0)
    r1 = min(math.ceil((cam.v_h + float(np.max(CAM_H * FOCAL / zi))) * cv.H + 1), cv.H)
    if r0 >= r1:
        return
    Y = CAM_H - dv[r0:r1] * (zi / FOCAL)
    valid = (Y >= 0) & (Y < c["top"])
    fr = (Y / c["fh"]) % 1.0
    window = c["win_col"] & (fr > 0.3) & (fr < 0.3 + c["hf"]) & (Y > c["gf"]) & (Y < c["flat_top"] - 0.9)
    paint = np.where(window, c["win"], c["wall"])
    paint = np.where(c["shop_col"] & (Y > 0.3) & (Y < c["gf"] - 0.6), c["shop"], paint)
    paint = np.where((Y > c["flat_top"] - 0.45) & (Y < c["flat_top"]), c["cornice"], paint)
    label = np.where(c["kind"] == 0, BUILDING, VEG).astype(np.uint8)
    cols_ix = slice(idx[0], idx[-1] + 1) if idx[-1] - idx[0] + 1 == idx.size else idx
    block = (slice(r0, r1), cols_ix)
    cv.label[block] = np.where(valid, label, cv.label[block])
    cv.paint[block] = np.where(valid, paint, cv.paint[block])


def _paint_ground(cv: Canvas, sc: Scene, du: np.ndarray, dv: np.ndarray) -> None:
    """Road, sidewalks (curbs, paving joints), terrain, markings and shadows below the horizon."""
    road, p, left, right = sc.road, sc.road.paints, sc.sides[-1], sc.sides[1]
    r_h = int(np.searchsorted(dv[:, 0], 0.0, side="right"))
    if r_h >= cv.H:
        return
    zg = np.float32(FOCAL * CAM_H) / dv[r_h:]  # (Hb, 1), decreasing downwards
    Xg = du * (zg / np.float32(FOCAL_U))  # (Hb, W)
    edges = np.array([road.X_l - left["sw"], road.X_l - 0.3, road.X_l, road.X_r, road.X_r + 0.3,
                      road.X_r + right["sw"]], dtype=np.float32)
    outer = [(s["outer"], p["terrain"] if s["outer"] == TERRAIN else p["side"]) for s in (left, right)]
    lut_label = np.array([outer[0][0], SIDEWALK, SIDEWALK, ROAD, SIDEWALK, SIDEWALK, outer[1][0]], dtype=np.uint8)
    lut_paint = np.array([outer[0][1], p["side"], p["curb"], p["road"], p["curb"], p["side"], outer[1][1]], dtype=np.uint16)
    code = np.searchsorted(edges, Xg)
    label, paint = lut_label[code], lut_paint[code]
    near = int(np.searchsorted(-zg[:, 0], -25.0))  # rows with zg < 25 m get paving joints
    if near < len(zg):
        Xn, zn = Xg[near:], zg[near:]
        joints = (paint[near:] == p["side"]) & (((Xn % 1.5) < 0.06) | ((zn % 1.5) < 0.06))
        paint[near:][joints] = p["joint"]
    mark = np.zeros(Xg.shape, dtype=bool)
    dash = (zg % 9.0) < 3.5
    for X in road.dashed:
        mark |= dash & (np.abs(Xg - X) < 0.07)
    for X in road.solid:
        mark |= np.abs(Xg - X) < 0.07
    if road.crosswalk is not None:
        rows = _row_block(zg, road.crosswalk, road.crosswalk + 3.5)
        mark[rows] |= ((Xg[rows] - road.X_l) % 1.1) < 0.55
    paint[mark & (code == 3)] = p["mark"]
    if road.inter is not None:
        rows = _row_block(zg, *road.inter)
        label[rows], paint[rows] = ROAD, p["road"]
    cv.label[r_h:], cv.paint[r_h:] = label, paint
    if not sc.light.overcast:
        s = sc.light.sun_side
        cut = (road.X_r if s > 0 else -road.X_l) - float(sc.noise["c1"][0, 0]) * 3.0 - 2.0
        cv.shadow[r_h:] = np.where(Xg * s > cut, np.float32(sc.light.shadow), np.float32(1.0))


def _row_block(zg: np.ndarray, z0: float, z1: float) -> slice:
    """Rows whose ground depth (decreasing downwards) lies in [z0, z1]."""
    neg = -zg[:, 0]
    return slice(int(np.searchsorted(neg, -z1)), int(np.searchsorted(neg, -z0, side="right")))


def _paint_skyline(cv: Canvas, sc: Scene, U: np.ndarray, V: np.ndarray) -> None:
    sk = sc.skyline
    idx = np.minimum(np.searchsorted(sk["breaks"], U[0]), len(sk["breaks"]) - 1)
    h = sk["heights"][idx] * (1 + np.where(sk["veg"][idx], 0.3 * np.sin(U[0] * 140 + sk["phase"][idx]), 0.0))
    r0 = max(math.floor((sc.cam.v_h - float(h.max())) * cv.H - 1), 0)
    r1 = min(max(math.ceil(sc.cam.v_h * cv.H - 0.5), 0), cv.H)
    if r0 >= r1:
        return
    Vb = V[r0:r1]
    valid = (Vb >= sc.cam.v_h - h) & (Vb < sc.cam.v_h)
    label = np.where(sk["veg"][idx], VEG, BUILDING).astype(np.uint8)
    cv.label[r0:r1] = np.where(valid, label, cv.label[r0:r1])
    cv.paint[r0:r1] = np.where(valid, sk["paints"][idx], cv.paint[r0:r1])


def draw_background(cv: Canvas, sc: Scene) -> None:
    """Paint the background (skyline, ground, facades) over the whole canvas; stuff only."""
    H, W, cam = cv.H, cv.W, sc.cam
    U = ((np.arange(W, dtype=np.float32) + 0.5) / W)[None, :]
    V = ((np.arange(H, dtype=np.float32) + 0.5) / H)[:, None]
    du = U - np.float32(cam.u_vp)
    du = np.where(np.abs(du) < 1e-7, np.float32(1e-7), du)
    dv = V - np.float32(cam.v_h)
    _paint_skyline(cv, sc, U, V)
    _paint_ground(cv, sc, du, dv)
    du64 = du[0].astype(np.float64)
    n_left = int(np.sum(du64 < 0))
    planes = {}
    for key in ("far", "near"):
        fl, fr = sc.sides[-1][key], sc.sides[1][key]
        z = np.concatenate([FOCAL_U * fl.X / du64[:n_left], FOCAL_U * fr.X / du64[n_left:]])
        planes[key] = (_join(_facade_columns(fl, z[:n_left]), _facade_columns(fr, z[n_left:])), z)
    (far, z_far), (near, z_near) = planes["far"], planes["near"]
    near_top = _angular_top(near, z_near)
    everywhere = np.ones(W, dtype=bool)
    if sc.cross is None:
        _paint_facade(cv, cam, far, z_far, dv, _angular_top(far, z_far) > near_top)
        _paint_facade(cv, cam, near, z_near, dv, everywhere)
        return
    zc = np.full(W, sc.cross_z)
    cross = _facade_columns(sc.cross, du64 * sc.cross_z / FOCAL_U)
    cross_seen = _angular_top(cross, zc) > near_top
    _paint_facade(cv, cam, cross, zc, dv, cross_seen & (zc > z_far))
    _paint_facade(cv, cam, far, z_far, dv, (_angular_top(far, z_far) > near_top) & (z_far < zc))
    _paint_facade(cv, cam, cross, zc, dv, cross_seen & (zc <= z_far) & (zc > z_near))
    _paint_facade(cv, cam, near, z_near, dv, z_near < zc)
    _paint_facade(cv, cam, cross, zc, dv, zc <= z_near)
