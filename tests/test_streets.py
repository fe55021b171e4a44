"""The embedded "streets" data set: determinism, formats, splits, class coverage, caching."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from codec_models.classes import NUM_TRAIN_CLASSES
from codec_models.streets import (
    DEFAULT_SIZES,
    GENERATOR_VERSION,
    SPLIT_OFFSET,
    StreetsDataset,
    default_cache_dir,
    render_split,
    render_street_scene,
)

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
