"""Channel models for the real bitstream (paper Sec. III-A: ``r_s`` and ``r^(m)`` are sent
over a wireless channel; lossless unless stated, AWGN in the robustness experiments).

Every channel maps bytes to bytes of the same length, flipping real bits of the stream.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Channel", "Lossless", "BinarySymmetric", "AWGNBPSK", "make_channel"]


@runtime_checkable
class Channel(Protocol):
    """Anything with ``transmit(data, rng) -> bytes`` (same length as ``data``)."""

    def transmit(self, data: bytes, rng: np.random.Generator) -> bytes: ...


def _bits(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))


def _flip(data: bytes, errors: np.ndarray) -> bytes:
    """XOR ``data`` with a boolean error pattern of ``8 * len(data)`` bits."""
    mask = np.packbits(errors.astype(np.uint8))
    return (np.frombuffer(bytes(data), dtype=np.uint8) ^ mask).tobytes()


class Lossless:
    """The paper's default channel: the receiver gets the bits unchanged."""

    bit_error_rate = 0.0

    def transmit(self, data: bytes, rng: np.random.Generator) -> bytes:
        return bytes(data)

    def __repr__(self) -> str:
        return "Lossless()"


class BinarySymmetric:
    """Binary symmetric channel: every bit flips independently with probability ``p``."""

    def __init__(self, p: float) -> None:
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"BSC flip probability must be in [0, 1], got {p}")
        self.p = p

    @property
    def bit_error_rate(self) -> float:
        return self.p

    def transmit(self, data: bytes, rng: np.random.Generator) -> bytes:
        if not data or self.p == 0.0:
            return bytes(data)
        return _flip(data, rng.random(8 * len(data)) < self.p)

    def __repr__(self) -> str:
        return f"BinarySymmetric(p={self.p:g})"


class AWGNBPSK:
    """BPSK over AWGN with hard decisions, ``Es/N0 = snr_db`` (dB).

    Bits map to ``+1`` (0) / ``-1`` (1), Gaussian noise of variance ``1 / (2 * snr)`` is
    added, and the receiver decides by sign; the bit error rate is ``Q(sqrt(2 * snr))``.
    """

    def __init__(self, snr_db: float) -> None:
        snr_db = float(snr_db)
        if not math.isfinite(snr_db):
            raise ValueError(f"SNR must be a finite number of dB, got {snr_db}")
        self.snr_db = snr_db

    @property
    def snr_linear(self) -> float:
        return 10.0 ** (self.snr_db / 10.0)

    @property
    def bit_error_rate(self) -> float:
        """Theoretical ``Q(sqrt(2 * snr)) = erfc(sqrt(snr)) / 2``."""
        return 0.5 * math.erfc(math.sqrt(self.snr_linear))

    def transmit(self, data: bytes, rng: np.random.Generator) -> bytes:
        if not data:
            return b""
        bits = _bits(data)
        symbols = 1.0 - 2.0 * bits
        sigma = math.sqrt(1.0 / (2.0 * self.snr_linear))
        received = symbols + sigma * rng.standard_normal(bits.size)
        return np.packbits(received < 0.0).tobytes()

    def __repr__(self) -> str:
        return f"AWGNBPSK(snr_db={self.snr_db:g})"


def make_channel(spec: str) -> Channel:
    """Channel from a spec: ``"lossless"``, ``"bsc:<p>"`` or ``"awgn:<snr dB>"``."""
    if not isinstance(spec, str):
        raise ValueError(f"channel spec must be a string, got {type(spec).__name__}")
    name, _, arg = spec.strip().lower().partition(":")
    if name == "lossless" and not arg:
        return Lossless()
    if name in ("bsc", "awgn") and arg:
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"channel spec {spec!r}: {arg!r} is not a number") from None
        return BinarySymmetric(value) if name == "bsc" else AWGNBPSK(value)
    raise ValueError(
        f"unknown channel spec {spec!r}; expected 'lossless', 'bsc:<p>' or 'awgn:<snr_db>'"
    )
