"""No-learning reference codecs R0 and R1: the floor a semantic codec must clear.

Both send the codec's own label map s (the same lossless payload r_s, eq. 27) and then colours:

- **R0**: the mean colour of each class present in the image (3 bytes per class).
- **R1**: the mean colour of each (class, 8x8 block) pair, i.e. of every position of every
  concept mask s_d(m) (eq. 1-2) (3 bytes per pair, in class then raster order).

The decoder paints every pixel with the colour of its class (R0) or of its class inside its
block (R1). The bytes are real and decode: ``varint(len(r_s)) | r_s | uint8 colours``, so the
rate counts exactly what a receiver needs beyond the shape the codec already knows. A codec
whose highest level reconstructs worse than R1 spends its feature bits on nothing (docs/design.md).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .bitstream import BitstreamError, _read_varint, _write_varint

__all__ = ["REFERENCES", "reference_compress", "reference_decompress"]

REFERENCES = ("r0", "r1")
Reference = Literal["r0", "r1"]


def _check(name: str) -> None:
    if name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; choose from {REFERENCES}")


def _cells(labels: Tensor, num_classes: int, name: str, block: int) -> Tensor:
    """Cell id of every pixel (H,W): its class (R0) or class * blocks + block index (R1)."""
    if name == "r0":
        return labels
    h, w = labels.shape
    rows = torch.arange(h, device=labels.device).view(-1, 1) // block
    cols = torch.arange(w, device=labels.device).view(1, -1) // block
    return labels * ((h // block) * (w // block)) + rows * (w // block) + cols


@torch.no_grad()
def reference_compress(codec, image: Tensor, name: Reference = "r1") -> bytes:
    """Code ``image`` (3,H,W) in [0,1] as reference ``name`` with ``codec``'s label map and label coder."""
    _check(name)
    images = codec.check_images(image)
    if images.shape[0] != 1:
        raise ValueError("reference_compress takes one image (3,H,W)")
    labels = codec.segment(images)[0]
    cells = _cells(labels, codec.num_classes, name, codec.config.downscale).flatten()
    pixels = images[0].flatten(1)  # (3, H*W)
    used, inverse = torch.unique(cells, return_inverse=True)  # sorted: class order, then raster order
    sums = torch.zeros(3, len(used), device=pixels.device).index_add_(1, inverse, pixels)
    counts = torch.bincount(inverse, minlength=len(used)).clamp_min(1)
    colours = (sums / counts * 255 + 0.5).clamp(0, 255).to(torch.uint8).T.contiguous()  # (cells, 3)
    label_payload = codec.encode_labels(labels)
    return _write_varint(len(label_payload)) + label_payload + colours.cpu().numpy().tobytes()


@torch.no_grad()
def reference_decompress(codec, data: bytes, height: int, width: int, name: Reference = "r1") -> Tensor:
    """Inverse of :func:`reference_compress`: image (3,H,W). Invalid bytes raise BitstreamError."""
    from .entropy import decode_label_map

    _check(name)
    data = bytes(data)
    label_len, pos = _read_varint(data, 0, "label length")
    if pos + label_len > len(data):
        raise BitstreamError(f"truncated: {len(data)} bytes, the label map needs {pos + label_len}")
    _, label_model = codec._require_tables()
    labels_np = decode_label_map(data[pos:pos + label_len], height, width, label_model)
    labels = torch.from_numpy(labels_np.astype(np.int64))
    cells = _cells(labels, codec.num_classes, name, codec.config.downscale).flatten()
    used, inverse = torch.unique(cells, return_inverse=True)
    colours = np.frombuffer(data[pos + label_len:], np.uint8)
    if colours.size != 3 * len(used):
        raise BitstreamError(f"{colours.size} colour bytes for {len(used)} cells (expected {3 * len(used)})")
    table = torch.from_numpy(colours.reshape(-1, 3).astype(np.float32) / 255.0)
    return table[inverse].T.reshape(3, height, width).to(codec.device)


def bicubic_reference(image: Tensor, factor: int = 8) -> Tensor:
    """``factor`` x area downsampling then bicubic upsampling (no rate; a smoothness yardstick)."""
    small = F.interpolate(image[None], scale_factor=1 / factor, mode="area")
    return F.interpolate(small, size=image.shape[-2:], mode="bicubic", align_corners=False)[0].clamp(0, 1)
