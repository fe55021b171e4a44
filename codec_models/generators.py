"""Generative semantic decoder (Section III-B): local generator G_l (eq. 28-29), global
generator G_g with SPADE (eq. 30) and the attention fusion module (eq. 31)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fast_paths
from .layers import ResidualBlock, deconv_in_relu, instance_norm


def _is_deconv_stage(layer: nn.Module) -> bool:
    """A :func:`codec_models.layers.deconv_in_relu` stage whose normalization is the identity (codec v2)."""
    return (isinstance(layer, nn.Sequential) and len(layer) > 1 and isinstance(layer[0], nn.ConvTranspose2d)
            and isinstance(layer[1], nn.Identity))


class LocalGenerator(nn.Module):
    """G_l: y(m) = G_l(f_hat(m)) (eq. 28); x_l = sum_m s(m) ⊙ y(m) (eq. 29).

    A shared trunk (conv, residual blocks, two deconvolutions to 1/2 resolution) runs on
    every concept; one deconvolution head per class (independent weights, stored stacked so
    that all concepts of a batch go through their own heads in one grouped call) gives the
    full-resolution y(m). Each y(m) is kept inside its class mask, so coding concept m again
    changes x_l only in the region of m.

    Codec v2 (``level_aware``): the trunk has no instance norm (normalizing a masked concept map
    removes its absolute values, which is exactly what the level changes) and its input is
    f_hat(m) plus two planes, the concept's level (q+1)/Q and its mask s_d(m), both known to the
    decoder from the bitstream header and the label map. ``skip`` adds a 1x1 projection of
    f_hat(m) to 3 channels, bilinearly upsampled 8x, to the heads' logits: a direct route from the
    coded values to the concept's colours, which the trunk and heads refine. With ``block_basis``
    the projection gives 3 x 64 values per block, pixel-shuffled into the block: a learned
    synthesis basis (the decoder half of a block transform). ``output="linear"`` maps logits to
    pixels by clamp(logit / 4 + 1/2) (the sigmoid's tangent at 0, identity gradient) instead of the
    sigmoid, so that the block synthesis is exactly the inverse of a linear transform.
    """

    def __init__(self, code_channels: int, num_classes: int, channels: int = 32, res_blocks: int = 5,
                 level_aware: bool = False, norm: bool = True, skip: bool = False, block_basis: bool = False,
                 num_levels: int = 0, output: str = "sigmoid") -> None:
        super().__init__()
        if output not in ("sigmoid", "linear"):
            raise ValueError(f"output must be 'sigmoid' or 'linear', not {output!r}")
        self.output = output
        half = channels // 2
        self.level_aware = level_aware
        self.block_basis = block_basis
        self.skip = nn.Conv2d(code_channels, 3 * 64 if block_basis else 3, 1) if skip else None
        # block_basis with levels known: one synthesis per level (a per-level dequantizer, as with QVRF's
        # per-level step sizes), since level q's values carry a different precision and channel count
        self.level_synthesis = None
        if skip and block_basis and level_aware and num_levels > 1:
            self.level_synthesis = nn.Parameter(torch.zeros(num_levels, 3 * 64, code_channels))
            self.level_synthesis_bias = nn.Parameter(torch.zeros(num_levels, 3 * 64))
        self.trunk = nn.Sequential(
            nn.Conv2d(code_channels + (2 if level_aware else 0), channels, 3, padding=1),
            instance_norm(channels, norm),
            nn.ReLU(inplace=True),
            *[ResidualBlock(channels, norm) for _ in range(res_blocks)],
            deconv_in_relu(channels, half, norm),
            deconv_in_relu(half, half, norm),
        )
        self.head_weight = nn.Parameter(torch.empty(num_classes, half, 3, 4, 4))
        self.head_bias = nn.Parameter(torch.zeros(num_classes, 3))
        nn.init.kaiming_uniform_(self.head_weight.view(num_classes * half, 3, 4, 4), a=5**0.5)
        self.trunk_channels = half

    def trunk_input(self, concepts: Tensor, level_planes: Tensor | None, masks: Tensor | None) -> Tensor:
        """Concept maps (P,n,h,w) and, for codec v2, level planes and masks (P,1,h,w) -> trunk input."""
        if not self.level_aware:
            return concepts
        if level_planes is None or masks is None:
            raise ValueError("codec v2's G_l needs each concept's level plane and mask")
        return torch.cat([concepts, level_planes, masks], dim=1)

    def run_trunk(self, concepts: Tensor) -> Tensor:
        """Trunk on concept inputs (P,n[+2],h,w) -> (P,C/2,4h,4w).

        Without autograd the two transposed convolutions run on channels-last tensors: on the CPU that is 3-4x
        faster than NCHW (issue 30) and gives the same floats, bit for bit (tested on the shipped codecs); the output
        is then channels-last, which :meth:`run_heads` keeps. With autograd it is the plain ``nn.Sequential``."""
        if torch.is_grad_enabled() or concepts.device.type != "cpu" or not fast_paths.enabled():
            return self.trunk(concepts)
        h = concepts
        for layer in self.trunk:
            if _is_deconv_stage(layer):
                h = h.contiguous(memory_format=torch.channels_last)
            h = layer(h)
        return h

    def skip_logits(self, concepts: Tensor, levels: Tensor | None = None) -> Tensor | None:
        """The skip route's logits (P,3,8h,8w) from the concept maps (P,n,h,w), or None without one."""
        if self.skip is None:
            return None
        if self.level_synthesis is not None:  # the shared basis plus each concept's level's own correction
            if levels is None:
                raise ValueError("this G_l has a synthesis per level: pass the concepts' levels")
            extra = torch.einsum("pchw,pkc->pkhw", concepts, self.level_synthesis[levels])
            extra = extra + self.level_synthesis_bias[levels][:, :, None, None]
            return F.pixel_shuffle(self.skip(concepts) + extra, 8)
        if self.block_basis:  # a learned synthesis basis: each block's 16 values -> its 8x8x3 logits
            return F.pixel_shuffle(self.skip(concepts), 8)
        return F.interpolate(self.skip(concepts), scale_factor=8, mode="bilinear", align_corners=False)

    def run_heads(self, trunk_out: Tensor, class_ids: Tensor, skip: Tensor | None = None) -> Tensor:
        """Per-class deconvolution heads: (P,C/2,4h,4w), (P,) -> y (P,3,8h,8w) in [0,1]."""
        count, channels, height, width = trunk_out.shape
        if count == 0:
            return trunk_out.new_zeros(0, 3, height * 2, width * 2)
        if torch.is_grad_enabled() or trunk_out.device.type != "cpu" or not fast_paths.enabled():
            weight = self.head_weight[class_ids].reshape(count * channels, 3, 4, 4)
            out = F.conv_transpose2d(trunk_out.reshape(1, count * channels, height, width), weight,
                                     stride=2, padding=1, groups=count)
            out = out.view(count, 3, height * 2, width * 2)
        else:  # one plain call per class present, 2-3x faster on the CPU (issue 30): the grouped call's floats on the
            # shipped codecs (tested), within float rounding on other shapes (the test codec's 4-channel heads: 6e-8)
            out = trunk_out.new_empty(count, 3, height * 2, width * 2)
            for cls in class_ids.unique().tolist():
                rows = (class_ids == cls).nonzero().squeeze(1)
                out[rows] = F.conv_transpose2d(trunk_out[rows], self.head_weight[cls], stride=2, padding=1)
        out = out + self.head_bias[class_ids].view(count, 3, 1, 1)
        if skip is not None:
            out = out + skip
        if self.output == "linear":
            pixels = out * 0.25 + 0.5
            return pixels + (pixels.clamp(0.0, 1.0) - pixels).detach()
        return torch.sigmoid(out)

    @staticmethod
    def compose(y: Tensor, class_ids: Tensor, batch_index: Tensor, labels: Tensor) -> Tensor:
        """x_l (B,3,H,W) = sum over concepts of s(m) ⊙ y(m) (eq. 29)."""
        masks = (labels[batch_index] == class_ids.view(-1, 1, 1)).unsqueeze(1).to(y.dtype)
        out = y.new_zeros(labels.shape[0], 3, *labels.shape[-2:])
        return out.index_add_(0, batch_index, y * masks)


class SPADE(nn.Module):
    """Spatially-adaptive normalization: IN(x) * (1 + gamma(s)) + beta(s) (GauGAN).

    ``modulation`` (the label-map branch) can be computed once and passed back in, since it
    depends only on s: the RL environment does so once per episode.
    """

    def __init__(self, channels: int, label_channels: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def modulation(self, segmap: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(1 + gamma(s), beta(s)) at spatial ``size``."""
        hidden = self.shared(F.interpolate(segmap, size=size, mode="nearest"))
        return 1 + self.gamma(hidden), self.beta(hidden)

    def forward(self, x: Tensor, segmap: Tensor | None = None,
                modulation: tuple[Tensor, Tensor] | None = None) -> Tensor:
        scale, shift = modulation if modulation is not None else self.modulation(segmap, x.shape[-2:])
        return self.norm(x) * scale + shift


class SPADEResBlock(nn.Module):
    """SPADE-R: residual block whose normalizations are modulated by the label map."""

    def __init__(self, cin: int, cout: int, label_channels: int, hidden: int) -> None:
        super().__init__()
        mid = min(cin, cout)
        self.norm0 = SPADE(cin, label_channels, hidden)
        self.conv0 = nn.Conv2d(cin, mid, 3, padding=1)
        self.norm1 = SPADE(mid, label_channels, hidden)
        self.conv1 = nn.Conv2d(mid, cout, 3, padding=1)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s = SPADE(cin, label_channels, hidden)
            self.conv_s = nn.Conv2d(cin, cout, 1, bias=False)

    @property
    def spades(self) -> list[SPADE]:
        return [self.norm0, self.norm1] + ([self.norm_s] if self.learned_shortcut else [])

    def forward(self, x: Tensor, segmap: Tensor | None = None,
                modulations: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        mods = modulations or [spade.modulation(segmap, x.shape[-2:]) for spade in self.spades]
        shortcut = self.conv_s(self.norm_s(x, modulation=mods[2])) if self.learned_shortcut else x
        h = self.conv0(F.leaky_relu(self.norm0(x, modulation=mods[0]), 0.2))
        h = self.conv1(F.leaky_relu(self.norm1(h, modulation=mods[1]), 0.2))
        return shortcut + h


class GlobalGenerator(nn.Module):
    """G_g: x_g = G_g(f_hat, s) (eq. 30): three SPADE-R blocks, each followed by 2x upsampling."""

    def __init__(self, code_channels: int, num_classes: int, channels: int = 48, hidden: int = 32) -> None:
        """``code_channels``: channels of the merged f_hat (codec v2: plus the level plane)."""
        super().__init__()
        c0, c1, c2 = channels, max(channels // 2, 4), max(channels // 4, 4)
        self.num_classes = num_classes
        self.head = nn.Conv2d(code_channels, c0, 3, padding=1)
        self.blocks = nn.ModuleList([
            SPADEResBlock(c0, c0, num_classes, hidden),
            SPADEResBlock(c0, c1, num_classes, hidden),
            SPADEResBlock(c1, c2, num_classes, hidden),
        ])
        self.to_image = nn.Conv2d(c2, 3, 3, padding=1)

    def modulations(self, segmap: Tensor, feature_size: tuple[int, int]) -> list[Tensor]:
        """Flat list [scale, shift, ...] of every SPADE layer for one-hot label maps (B,M,H,W).

        Depends only on the label map: compute once per image and pass to :meth:`forward`.
        """
        height, width = feature_size
        out: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            for spade in block.spades:
                out.extend(spade.modulation(segmap, (height << i, width << i)))
        return out

    def forward(self, features: Tensor, segmap: Tensor | None = None, modulations: list[Tensor] | None = None) -> Tensor:
        """features (B,n,h,w) merged f_hat, segmap (B,M,H,W) one-hot (or its cached
        ``modulations``) -> x_g (B,3,H,W) in [0,1]."""
        if modulations is None:
            modulations = self.modulations(segmap, features.shape[-2:])
        pairs = iter(zip(modulations[0::2], modulations[1::2]))
        h = self.head(features)
        for block in self.blocks:
            mods = [next(pairs) for _ in block.spades]
            h = F.interpolate(block(h, modulations=mods), scale_factor=2, mode="nearest")
        return torch.sigmoid(self.to_image(F.leaky_relu(h, 0.2)))


class AttentionFusion(nn.Module):
    """Attention module (eq. 31): three deconvolutions and a convolution -> softmax over
    {local, global}; x_hat = W_l ⊙ x_l + W_g ⊙ x_g."""

    def __init__(self, code_channels: int, channels: int = 16) -> None:
        super().__init__()
        half = max(channels // 2, 2)
        self.body = nn.Sequential(
            deconv_in_relu(code_channels, channels),
            deconv_in_relu(channels, half),
            deconv_in_relu(half, half),
            nn.Conv2d(half, 2, 3, padding=1),
        )

    def weights(self, features: Tensor) -> Tensor:
        """(B,n,h,w) -> (B,2,8h,8w) softmax weights: channel 0 local, channel 1 global."""
        return torch.softmax(self.body(features), dim=1)

    def forward(self, features: Tensor, x_local: Tensor, x_global: Tensor) -> Tensor:
        w = self.weights(features)
        return w[:, :1] * x_local + w[:, 1:] * x_global
