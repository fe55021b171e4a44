"""Does the signal gate's fitted chooser improve with more fitting images? A learning curve on greedy's cached steps.

    python experiments/signal_gate/gate_learning_curve.py --task detection --greedy-cache runs/gate/greedy_detection.npz

Uses the steps ``python -m rlasc_harness.learnability`` cached (300 training images; nothing is collected again when the
cache matches). The images are split into the gate's 5 folds; each fold is held out once and the choosers are fitted
on the first n images of the other folds, n = 48, 96, 144, 192, 240. Printed per n: the share of the best fixed level's
immediate regret removed on the held-out steps (pooled over the 5 folds; at n = 240 these are the gate's cross-validated figures) by the compact chooser, the ensemble of five
(the gate's candidates that use the class and stats) and the class table fitted along q*'s episodes. A share that is
still rising at n = 240 says the gate's fit is short of data rather than of information.

It first prints in-sample ceilings on all 300 images: the share removed by a table fitted on the very steps it is
scored on (per class; per class and the gate's size bucket; per class and size decile), an upper bound for any chooser
that sees only the class and the size, and by one level per image. ``--ceilings-only`` stops there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from agents.class_table import size_bucket
from rlasc_harness.learnability import (GreedySteps, LearnabilityConfig, cached_greedy_steps, fit_compact_ensemble,
                                 fit_policy, image_folds, step_regrets, table_of)
from rlasc_harness.config import EnvId
from rlasc_harness.runner import make_engine


@dataclass
class CurveConfig(LearnabilityConfig):
    env_id: EnvId = "rlasc/SemanticCoding-v1"
    """The gate's id (docs/env_v1.md); its greedy cache must come from the same id."""
    sizes: tuple[int, ...] = (48, 96, 144, 192, 240)
    """Numbers of fitting images."""
    follow_level: int = 4
    """q*: the best uniform level whose episodes' steps the class table is fitted on (level 4 on every task)."""
    out: str | None = None
    """Write the curve as JSON here."""
    ceilings_only: bool = False
    """Print the in-sample ceilings only (no fitting)."""


def in_sample_ceilings(steps: GreedySteps, num_levels: int) -> dict[str, float]:
    """Share of the best fixed level's regret removed by the best level per group, groups fitted and scored on the
    same steps: per class, per (class, size bucket of the class table), per (class, size decile), per image."""
    regret = steps.candidates.max(1, keepdims=True) - steps.candidates  # (N, Q)
    fixed = regret.sum(0).min()
    share = steps.observations["stats"][:, 0]
    deciles = np.digitize(share, np.quantile(share, np.linspace(0, 1, 11)[1:-1]))
    groupings = {"class": steps.classes, "class x size bucket": steps.classes * 16 + size_bucket(share),
                 "class x size decile": steps.classes * 16 + deciles, "image": steps.image}
    out = {}
    for name, groups in groupings.items():
        best = sum(regret[groups == g].sum(0).min() for g in np.unique(groups))
        out[name] = float(1.0 - best / fixed)
    return out


def main(cfg: CurveConfig) -> dict[str, dict[str, float]]:
    torch.set_num_threads(cfg.threads or 1)
    engine = make_engine(cfg, cfg.task, "cpu")
    steps = cached_greedy_steps(engine, cfg)
    follow = cached_greedy_steps(engine, cfg, follow=cfg.follow_level)
    ceilings = in_sample_ceilings(steps, engine.num_levels)
    print("in-sample ceilings: " + ", ".join(f"{k} {v:.1%}" for k, v in ceilings.items()), flush=True)
    if cfg.ceilings_only:
        return {"ceilings": ceilings}
    folds = image_folds(steps, cfg.cv_folds, cfg.seed)  # the gate's folds
    curve: dict[str, dict[str, float]] = {}
    for n in cfg.sizes:
        regrets: dict[str, list[np.ndarray]] = {"compact_fit": [], "compact_ensemble": [], "class_table": []}
        fixed_levels: dict[int, list[np.ndarray]] = {lv: [] for lv in range(engine.num_levels)}
        for k, held_images in enumerate(folds):
            rest = np.concatenate([f for j, f in enumerate(folds) if j != k])
            chosen_images = rest[:n]
            fit = steps.subset(np.flatnonzero(np.isin(steps.image, chosen_images)))
            held = steps.subset(np.flatnonzero(np.isin(steps.image, held_images)))
            for lv, parts in fixed_levels.items():
                parts.append(step_regrets(held, np.full(len(held), lv)))
            compact = fit_policy(engine, fit, cfg.epochs, cfg.learning_rate, cfg.batch_size, cfg.seed,
                                 objective="reward_regression", network="compact")
            ensemble = fit_compact_ensemble(engine, fit, seed=cfg.seed, max_epochs=max(cfg.epochs, 10) * 3)
            table = table_of(follow.subset(np.flatnonzero(np.isin(follow.image, chosen_images))))
            regrets["compact_fit"].append(step_regrets(held, compact.act(held.observations, deterministic=True)))
            regrets["compact_ensemble"].append(step_regrets(held, ensemble.act(held.observations, deterministic=True)))
            regrets["class_table"].append(step_regrets(held, table.choose(held.classes,
                                                                          held.observations["stats"][:, 0])))
        fixed = min(np.concatenate(parts).sum() for parts in fixed_levels.values())  # the best fixed level, pooled
        curve[str(n)] = {name: float(1.0 - np.concatenate(parts).sum() / fixed) for name, parts in regrets.items()}
        print(f"n = {n} fitting images: " + ", ".join(f"{k} {v:.1%}" for k, v in curve[str(n)].items()), flush=True)
    if cfg.out:
        with open(cfg.out, "w") as fh:
            json.dump({"task": cfg.task, "folds": cfg.cv_folds, "ceilings": ceilings, "curve": curve}, fh, indent=2)
    return {"ceilings": ceilings, **curve}


if __name__ == "__main__":
    main(tyro.cli(CurveConfig))
