"""Codec configuration (dataclass) and the presets ``tiny`` and ``paper`` (docs/design.md)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class CodecConfig:
    """Architecture and quantization settings of one semantic codec."""

    name: str = "tiny"
    height: int = 64
    width: int = 128
    num_classes: int = 19  # M
    feature_channels: int = 32  # N: width of E before the projection to n channels
    code_channels: int = 4  # n: channels of f (the bitrate mode, Section IV-A.4)
    level_centers: tuple[int, ...] = (2, 3, 4, 6, 8, 12)  # centres per level, Q = len
    soft_sigma: float = 1.0  # softness of eq. 25, scaled by the centre spacing
    local_channels: int = 32  # width of G_l's trunk
    local_res_blocks: int = 5
    global_channels: int = 32  # width of G_g's first SPADE block
    spade_hidden: int = 16
    attention_channels: int = 16
    segmenter_widths: tuple[int, ...] = (16, 32, 64)
    perceptual_widths: tuple[int, ...] = (16, 32, 64)
    disc_channels: int = 32
    disc_scales: int = 2
    coder: str = "huffman"  # "huffman" (eq. 26) or "range"
    # Codec generation: 1 is the first codec (env -v0: instance-normalized E and G_l, every level
    # codes all n channels, the decoder is not told the level, format-1 bitstreams); 2 is codec v2
    # (env -v1: batch norm in E, no instance norm in G_l's trunk, per-level channel counts, the
    # decoder sees each concept's level and mask, format-2 bitstreams). Old checkpoints have no such
    # key and load as generation 1.
    architecture: int = 1
    level_channels: tuple[int, ...] = ()  # channels of f kept at each level (empty: all n at every level)
    # Ablation switches (None: what the architecture generation uses).
    encoder_norm: str | None = None  # normalization in E: "instance" (v1), "batch" or "none"
    local_norm: bool | None = None  # instance norm in G_l's trunk (v1: yes, v2: no)
    level_input: bool | None = None  # the decoder sees each concept's level (and G_l its mask) (v1: no, v2: yes)
    local_skip: bool | None = None  # G_l adds a 1x1 projection of f_hat(m), upsampled, to its logits (v1: no, v2: yes)
    block_basis: bool = False  # E adds a linear 8x8-patch analysis (stride-8 conv) to f, and G_l's skip is a
    # learned synthesis basis per block (1x1 conv to 3*64 values, pixel shuffle) instead of one colour per block
    level_synthesis: bool = False  # block_basis: G_l's synthesis also gets a learned correction per level
    encoder_bound: str | None = None  # how E bounds f to [-1, 1]: "tanh" (default) or "clamp" (clamp forward,
    # identity gradient; an ablation against tanh saturating onto the quantizer's end centres)
    block_scale: str = "channel"  # block_basis warm start: "channel" scales every PCA channel to the same spread;
    # "common" keeps the transform orthonormal (one scale for all channels), so each level is one quantization
    # step size in the transform domain and low-energy channels cost few bits (classic transform coding)
    local_output: str = "sigmoid"  # how G_l turns logits into pixels: "sigmoid", or "linear" (clamp(logit/4 + 1/2),
    # identity gradient: the block synthesis is then exactly linear, as a block transform's inverse is)
    base_section: bool = False  # bitstream format 4: concepts at level 0 share one base section (no entry, length,
    # CRC or padding of their own; codec_models/bitstream.py), always in the Huffman pair code (``coder`` then
    # applies to the concepts above level 0). Not an architecture change:
    # the same weights code either way, only the container and so the rate differ
    channel_step_ratio: float = 1.0  # quantization matrix: channel c of n gets the level's step times
    # ratio ** (c / (n - 1)), coarser for the later (high-frequency) block coefficients, as JPEG's per-frequency
    # steps; 1: one step for all channels (every shipped codec). Needs odd level_centers

    @property
    def num_levels(self) -> int:
        return len(self.level_centers)

    @property
    def downscale(self) -> int:
        return 8

    @property
    def encoder_norm_kind(self) -> str:
        kind = self.encoder_norm or ("instance" if self.architecture < 2 else "batch")
        if kind not in ("instance", "batch", "none"):
            raise ValueError(f"encoder_norm must be 'instance', 'batch' or 'none', not {kind!r}")
        return kind

    @property
    def uses_local_norm(self) -> bool:
        return self.architecture < 2 if self.local_norm is None else bool(self.local_norm)

    @property
    def uses_level_input(self) -> bool:
        return self.architecture >= 2 if self.level_input is None else bool(self.level_input)

    @property
    def uses_local_skip(self) -> bool:
        return self.architecture >= 2 if self.local_skip is None else bool(self.local_skip)

    @property
    def encoder_bound_kind(self) -> str:
        kind = self.encoder_bound or "tanh"
        if kind not in ("tanh", "clamp"):
            raise ValueError(f"encoder_bound must be 'tanh' or 'clamp', not {kind!r}")
        return kind

    def channels_at(self, level: int) -> int:
        """Channels of f that level ``level`` codes (the first ones; the rest are not sent)."""
        return self.level_channels[level] if self.level_channels else self.code_channels

    def validate(self) -> "CodecConfig":
        if self.height % 8 or self.width % 8:
            raise ValueError(f"image size {self.height}x{self.width} must be a multiple of 8")
        if not 1 <= self.num_classes <= 255:
            raise ValueError("num_classes must be in [1, 255]")
        if any(k < 2 for k in self.level_centers) or list(self.level_centers) != sorted(self.level_centers):
            raise ValueError("level_centers must be increasing and >= 2")
        if self.architecture not in (1, 2):
            raise ValueError(f"architecture must be 1 (codec v1) or 2 (codec v2), not {self.architecture!r}")
        if self.level_channels:
            lc = list(self.level_channels)
            if len(lc) != self.num_levels or lc != sorted(lc) or lc[0] < 1 or lc[-1] != self.code_channels:
                raise ValueError(f"level_channels {self.level_channels} must be {self.num_levels} non-decreasing "
                                 f"counts in [1, {self.code_channels}] ending at code_channels")
        if self.block_scale not in ("channel", "common"):
            raise ValueError(f"block_scale must be 'channel' or 'common', not {self.block_scale!r}")
        if self.local_output not in ("sigmoid", "linear"):
            raise ValueError(f"local_output must be 'sigmoid' or 'linear', not {self.local_output!r}")
        if self.coder not in ("huffman", "range"):
            raise ValueError(f"coder must be 'huffman' or 'range', not {self.coder!r}")
        graded = self.channel_step_ratio != 1.0
        if self.channel_step_ratio < 1.0 or (graded and any(k % 2 == 0 for k in self.level_centers)):
            raise ValueError(f"channel_step_ratio {self.channel_step_ratio} must be >= 1, and above 1 it needs odd "
                             f"level_centers (0 a centre), not {self.level_centers}")
        if self.base_section and self.architecture < 2:
            raise ValueError("base_section (bitstream format 4) needs codec v2 (architecture 2)")
        return self

    def id_dict(self) -> dict[str, Any]:
        """What the codec id hashes: ``to_dict`` without the fields added after ids were published, while they
        hold their default (so that every older codec keeps its id)."""
        out = self.to_dict()
        if not out["base_section"]:
            del out["base_section"]
        if out["channel_step_ratio"] == 1.0:
            del out["channel_step_ratio"]
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CodecConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown codec config keys {sorted(unknown)}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data).validate()


def level_channel_schedule(code_channels: int) -> tuple[int, ...]:
    """Channels kept per level for ``n`` channels: 1/16, 3/16, 5/16, 1/2, 3/4 and all of them."""
    return tuple(max(1, round(code_channels * k / 16)) for k in (1, 3, 5, 8, 12, 16))


_PAPER = CodecConfig(
    name="paper", height=256, width=512, feature_channels=64, code_channels=16, architecture=2,
    level_channels=level_channel_schedule(16),
    local_channels=64, global_channels=128, spade_hidden=64, attention_channels=32,
    segmenter_widths=(32, 64, 128, 256), perceptual_widths=(32, 64, 128, 256),
    disc_channels=64, disc_scales=3,
)

# Codec v2 (env -v1), the embedded default: n = 32 channels at 1/8 resolution (0.5 feature values
# per pixel, the paper's medium bitrate mode); level q codes the first level_channels[q] channels
# with level_centers[q] centres, so coarse levels hold strictly less information. f is an
# orthonormal block transform of the image (one scale for all channels), so each level is one
# quantization step size: channels of little energy are mostly zeros and cost few bits.
_TINY_V2 = CodecConfig(
    name="tiny", architecture=2, code_channels=32, feature_channels=48, block_basis=True,
    level_centers=(5, 9, 13, 17, 25, 33), level_channels=(1, 4, 8, 16, 24, 32), block_scale="common",
    local_output="linear",
    local_channels=48, local_res_blocks=3, global_channels=32, spade_hidden=16, attention_channels=16,
)

CODEC_PRESETS: dict[str, CodecConfig] = {
    "tiny": _TINY_V2,
    # The first codec (env -v0), kept so that its shipped weights load and can be retrained.
    "tiny-v0": CodecConfig(name="tiny-v0"),
    # Paper: 256x512, n in {16, 32, 64} for the low/medium/high bitrate modes, Q = 6.
    "paper": _PAPER,
    "paper-medium": replace(_PAPER, name="paper-medium", code_channels=32, level_channels=level_channel_schedule(32)),
    "paper-high": replace(_PAPER, name="paper-high", feature_channels=128, code_channels=64,
                          level_channels=level_channel_schedule(64)),
    # For tests: the smallest networks that exercise every code path.
    "test": CodecConfig(
        name="test", height=32, width=64, feature_channels=8, code_channels=2,
        level_centers=(2, 4, 8), local_channels=8, local_res_blocks=1, global_channels=8,
        spade_hidden=8, attention_channels=4, segmenter_widths=(4, 8), perceptual_widths=(4, 8),
        disc_channels=8, disc_scales=1,
    ),
    "test-v2": CodecConfig(
        name="test-v2", height=32, width=64, feature_channels=8, code_channels=4, architecture=2,
        level_centers=(2, 4, 8), level_channels=(1, 2, 4), local_channels=8, local_res_blocks=1, global_channels=8,
        spade_hidden=8, attention_channels=4, segmenter_widths=(4, 8), perceptual_widths=(4, 8),
        disc_channels=8, disc_scales=1,
    ),
}


def codec_preset(name: str, **overrides: Any) -> CodecConfig:
    """Return the named preset, with field overrides."""
    if name not in CODEC_PRESETS:
        raise ValueError(f"unknown codec preset {name!r}; choose from {sorted(CODEC_PRESETS)}")
    return replace(CODEC_PRESETS[name], **overrides).validate()


__all__ = ["CodecConfig", "CODEC_PRESETS", "codec_preset", "field"]
