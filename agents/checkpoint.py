"""Saved agent policies and resumable training states.

Files are written atomically (temporary file + rename) and read with
``torch.load(weights_only=True)``; each carries a format tag and a version, checked on load:

- ``rlasc-agent-policy`` v1: ``{"format", "version", "spec" (the network's ``spec()``: PaperPolicy's, or
  CorrectedRulePolicy's with ``kind`` ``corrected_preview_rule``), "state" (weights), "meta"}``; what
  ``train_agent.py --eval-only`` reads.
- ``rlasc-agent-train-state`` v1: the same plus optimizer, counters and random generator states
  (``--resume``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from codec_models.checkpoint import CheckpointError, atomic_save, safe_load

from .corrected_rule import POLICY_KIND, CorrectedRulePolicy
from .policy import PaperPolicy

Policy = PaperPolicy | CorrectedRulePolicy

__all__ = ["POLICY_FORMAT", "STATE_FORMAT", "FORMAT_VERSION", "CheckpointError", "save_policy", "load_policy",
           "save_training_state", "load_training_state", "policy_from_spec"]

POLICY_FORMAT = "rlasc-agent-policy"
STATE_FORMAT = "rlasc-agent-train-state"
FORMAT_VERSION = 1


def policy_from_spec(spec: dict[str, Any]) -> Policy:
    """The untrained network a saved ``spec`` describes: a :class:`CorrectedRulePolicy` when its ``kind`` says so,
    else the paper's :class:`PaperPolicy` (files written before the kinds existed have none)."""
    if spec.get("kind") == POLICY_KIND:
        return CorrectedRulePolicy.from_spec(spec)
    if "kind" in spec:
        raise ValueError(f"unknown policy kind {spec['kind']!r}")
    return PaperPolicy.from_spec(spec)


def _payload(fmt: str, policy: Policy, extra: dict[str, Any]) -> dict[str, Any]:
    return {"format": fmt, "version": FORMAT_VERSION, "spec": policy.spec(),
            "state": {k: v.detach().cpu() for k, v in policy.state_dict().items()}, **extra}


def _read(path: str | Path, fmt: str) -> dict[str, Any]:
    obj = safe_load(path)
    if obj.get("format") != fmt:
        found = obj.get("format")
        hint = " (a codec checkpoint?)" if found == "rlasc-codec" else ""
        raise CheckpointError(f"{path} is a {found!r} file{hint}, expected {fmt!r}")
    if obj.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has {fmt} version {obj.get('version')}, this code reads version "
                              f"{FORMAT_VERSION}; retrain with train_agent.py")
    return obj


def _restore(obj: dict[str, Any], path: str | Path, policy: Policy | None) -> Policy:
    if policy is None:
        try:
            policy = policy_from_spec(obj["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} holds an unusable policy description: {exc}") from exc
    elif obj["spec"] != policy.spec():
        raise CheckpointError(f"{path} holds a policy built as {obj['spec']}, not {policy.spec()}")
    try:
        policy.load_state_dict(obj["state"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the policy network: {exc}") from exc
    return policy


def save_policy(path: str | Path, policy: Policy, meta: dict[str, Any] | None = None) -> Path:
    """Write the policy network (architecture spec + weights + ``meta``) atomically."""
    return atomic_save(_payload(POLICY_FORMAT, policy, {"meta": dict(meta or {})}), path)


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> tuple[Policy, dict[str, Any]]:
    """(policy in eval mode on ``device``, metadata) from a file written by :func:`save_policy`."""
    obj = _read(path, POLICY_FORMAT)
    policy = _restore(obj, path, None).to(device).eval()
    return policy, dict(obj.get("meta", {}))


def save_training_state(path: str | Path, policy: Policy, state: dict[str, Any]) -> Path:
    """Write a resumable training state (policy + trainer ``state``) atomically."""
    return atomic_save(_payload(STATE_FORMAT, policy, {"trainer": state}), path)


def load_training_state(path: str | Path, policy: Policy) -> dict[str, Any]:
    """Load the weights into ``policy`` (same architecture) and return the trainer state."""
    obj = _read(path, STATE_FORMAT)
    _restore(obj, path, policy)
    return obj["trainer"]
