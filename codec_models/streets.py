"""Embedded default data set "streets": procedural urban street scenes with Cityscapes classes.

Every scene is generated from one integer seed (``numpy.random.default_rng(seed)``). A scene
is first *sampled* as a resolution-free description (camera, road, facades, objects, light)
in continuous world/normalised-image coordinates and then *rasterised* at any size, so one
seed gives the same scene at 64x128 and at 256x512, only sharper. Labels are Cityscapes
train ids (0..18, every pixel labelled); the RGB image is a photo-like rendering (asphalt with
lane markings, facades with window grids, textured vegetation, a sky gradient with clouds,
per-scene light and shadows), not the label colours.

Geometry: a pinhole camera ``CAM_H`` metres above a flat ground, looking down the street.
A world point (X lateral, Y up, z forward, metres) projects to
``u = u_vp + FOCAL_U * X / z`` and ``v = v_h + FOCAL * (CAM_H - Y) / z`` (u, v in [0, 1]).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .classes import TRAIN_ID

GENERATOR_VERSION = 2  # bump whenever the rendering changes: it keys the on-disk cache
SPLIT_OFFSET: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}
DEFAULT_SIZES: dict[str, int] = {"train": 4000, "val": 200, "test": 200}

FOCAL = 2.2  # focal length in image heights (Cityscapes: ~2262 px at 1024 px height)
FOCAL_U = FOCAL / 2.0  # the same in image widths for the reference aspect 1:2
CAM_H = 1.4  # camera height above the road, metres

ROAD, SIDEWALK, BUILDING, WALL, FENCE = (TRAIN_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN = TRAIN_ID["pole"], TRAIN_ID["traffic light"], TRAIN_ID["traffic sign"]
VEG, TERRAIN, SKY = TRAIN_ID["vegetation"], TRAIN_ID["terrain"], TRAIN_ID["sky"]
PERSON, RIDER, CAR, TRUCK, BUS = (TRAIN_ID[n] for n in ("person", "rider", "car", "truck", "bus"))
TRAIN, MOTO, BIKE = TRAIN_ID["train"], TRAIN_ID["motorcycle"], TRAIN_ID["bicycle"]

# Texture amplitudes (coarse value noise, fine noise) per material.
TEX: dict[str, tuple[float, float]] = {
    "flat": (0.02, 0.02), "asphalt": (0.08, 0.07), "paving": (0.06, 0.08), "wall": (0.06, 0.05),
    "glass": (0.30, 0.05), "leaf": (0.22, 0.42), "grass": (0.20, 0.25), "metal": (0.03, 0.03),
    "cloth": (0.05, 0.06), "bark": (0.10, 0.20),
}
SKY_PAINT = 0
_GROUND_CLASSES = np.zeros(256, dtype=bool)
_GROUND_CLASSES[[ROAD, SIDEWALK, TERRAIN]] = True


# ---------------------------------------------------------------------------------------
# Camera, palette, canvas
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Camera:
    v_h: float  # horizon row (normalised)
    u_vp: float  # vanishing point column (normalised)

    def u(self, X: float, z: float) -> float:
        return self.u_vp + FOCAL_U * X / z

    def v(self, Y: float, z: float) -> float:
        return self.v_h + FOCAL * (CAM_H - Y) / z


class _Palette:
    """Per-scene list of paints: base colour (0..255) and texture amplitudes; paint 0 is the sky."""

    def __init__(self) -> None:
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros((1, 3)), np.zeros((1, 2)))]
        self._rgb: list[tuple] = []  # single paints not yet stacked into a chunk
        self._tex: list[tuple] = []
        self.count = 1

    def add(self, rgb, tex: str = "flat", scale: float = 1.0) -> int:
        """Add one paint; returns its id."""
        self._rgb.append((rgb[0] * scale, rgb[1] * scale, rgb[2] * scale))
        self._tex.append(TEX[tex])
        self.count += 1
        return self.count - 1

    def add_many(self, rgb: np.ndarray, tex: str | list[str]) -> np.ndarray:
        """Add paints (N, 3) with one texture or one per paint; returns their ids."""
        self._flush()
        amp = np.array([TEX[tex]] if isinstance(tex, str) else [TEX[t] for t in tex], dtype=np.float64)
        self._chunks.append((rgb, np.broadcast_to(amp, (len(rgb), 2))))
        self.count += len(rgb)
        return np.arange(self.count - len(rgb), self.count)

    def _flush(self) -> None:
        if self._rgb:
            self._chunks.append((np.array(self._rgb, dtype=np.float64), np.array(self._tex, dtype=np.float64)))
            self._rgb, self._tex = [], []

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(rgb in [0, 1], texture amplitudes) as float32 lookup tables."""
        self._flush()
        rgb = np.clip(np.concatenate([c for c, _ in self._chunks]), 0, 255) / 255
        return rgb.astype(np.float32), np.concatenate([t for _, t in self._chunks]).astype(np.float32)


def _span(a: float, b: float, n: int, thin: bool) -> tuple[int, int]:
    """Pixel index range whose centres lie in [a, b) (normalised); ``thin`` keeps >= 1 px."""
    i0 = math.ceil(a * n - 0.5)
    i1 = math.ceil(b * n - 0.5)
    if thin and i1 <= i0:
        i0 = math.floor((a + b) * 0.5 * n)
        i1 = i0 + 1
    return max(i0, 0), min(i1, n)


class _Canvas:
    """Label, paint and ground-shadow buffers with primitive fills in normalised coordinates."""

    def __init__(self, height: int, width: int) -> None:
        self.H, self.W = height, width
        self.label = np.full((height, width), SKY, dtype=np.uint8)
        self.paint = np.zeros((height, width), dtype=np.uint16)
        self.shadow = np.ones((height, width), dtype=np.float32)
        self.xc = (np.arange(width) + 0.5) / width  # pixel centres, normalised
        self.yc = (np.arange(height) + 0.5) / height

    def _put(self, y0: int, y1: int, x0: int, x1: int, mask, label, paint: int) -> None:
        if mask is None:
            if label is not None:
                self.label[y0:y1, x0:x1] = label
            self.paint[y0:y1, x0:x1] = paint
        else:
            if label is not None:
                self.label[y0:y1, x0:x1][mask] = label
            self.paint[y0:y1, x0:x1][mask] = paint

    def rect(self, u0: float, v0: float, u1: float, v1: float, label, paint: int, thin: bool = False) -> None:
        x0, x1 = _span(u0, u1, self.W, thin)
        y0, y1 = _span(v0, v1, self.H, thin)
        if x0 < x1 and y0 < y1:
            self._put(y0, y1, x0, x1, None, label, paint)

    def _blob_mask(self, uc: float, vc: float, ru: float, rv: float, shape: str, thin: bool):
        x0, x1 = _span(uc - ru, uc + ru, self.W, thin)
        y0, y1 = _span(vc - rv, vc + rv, self.H, thin)
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
        got = self._blob_mask(uc, vc, ru, rv, shape, thin)
        if got is not None:
            self._put(*got, label, paint)

    def shade_blob(self, uc: float, vc: float, ru: float, rv: float, factor: float) -> None:
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
        x0, x1 = _span(ua, ub, self.W, False)
        y0, y1 = _span(min(ta, tb), max(ba, bb), self.H, False)
        if x0 >= x1 or y0 >= y1:
            return None
        uc = self.xc[x0:x1]
        t = (uc - ua) * (1.0 / max(ub - ua, 1e-9))
        top = ta + t * (tb - ta)
        bot = ba + t * (bb - ba)
        vc = self.yc[y0:y1, None]
        mask = (vc >= top) & (vc < bot)
        self._put(y0, y1, x0, x1, mask, label, paint)
        return y0, y1, x0, x1, mask, uc, vc, top, bot


# ---------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------
@dataclass
class _Facade:
    """A vertical plane X = const (or z = const for the cross building) split into segments.

    kind: 0 building, 1 vegetation, 2 empty. Window grid in facade coordinates (s, Y).
    """

    X: float
    starts: np.ndarray
    ends: np.ndarray
    kind: np.ndarray
    top: np.ndarray
    wall: np.ndarray
    win: np.ndarray
    shop: np.ndarray
    cornice: np.ndarray
    sx: np.ndarray
    fh: np.ndarray
    wf: np.ndarray
    hf: np.ndarray
    gf: np.ndarray
    roof: np.ndarray  # gable height (0 = flat roof)
    phase: np.ndarray


