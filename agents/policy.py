"""The policy network pi_theta of Section II-C (Fig. 2).

The state of step m is {f(m), s(m), m}: the masked features f(m) (n channels) and the mask
s_d(m) are stacked as channels and go through two conv layers, each followed by ReLU and 2x2
max-pooling; the result is flattened, concatenated with the concept id (one-hot) and the
env's scalar stats, and fed to three FC layers (ReLU and dropout after the first two) that
yield one logit per quantization level; a softmax gives pi(a(m) | state(m)).

:class:`PaperTrunk` is the shared part (convs + the first two FC layers);
:class:`PaperPolicy` adds the last FC layer (the logits) for REINFORCE (eq. 15-22), and
:class:`PaperFeaturesExtractor` exposes the trunk to stable-baselines3, which adds its own
action (and value) heads.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from rlasc_env.engine import ACTION_MASK

__all__ = ["ObsShapes", "PaperTrunk", "PaperPolicy", "PaperFeaturesExtractor", "obs_shapes", "obs_to_tensors",
           "masked_logits",
           "check_policy_fits", "check_observations_fit"]

OBS_KEYS = ("features", "mask", "concept", "stats")


class ObsShapes(dict):
    """Shapes the network is built for: features (n,h,w), mask (1,h,w), concepts M, stats S."""

    @property
    def channels(self) -> int:
        return int(self["features"][0]) + int(self["mask"][0])


def obs_shapes(observation_space: spaces.Dict | Mapping[str, Any]) -> ObsShapes:
    """Shapes from the env's ``spaces.Dict`` (``concept`` a one-hot Box or a Discrete) or a saved dict."""
    if isinstance(observation_space, spaces.Dict):
        missing = [k for k in OBS_KEYS if k not in observation_space.spaces]
        if missing:
            raise ValueError(f"observation space lacks keys {missing}; expected {list(OBS_KEYS)}")
        concept = observation_space["concept"]
        num_concepts = int(concept.n) if isinstance(concept, spaces.Discrete) else int(np.prod(concept.shape))
        shapes = {"features": tuple(observation_space["features"].shape), "mask": tuple(observation_space["mask"].shape),
                  "concept": (num_concepts,), "stats": tuple(observation_space["stats"].shape)}
    else:
        shapes = {k: tuple(int(v) for v in observation_space[k]) for k in OBS_KEYS}
    if len(shapes["features"]) != 3 or len(shapes["mask"]) != 3 or shapes["features"][1:] != shapes["mask"][1:]:
        raise ValueError(f"features {shapes['features']} and mask {shapes['mask']} must be (C,h,w) of equal h,w")
    return ObsShapes(shapes)


def masked_logits(logits: Tensor, obs: Mapping[str, Any]) -> Tensor:
    """``logits`` (B, Q) with the levels outside ``obs["action_mask"]`` (the rate-budget mode,
    :data:`rlasc_env.engine.ACTION_MASK`) at -inf, so that pi samples and argmaxes only allowed levels; unchanged
    without a mask."""
    if ACTION_MASK not in obs:
        return logits
    allowed = torch.as_tensor(np.asarray(obs[ACTION_MASK], bool), device=logits.device).reshape(logits.shape)
    return logits.masked_fill(~allowed, float("-inf"))


def obs_to_tensors(obs: Mapping[str, Any], shapes: ObsShapes, device: torch.device | str) -> dict[str, Tensor]:
    """A batched observation (NumPy or tensors, or one unbatched observation) -> float tensors with
    a batch dimension; a concept given as class ids (Discrete space) becomes a one-hot."""
    out: dict[str, Tensor] = {}
    batched = np.ndim(obs["features"]) == len(shapes["features"]) + 1
    for key in OBS_KEYS:
        value = torch.as_tensor(np.asarray(obs[key]) if not isinstance(obs[key], Tensor) else obs[key], device=device)
        if not batched:
            value = value.unsqueeze(0)
        if key == "concept" and value.dim() == 1:  # class ids
            value = nn.functional.one_hot(value.long(), shapes["concept"][0])
        out[key] = value.float()
    return out


def check_policy_fits(policy: Any, engine: Any, path: Any) -> None:
    """Raise ValueError when ``policy`` (saved at ``path``) was built for other observations or another Q
    than ``engine``'s env (another codec or preset)."""
    check_observations_fit(policy.shapes, policy.num_levels, engine, path)


def check_observations_fit(shapes: Mapping[str, Any], num_levels: int, engine: Any, path: Any) -> None:
    """Raise ValueError when a saved policy's observation ``shapes`` (``obs_shapes``) or its ``num_levels`` differ
    from ``engine``'s env; the message names ``--env-id`` when only the stats differ (-v1 against -v4)."""
    have, want = dict(shapes), dict(obs_shapes(engine.observation_space))
    if have != want or int(num_levels) != engine.num_levels:
        hint = ("another --env-id? -v4's stats carry the level preview, -v1's do not"
                if have["stats"] != want["stats"] else "another codec or preset?")
        raise ValueError(f"{path} was trained for observations {have} and Q = {num_levels}, "
                         f"but this env has {want} and Q = {engine.num_levels} ({hint})")


