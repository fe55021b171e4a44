"""Bjontegaard deltas (Table II): BD-rate and BD-mIoU with the ``bjontegaard`` package.

BD-rate (%) is the average rate difference of the test codec against the anchor at equal
mIoU, integrated over the mIoU interval both curves cover (negative = the test codec needs
fewer bits); BD-mIoU is the average mIoU difference at equal rate over the log-rate interval
both cover (positive = the test codec is better). Before interpolating, each curve is reduced
to its Pareto front (sorted by rate, a point is kept only when its mIoU beats every
lower-rate point), so both interpolations (mIoU of log-rate and log-rate of mIoU) are
functions. Nothing is extrapolated: without overlap the delta is null, with the reason.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BD_METHOD", "bd_pair", "pareto_front"]

BD_METHOD = "pchip"  # monotone piecewise cubic Hermite: no overshoot, defined from 2 points up


def pareto_front(rates: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points (rate > 0, finite value) sorted by rate, each strictly better than all cheaper ones."""
    pts = [(float(r), float(v)) for r, v in zip(rates, values)
           if r is not None and v is not None and math.isfinite(r) and math.isfinite(v) and r > 0]
    pts.sort(key=lambda p: (p[0], -p[1]))
    keep: list[tuple[float, float]] = []
    for r, v in pts:
        if not keep or (v > keep[-1][1] and r > keep[-1][0]):
            keep.append((r, v))
    arr = np.asarray(keep, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(low, high, share of the union) of the overlap of the ranges of ``a`` and ``b``."""
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    total = max(a.max(), b.max()) - min(a.min(), b.min())
    return float(lo), float(hi), float(max(hi - lo, 0.0) / total) if total > 0 else 0.0


def bd_pair(test: Sequence[Mapping[str, Any]], anchor: Sequence[Mapping[str, Any]], metric: str = "miou",
            method: str = BD_METHOD, min_overlap: float = 0.1) -> dict[str, Any]:
    """BD-rate (%) and BD-<metric> of ``test`` against ``anchor`` (lists of points with ``bpp`` and ``metric``).

    Returns ``{"bd_rate", "bd_<metric>", "method", "points": [n_test, n_anchor], "rate_overlap",
    "<metric>_overlap", "reason_rate", "reason_<metric>"}``; a delta is None when it cannot be
    computed without extrapolating, or when the overlap is under ``min_overlap`` of the union of
    the two ranges (too short an interval to average over), and its reason says why.
    """
    import bjontegaard as bdlib

    key = f"bd_{metric}"
    out: dict[str, Any] = {"bd_rate": None, key: None, "bd_rate_unit": "%", "method": method}
    rt, vt = pareto_front([p.get("bpp") for p in test], [p.get(metric) for p in test])
    ra, va = pareto_front([p.get("bpp") for p in anchor], [p.get(metric) for p in anchor])
    out["points"] = [int(len(rt)), int(len(ra))]
    if len(rt) < 2 or len(ra) < 2:
        reason = (f"too few points on the Pareto front (test {len(rt)}, anchor {len(ra)}; at least 2 each are "
                  f"needed to interpolate)")
        out["reason_rate"] = out[f"reason_{metric}"] = reason
        return out
    lr_t, lr_a = np.log10(rt), np.log10(ra)
    lo, hi, share = _overlap(lr_t, lr_a)
    out["rate_overlap"] = share
    if share <= 0.0:
        out[f"reason_{metric}"] = (f"rate ranges do not overlap (test {rt.min():.3f}-{rt.max():.3f} bpp, anchor "
                                   f"{ra.min():.3f}-{ra.max():.3f} bpp)")
    elif share < min_overlap:
        out[f"reason_{metric}"] = (f"rate ranges overlap on {share:.1%} of their union only (test {rt.min():.3f}-"
                                   f"{rt.max():.3f} bpp, anchor {ra.min():.3f}-{ra.max():.3f} bpp; minimum "
                                   f"{min_overlap:.0%})")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = bdlib.bd_psnr(ra, va, rt, vt, method=method, require_matching_points=False, min_overlap=0.0)
        out[key] = float(value) if math.isfinite(value) else None
        out["rate_interval_bpp"] = [float(10 ** lo), float(10 ** hi)]
    lo, hi, share = _overlap(vt, va)
    out[f"{metric}_overlap"] = share
    if share <= 0.0:
        out["reason_rate"] = (f"{metric} ranges do not overlap (test {vt.min():.3f}-{vt.max():.3f}, anchor "
                              f"{va.min():.3f}-{va.max():.3f})")
    elif share < min_overlap:
        out["reason_rate"] = (f"{metric} ranges overlap on {share:.1%} of their union only (test {vt.min():.3f}-"
                              f"{vt.max():.3f}, anchor {va.min():.3f}-{va.max():.3f}; minimum {min_overlap:.0%})")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = bdlib.bd_rate(ra, va, rt, vt, method=method, require_matching_points=False, min_overlap=0.0)
        out["bd_rate"] = float(value) if math.isfinite(value) else None
        out[f"{metric}_interval"] = [float(lo), float(hi)]
    return out


def bd_table(curves: Mapping[str, Sequence[Mapping[str, Any]]], tests: Sequence[str], anchors: Sequence[str],
             metric: str = "miou", method: str = BD_METHOD, min_overlap: float = 0.1) -> dict[str, dict[str, Any]]:
    """``{"<test>_vs_<anchor>": bd_pair(...)}`` for every test curve against every other anchor curve."""
    table: dict[str, dict[str, Any]] = {}
    for t in tests:
        if t not in curves:
            continue
        for a in anchors:
            if a == t or a not in curves:
                continue
            if not curves[t] or not curves[a]:
                empty = t if not curves[t] else a
                table[f"{t}_vs_{a}"] = {"bd_rate": None, f"bd_{metric}": None, "bd_rate_unit": "%", "method": method,
                                        "reason_rate": f"{empty} has no point", f"reason_{metric}": f"{empty} has no point"}
                continue
            table[f"{t}_vs_{a}"] = bd_pair(curves[t], curves[a], metric, method, min_overlap)
    return table