@dataclass
class _Light:
    overcast: bool
    brightness: float
    tint: np.ndarray
    sun_side: int
    shadow: float
    facade_gain: dict
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    cloud_rgb: np.ndarray
    cloudiness: float


@dataclass
class _Road:
    X_l: float
    X_r: float
    lane0: float
    lane_w: float
    n_lanes: int
    two_way: bool
    ego_lane: int
    dashed: list
    solid: list
    crosswalk: float | None
    inter: tuple[float, float] | None
    paints: dict


@dataclass
class _Scene:
    cam: _Camera
    light: _Light
    road: _Road
    sides: dict  # -1 / +1 -> dict(sw, tw, outer label, near/far facades)
    cross: _Facade | None
    cross_z: float
    skyline: dict
    noise: dict
    pal: _Palette
    sprites: list = field(default_factory=list)  # (layer, -z, order, draw(canvas, cam))

    def add(self, layer: int, z: float, fn: Callable) -> None:
        self.sprites.append((layer, -z, len(self.sprites), fn))


class _Draws:
    """The scene's ``numpy.random.Generator`` with fast scalar draws (taken from it in blocks).

    Scalar calls (``size=None``) pop pre-drawn numbers; array calls go to the generator. The
    sequence depends on the seed only, never on the output resolution.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._buf: list[float] = []

    def random(self, size=None, dtype=np.float64):
        if size is not None:
            return self.rng.random(size, dtype=dtype)
        if not self._buf:
            self._buf = self.rng.random(256).tolist()
            self._buf.reverse()
        return self._buf.pop()

    def uniform(self, low: float = 0.0, high: float = 1.0, size=None):
        if size is not None:
            return self.rng.uniform(low, high, size)
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int | None = None) -> int:
        if high is None:
            low, high = 0, low
        return low + int(self.random() * (high - low))


def _jit(rng: _Draws, rgb, amount: float = 12.0) -> tuple[float, float, float]:
    """Colour with per-channel jitter and a random brightness factor."""
    r0, r1, r2, r3 = rng.random(), rng.random(), rng.random(), rng.random()
    f = 0.92 + 0.16 * r3
    return ((rgb[0] + amount * (2 * r0 - 1)) * f, (rgb[1] + amount * (2 * r1 - 1)) * f, (rgb[2] + amount * (2 * r2 - 1)) * f)


@functools.lru_cache(maxsize=32)
def _table(options: tuple) -> np.ndarray:
    return np.array(options, dtype=np.float64)


def _colours(r: np.ndarray, options, amount: float) -> np.ndarray:
    """Colours from uniforms r (n, 5): a choice among ``options``, channel jitter, brightness."""
    options = _table(tuple(options))
    base = options[(r[:, 0] * len(options)).astype(np.int64)]
    return (base + amount * (2 * r[:, 1:4] - 1)) * (0.92 + 0.16 * r[:, 4:5])


def _jit_many(rng: _Draws, options, n: int, amount: float) -> np.ndarray:
    """n colours drawn from ``options`` (K, 3) with jitter: (n, 3)."""
    return _colours(rng.random((n, 5)), options, amount)


def _pick(rng: _Draws, options):
    return options[int(rng.random() * len(options))]


BUILDING_COLORS = [(205, 190, 160), (225, 215, 190), (182, 180, 175), (140, 140, 140), (150, 78, 62),
                   (122, 92, 72), (200, 160, 105), (220, 205, 150), (232, 230, 224), (168, 182, 198),
                   (210, 172, 160), (95, 95, 100), (176, 120, 90), (190, 200, 185)]
CAR_COLORS = [(235, 235, 235), (30, 30, 34), (165, 168, 172), (95, 98, 104), (25, 40, 90), (160, 25, 25),
              (40, 80, 160), (30, 70, 45), (200, 185, 150), (230, 190, 30), (120, 20, 30), (215, 215, 220)]
CLOTH_COLORS = [(30, 30, 35), (60, 60, 70), (150, 150, 155), (235, 235, 230), (150, 30, 35), (40, 60, 130),
                (70, 95, 60), (190, 150, 100), (200, 110, 40), (110, 50, 100), (90, 60, 40), (180, 180, 60)]
TROUSER_COLORS = [(40, 55, 95), (30, 30, 32), (70, 70, 75), (170, 150, 115), (60, 45, 35), (110, 115, 125)]
SKIN_COLORS = [(235, 200, 170), (215, 170, 135), (170, 120, 85), (120, 80, 55), (90, 60, 45)]
LEAF_COLORS = [(62, 95, 40), (75, 105, 45), (55, 85, 38)]
GLASS_COLORS = [(55, 65, 80), (80, 95, 115), (40, 45, 50), (110, 125, 140)]
SHOP_COLORS = [(45, 50, 58), (70, 60, 50), (120, 40, 35), (50, 70, 90)]
HAIR_COLORS = [(30, 25, 20), (70, 45, 25), (140, 100, 60), (200, 175, 120), (150, 150, 150)]


def _sample_light(rng: _Draws) -> _Light:
    overcast = bool(rng.random() < 0.3)
    warm = rng.uniform(-1.0, 1.0)
    sun_side = int(_pick(rng, [-1, 1]))
    lit, dim = (rng.uniform(0.9, 1.0), rng.uniform(0.8, 0.9)) if overcast else (rng.uniform(1.0, 1.1), rng.uniform(0.6, 0.75))
    if overcast:
        top, hor = _jit(rng, (150, 156, 168), 10), _jit(rng, (205, 207, 212), 8)
        cloud = np.array(_jit(rng, (185, 187, 192), 10))
    else:
        top, hor = _jit(rng, (55, 105, 185), 15), _jit(rng, (180, 205, 232), 10)
        cloud = np.array(_jit(rng, (240, 240, 245), 5))
    return _Light(
        overcast=overcast,
        brightness=float(rng.uniform(0.72, 0.95) if overcast else rng.uniform(0.85, 1.12)),
        tint=np.array([1 + 0.07 * warm, 1.0, 1 - 0.09 * warm], dtype=np.float32),
        sun_side=sun_side,
        shadow=1.0 if overcast else float(rng.uniform(0.5, 0.7)),
        facade_gain={-sun_side: float(lit), sun_side: float(dim)},  # facade on side s faces -s
        sky_top=np.array(top, dtype=np.float32) / 255, sky_horizon=np.array(hor, dtype=np.float32) / 255,
        cloud_rgb=cloud.astype(np.float32) / 255,
        cloudiness=float(rng.uniform(0.6, 1.0) if overcast else rng.uniform(0.0, 0.8)),
    )


def _sample_road(rng: _Draws, pal: _Palette) -> _Road:
    lane_w = rng.uniform(2.9, 3.5)
    n_lanes = int(_pick(rng, [1, 2, 2, 2, 3, 4]))
    two_way = n_lanes >= 2 and rng.random() < 0.6
    park_l, park_r = rng.random() < 0.5, rng.random() < 0.6
    ego = int(rng.integers(n_lanes // 2, n_lanes)) if two_way else int(rng.integers(n_lanes))
    X_l = -(2.2 * park_l + (ego + 0.5) * lane_w) + rng.uniform(-0.4, 0.4)
    lane0 = X_l + 2.2 * park_l
    X_r = lane0 + n_lanes * lane_w + 2.2 * park_r
    bounds = [lane0 + k * lane_w for k in range(1, n_lanes)]
    centre = lane0 + (n_lanes // 2) * lane_w
    solid = [lane0 + 0.15, lane0 + n_lanes * lane_w - 0.15] + ([centre] if two_way else [])
    dashed = [b for b in bounds if not (two_way and abs(b - centre) < 1e-6)]
    inter = None
    if rng.random() < 0.45:
        z0 = rng.uniform(14, 45)
        inter = (z0, z0 + rng.uniform(9, 14))
    crosswalk = None
    if inter is not None and rng.random() < 0.6:
        crosswalk = inter[0] - 4.0
    elif rng.random() < 0.2:
        crosswalk = rng.uniform(10, 40)
    g = rng.uniform(72, 118)
    asphalt = (g, g * rng.uniform(0.98, 1.03), g * rng.uniform(0.99, 1.07))
    side_rgb = _jit(rng, _pick(rng, [(168, 168, 162), (186, 176, 156), (160, 125, 112), (140, 140, 140)]), 8)
    paints = {
        "road": pal.add(asphalt, "asphalt"),
        "mark": pal.add(np.array(asphalt) * 0.25 + np.array((220, 220, 210)) * 0.75, "flat"),
        "side": pal.add(side_rgb, "paving"),
        "joint": pal.add(side_rgb, "paving", 0.8),
        "curb": pal.add(_jit(rng, (178, 178, 172), 6), "paving"),
        "terrain": pal.add(_jit(rng, _pick(rng, [(105, 135, 55), (120, 140, 60), (150, 145, 95), (130, 112, 85)]), 10), "grass"),
    }
    return _Road(X_l, X_r, lane0, lane_w, n_lanes, two_way, ego, dashed, solid, crosswalk, inter, paints)


def _segments(rng: _Draws, pal: _Palette, X: float, z_end: float, gain: float, gaps: bool,
              skip: tuple[float, float] | None, haze: float, height_scale: float, lengths=(6.0, 28.0)) -> _Facade:
    """Row of buildings (and gaps) along a facade plane from z = 0 to z_end."""
    rows: list[tuple] = []
    z = 0.0
    while z < z_end:
        if skip is not None and skip[0] - 1.0 <= z < skip[1] + 1.0:
            rows.append((z, skip[1] + 1.0, 2, 0.0))
            z = skip[1] + 1.0
            continue
        length = rng.uniform(*lengths)
        if skip is not None and z < skip[0] - 1.0 < z + length:
            length = skip[0] - 1.0 - z
        if gaps and rng.random() < 0.28:
            kind = 1 if rng.random() < 0.65 else 2
            length = min(length, rng.uniform(3, 12))
            rows.append((z, z + length, kind, rng.uniform(3, 11)))
        else:
            rows.append((z, z + length, 0, rng.uniform(7, 28) * height_scale))
        z += length
    n = len(rows)
    arr = np.array(rows, dtype=np.float64)
    veg = arr[:, 2] == 1
    R = rng.random((n, 28))  # all per-segment draws in one block
    sky_mix = np.array((190.0, 205.0, 225.0)) * haze
    tint = lambda c: c * (gain * (1 - haze)) + sky_mix  # noqa: E731
    base = _colours(R[:, 0:5], BUILDING_COLORS, 12)
    leaf = _colours(R[:, 5:10], LEAF_COLORS, 12) * (1 - haze) + sky_mix
    ids = pal.add_many(np.concatenate([tint(base), leaf, tint(_colours(R[:, 10:15], GLASS_COLORS, 10)),
                                       tint(_colours(R[:, 15:20], SHOP_COLORS, 10)),
                                       tint(base * (0.7 + 0.15 * R[:, 20:21]))]),
                       ["wall"] * n + ["leaf"] * n + ["glass"] * 2 * n + ["wall"] * n).reshape(5, n)
    walls = np.where(veg, ids[1], ids[0])
    return _Facade(
        X=X, starts=arr[:, 0].copy(), ends=arr[:, 1].copy(), kind=arr[:, 2].astype(np.int8), top=arr[:, 3].copy(),
        wall=walls, win=np.where(veg, walls, ids[2]), shop=np.where(veg, walls, ids[3]), cornice=np.where(veg, walls, ids[4]),
        sx=2.2 + 1.8 * R[:, 21], fh=2.9 + 0.7 * R[:, 22], wf=0.35 + 0.3 * R[:, 23], hf=0.4 + 0.22 * R[:, 24],
        gf=np.where(R[:, 25] < 0.6, 3.5 + R[:, 25] / 0.6, 0.8),  # shop floor height (60 %) or none
        roof=np.where(R[:, 26] < 0.2, 1.0 + 2.0 * R[:, 26] / 0.2, 0.0), phase=2 * np.pi * R[:, 27],
    )


def _sample_sides(rng: _Draws, pal: _Palette, light: _Light, road: _Road) -> dict:
    scale = rng.uniform(0.6, 1.25)
    sides = {}
    for s in (-1, 1):
        edge = road.X_l if s < 0 else road.X_r
        sw = rng.uniform(1.8, 5.0)
        tw = rng.uniform(2.0, 9.0) if rng.random() < 0.35 else 0.0
        X_f = edge + s * (sw + tw)
        X_far = X_f + s * rng.uniform(10, 30)
        sides[s] = {
            "edge": edge, "sw": sw, "tw": tw, "outer": TERRAIN if tw > 0 else SIDEWALK,
            "near": _segments(rng, pal, X_f, rng.uniform(50, 200), light.facade_gain[s], True, road.inter, 0.0, scale),
            "far": _segments(rng, pal, X_far, 300.0, light.facade_gain[s], False, None, 0.2, scale, (12.0, 36.0)),
        }
    return sides


def _sample_cross(rng: _Draws, pal: _Palette, light: _Light) -> tuple[_Facade | None, float]:
    if rng.random() >= 0.3:
        return None, math.inf
    z_c = rng.uniform(45, 120)
    fac = _segments(rng, pal, 0.0, 1.0, float(np.mean(list(light.facade_gain.values()))), False, None, 0.1, 1.0)
    fac.starts[:] = -1e9
    fac.ends[:] = 1e9
    fac.top[:] = rng.uniform(10, 28)
    fac.roof[:] = 0.0
    return fac, z_c


def _sample_skyline(rng: _Draws, pal: _Palette) -> dict:
    widths = rng.uniform(0.02, 0.12, 40)
    breaks = np.cumsum(widths)
    n = int(np.searchsorted(breaks, 1.0)) + 1
    veg = rng.random(n) < 0.3
    heights = np.where(veg, rng.uniform(0.01, 0.035, n), rng.uniform(0.015, 0.09, n))
    haze = np.array((190.0, 205.0, 225.0)) * 0.45
    leaf = pal.add_many(_jit_many(rng, [(62, 95, 40)], n, 10) * 0.55 + haze, "leaf")
    wall = pal.add_many(_jit_many(rng, BUILDING_COLORS, n, 10) * 0.55 + haze, "wall")
    return {"breaks": breaks[:n], "veg": veg, "heights": heights, "paints": np.where(veg, leaf, wall),
            "phase": rng.uniform(0, 6, n)}


def _sample_noise(rng: _Draws) -> dict:
    grid = lambda h, w: rng.uniform(-1.0, 1.0, (h, w)).astype(np.float32)  # noqa: E731
    return {"c1": grid(5, 10), "c2": grid(16, 32), "f1": grid(64, 128), "k1": grid(4, 10), "k2": grid(12, 30)}


# ---------------------------------------------------------------------------------------
# Sprites (drawn back to front): vehicles, people, poles, trees, barriers
# ---------------------------------------------------------------------------------------
def _side_plane(X: float, w: float) -> float | None:
    """Lateral position of the visible side face of a box centred at X, width w."""
    if X - w / 2 > 0.3:
        return X - w / 2
    if X + w / 2 < -0.3:
        return X + w / 2
    return None


def _side_face(cv: _Canvas, cam: _Camera, Xs: float, za: float, zb: float, y0: float, y1: float, label, paint: int):
    return cv.vquad(cam.u(Xs, za), cam.u(Xs, zb), cam.v(y1, za), cam.v(y0, za), cam.v(y1, zb), cam.v(y0, zb), label, paint)


def _face(cv: _Canvas, cam: _Camera, X0: float, X1: float, z: float, y0: float, y1: float, label, paint: int,
          thin: bool = False) -> None:
    cv.rect(cam.u(X0, z), cam.v(y1, z), cam.u(X1, z), cam.v(y0, z), label, paint, thin)


def _top_face(cv: _Canvas, cam: _Camera, X0: float, X1: float, za: float, zb: float, y: float, label, paint: int) -> None:
    """Horizontal face at height y (< CAM_H) between depths za < zb, approximated by a rect."""
    cv.rect(cam.u(X0, za), cam.v(y, zb), cam.u(X1, za), cam.v(y, za), label, paint)


def _wheel(cv: _Canvas, cam: _Camera, Xs: float, zw: float, r: float, label, tyre: int, hub: int) -> None:
    ua, ub = cam.u(Xs, zw - r), cam.u(Xs, zw + r)
    ru, rv = abs(ua - ub) / 2, FOCAL * r / zw
    cv.blob((ua + ub) / 2, cam.v(r, zw), ru, rv, label, tyre)
    if rv * cv.H > 3:
        cv.blob((ua + ub) / 2, cam.v(r, zw), ru * 0.5, rv * 0.5, None, hub)


def _px(cv: _Canvas, metres: float, z: float) -> float:
    """Projected size in pixels of a vertical extent at depth z."""
    return FOCAL * metres / z * cv.H


def _draw_car(cv: _Canvas, cam: _Camera, X: float, z: float, w: float, h: float, L: float, front: bool, p: dict) -> None:
    body_top, floor = 0.52 * h + 0.1, 0.18
    c0, c1 = (z + 1.4, z + L - 0.9) if front else (z + 0.9, z + L - 1.4)
    Xs = _side_plane(X, w)
    big = _px(cv, h, z) > 8
    if Xs is not None:
        _side_face(cv, cam, Xs, z, z + L, floor, body_top, CAR, p["side"])
        _side_face(cv, cam, Xs, c0 + 0.3, c1 - 0.2, body_top, h, CAR, p["side"])
        if big:
            _side_face(cv, cam, Xs, c0 + 0.45, c1 - 0.35, body_top + 0.07, h - 0.07, None, p["glass"])
        for zw in (z + 0.8, z + L - 0.8):
            _wheel(cv, cam, Xs, zw, 0.32, CAR, p["dark"], p["hub"])
    _top_face(cv, cam, X - w / 2 + 0.1, X + w / 2 - 0.1, c1, c1 + 0.8, h, CAR, p["roof"])
    _face(cv, cam, X - w / 2 + 0.17, X + w / 2 - 0.17, c0, body_top, h, CAR, p["body"])
    _top_face(cv, cam, X - w / 2, X + w / 2, z, c0, body_top, CAR, p["roof"])
    if big:
        _face(cv, cam, X - w / 2 + 0.27, X + w / 2 - 0.27, c0, body_top + 0.05, h - 0.06, None, p["glass"])
    _face(cv, cam, X - w / 2 + 0.12, X - w / 2 + 0.4, z + 0.8, 0.0, floor + 0.1, CAR, p["dark"])
    _face(cv, cam, X + w / 2 - 0.4, X + w / 2 - 0.12, z + 0.8, 0.0, floor + 0.1, CAR, p["dark"])
    _face(cv, cam, X - w / 2, X + w / 2, z, floor, body_top, CAR, p["body"])
    if big:
        _face(cv, cam, X - w / 2, X + w / 2, z, floor, floor + 0.17, None, p["dark"])
        for a, b in ((X - w / 2 + 0.05, X - w / 2 + 0.38), (X + w / 2 - 0.38, X + w / 2 - 0.05)):
            _face(cv, cam, a, b, z, body_top - 0.22, body_top - 0.06, None, p["lamp"])
        _face(cv, cam, X - 0.25, X + 0.25, z, 0.38, 0.5, None, p["plate"])
        if front:
            _face(cv, cam, X - 0.45, X + 0.45, z, 0.45, body_top - 0.1, None, p["dark"])


def _draw_truck(cv: _Canvas, cam: _Camera, X: float, z: float, w: float, h: float, L: float, front: bool,
                p: dict, label: int) -> None:
    """Truck (cab + cargo box) or, with ``label`` BUS/TRAIN, a single long box with a window band."""
    Xs = _side_plane(X, w)
    big = _px(cv, h, z) > 8
    box = label != TRUCK
    cab_h, cab_L = (h, 0.0) if box else (min(h - 0.4, 2.9), 2.3)
    cab = (z, z + cab_L) if front else (z + L - cab_L, z + L)
    load = (z + cab_L + 0.3, z + L) if front else (z, z + L - cab_L - 0.2)
    if Xs is not None:
        if box:
            _side_face(cv, cam, Xs, z, z + L, 0.35, h, label, p["side"])
            if big:
                _side_face(cv, cam, Xs, z + 0.4, z + L - 0.4, 1.15, h - 0.4, None, p["glass"])
                _side_face(cv, cam, Xs, z, z + L, 0.45, 0.75, None, p["stripe"])
        else:
            _side_face(cv, cam, Xs, z, z + L, 0.45, 0.95, label, p["dark"])
            _side_face(cv, cam, Xs, load[0], load[1], 0.9, h, label, p["cargo_side"])
            _side_face(cv, cam, Xs, cab[0], cab[1], 0.5, cab_h, label, p["side"])
            if big:
                _side_face(cv, cam, Xs, cab[0] + 0.3, cab[1] - 0.5, cab_h - 1.0, cab_h - 0.15, None, p["glass"])
        step = 7.0 if label == TRAIN else max(L - 3.5, 2.0)
        for zw in np.arange(z + 1.6, z + L - 1.0, step):
            _wheel(cv, cam, Xs, float(zw), 0.5, label, p["dark"], p["hub"])
    if label == TRAIN:  # pantograph
        zc = z + L / 2
        _face(cv, cam, X - 0.05, X + 0.05, zc, h, h + 1.0, label, p["dark"], thin=True)
        _face(cv, cam, X - 0.7, X + 0.7, zc, h + 0.9, h + 1.0, label, p["dark"], thin=True)
    for a, b in ((X - w / 2 + 0.15, X - w / 2 + 0.55), (X + w / 2 - 0.55, X + w / 2 - 0.15)):
        _face(cv, cam, a, b, z + 1.0, 0.0, 0.6, label, p["dark"])
    if box:
        _face(cv, cam, X - w / 2, X + w / 2, z, 0.35, h, label, p["body"])
        if big:
            lo = 1.0 if front else h - 1.6
            _face(cv, cam, X - w / 2 + 0.12, X + w / 2 - 0.12, z, lo, h - 0.5, None, p["glass"])
            _face(cv, cam, X - w / 2, X + w / 2, z, 0.45, 0.75, None, p["stripe"])
            if front:
                _face(cv, cam, X - w / 2 + 0.3, X + w / 2 - 0.3, z, h - 0.45, h - 0.15, None, p["display"])
    elif front:
        _face(cv, cam, X - w / 2, X + w / 2, load[0], cab_h, h, label, p["cargo"])
        _face(cv, cam, X - w / 2, X + w / 2, z, 0.45, cab_h, label, p["body"])
        if big:
            _face(cv, cam, X - w / 2 + 0.12, X + w / 2 - 0.12, z, cab_h - 1.0, cab_h - 0.15, None, p["glass"])
            _face(cv, cam, X - 0.6, X + 0.6, z, 0.6, 1.2, None, p["dark"])
    else:
        _face(cv, cam, X - w / 2, X + w / 2, z, 0.4, 0.95, label, p["dark"])
        _face(cv, cam, X - w / 2, X + w / 2, z, 0.9, h, label, p["cargo"])
        if big:
            _face(cv, cam, X - 0.03, X + 0.03, z, 1.0, h - 0.1, None, p["dark"], thin=True)
    if big:
        for a, b in ((X - w / 2 + 0.1, X - w / 2 + 0.4), (X + w / 2 - 0.4, X + w / 2 - 0.1)):
            _face(cv, cam, a, b, z, 0.5, 0.7, None, p["lamp"])


def _draw_shadow(cv: _Canvas, cam: _Camera, X: float, z: float, w: float, L: float, strength: float) -> None:
    zm = z + L / 2
    u0, u1 = cam.u(X - w / 2 - 0.2, z), cam.u(X + w / 2 + 0.2, z)
    va, vb = cam.v(0, z + L), cam.v(0, z - 0.3)
    cv.shade_blob((u0 + u1) / 2, (va + vb) / 2, (u1 - u0) / 2, max((vb - va) / 2, FOCAL * 0.2 / zm), strength)


def _draw_person(cv: _Canvas, cam: _Camera, X: float, z: float, h: float, label: int, p: dict, apart: bool) -> None:
    big = _px(cv, h, z) > 14
    if big and apart:
        _face(cv, cam, X - 0.2, X - 0.05, z, 0.0, 0.5 * h, label, p["bottom"])
        _face(cv, cam, X + 0.05, X + 0.2, z, 0.0, 0.5 * h, label, p["bottom"])
    else:
        _face(cv, cam, X - 0.15, X + 0.15, z, 0.0, 0.5 * h, label, p["bottom"], thin=True)
    if big:
        _face(cv, cam, X - 0.29, X + 0.29, z, 0.46 * h, 0.8 * h, label, p["skin"])
    _face(cv, cam, X - 0.22, X + 0.22, z, 0.46 * h, 0.83 * h, label, p["top"], thin=True)
    uc, vc = cam.u(X, z), cam.v(0.91 * h, z)
    ru, rv = FOCAL_U * 0.1 / z, FOCAL * 0.12 / z
    cv.blob(uc, vc, ru, rv, label, p["hair"], thin=True)
    if big:
        cv.blob(uc, vc + rv * 0.25, ru * 0.85, rv * 0.75, None, p["skin"])


def _draw_cycle(cv: _Canvas, cam: _Camera, X: float, z: float, motor: bool, side: bool, d: int,
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
            _face(cv, cam, X - 0.55, X + 0.5, z, 0.3, 0.8, label, p["frame"])
            _face(cv, cam, X - 0.45 * d - 0.25, X - 0.45 * d + 0.25, z, 0.75, 0.9, label, p["dark"])
        else:
            _face(cv, cam, X - 0.3, X + 0.35, z, 0.62, 0.68, label, p["frame"], thin=True)
            _face(cv, cam, X - 0.04, X + 0.04, z, 0.34, 0.7, label, p["frame"], thin=True)
        hx = X + d * (half - 0.1)
        _face(cv, cam, hx - 0.04, hx + 0.04, z, r, 1.0, label, p["frame"], thin=True)
        if rider is not None:
            sx = X - d * 0.1
            _face(cv, cam, sx - 0.12, sx + 0.14, z, 0.45, 1.0, RIDER, rider["bottom"], thin=True)
            _face(cv, cam, sx - 0.2 + d * 0.05, sx + 0.2 + d * 0.05, z, 0.95, 1.5, RIDER, rider["top"], thin=True)
            ax0, ax1 = sorted((sx + d * 0.1, hx))
            _face(cv, cam, ax0, ax1, z, 1.1, 1.2, RIDER, rider["top"])
            head_u = cam.u(sx + d * 0.08, z)
            cv.blob(head_u, cam.v(1.62, z), FOCAL_U * 0.12 / z, FOCAL * 0.13 / z, RIDER, rider["hair"], thin=True)
    else:
        ww = 0.14 if motor else 0.05
        _face(cv, cam, X - ww, X + ww, z, 0.0, 2 * r, label, p["dark"], thin=True)
        if motor:
            _face(cv, cam, X - 0.3, X + 0.3, z + 0.2, 0.45, 0.95, label, p["frame"])
            _face(cv, cam, X - 0.08, X + 0.08, z, 0.75, 0.85, None, p["lamp"])
        _face(cv, cam, X - 0.3, X + 0.3, z + 1.0, 0.95, 1.02, label, p["frame"], thin=True)
        if rider is not None:
            _face(cv, cam, X - 0.2, X - 0.07, z + 0.3, 0.4, 1.0, RIDER, rider["bottom"])
            _face(cv, cam, X + 0.07, X + 0.2, z + 0.3, 0.4, 1.0, RIDER, rider["bottom"])
            _face(cv, cam, X - 0.22, X + 0.22, z + 0.3, 0.95, 1.55, RIDER, rider["top"], thin=True)
            zr = z + 0.3
            cv.blob(cam.u(X, zr), cam.v(1.67, zr), FOCAL_U * 0.12 / zr, FOCAL * 0.13 / zr, RIDER, rider["hair"], thin=True)


def _draw_tree(cv: _Canvas, cam: _Camera, X: float, z: float, trunk_h: float, blobs: list, p: dict) -> None:
    """Trunk and a canopy of overlapping discs (later discs on top), all vegetation."""
    _face(cv, cam, X - 0.18, X + 0.18, z, 0.0, trunk_h + 0.5, VEG, p["trunk"], thin=True)
    b = np.array([(cam.u(X + dx, z), cam.v(trunk_h + dy, z), r) for dx, dy, r, _ in blobs])
    ru, rv = FOCAL_U * b[:, 2] / z, FOCAL * b[:, 2] / z
    x0, x1 = _span(float(np.min(b[:, 0] - ru)), float(np.max(b[:, 0] + ru)), cv.W, True)
    y0, y1 = _span(float(np.min(b[:, 1] - rv)), float(np.max(b[:, 1] + rv)), cv.H, True)
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
    cv.label[y0:y1, x0:x1][mask] = VEG
    cv.paint[y0:y1, x0:x1][mask] = paints[top[mask]]


def _draw_bush(cv: _Canvas, cam: _Camera, X: float, z: float, w: float, h: float, paint: int) -> None:
    cv.blob(cam.u(X, z), cam.v(h * 0.4, z), FOCAL_U * w / 2 / z, FOCAL * h * 0.6 / z, VEG, paint)


def _draw_pole(cv: _Canvas, cam: _Camera, X: float, z: float, h: float, kind: str, d: int, p: dict) -> None:
    """Street lamp, traffic light (on the pole or on a mast arm), or traffic sign; d points to the road."""
    _face(cv, cam, X - 0.07, X + 0.07, z, 0.0, h, POLE, p["pole"], thin=True)
    if kind == "lamp":
        a0, a1 = sorted((X, X + d * 1.6))
        _face(cv, cam, a0, a1, z, h - 0.12, h, POLE, p["pole"], thin=True)
        e = X + d * 1.6
        _face(cv, cam, e - 0.3, e + 0.3, z, h - 0.22, h - 0.02, POLE, p["head"], thin=True)
    elif kind in ("light", "mast"):
        xb = X
        if kind == "mast":
            xb = X + d * p["arm"]
            a0, a1 = sorted((X, xb))
            _face(cv, cam, a0, a1, z, h - 0.15, h, POLE, p["pole"], thin=True)
        y0 = h if kind == "light" else h - 1.05
        _face(cv, cam, xb - 0.17, xb + 0.17, z, y0, y0 + 0.95, LIGHT, p["box"], thin=True)
        if _px(cv, 0.95, z) > 6:
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


def _draw_barrier(cv: _Canvas, cam: _Camera, X: float, z0: float, z1: float, h: float, label: int, p: dict) -> None:
    got = _side_face(cv, cam, X, z0, z1, 0.0, h, label, p["main"] if label == WALL else p["keep"])
    if got is None:
        return
    y0, y1, x0, x1, mask, uc, vc, top, bot = got
    rail = mask & (vc < top + 0.12 * (bot - top))
    if label == FENCE:
        zc = FOCAL_U * X / np.where(np.abs(uc - cam.u_vp) < 1e-9, 1e-9, uc - cam.u_vp)
        rail |= mask & ((zc % p["spacing"]) < 0.35 * p["spacing"])
    cv.paint[y0:y1, x0:x1][rail] = p["rail"]


# ---------------------------------------------------------------------------------------
# Sprite sampling
# ---------------------------------------------------------------------------------------
def _vehicle_paints(rng: _Draws, pal: _Palette, rgb, front: bool) -> dict:
    rgb = _jit(rng, rgb, 8)
    return {
        "body": pal.add(rgb, "metal"), "side": pal.add(rgb, "metal", 0.78), "roof": pal.add(rgb, "metal", 1.08),
        "glass": pal.add(_jit(rng, (45, 55, 65), 8), "glass"), "dark": pal.add(_jit(rng, (28, 28, 30), 4), "flat"),
        "hub": pal.add((120, 120, 125), "metal"), "plate": pal.add((225, 225, 215), "flat"),
        "lamp": pal.add((245, 240, 220) if front else (200, 30, 25), "flat"),
    }


def _place(occupied: list, z0: float, z1: float) -> bool:
    if any(z0 < b + 1.5 and a - 1.5 < z1 for a, b in occupied):
        return False
    occupied.append((z0, z1))
    return True


def _sample_vehicles(rng: _Draws, sc: _Scene, z_max: float) -> None:
    road, pal = sc.road, sc.pal
    lanes = [road.lane0 + (k + 0.5) * road.lane_w for k in range(road.n_lanes)]
    oncoming = [road.two_way and k < road.n_lanes // 2 for k in range(road.n_lanes)]
    occ: dict = {k: [] for k in range(road.n_lanes)}
    occ["l"], occ["r"] = [], []

    def add_box(kind: str, key, X: float, front: bool, z_lo: float) -> None:
        if kind == "car":
            w, h, L = rng.uniform(1.65, 1.9), rng.uniform(1.38, 1.62), rng.uniform(3.9, 4.9)
            rgb = _pick(rng, CAR_COLORS)
        elif kind == "truck":
            w, h, L = rng.uniform(2.3, 2.55), rng.uniform(2.9, 3.9), rng.uniform(6.5, 10.0)
            rgb = _pick(rng, [(235, 235, 235), (200, 40, 30), (40, 70, 150), (230, 200, 40), (60, 110, 60)])
        elif kind == "bus":
            w, h, L = 2.55, rng.uniform(3.0, 3.3), rng.uniform(11, 13)
            rgb = _pick(rng, [(220, 40, 35), (235, 200, 40), (230, 230, 225), (40, 120, 80), (60, 100, 180)])
        else:
            w, h, L = 2.65, rng.uniform(3.3, 3.6), rng.uniform(22, 32)
            rgb = _pick(rng, [(235, 235, 230), (230, 200, 30), (200, 30, 35), (60, 110, 190)])
        z = rng.uniform(z_lo, max(z_lo + 1, z_max))
        p = _vehicle_paints(rng, pal, rgb, front)
        cargo = _jit(rng, _pick(rng, [(220, 220, 215), (180, 180, 175), (140, 60, 40)]), 10)
        p.update(cargo=pal.add(cargo, "metal"), cargo_side=pal.add(cargo, "metal", 0.8),
                 stripe=pal.add(_jit(rng, _pick(rng, [(40, 40, 45), (200, 30, 30), (240, 240, 240)]), 8), "flat"),
                 display=pal.add((240, 160, 30), "flat"))
        X = X + rng.uniform(-0.3, 0.3)
        if not _place(occ[key], z, z + L):
            return
        if kind == "car":
            sc.add(2, z, partial(_draw_car, X=X, z=z, w=w, h=h, L=L, front=front, p=p))
        else:
            label = {"truck": TRUCK, "bus": BUS, "train": TRAIN}[kind]
            sc.add(2, z, partial(_draw_truck, X=X, z=z, w=w, h=h, L=L, front=front, p=p, label=label))
        sc.add(1, z + L, partial(_draw_shadow, X=X, z=z, w=w, L=L, strength=0.45))

    for kind, prob in (("train", 0.15), ("bus", 0.28), ("truck", 0.32)):
        if rng.random() < prob:
            k = int(rng.integers(road.n_lanes))
            add_box(kind, k, lanes[k], oncoming[k], 12.0 if k == road.ego_lane else 7.0)
    for _ in range(int(rng.integers(0, 6))):
        k = int(rng.integers(road.n_lanes))
        add_box("car", k, lanes[k], oncoming[k], 9.0 if k == road.ego_lane else 4.5)
    for s, key in ((-1, "l"), (1, "r")):
        parking = (road.lane0 - road.X_l) if s < 0 else (road.X_r - road.lane0 - road.n_lanes * road.lane_w)
        if parking < 1.0:
            continue
        X = (road.X_l + 1.1) if s < 0 else (road.X_r - 1.1)
        front = bool(s < 0 and road.two_way)
        for _ in range(int(rng.integers(2, 9))):
            add_box("truck" if rng.random() < 0.06 else "car", key, X, front, 3.5)


def _person_paints(rng: _Draws, pal: _Palette) -> dict:
    return {"top": pal.add(_jit(rng, _pick(rng, CLOTH_COLORS), 10), "cloth"),
            "bottom": pal.add(_jit(rng, _pick(rng, TROUSER_COLORS), 8), "cloth"),
            "skin": pal.add(_jit(rng, _pick(rng, SKIN_COLORS), 6), "flat"),
            "hair": pal.add(_jit(rng, _pick(rng, HAIR_COLORS), 6), "flat")}


def _sample_people(rng: _Draws, sc: _Scene, z_max: float) -> None:
    road = sc.road
    for _ in range(int(rng.integers(1, 10))):
        s = int(_pick(rng, [-1, 1]))
        side = sc.sides[s]
        X = side["edge"] + s * rng.uniform(0.5, max(side["sw"] - 0.3, 0.6))
        h = rng.uniform(1.0, 1.4) if rng.random() < 0.1 else rng.uniform(1.55, 1.95)
        z = rng.uniform(4.5, 0.7 * z_max)
        p = _person_paints(rng, sc.pal)
        sc.add(2, z, partial(_draw_person, X=X, z=z, h=h, label=PERSON, p=p, apart=bool(rng.random() < 0.5)))
    if road.crosswalk is not None and rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 5))):
            X, z = rng.uniform(road.X_l, road.X_r), road.crosswalk + rng.uniform(0.3, 3.2)
            sc.add(2, z, partial(_draw_person, X=X, z=z, h=rng.uniform(1.55, 1.95), label=PERSON,
                                 p=_person_paints(rng, sc.pal), apart=True))


def _cycle_paints(rng: _Draws, pal: _Palette, motor: bool) -> dict:
    return {"dark": pal.add((25, 25, 28), "flat"), "spokes": pal.add(_jit(rng, (90, 90, 95), 10), "metal"),
            "frame": pal.add(_jit(rng, _pick(rng, CAR_COLORS if motor else CLOTH_COLORS), 10), "metal"),
            "lamp": pal.add((200, 30, 25), "flat")}


def _sample_cycles(rng: _Draws, sc: _Scene, z_max: float) -> None:
    road, pal = sc.road, sc.pal
    if rng.random() < 0.45:
        for _ in range(int(rng.integers(1, 3))):
            motor = bool(rng.random() < 0.4)
            side = bool(rng.random() < 0.35)
            if side:
                X, z = rng.uniform(road.X_l + 1, road.X_r - 1), rng.uniform(6, 35)
            else:
                if rng.random() < 0.6:  # along the right edge of the lanes
                    X = road.lane0 + road.n_lanes * road.lane_w - rng.uniform(0.6, 1.2)
                else:
                    X = rng.uniform(road.lane0 + 0.8, road.X_r - 0.8)
                z = rng.uniform(5.5, 45)
            rider = _person_paints(rng, pal)
            if motor or rng.random() < 0.5:
                helmet = _pick(rng, [(30, 30, 30), (230, 230, 230), (200, 30, 30), (40, 60, 150)])
                rider["hair"] = pal.add(_jit(rng, helmet, 8), "metal")
            sc.add(2, z, partial(_draw_cycle, X=X, z=z, motor=motor, side=side, d=int(_pick(rng, [-1, 1])),
                                 rider=rider, p=_cycle_paints(rng, pal, motor)))
    if rng.random() < 0.4:  # parked two-wheelers, perpendicular to the curb (seen from the side)
        s = int(_pick(rng, [-1, 1]))
        side = sc.sides[s]
        z0, motor = rng.uniform(6, 30), bool(rng.random() < 0.35)
        X = side["edge"] + s * rng.uniform(0.9, max(side["sw"] - 0.8, 1.0))
        for i in range(int(rng.integers(1, 5))):
            sc.add(2, z0 + 0.7 * i, partial(_draw_cycle, X=X, z=z0 + 0.7 * i, motor=motor, side=True, d=s,
                                            rider=None, p=_cycle_paints(rng, pal, motor)))


def _pole_paints(rng: _Draws, pal: _Palette) -> dict:
    g = rng.uniform(70, 150)
    return {"pole": pal.add((g, g, g * 1.03), "metal"), "head": pal.add((g * 0.8, g * 0.8, g * 0.8), "metal")}


def _sample_poles(rng: _Draws, sc: _Scene, z_max: float) -> None:
    road, pal = sc.road, sc.pal
    for s in (-1, 1):
        if rng.random() < 0.8:
            X = sc.sides[s]["edge"] + s * 0.5
            z, step, p = rng.uniform(4, 20), rng.uniform(16, 32), _pole_paints(rng, pal)
            h = rng.uniform(6.5, 9.5)
            while z < z_max:
                sc.add(2, z, partial(_draw_pole, X=X, z=z, h=h, kind="lamp", d=-s, p=p))
                z += step
    lit = int(rng.integers(3))
    lamp_rgb = [(230, 40, 30), (240, 170, 30), (40, 230, 120)]

    def light_paints() -> dict:
        p = _pole_paints(rng, pal)
        p.update(box=pal.add(_jit(rng, _pick(rng, [(40, 40, 42), (45, 45, 45), (190, 160, 40)]), 6), "metal"),
                 lamps=[pal.add(lamp_rgb[i] if i == lit else (55, 55, 55), "flat") for i in range(3)],
                 arm=rng.uniform(2.5, 5.0))
        return p

    if road.inter is not None or rng.random() < 0.3:
        z = road.inter[0] - 0.5 if road.inter is not None else rng.uniform(10, 40)
        for s in (-1, 1):
            if rng.random() < 0.85:
                X = sc.sides[s]["edge"] + s * 0.4
                mast = bool(s > 0 and rng.random() < 0.5)
                sc.add(2, z, partial(_draw_pole, X=X, z=z, h=rng.uniform(5.5, 6.5) if mast else rng.uniform(3.0, 3.8),
                                     kind="mast" if mast else "light", d=-s, p=light_paints()))
    for _ in range(int(rng.integers(1, 5))):
        s = int(_pick(rng, [-1, 1]))
        X, z = sc.sides[s]["edge"] + s * rng.uniform(0.3, 0.7), rng.uniform(5, min(60.0, z_max))
        shape = str(_pick(rng, ["ellipse", "ellipse", "rect", "diamond", "triangle"]))
        rim, face = {
            "ellipse": _pick(rng, [((200, 30, 30), (235, 235, 235)), ((30, 70, 170), (40, 90, 190))]),
            "rect": _pick(rng, [((235, 235, 235), (30, 80, 170)), ((235, 235, 235), (40, 120, 60))]),
            "diamond": ((235, 235, 235), (235, 190, 30)),
            "triangle": ((200, 30, 30), (240, 240, 240)),
        }[shape]
        p = _pole_paints(rng, pal)
        p.update(shape=shape, size=rng.uniform(0.6, 0.9), rim=pal.add(_jit(rng, rim, 6), "flat"), face=pal.add(face, "flat"))
        sc.add(2, z, partial(_draw_pole, X=X, z=z, h=rng.uniform(2.0, 2.8), kind="sign", d=-s, p=p))


def _tree_paints(rng: _Draws, pal: _Palette) -> tuple[dict, list]:
    leaf = _jit(rng, _pick(rng, [(60, 95, 38), (75, 110, 45), (50, 80, 35), (95, 115, 50)]), 10)
    shades = [pal.add(leaf, "leaf", f) for f in (0.75, 0.95, 1.12)]
    return {"trunk": pal.add(_jit(rng, (85, 65, 50), 10), "bark")}, shades


def _tree_blobs(rng: _Draws, shades: list, R: float) -> list:
    blobs = []
    for i in range(int(rng.integers(3, 6))):
        r = R * rng.uniform(0.55, 0.9)
        blobs.append((rng.uniform(-0.6, 0.6) * R, R * 0.7 + rng.uniform(-0.4, 0.7) * R, r, shades[min(i, 2)]))
    return blobs


def _sample_greenery(rng: _Draws, sc: _Scene, z_max: float) -> None:
    inter = sc.road.inter
    for s in (-1, 1):
        side = sc.sides[s]
        outer = side["edge"] + s * side["sw"]
        if side["tw"] > 0:
            for _ in range(int(rng.integers(1, 7))):
                X, z = outer + s * rng.uniform(0.8, max(side["tw"] - 0.5, 0.9)), rng.uniform(4, z_max)
                p, shades = _tree_paints(rng, sc.pal)
                trunk, R = rng.uniform(1.5, 3.5), rng.uniform(1.5, 4.0)
                if inter is None or not inter[0] - 2 < z < inter[1] + 2:
                    sc.add(0, z, partial(_draw_tree, X=X, z=z, trunk_h=trunk, blobs=_tree_blobs(rng, shades, R), p=p))
            for _ in range(int(rng.integers(0, 4))):
                X, z = outer + s * rng.uniform(0.5, max(side["tw"], 0.6)), rng.uniform(4, z_max)
                paint = sc.pal.add(_jit(rng, (65, 100, 40), 12), "leaf")
                sc.add(0, z, partial(_draw_bush, X=X, z=z, w=rng.uniform(1, 3), h=rng.uniform(0.6, 1.6), paint=paint))
            if rng.random() < 0.55:
                fence = rng.random() < 0.55
                z0 = rng.uniform(3, 20)
                p = {"main": sc.pal.add(_jit(rng, _pick(rng, [(170, 165, 155), (150, 90, 70), (120, 120, 120)]), 10), "wall"),
                     "rail": sc.pal.add(_jit(rng, _pick(rng, [(60, 60, 62), (110, 110, 110), (40, 70, 50)]), 8), "metal"),
                     "keep": sc.pal.add(_jit(rng, (90, 100, 80), 10), "leaf"), "spacing": rng.uniform(0.15, 2.5)}
                sc.add(1, z0, partial(_draw_barrier, X=outer, z0=z0, z1=z0 + rng.uniform(10, 60),
                                      h=rng.uniform(0.9, 2.0) if fence else rng.uniform(0.8, 2.8),
                                      label=FENCE if fence else WALL, p=p))
        elif rng.random() < 0.45:
            X, z, step = outer - s * 0.8, rng.uniform(4, 15), rng.uniform(8, 16)
            p, shades = _tree_paints(rng, sc.pal)
            trunk, R = rng.uniform(2.0, 3.5), rng.uniform(1.5, 3.0)
            while z < z_max:
                if inter is None or not inter[0] - 2 < z < inter[1] + 2:
                    sc.add(2, z, partial(_draw_tree, X=X, z=z, trunk_h=trunk, blobs=_tree_blobs(rng, shades, R), p=p))
                z += step
        elif rng.random() < 0.35:
            z0 = rng.uniform(4, 30)
            fence = rng.random() < 0.5
            p = {"main": sc.pal.add(_jit(rng, _pick(rng, [(175, 170, 160), (140, 80, 65), (110, 110, 112)]), 10), "wall"),
                 "rail": sc.pal.add(_jit(rng, (70, 70, 72), 8), "metal"),
                 "keep": sc.pal.add(_jit(rng, (120, 120, 115), 10), "wall"), "spacing": rng.uniform(0.15, 1.0)}
            sc.add(1, z0, partial(_draw_barrier, X=outer - s * 0.2, z0=z0, z1=z0 + rng.uniform(6, 30),
                                  h=rng.uniform(1.0, 2.0), label=FENCE if fence else WALL, p=p))


def _sample_scene(seed_rng: np.random.Generator) -> _Scene:
    rng = _Draws(seed_rng)
    pal = _Palette()
    light = _sample_light(rng)
    cam = _Camera(v_h=float(rng.uniform(0.36, 0.5)), u_vp=float(rng.uniform(0.4, 0.6)))
    road = _sample_road(rng, pal)
    sides = _sample_sides(rng, pal, light, road)
    cross, cross_z = _sample_cross(rng, pal, light)
    sc = _Scene(cam=cam, light=light, road=road, sides=sides, cross=cross, cross_z=cross_z,
                skyline=_sample_skyline(rng, pal), noise=_sample_noise(rng), pal=pal)
    z_max = min(90.0, cross_z - 3.0)
    _sample_vehicles(rng, sc, z_max)
    _sample_people(rng, sc, z_max)
    _sample_cycles(rng, sc, z_max)
    _sample_poles(rng, sc, z_max)
    _sample_greenery(rng, sc, z_max)
    return sc


# ---------------------------------------------------------------------------------------
# Background rasterisation: skyline, ground, then facades in per-column depth order
# ---------------------------------------------------------------------------------------
def _facade_columns(fac: _Facade, s: np.ndarray) -> dict:
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


def _paint_facade(cv: _Canvas, cam: _Camera, cols: dict, z: np.ndarray, dv: np.ndarray, select: np.ndarray) -> None:
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


def _paint_ground(cv: _Canvas, sc: _Scene, du: np.ndarray, dv: np.ndarray) -> None:
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


def _paint_skyline(cv: _Canvas, sc: _Scene, U: np.ndarray, V: np.ndarray) -> None:
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


def _draw_background(cv: _Canvas, sc: _Scene) -> None:
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


# ---------------------------------------------------------------------------------------
# Shading
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _interp(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell index and smoothstep weight (float32) of n pixel centres on a grid of ``cells``."""
    t = (np.arange(n, dtype=np.float64) + 0.5) * ((cells - 1) / n)
    i = np.minimum(t.astype(np.int64), cells - 2)
    w = t - i
    return i, (w * w * (3 - 2 * w)).astype(np.float32)


