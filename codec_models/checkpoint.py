"""Codec checkpoints: atomic writes, ``weights_only=True`` loads, format/version checks."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from .config import CodecConfig

CHECKPOINT_FORMAT = "rlasc-codec"
CHECKPOINT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class CheckpointError(ValueError):
    """A file that is not a codec checkpoint of a version this code reads."""


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Call ``write(binary handle)`` on a temporary file in the target folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the target folder, then rename over ``path``."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def safe_load(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load with ``weights_only=True``; unreadable files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted, truncated, or pickled arbitrary objects
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint dictionary")
    return obj


def codec_payload(codec, meta: dict[str, Any] | None = None, include_discriminator: bool = True) -> dict[str, Any]:
    """The dictionary written for a codec: config, weights, code tables, metadata."""
    state = codec.state_dict() if include_discriminator else codec.inference_state()
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": codec.config.to_dict(),
        "state": {k: v.detach().cpu() for k, v in state.items()},
        "tables": None if codec.tables is None else codec.tables.state_dict(),
        "label_model": None if codec.label_model is None else codec.label_model.state_dict(),
        "meta": dict(meta or {}),
    }


def check_format(obj: dict[str, Any], path: Path | str, expected: str = CHECKPOINT_FORMAT,
                 version: int = CHECKPOINT_VERSION) -> None:
    if obj.get("format") != expected:
        raise CheckpointError(f"{path} is a {obj.get('format')!r} file, expected {expected!r}")
    if obj.get("version") != version:
        raise CheckpointError(f"{path} has checkpoint version {obj.get('version')} but this code reads version "
                              f"{version}; retrain with train_codec.py or use a matching release")


def resolve_codec_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped codec name ('tiny') or a path to a checkpoint file."""
    text = str(name_or_path)
    shipped = WEIGHTS_DIR / f"{text}.pt"
    if shipped.is_file():
        return shipped
    path = Path(text)
    if path.is_file():
        return path
    names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))
    raise FileNotFoundError(f"no codec named or at {text!r}: shipped codecs are {names}; train one with "
                            f"`python train_codec.py --preset <name>` and pass the checkpoint path")


def build_codec(obj: dict[str, Any], path: Path | str, device: torch.device | str | None = None):
    """Instantiate a SemanticCodec from a checked checkpoint dictionary."""
    from . import entropy
    from .codec import SemanticCodec

    check_format(obj, path)
    codec = SemanticCodec(CodecConfig.from_dict(obj["config"]))
    missing, unexpected = codec.load_state_dict(obj["state"], strict=False)
    missing = [k for k in missing if not k.startswith("discriminator.")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the codec (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if obj.get("tables") is not None:
        codec.tables = entropy.SymbolTables.from_state_dict(obj["tables"])
    if obj.get("label_model") is not None:
        codec.label_model = entropy.LabelMapModel.from_state_dict(obj["label_model"])
    codec.meta = dict(obj.get("meta") or {})
    codec.source = str(path)
    return codec.to(device or "cpu").eval()


def load_codec(name_or_path: str | os.PathLike = "tiny", device: torch.device | str | None = None):
    """Load a shipped codec by name or a checkpoint file (offline, ``weights_only=True``)."""
    path = resolve_codec_path(name_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return build_codec(safe_load(path), path, device)
