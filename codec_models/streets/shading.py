"""Shading: value noise, textures, ground shadows, the sky gradient with clouds, global light.

Turns the canvas' paint buffer into the photo-like RGB image.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .canvas import Canvas
from .palette import SKY_PAINT
from .scene import Scene
from .trainids import ROAD, SIDEWALK, TERRAIN

_GROUND_CLASSES = np.zeros(256, dtype=bool)
_GROUND_CLASSES[[ROAD, SIDEWALK, TERRAIN]] = True


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


def _sky(sc: Scene, H: int, W: int, sky: np.ndarray, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
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


def shade(cv: Canvas, sc: Scene, rng: np.random.Generator) -> np.ndarray:
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