class PaperTrunk(nn.Module):
    """conv-ReLU-maxpool x2 on [f(m), s_d(m)], flatten, concat [one-hot m, stats], FC-ReLU-dropout x2."""

    def __init__(self, shapes: ObsShapes, conv_channels: Sequence[int] = (32, 64), hidden: Sequence[int] = (256, 128),
                 dropout: float = 0.1, kernel_size: int = 3) -> None:
        super().__init__()
        if len(conv_channels) != 2 or len(hidden) != 2:
            raise ValueError("the paper's network has two conv layers and three FC layers: conv_channels needs 2 "
                             f"widths and hidden 2 widths (the third FC layer is the output), got {conv_channels}, {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.shapes = shapes
        c1, c2 = (int(c) for c in conv_channels)
        pad = kernel_size // 2
        self.conv = nn.Sequential(
            nn.Conv2d(shapes.channels, c1, kernel_size, padding=pad), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c1, c2, kernel_size, padding=pad), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, shapes.channels, *shapes["features"][1:])).shape[1]
        extra = shapes["concept"][0] + shapes["stats"][0]
        h1, h2 = (int(v) for v in hidden)
        self.fc = nn.Sequential(nn.Linear(flat + extra, h1), nn.ReLU(), nn.Dropout(dropout),
                                nn.Linear(h1, h2), nn.ReLU(), nn.Dropout(dropout))
        self.out_features = h2

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        image = torch.cat([obs["features"], obs["mask"]], dim=1)
        flat = self.conv(image)
        return self.fc(torch.cat([flat, obs["concept"].flatten(1), obs["stats"].flatten(1)], dim=1))


class PaperPolicy(nn.Module):
    """pi_theta(a(m) | state(m)): :class:`PaperTrunk` + the third FC layer -> Q logits (softmax -> probabilities).

    ``concept_skip=True`` adds a linear map from [one-hot m, stats] straight to the logits (zero at
    the start, so the initial policy is the paper's): a per-class, per-level preference that moves
    as fast as Adam allows instead of being learned through the trunk, where the masked feature
    map's 512 inputs drown the concept id's 19 (see docs/agents_v1.md).

    ``preview_head=True`` (for ``SemanticCoding-v4``, whose stats end with the level preview of
    :mod:`rlasc_env.preview`) scores each level by its own preview entries: logit_q += w_rate(m) * rate_q +
    w_perc(m) * perceptual_q, with the two weights a linear function of [one-hot m, 1] (zero at the start). The
    same two weights serve every level (an action-feature policy), so a trade-off learned on one level holds for
    all; it is trained with the skip path's Adam step.
    """

    def __init__(self, observation_space: spaces.Dict | Mapping[str, Any], num_levels: int,
                 conv_channels: Sequence[int] = (32, 64), hidden: Sequence[int] = (256, 128),
                 dropout: float = 0.1, concept_skip: bool = False, preview_head: bool = False) -> None:
        super().__init__()
        if num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {num_levels}")
        self.shapes = obs_shapes(observation_space)
        self.num_levels = int(num_levels)
        self.arch = {"conv_channels": [int(c) for c in conv_channels], "hidden": [int(h) for h in hidden],
                     "dropout": float(dropout), "concept_skip": bool(concept_skip),
                     "preview_head": bool(preview_head)}
        self.trunk = PaperTrunk(self.shapes, conv_channels, hidden, dropout)
        self.head = nn.Linear(self.trunk.out_features, self.num_levels)
        self.skip: nn.Linear | None = None
        if concept_skip:
            self.skip = nn.Linear(self.shapes["concept"][0] + self.shapes["stats"][0], self.num_levels, bias=False)
            nn.init.zeros_(self.skip.weight)
        self.preview_head: nn.Linear | None = None
        if preview_head:
            from rlasc_env.engine import NUM_STATS, preview_size

            if self.shapes["stats"][0] != NUM_STATS + preview_size(self.num_levels):
                raise ValueError(f"preview_head needs the level preview in the stats ({NUM_STATS} + "
                                 f"{preview_size(self.num_levels)} entries, SemanticCoding-v4); these have "
                                 f"{self.shapes['stats'][0]}")
            self.preview_head = nn.Linear(self.shapes["concept"][0] + 1, 2, bias=False)
            nn.init.zeros_(self.preview_head.weight)

    @torch.no_grad()
    def start_at_preview_rule(self, weight: float, scale: float) -> None:
        """Set the preview head to ``scale`` x the preview rule's score, -rate_q + ``weight`` * perceptual_q (the
        class-independent column: w_rate = -scale, w_perc = scale * weight), so that before any update the policy
        samples levels near the rule's and its argmax follows the rule wherever the trunk's initial logits are
        small beside the score's gaps (:class:`agents.baselines.PreviewRule`)."""
        if self.preview_head is None:
            raise ValueError("start_at_preview_rule needs a policy built with preview_head=True")
        if not (scale > 0 and np.isfinite(scale) and np.isfinite(weight)):
            raise ValueError(f"the rule's scale must be positive and finite and its weight finite, got scale "
                             f"{scale}, weight {weight}")
        self.preview_head.weight.zero_()
        self.preview_head.weight[0, -1] = -float(scale)
        self.preview_head.weight[1, -1] = float(scale) * float(weight)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Logits (B, Q) for a batch of observation tensors (see :func:`obs_to_tensors`)."""
        logits = self.head(self.trunk(obs))
        if self.skip is not None:
            logits = logits + self.skip(torch.cat([obs["concept"].flatten(1), obs["stats"].flatten(1)], dim=1))
        if self.preview_head is not None:
            from rlasc_env.engine import preview_entries

            concept = obs["concept"].flatten(1)
            rate, perceptual = preview_entries(obs["stats"].flatten(1), self.num_levels)
            weights = self.preview_head(torch.cat([concept, torch.ones_like(concept[:, :1])], dim=1))  # (B, 2)
            logits = logits + weights[:, :1] * rate + weights[:, 1:] * perceptual
        return logits

    def distribution(self, obs: Mapping[str, Any]) -> torch.distributions.Categorical:
        """The softmax distribution over levels for (NumPy or tensor) observations; in the rate-budget mode
        (``obs["action_mask"]``) over the levels the budget allows."""
        return torch.distributions.Categorical(logits=masked_logits(self(obs_to_tensors(obs, self.shapes, self.device)),
                                                                    obs))

    def probabilities(self, obs: Mapping[str, Any]) -> Tensor:
        return self.distribution(obs).probs

    @torch.no_grad()
    def act(self, obs: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """Levels (B,) int64 for a batch of observations: argmax or a sample of pi (eval mode, no dropout)."""
        was_training = self.training
        self.eval()
        try:
            dist = self.distribution(obs)
            action = dist.probs.argmax(-1) if deterministic else dist.sample()
        finally:
            self.train(was_training)
        return action.cpu().numpy().astype(np.int64)

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild the network (saved beside the weights)."""
        return {"shapes": {k: list(v) for k, v in self.shapes.items()}, "num_levels": self.num_levels, **self.arch}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "PaperPolicy":
        return cls(spec["shapes"], int(spec["num_levels"]), spec["conv_channels"], spec["hidden"], spec["dropout"],
                   bool(spec.get("concept_skip", False)),  # policies saved before the option have none
                   bool(spec.get("preview_head", False)))


