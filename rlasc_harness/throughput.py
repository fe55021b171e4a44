"""Environment throughput: single env, ``SyncVectorEnv``, the batched env and forward-only.

Every figure counts environment transitions (one ``step`` of one sub-env) per second over
whole episodes: the time of the resets that occur (one encoder pass, G_l, x_hat(0) and
x_hat(all highest) per image) is included. Vector envs use same-step autoreset, so every
call advances every sub-env by one transition. "Forward-only" times the networks that a step
must run for the same batch, alone: G_g + attention (``codec.fuse``), the task network H
(``task.loss``) and phi (``perceptual_loss``) -- the limit for a step. Each figure is the
median over ``repeats`` interleaved runs of ``steps`` transitions, with random actions. On a
CPU shared with other work, wall-clock figures move with the load; the JSON also holds the
same figures per second of process CPU time (``cpu_time_*``) and the load average. Torch
runs one CPU thread per process by default (``--threads``).

The env memoizes transitions (:mod:`rlasc_env.memo`). Every figure above is *cold*: the memo is
emptied before each run, so random images and actions pay for every transition. Two more
single-env figures, interleaved with those: ``--compare-codec`` (default ``tiny-v0``, the codec
of ``rlasc/SemanticCoding-v0``) in the same cold conditions, and ``replay``: the cold run played
again (same images, same actions), every transition served by the memo -- what a policy that
revisits its states (rollouts of one image, the fixed levels and greedy on the same test images)
pays at best.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro

from codec_models.device import resolve_device
from codec_models.fast_paths import reference_ops, windowed_preview
from codec_models.perceptual import perceptual_loss
from rlasc_env.env import SemanticCodingEnv, build_parts
from rlasc_env.vector import BatchedSemanticCodingEnv

__all__ = ["BenchmarkConfig", "run_benchmark", "main"]


@dataclass
class BenchmarkConfig:
    """Flags of ``benchmark.py``."""

    env_id: str | None = "rlasc/SemanticCoding-v7"  # registered id whose codec, task network, data and default
    # observation every env is built from (the current id); None: --preset / --codec / --task-weights instead
    compare_env_id: str | None = "rlasc/SemanticCoding-v4"  # single env on this id too, side by side, cold (with
    # --env-id; replaces --compare-codec): -v4 was train_agent.py's default id before -v5 ("" or None to skip)
    preset: str = "tiny"  # data preset (image size); also the shipped codec's name unless --codec
    batch_size: int = 16  # envs stepped together (SyncVectorEnv, batched env, forward-only batch)
    steps: int = 512  # env transitions per measurement
    repeats: int = 3  # measurements per figure; the median is reported
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda"
    json: Path | None = None  # write the results (docs/design.md's benchmark JSON) here
    task: str = "segmentation"  # downstream task (registered name)
    codec: str | None = None  # shipped codec name or checkpoint path (default: --preset)
    task_weights: str | None = None  # task network checkpoint (default: the shipped one)
    split: str = "train"
    threads: int = 1  # torch.set_num_threads; 1 = one per env process (0: torch's default)
    seed: int = 0
    progress: bool = True  # print each repeat's figures to stderr
    compare_codec: str = "tiny-v0"  # single env on this codec too, side by side ("" to skip): -v0's codec
    allocations: int = 32  # complete level allocations per measurement, scored by EpisodeCore.finish and by
    # stepping them (cold memo each), side by side on the same image (0: skip)
    windowed_preview: bool = False  # the fast runs with the windowed level preview (codec_models.fast_paths: the
    # preview within float rounding instead of the same floats)
    reference_ops: bool = True  # also time the single env, the batched env and --compare-env-id on the reference
    # ops (codec_models.fast_paths off), interleaved with the fast runs: the issue-30 ratios in one run
    agent_episodes: int = 0  # also time `train_agent.py --algo reinforce` (this many episodes, its evaluation
    # included) on the codec and on --compare-codec, one after the other (0: skip; 1200 is the default run)


class _Clock:
    """Wall-clock and process CPU time since creation (CPU time is steadier on a shared machine)."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def _median_rate(runs: list[dict[str, float]], clock: str = "wall") -> float:
    return float(np.median([r["transitions"] / r[clock] for r in runs]))


def _forget(*envs: Any) -> None:
    """Empty the transition and preview memos of every env (cold measurements)."""
    for env in envs:
        for sub in getattr(env, "envs", [env]):
            sub.unwrapped.parts.memo.clear()
            sub.unwrapped.parts.preview_memo.clear()


