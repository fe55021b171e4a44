"""Would a cheaper level preview keep the preview rule's score? (issue 30's design change, measured before building.)

docs/env_speed.md bounds the current id's speed by its arithmetic: the level preview is 69% of a step's FLOPs (G_l at
every level, then phi on Q pasted pictures, eq. 11). It names two cheaper previews, each a new observation (a new id):

- ``reset``: the pictures pasted into the level-0 reconstruction (every concept at level 0, the state at reset)
  instead of the current one; the drops then depend on the image only, so one batched pass at reset serves every
  episode of the image (a per-image cache), and a step runs no phi at all;
- ``stage1``: L_P (eq. 11) from phi's first stage only, against the current reconstruction.

and both together (``reset_stage1``). This script plays the preview rule (argmax_q of -rate_q + w * perceptual_q,
``agents.baselines.PreviewRule``) with each preview on the current id's first test images; the env's rewards are
unchanged, only the rule's input differs. The rate entries stay exact (they cost no network). Every weight of a grid
is played on the same images (the stage-1 drops have another scale), and each preview is compared at its best
weight: an envelope, equally optimistic for every preview, with no weight-selection noise (a weight refit on 24-32
training images moved the exact rule's return by 0.07). ``exact`` recomputes today's preview the same way: at the
first weight its returns must equal the shipped rule's (a check of this script).

    python experiments/env_speed/cheap_preview.py --task segmentation --test-images 100 --variants exact reset stage1 \
        --json experiments/env_speed/cheap_preview_segmentation.json

(experiments/env_speed/README.md has the three commands that wrote the JSON files; ``reset_stage1`` is available and was not run: both
parts already lose on their own.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from agents.baselines import PreviewRule
from codec_models.perceptual import feature_distance
from rlasc_env.engine import make_engine, run_copies
from rlasc_env.preview import current_x_hat, level_preview
from rlasc_env.score import load_references

VARIANTS = ("exact", "reset", "stage1", "reset_stage1")
WEIGHTS = (0.8, 0.2, 0.4, 0.6, 1.1, 1.6, 2.4)  # 0.8 first: the shipped rule's weight on -v7


class VariantPreviewRule:
    """The preview rule on a recomputed preview: ``variant`` picks the context (current or level-0 reconstruction)
    and phi's stages (all, or the first)."""

    def __init__(self, core, variant: str, weight: float) -> None:
        self.core, self.variant, self.weight = core, variant, float(weight)
        self.level0: dict[int, torch.Tensor] = {}  # slot -> its reconstruction at reset (every concept at level 0)
        self.stages = 1 if variant.endswith("stage1") else None

    @torch.inference_mode()
    def __call__(self, obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        core = self.core
        slots = np.asarray(slots, np.int64)
        rate, _ = level_preview(core, slots)  # exact rate entries (served by the memo the observation filled)
        current = current_x_hat(core, slots)
        for i, s in enumerate(slots.tolist()):
            if core.t[s] == 0:
                self.level0[s] = current[i].clone()
        drops = np.zeros_like(rate)
        for i, s in enumerate(slots.tolist()):
            m = int(core.order[s, core.t[s]])
            base = self.level0[s] if self.variant.startswith("reset") else current[i]
            region = (core.store.labels[s] == m).unsqueeze(0)
            pasted = torch.where(region, core.y_levels[s], base)  # (Q,3,H,W): y(m, q) in the concept's region
            drops[i] = self._drops(pasted, s)
        return (-rate + self.weight * core.eta * drops).argmax(1).astype(np.int64)

    def _drops(self, pasted: torch.Tensor, slot: int) -> np.ndarray:
        """L_P (eq. 11, ``feature_distance``) with y(m, 0) pasted minus L_P with y(m, q) pasted, per level q; phi's
        first stage only for the stage-1 previews."""
        feats = self.core.phi.features(pasted, self.stages)
        lp = feature_distance([f[slot:slot + 1] for f in self.core.phi_feats[:self.stages]], feats)
        lp = lp.double().numpy()
        return lp[0] - lp


def phi_flops(core) -> dict[str, float]:
    """GFLOP of phi on one 64x128 picture: all stages and the first stage."""
    x = torch.rand(1, 3, core.height, core.width)
    out = {}
    for name, n in (("all_stages", None), ("stage1", 1)):
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            h = x
            for stage in (core.phi.stages if n is None else core.phi.stages[:n]):
                h = stage(h)
        out[name] = counter.get_total_flops() / 1e9
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="segmentation")
    ap.add_argument("--test-images", type=int, default=100)
    ap.add_argument("--variants", nargs="+", default=["exact", "reset", "stage1"], choices=VARIANTS)
    ap.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS), help="the rule's weights w")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, weights = args.test_images, [float(w) for w in args.weights]
    engine = make_engine(task=args.task, sizes={"test": n})
    images = engine.parts("test").images
    zero, one = load_references(args.task).points(n)
    out: dict = {"command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]), "env_id": engine.spec.env_id,
                 "task": args.task, "test_images": n, "weights": weights,
                 "score_references": {"best_fixed_mean_return": zero, "greedy_mean_return": one}, "variants": {}}
    for variant in args.variants:
        t0 = time.time()
        core = engine.core("test", len(weights) + 1)
        rules: list = [VariantPreviewRule(core, variant, w) for w in weights]
        if variant == "exact":  # the shipped rule at the first weight: the recomputation must agree with it
            rules.append(PreviewRule(weights[0], core.Q))
        recs = run_copies(core, images, range(n), rules, engine.metric_name)
        returns = np.array([[r.episode_return for r in rs] for rs in recs[:len(weights)]])  # (W, n)
        best = int(returns.mean(1).argmax())
        row = {"test_mean_return": dict(zip(map(str, weights), returns.mean(1).tolist())),
               "score": dict(zip(map(str, weights), ((returns.mean(1) - zero) / (one - zero)).tolist())),
               "best_weight": weights[best], "best_returns": returns[best].tolist(),
               "best_mean_bpp": float(np.mean([r.bpp for r in recs[best]])), "seconds": time.time() - t0}
        if variant == "exact":
            shipped = np.array([r.episode_return for r in recs[-1]])
            row["largest_difference_to_shipped_rule"] = float(np.abs(shipped - returns[0]).max())
        out["variants"][variant] = row
        print(f"{variant}: best w={weights[best]} score {row['score'][str(weights[best])]:.3f} "
              f"({row['seconds']:.0f} s)", flush=True)
    if "exact" in out["variants"]:  # each variant at its best weight against the exact preview at its best weight
        ref = np.asarray(out["variants"]["exact"]["best_returns"])
        for row in out["variants"].values():
            diff = np.asarray(row["best_returns"]) - ref
            boot = np.random.default_rng(0).choice(diff, (10000, len(diff))).mean(1)
            row["paired_difference_to_exact"] = [float(diff.mean()), *np.percentile(boot, [2.5, 97.5]).tolist()]
    out["phi_gflop_per_picture"] = phi_flops(engine.core("test", 1))
    for name, row in out["variants"].items():
        print(name, {k: v for k, v in row.items() if k not in ("best_returns", "test_mean_return")})
    print("phi GFLOP per picture:", out["phi_gflop_per_picture"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
