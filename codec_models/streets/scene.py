"""The scene description (resolution-free) and its random source.

A scene is sampled once from its seed (:mod:`.layout`, :mod:`.objects`) into these records and
then rasterised at any size (:mod:`.background`, :mod:`.painters`, :mod:`.shading`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .camera import Camera

if TYPE_CHECKING:
    from .palette import Palette


class Draws:
    """The scene's ``numpy.random.Generator`` with fast scalar draws (taken from it in blocks).

    Scalar calls (``size=None``) pop pre-drawn numbers; array calls go to the generator. The
    sequence depends on the seed only, never on the output resolution.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._buf: list[float] = []

    def random(self, size=None, dtype=np.float64):
        """A uniform in [0, 1) (scalar, from the buffer) or an array of them."""
        if size is not None:
            return self.rng.random(size, dtype=dtype)
        if not self._buf:
            self._buf = self.rng.random(256).tolist()
            self._buf.reverse()
        return self._buf.pop()

    def uniform(self, low: float = 0.0, high: float = 1.0, size=None):
        """A uniform in [low, high) (scalar, from the buffer) or an array of them."""
        if size is not None:
            return self.rng.uniform(low, high, size)
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int | None = None) -> int:
        """An integer in [low, high) (or [0, low)), from one buffered uniform."""
        if high is None:
            low, high = 0, low
        return low + int(self.random() * (high - low))


@dataclass
class Facade:
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
class Light:
    """Per-scene light: weather, brightness, tint, sun side, shadow strength, sky and clouds."""

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
class Road:
    """Road geometry (lateral edges, lanes, markings, intersection, crosswalk) and its paints."""

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
class Scene:
    """A sampled scene: camera, light, road, street sides, background, palette and sprites."""

    cam: Camera
    light: Light
    road: Road
    sides: dict  # -1 / +1 -> dict(sw, tw, outer label, near/far facades)
    cross: Facade | None
    cross_z: float
    skyline: dict
    noise: dict
    pal: Palette
    sprites: list = field(default_factory=list)  # (layer, -z, order, draw(canvas, cam))

    def add(self, layer: int, z: float, fn: Callable) -> None:
        """Add a sprite: ``fn(canvas, camera)`` paints one object; sprites are drawn by (layer, far to near)."""
        self.sprites.append((layer, -z, len(self.sprites), fn))
