"""Evaluation of RL-ASC against engineered codecs (paper Section IV: Fig. 5, 8-12, Table II).

``python evaluate.py --codec tiny --policy runs/<run>/policy.pt --images 100`` sweeps RL-ASC
(with the trained agent, simplified, fixed levels) and JPEG, JPEG2000, WebP, AVIF and HEIF
over their rates on real bytes, measures task scores (mIoU of the segmentation network H,
detection and classification metrics), PSNR, SSIM, FID and KID, computes Bjontegaard deltas,
runs the AWGN robustness test and writes the JSON of docs/design.md, a report and figures.

Modules: ``classic`` (engineered codecs), ``rlasc`` (RL-ASC level plans, trained policies),
``metrics``, ``sweep`` (operating points), ``bd``, ``awgn``, ``plots``, ``report``, ``runner``.
"""
from __future__ import annotations

__all__ = ["EvalConfig", "main", "run"]


def __getattr__(name: str):  # lazy: classic.py runs as a light decoder process without torch
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)
