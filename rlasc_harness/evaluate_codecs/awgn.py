"""Robustness to channel noise (Fig. 12): BPSK over AWGN on the real bytes of every codec.

Every coded file goes through ``codec_models.channel.AWGNBPSK(snr)`` (hard decisions, real bit
flips); the receiver decodes what arrives. RL-ASC decodes with ``strict=False`` (a damaged
concept falls back to its coarsest reconstruction; a damaged header fails). Engineered codecs
decode in a separate process (:class:`IsolatedDecoder`), so a decoder that crashes or hangs on
a corrupted file fails that file only. A file that does not decode (or decodes to another
size) scores 0 and is counted in ``failed_share``. The score is the segmentation task's mIoU
(mean over images of the per-image mIoU, as everywhere in this evaluation), averaged over seeds.
With a detection task and the data set's instance maps, each point also carries ``map50``: the
detection H's mAP@0.5 over the received images of each seed against the instance boxes (a file
that fails to decode contributes no detection, so its objects are missed), averaged over seeds.
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

from codec_models.bitstream import BitstreamError
from codec_models.channel import AWGNBPSK

from .classic import ClassicCodec, DecodeError, bits_per_pixel
from .metrics import per_image_miou
from .sweep import EvalSet, PointResult, calibrate

__all__ = ["AwgnSettings", "AwgnSubject", "IsolatedDecoder", "PooledScore", "awgn_curve", "bit_errors", "channel_rng",
           "classic_receiver", "detection_map50", "rate_matched_files", "rlasc_receiver", "run_awgn"]

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


@dataclass
class PooledScore:
    """A data-set figure of the received images (e.g. detection mAP@0.5): H's output per image, then one
    score over all images of a seed. ``score`` gets one output per image, None where the file failed."""

    key: str
    collect: Callable[[Tensor], list[Any]]  # decoded images (B,3,H,W) -> one output per image
    score: Callable[[list[Any]], float | None]


def detection_map50(task: Any, targets: Sequence[dict[str, Tensor]]) -> PooledScore:
    """``map50`` of the detection ``task`` against ``targets`` (one per image, the data set's instance
    boxes): ``detection_training.mean_average_precision``; a failed file gives no detection."""
    from rlasc_env.tasks.detection_training import mean_average_precision

    def score(outputs: list[Any]) -> float | None:
        empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
        value = mean_average_precision([empty if o is None else o for o in outputs], list(targets),
                                       per_class=False)["map_50"]
        return value if value >= 0 else None  # -1: no ground-truth box among these images

    return PooledScore("map50", task.detections, score)


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
               clean: dict[int, float] | None = None, pooled: PooledScore | None = None,
               clean_outputs: dict[int, Any] | None = None) -> list[dict[str, Any]]:
    """``[{"snr_db", "score", "score_std", "failed_share", "ber", "bit_errors_share"}]`` for one subject
    (plus ``pooled.key`` and its ``_std`` over seeds when ``pooled`` is given).

    ``score_fn(images (B,3,H,W), image indices)`` -> per-image scores (B,); a failed decode scores 0.
    ``score_std`` is the standard deviation of the per-seed means. A file that arrives without a
    bit error is decoded and scored once (its later error-free arrivals reuse that score); ``clean``
    may hold those scores already ({image index: score}), ``clean_outputs`` the pooled figure's
    outputs of those images; a seed whose files all arrive unchanged reuses the clean figure.
    """
    out = []
    n = len(subject.payloads)
    clean = dict(clean or {})  # score of image i when its file arrives unchanged (decoders are deterministic)
    clean_outputs = dict(clean_outputs or {})
    clean_figure: list[float | None] = []  # the pooled figure when every file arrives unchanged, once computed
    bar = tqdm(total=len(snrs) * len(seeds) * n, desc=f"awgn {subject.name}", disable=not progress, leave=False,
               unit="img")
    for s_idx, snr in enumerate(snrs):
        channel = AWGNBPSK(snr)
        seed_scores, seed_figures, failures, flipped, total_bits = [], [], 0, 0, 0
        reasons: dict[str, int] = {}
        for seed in seeds:
            scores = torch.zeros(n, dtype=torch.float64)
            outputs: list[Any] = [None] * n  # the pooled figure's output per image (None: the file failed)
            intact = 0
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
                        intact += 1
                        if i in clean and (pooled is None or i in clean_outputs):
                            scores[i] = clean[i]
                            outputs[i] = clean_outputs.get(i)
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
                    batch = torch.stack(decoded)
                    values = score_fn(batch, ok_idx).double()
                    scores[ok_idx] = values
                    clean.update({i: v for i, v in zip(ok_idx, values.tolist()) if i in unchanged})
                    if pooled is not None:
                        for i, o in zip(ok_idx, pooled.collect(batch)):
                            outputs[i] = o
                            if i in unchanged:
                                clean_outputs[i] = o
                bar.update(len(idx))
            seed_scores.append(float(scores.mean()))
            if pooled is not None:
                seed_figures.append(_pooled_value(pooled, outputs, intact == n, clean_figure))
        arr = np.asarray(seed_scores)
        point = {"snr_db": float(snr), "score": float(arr.mean()), "score_std": float(arr.std()),
                 "failed_share": failures / float(n * len(seeds)), "ber": channel.bit_error_rate,
                 "bit_errors_share": flipped / total_bits if total_bits else 0.0,
                 "failure_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])}
        if pooled is not None:
            point.update(_mean_std(pooled.key, seed_figures))
        out.append(point)
    bar.close()
    return out


def _pooled_value(pooled: PooledScore, outputs: list[Any], all_intact: bool, clean_figure: list[float | None]
                  ) -> float | None:
    """The pooled figure of one seed's received images; computed once for the all-intact case."""
    if not all_intact:
        return pooled.score(outputs)
    if not clean_figure:
        clean_figure.append(pooled.score(outputs))
    return clean_figure[0]


