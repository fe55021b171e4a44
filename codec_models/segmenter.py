"""Segmentation network F: image -> label map s (Section II-A), trained by the project."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import conv_in_lrelu


class Segmenter(nn.Module):
    """A small U-Net: encoder stages at 1, 1/2, 1/4, ... and a skip-connected decoder."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for i, w in enumerate(widths):
            self.down.append(nn.Sequential(conv_in_lrelu(cin, w, stride=1 if i == 0 else 2), conv_in_lrelu(w, w)))
            cin = w
        self.up = nn.ModuleList(
            nn.Sequential(conv_in_lrelu(widths[i + 1] + widths[i], widths[i]), conv_in_lrelu(widths[i], widths[i]))
            for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B,M,H,W)."""
        skips = []
        h = x * 2.0 - 1.0
        for stage in self.down:
            h = stage(h)
            skips.append(h)
        skips.pop()
        for stage in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = stage(torch.cat([h, skip], 1))
        return self.head(h)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Label map s = F(x) (B,H,W) int64."""
        return self(x).argmax(1)
