"""Shared fixtures: a small in-process codec (preset "test", 32x64) with fitted code tables."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def test_dataset():
    from codec_models.streets import StreetsDataset

    return StreetsDataset("train", height=32, width=64, size=16)


@pytest.fixture(scope="session")
def test_codec(test_dataset):
    from codec_models.codec import SemanticCodec
    from codec_models.config import codec_preset
    from codec_models.training import fit_code_tables

    torch.manual_seed(0)
    codec = SemanticCodec(codec_preset("test")).eval()
    fit_code_tables(codec, test_dataset, 16, batch_size=8, progress=False)
    return codec
