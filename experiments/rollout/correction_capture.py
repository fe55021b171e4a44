"""How much of the best single change does the corrected rule's fit capture on images it never saw?

A rollout run's state (``runs/agent/rollout-<task>-<seed>/checkpoint.pt``, written by ``train_agent.py --algo
rollout``) holds every step it collected: the policy's input x = [stats, one-hot concept], the level it chose, and
the worth of every level (the episode return with that concept alone changed, agents/rollout.py). This script folds
the steps by image (5 folds), fits the correction (``agents.rollout.fit_correction``, the run's hyperparameters unless
overridden) on a fraction of the other folds' images, and measures on the held-out fold

    captured = sum over steps of (worth[corrected rule's level] - worth[chosen level])
               / sum over steps of (max_q worth[q] - worth[chosen level]),

the share of the best single change the fitted policy would take. 1 = it predicts every improvement the rollouts
found; 0 = no better than the policy that collected the steps. Only CPU seconds: nothing is replayed.

    python experiments/rollout/correction_capture.py runs/rollout4x100-seg/checkpoint.pt --fractions 0.25 0.5 1
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", help="checkpoint.pt of a rollout run")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0],
                        help="shares of the other folds' images the fit sees")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--hp", nargs="*", default=[], help="RolloutConfig overrides key=value (e.g. hidden=256)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from agents.checkpoint import load_training_state
    from agents.corrected_rule import CorrectedRulePolicy
    from agents.rollout import _STEP_FIELDS, RolloutConfig, RolloutSteps, fit_correction

    raw = torch.load(args.state, weights_only=True)
    spec = raw["spec"]
    policy = CorrectedRulePolicy.from_spec(spec)
    state = load_training_state(args.state, policy)
    steps = RolloutSteps.from_state(state["steps"])
    known = {f.name for f in fields(RolloutConfig)}
    base = {k: v for k, v in state["config"].items() if k in known}
    for item in args.hp:
        key, value = item.split("=", 1)
        if key not in known:
            raise SystemExit(f"unknown hyperparameter {key!r}; known: {sorted(known)}")
        base[key] = type(base[key])(value)
    cfg = RolloutConfig(**base)
    images = np.unique(steps.image)
    np.random.default_rng(0).shuffle(images)
    folds = np.array_split(images, args.folds)

    def subset(mask: np.ndarray) -> RolloutSteps:
        return RolloutSteps(*(getattr(steps, f)[mask] for f in _STEP_FIELDS))

    rows = []
    for fraction in args.fractions:
        taken, available = 0.0, 0.0
        for k, held in enumerate(folds):
            rest = np.setdiff1d(images, held)
            fit_images = rest[:max(1, int(round(len(rest) * fraction)))]
            fitted = CorrectedRulePolicy.from_spec(spec)
            fit_correction(fitted, subset(np.isin(steps.image, fit_images)), cfg, k)
            test = subset(np.isin(steps.image, held))
            stake = test.stake[:, None]
            rule = torch.as_tensor(-test.rate / stake + fitted.rule_weight * test.perceptual / stake, dtype=torch.float32)
            with torch.no_grad():
                chosen = (rule + fitted.correction(torch.as_tensor(test.inputs))).argmax(1).numpy()
            n = np.arange(len(test))
            taken += float((test.worth[n, chosen] - test.worth[n, test.levels]).sum())
            available += float(test.regret().sum())
        rows.append({"fraction": fraction, "fit_images": int(round((len(images) - len(images) / args.folds) * fraction)),
                     "captured": taken / available, "best_change_per_step": available / len(steps)})
        print(f"fit on {fraction:.2f} of the other folds' images (about {rows[-1]['fit_images']}): captured "
              f"{rows[-1]['captured']:.3f} of the best single change on held-out images", flush=True)
    report = {"state": args.state, "steps": len(steps), "images": int(len(images)), "config": base, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
