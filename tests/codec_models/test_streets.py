"""The embedded "streets" data set: determinism, formats, splits, class coverage, caching, instances."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy import ndimage

from codec_models.classes import NUM_TRAIN_CLASSES, TRAIN_ID
from codec_models.streets import (DEFAULT_SIZES, GENERATOR_VERSION, INSTANCE_TRAIN_IDS, INSTANCE_VERSION, SPLIT_OFFSET,
                                  StreetsDataset, default_cache_dir, instance_targets, render_split,
                                  render_street_scene)
from rlasc_env.tasks.networks import THING_TRAIN_IDS

H, W = 64, 128


@pytest.fixture(scope="module")
def train200() -> tuple[np.ndarray, np.ndarray]:
    return render_split("train", 200, H, W, progress=False)


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_render_is_deterministic_and_well_formed():
    image, labels = render_street_scene(123, H, W)
    again_image, again_labels = render_street_scene(123, H, W)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert labels.shape == (H, W) and labels.dtype == np.uint8
    assert labels.max() < NUM_TRAIN_CLASSES  # every pixel labelled, no 255
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(labels, again_labels)
    assert image.std() > 10  # a textured rendering, not a flat fill
    other, _ = render_street_scene(124, H, W)
    assert not np.array_equal(image, other)


def test_dataset_items_are_identical_across_instances():
    a = StreetsDataset("val", height=H, width=W, size=6, disk_cache=False, progress=False)
    b = StreetsDataset("val", height=H, width=W, size=6, disk_cache=False, progress=False)
    assert len(a) == 6
    for i in range(len(a)):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x, y = a[-1]
    assert x.shape == (3, H, W) and x.dtype == torch.float32
    assert y.shape == (H, W) and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert 0 <= int(y.min()) and int(y.max()) < NUM_TRAIN_CLASSES
    with pytest.raises(IndexError):
        a[6]


def test_default_sizes_and_invalid_split():
    assert DEFAULT_SIZES == {"train": 4000, "val": 200, "test": 200}
    assert len(StreetsDataset("train", disk_cache=False)) == 4000  # lazy: nothing rendered yet
    assert len(StreetsDataset("test", disk_cache=False)) == 200
    with pytest.raises(ValueError, match="train, val, test"):
        StreetsDataset("validation")


def test_splits_share_no_image(train200):
    offsets = sorted(SPLIT_OFFSET.values())
    assert all(b - a >= max(DEFAULT_SIZES.values()) for a, b in zip(offsets, offsets[1:], strict=False))
    hashes = {"train": {_digest(im) for im in train200[0][:50]}}
    for split in ("val", "test"):
        hashes[split] = {_digest(im) for im in render_split(split, 50, H, W, progress=False)[0]}
    assert all(len(h) == 50 for h in hashes.values())
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_class_coverage(train200):
    labels = train200[1]
    present = np.stack([np.bincount(lab.ravel(), minlength=NUM_TRAIN_CLASSES) > 0 for lab in labels])
    counts = present.sum(axis=1)
    assert counts.min() >= 6 and counts.max() <= 18, (counts.min(), counts.max())
    assert 8.0 <= counts.mean() <= 14.0, counts.mean()
    assert present.any(axis=0).all(), np.flatnonzero(~present.any(axis=0))
    for rare in (12, 14, 15, 16, 17):  # rider, truck, bus, train, motorcycle
        assert present[:, rare].mean() >= 0.08, (rare, present[:, rare].mean())


def test_same_scene_at_two_resolutions():
    for seed in range(5):
        _, small = render_street_scene(seed, 64, 128)
        _, big = render_street_scene(seed, 256, 512)
        down = torch.nn.functional.interpolate(torch.from_numpy(big)[None, None].float(), size=(64, 128), mode="nearest")
        agree = (down[0, 0].numpy().astype(np.uint8) == small).mean()
        assert agree > 0.85, (seed, agree)


def test_disk_cache_round_trip(tmp_path):
    first = StreetsDataset("test", height=32, width=64, size=5, cache_dir=tmp_path, progress=False)
    images, labels = first.arrays()
    img_path, lab_path = first.cache_paths
    assert img_path.is_file() and lab_path.is_file()
    assert f"v{GENERATOR_VERSION}" in img_path.name and "test_5_32x64" in img_path.name
    second = StreetsDataset("test", height=32, width=64, size=5, cache_dir=tmp_path, progress=False)
    cached_images, cached_labels = second.arrays()
    assert isinstance(cached_images, np.memmap)  # loaded from disk, not re-rendered
    np.testing.assert_array_equal(np.asarray(cached_images), images)
    np.testing.assert_array_equal(np.asarray(cached_labels), labels)
    fresh = render_split("test", 5, 32, 64, progress=False)
    np.testing.assert_array_equal(fresh[0], images)
    x, y = second[4]
    assert torch.equal(x, torch.from_numpy(images[4]).permute(2, 0, 1).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels[4].astype(np.int64)))
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RLASC_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "streets"
    assert StreetsDataset("val", size=1).cache_dir == tmp_path / "streets"


def test_dataloader_workers_share_the_cache(tmp_path):
    ds = StreetsDataset("val", height=32, width=64, size=8, cache_dir=tmp_path, progress=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    x, y = torch.cat([b[0] for b in loader]), torch.cat([b[1] for b in loader])
    images, labels = render_split("val", 8, 32, 64, progress=False)
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert ds.cache_paths[0].is_file()


# sha256 of the concatenated image bytes and label bytes of render_street_scene(seed, H, W) over
# the seeds, taken from the single-module generator before instances were recorded (the
# package split and the instance ids must not change a single pixel: GENERATOR_VERSION 2).
FINGERPRINTS: dict[str, tuple[int, int, range, str, str]] = {
    "train 0..49 64x128": (64, 128, range(50), "f6d2e48ad44cd51e56cbbeff11246f5b97d07ff6f0736c906509c2d03530b2c3",
                           "b39e824b421eb27b34d8f5eecbe7c11b470dbed0924c65c51a542513a64cbcf5"),
    "test split 64x128": (64, 128, range(2_000_000, 2_000_200),
                          "e8a585dd7136706bb4d3fd17d6e20a3e47f477788eed6ecc5770e2955c8aba2a",
                          "36143f33fcb15b0fb431f123052f242414695c1b26e683f7bea58d6509450361"),
    "train 0..9 32x64": (32, 64, range(10), "15613c2a4410d559431b94b4db7f3d956dd3bd0c62115eea3cf2b32cd9b0474c",
                         "9f147fce1f8fae4362777bb0841a60b3ef558ab135d9444efdf7304c9f72e9b1"),
    "train 0..2 256x512": (256, 512, range(3), "16d4f52569ee3e81a048f92fa34831fccf4850a915441ffee7c798c1de42ae81",
                           "4866156f922d384471f0af13e6ab86bf5f22fb32f925f72d4cee4e88544cc1fc"),
    "val 0..4 50x90": (50, 90, range(1_000_000, 1_000_005),
                       "29989362aed4b9973315c02d32ed5048102c01f907602948c8f6b46bada1641d",
                       "4e9f781bfaa1f80fb0fec703e7013ebe93da9fdc8086d20fa56f9828718dd00e"),
}
TOUCHING_CARS_SEED = 0  # train item 0 at 64x128: two parked cars on the left whose pixels touch
INSTANCE_CLASSES = np.zeros(256, dtype=bool)
INSTANCE_CLASSES[list(INSTANCE_TRAIN_IDS)] = True


@pytest.mark.parametrize("name", list(FINGERPRINTS))
def test_pixels_and_labels_match_the_fingerprints(name):
    assert GENERATOR_VERSION == 2
    height, width, seeds, want_images, want_labels = FINGERPRINTS[name]
    images, labels, with_images, with_labels = (hashlib.sha256() for _ in range(4))
    for seed in seeds:
        image, label = render_street_scene(seed, height, width)
        images.update(image.tobytes())
        labels.update(label.tobytes())
        image, label, _ = render_street_scene(seed, height, width, with_instances=True)
        with_images.update(image.tobytes())
        with_labels.update(label.tobytes())
    assert images.hexdigest() == want_images and labels.hexdigest() == want_labels
    assert with_images.hexdigest() == want_images and with_labels.hexdigest() == want_labels


def test_instance_classes_are_the_detection_things():
    assert sorted(INSTANCE_TRAIN_IDS) == sorted(THING_TRAIN_IDS)
    assert {TRAIN_ID[n] for n in ("pole", "traffic light", "traffic sign", "car", "person", "rider")} <= set(INSTANCE_TRAIN_IDS)


@pytest.mark.parametrize(("height", "width", "seeds"), [(64, 128, range(2_000_000, 2_000_040)), (256, 512, range(3))])
def test_every_instance_has_one_class_and_stuff_has_none(height, width, seeds):
    for seed in seeds:
        _, labels, instances = render_street_scene(seed, height, width, with_instances=True)
        assert instances.dtype == np.int32 and instances.shape == (height, width)
        np.testing.assert_array_equal(instances > 0, INSTANCE_CLASSES[labels])  # things > 0, stuff 0
        ids = np.unique(instances[instances > 0])
        np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))  # 1..K, no gaps
        pairs = np.unique(np.stack([instances[instances > 0], labels[instances > 0]]), axis=1)
        assert pairs.shape[1] == ids.size, seed  # one class per instance
        _, again = render_street_scene(seed, height, width)
        np.testing.assert_array_equal(labels, again)


def test_two_touching_cars_give_two_boxes():
    _, labels, instances = render_street_scene(TOUCHING_CARS_SEED, H, W, with_instances=True)
    car = TRAIN_ID["car"]
    components, _ = ndimage.label(labels == car, structure=np.ones((3, 3), dtype=bool))
    targets = instance_targets(labels, instances)
    cars = targets["instance_ids"][targets["labels"] == car]
    touching = [(a, b) for a in cars for b in cars if a < b
                and (ndimage.binary_dilation(instances == a, structure=np.ones((3, 3), dtype=bool)) & (instances == b)).any()]
    assert touching, "no two car instances are 8-connected neighbours"
    a, b = touching[0]
    assert np.unique(components[(instances == a) | (instances == b)]).size == 1  # one car blob ...
    boxes = {int(i): box for i, box in zip(targets["instance_ids"], targets["boxes"], strict=True)}
    assert not np.array_equal(boxes[int(a)], boxes[int(b)])  # ... but two reference boxes
    assert len(cars) > int(components.max())


def test_instance_targets_boxes_classes_and_small_instances():
    labels = np.full((6, 8), TRAIN_ID["road"], dtype=np.uint8)
    instances = np.zeros((6, 8), dtype=np.int32)
    labels[1:4, 1:4], instances[1:4, 1:4] = TRAIN_ID["car"], 1
    labels[2:5, 4:7], instances[2:5, 4:7] = TRAIN_ID["car"], 2  # touches car 1
    labels[0, 7], instances[0, 7] = TRAIN_ID["pole"], 3  # a single pixel
    got = instance_targets(labels, instances)
    np.testing.assert_array_equal(got["boxes"], np.array([[1, 1, 4, 4], [4, 2, 7, 5]], dtype=np.float32))
    assert got["boxes"].dtype == np.float32 and got["labels"].dtype == np.int64 and got["instance_ids"].dtype == np.int64
    np.testing.assert_array_equal(got["labels"], [TRAIN_ID["car"]] * 2)
    np.testing.assert_array_equal(got["instance_ids"], [1, 2])
    assert instance_targets(labels, instances, min_pixels=1)["instance_ids"].tolist() == [1, 2, 3]
    empty = instance_targets(labels, np.zeros_like(instances))
    assert empty["boxes"].shape == (0, 4) and empty["labels"].size == 0
    labels[1, 1] = TRAIN_ID["truck"]
    with pytest.raises(ValueError, match="more than one class"):
        instance_targets(labels, instances)


def test_instance_cache_round_trip(tmp_path):
    first = StreetsDataset("test", height=32, width=64, size=5, cache_dir=tmp_path, progress=False)
    inst = first.instance_map(4)
    path = first.instance_cache_path
    assert path.is_file() and f"v{GENERATOR_VERSION}" in path.name and f"i{INSTANCE_VERSION}" in path.name
    _, labels, fresh = render_street_scene(SPLIT_OFFSET["test"] + 4, 32, 64, with_instances=True)
    np.testing.assert_array_equal(inst, fresh)
    assert inst.dtype == np.int32
    second = StreetsDataset("test", height=32, width=64, size=5, cache_dir=tmp_path, progress=False)
    assert isinstance(second.instance_maps(), np.memmap)  # loaded, not re-rendered
    np.testing.assert_array_equal(second.instance_map(-1), fresh)
    x, y = second[4]  # items are unchanged: (image, labels)
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    with pytest.raises(IndexError):
        second.instance_map(5)
    memory = StreetsDataset("test", height=32, width=64, size=5, disk_cache=False, progress=False)
    np.testing.assert_array_equal(memory.instance_map(4), fresh)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncated", "zeros", "shape"])
def test_damaged_instance_cache_is_rendered_again(tmp_path, damage):
    ds = StreetsDataset("val", height=32, width=64, size=4, cache_dir=tmp_path, progress=False)
    want = ds.instance_maps().copy()
    path = ds.instance_cache_path
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "zeros":
        np.save(path, np.zeros_like(want))
    else:
        np.save(path, want[:2])
    again = StreetsDataset("val", height=32, width=64, size=4, cache_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="rendering it again"):
        got = again.instance_maps()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.load(path), want)  # the file was repaired


def test_stale_label_cache_is_refused(tmp_path):
    ds = StreetsDataset("val", height=32, width=64, size=3, cache_dir=tmp_path, progress=False)
    labels = np.array(ds.arrays()[1])
    labels[0, 0, 0] = (labels[0, 0, 0] + 1) % NUM_TRAIN_CLASSES
    np.save(ds.cache_paths[1], labels)
    stale = StreetsDataset("val", height=32, width=64, size=3, cache_dir=tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="image cache is stale"):
        stale.instance_map(0)
    assert not stale.instance_cache_path.exists()
