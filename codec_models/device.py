"""The one place that turns a ``--device`` flag into a torch device (every package and script uses it)."""
from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; ``"cuda"`` with ``local_rank`` -> that rank's GPU (DDP).

    A CUDA device on a machine without CUDA raises ``RuntimeError`` (no silent fallback to the CPU).
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str) and device:
        name = device
    else:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was requested but no CUDA device is available on this machine")
    return resolved
