"""No-learning references R0/R1 (real bytes) and the level report on a small in-process codec."""
from __future__ import annotations

import pytest
import torch

from codec_models import BitstreamError
from codec_models.level_report import measure_levels, render_markdown, save_figure
from codec_models.references import reference_compress, reference_decompress


@pytest.mark.parametrize("name", ["r0", "r1"])
def test_reference_bytes_decode_to_cell_means(test_codec, test_dataset, name):
    image = test_dataset[0][0]
    h, w = image.shape[-2:]
    data = reference_compress(test_codec, image, name)
    out = reference_decompress(test_codec, data, h, w, name)
    assert out.shape == image.shape
    labels = test_codec.segment(image[None])[0]
    for m in labels.unique().tolist()[:3]:
        region = labels == m
        if name == "r0":  # one colour per class: its mean, to 8-bit precision
            torch.testing.assert_close(out[:, region].mean(1), image[:, region].mean(1), atol=1 / 255, rtol=0)
            assert float(out[:, region].std(1).max()) < 1e-6
    # R1 is finer than R0 (more colours): never worse
    if name == "r1":
        r0 = reference_decompress(test_codec, reference_compress(test_codec, image, "r0"), h, w, "r0")
        assert (out - image).pow(2).mean() <= (r0 - image).pow(2).mean() + 1e-9
        assert len(data) > len(reference_compress(test_codec, image, "r0"))


def test_reference_rejects_damaged_bytes(test_codec, test_dataset):
    image = test_dataset[1][0]
    h, w = image.shape[-2:]
    data = reference_compress(test_codec, image, "r1")
    with pytest.raises(BitstreamError):
        reference_decompress(test_codec, data[:-2], h, w, "r1")
    with pytest.raises(ValueError, match="unknown reference"):
        reference_compress(test_codec, image, "r9")


def test_level_report_on_small_codec(test_codec, test_dataset, tmp_path):
    result = measure_levels(test_codec, test_dataset, 3, progress=False)
    levels = result["levels"]
    assert [lv["channels"] for lv in levels] == list(test_codec.config.level_channels)
    assert all(lv["bpp"] > 0 and 0 < lv["label_share"] < 1 for lv in levels)
    assert levels[-1]["feature_bpp"] > levels[0]["feature_bpp"]  # coarse levels send fewer channels
    assert result["per_concept"]["count"] >= 3 and result["per_class"]
    assert set(result["references"]) == {"r0", "r1", "bicubic_x8"}
    text = render_markdown(result, "cmd")
    assert "R1" in text and "Per concept" in text
    path = save_figure(test_codec, test_dataset, tmp_path / "fig.png", images=2)
    assert path.stat().st_size > 0


def test_level_report_rejects_empty_data(test_codec):
    with pytest.raises(ValueError, match="no images"):
        measure_levels(test_codec, [], 5, progress=False)