class PaperFeaturesExtractor(BaseFeaturesExtractor):
    """The paper's trunk as an SB3 features extractor for ``MultiInputPolicy`` (SB3 adds the heads).

    SB3 one-hot encodes a ``Discrete`` concept itself. Keep ``dropout=0`` for on-policy SB3
    algorithms: they collect rollouts in eval mode and compute gradients in train mode, so
    dropout would make the sampling and the optimised policy differ.

    ``concept_gain > 0`` is SB3's form of :class:`PaperPolicy`'s concept skip path: the features
    are the trunk's output followed by ``concept_gain * [one-hot m, stats]``, so SB3's linear heads
    (``net_arch: []``) hold a direct per-class, per-level term. SB3 gives every parameter one
    learning rate, so the gain does what REINFORCE's ``skip_learning_rate`` does: Adam moves each
    weight by about the learning rate whatever the gradient's scale, so this term's logits move
    ``concept_gain`` times faster than a weight on an unscaled input would (docs/agents_v1.md).
    """

    def __init__(self, observation_space: spaces.Dict, conv_channels: Sequence[int] = (32, 64),
                 hidden: Sequence[int] = (256, 128), dropout: float = 0.0, concept_gain: float = 0.0) -> None:
        if not concept_gain >= 0.0:
            raise ValueError(f"concept_gain must be >= 0 (0 = the paper's trunk alone), got {concept_gain}")
        shapes = obs_shapes(observation_space)
        trunk = PaperTrunk(shapes, conv_channels, hidden, dropout)
        skip = shapes["concept"][0] + shapes["stats"][0] if concept_gain > 0 else 0
        super().__init__(observation_space, features_dim=trunk.out_features + skip)
        self.trunk = trunk
        self.concept_gain = float(concept_gain)

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        features = self.trunk(observations)
        if self.concept_gain > 0:
            direct = torch.cat([observations["concept"].flatten(1), observations["stats"].flatten(1)], dim=1)
            features = torch.cat([features, self.concept_gain * direct], dim=1)
        return features
