"""Shared fixtures: small in-process codecs (32x64) with fitted code tables: ``test_codec`` is codec
v2 (preset "test-v2", what env -v1 uses), ``test_codec_v1`` the first codec (preset "test", env -v0)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rlasc_env.tasks import Task, register_task

torch.set_num_threads(1)


class PixelTask(Task):
    """Test task without a network: L_S = mean |x_hat - x|, metric = PSNR."""

    name = "pixel-test"
    metric_name = "psnr"

    def __init__(self, reference: str = "ground_truth", device: str = "cpu") -> None:
        super().__init__(nn.Identity(), reference, "identity")

    def references(self, images, labels):
        return [image.detach().clone() for image in images]

    def loss(self, x_hat, references):
        ref = torch.stack(references).to(x_hat.device)
        mse = (x_hat - ref).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        return (x_hat - ref).abs().flatten(1).mean(1).cpu(), (10 * torch.log10(1 / mse)).cpu()


register_task("pixel-test", PixelTask)


@pytest.fixture(scope="session")
def test_dataset():
    from codec_models.streets import StreetsDataset

    return StreetsDataset("train", height=32, width=64, size=16)


def _fitted_codec(preset: str, dataset):
    from codec_models.codec import SemanticCodec
    from codec_models.config import codec_preset
    from codec_models.training import fit_code_tables

    torch.manual_seed(0)
    codec = SemanticCodec(codec_preset(preset)).eval()
    fit_code_tables(codec, dataset, 16, batch_size=8, progress=False)
    return codec


@pytest.fixture(scope="session")
def test_codec(test_dataset):
    return _fitted_codec("test-v2", test_dataset)


@pytest.fixture(scope="session")
def test_codec_v1(test_dataset):
    return _fitted_codec("test", test_dataset)


@pytest.fixture()
def make_env(test_codec, test_dataset):
    """SemanticCodingEnv on the test codec and data (task "pixel-test" unless given)."""
    from rlasc_env import SemanticCodingEnv

    def make(**kwargs):
        kwargs.setdefault("task", "pixel-test")
        return SemanticCodingEnv(codec=test_codec, images=test_dataset, **kwargs)
    return make
