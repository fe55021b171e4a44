"""Scene sampling, part 1: light, camera, road, facades, cross street, skyline and noise grids.

:func:`sample_scene` draws a whole scene from its seed in a fixed order; the objects along the
street come from :mod:`.objects`. Every draw comes from the one :class:`~.scene.Draws` source,
so the scene (and its draw sequence) depends on the seed only.
"""
from __future__ import annotations

import math

import numpy as np

from .camera import Camera
from .objects import sample_cycles, sample_greenery, sample_people, sample_poles, sample_vehicles
from .palette import BUILDING_COLORS, GLASS_COLORS, LEAF_COLORS, SHOP_COLORS, Palette, colours, jit, jit_many, pick
from .scene import Draws, Facade, Light, Road, Scene
from .trainids import SIDEWALK, TERRAIN


def sample_light(rng: Draws) -> Light:
    """Weather and light: overcast or sunny, sun side, tint, sky and cloud colours."""
    overcast = bool(rng.random() < 0.3)
    warm = rng.uniform(-1.0, 1.0)
    sun_side = int(pick(rng, [-1, 1]))
    lit, dim = (rng.uniform(0.9, 1.0), rng.uniform(0.8, 0.9)) if overcast else (rng.uniform(1.0, 1.1), rng.uniform(0.6, 0.75))
    if overcast:
        top, hor = jit(rng, (150, 156, 168), 10), jit(rng, (205, 207, 212), 8)
        cloud = np.array(jit(rng, (185, 187, 192), 10))
    else:
        top, hor = jit(rng, (55, 105, 185), 15), jit(rng, (180, 205, 232), 10)
        cloud = np.array(jit(rng, (240, 240, 245), 5))
    return Light(
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


def sample_road(rng: Draws, pal: Palette) -> Road:
    """Lanes, parking strips, markings, intersection, crosswalk and the ground paints."""
    lane_w = rng.uniform(2.9, 3.5)
    n_lanes = int(pick(rng, [1, 2, 2, 2, 3, 4]))
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
    side_rgb = jit(rng, pick(rng, [(168, 168, 162), (186, 176, 156), (160, 125, 112), (140, 140, 140)]), 8)
    paints = {
        "road": pal.add(asphalt, "asphalt"),
        "mark": pal.add(np.array(asphalt) * 0.25 + np.array((220, 220, 210)) * 0.75, "flat"),
        "side": pal.add(side_rgb, "paving"),
        "joint": pal.add(side_rgb, "paving", 0.8),
        "curb": pal.add(jit(rng, (178, 178, 172), 6), "paving"),
        "terrain": pal.add(jit(rng, pick(rng, [(105, 135, 55), (120, 140, 60), (150, 145, 95), (130, 112, 85)]), 10), "grass"),
    }
    return Road(X_l, X_r, lane0, lane_w, n_lanes, two_way, ego, dashed, solid, crosswalk, inter, paints)


def _segments(rng: Draws, pal: Palette, X: float, z_end: float, gain: float, gaps: bool,
              skip: tuple[float, float] | None, haze: float, height_scale: float, lengths=(6.0, 28.0)) -> Facade:
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
    base = colours(R[:, 0:5], BUILDING_COLORS, 12)
    leaf = colours(R[:, 5:10], LEAF_COLORS, 12) * (1 - haze) + sky_mix
    ids = pal.add_many(np.concatenate([tint(base), leaf, tint(colours(R[:, 10:15], GLASS_COLORS, 10)),
                                       tint(colours(R[:, 15:20], SHOP_COLORS, 10)),
                                       tint(base * (0.7 + 0.15 * R[:, 20:21]))]),
                       ["wall"] * n + ["leaf"] * n + ["glass"] * 2 * n + ["wall"] * n).reshape(5, n)
    walls = np.where(veg, ids[1], ids[0])
    return Facade(
        X=X, starts=arr[:, 0].copy(), ends=arr[:, 1].copy(), kind=arr[:, 2].astype(np.int8), top=arr[:, 3].copy(),
        wall=walls, win=np.where(veg, walls, ids[2]), shop=np.where(veg, walls, ids[3]), cornice=np.where(veg, walls, ids[4]),
        sx=2.2 + 1.8 * R[:, 21], fh=2.9 + 0.7 * R[:, 22], wf=0.35 + 0.3 * R[:, 23], hf=0.4 + 0.22 * R[:, 24],
        gf=np.where(R[:, 25] < 0.6, 3.5 + R[:, 25] / 0.6, 0.8),  # shop floor height (60 %) or none
        roof=np.where(R[:, 26] < 0.2, 1.0 + 2.0 * R[:, 26] / 0.2, 0.0), phase=2 * np.pi * R[:, 27],
    )


def sample_sides(rng: Draws, pal: Palette, light: Light, road: Road) -> dict:
    """Both sides of the street: sidewalk, optional terrain strip, near and far facade rows."""
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


def sample_cross(rng: Draws, pal: Palette, light: Light) -> tuple[Facade | None, float]:
    """Optional building row across the street end: (facade, depth) or (None, inf)."""
    if rng.random() >= 0.3:
        return None, math.inf
    z_c = rng.uniform(45, 120)
    fac = _segments(rng, pal, 0.0, 1.0, float(np.mean(list(light.facade_gain.values()))), False, None, 0.1, 1.0)
    fac.starts[:] = -1e9
    fac.ends[:] = 1e9
    fac.top[:] = rng.uniform(10, 28)
    fac.roof[:] = 0.0
    return fac, z_c


def sample_skyline(rng: Draws, pal: Palette) -> dict:
    """Distant skyline along the horizon: column breaks, heights, buildings or trees."""
    widths = rng.uniform(0.02, 0.12, 40)
    breaks = np.cumsum(widths)
    n = int(np.searchsorted(breaks, 1.0)) + 1
    veg = rng.random(n) < 0.3
    heights = np.where(veg, rng.uniform(0.01, 0.035, n), rng.uniform(0.015, 0.09, n))
    haze = np.array((190.0, 205.0, 225.0)) * 0.45
    leaf = pal.add_many(jit_many(rng, [(62, 95, 40)], n, 10) * 0.55 + haze, "leaf")
    wall = pal.add_many(jit_many(rng, BUILDING_COLORS, n, 10) * 0.55 + haze, "wall")
    return {"breaks": breaks[:n], "veg": veg, "heights": heights, "paints": np.where(veg, leaf, wall),
            "phase": rng.uniform(0, 6, n)}


def sample_noise(rng: Draws) -> dict:
    """Coarse random grids of the value-noise textures and clouds."""
    grid = lambda h, w: rng.uniform(-1.0, 1.0, (h, w)).astype(np.float32)  # noqa: E731
    return {"c1": grid(5, 10), "c2": grid(16, 32), "f1": grid(64, 128), "k1": grid(4, 10), "k2": grid(12, 30)}


def sample_scene(seed_rng: np.random.Generator) -> Scene:
    """The whole scene from its seed's generator, in a fixed order of draws."""
    rng = Draws(seed_rng)
    pal = Palette()
    light = sample_light(rng)
    cam = Camera(v_h=float(rng.uniform(0.36, 0.5)), u_vp=float(rng.uniform(0.4, 0.6)))
    road = sample_road(rng, pal)
    sides = sample_sides(rng, pal, light, road)
    cross, cross_z = sample_cross(rng, pal, light)
    sc = Scene(cam=cam, light=light, road=road, sides=sides, cross=cross, cross_z=cross_z,
                skyline=sample_skyline(rng, pal), noise=sample_noise(rng), pal=pal)
    z_max = min(90.0, cross_z - 3.0)
    sample_vehicles(rng, sc, z_max)
    sample_people(rng, sc, z_max)
    sample_cycles(rng, sc, z_max)
    sample_poles(rng, sc, z_max)
    sample_greenery(rng, sc, z_max)
    return sc
