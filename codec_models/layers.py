"""Small building blocks shared by the codec's networks."""
from __future__ import annotations

from torch import Tensor, nn


def instance_norm(channels: int, enabled: bool = True) -> nn.Module:
    """Affine instance norm, or the identity (codec v2 drops it where it would erase the
    absolute values that the quantization level changes)."""
    return nn.InstanceNorm2d(channels, affine=True) if enabled else nn.Identity()


def conv_in_lrelu(cin: int, cout: int, kernel: int = 3, stride: int = 1, norm: bool | str = True) -> nn.Sequential:
    """Convolution + normalization + LeakyReLU (the unit of E, Section II-A).

    ``norm``: True / "instance" (affine instance norm), "batch" (batch norm: statistics of the
    training set at inference, so an image's absolute colours survive), False / "none".
    """
    kind = {True: "instance", False: "none"}.get(norm, norm) if isinstance(norm, bool) else norm
    layer = {"instance": lambda: nn.InstanceNorm2d(cout, affine=True), "batch": lambda: nn.BatchNorm2d(cout),
             "none": nn.Identity}[kind]()
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2), layer,
                         nn.LeakyReLU(0.2, inplace=True))


def deconv_in_relu(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """Transposed convolution doubling the resolution + instance norm + ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1),
        instance_norm(cout, norm),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance norm layers with an identity shortcut."""

    def __init__(self, channels: int, norm: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            instance_norm(channels, norm),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            instance_norm(channels, norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)
