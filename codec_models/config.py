"""Codec configuration (dataclass) and the presets ``tiny`` and ``paper`` (DESIGN.md)."""
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

    @property
    def num_levels(self) -> int:
        return len(self.level_centers)

    @property
    def downscale(self) -> int:
        return 8

    def validate(self) -> "CodecConfig":
        if self.height % 8 or self.width % 8:
            raise ValueError(f"image size {self.height}x{self.width} must be a multiple of 8")
        if not 1 <= self.num_classes <= 255:
            raise ValueError("num_classes must be in [1, 255]")
        if any(k < 2 for k in self.level_centers) or list(self.level_centers) != sorted(self.level_centers):
            raise ValueError("level_centers must be increasing and >= 2")
        if self.coder not in ("huffman", "range"):
            raise ValueError(f"coder must be 'huffman' or 'range', not {self.coder!r}")
        return self

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


_PAPER = CodecConfig(
    name="paper", height=256, width=512, feature_channels=64, code_channels=16,
    local_channels=64, global_channels=128, spade_hidden=64, attention_channels=32,
    segmenter_widths=(32, 64, 128, 256), perceptual_widths=(32, 64, 128, 256),
    disc_channels=64, disc_scales=3,
)

CODEC_PRESETS: dict[str, CodecConfig] = {
    "tiny": CodecConfig(),
    # Paper: 256x512, n in {16, 32, 64} for the low/medium/high bitrate modes, Q = 6.
    "paper": _PAPER,
    "paper-medium": replace(_PAPER, name="paper-medium", code_channels=32),
    "paper-high": replace(_PAPER, name="paper-high", feature_channels=128, code_channels=64),
    # For tests: the smallest networks that exercise every code path.
    "test": CodecConfig(
        name="test", height=32, width=64, feature_channels=8, code_channels=2,
        level_centers=(2, 4, 8), local_channels=8, local_res_blocks=1, global_channels=8,
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
