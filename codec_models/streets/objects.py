"""Scene sampling, part 2: the objects along the street, added to the scene as sprites.

Vehicles (cars, trucks, buses, trams), pedestrians, two-wheelers with riders, poles (lamps,
traffic lights, signs) and greenery (trees, bushes, walls and fences). Each sampler draws its
parameters and colours and registers a painter from :mod:`.painters` with its depth.
"""
from __future__ import annotations

from functools import partial

from .painters import (draw_barrier, draw_bush, draw_car, draw_cycle, draw_person, draw_pole, draw_shadow, draw_tree,
                       draw_truck)
from .palette import CAR_COLORS, CLOTH_COLORS, HAIR_COLORS, SKIN_COLORS, TROUSER_COLORS, Palette, jit, pick
from .scene import Draws, Scene
from .trainids import BUS, FENCE, PERSON, TRAIN, TRUCK, WALL


def _vehicle_paints(rng: Draws, pal: Palette, rgb, front: bool) -> dict:
    rgb = jit(rng, rgb, 8)
    return {
        "body": pal.add(rgb, "metal"), "side": pal.add(rgb, "metal", 0.78), "roof": pal.add(rgb, "metal", 1.08),
        "glass": pal.add(jit(rng, (45, 55, 65), 8), "glass"), "dark": pal.add(jit(rng, (28, 28, 30), 4), "flat"),
        "hub": pal.add((120, 120, 125), "metal"), "plate": pal.add((225, 225, 215), "flat"),
        "lamp": pal.add((245, 240, 220) if front else (200, 30, 25), "flat"),
    }


def _place(occupied: list, z0: float, z1: float) -> bool:
    if any(z0 < b + 1.5 and a - 1.5 < z1 for a, b in occupied):
        return False
    occupied.append((z0, z1))
    return True


def sample_vehicles(rng: Draws, sc: Scene, z_max: float) -> None:
    """Trains, buses, trucks and cars in the lanes, parked cars (and vans) along the curbs."""
    road, pal = sc.road, sc.pal
    lanes = [road.lane0 + (k + 0.5) * road.lane_w for k in range(road.n_lanes)]
    oncoming = [road.two_way and k < road.n_lanes // 2 for k in range(road.n_lanes)]
    occ: dict = {k: [] for k in range(road.n_lanes)}
    occ["l"], occ["r"] = [], []

    def add_box(kind: str, key, X: float, front: bool, z_lo: float) -> None:
        if kind == "car":
            w, h, L = rng.uniform(1.65, 1.9), rng.uniform(1.38, 1.62), rng.uniform(3.9, 4.9)
            rgb = pick(rng, CAR_COLORS)
        elif kind == "truck":
            w, h, L = rng.uniform(2.3, 2.55), rng.uniform(2.9, 3.9), rng.uniform(6.5, 10.0)
            rgb = pick(rng, [(235, 235, 235), (200, 40, 30), (40, 70, 150), (230, 200, 40), (60, 110, 60)])
        elif kind == "bus":
            w, h, L = 2.55, rng.uniform(3.0, 3.3), rng.uniform(11, 13)
            rgb = pick(rng, [(220, 40, 35), (235, 200, 40), (230, 230, 225), (40, 120, 80), (60, 100, 180)])
        else:
            w, h, L = 2.65, rng.uniform(3.3, 3.6), rng.uniform(22, 32)
            rgb = pick(rng, [(235, 235, 230), (230, 200, 30), (200, 30, 35), (60, 110, 190)])
        z = rng.uniform(z_lo, max(z_lo + 1, z_max))
        p = _vehicle_paints(rng, pal, rgb, front)
        cargo = jit(rng, pick(rng, [(220, 220, 215), (180, 180, 175), (140, 60, 40)]), 10)
        p.update(cargo=pal.add(cargo, "metal"), cargo_side=pal.add(cargo, "metal", 0.8),
                 stripe=pal.add(jit(rng, pick(rng, [(40, 40, 45), (200, 30, 30), (240, 240, 240)]), 8), "flat"),
                 display=pal.add((240, 160, 30), "flat"))
        X = X + rng.uniform(-0.3, 0.3)
        if not _place(occ[key], z, z + L):
            return
        if kind == "car":
            sc.add(2, z, partial(draw_car, X=X, z=z, w=w, h=h, L=L, front=front, p=p))
        else:
            label = {"truck": TRUCK, "bus": BUS, "train": TRAIN}[kind]
            sc.add(2, z, partial(draw_truck, X=X, z=z, w=w, h=h, L=L, front=front, p=p, label=label))
        sc.add(1, z + L, partial(draw_shadow, X=X, z=z, w=w, L=L, strength=0.45))

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


def _person_paints(rng: Draws, pal: Palette) -> dict:
    return {"top": pal.add(jit(rng, pick(rng, CLOTH_COLORS), 10), "cloth"),
            "bottom": pal.add(jit(rng, pick(rng, TROUSER_COLORS), 8), "cloth"),
            "skin": pal.add(jit(rng, pick(rng, SKIN_COLORS), 6), "flat"),
            "hair": pal.add(jit(rng, pick(rng, HAIR_COLORS), 6), "flat")}


def sample_people(rng: Draws, sc: Scene, z_max: float) -> None:
    """Pedestrians on the sidewalks and, sometimes, on the crosswalk."""
    road = sc.road
    for _ in range(int(rng.integers(1, 10))):
        s = int(pick(rng, [-1, 1]))
        side = sc.sides[s]
        X = side["edge"] + s * rng.uniform(0.5, max(side["sw"] - 0.3, 0.6))
        h = rng.uniform(1.0, 1.4) if rng.random() < 0.1 else rng.uniform(1.55, 1.95)
        z = rng.uniform(4.5, 0.7 * z_max)
        p = _person_paints(rng, sc.pal)
        sc.add(2, z, partial(draw_person, X=X, z=z, h=h, label=PERSON, p=p, apart=bool(rng.random() < 0.5)))
    if road.crosswalk is not None and rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 5))):
            X, z = rng.uniform(road.X_l, road.X_r), road.crosswalk + rng.uniform(0.3, 3.2)
            sc.add(2, z, partial(draw_person, X=X, z=z, h=rng.uniform(1.55, 1.95), label=PERSON,
                                 p=_person_paints(rng, sc.pal), apart=True))


