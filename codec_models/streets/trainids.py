"""Train-id shorthands of the classes the generator draws, and which of them are instances."""
from __future__ import annotations

import numpy as np

from ..classes import TRAIN_ID

ROAD, SIDEWALK, BUILDING, WALL, FENCE = (TRAIN_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN = TRAIN_ID["pole"], TRAIN_ID["traffic light"], TRAIN_ID["traffic sign"]
VEG, TERRAIN, SKY = TRAIN_ID["vegetation"], TRAIN_ID["terrain"], TRAIN_ID["sky"]
PERSON, RIDER, CAR, TRUCK, BUS = (TRAIN_ID[n] for n in ("person", "rider", "car", "truck", "bus"))
TRAIN, MOTO, BIKE = TRAIN_ID["train"], TRAIN_ID["motorcycle"], TRAIN_ID["bicycle"]


# Classes drawn as countable objects, each with its own instance id (the detection task's
# thing classes: poles, traffic lights and signs, people, riders and vehicles). Every other
# class (road, sidewalk, building, wall, fence, vegetation, terrain, sky) is stuff: id 0.
INSTANCE_TRAIN_IDS: tuple[int, ...] = (POLE, LIGHT, SIGN, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE)
IS_INSTANCE_CLASS = np.zeros(256, dtype=bool)  # lookup table: train id -> drawn as an instance
IS_INSTANCE_CLASS[list(INSTANCE_TRAIN_IDS)] = True
