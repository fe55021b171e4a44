"""Would an observation with decoded context let a chooser remove more of the best fixed level's regret?

    python experiments/preview_rule/decoded_context.py --task segmentation --train-images 150 --out runs/ctx/seg.json

Issue 13's gap-closure target needs a chooser that removes well over the 38-40% of the best fixed level's per-step
regret that the class, the size and the stats explain (docs/env_v1.md, "Why 40% is out of reach"). This collects
greedy's steps on the first ``--train-images`` training images and, beside each step's observation, features the
encoder can compute before it chooses a level (it holds the decoder):

- ``rate`` (Q): lam * the bpp each level of the concept adds over level 0 (the rate term of eq. 13, exact);
- ``local`` (Q): the local generator's picture of the concept at each level, y(m, q) = G_l (eq. 28), scored in the
  concept's region against the original: the mean squared error times the region's pixel share, as the drop from
  level 0 (what a level buys in pixels, image-mean);
- ``context`` (4): the current reconstruction's squared error in the region (the other concepts' levels and the
  fusion shape it), the current L_S and eta * L_P relative to L(0), and the pixel share already coded;
- ``paste`` (Q): eta * the drop of L_P (eq. 11) from level 0 when y(m, q) is pasted into the concept's region of the
  current reconstruction (phi run on Q pictures; the global generator and the fusion are not rerun).

``rate`` and ``paste`` became SemanticCoding-v4's level preview (rlasc_env/preview.py); results in docs/env_v4.md.

The compact ensemble (the gate's best learned chooser) is fitted on greedy's steps with the stats alone and with each
group of features appended, in the gate's 5 image folds; printed per variant: the share of the best fixed level's
regret removed on held-out steps, with an image-bootstrap interval.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from agents.baselines import greedy_episodes
from rlasc_harness.learnability import (GreedySteps, LearnabilityConfig, fit_compact_ensemble, image_folds,
                                 regret_share_ci, step_regrets, steps_from_records)
from agents.policy import OBS_KEYS
from rlasc_harness.config import EnvId
from rlasc_harness.runner import make_engine
from rlasc_env.env import EpisodeCore
from rlasc_env.preview import current_x_hat, level_preview


@dataclass
class ContextConfig(LearnabilityConfig):
    env_id: EnvId = "rlasc/SemanticCoding-v1"
    """-v1, as measured (its 8 stats, with the features above beside them); the harness's own default is -v5."""
    out: str | None = None
    """Write the shares as JSON here."""
    steps_cache: str | None = None
    """Keep the collected steps (with the extra features) in this .npz (reused when present)."""


@torch.inference_mode()
def decoded_features(core: EpisodeCore, slots: np.ndarray) -> dict[str, np.ndarray]:
    """``rate``, ``local``, ``context`` and ``paste`` features of the next concept of each slot (module docstring);
    ``rate`` and ``paste`` are the level preview of SemanticCoding-v4 (:func:`rlasc_env.preview.level_preview`)."""
    rate, paste = level_preview(core, slots)  # also fills y(m, q) of every level into the core's cache
    q, dev, st = core.Q, core.device, core.store
    cls = core.order[slots, core.t[slots]]
    slot_t, cls_t = torch.as_tensor(slots, device=dev), torch.as_tensor(cls, device=dev)
    region = (st.labels[slot_t] == cls_t.view(-1, 1, 1)).unsqueeze(1).float()  # (k,1,H,W)
    y = core.y_levels[slot_t]  # (k,Q,3,H,W): y(m, q) in m's region
    x = core.images[slot_t]
    err = ((y - x.unsqueeze(1)).pow(2) * region.unsqueeze(1)).flatten(2).sum(2) / core.pixels  # (k,q) image-mean
    local = (err[:, :1] - err).cpu().double().numpy()
    x_hat = current_x_hat(core, slots)
    now = (((x_hat - x).pow(2) * region).flatten(1).sum(1) / core.pixels).cpu().double().numpy()
    loss0 = np.maximum(np.abs(core.loss0[slots]), 1e-9)
    coded_share = (core.share[slots] * core.coded[slots]).sum(1)
    context = np.stack([now, core.net_prev[slots, 0] / loss0, core.eta * core.net_prev[slots, 2] / loss0,
                        coded_share], 1)
    return {"rate": rate.astype(np.float32), "local": local.astype(np.float32), "context": context.astype(np.float32),
            "paste": paste.astype(np.float32)}


