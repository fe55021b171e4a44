"""Does the feature map predict what the corrected rule misses? A correction that reads f(m), fitted like rollout's.

The rollout policy's correction c_q(x) reads x = [stats, one-hot concept] only (agents/corrected_rule.py), and on
images it never saw it takes a small share of the best single change the rollouts find
(correction_capture.py). The task loss's answer to a concept's level depends on the concept's content, which
the stats summarise only through the preview's rate and perceptual columns. This script plays the preview rule on
training images with ``agents.rollout.collect_rollouts`` (every level's worth in the final allocation), keeps each
step's observed feature map f(m) (eq. 2) and mask as well, and compares, over 5 image folds, the share of the best
single change captured on held-out images by corrections fitted to the same target (``fit_correction``'s loss):

- ``stats``: the shipped correction's input x (3 MLPs of 64, as agents/rollout.py);
- ``stats+pooled``: x plus the mask-averaged feature vector (32) and the mask's area and centroid;
- ``stats+cnn``: x plus a small convolutional trunk (16 channels, stride 2, averaged) on [f(m), mask];
- ``stats+classes``: x plus the image's classes (multi-hot) and those still to be coded after this one;
- ``stats+allocation``: ``stats+classes`` plus every other concept's level in the final allocation, which the
  worth is measured in: context a policy does not observe (the later levels are its own future choices), as an
  upper bound on what context could add.

    python experiments/rollout/feature_correction.py --task segmentation --images 150 --out runs/feature_correction_seg.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


KINDS = ("stats", "stats+pooled", "stats+cnn", "stats+classes", "stats+allocation")


def context_columns(onehot: np.ndarray, levels: np.ndarray, image: np.ndarray, num_levels: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step (steps of an image contiguous, in coding order): the image's classes, the classes coded after this
    step, and every other class's level in the final allocation ((q + 1) / Q, 0 where absent or this step's)."""
    n, m = onehot.shape
    cls = onehot.argmax(1)
    present, later, others = (np.zeros((n, m), np.float32) for _ in range(3))
    for i in dict.fromkeys(image.tolist()):
        idx = np.flatnonzero(image == i)
        for a, s in enumerate(idx):
            present[s, cls[idx]] = 1
            later[s, cls[idx[a + 1:]]] = 1
            others[s, cls[idx]] = (levels[idx] + 1) / num_levels
            others[s, cls[s]] = 0
    return present, later, others


