"""The corrected preview rule: the policy that :mod:`agents.rollout` (rollout policy iteration) trains.

On ``SemanticCoding-v4`` the stats end with the level preview (:mod:`rlasc_env.preview`): per level q, the rate
term of eq. 13 the step would add and the drop of eq. 11's perceptual loss, both over the concept's stake s. The
preview rule (:class:`agents.baselines.PreviewRule`) picks argmax_q of -rate_q + w * perceptual_q. This policy adds a
learned per-level correction,

    score_q(x) = -rate_q / s + w * perceptual_q / s + c_q(x),     a = argmax_q score_q(x),

with c the mean of a few small networks (one hidden layer) on x = [stats, one-hot of the concept m]. The correction
is zero until it is fitted, so an unfitted policy is the preview rule exactly. c_q(x) * s is fitted to what the
rule's score misses of level q's worth (:func:`agents.rollout.fit_correction`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from .policy import ObsShapes, obs_shapes, obs_to_tensors

__all__ = ["CorrectedRulePolicy", "POLICY_KIND"]

POLICY_KIND = "corrected_preview_rule"


class CorrectedRulePolicy(nn.Module):
    """argmax_q of the preview rule's score over the stake plus the mean of ``members`` correction networks."""

    def __init__(self, observation_space: spaces.Dict | Mapping[str, Any], num_levels: int, rule_weight: float,
                 hidden: int = 64, members: int = 3) -> None:
        super().__init__()
        from rlasc_env.engine import NUM_STATS, preview_size

        self.shapes: ObsShapes = obs_shapes(observation_space)
        self.num_levels = int(num_levels)
        if self.num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {num_levels}")
        if self.shapes["stats"][0] != NUM_STATS + preview_size(self.num_levels):
            raise ValueError(f"the corrected preview rule reads the level preview ({NUM_STATS} + "
                             f"{preview_size(self.num_levels)} stats entries, SemanticCoding-v4); these observations "
                             f"have {self.shapes['stats'][0]}")
        if not np.isfinite(rule_weight):
            raise ValueError(f"rule_weight must be finite, got {rule_weight}")
        if hidden < 1 or members < 1:
            raise ValueError(f"hidden and members must be >= 1, got {hidden}, {members}")
        self.rule_weight, self.hidden, self.members = float(rule_weight), int(hidden), int(members)
        width = self.input_width
        self.register_buffer("input_mean", torch.zeros(width))
        self.register_buffer("input_scale", torch.ones(width))
        self.nets = nn.ModuleList(nn.Sequential(nn.Linear(width, self.hidden), nn.ReLU(),
                                                nn.Linear(self.hidden, self.num_levels)) for _ in range(self.members))
        for net in self.nets:  # c = 0: the preview rule until fitted
            nn.init.zeros_(net[2].weight)
            nn.init.zeros_(net[2].bias)

    @property
    def input_width(self) -> int:
        return int(self.shapes["stats"][0]) + int(self.shapes["concept"][0])

    @property
    def device(self) -> torch.device:
        return self.input_mean.device

    def inputs(self, obs: Mapping[str, Tensor]) -> Tensor:
        """x = [stats, one-hot concept] (B, S + M), before normalisation."""
        return torch.cat([obs["stats"].flatten(1), obs["concept"].flatten(1)], dim=1)

    def correction(self, x: Tensor) -> Tensor:
        """c(x) (B, Q): the mean of the members on the normalised inputs x (see :meth:`inputs`)."""
        z = (x - self.input_mean) / self.input_scale
        return torch.stack([net(z) for net in self.nets]).mean(0)

    def rule_score(self, obs: Mapping[str, Tensor]) -> Tensor:
        """-rate_q / s + w * perceptual_q / s (B, Q): the preview rule's score over the stake."""
        from rlasc_env.engine import preview_entries

        rate, perceptual = preview_entries(obs["stats"].flatten(1), self.num_levels)
        return -rate + self.rule_weight * perceptual

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        """The scores (B, Q) of a batch of observation tensors (see :func:`agents.policy.obs_to_tensors`)."""
        return self.rule_score(obs) + self.correction(self.inputs(obs))

    @torch.no_grad()
    def act(self, obs: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """Levels (B,) int64: the argmax of the scores. The policy is deterministic; ``deterministic=False`` is
        refused rather than ignored."""
        if not deterministic:
            raise ValueError("the corrected preview rule is a deterministic policy (argmax of its scores): evaluate "
                             "it with --deterministic")
        scores = self(obs_to_tensors(obs, self.shapes, self.device))
        return scores.argmax(-1).cpu().numpy().astype(np.int64)

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild the network (saved beside the weights)."""
        return {"kind": POLICY_KIND, "shapes": {k: list(v) for k, v in self.shapes.items()},
                "num_levels": self.num_levels, "rule_weight": self.rule_weight, "hidden": self.hidden,
                "members": self.members}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "CorrectedRulePolicy":
        if spec.get("kind") != POLICY_KIND:
            raise ValueError(f"not a {POLICY_KIND} description: kind {spec.get('kind')!r}")
        return cls(spec["shapes"], int(spec["num_levels"]), float(spec["rule_weight"]), int(spec["hidden"]),
                   int(spec["members"]))