def _cycle_paints(rng: Draws, pal: Palette, motor: bool) -> dict:
    return {"dark": pal.add((25, 25, 28), "flat"), "spokes": pal.add(jit(rng, (90, 90, 95), 10), "metal"),
            "frame": pal.add(jit(rng, pick(rng, CAR_COLORS if motor else CLOTH_COLORS), 10), "metal"),
            "lamp": pal.add((200, 30, 25), "flat")}


def sample_cycles(rng: Draws, sc: Scene, z_max: float) -> None:
    """Bicycles and motorcycles with riders on the road, parked two-wheelers on a sidewalk."""
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
                helmet = pick(rng, [(30, 30, 30), (230, 230, 230), (200, 30, 30), (40, 60, 150)])
                rider["hair"] = pal.add(jit(rng, helmet, 8), "metal")
            sc.add(2, z, partial(draw_cycle, X=X, z=z, motor=motor, side=side, d=int(pick(rng, [-1, 1])),
                                 rider=rider, p=_cycle_paints(rng, pal, motor)))
    if rng.random() < 0.4:  # parked two-wheelers, perpendicular to the curb (seen from the side)
        s = int(pick(rng, [-1, 1]))
        side = sc.sides[s]
        z0, motor = rng.uniform(6, 30), bool(rng.random() < 0.35)
        X = side["edge"] + s * rng.uniform(0.9, max(side["sw"] - 0.8, 1.0))
        for i in range(int(rng.integers(1, 5))):
            sc.add(2, z0 + 0.7 * i, partial(draw_cycle, X=X, z=z0 + 0.7 * i, motor=motor, side=True, d=s,
                                            rider=None, p=_cycle_paints(rng, pal, motor)))


def _pole_paints(rng: Draws, pal: Palette) -> dict:
    g = rng.uniform(70, 150)
    return {"pole": pal.add((g, g, g * 1.03), "metal"), "head": pal.add((g * 0.8, g * 0.8, g * 0.8), "metal")}


def sample_poles(rng: Draws, sc: Scene, z_max: float) -> None:
    """Street lamps, traffic lights (on poles or mast arms) at intersections, traffic signs."""
    road, pal = sc.road, sc.pal
    for s in (-1, 1):
        if rng.random() < 0.8:
            X = sc.sides[s]["edge"] + s * 0.5
            z, step, p = rng.uniform(4, 20), rng.uniform(16, 32), _pole_paints(rng, pal)
            h = rng.uniform(6.5, 9.5)
            while z < z_max:
                sc.add(2, z, partial(draw_pole, X=X, z=z, h=h, kind="lamp", d=-s, p=p))
                z += step
    lit = int(rng.integers(3))
    lamp_rgb = [(230, 40, 30), (240, 170, 30), (40, 230, 120)]

    def light_paints() -> dict:
        p = _pole_paints(rng, pal)
        p.update(box=pal.add(jit(rng, pick(rng, [(40, 40, 42), (45, 45, 45), (190, 160, 40)]), 6), "metal"),
                 lamps=[pal.add(lamp_rgb[i] if i == lit else (55, 55, 55), "flat") for i in range(3)],
                 arm=rng.uniform(2.5, 5.0))
        return p

    if road.inter is not None or rng.random() < 0.3:
        z = road.inter[0] - 0.5 if road.inter is not None else rng.uniform(10, 40)
        for s in (-1, 1):
            if rng.random() < 0.85:
                X = sc.sides[s]["edge"] + s * 0.4
                mast = bool(s > 0 and rng.random() < 0.5)
                sc.add(2, z, partial(draw_pole, X=X, z=z, h=rng.uniform(5.5, 6.5) if mast else rng.uniform(3.0, 3.8),
                                     kind="mast" if mast else "light", d=-s, p=light_paints()))
    for _ in range(int(rng.integers(1, 5))):
        s = int(pick(rng, [-1, 1]))
        X, z = sc.sides[s]["edge"] + s * rng.uniform(0.3, 0.7), rng.uniform(5, min(60.0, z_max))
        shape = str(pick(rng, ["ellipse", "ellipse", "rect", "diamond", "triangle"]))
        rim, face = {
            "ellipse": pick(rng, [((200, 30, 30), (235, 235, 235)), ((30, 70, 170), (40, 90, 190))]),
            "rect": pick(rng, [((235, 235, 235), (30, 80, 170)), ((235, 235, 235), (40, 120, 60))]),
            "diamond": ((235, 235, 235), (235, 190, 30)),
            "triangle": ((200, 30, 30), (240, 240, 240)),
        }[shape]
        p = _pole_paints(rng, pal)
        p.update(shape=shape, size=rng.uniform(0.6, 0.9), rim=pal.add(jit(rng, rim, 6), "flat"), face=pal.add(face, "flat"))
        sc.add(2, z, partial(draw_pole, X=X, z=z, h=rng.uniform(2.0, 2.8), kind="sign", d=-s, p=p))


