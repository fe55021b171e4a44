"""Score any policy on the benchmark: one function, one protocol (:data:`rlasc_env.score.PROTOCOL`).

    from rlasc_harness.scoring import evaluate_policy
    report = evaluate_policy(lambda obs: 3, task="segmentation")          # a callable: observation -> level
    report = evaluate_policy("runs/agent/reinforce-segmentation-0/policy.pt", task="segmentation")
    report = evaluate_policy(sb3_model, task="detection")                   # anything with SB3's predict()
    print(report.table())

    python -m rlasc_harness.scoring --policy runs/agent/reinforce-segmentation-0/policy.pt --task segmentation

The policy plays one episode on each protocol image (the first 200 test images, lam = 1, eta = 10, deterministic
actions). The report holds the benchmark score with its 95% paired bootstrap interval and, for every stored baseline
(the best fixed level, greedy, the preview rule, random), the paired difference of returns on the same images
with its interval and P(policy > baseline).
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlasc_env.engine import ActFn, Engine, make_engine, run_episodes
from rlasc_env.registration import CURRENT_ID
from rlasc_env.score import PROTOCOL, load_references, score_interval

from .benchmark_table import improvement_probability, paired_difference

__all__ = ["PolicyReport", "evaluate_policy", "as_act_fn", "compare_with_references", "main"]

PolicyLike = Any  # Callable[[dict], int] | an SB3 model | str | Path (a saved policy.pt or SB3 model.zip)


@dataclass
class PolicyReport:
    """The benchmark result of one policy on one task."""

    env_id: str
    task: str
    observation: str
    num_images: int
    score: float
    score_low: float
    score_high: float
    return_mean: float
    returns: list[float]
    metric_name: str
    metric_mean: float
    bpp_mean: float
    against: dict[str, dict[str, float]] = field(default_factory=dict)  # baseline -> paired statistics
    seconds: float = 0.0
    policy: str = ""

    def table(self) -> str:
        lines = [f"{self.policy or 'policy'} on {self.env_id} ({self.task}, observation {self.observation}, "
                 f"{self.num_images} test images)",
                 f"benchmark score {self.score:.3f} [{self.score_low:.3f}, {self.score_high:.3f}] "
                 f"(0 = best fixed level, 1 = greedy look-ahead); mean return {self.return_mean:.4f}, "
                 f"{self.metric_name} {self.metric_mean:.4f}, {self.bpp_mean:.3f} bpp", "",
                 "| baseline | its mean return | policy - baseline [95% CI] | P(policy > baseline) |",
                 "|---|---|---|---|"]
        for name, row in self.against.items():
            lines.append(f"| {name} | {row['baseline_mean']:.4f} | {row['difference']:+.4f} [{row['low']:+.4f}, "
                         f"{row['high']:+.4f}] | {row['p_improvement']:.3f} |")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def as_act_fn(policy: PolicyLike, deterministic: bool = True, device: str = "cpu", algo: str | None = None
              ) -> tuple[ActFn, str]:
    """(batched act function, description) from a callable on one observation, an SB3 model, or a saved policy file
    (``policy.pt`` of REINFORCE / rollout policy iteration; ``model.zip`` of SB3 with ``algo``)."""
    if isinstance(policy, (str, Path)):
        path = Path(policy)
        if not path.is_file():
            raise FileNotFoundError(f"no saved policy {path}")
        if path.suffix == ".zip":
            if algo is None:
                raise ValueError(f"{path} is an SB3 model: say which algorithm saved it (algo='ppo', 'a2c', 'dqn' or "
                                 "'maskable_ppo')")
            from agents.sb3 import load_sb3, sb3_act

            return sb3_act(load_sb3(algo, path, device), deterministic), str(path)
        from agents.checkpoint import load_policy

        loaded, _ = load_policy(path, device)
        return (lambda obs, slots: loaded.act(obs, deterministic=deterministic)), str(path)
    if hasattr(policy, "predict") and hasattr(policy, "observation_space"):
        from agents.sb3 import sb3_act

        return sb3_act(policy, deterministic), type(policy).__name__
    if callable(policy):
        def act(obs: Mapping[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
            return np.array([int(policy({k: v[i] for k, v in obs.items()})) for i in range(len(slots))], np.int64)

        return act, getattr(policy, "__name__", type(policy).__name__)
    raise TypeError(f"a policy is a callable (observation -> level), an SB3 model or a saved policy file, not "
                    f"{type(policy).__name__}")


def compare_with_references(returns: Sequence[float], task: str, env_id: str = CURRENT_ID) -> dict[str, Any]:
    """Score, interval and the paired comparison with every stored baseline, from per-image returns on the first
    ``len(returns)`` protocol images."""
    values = np.asarray(returns, np.float64)
    n = len(values)
    refs = load_references(task, env_id)
    score, low, high = score_interval(values, task, env_id)
    names = [refs.best_fixed, "greedy", *[k for k in ("preview_rule", "random") if k in refs.returns]]
    against = {}
    for name in names:
        base = refs.returns[name][:n]
        diff, d_low, d_high = paired_difference(values[None, :], base)
        p, _, _ = improvement_probability(values[None, :], base)
        label = f"best fixed ({name})" if name == refs.best_fixed else name
        against[label] = {"baseline_mean": float(base.mean()), "difference": diff, "low": d_low, "high": d_high,
                          "p_improvement": p}
    return {"score": score, "score_low": low, "score_high": high, "against": against}


def evaluate_policy(policy: PolicyLike, task: str = "segmentation", env_id: str = CURRENT_ID,
                    observation: str | None = None, num_images: int = PROTOCOL.num_images, device: str = "cpu",
                    algo: str | None = None, engine: Engine | None = None, batch_size: int = 48) -> PolicyReport:
    """Play ``policy`` on the protocol's images of ``env_id`` (the first ``num_images`` test images; 200 is the
    benchmark figure) and score it against the stored references."""
    if not 1 <= num_images <= PROTOCOL.num_images:
        raise ValueError(f"num_images must be in [1, {PROTOCOL.num_images}] (the protocol's images), got {num_images}")
    load_references(task, env_id)  # a clear error before any episode when the id carries no score
    if engine is None:
        engine = make_engine(env_id, task=task, observation=observation, lam=PROTOCOL.lam, eta=PROTOCOL.eta,
                             device=device, sizes={PROTOCOL.split: num_images})
    elif engine.spec.env_id != env_id or engine.spec.lam != PROTOCOL.lam or engine.spec.eta != PROTOCOL.eta:
        raise ValueError(f"the engine is not {env_id} at the protocol's operating point (lam {PROTOCOL.lam}, eta "
                         f"{PROTOCOL.eta})")
    act, described = as_act_fn(policy, PROTOCOL.deterministic, device, algo)
    t0 = time.perf_counter()
    core = engine.core(PROTOCOL.split, min(batch_size, num_images))
    records = run_episodes(core, engine.parts(PROTOCOL.split).images, range(num_images), act, engine.metric_name)
    returns = [r.episode_return for r in records]
    stats = compare_with_references(returns, task, env_id)
    return PolicyReport(env_id=env_id, task=task, observation="preview" if engine.spec.preview else "paper",
                        num_images=num_images, return_mean=float(np.mean(returns)), returns=returns,
                        metric_name=engine.metric_name, metric_mean=float(np.mean([r.metric for r in records])),
                        bpp_mean=float(np.mean([r.bpp for r in records])), seconds=time.perf_counter() - t0,
                        policy=described, **stats)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rlasc_harness.scoring --policy FILE --task TASK [--algo ppo] [--images 200] [--json out.json]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True, help="policy.pt (REINFORCE, rollout) or model.zip (SB3, with --algo)")
    parser.add_argument("--task", default="segmentation", choices=("segmentation", "detection", "classification"))
    parser.add_argument("--env-id", default=CURRENT_ID)
    parser.add_argument("--observation", default=None, choices=("preview", "paper"))
    parser.add_argument("--algo", default=None, help="the SB3 algorithm of a model.zip")
    parser.add_argument("--images", type=int, default=PROTOCOL.num_images)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = evaluate_policy(args.policy, args.task, args.env_id, args.observation, args.images, args.device, args.algo)
    print(report.table())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
