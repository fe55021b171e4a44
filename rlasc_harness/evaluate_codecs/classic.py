"""Engineered baseline codecs through Pillow and pillow-heif (paper Section IV-A.2).

Each codec maps an RGB uint8 image (H,W,3) and one setting of its quality knob to the bytes
of a complete, decodable file, and decodes such bytes back. Nothing is stripped: the rate of
every report is ``len(file) * 8 / (H * W)``, headers and container boxes included.

- ``jpeg``: baseline JPEG (libjpeg via Pillow), 4:2:0, optimized Huffman tables; knob: quality.
- ``jpeg2000``: OpenJPEG via Pillow, 9/7 irreversible wavelet, one quality layer at a target
  compression ratio, written as a raw J2K codestream (``.j2k``, a complete file; the JP2 box
  wrapper would add about 85 bytes); knob: compression ratio (higher = fewer bytes).
- ``webp``: libwebp lossy (VP8), method 6; knob: quality.
- ``avif``: AV1 intra in AVIF via Pillow's AVIF plugin; knob: quality.
- ``heif``: HEVC intra (x265) in HEIF via pillow-heif, the core of BPG; knob: quality.

This module imports no torch, so the isolated decoder process of :mod:`.awgn` starts fast.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image, features

__all__ = ["ClassicCodec", "CLASSIC_CODECS", "DecodeError", "available_codecs", "bits_per_pixel", "get_codec",
           "to_uint8", "unavailable_reason"]


class DecodeError(RuntimeError):
    """A file that the codec's decoder rejects (or that decodes to the wrong size)."""


def bits_per_pixel(data: bytes, height: int, width: int) -> float:
    """The rate of one coded image: ``len(data) * 8 / (H * W)``."""
    return len(data) * 8.0 / (height * width)