def collect(engine, cfg: ContextConfig) -> GreedySteps:
    """Greedy's steps on the first ``cfg.train_images`` training images, with the extra features as observations."""
    q = engine.num_levels
    per_core = max(1, min(cfg.batch // q, cfg.train_images))
    core = engine.core("train", q * per_core)
    images = engine.parts("train").images
    original = core.observation

    def observation(slots: np.ndarray) -> dict[str, np.ndarray]:
        return {**original(slots), **decoded_features(core, np.asarray(slots, np.int64))}

    core.observation = observation  # greedy's observe=True records these per step
    records = []
    started = time.time()
    for start in range(0, cfg.train_images, per_core):
        chunk = list(range(start, min(start + per_core, cfg.train_images)))
        records += greedy_episodes(core, images, chunk, engine.metric_name, observe=True)
        print(f"greedy: {start + len(chunk)}/{cfg.train_images} images, {time.time() - started:.0f} s", flush=True)
    return steps_from_records(records)


class _Shapes:
    """What fit_policy reads from an engine: the observation shapes (stats widened) and the number of levels."""

    def __init__(self, engine, stats_width: int) -> None:
        space = engine.observation_space
        self.observation_space = {k: tuple(space[k].shape) for k in OBS_KEYS}
        self.observation_space["stats"] = (stats_width,)
        self.num_levels = engine.num_levels


def with_stats(steps: GreedySteps, groups: tuple[str, ...], scale: dict[str, float]) -> GreedySteps:
    obs = dict(steps.observations)
    obs["stats"] = np.concatenate([obs["stats"]] + [obs[g] / scale[g] for g in groups], 1).astype(np.float32)
    return GreedySteps({k: obs[k] for k in OBS_KEYS}, steps.levels, steps.candidates, steps.classes, steps.image)


def main(cfg: ContextConfig) -> dict:
    torch.set_num_threads(cfg.threads or 1)
    engine = make_engine(cfg, cfg.task, "cpu")
    cache = Path(cfg.steps_cache) if cfg.steps_cache else None
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            obs = {k[4:]: data[k] for k in data.files if k.startswith("obs_")}
            steps = GreedySteps(obs, data["levels"], data["candidates"], data["classes"], data["image"])
    else:
        steps = collect(engine, cfg)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(cache, levels=steps.levels, candidates=steps.candidates, classes=steps.classes,
                                image=steps.image, **{f"obs_{k}": v for k, v in steps.observations.items()})
    scale = {g: float(np.abs(steps.observations[g]).std() + 1e-9) for g in ("rate", "local", "context", "paste")
             if g in steps.observations}
    variants = {"stats": (), "+rate": ("rate",), "+rate+local": ("rate", "local"),
                "+rate+local+context": ("rate", "local", "context"), "+rate+paste": ("rate", "paste"),
                "+rate+local+paste+context": ("rate", "local", "paste", "context")}
    variants = {k: v for k, v in variants.items() if all(g in steps.observations for g in v)}
    folds = image_folds(steps, cfg.cv_folds, cfg.seed)
    fixed = min(range(engine.num_levels), key=lambda lv: step_regrets(steps, np.full(len(steps), lv)).sum())
    reference = step_regrets(steps, np.full(len(steps), fixed))
    report = {"task": cfg.task, "images": cfg.train_images, "steps": len(steps), "best_fixed": fixed, "shares": {}}
    for name, groups in variants.items():
        widened = with_stats(steps, groups, scale)
        shapes = _Shapes(engine, widened.observations["stats"].shape[1])
        chosen = np.zeros(len(steps), np.int64)
        for held_images in folds:
            test = np.isin(steps.image, held_images)
            ensemble = fit_compact_ensemble(shapes, widened.subset(np.flatnonzero(~test)), seed=cfg.seed,
                                            max_epochs=max(cfg.epochs, 10) * 3)
            chosen[test] = ensemble.act(widened.subset(np.flatnonzero(test)).observations, deterministic=True)
        share = regret_share_ci(steps.image, step_regrets(steps, chosen), reference, cfg.bootstrap, cfg.seed)
        report["shares"][name] = share
        print(f"{name}: {share['share']:.1%} [{share['low']:.1%}, {share['high']:.1%}]", flush=True)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main(tyro.cli(ContextConfig))
