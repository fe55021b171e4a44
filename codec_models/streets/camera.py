"""The pinhole camera: focal length, camera height and the world-to-image projection.

A world point (X lateral, Y up, z forward, metres) projects to
``u = u_vp + FOCAL_U * X / z`` and ``v = v_h + FOCAL * (CAM_H - Y) / z`` (u, v in [0, 1]).
"""
from __future__ import annotations

from dataclasses import dataclass

FOCAL = 2.2  # focal length in image heights (Cityscapes: ~2262 px at 1024 px height)
FOCAL_U = FOCAL / 2.0  # the same in image widths for the reference aspect 1:2
CAM_H = 1.4  # camera height above the road, metres


@dataclass(frozen=True)
class Camera:
    """Horizon row and vanishing point of the scene's camera (normalised image coordinates)."""

    v_h: float  # horizon row (normalised)
    u_vp: float  # vanishing point column (normalised)

    def u(self, X: float, z: float) -> float:
        """Image column (normalised) of lateral position X at depth z."""
        return self.u_vp + FOCAL_U * X / z

    def v(self, Y: float, z: float) -> float:
        """Image row (normalised) of height Y at depth z."""
        return self.v_h + FOCAL * (CAM_H - Y) / z