def _mean_std(key: str, values: Sequence[float | None]) -> dict[str, float | None]:
    """``{key: mean, key_std: population std}`` over seeds; None when a seed has no value."""
    if not values or any(v is None for v in values):
        return {key: None, f"{key}_std": None}
    arr = np.asarray(values, dtype=np.float64)
    return {key: float(arr.mean()), f"{key}_std": float(arr.std())}


# --------------------------------------------------------------------------- the experiment
def rlasc_receiver(codec: Any) -> DecodeFn:
    """RL-ASC's receiver after a noisy channel: ``decompress(strict=False)``; a damaged header fails."""
    def decode(blob: bytes) -> Tensor:
        try:
            return codec.decompress(blob, strict=False).float().cpu()
        except BitstreamError as exc:
            raise DecodeError(f"rlasc: BitstreamError: {exc}") from None
        except (ValueError, RuntimeError, IndexError, OverflowError, KeyError) as exc:
            raise DecodeError(f"rlasc: {type(exc).__name__}: {exc}") from None
    return decode


def classic_receiver(codec: ClassicCodec, decoder: IsolatedDecoder, shape: tuple[int, int]) -> DecodeFn:
    """An engineered codec's receiver: its library decodes in the isolated child process."""
    def decode(blob: bytes) -> Tensor:
        return torch.from_numpy(decoder.decode(codec.name, blob, shape).copy()).permute(2, 0, 1).float() / 255.0
    return decode


@dataclass
class AwgnSettings:
    """What the experiment sweeps: SNRs (dB), noise seeds, codecs, images (None = all)."""

    snrs: Sequence[float]
    seeds: Sequence[int]
    codecs: Sequence[str]
    images: int | None = None
    calibration_images: int = 4
    batch_size: int = 16
    progress: bool = True


