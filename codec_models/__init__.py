"""RL-ASC semantic codec (arXiv 2208.04094, Sections II-A, III-A, III-B): data sets,
networks, quantizer, entropy-coded bitstream, channels, checkpoints. Knows nothing of RL."""
from __future__ import annotations

from .bitstream import BitstreamError
from .checkpoint import CheckpointError, load_codec
from .codec import Analysis, SemanticCodec
from .config import CODEC_PRESETS, CodecConfig, codec_preset
from .datasets import load_dataset

__all__ = [
    "Analysis", "BitstreamError", "CheckpointError", "CODEC_PRESETS", "CodecConfig", "SemanticCodec",
    "codec_preset", "load_codec", "load_dataset",
]
