"""RL-ASC operating points: which quantization level each concept of each image gets.

- ``rlasc``: a trained agent's policy plays one episode per image in the environment (the
  levels of its last step are the image's levels), then the real codec codes the image with
  them. Points at ``level_offset`` k > 0 lower every level the agent chose by k (clamped at the
  coarsest), k < 0 raise them by -k (clamped at the highest): the agent's allocation at lower and
  higher bitrate modes of the same codec.
- ``rlasc_simplified``: no agent, every concept at the highest level (Section IV-A.4).
- ``rlasc_fixed_<q>``: no agent, every concept at level q (the other bitrate modes of one codec).

The simplified *curve* (BD deltas, figures) is every uniform-level point: ``rlasc_simplified``
and the ``rlasc_fixed_<q>`` together (:func:`rlasc_harness.evaluate_codecs.runner.bd_curves`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec_models.codec import SemanticCodec
from rlasc_env.tasks import Task

__all__ = ["LevelPlan", "LoadedPolicy", "compress_levels", "fixed_plan", "load_policy", "offset_plan", "policy_plan"]

ActFn = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]


@dataclass
class LevelPlan:
    """Levels of every evaluation image for one RL-ASC operating point."""

    name: str  # "rlasc", "rlasc_simplified", "rlasc_fixed_<q>"
    codec: SemanticCodec
    codec_name: str
    levels: list[dict[int, int]]  # per image: {class id: level}
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedPolicy:
    """A trained policy: ``act(obs, slots) -> levels`` plus the env settings it was trained with."""

    act: ActFn
    path: str
    lam: float = 1.0
    eta: float = 10.0
    task: str = "segmentation"
    meta: dict[str, Any] = field(default_factory=dict)
    preview: bool = False  # trained on SemanticCoding-v4: its observation carries the level preview


@torch.no_grad()
def compress_levels(codec: SemanticCodec, image: torch.Tensor, level_sets: Sequence[Mapping[int, int] | None]
                    ) -> list[bytes]:
    """``[codec.compress(image, levels) for levels in level_sets]``, byte for byte, with the encoder
    (F, E, all levels) run once: the same steps as :meth:`SemanticCodec.compress` (checked by the tests)."""
    images = codec.check_images(image)
    if images.shape[0] != 1:
        raise ValueError("compress_levels takes one image (3,H,W)")
    analysis = codec.analyse(images)
    present = analysis.present[0].nonzero().flatten().tolist()
    label_payload = codec.encode_labels(analysis.labels[0])
    cache: dict[tuple[int, int], bytes] = {}
    symbols: dict[int, np.ndarray] = {}

    def payload(m: int, q: int) -> bytes:
        if (m, q) not in cache:
            cache[(m, q)] = codec.encode_concept(analysis, 0, m, q)
        return cache[(m, q)]

    def level0(m: int) -> np.ndarray:
        if m not in symbols:
            symbols[m] = codec.concept_symbols(analysis, 0, m, 0)
        return symbols[m]

    out = []
    for levels in level_sets:
        level_of = codec.level_map(levels)
        concepts = [(m, level_of[m]) for m in present]
        out.append(codec.assemble(images.shape[-2], images.shape[-1], label_payload, concepts, payload, level0))
    return out


def fixed_plan(codec: SemanticCodec, codec_name: str, level: int, count: int) -> LevelPlan:
    """Every concept of every image at ``level`` (highest level = ``rlasc_simplified``)."""
    q = codec.num_levels
    if not 0 <= level < q:
        raise ValueError(f"level {level} outside [0, {q})")
    name = "rlasc_simplified" if level == q - 1 else f"rlasc_fixed_{level}"
    levels = {m: level for m in range(codec.num_classes)}
    return LevelPlan(name, codec, codec_name, [dict(levels) for _ in range(count)], {"level": level})


def offset_plan(plan: LevelPlan, offset: int) -> LevelPlan:
    """The plan's levels lowered by ``offset`` (raised when negative), clamped to the codec's levels."""
    top = plan.codec.num_levels - 1
    levels = [{m: min(top, max(0, q - offset)) for m, q in lv.items()} for lv in plan.levels]
    return LevelPlan(plan.name, plan.codec, plan.codec_name, levels, {**plan.extra, "level_offset": int(offset)})


@torch.no_grad()
def policy_plan(policy: LoadedPolicy, codec: SemanticCodec, codec_name: str, task: Task, images: Any,
                batch_size: int = 16) -> LevelPlan:
    """Play the policy on every image of ``images`` (a data set) and keep its final levels."""
    from rlasc_env.engine import run_episodes
    from rlasc_env.env import EpisodeCore, build_parts

    parts = build_parts(task=task, codec=codec, images=images, device=codec.device, preview=policy.preview)
    core = EpisodeCore(parts, max(1, min(batch_size, len(images))), policy.lam, policy.eta)
    records = run_episodes(core, images, list(range(len(images))), policy.act, task.metric_name)
    levels = [{int(c): int(q) for c, q in zip(r.concepts, r.levels)} for r in records]
    env_bpp = [float(r.bpp) for r in records]
    return LevelPlan("rlasc", codec, codec_name, levels,
                     {"policy": policy.path, "level_offset": 0, "env_bpp_mean": float(np.mean(env_bpp)),
                      "lam": policy.lam, "eta": policy.eta})


def load_policy(path: str | os.PathLike, num_levels: int, device: torch.device | str = "cpu") -> LoadedPolicy:
    """A trained policy of ``train_agent.py``: a REINFORCE policy file (``rlasc-agent-policy``,
    read by ``agents.checkpoint.load_policy``) or a stable-baselines3 ``model.zip`` whose run
    folder holds a JSON naming its ``algo``. Acts deterministically (argmax / SB3 deterministic)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy file {path} does not exist")
    if path.suffix == ".zip":
        return _load_sb3(path, device, num_levels)
    from agents.checkpoint import load_policy as load_checkpoint

    net, meta = load_checkpoint(path, device)
    if net.num_levels != num_levels:
        raise ValueError(f"{path}: the policy chooses among {net.num_levels} levels, the codec has {num_levels}")

    def act(obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        return net.act(obs, deterministic=True)
    return _with_env_settings(act, path, meta, _reads_preview(net.shapes["stats"][0], num_levels))


def _reads_preview(stats_width: int, num_levels: int) -> bool:
    """Whether a policy's stats input has the level preview (SemanticCoding-v4) or -v1's entries only; any other
    width was made for another environment."""
    from rlasc_env.env import NUM_STATS
    from rlasc_env.preview import preview_size

    if stats_width == NUM_STATS:
        return False
    if stats_width == NUM_STATS + preview_size(num_levels):
        return True
    raise ValueError(f"the policy reads {stats_width} stats entries; SemanticCoding-v1 has {NUM_STATS} and -v4 "
                     f"{NUM_STATS + preview_size(num_levels)} for {num_levels} levels: it was trained for another "
                     "environment or codec")


def _run_folder_meta(path: Path) -> dict[str, Any]:
    """What train_agent.py wrote beside the policy (config.json, results.json), merged."""
    import json

    out: dict[str, Any] = {}
    for name in ("results.json", "config.json"):
        try:
            obj = json.loads((path.parent / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(obj, dict):
            out.update(obj)
    return out


def _find(sources: Sequence[Mapping[str, Any]], key: str) -> Any:
    """``key`` at the top of the first source holding it, or one level down (e.g. config.json's
    ``{"config": {"lam": ...}}``)."""
    for meta in sources:
        if key in meta and not isinstance(meta[key], Mapping):
            return meta[key]
        for value in meta.values():
            if isinstance(value, Mapping) and key in value and not isinstance(value[key], Mapping):
                return value[key]
    return None


def _with_env_settings(act: ActFn, path: Path, meta: Mapping[str, Any], preview: bool) -> LoadedPolicy:
    sources = [meta, _run_folder_meta(path)]
    lam, eta, task = _find(sources, "lam"), _find(sources, "eta"), _find(sources, "task")
    return LoadedPolicy(act, str(path), 1.0 if lam is None else float(lam), 10.0 if eta is None else float(eta),
                        "segmentation" if task is None else str(task), dict(meta), preview)


def _load_sb3(path: Path, device: Any, num_levels: int) -> LoadedPolicy:
    from agents.sb3 import load_sb3, sb3_act

    meta = _run_folder_meta(path)
    algo = _find([meta], "algo")
    if not isinstance(algo, str):
        raise ValueError(f"{path}: no config.json / results.json with 'algo' beside the SB3 model (train_agent.py "
                         "writes them in its run folder); cannot tell which algorithm to load")
    model = load_sb3(algo, path, str(device))
    return _with_env_settings(sb3_act(model, deterministic=True), path, meta,
                              _reads_preview(int(model.observation_space["stats"].shape[0]), num_levels))


def plans_for_codec(codec: SemanticCodec, codec_name: str, count: int) -> list[LevelPlan]:
    """``rlasc_simplified`` and every ``rlasc_fixed_<q>`` of one codec."""
    return [fixed_plan(codec, codec_name, q, count) for q in reversed(range(codec.num_levels))]


def describe_levels(plans: Sequence[LevelPlan]) -> str:
    return ", ".join(f"{p.name}{'' if 'level_offset' not in p.extra else '@' + str(-p.extra['level_offset'])}"
                     for p in plans)
