"""How many images the environment puts through phi in one pass (issue 30)."""
from __future__ import annotations

import torch

__all__ = ["CPU_NETWORK_CHUNK", "network_chunk"]

CPU_NETWORK_CHUNK = 12
"""Images per pass of phi (the perceptual network) on the CPU. A batched env's preview runs it on every env times
every level (96 pictures at 16 envs): passes that large fall out of the CPU's caches, and the batched env took about
1.2x the CPU time per transition that it takes with passes of 12 (issue 30, session 21; docs/env_speed.md). An image's L_P can
move in its last bits with the size of its pass (up to about 1e-7); L_P is continuous, so rewards move as little.
The task network is not split: its metrics are argmaxes, which such a change can flip."""


def network_chunk(device: torch.device | str) -> int:
    """Images per phi pass on ``device``: :data:`CPU_NETWORK_CHUNK` on the CPU, unlimited on an accelerator."""
    return CPU_NETWORK_CHUNK if torch.device(device).type == "cpu" else 1 << 30