class Correction(nn.Module):
    """c_q from x (normalised) and optionally the feature map: an MLP on [x, pooled] or [x, CNN(f, mask)]."""

    def __init__(self, x_width: int, q: int, kind: str, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.kind = kind
        extra = {"stats": 0, "stats+pooled": channels + 3, "stats+cnn": 16}.get(kind, 0)
        if kind == "stats+cnn":
            self.trunk = nn.Sequential(nn.Conv2d(channels + 1, 16, 3, stride=2, padding=1), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(x_width + extra, hidden), nn.ReLU(), nn.Linear(hidden, q))
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    def forward(self, z: torch.Tensor, pooled: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        if self.kind not in ("stats+pooled", "stats+cnn"):
            return self.head(z)  # the context kinds are columns of z
        if self.kind == "stats+pooled":
            return self.head(torch.cat([z, pooled], 1))
        return self.head(torch.cat([z, self.trunk(fmap)], 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="segmentation")
    parser.add_argument("--images", type=int, default=150, help="the first N training images, played by the rule")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default=None, help="npz of the collected steps (written if missing)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from agents.rollout import RolloutConfig, RolloutSteps, collect_rollouts
    from rlasc_env.engine import make_engine
    from rlasc_env.registration import CURRENT_ID
    from rlasc_harness.runner import fitted_preview_rule

    t0 = time.perf_counter()
    engine = make_engine(CURRENT_ID, task=args.task, observation="preview", sizes={"train": args.images})
    rule = fitted_preview_rule(engine, 16, print)
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        data = dict(np.load(cache))
        steps = RolloutSteps(*(data[f] for f in ("inputs", "rate", "perceptual", "levels", "worth", "image",
                                                   "iteration")))
        fmaps = data["fmaps"]
    else:
        core = engine.core("train", 96)
        seen: dict[int, list[np.ndarray]] = {}

        def act(obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
            for r, slot in enumerate(np.asarray(slots).tolist()):
                seen.setdefault(int(core.index[slot]), []).append(
                    np.concatenate([obs["features"][r], obs["mask"][r]], 0).astype(np.float16))
            return rule(obs, slots)

        steps = collect_rollouts(core, engine.parts("train").images, list(range(args.images)), act, 0, 8,
                                 lambda m: print(m, flush=True))
        fmaps = np.concatenate([np.stack(seen[int(i)]) for i in dict.fromkeys(steps.image.tolist())])
        if len(fmaps) != len(steps):
            raise RuntimeError(f"{len(fmaps)} feature maps for {len(steps)} steps")
        if cache is not None:
            np.savez_compressed(cache, fmaps=fmaps, **{f: getattr(steps, f) for f in
                                                       ("inputs", "rate", "perceptual", "levels", "worth", "image",
                                                        "iteration")})
    collect_seconds = time.perf_counter() - t0
    cfg = RolloutConfig()
    w = rule.weight
    n_all = len(steps)
    chosen_all = steps.levels
    rule_score = -steps.rate + w * steps.perceptual
    idx = np.arange(n_all)
    target = (steps.worth - steps.worth[idx, chosen_all][:, None]) - (rule_score - rule_score[idx, chosen_all][:, None])
    concepts = steps.inputs[:, -engine.observation_space["concept"].shape[0]:]
    present, later, others = context_columns(concepts, steps.levels, steps.image, steps.worth.shape[1])
    inputs = {"stats+classes": np.concatenate([steps.inputs, present, later], 1),
              "stats+allocation": np.concatenate([steps.inputs, present, later, others], 1)}
    f = torch.as_tensor(fmaps.astype(np.float32))
    channels = f.shape[1] - 1
    mask = f[:, -1:]
    area = mask.sum((2, 3)).clamp_min(1e-6)
    ys = torch.linspace(0, 1, f.shape[2])[None, None, :, None]
    xs = torch.linspace(0, 1, f.shape[3])[None, None, None, :]
    pooled = torch.cat([(f[:, :-1] * mask).sum((2, 3)) / area, area / (f.shape[2] * f.shape[3]),
                        (mask * ys).sum((2, 3)) / area, (mask * xs).sum((2, 3)) / area], 1)
    y = torch.as_tensor(target, dtype=torch.float32)
    stake = torch.as_tensor(steps.stake, dtype=torch.float32)[:, None]
    images = np.unique(steps.image)
    np.random.default_rng(0).shuffle(images)
    folds = np.array_split(images, 5)
    report = {"env_id": CURRENT_ID, "task": args.task, "images": args.images, "steps": n_all,
              "rule_weight": w, "collect_seconds": collect_seconds, "command": "python " + " ".join(sys.argv),
              "best_change_per_step": float(steps.regret().mean()), "kinds": {}}
    for kind in args.kinds:
        x = torch.as_tensor(inputs.get(kind, steps.inputs), dtype=torch.float32)
        taken = available = 0.0
        for k, held in enumerate(folds):
            te = torch.as_tensor(np.isin(steps.image, held))
            tr = ~te
            xm, xs_ = x[tr].mean(0), x[tr].std(0, unbiased=False) + 1e-6
            pm, ps = pooled[tr].mean(0), pooled[tr].std(0, unbiased=False) + 1e-6
            z, zp = (x - xm) / xs_, (pooled - pm) / ps
            outs = []
            for member in range(args.members):
                torch.manual_seed(1000 * k + member)
                net = Correction(x.shape[1], steps.worth.shape[1], kind, channels, cfg.hidden)
                opt = torch.optim.Adam(net.parameters(), cfg.learning_rate)
                for _ in range(args.epochs):
                    opt.zero_grad()
                    err = ((stake[tr] * net(z[tr], zp[tr], f[tr]) - y[tr]) ** 2).mean()
                    (err + cfg.weight_decay * (net.head[0].weight ** 2).sum()).backward()
                    opt.step()
                with torch.no_grad():
                    outs.append(net(z[te], zp[te], f[te]))
            held_idx = np.flatnonzero(te.numpy())
            score = torch.as_tensor(rule_score[held_idx] / steps.stake[held_idx, None], dtype=torch.float32)
            pick = (score + torch.stack(outs).mean(0)).argmax(1).numpy()
            worth = steps.worth[held_idx]
            base = worth[np.arange(len(held_idx)), chosen_all[held_idx]]
            taken += float((worth[np.arange(len(held_idx)), pick] - base).sum())
            available += float((worth.max(1) - base).sum())
        report["kinds"][kind] = {"captured": taken / available}
        print(f"{kind}: captured {taken / available:.3f} of the best single change on held-out images "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