def to_uint8(image: Any) -> np.ndarray:
    """A float image (3,H,W) in [0,1] (tensor or array) -> (H,W,3) uint8, rounded."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3,H,W), got {arr.shape}")
    return np.ascontiguousarray((np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0))


def _save(image: np.ndarray, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, fmt, **options)
    return buf.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def _heif_encode(image: np.ndarray, quality: int) -> bytes:
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(image, "RGB")).save(buf, quality=int(quality), chroma=420)
    return buf.getvalue()


def _heif_decode(data: bytes) -> np.ndarray:
    import pillow_heif

    heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
    return np.asarray(heif.to_pillow().convert("RGB"))


def _j2k_ratios() -> tuple[float, ...]:
    """Compression ratios (vs 24-bit RGB) from 400 down to 6, geometric: low rate first."""
    return tuple(float(r) for r in np.round(np.geomspace(400.0, 6.0, 64), 2))


@dataclass(frozen=True)
class ClassicCodec:
    """One engineered codec: ``grid`` holds its settings ordered from the lowest rate up."""

    name: str
    label: str  # for plots and reports
    knob: str  # what a setting means ("quality", "compression ratio")
    grid: tuple[Any, ...]
    _encode: Callable[[np.ndarray, Any], bytes] = field(repr=False)
    _decode: Callable[[bytes], np.ndarray] = field(repr=False)
    library: str = ""

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        """RGB uint8 (H,W,3) -> bytes of a complete file at ``setting``."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 image (H,W,3), got {image.dtype} {image.shape}")
        return self._encode(image, setting)

    def decode(self, data: bytes, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Bytes -> RGB uint8 (H,W,3); :class:`DecodeError` when the decoder fails or the size differs."""
        try:
            out = self._decode(bytes(data))
        except Exception as exc:  # every library raises its own types (OSError, ValueError, SyntaxError, ...)
            raise DecodeError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if shape is not None and tuple(out.shape[:2]) != tuple(shape):
            raise DecodeError(f"{self.name}: decoded to {out.shape[1]}x{out.shape[0]}, expected {shape[1]}x{shape[0]}")
        return out


def _jpeg() -> ClassicCodec:
    return ClassicCodec("jpeg", "JPEG", "quality", tuple(range(1, 96)),
                        lambda im, q: _save(im, "JPEG", quality=int(q), optimize=True, subsampling="4:2:0"),
                        _pillow_decode, "libjpeg (Pillow)")


def _jpeg2000() -> ClassicCodec:
    return ClassicCodec("jpeg2000", "JPEG2000", "compression ratio", _j2k_ratios(),
                        lambda im, r: _save(im, "JPEG2000", quality_mode="rates", quality_layers=[float(r)],
                                            irreversible=True, no_jp2=True),
                        _pillow_decode, "OpenJPEG (Pillow), J2K codestream")


def _webp() -> ClassicCodec:
    return ClassicCodec("webp", "WebP", "quality", tuple(range(0, 101)),
                        lambda im, q: _save(im, "WEBP", quality=int(q), method=6),
                        _pillow_decode, "libwebp (Pillow)")


def _avif() -> ClassicCodec:
    return ClassicCodec("avif", "AVIF", "quality", tuple(range(0, 101, 2)),
                        lambda im, q: _save(im, "AVIF", quality=int(q), subsampling="4:2:0"),
                        _pillow_decode, "AV1 intra (Pillow AVIF plugin)")


def _heif() -> ClassicCodec:
    return ClassicCodec("heif", "HEIF (HEVC, BPG core)", "quality", tuple(range(0, 101, 2)),
                        _heif_encode, _heif_decode, "x265 + libde265 (pillow-heif)")


CLASSIC_CODECS: dict[str, Callable[[], ClassicCodec]] = {
    "jpeg": _jpeg, "jpeg2000": _jpeg2000, "webp": _webp, "avif": _avif, "heif": _heif,
}


def unavailable_reason(name: str) -> str | None:
    """Why codec ``name`` cannot run in this installation (None when it can)."""
    if name not in CLASSIC_CODECS:
        return f"unknown codec {name!r}; known: {sorted(CLASSIC_CODECS)}"
    feature = {"jpeg": "jpg", "jpeg2000": "jpg_2000", "webp": "webp", "avif": "avif"}.get(name)
    if feature is not None and not features.check(feature):
        return f"this Pillow build lacks {feature!r} support"
    if name == "heif":
        try:
            import pillow_heif
        except ImportError:
            return "pillow-heif is not installed"
        info = pillow_heif.libheif_info()
        if not info.get("HEIF") and not any("265" in str(v) for v in info.get("encoders", {}).values()):
            return "pillow-heif has no HEVC encoder"
    return None


def get_codec(name: str) -> ClassicCodec:
    """The classic codec ``name`` (ValueError when unknown or unavailable here)."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise ValueError(f"codec {name!r} is unavailable: {reason}")
    return CLASSIC_CODECS[name]()


def available_codecs(names: tuple[str, ...] | list[str]) -> tuple[list[ClassicCodec], dict[str, str]]:
    """(codecs that run here, {name: reason} for the others)."""
    ok, skipped = [], {}
    for name in names:
        reason = unavailable_reason(name)
        if reason is None:
            ok.append(CLASSIC_CODECS[name]())
        else:
            skipped[name] = reason
    return ok, skipped


# --------------------------------------------------------------------------- isolated decoding
# ``python classic.py --serve`` decodes files sent on stdin, one at a time, and answers on
# stdout; a decoder that crashes or hangs on a corrupted file takes only this process down
# (see :class:`rlasc_harness.evaluate_codecs.awgn.IsolatedDecoder`). Request: 4-byte big-endian
# length + UTF-8 "codec height width", 4-byte length + file bytes. Answer: 1 status byte
# (0 ok, 1 error) + 4-byte length + raw RGB bytes (H*W*3) or the error message.

def _read_exact(stream: Any, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _serve() -> None:
    import os
    import resource
    import struct
    import sys

    out = os.fdopen(os.dup(1), "wb")  # protocol channel; libraries printing to stdout go to /dev/null
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a corrupted header cannot eat the machine
    except (ValueError, OSError):
        pass
    stdin = sys.stdin.buffer
    codecs: dict[str, ClassicCodec] = {}
    while True:
        try:
            head = _read_exact(stdin, int.from_bytes(_read_exact(stdin, 4), "big")).decode()
            data = _read_exact(stdin, int.from_bytes(_read_exact(stdin, 4), "big"))
        except EOFError:
            return
        name, height, width = head.split()
        shape = (int(height), int(width))
        Image.MAX_IMAGE_PIXELS = max(8 * shape[0] * shape[1], 1 << 16)  # decompression-bomb guard
        try:
            codec = codecs.get(name) or codecs.setdefault(name, CLASSIC_CODECS[name]())
            payload, status = codec.decode(data, shape).tobytes(), 0
        except Exception as exc:  # reported to the parent as a failed decode
            text = str(exc) if isinstance(exc, DecodeError) else f"{name}: {type(exc).__name__}: {exc}"
            payload, status = text.encode()[:2000], 1
        out.write(struct.pack(">BI", status, len(payload)) + payload)
        out.flush()


if __name__ == "__main__":
    _serve()