def _tree_paints(rng: Draws, pal: Palette) -> tuple[dict, list]:
    leaf = jit(rng, pick(rng, [(60, 95, 38), (75, 110, 45), (50, 80, 35), (95, 115, 50)]), 10)
    shades = [pal.add(leaf, "leaf", f) for f in (0.75, 0.95, 1.12)]
    return {"trunk": pal.add(jit(rng, (85, 65, 50), 10), "bark")}, shades


def _tree_blobs(rng: Draws, shades: list, R: float) -> list:
    blobs = []
    for i in range(int(rng.integers(3, 6))):
        r = R * rng.uniform(0.55, 0.9)
        blobs.append((rng.uniform(-0.6, 0.6) * R, R * 0.7 + rng.uniform(-0.4, 0.7) * R, r, shades[min(i, 2)]))
    return blobs


def sample_greenery(rng: Draws, sc: Scene, z_max: float) -> None:
    """Trees, bushes, walls and fences on terrain strips; tree rows or barriers along sidewalks."""
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
                    sc.add(0, z, partial(draw_tree, X=X, z=z, trunk_h=trunk, blobs=_tree_blobs(rng, shades, R), p=p))
            for _ in range(int(rng.integers(0, 4))):
                X, z = outer + s * rng.uniform(0.5, max(side["tw"], 0.6)), rng.uniform(4, z_max)
                paint = sc.pal.add(jit(rng, (65, 100, 40), 12), "leaf")
                sc.add(0, z, partial(draw_bush, X=X, z=z, w=rng.uniform(1, 3), h=rng.uniform(0.6, 1.6), paint=paint))
            if rng.random() < 0.55:
                fence = rng.random() < 0.55
                z0 = rng.uniform(3, 20)
                p = {"main": sc.pal.add(jit(rng, pick(rng, [(170, 165, 155), (150, 90, 70), (120, 120, 120)]), 10), "wall"),
                     "rail": sc.pal.add(jit(rng, pick(rng, [(60, 60, 62), (110, 110, 110), (40, 70, 50)]), 8), "metal"),
                     "keep": sc.pal.add(jit(rng, (90, 100, 80), 10), "leaf"), "spacing": rng.uniform(0.15, 2.5)}
                sc.add(1, z0, partial(draw_barrier, X=outer, z0=z0, z1=z0 + rng.uniform(10, 60),
                                      h=rng.uniform(0.9, 2.0) if fence else rng.uniform(0.8, 2.8),
                                      label=FENCE if fence else WALL, p=p))
        elif rng.random() < 0.45:
            X, z, step = outer - s * 0.8, rng.uniform(4, 15), rng.uniform(8, 16)
            p, shades = _tree_paints(rng, sc.pal)
            trunk, R = rng.uniform(2.0, 3.5), rng.uniform(1.5, 3.0)
            while z < z_max:
                if inter is None or not inter[0] - 2 < z < inter[1] + 2:
                    sc.add(2, z, partial(draw_tree, X=X, z=z, trunk_h=trunk, blobs=_tree_blobs(rng, shades, R), p=p))
                z += step
        elif rng.random() < 0.35:
            z0 = rng.uniform(4, 30)
            fence = rng.random() < 0.5
            p = {"main": sc.pal.add(jit(rng, pick(rng, [(175, 170, 160), (140, 80, 65), (110, 110, 112)]), 10), "wall"),
                 "rail": sc.pal.add(jit(rng, (70, 70, 72), 8), "metal"),
                 "keep": sc.pal.add(jit(rng, (120, 120, 115), 10), "wall"), "spacing": rng.uniform(0.15, 1.0)}
            sc.add(1, z0, partial(draw_barrier, X=outer - s * 0.2, z0=z0, z1=z0 + rng.uniform(6, 30),
                                  h=rng.uniform(1.0, 2.0), label=FENCE if fence else WALL, p=p))
