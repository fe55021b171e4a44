"""Multi-scale patch discriminator conditioned on the label map, hinge loss (eq. 32)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """One scale: spectrally normalised convolutions on (image, one-hot labels) -> patch logits."""

    def __init__(self, num_classes: int, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3 + num_classes, c, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(2 * c, 2 * c, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 1, 3, 1, 1),
        )

    def forward(self, image: Tensor, segmap: Tensor) -> Tensor:
        return self.net(torch.cat([image * 2.0 - 1.0, segmap], 1))


class MultiScaleDiscriminator(nn.Module):
    """D(x, s): patch discriminators at full, 1/2, 1/4 ... resolution."""

    def __init__(self, num_classes: int, channels: int = 32, scales: int = 2) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(num_classes, channels) for _ in range(scales))

    def forward(self, image: Tensor, segmap: Tensor) -> list[Tensor]:
        outs = []
        for i, disc in enumerate(self.scales):
            if i:
                image = F.avg_pool2d(image, 2)
                segmap = F.avg_pool2d(segmap, 2)
            outs.append(disc(image, segmap))
        return outs


def discriminator_hinge_loss(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """L_D = E[max(0, 1 - D(x,s))] + E[max(0, 1 + D(x_hat,s))] (eq. 32)."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def generator_hinge_loss(fake: list[Tensor]) -> Tensor:
    """L_G = -E[D(x_hat, s)] (eq. 32)."""
    return -sum(f.mean() for f in fake) / len(fake)
