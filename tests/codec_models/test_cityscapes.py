"""Cityscapes loading on a small fake tree, and ``load_dataset`` dispatch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec_models.cityscapes import CityscapesSegmentation
from codec_models.classes import label_id_to_paper30_lut, label_id_to_train_id_lut
from codec_models.datasets import DATASET_SHAPES, load_dataset
from codec_models.streets import StreetsDataset

H, W = 64, 128
# label ids laid out in 8 vertical stripes of 16 px: road, sidewalk, building, car,
# unlabeled, sky, person, bicycle
STRIPES = (7, 8, 11, 26, 0, 23, 24, 33)


def _label_map(shift: int) -> np.ndarray:
    ids = np.array(STRIPES, dtype=np.uint8)
    stripe = np.repeat(np.roll(ids, shift), W // len(ids))
    label = np.tile(stripe, (H, 1))
    label[: H // 4] = 4  # a band of "static" (void) on top
    return label


def _write_split(root: Path, split: str) -> dict[str, tuple[tuple[int, int, int], np.ndarray]]:
    written = {}
    for c, city in enumerate(("aachen", "bochum")):
        for k in range(2):
            stem = f"{city}_{k:06d}_000019"
            colour = (40 * c + 20 * k + 10, 100, 200 - 30 * k)
            label = _label_map(2 * c + k)
            img_dir, lab_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            lab_dir.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (W, H), colour).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(label).save(lab_dir / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(lab_dir / f"{stem}_gtFine_color.png")
            written[stem] = (colour, label)
    return written


@pytest.fixture()
def fake_root(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "cityscapes"
    written = _write_split(root, "val")
    _write_split(root, "train")
    return root, written


def test_train19_mapping_at_full_size(fake_root):
    root, written = fake_root
    ds = CityscapesSegmentation(root, split="val", height=H, width=W)
    assert len(ds) == 4
    lut = label_id_to_train_id_lut()
    for i, stem in enumerate(sorted(written)):  # items come in sorted (city, file) order
        colour, label = written[stem]
        image, target = ds[i]
        assert image.shape == (3, H, W) and image.dtype == torch.float32
        assert target.shape == (H, W) and target.dtype == torch.int64
        expected_rgb = torch.tensor(colour, dtype=torch.float32)[:, None, None] / 255
        assert torch.allclose(image, expected_rgb.expand_as(image), atol=1e-6)
        np.testing.assert_array_equal(target.numpy(), lut[label])
    _, target = ds[0]
    assert set(np.unique(target.numpy())) == {0, 1, 2, 13, 10, 11, 18, 255}


def test_paper30_mapping_and_resize(fake_root):
    root, written = fake_root
    ds = CityscapesSegmentation(root, split="val", height=H // 2, width=W // 2, classes="paper30")
    image, target = ds[0]
    colour, label = written[sorted(written)[0]]
    assert image.shape == (3, H // 2, W // 2) and target.shape == (H // 2, W // 2)
    assert torch.allclose(image[:, 5, 5], torch.tensor(colour, dtype=torch.float32) / 255, atol=1e-6)
    np.testing.assert_array_equal(target.numpy(), label_id_to_paper30_lut()[label[::2, ::2]])
    values = set(np.unique(target.numpy()).tolist())
    assert values == {0, 3, 4, 7, 19, 20, 22, 29, 255}  # static=0, road=3, ..., bicycle=29, unlabeled=255
    assert len(CityscapesSegmentation(root, split="train", height=16, width=32, size=3)) == 3


def test_missing_or_malformed_root(tmp_path, fake_root):
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/<split>/<city>/\*_leftImg8bit.png"):
        CityscapesSegmentation(tmp_path / "nowhere")
    root, written = fake_root
    with pytest.raises(FileNotFoundError, match="gtFine_labelIds"):
        CityscapesSegmentation(root, split="test")
    missing = root / "gtFine" / "val" / "aachen" / f"{sorted(written)[0]}_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="is missing"):
        CityscapesSegmentation(root, split="val")
    with pytest.raises(ValueError, match="train19, paper30"):
        CityscapesSegmentation(root, split="train", classes="coco")
    with pytest.raises(ValueError, match="train, val, test"):
        CityscapesSegmentation(root, split="extra")


def test_load_dataset_dispatch(fake_root, tmp_path):
    root, _ = fake_root
    assert DATASET_SHAPES["tiny"] == (64, 128) and DATASET_SHAPES["paper"] == (256, 512)
    city = load_dataset("cityscapes", "val", preset="tiny", root=str(root))
    assert isinstance(city, CityscapesSegmentation) and len(city) == 4
    assert city[0][0].shape == (3, 64, 128)
    small = load_dataset("cityscapes", "train", root=str(root), size=2, height=16, width=32, classes="paper30")
    assert len(small) == 2 and small[1][1].shape == (16, 32)
    streets = load_dataset("streets", "val", preset="paper", size=2, cache_dir=tmp_path / "cache")
    assert isinstance(streets, StreetsDataset) and len(streets) == 2
    assert (streets.height, streets.width) == (256, 512)
    assert len(load_dataset(cache_dir=tmp_path / "cache")) == 200  # streets / test / tiny
    with pytest.raises(ValueError, match="root"):
        load_dataset("cityscapes", "val")
    with pytest.raises(ValueError, match="streets, cityscapes"):
        load_dataset("kitti")
    with pytest.raises(ValueError, match="tiny, paper"):
        load_dataset("streets", preset="huge")
