"""Embedded default data set "streets": procedural urban street scenes with Cityscapes classes.

Every scene is generated from one integer seed (``numpy.random.default_rng(seed)``). A scene
is first *sampled* as a resolution-free description (camera, road, facades, objects, light)
in continuous world/normalised-image coordinates and then *rasterised* at any size, so one
seed gives the same scene at 64x128 and at 256x512, only sharper. Labels are Cityscapes
train ids (0..18, every pixel labelled); the RGB image is a photo-like rendering (asphalt with
lane markings, facades with window grids, textured vegetation, a sky gradient with clouds,
per-scene light and shadows), not the label colours. Every object (vehicle, person, rider,
two-wheeler, pole, traffic light, traffic sign) also gets an instance id, so reference boxes
exist per object (:func:`instance_targets`).

Modules, in the order a scene passes through them:

- :mod:`.camera`: pinhole camera and projection; :mod:`.trainids`: class shorthands, instance classes;
- :mod:`.scene`: the scene records and the seeded random source; :mod:`.palette`: paints, colours;
- :mod:`.layout`: sampling of light, road, facades, skyline; :mod:`.objects`: objects along the street;
- :mod:`.canvas`: label/paint/instance buffers and primitive fills; :mod:`.background`: ground and
  facades; :mod:`.painters`: object painters; :mod:`.shading`: textures, sky, light -> RGB;
- :mod:`.render`: ``render_street_scene``, ``render_split``; :mod:`.instances`: ``instance_targets``;
- :mod:`.dataset`: ``StreetsDataset`` with its in-memory and on-disk caches.
"""
from __future__ import annotations

from .dataset import INSTANCE_VERSION, StreetsDataset, default_cache_dir
from .instances import instance_targets
from .render import DEFAULT_SIZES, GENERATOR_VERSION, SPLIT_OFFSET, render_split, render_street_scene
from .trainids import INSTANCE_TRAIN_IDS

__all__ = [
    "DEFAULT_SIZES", "GENERATOR_VERSION", "INSTANCE_TRAIN_IDS", "INSTANCE_VERSION", "SPLIT_OFFSET", "StreetsDataset",
    "default_cache_dir", "instance_targets", "render_split", "render_street_scene",
]
