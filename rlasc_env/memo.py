"""Exact memo of environment transitions: the losses of x_hat for an image and its levels so far.

An episode of Algorithm 2 codes the concepts of one image in a fixed order, so the state after
step t is fully determined by the image and the levels chosen for its first t concepts. Every
term of eq. 13 that needs the decoder and the networks (L_S, the task metric and L_P of
x_hat(t)) is therefore a function of ``(image, levels so far)``, and policies revisit the same
prefixes constantly: R rollouts of one image, the fixed levels and greedy on the same test
images, a policy that has settled. :class:`TransitionMemo` keeps those terms, so a revisited
transition costs no network pass and returns the very same floats (the rate term comes from the
bitstream sizes, which the env caches separately).

The memo is only valid while the networks are unchanged: it records the in-place version
counters of every parameter and buffer of the modules it watches (codec, task network) and
empties itself when one of them moved (an optimizer step, ``load_state_dict``), e.g. in stage III,
which trains the very codec the env runs.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from torch import Tensor, nn

__all__ = ["StepLosses", "TransitionMemo", "image_key", "losses_array"]


class StepLosses(NamedTuple):
    """L_S, the task metric and L_P of one reconstruction x_hat (eq. 13's network terms)."""

    semantic: float
    metric: float
    perceptual: float


def image_key(image: Tensor, labels: Tensor, index: int) -> int:
    """A 63-bit key of one episode's inputs: the image's and the labels' bytes and the data set index
    (which selects the instance maps of instance-based tasks)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(image.detach().float().contiguous().cpu().numpy().tobytes())
    h.update(labels.detach().long().contiguous().cpu().numpy().tobytes())
    h.update(int(index).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little") >> 1


def _tensors(modules: Sequence[nn.Module]) -> list[Tensor]:
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


class TransitionMemo:
    """LRU map ``(image key, levels of the concepts coded so far) -> StepLosses``.

    ``capacity`` entries at most (0 disables the memo: every lookup misses and nothing is kept).
    ``watch``: modules whose weights the stored losses depend on; any change empties the memo.
    """

    def __init__(self, capacity: int = 500_000, watch: Iterable[nn.Module] = ()) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self._entries: OrderedDict[tuple[int, tuple[int, ...]], StepLosses] = OrderedDict()
        self.watch = [m for m in watch if isinstance(m, nn.Module)]
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    @property
    def watch(self) -> list[nn.Module]:
        return self._watch

    @watch.setter
    def watch(self, modules: Iterable[nn.Module]) -> None:
        self._watch = list(modules)
        self._tensors = _tensors(self._watch)
        self._state = self._versions()
        self._entries.clear()

    def _versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self._tensors)

    def validate(self, full: bool = False) -> None:
        """Empty the memo if a watched parameter or buffer changed in place (an optimizer step,
        ``load_state_dict``) since the last check. ``full`` also looks for new parameter or buffer objects (e.g.
        a module assigned a new Parameter), which walks the modules (slower; the env does it at every reset)."""
        changed = False
        if full:
            tensors = _tensors(self._watch)
            if [id(t) for t in tensors] != [id(t) for t in self._tensors]:
                self._tensors, changed = tensors, True
        state = self._versions()
        if changed or state != self._state:
            self._entries.clear()
            self._state = state

    def get(self, key: tuple[int, tuple[int, ...]]) -> StepLosses | None:
        if not self.capacity:
            return None
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        return value

    def put(self, key: tuple[int, tuple[int, ...]], value: StepLosses) -> None:
        if not self.capacity:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def stats(self) -> dict[str, float]:
        looked = self.hits + self.misses
        return {"entries": len(self), "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / looked if looked else float("nan")}


def losses_array(values: Sequence[StepLosses]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three float64 arrays (L_S, metric, L_P) from a sequence of :class:`StepLosses`."""
    arr = np.asarray(values, np.float64).reshape(-1, 3)
    return arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy()