def _value_noise(grid: np.ndarray, H: int, W: int, rows: int | None = None) -> np.ndarray:
    """Smooth noise from a coarse grid at normalised pixel centres (first ``rows`` rows)."""
    gh, gw = grid.shape
    iy, wy = _interp(H, gh)
    ix, wx = _interp(W, gw)
    if rows is not None:
        iy, wy = iy[:rows], wy[:rows]
    wy = wy[:, None]
    g = grid[iy] * (1 - wy) + grid[iy + 1] * wy  # (rows, gw)
    return np.take(g, ix, axis=1) * (1 - wx) + np.take(g, ix + 1, axis=1) * wx


def _octaves(low: np.ndarray, high: np.ndarray, w_low: float) -> np.ndarray:
    """Two-octave grid: ``low`` resampled to the shape of ``high`` and mixed with it."""
    return w_low * _value_noise(low, *high.shape) + (1 - w_low) * high


def _sky(sc: _Scene, H: int, W: int, sky: np.ndarray, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Colours (N x 3, 0..1) of the sky pixels ``sky`` (mask over the first rows): gradient and clouds."""
    light, nz = sc.light, sc.noise
    rows = sky.shape[0]
    r, c = np.nonzero(sky)
    t = np.clip((np.arange(rows, dtype=np.float32) + 0.5) / (H * max(sc.cam.v_h, 1e-3)), 0, 1) ** 1.5
    t = t[r][:, None]
    cloud = _value_noise(_octaves(nz["k1"], nz["k2"], 0.65), H, W, rows)[r, c]
    alpha = np.clip((cloud - (0.55 - 0.7 * light.cloudiness)) * 2.5, 0, 1) * min(1.0, light.cloudiness * 1.5)
    alpha = (alpha * (0.9 + 0.1 * fine[r, c]))[:, None]
    grad = light.sky_top * (1 - t) + light.sky_horizon * t
    return grad * (1 - alpha) + light.cloud_rgb * (0.85 + 0.15 * coarse[r, c][:, None]) * alpha


def _shade(cv: _Canvas, sc: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Photo-like RGB from the paint buffer: textures, ground shadows, sky, global light."""
    H, W, nz, light = cv.H, cv.W, sc.noise, sc.light
    grain = np.frombuffer(rng.bytes(H * W), dtype=np.uint8).reshape(H, W).astype(np.float32) * np.float32(2 / 255) - 1
    coarse = _value_noise(_octaves(nz["c1"], nz["c2"], 0.6), H, W)
    fine = 0.6 * _value_noise(nz["f1"], H, W) + 0.4 * grain
    rgb_tab, tex_tab = sc.pal.tables()
    rgb_tab *= light.tint * np.float32(light.brightness * 255)
    paint = cv.paint
    gain = 1 + np.take(tex_tab[:, 0], paint) * coarse + np.take(tex_tab[:, 1], paint) * fine
    if not light.overcast:
        gain *= np.where(np.take(_GROUND_CLASSES, cv.label), cv.shadow, np.float32(1.0))
    img = np.take(rgb_tab, paint, axis=0)
    img *= gain[..., None]
    rows = min(max(math.ceil(sc.cam.v_h * H), 0), H)
    sky = paint[:rows] == SKY_PAINT
    if sky.any():
        img[:rows][sky] = _sky(sc, H, W, sky, coarse, fine) * (light.tint * np.float32(light.brightness * 255))
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def render_street_scene(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Render scene ``seed`` at ``height`` x ``width``: (image HxWx3 uint8, train ids HxW uint8)."""
    rng = np.random.default_rng(seed)
    sc = _sample_scene(rng)
    cv = _Canvas(height, width)
    _draw_background(cv, sc)
    for *_, draw in sorted(sc.sprites, key=lambda item: item[:3]):
        draw(cv, sc.cam)
    return _shade(cv, sc, rng), cv.label


# ---------------------------------------------------------------------------------------
# Data set with in-memory and on-disk cache
# ---------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$RLASC_CACHE/streets`` if set, else ``~/.cache/rlasc/streets``."""
    env = os.environ.get("RLASC_CACHE")
    return Path(env) / "streets" if env else Path.home() / ".cache" / "rlasc" / "streets"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX flock); a no-op where unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is shared by users of the folder
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def render_split(split: str, size: int, height: int, width: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Render items 0..size-1 of a split: (images NxHxWx3 uint8, labels NxHxW uint8)."""
    from tqdm.auto import tqdm

    images = np.empty((size, height, width, 3), dtype=np.uint8)
    labels = np.empty((size, height, width), dtype=np.uint8)
    for i in tqdm(range(size), desc=f"streets/{split} {height}x{width}", disable=not progress or None, leave=False):
        images[i], labels[i] = render_street_scene(SPLIT_OFFSET[split] + i, height, width)
    return images, labels


class StreetsDataset(Dataset):
    """Procedural street scenes: items ``(image float32 3xHxW in [0, 1], labels int64 HxW)``.

    Splits use disjoint seed ranges (``SPLIT_OFFSET``). All items are rendered once, on first
    access, and kept as uint8 arrays; with ``disk_cache`` they are also stored as a ``.npy``
    pair keyed by (split, size, H, W, GENERATOR_VERSION) and memory-mapped on later loads.
    Rendering runs under a file lock, so DataLoader workers or ranks render it only once.
    """

    def __init__(self, split: str = "train", height: int = 64, width: int = 128, size: int | None = None,
                 cache_dir: str | os.PathLike | None = None, disk_cache: bool = True, progress: bool = True) -> None:
        if split not in SPLIT_OFFSET:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_OFFSET)}")
        size = DEFAULT_SIZES[split] if size is None else int(size)
        if size < 0 or size > SPLIT_OFFSET["val"]:
            raise ValueError(f"size must be in [0, {SPLIT_OFFSET['val']}], got {size}")
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        self.split, self.height, self.width, self.size = split, int(height), int(width), size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.disk_cache, self.progress = disk_cache, progress
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self.size

    @property
    def cache_paths(self) -> tuple[Path, Path]:
        stem = f"streets_v{GENERATOR_VERSION}_{self.split}_{self.size}_{self.height}x{self.width}"
        return self.cache_dir / f"{stem}_images.npy", self.cache_dir / f"{stem}_labels.npy"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All items as uint8 arrays (NxHxWx3, NxHxW), rendering or loading them if needed."""
        if self._images is None:
            self._images, self._labels = self._load_or_render()
        return self._images, self._labels

    def _load_or_render(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.disk_cache:
            return render_split(self.split, self.size, self.height, self.width, self.progress)
        img_path, lab_path = self.cache_paths
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.cache_dir / f"{img_path.name}.lock"):
            cached = self._read_cache()
            if cached is not None:
                return cached
            images, labels = render_split(self.split, self.size, self.height, self.width, self.progress)
            _save_atomic(lab_path, labels)
            _save_atomic(img_path, images)
            return images, labels

    def _read_cache(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Memory-mapped cached arrays, or None when missing or not of the expected shape."""
        img_path, lab_path = self.cache_paths
        if not (img_path.exists() and lab_path.exists()):
            return None
        try:
            images, labels = np.load(img_path, mmap_mode="r"), np.load(lab_path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        shape = (self.size, self.height, self.width)
        if images.shape != (*shape, 3) or labels.shape != shape or images.dtype != np.uint8 or labels.dtype != np.uint8:
            return None
        return images, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        images, labels = self.arrays()
        image = torch.from_numpy(np.array(images[index])).permute(2, 0, 1).float().div_(255.0)
        return image, torch.from_numpy(labels[index].astype(np.int64))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.disk_cache:  # workers started with spawn re-open the memory-mapped cache
            state["_images"] = state["_labels"] = None
        return state
