"""Feature extractor E and the per-concept split (Section II-A, eq. 2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import conv_in_lrelu


class FeatureExtractor(nn.Module):
    """E: image (B,3,H,W) in [0,1] -> f (B,n,H/8,W/8) in [-1,1].

    Conv + norm + LeakyReLU layers reduce the resolution to 1/8 with N channels, then a
    projection to n channels, bounded to the quantizer's range [-1, 1] by tanh (or, as an
    ablation, a clamp with an identity gradient). Codec v1 uses instance norm; codec v2 uses batch
    norm, because instance norm removes each image's channel means, i.e. its mean colours, while
    batch norm uses the training set's statistics at inference. ``block_basis`` adds a linear
    analysis of each 8x8 patch (a learned block transform) to the projection.
    """

    def __init__(self, feature_channels: int, code_channels: int, norm: bool | str = True,
                 bound: str = "tanh", block_basis: bool = False) -> None:
        super().__init__()
        if bound not in ("tanh", "clamp"):
            raise ValueError(f"bound must be 'tanh' or 'clamp', not {bound!r}")
        self.bound = bound
        n_ch = feature_channels
        self.body = nn.Sequential(
            conv_in_lrelu(3, n_ch // 2, kernel=5, norm=norm),
            conv_in_lrelu(n_ch // 2, n_ch, stride=2, norm=norm),
            conv_in_lrelu(n_ch, n_ch, stride=2, norm=norm),
            conv_in_lrelu(n_ch, n_ch, stride=2, norm=norm),
            conv_in_lrelu(n_ch, n_ch, norm=norm),
        )
        self.project = nn.Conv2d(n_ch, code_channels, 1)
        # linear analysis of each 8x8 patch (a learned block transform), added to the projection
        self.patch = nn.Conv2d(3, code_channels, 8, stride=8, bias=False) if block_basis else None

    def forward(self, x: Tensor) -> Tensor:
        x = x * 2.0 - 1.0
        z = self.project(self.body(x))
        if self.patch is not None:
            z = z + self.patch(x)
        if self.bound == "tanh":
            return torch.tanh(z)
        # clamp forward, identity backward: the quantizer's end centres are +-1, so a saturating
        # bound (tanh) drives channels onto them and their gradient to zero
        return z + (z.clamp(-1.0, 1.0) - z).detach()


def concept_masks(labels: Tensor, num_classes: int, factor: int = 8) -> tuple[Tensor, Tensor]:
    """Down-scaled semantic masks s_d(m) of eq. 1-2 for a label map (B,H,W).

    Returns ``(mask, area)``, both (B,M,H/f,W/f): ``mask`` is 1 where a block holds any pixel
    of class m (the positions coded for concept m), ``area`` the share of the block's pixels
    of class m (weights that merge the concepts back into one map; they sum to 1).
    """
    onehot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    area = F.avg_pool2d(onehot, factor)
    return (area > 0).float(), area


def split_concepts(f: Tensor, mask: Tensor) -> Tensor:
    """f(m) = f ⊙ s_d(m) (eq. 2): (B,n,h,w) x (B,M,h,w) -> (B,M,n,h,w)."""
    return f.unsqueeze(1) * mask.unsqueeze(2)