def run_awgn(cfg: AwgnSettings, data: EvalSet, seg: Any, semantic: dict[str, PointResult],
             classic: dict[str, ClassicCodec], notes: list[str], skipped: dict[str, str],
             log: Callable[[str], None] = print, detection: Any = None
             ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Score (mIoU of the segmentation task ``seg``) against SNR for the RL-ASC points in ``semantic``
    (their files as coded) and the engineered codecs at the setting nearest to RL-ASC's rate
    (the agent's when present, else the simplified model's); with a ``detection`` task (and the
    data's instance maps) also its mAP@0.5 per point (``map50``). Appends notes and skip reasons."""
    if seg is None:
        skipped["awgn"] = "no segmentation task network: the AWGN score is its mIoU"
        return {}, {}
    ref_name = "rlasc" if "rlasc" in semantic else "rlasc_simplified"
    if ref_name not in semantic:
        skipped["awgn"] = "no RL-ASC point to match the rate of"
        return {}, {}
    n = data.count if cfg.images is None else max(1, min(cfg.images, data.count))
    target = float(np.mean([bits_per_pixel(b, *data.shape) for b in semantic[ref_name].payloads[:n]]))
    sub = data.head(n)
    refs = seg.references(sub.images.float() / 255.0, sub.labels)
    pooled = None
    if detection is not None and sub.instances is not None:
        from .metrics import instance_targets_of

        pooled = detection_map50(detection, instance_targets_of(detection, sub.labels, sub.instances))

    def score(images: Tensor, idx: Sequence[int]) -> Tensor:
        return per_image_miou(seg, images, [refs[i] for i in idx])[0]

    subjects: list[AwgnSubject] = []
    meta: dict[str, Any] = {"rate_matched_to": ref_name, "target_bpp": target, "images": n,
                            "seeds": [int(s) for s in cfg.seeds],
                            "metrics": {"score": "segmentation mIoU (mean over images of the per-image mIoU of H)"}}
    if pooled is not None:
        meta["metrics"]["map50"] = ("detection mAP@0.5 of H over the received images of each seed against the data "
                                    "set's instance boxes (a file that fails to decode gives no detection)")
    decoder = IsolatedDecoder()
    for name in cfg.codecs:
        if name in semantic:
            point = semantic[name]
            setting = {k: point.record[k] for k in ("codec", "level", "level_offset") if k in point.record}
            subjects.append(AwgnSubject(name, point.payloads[:n], rlasc_receiver(point.record["_codec_obj"]), setting))
        elif name in classic:
            codec = classic[name]
            g, payloads = rate_matched_files(codec, sub, target, cfg.calibration_images)
            subjects.append(AwgnSubject(name, payloads, classic_receiver(codec, decoder, data.shape),
                                        {codec.knob: codec.grid[g]}))
        elif name.startswith("rlasc"):
            skipped[f"awgn {name}"] = f"{name} was not evaluated (see its own line)"
        else:
            skipped[f"awgn {name}"] = f"{name} is not an evaluated codec"
    curves: dict[str, list[dict[str, Any]]] = {}
    seeds = meta["seeds"]
    try:
        for subject in subjects:
            bpp = float(np.mean([len(p) * 8 / (data.shape[0] * data.shape[1]) for p in subject.payloads]))
            clean, outputs = clean_scores(subject, score, cfg.batch_size, pooled)
            curves[subject.name] = awgn_curve(subject, score, cfg.snrs, seeds, data.shape, cfg.batch_size, cfg.progress,
                                              clean=dict(enumerate(clean)), pooled=pooled,
                                              clean_outputs=dict(enumerate(outputs)))
            meta[subject.name] = {"bpp": bpp, "setting": subject.setting, "clean_score": float(np.mean(clean))}
            if pooled is not None:
                meta[subject.name][f"clean_{pooled.key}"] = pooled.score(outputs)
            log(f"awgn {subject.name}: {bpp:.3f} bpp, clean {np.mean(clean):.3f}, " + ", ".join(
                f"{p['snr_db']:g} dB {p['score']:.3f}" + (f" / mAP@.5 {_fmt(p.get('map50'))}" if pooled else "")
                for p in curves[subject.name]))
    finally:
        meta["decoder_restarts"] = decoder.restarts
        decoder.close()
    for name in classic:
        bpp = (meta.get(name) or {}).get("bpp")
        if bpp is not None and abs(bpp - target) > 0.25 * target:
            notes.append(f"AWGN: {name} cannot come near {ref_name}'s {target:.3f} bpp at this image size; it runs at "
                         f"{bpp:.3f} bpp (its setting nearest to the target)")
    return curves, meta


def rate_matched_files(codec: ClassicCodec, data: EvalSet, target: float, calibration_images: int
                       ) -> tuple[int, list[bytes]]:
    """(grid index, files) of the setting whose mean rate over all images is nearest to ``target``:
    the three nearest settings on the calibration images are measured on every image."""
    table = sorted(calibrate(codec, data, calibration_images), key=lambda row: abs(row[2] - target))[:3]
    best = None
    for g, setting, _ in table:
        files = [codec.encode(data.rgb(i), setting) for i in range(data.count)]
        gap = abs(np.mean([bits_per_pixel(f, *data.shape) for f in files]) - target)
        if best is None or gap < best[0]:
            best = (gap, g, files)
    return best[1], best[2]


def clean_scores(subject: AwgnSubject, score: Callable[[Tensor, Sequence[int]], Tensor], batch_size: int,
                 pooled: PooledScore | None = None) -> tuple[list[float], list[Any]]:
    """(per-image scores, the pooled figure's per-image outputs or []) of the subject's files decoded
    without channel noise."""
    values: list[float] = []
    outputs: list[Any] = []
    for start in range(0, len(subject.payloads), batch_size):
        idx = list(range(start, min(len(subject.payloads), start + batch_size)))
        images = torch.stack([subject.decode(subject.payloads[i]) for i in idx])
        values += score(images, idx).double().tolist()
        if pooled is not None:
            outputs += pooled.collect(images)
    return values, outputs


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
