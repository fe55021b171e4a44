"""Paints and colours: the per-scene palette, material textures, colour tables and jitter."""
from __future__ import annotations

import functools

import numpy as np

from .scene import Draws

# Texture amplitudes (coarse value noise, fine noise) per material.
TEX: dict[str, tuple[float, float]] = {
    "flat": (0.02, 0.02), "asphalt": (0.08, 0.07), "paving": (0.06, 0.08), "wall": (0.06, 0.05),
    "glass": (0.30, 0.05), "leaf": (0.22, 0.42), "grass": (0.20, 0.25), "metal": (0.03, 0.03),
    "cloth": (0.05, 0.06), "bark": (0.10, 0.20),
}
SKY_PAINT = 0


class Palette:
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


def jit(rng: Draws, rgb, amount: float = 12.0) -> tuple[float, float, float]:
    """Colour with per-channel jitter and a random brightness factor."""
    r0, r1, r2, r3 = rng.random(), rng.random(), rng.random(), rng.random()
    f = 0.92 + 0.16 * r3
    return ((rgb[0] + amount * (2 * r0 - 1)) * f, (rgb[1] + amount * (2 * r1 - 1)) * f, (rgb[2] + amount * (2 * r2 - 1)) * f)


@functools.lru_cache(maxsize=32)
def _table(options: tuple) -> np.ndarray:
    return np.array(options, dtype=np.float64)


def colours(r: np.ndarray, options, amount: float) -> np.ndarray:
    """Colours from uniforms r (n, 5): a choice among ``options``, channel jitter, brightness."""
    options = _table(tuple(options))
    base = options[(r[:, 0] * len(options)).astype(np.int64)]
    return (base + amount * (2 * r[:, 1:4] - 1)) * (0.92 + 0.16 * r[:, 4:5])


def jit_many(rng: Draws, options, n: int, amount: float) -> np.ndarray:
    """n colours drawn from ``options`` (K, 3) with jitter: (n, 3)."""
    return colours(rng.random((n, 5)), options, amount)


def pick(rng: Draws, options):
    """One of ``options``, uniformly."""
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
