"""The inference fast paths of issue 30, and a switch back to the reference ops they replace.

The environment's hot path runs a few ops in forms that are faster on the CPU: phi's 2x2 max pools as strided maxima
(:class:`codec_models.perceptual.MaxPool2x2`), G_l's transposed convolutions on channels-last tensors and its class
heads one class at a time (:class:`codec_models.generators.LocalGenerator`), and the level preview's phi passes limited
to the window a concept reaches (:mod:`rlasc_env.preview`). The first three give the same floats, bit for bit; the
last agrees to float rounding. :func:`reference_ops` turns them all off, so tests and benchmarks can run the reference
path beside the fast one (``tests/rlasc_env/test_fast_paths.py``, ``benchmark.py --reference-ops``).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["enabled", "reference_ops"]

_enabled = True


def enabled() -> bool:
    """Whether the fast paths are on (the default)."""
    return _enabled


@contextmanager
def reference_ops() -> Iterator[None]:
    """Run the block on the reference ops (every fast path off); restores the previous state on exit."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before
