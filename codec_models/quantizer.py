"""Per-concept scalar quantizer with Q levels (eq. 23-25).

Level ``q`` quantizes every entry of f(m) (bounded to [-1, 1] by E's tanh) to the nearest of
``K_q`` uniformly spaced centres (eq. 24, the hard forward pass); the backward pass uses the
soft assignment of eq. 25 (straight-through: value of eq. 24, gradient of eq. 25). Level 0 is
the coarsest (fewest centres); the highest level has the most centres and costs most bits.

Codec v2 also gives each level a channel count (``level_channels``): level ``q`` codes only
the first ``C_q`` channels of f and the others are not sent (they dequantize to 0), so a
coarse level holds strictly less information than a fine one whatever the networks learn.

A quantization matrix (``channel_step_ratio`` r > 1, as JPEG's per-frequency steps): channel c of n
is quantized with the level's step times r ** (c / (n - 1)), so the last (least energetic) block
coefficients get an r times coarser step than the first. Level ``q`` keeps ``K_q`` symbols per
channel (the symbol tables keep their shape); centres beyond [-1, 1] are never chosen. With r = 1
(every shipped codec) the centres are exactly eq. 24's.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class LevelQuantizer(nn.Module):
    """Scalar quantizers for all Q levels: ``centres[q]`` has ``level_centers[q]`` values."""

    def __init__(self, level_centers: tuple[int, ...], soft_sigma: float = 1.0,
                 level_channels: tuple[int, ...] = (), channel_step_ratio: float = 1.0,
                 num_channels: int = 1) -> None:
        super().__init__()
        self.level_centers = tuple(int(k) for k in level_centers)
        self.channel_step_ratio = float(channel_step_ratio)
        if self.channel_step_ratio < 1.0:
            raise ValueError(f"channel_step_ratio must be >= 1, not {channel_step_ratio!r}")
        if self.graded and any(k % 2 == 0 for k in self.level_centers):
            raise ValueError("a quantization matrix (channel_step_ratio > 1) needs an odd number of centres per level, "
                             f"so that 0 is a centre; got {self.level_centers}")
        position = torch.arange(num_channels, dtype=torch.float64) / max(num_channels - 1, 1)
        self.register_buffer("step_scale", (self.channel_step_ratio ** position).float(), persistent=False)
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

    @property
    def graded(self) -> bool:
        """Whether the step grows over the channels (a quantization matrix)."""
        return self.channel_step_ratio != 1.0

    def centres(self, level: int) -> Tensor:
        """The ``K_level`` centres of eq. 24 (of channel 0 under a quantization matrix)."""
        return getattr(self, f"centres_{level}")

    def _steps(self, level: int, channels: int, dims_after: int) -> Tensor:
        """Step of each of the first ``channels`` channels, shaped to broadcast with ``dims_after`` trailing dims."""
        if channels > self.step_scale.numel():
            raise ValueError(f"{channels} channels but the quantization matrix has {self.step_scale.numel()}")
        step = self.step_scale[:channels] * (2.0 / (self.level_centers[level] - 1))
        return step.view(channels, *([1] * dims_after))

    def indices(self, f: Tensor, level: int, channel_dim: int = -3) -> Tensor:
        """Nearest-centre index of each entry (eq. 24), int64 in [0, K_level); ``channel_dim`` (graded only)."""
        k = self.level_centers[level]
        if not self.graded:
            return torch.round((f.clamp(-1.0, 1.0) + 1.0) * 0.5 * (k - 1)).long()
        dim = channel_dim % f.dim()
        half = (k - 1) // 2
        step = self._steps(level, f.shape[dim], f.dim() - dim - 1)
        return (torch.round(f.clamp(-1.0, 1.0) / step).clamp(-half, half) + half).long()

    def dequantize(self, indices: Tensor, level: int, channel_dim: int = -3) -> Tensor:
        """Centre of each index; ``channel_dim``: the channel axis of ``indices`` (graded only)."""
        if not self.graded:
            return self.centres(level)[indices]
        dim = channel_dim % indices.dim()
        half = (self.level_centers[level] - 1) // 2
        return (indices - half).to(self.step_scale.dtype) * self._steps(level, indices.shape[dim],
                                                                           indices.dim() - dim - 1)

    def soft(self, f: Tensor, level: int) -> Tensor:
        """Soft quantization of eq. 25 with sigma scaled by 1 / centre spacing; f is (..., n, h, w) when graded."""
        if not self.graded:
            centres = self.centres(level)
            spacing = 2.0 / (self.level_centers[level] - 1)
            sigma = self.soft_sigma / spacing
            weights = torch.softmax(-sigma * (f.unsqueeze(-1) - centres).abs(), dim=-1)
            return (weights * centres).sum(-1)
        half = (self.level_centers[level] - 1) // 2
        step = self._steps(level, f.shape[-3], 3)  # (n, 1, 1, 1)
        centres = torch.arange(-half, half + 1, device=f.device, dtype=f.dtype) * step  # (n, 1, 1, K)
        weights = torch.softmax(-(self.soft_sigma / step) * (f.unsqueeze(-1) - centres).abs(), dim=-1)
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