def _single_env_run(env: SemanticCodingEnv, steps: int, rng: np.random.Generator, seed: int) -> dict[str, float]:
    """``steps`` transitions of one env, resetting at episode ends (resets timed in)."""
    q = env.action_space.n
    clock = _Clock()
    env.reset(seed=seed)
    step_time, resets, done_steps = 0.0, 1, 0
    while done_steps < steps:
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(int(rng.integers(q)))
        step_time += time.perf_counter() - t0
        done_steps += 1
        if (terminated or truncated) and done_steps < steps:
            env.reset()
            resets += 1
    wall, cpu = clock.read()
    return {"transitions": done_steps, "wall": wall, "cpu": cpu, "step_wall": step_time, "resets": resets}


def _vector_run(venv: gym.vector.VectorEnv, steps: int, rng: np.random.Generator, seed: int) -> dict[str, float]:
    """Same-step-autoreset vector env: ceil(steps / n) calls (the initial reset timed in)."""
    n, q = venv.num_envs, int(venv.single_action_space.n)
    calls = -(-steps // n)
    clock = _Clock()
    venv.reset(seed=seed)
    ended = 0
    for _ in range(calls):
        _, _, terminated, _, _ = venv.step(rng.integers(q, size=n))
        ended += int(terminated.sum())
    wall, cpu = clock.read()
    return {"transitions": calls * n, "wall": wall, "cpu": cpu, "episodes": ended}


@torch.inference_mode()
def _forward_only_run(benv: BatchedSemanticCodingEnv, steps: int, cached_spade: bool) -> dict[str, float]:
    """The per-step networks alone on the batched env's current batch: G_g + attention
    (``codec.fuse``, or with the env's cached SPADE modulations), H (``task.loss``) and phi."""
    core, codec, task = benv.core, benv.codec, benv.task
    st = core.store
    merged = codec.merged_features(st, codec.select_levels(st, core.levels) * st.mask.unsqueeze(2), core.levels)
    refs = list(core.refs)
    n = benv.num_envs
    calls = -(-steps // n)
    clock = _Clock()
    for _ in range(calls):
        if cached_spade:
            x_hat = core._fuse(merged, core.y_levels[:, 0], core.mods)
        else:
            x_hat = codec.fuse(merged, st.onehot, core.y_levels[:, 0])
        task.loss(x_hat, refs)
        perceptual_loss(codec.perceptual, None, x_hat, core.phi_feats).cpu()
    wall, cpu = clock.read()
    return {"transitions": calls * n, "wall": wall, "cpu": cpu}


def _allocation_run(parts: Any, count: int, rng: np.random.Generator, index: int) -> dict[str, float]:
    """Seconds to score ``count`` random complete allocations of one image: EpisodeCore.finish (one decoder pass
    each) and stepping them concept by concept, each from a fresh reset and a cold memo; and the largest return
    difference between the two."""
    from rlasc_env.env import EpisodeCore, load_items

    core = EpisodeCore(parts, count, 1.0, 10.0)
    batch, labels = load_items(parts.images, [index] * count)
    slots = np.arange(count)

    def fresh() -> None:
        parts.memo.clear()
        core.reset(slots, batch, labels, np.full(count, index))

    fresh()
    order = core.order[0, :core.count[0]]
    sequences = rng.integers(0, core.Q, (count, len(order)))
    levels = np.zeros((count, core.M), np.int64)
    levels[:, order] = sequences
    t0 = time.perf_counter()
    finished = core.finish(slots, levels)[0]
    finish_seconds = time.perf_counter() - t0
    fresh()
    stepped = np.zeros(count)
    t0 = time.perf_counter()
    for t in range(len(order)):
        stepped += core.step(slots, sequences[:, t])[0]
    step_seconds = time.perf_counter() - t0
    parts.memo.clear()
    return {"finish": finish_seconds, "step": step_seconds, "concepts": float(len(order)),
            "max_return_difference": float(np.abs(finished - stepped).max())}


def _id_parts(env_id: str, task: str, split: str, device: torch.device) -> tuple[Any, str]:
    """The env parts (codec, task network, images) of a registered id, its pins checked, and its default
    observation: what ``gym.make(env_id, task=task)`` runs."""
    from rlasc_env.registration import resolve_env
    from rlasc_env.versions import apply_pins

    config = resolve_env(env_id, task=task, split=split)
    kw = config.env_kwargs()
    task_kwargs = apply_pins(kw["pins"], kw["codec"], task, kw["dataset"], None)
    parts = build_parts(task=task, split=split, codec=kw["codec"], dataset=kw["dataset"], preset=kw["preset"],
                        device=device, task_kwargs=task_kwargs, preview=config.observation == "preview")
    return parts, config.observation


def run_benchmark(cfg: BenchmarkConfig) -> dict[str, Any]:
    """Measure the four throughputs of docs/design.md (plus extras) and return the JSON object."""
    with windowed_preview(cfg.windowed_preview):
        return _run_benchmark(cfg)


def _run_benchmark(cfg: BenchmarkConfig) -> dict[str, Any]:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.env_id:
        parts, observation = _id_parts(cfg.env_id, cfg.task, cfg.split, device)
        other_parts = _id_parts(cfg.compare_env_id, cfg.task, cfg.split, device) if cfg.compare_env_id else None
    else:
        task_kwargs = {"weights": cfg.task_weights} if cfg.task_weights else None
        parts = build_parts(task=cfg.task, split=cfg.split, codec=cfg.codec or cfg.preset, preset=cfg.preset,
                            device=device, task_kwargs=task_kwargs)
        observation, other_parts = "paper", None
    common = dict(task=parts.task, codec=parts.codec, images=parts.images, device=device, observation=observation)
    b, rng = cfg.batch_size, np.random.default_rng(cfg.seed)

    single = SemanticCodingEnv(**common)
    if other_parts is not None:
        op, obs = other_parts
        other = SemanticCodingEnv(task=op.task, codec=op.codec, images=op.images, device=device, observation=obs)
    else:
        other = SemanticCodingEnv(**{**common, "codec": cfg.compare_codec}) if cfg.compare_codec else None
    sync = gym.vector.SyncVectorEnv([lambda: SemanticCodingEnv(**common) for _ in range(b)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    batched = BatchedSemanticCodingEnv(b, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **common)

    warm = min(cfg.steps, 2 * b)  # untimed: first-call allocations, lazy code-table builds
    _single_env_run(single, warm, rng, cfg.seed)
    if other is not None:
        _single_env_run(other, warm, rng, cfg.seed)
    _vector_run(sync, warm, rng, cfg.seed)
    _vector_run(batched, warm, rng, cfg.seed)
    _forward_only_run(batched, warm, False)

    runs: dict[str, list[dict[str, float]]] = {"single": [], "sync": [], "batched": [], "forward": [], "cached": []}
    if other is not None:
        runs["compare"] = []
    runs["replay"] = []
    if cfg.reference_ops:
        runs["single_reference"], runs["batched_reference"] = [], []
        if other is not None:
            runs["compare_reference"] = []
    load_before = os.getloadavg()[0]
    for r in range(cfg.repeats):  # interleaved, so that load changes hit every figure alike
        seed = cfg.seed + 1000 * (r + 1)
        _forget(single, sync, batched, *([other] if other is not None else []))
        runs["single"].append(_single_env_run(single, cfg.steps, np.random.default_rng(seed), seed))
        runs["replay"].append(_single_env_run(single, cfg.steps, np.random.default_rng(seed), seed))
        if other is not None:
            runs["compare"].append(_single_env_run(other, cfg.steps, np.random.default_rng(seed), seed))
        runs["sync"].append(_vector_run(sync, cfg.steps, rng, seed))
        runs["batched"].append(_vector_run(batched, cfg.steps, rng, seed))
        runs["forward"].append(_forward_only_run(batched, cfg.steps, False))
        runs["cached"].append(_forward_only_run(batched, cfg.steps, True))
        if cfg.reference_ops:  # the same seeds and images on the reference ops, cold
            with reference_ops():
                _forget(single, batched, *([other] if other is not None else []))
                runs["single_reference"].append(_single_env_run(single, cfg.steps, np.random.default_rng(seed), seed))
                if other is not None:
                    runs["compare_reference"].append(
                        _single_env_run(other, cfg.steps, np.random.default_rng(seed), seed))
                runs["batched_reference"].append(
                    _vector_run(batched, cfg.steps, np.random.default_rng(seed + 1), seed))
        if cfg.progress:
            rates = {k: v[-1]["transitions"] / v[-1]["wall"] for k, v in runs.items()}
            print(f"repeat {r + 1}/{cfg.repeats}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
                  + " steps/s", file=sys.stderr, flush=True)
    allocation_runs = [_allocation_run(parts, cfg.allocations, np.random.default_rng(cfg.seed + r), r)
                       for r in range(cfg.repeats)] if cfg.allocations > 0 else []
    load_after = os.getloadavg()[0]

    wall = {k: _median_rate(v) for k, v in runs.items()}
    cpu = {k: _median_rate(v, "cpu") for k, v in runs.items()}
    singles = runs["single"]
    episodes = sum(r["episodes"] for r in runs["batched"])
    transitions = sum(r["transitions"] for r in runs["batched"])
    codec = parts.codec
    return {
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "env_id": cfg.env_id or None,
        "observation": observation,
        "compare_env_id": (cfg.compare_env_id or None) if cfg.env_id else None,
        "preset": cfg.preset,
        "batch_size": b,
        "single_env_steps_per_s": wall["single"],
        "sync_vector_steps_per_s": wall["sync"],
        "batched_env_steps_per_s": wall["batched"],
        "forward_only_steps_per_s": wall["forward"],
        "forward_only_cached_spade_steps_per_s": wall["cached"],
        "single_env_step_ms": float(np.median([1000 * s["step_wall"] / s["transitions"] for s in singles])),
        "single_env_reset_ms": float(np.median([1000 * (s["wall"] - s["step_wall"]) / s["resets"] for s in singles])),
        "single_env_ms_per_transition": 1000.0 / wall["single"],
        "single_env_replay_ms_per_transition": 1000.0 / wall["replay"],
        "compare_codec": (cfg.compare_env_id if cfg.env_id else cfg.compare_codec) or None,
        "compare_single_env_ms_per_transition": 1000.0 / wall["compare"] if other is not None else None,
        # time per transition of this codec's env over the compared codec's (below 1: faster)
        "single_env_time_vs_compare": wall["compare"] / wall["single"] if other is not None else None,
        "single_env_replay_time_vs_compare": wall["compare"] / wall["replay"] if other is not None else None,
        "batched_vs_sync": wall["batched"] / wall["sync"],
        # issue 30: the fast paths against the reference ops (codec_models.fast_paths), same run, cold
        "reference_ops": bool(cfg.reference_ops),
        "windowed_preview": bool(cfg.windowed_preview),
        "single_env_vs_reference_ops": wall["single"] / wall["single_reference"] if cfg.reference_ops else None,
        "batched_vs_reference_ops": wall["batched"] / wall["batched_reference"] if cfg.reference_ops else None,
        "single_env_vs_compare_reference_ops": (wall["single"] / wall["compare_reference"]
                                                if cfg.reference_ops and other is not None else None),
        "batched_vs_forward_only": wall["batched"] / wall["forward"],
        "sync_vs_single": wall["sync"] / wall["single"],
        "cpu_time_steps_per_s": cpu,  # transitions per second of process CPU time, same keys as the runs
        "cpu_time_batched_vs_sync": cpu["batched"] / cpu["sync"],
        "cpu_time_batched_vs_forward_only": cpu["batched"] / cpu["forward"],
        "load_average": [load_before, load_after],
        # scoring a complete allocation (rollouts, oracles): EpisodeCore.finish against stepping it, same images
        "allocation_finish_ms": (float(np.median([1000 * a["finish"] / cfg.allocations for a in allocation_runs]))
                                 if allocation_runs else None),
        "allocation_step_ms": (float(np.median([1000 * a["step"] / cfg.allocations for a in allocation_runs]))
                               if allocation_runs else None),
        "allocation_step_vs_finish": (float(np.median([a["step"] / a["finish"] for a in allocation_runs]))
                                      if allocation_runs else None),
        "allocation_max_return_difference": (max(a["max_return_difference"] for a in allocation_runs)
                                             if allocation_runs else None),
        "mean_episode_length": transitions / episodes if episodes else None,
        "steps": cfg.steps,
        "repeats": cfg.repeats,
        "autoreset_mode": "SameStep",
        "torch_threads": torch.get_num_threads(),
        "codec": getattr(codec, "source", type(codec).__name__),
        "codec_config": codec.config.name,
        "perceptual_network": codec.perceptual.name,
        "task": parts.task.describe(),
        "image_size": [parts.height, parts.width],
        "platform": platform.platform(),
        "torch": torch.__version__,
    }


def _agent_runs(cfg: BenchmarkConfig) -> dict[str, Any]:
    """Wall time of the default REINFORCE run (training and evaluation) on each codec, one after the other."""
    import contextlib
    import io
    import tempfile

    from rlasc_harness.config import TrainAgentConfig
    from rlasc_harness.runner import run as run_agent

    out: dict[str, Any] = {}
    for name in dict.fromkeys([cfg.codec or cfg.preset, *([cfg.compare_codec] if cfg.compare_codec else [])]):
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            ids = {"tiny": "rlasc/SemanticCoding-v1", "tiny-v0": "rlasc/SemanticCoding-v0"}  # the paper observation
            if name not in ids:
                raise ValueError(f"--agent-episodes times train_agent.py on a registered id: codec {name!r} has none "
                                 f"(known: {sorted(ids)})")
            acfg = TrainAgentConfig(algo="reinforce", env_id=ids[name], eval_images=48,
                                    episodes=cfg.agent_episodes, preset=cfg.preset,
                                    threads=cfg.threads if cfg.threads > 0 else None, run_dir=Path(tmp),
                                    progress=False, device=cfg.device)
            t0 = time.perf_counter()
            res = run_agent(acfg, log=lambda *args, **kwargs: None)
            wall = time.perf_counter() - t0
        out[name] = {"seconds": wall, "train_seconds": res["train_seconds"], "eval_seconds": res["eval_seconds"],
                     "train_steps": res["train_steps"], "episodes": cfg.agent_episodes}
        if cfg.progress:
            print(f"reinforce on {name}: {wall:.0f} s ({res['train_steps']} training steps)", file=sys.stderr, flush=True)
    return out


def _summary(res: dict[str, Any]) -> str:
    lines = [f"device {res['device']}, preset {res['preset']}, batch {res['batch_size']}, "
             f"{res['torch_threads']} torch threads, mean episode {res['mean_episode_length'] or float('nan'):.1f} steps"]
    for key in ("single_env_steps_per_s", "sync_vector_steps_per_s", "batched_env_steps_per_s",
                "forward_only_steps_per_s", "forward_only_cached_spade_steps_per_s"):
        lines.append(f"  {key:40s} {res[key]:10.1f}")
    if res.get("reference_ops"):
        line = (f"  fast paths / reference ops (codec_models.fast_paths), same run: single env "
                f"{res['single_env_vs_reference_ops']:.2f}x, batched env {res['batched_vs_reference_ops']:.2f}x")
        if res.get("single_env_vs_compare_reference_ops") is not None:
            line += f"; single env / {res['compare_codec']} on the reference ops {res['single_env_vs_compare_reference_ops']:.2f}x"
        lines.append(line)
    lines.append(f"  single env: {res['single_env_step_ms']:.2f} ms/step, {res['single_env_reset_ms']:.2f} ms/reset; "
                 f"{res['single_env_ms_per_transition']:.2f} ms per transition cold, "
                 f"{res['single_env_replay_ms_per_transition']:.2f} ms replayed (memo)")
    if res.get("compare_codec"):
        lines.append(f"  codec {res['compare_codec']}: {res['compare_single_env_ms_per_transition']:.2f} ms per transition "
                     f"cold; this env's time per transition over that one's: cold {res['single_env_time_vs_compare']:.2f}x, "
                     f"replayed {res['single_env_replay_time_vs_compare']:.2f}x")
    lines.append(f"  batched / sync {res['batched_vs_sync']:.2f}x, batched / forward-only "
                 f"{100 * res['batched_vs_forward_only']:.0f}% (CPU time: {res['cpu_time_batched_vs_sync']:.2f}x, "
                 f"{100 * res['cpu_time_batched_vs_forward_only']:.0f}%); load average {res['load_average']}")
    if res.get("allocation_finish_ms") is not None:
        lines.append(f"  a complete allocation: finish {res['allocation_finish_ms']:.1f} ms, stepped "
                     f"{res['allocation_step_ms']:.1f} ms ({res['allocation_step_vs_finish']:.2f}x; returns differ by "
                     f"at most {res['allocation_max_return_difference']:.1e})")
    runs = res.get("agent_runs") or {}
    if len(runs) == 2:
        (a, ra), (b, rb) = runs.items()
        lines.append(f"  train_agent.py --algo reinforce, {ra['episodes']} episodes: {a} {ra['seconds']:.0f} s "
                     f"({ra['train_steps']} steps), {b} {rb['seconds']:.0f} s ({rb['train_steps']} steps); "
                     f"{b} / {a} {rb['seconds'] / ra['seconds']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(BenchmarkConfig, args=argv, description=__doc__)
    res = run_benchmark(cfg)
    if cfg.agent_episodes > 0:
        res["agent_runs"] = _agent_runs(cfg)
    print(_summary(res))
    if cfg.json is not None:
        cfg.json.parent.mkdir(parents=True, exist_ok=True)
        cfg.json.write_text(json.dumps({**res, "config": {k: str(v) if isinstance(v, Path) else v
                                                           for k, v in asdict(cfg).items()}}, indent=2) + "\n")
    return 0
