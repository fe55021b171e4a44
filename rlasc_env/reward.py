"""Rate-semantic-perceptual criterion (eq. 12-13) and the step reward (eq. 14).

At step m of an episode (Algorithm 2)::

    L(m) = lambda * [psi(x_hat(m)) - psi(x_hat(0))] / (H*W) + L_S(m) + eta * L_P(m)     (eq. 13)
    r(m) = L(m-1) - L(m)                                                                (eq. 14)

``psi`` is the length in bits of the real bitstream (label map included); the rate term is
counted in bits per pixel (docs/design.md), so lambda does not depend on the image size. All
functions work element-wise on Python floats or NumPy arrays (computed in float64), so the
single and the batched environments share the same arithmetic.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["rate_term", "rsp_loss", "step_reward", "normalized_score", "REWARD_PRESETS", "reward_weights"]

REWARD_PRESETS: dict[str, dict[str, float]] = {
    # Algorithm 2's weights; the env's defaults. With them the best uniform level of every task is an inner
    # level (4 of 0..5) on -v1, measured by `python -m rlasc_harness.learnability` (docs/env_v1.md, "Operating points").
    "paper": {"lam": 1.0, "eta": 10.0},
}


def reward_weights(preset: str = "paper", **overrides: float) -> dict[str, float]:
    """``{"lam": ..., "eta": ...}`` of a named preset (``REWARD_PRESETS``), e.g.
    ``gym.make("rlasc/SemanticCoding-v1", **reward_weights("paper", lam=0.5))``."""
    if preset not in REWARD_PRESETS:
        raise ValueError(f"unknown reward preset {preset!r}; known: {sorted(REWARD_PRESETS)}")
    unknown = set(overrides) - {"lam", "eta"}
    if unknown:
        raise ValueError(f"reward_weights takes lam and eta overrides, not {sorted(unknown)}")
    return {**REWARD_PRESETS[preset], **{k: float(v) for k, v in overrides.items()}}


def rate_term(bits: ArrayLike, bits0: ArrayLike, pixels: int) -> np.ndarray:
    """psi(x_hat(m)) - psi(x_hat(0)) in bits per pixel (the bracket of eq. 13 over H*W)."""
    if pixels <= 0:
        raise ValueError(f"pixels must be positive, got {pixels}")
    return (np.asarray(bits, np.float64) - np.asarray(bits0, np.float64)) / float(pixels)


def rsp_loss(bits: ArrayLike, bits0: ArrayLike, pixels: int, semantic: ArrayLike, perceptual: ArrayLike,
             lam: float, eta: float) -> np.ndarray:
    """L(m) of eq. 13: ``lam * (bits - bits0) / pixels + semantic + eta * perceptual`` (float64)."""
    return (lam * rate_term(bits, bits0, pixels) + np.asarray(semantic, np.float64)
            + eta * np.asarray(perceptual, np.float64))


def step_reward(previous_loss: ArrayLike, loss: ArrayLike) -> np.ndarray:
    """r = L(m-1) - L(m) (eq. 14): positive when coding concept m lowered the criterion."""
    return np.asarray(previous_loss, np.float64) - np.asarray(loss, np.float64)


def normalized_score(loss0: ArrayLike, loss_final: ArrayLike, loss_high: ArrayLike) -> np.ndarray:
    """(L(0) - L_final) / (L(0) - L_high): 0 = every concept at the coarsest level, 1 = every
    concept at the highest level; above 1 beats "all highest" on the criterion. NaN where
    L(0) == L_high (the two references coincide, so the score is undefined)."""
    loss0 = np.asarray(loss0, np.float64)
    span = loss0 - np.asarray(loss_high, np.float64)
    gain = loss0 - np.asarray(loss_final, np.float64)
    safe = np.where(span == 0.0, 1.0, span)
    return np.where(span == 0.0, np.nan, gain / safe)
