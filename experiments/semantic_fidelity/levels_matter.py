"""Do the levels still matter with the semantic-fidelity decoder? The preview rule against the best fixed level.

    python experiments/semantic_fidelity/levels_matter.py --codecs tiny tiny-sf --images 100 \
        --json experiments/semantic_fidelity/levels_matter.json

For each codec, an environment like ``rlasc/SemanticCoding-v5`` (the ``-v3`` task networks, the level-preview
observation, lam 1, eta 10) but on that codec: every fixed level and the preview rule (weight fitted on the first 16
training images, as the score's references do) on the first ``--images`` test images; the paired difference of the
rule and the best fixed level per image, with a BCa bootstrap interval.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from agents.baselines import FixedPolicy
from rlasc_env.engine import Engine, EnvSpec
from rlasc_env.tasks.networks import WEIGHTS_DIR
from rlasc_harness.evaluation import evaluate
from rlasc_harness.learnability import paired_difference
from rlasc_harness.runner import fitted_preview_rule


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--codecs", nargs="+", default=["tiny", "tiny-sf"])
    parser.add_argument("--task", default="segmentation")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "codecs": {}}
    for name in args.codecs:
        t0 = time.perf_counter()
        spec = EnvSpec(task=args.task, codec=name, lam=1.0, eta=10.0, preview=True,
                       task_kwargs={"weights": str(WEIGHTS_DIR / "v3" / f"{args.task}.pt")},
                       sizes={"test": args.images, "train": 16})
        engine = Engine(spec)
        rule = fitted_preview_rule(engine, 16, lambda *a, **k: None)
        policies = {f"fixed_{q}": FixedPolicy(q, engine.num_levels) for q in range(engine.num_levels)}
        policies["preview_rule"] = rule
        ev = evaluate(engine, policies, args.images, split="test", greedy=False, keep_returns=True)
        means = {k: float(np.mean(v["returns"])) for k, v in ev.items() if "returns" in v}
        best = max((k for k in means if k.startswith("fixed_")), key=means.get)
        diff = paired_difference(ev["preview_rule"]["returns"], ev[best]["returns"])
        out["codecs"][name] = {"means": means, "best_fixed": best, "rule_minus_best_fixed": diff,
                               "seconds": time.perf_counter() - t0}
        print(name, out["codecs"][name], flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
