"""RL-Zoo-style hyperparameter files: ``agents/hyperparams/<algo>.yml``.

Each file maps the env id to presets, and each preset to the algorithm's hyperparameters::

    rlasc/SemanticCoding-v7:
      tiny:  {learning_rate: ..., ...}
      paper: {...}
    rlasc/SemanticCoding-v7 observation=paper:   # settings for one observation option of the id, when they differ
      tiny:  {...}

``--hp key=value`` overrides any entry (values parsed as YAML, dotted keys reach nested
mappings, e.g. ``policy_kwargs.dropout=0.1``); new keys are added and checked by the algorithm
(``ReinforceConfig`` or the SB3 class reject names they do not know).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["HYPERPARAMS_DIR", "ENV_ID", "load_hyperparams", "apply_overrides"]

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
ENV_ID = "rlasc/SemanticCoding-v7"  # rlasc_env.CURRENT_ID (not imported: --help stays fast)


def load_hyperparams(algo: str, preset: str, env_id: str = ENV_ID, directory: str | Path | None = None,
                     observation: str | None = None) -> dict[str, Any]:
    """The hyperparameters of ``algo`` for ``env_id`` (``"<id> observation=<observation>"`` when the file has that
    entry) and ``preset`` (a fresh copy)."""
    path = Path(directory or HYPERPARAMS_DIR) / f"{algo}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"no hyperparameter file {path} for algorithm {algo!r}")
    with path.open() as handle:
        data = yaml.safe_load(handle) or {}
    if observation is not None and f"{env_id} observation={observation}" in data:
        env_id = f"{env_id} observation={observation}"
    if env_id not in data:
        raise KeyError(f"{path} has no entry for env id {env_id!r} (found {sorted(data)})")
    presets = data[env_id]
    if preset not in presets:
        raise KeyError(f"{path} has no preset {preset!r} for {env_id} (found {sorted(presets)})")
    return copy.deepcopy(presets[preset])


def parse_value(text: str) -> Any:
    """A YAML value; numbers YAML 1.1 reads as strings (``1e-3``) become floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(hp: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``["key=value", "a.b=value"]`` applied to a copy of ``hp``; values parsed with YAML."""
    out = copy.deepcopy(hp)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--hp expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        path = key.strip().split(".")
        target = out
        for part in path[:-1]:
            value = target.setdefault(part, {})
            if not isinstance(value, dict):
                raise KeyError(f"--hp {key}: {part!r} is {value!r}, not a mapping of hyperparameters")
            target = value
        target[path[-1]] = parse_value(text)
    return out
