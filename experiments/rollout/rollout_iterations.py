"""Does rollout policy iteration's second iteration help? Each seed's policy after iteration 1 and after iteration 2,
against the preview rule, image by image on the same test images.

    python experiments/rollout/rollout_iterations.py --runs runs/agent/rollout-segmentation --task segmentation \
        --out docs/agents_v4/rollout_iterations_segmentation.json

Reads every ``<task>-<seed>/`` folder of a ``train_agent.py --algo rollout --seeds ...`` run: its ``policy_iter1.pt``
is played here on the run's test images; iteration 2's policy (``policy.pt``) and the rule are taken from the run's
``results.json`` (the same images, the same deterministic evaluation). Prints and writes, per iteration, the mean
return over seeds and the paired difference to the rule with a stratified bootstrap interval
(``rlasc_harness.benchmark_table.paired_difference``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from rlasc_harness.benchmark_table import improvement_probability, paired_difference
from agents.checkpoint import load_policy
from rlasc_harness.config import TrainAgentConfig
from rlasc_harness.evaluation import evaluate
from rlasc_harness.runner import make_engine


@dataclass
class IterationsConfig:
    runs: Path
    """The --run-dir of a multi-seed rollout run (one <task>-<seed> folder per seed)."""
    task: str = "segmentation"
    threads: int = 1
    out: Path | None = None


def main(cfg: IterationsConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    folders = sorted(cfg.runs.glob(f"{cfg.task}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    if not folders:
        raise SystemExit(f"no {cfg.task}-<seed> folders in {cfg.runs}")
    results = [json.loads((f / "results.json").read_text()) for f in folders]
    images = results[0]["eval_images"]
    engine = make_engine(TrainAgentConfig(env_id="rlasc/SemanticCoding-v4", eval_images=images), cfg.task, "cpu")
    policies = {}
    for folder in folders:
        net, _ = load_policy(folder / "policy_iter1.pt")
        policies[folder.name] = lambda obs, slots, net=net: net.act(obs)
    t0 = time.perf_counter()
    ev = evaluate(engine, policies, images, greedy=False, keep_returns=True)
    rule = np.array(results[0]["eval"]["preview_rule"]["returns"])
    per_iteration = {1: np.array([ev[f.name]["returns"] for f in folders]),
                     2: np.array([r["eval"]["policy"]["returns"] for r in results])}
    report = {"task": cfg.task, "runs": str(cfg.runs), "seeds": [f.name for f in folders], "eval_images": images,
              "preview_rule": float(rule.mean()), "seconds": time.perf_counter() - t0, "iterations": {}}
    for k, returns in per_iteration.items():
        mean, low, high = paired_difference(returns, rule)
        p, p_low, p_high = improvement_probability(returns, rule)
        report["iterations"][k] = {"return_per_seed": returns.mean(1).tolist(), "return": float(returns.mean()),
                                   "minus_rule": mean, "minus_rule_ci95": [low, high],
                                   "p_beats_rule": p, "p_beats_rule_ci95": [p_low, p_high]}
        print(f"iteration {k}: return {returns.mean():.4f} (per seed {np.round(returns.mean(1), 4).tolist()}), "
              f"minus rule {mean:+.4f} [{low:+.4f}, {high:+.4f}], P(beats rule) {p:.3f}", flush=True)
    if cfg.out is not None:
        cfg.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main(tyro.cli(IterationsConfig))
