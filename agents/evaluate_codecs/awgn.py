"""Robustness to channel noise (Fig. 12): BPSK over AWGN on the real bytes of every codec.

Every coded file goes through ``codec_models.channel.AWGNBPSK(snr)`` (hard decisions, real bit
flips); the receiver decodes what arrives. RL-ASC decodes with ``strict=False`` (a damaged
concept falls back to its coarsest reconstruction; a damaged header fails). Engineered codecs
decode in a separate process (:class:`IsolatedDecoder`), so a decoder that crashes or hangs on
a corrupted file fails that file only. A file that does not decode (or decodes to another
size) scores 0 and is counted in ``failed_share``. The score is the segmentation task's mIoU
(mean over images of the per-image mIoU, as everywhere in this evaluation), averaged over seeds.
"""
from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from codec_models.channel import AWGNBPSK

from .classic import DecodeError

__all__ = ["AwgnSubject", "IsolatedDecoder", "awgn_curve", "bit_errors", "channel_rng"]

DecodeFn = Callable[[bytes], Tensor]  # bytes -> image (3,H,W) in [0,1]; raises DecodeError


@dataclass
class AwgnSubject:
    """One codec at one operating point: the coded file of every image and its receiver."""

    name: str
    payloads: list[bytes]
    decode: DecodeFn
    setting: Any = None

    @property
    def bpp_per_image(self) -> list[int]:
        return [len(p) * 8 for p in self.payloads]


class IsolatedDecoder:
    """Decodes engineered-codec files in a child process (``classic.py --serve``).

    A crash, hang (``timeout`` seconds) or protocol error of the child fails that file with a
    :class:`DecodeError`; the next call starts a fresh child.
    """

    def __init__(self, timeout: float = 20.0) -> None:
        self.timeout = float(timeout)
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        script = Path(__file__).with_name("classic.py")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, bufsize=0)
        return self.proc

    def close(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.restarts += 1

    def __enter__(self) -> "IsolatedDecoder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _read(self, n: int) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            ready, _, _ = select.select([fd], [], [], self.timeout)
            if not ready:
                raise TimeoutError(f"decoder gave no answer within {self.timeout:.0f} s")
            chunk = os.read(fd, n - got)
            if not chunk:
                raise EOFError("decoder process died")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def decode(self, codec: str, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (H,W,3) of ``data`` decoded by ``codec``; :class:`DecodeError` on any failure."""
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        head = f"{codec} {shape[0]} {shape[1]}".encode()
        try:
            proc.stdin.write(struct.pack(">I", len(head)) + head + struct.pack(">I", len(data)) + bytes(data))
            status, length = struct.unpack(">BI", self._read(5))
            payload = self._read(length)
        except (OSError, EOFError, TimeoutError, struct.error) as exc:
            self._kill()
            raise DecodeError(f"{codec}: decoder process failed ({type(exc).__name__}: {exc})") from None
        if status != 0:
            raise DecodeError(payload.decode(errors="replace"))
        return np.frombuffer(payload, np.uint8).reshape(shape[0], shape[1], 3)


def bit_errors(sent: bytes, received: bytes) -> int:
    """Number of bits that differ between two byte strings of equal length."""
    a, b = np.frombuffer(bytes(sent), np.uint8), np.frombuffer(bytes(received), np.uint8)
    return int(np.unpackbits(a ^ b).sum())


def channel_rng(seed: int, snr_index: int, image_index: int) -> np.random.Generator:
    """The noise generator of one (seed, SNR, image): every codec sees independent, reproducible noise."""
    return np.random.default_rng([int(seed), int(snr_index), int(image_index)])


@torch.no_grad()
def awgn_curve(subject: AwgnSubject, score_fn: Callable[[Tensor, Sequence[int]], Tensor], snrs: Sequence[float],
               seeds: Sequence[int], shape: tuple[int, int], batch_size: int = 16, progress: bool = True,
               clean: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """``[{"snr_db", "score", "score_std", "failed_share", "ber", "bit_errors_share"}]`` for one subject.

    ``score_fn(images (B,3,H,W), image indices)`` -> per-image scores (B,); a failed decode scores 0.
    ``score_std`` is the standard deviation of the per-seed means. A file that arrives without a
    bit error is decoded and scored once (its later error-free arrivals reuse that score); ``clean``
    may hold those scores already ({image index: score}).
    """
    out = []
    n = len(subject.payloads)
    clean = dict(clean or {})  # score of image i when its file arrives unchanged (decoders are deterministic)
    bar = tqdm(total=len(snrs) * len(seeds) * n, desc=f"awgn {subject.name}", disable=not progress, leave=False,
               unit="img")
    for s_idx, snr in enumerate(snrs):
        channel = AWGNBPSK(snr)
        seed_scores, failures, flipped, total_bits = [], 0, 0, 0
        reasons: dict[str, int] = {}
        for seed in seeds:
            scores = torch.zeros(n, dtype=torch.float64)
            for start in range(0, n, batch_size):
                idx = list(range(start, min(n, start + batch_size)))
                decoded, ok_idx, unchanged = [], [], set()
                for i in idx:
                    sent = subject.payloads[i]
                    received = channel.transmit(sent, channel_rng(seed, s_idx, i))
                    errors = bit_errors(sent, received)
                    flipped += errors
                    total_bits += 8 * len(sent)
                    if errors == 0:
                        if i in clean:
                            scores[i] = clean[i]
                            continue
                        unchanged.add(i)
                    try:
                        image = subject.decode(received)
                        if tuple(image.shape[-2:]) != tuple(shape):
                            raise DecodeError(f"decoded to {tuple(image.shape[-2:])}, expected {tuple(shape)}")
                    except DecodeError as exc:
                        failures += 1
                        key = ":".join(str(exc).split(":")[:2])[:60] or "DecodeError"
                        reasons[key] = reasons.get(key, 0) + 1
                        continue
                    decoded.append(image.float().clamp(0, 1))
                    ok_idx.append(i)
                if decoded:
                    values = score_fn(torch.stack(decoded), ok_idx).double()
                    scores[ok_idx] = values
                    clean.update({i: v for i, v in zip(ok_idx, values.tolist()) if i in unchanged})
                bar.update(len(idx))
            seed_scores.append(float(scores.mean()))
        arr = np.asarray(seed_scores)
        out.append({"snr_db": float(snr), "score": float(arr.mean()), "score_std": float(arr.std()),
                    "failed_share": failures / float(n * len(seeds)), "ber": channel.bit_error_rate,
                    "bit_errors_share": flipped / total_bits if total_bits else 0.0,
                    "failure_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])})
    bar.close()
    return out
