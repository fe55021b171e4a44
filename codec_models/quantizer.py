"""Per-concept scalar quantizer with Q levels (eq. 23-25).

Level ``q`` quantizes every entry of f(m) (bounded to [-1, 1] by E's tanh) to the nearest of
``K_q`` uniformly spaced centres (eq. 24, the hard forward pass); the backward pass uses the
soft assignment of eq. 25 (straight-through: value of eq. 24, gradient of eq. 25). Level 0 is
the coarsest (fewest centres); the highest level has the most centres and costs most bits.

Codec v2 also gives each level a channel count (``level_channels``): level ``q`` codes only
the first ``C_q`` channels of f and the others are not sent (they dequantize to 0), so a
coarse level holds strictly less information than a fine one whatever the networks learn.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class LevelQuantizer(nn.Module):
    """Scalar quantizers for all Q levels: ``centres[q]`` has ``level_centers[q]`` values."""

    def __init__(self, level_centers: tuple[int, ...], soft_sigma: float = 1.0,
                 level_channels: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.level_centers = tuple(int(k) for k in level_centers)
        self.level_channels = tuple(int(c) for c in level_channels)
        if self.level_channels and len(self.level_channels) != len(self.level_centers):
            raise ValueError("level_channels needs one entry per level")
        self.soft_sigma = float(soft_sigma)
        for q, k in enumerate(self.level_centers):
            self.register_buffer(f"centres_{q}", torch.linspace(-1.0, 1.0, k), persistent=False)

    @property
    def num_levels(self) -> int:
        return len(self.level_centers)

    def channels(self, level: int, total: int) -> int:
        """Channels of an ``total``-channel f coded at ``level`` (all of them without a schedule)."""
        return min(self.level_channels[level], total) if self.level_channels else total

    def _drop(self, value: Tensor, level: int, channel_dim: int) -> Tensor:
        """Zero the channels that ``level`` does not send."""
        if not self.level_channels:
            return value
        kept = self.channels(level, value.shape[channel_dim])
        if kept == value.shape[channel_dim]:
            return value
        shape = [1] * value.dim()
        shape[channel_dim] = value.shape[channel_dim]
        keep = (torch.arange(value.shape[channel_dim], device=value.device) < kept).view(shape)
        return value * keep.to(value.dtype)

    def centres(self, level: int) -> Tensor:
        return getattr(self, f"centres_{level}")

    def indices(self, f: Tensor, level: int) -> Tensor:
        """Nearest-centre index of each entry (eq. 24), int64 in [0, K_level)."""
        k = self.level_centers[level]
        return torch.round((f.clamp(-1.0, 1.0) + 1.0) * 0.5 * (k - 1)).long()

    def dequantize(self, indices: Tensor, level: int) -> Tensor:
        return self.centres(level)[indices]

    def soft(self, f: Tensor, level: int) -> Tensor:
        """Soft quantization of eq. 25 with sigma scaled by 1 / centre spacing."""
        centres = self.centres(level)
        spacing = 2.0 / (self.level_centers[level] - 1)
        sigma = self.soft_sigma / spacing
        weights = torch.softmax(-sigma * (f.unsqueeze(-1) - centres).abs(), dim=-1)
        return (weights * centres).sum(-1)

    def forward(self, f: Tensor, level: int) -> Tensor:
        """Hard value forward (eq. 24), soft gradient backward (eq. 25); f is (..., n, h, w)."""
        hard = self.dequantize(self.indices(f, level), level)
        if torch.is_grad_enabled() and f.requires_grad:
            soft = self.soft(f, level)
            hard = soft + (hard - soft).detach()
        return self._drop(hard, level, f.dim() - 3)

    def all_levels(self, f: Tensor) -> Tensor:
        """Quantize ``f`` (B, n, h, w) at every level: (Q, B, n, h, w)."""
        return torch.stack([self(f, q) for q in range(self.num_levels)])
