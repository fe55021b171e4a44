"""What ``train_agent.py`` does: train (or load) an agent, evaluate it and the baselines on the
same held-out images, write the run folder, the JSON (docs/design.md) and the results table."""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from agents.baselines import PREVIEW_RULE_WEIGHTS, PreviewRule, fit_preview_rule
from agents.class_table import load_class_table
from agents.hyperparams import apply_overrides, load_hyperparams
from codec_models.device import resolve_device
from rlasc_env.engine import ActFn, Engine

from .config import EnvFlags, TrainAgentConfig
from .evaluation import aggregate, baseline_policies, evaluate, gap_closure, mean_ci, results_table

__all__ = ["run", "run_one", "design_json", "DESIGN_EVAL_KEYS"]

DESIGN_EVAL_KEYS = ("return_mean", "return_std", "bpp_mean", "semantic_loss_mean", "perceptual_loss_mean")
Log = Callable[[str], None]


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")
    tmp.replace(path)


def default_run_dir(cfg: TrainAgentConfig, task: str, seed: int, several: bool) -> Path:
    if cfg.run_dir is None and cfg.eval_only is not None:
        return Path(cfg.eval_only).parent / "eval"
    if cfg.run_dir is None:
        return Path("runs") / "agent" / f"{cfg.algo}-{task}-{seed}"
    return cfg.run_dir / f"{task}-{seed}" if several else cfg.run_dir


def resolved_observation(cfg: EnvFlags) -> str:
    """The observation of ``cfg``'s id and options (the id's default when --observation is not given)."""
    from rlasc_env.registration import resolve_env

    options = {} if cfg.observation is None else {"observation": cfg.observation}
    return resolve_env(cfg.env_id, **options).observation


def hyperparameters(cfg: TrainAgentConfig) -> dict[str, Any]:
    observation = resolved_observation(cfg)
    if cfg.algo == "rollout" and observation != "preview":
        raise ValueError(f"--algo rollout improves the preview rule: it needs the level preview in the observation "
                         f"(--env-id rlasc/SemanticCoding-v7 --observation preview), not {cfg.env_id} with "
                         f"observation {observation!r}")
    return apply_overrides(load_hyperparams(cfg.algo, cfg.preset, cfg.env_id, observation=observation), cfg.hp)


def make_engine(cfg: EnvFlags, task: str, device: str) -> Engine:
    """The engine of ``cfg.env_id`` and its options, through :func:`rlasc_env.engine.make_engine` (the id's pins
    checked): the first ``train_images`` train images and the first ``eval_images`` test images."""
    from rlasc_env.engine import make_engine as engine_of

    sizes = {"test": cfg.eval_images}
    if cfg.train_images is not None:
        sizes["train"] = cfg.train_images
    return engine_of(cfg.env_id, task=task, observation=cfg.observation, lam=cfg.lam, eta=cfg.eta, device=device,
                     sizes=sizes, bpp_budget=cfg.bpp_budget)


def protocol_references(cfg: EnvFlags, engine: Engine, log: Log = print) -> Any:
    """The id's stored score references (rlasc_env.score) when this run evaluates on the protocol (a registered id
    with references, the protocol's lam and eta, at most its images); else None, and a labelled line says why the
    baselines are played instead."""
    from rlasc_env.score import PROTOCOL, load_references

    if engine.spec.env_id is None:
        return None  # a custom environment: no id, no score
    if engine.spec.bpp_budget is not None:
        log(f"baselines played, no benchmark score: the rate-budget mode (bpp_budget {engine.spec.bpp_budget}) has no "
            "score references; its rows are mean returns (LEADERBOARD.md)")
        return None
    if (cfg.lam, cfg.eta) != (PROTOCOL.lam, PROTOCOL.eta):
        log(f"baselines played, no benchmark score: lam {cfg.lam}, eta {cfg.eta} are not the protocol's")
        return None
    try:
        refs = load_references(str(engine.task.name), engine.spec.env_id)
    except (FileNotFoundError, KeyError) as exc:
        log(f"baselines played, no benchmark score: {exc}")
        return None
    if cfg.eval_images > refs.num_images:
        log(f"baselines played, no benchmark score: --eval-images {cfg.eval_images} > the {refs.num_images} "
            "protocol images")
        return None
    return refs


def reference_rows(refs: Any, num_images: int, names: Any) -> dict[str, dict[str, Any]]:
    """Evaluation rows of the stored baselines ``names`` on the first ``num_images`` protocol images (returns only:
    the other columns are not stored)."""
    rows = {}
    for name in names:
        v = refs.returns[name][:num_images]
        rows[name] = {"return_mean": float(v.mean()), "return_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                      "bpp_mean": None, "semantic_loss_mean": None, "perceptual_loss_mean": None,
                      "returns": [float(x) for x in v], "episodes": len(v), "source": f"references ({refs.env_id})"}
    return rows


EngineFactory = Callable[[TrainAgentConfig, str, str], Engine]


def describe_engine(engine: Engine) -> dict[str, Any]:
    """Which codec, task network and data every report names (docs/design.md)."""
    spec_codec = engine.spec.codec
    if isinstance(spec_codec, str):
        from codec_models.checkpoint import resolve_codec_path

        codec_name, codec_path = spec_codec, str(resolve_codec_path(spec_codec))
    else:
        codec_name, codec_path = f"in-process {type(spec_codec).__name__} ({spec_codec.config.name})", None
    return {"codec": codec_name, "codec_path": codec_path, "num_levels": engine.num_levels,
            "num_classes": int(engine.codec.num_classes), "task_network": engine.task.describe(),
            "metric": engine.metric_name, "dataset": engine.spec.dataset, "data_preset": engine.spec.preset,
            "train_images": engine.num_images("train"), "test_images": engine.num_images("test"),
            "lam": engine.spec.lam, "eta": engine.spec.eta, **engine.weight_hashes()}


# --------------------------------------------------------------------------- training
def resume(trainer: Any, state_path: Path, log: Log, done: Callable[[Any], str]) -> None:
    """--resume: load the training state the run folder holds into ``trainer`` (a clear error when it holds none);
    ``done(trainer)`` says how far it had got."""
    if not state_path.is_file():
        raise FileNotFoundError(f"--resume: no training state {state_path} to continue")
    trainer.load_state(state_path)
    log(f"resumed from {state_path}: {done(trainer)} done")


def train_policy(cfg: TrainAgentConfig, engine: Engine, hp: dict[str, Any], seed: int, device: str, run_dir: Path,
                 log: Log, rule: PreviewRule | None = None) -> tuple[ActFn, dict[str, Any]]:
    """Train ``cfg.algo`` (or load it with --eval-only); returns its evaluation policy and facts. ``rule``: the
    fitted preview rule (-v4), where REINFORCE's ``preview_head_init`` starts the policy."""
    if cfg.eval_only is not None and cfg.algo in ("reinforce", "rollout"):  # run() checked it fits the env
        from agents.checkpoint import load_policy

        policy, meta = load_policy(cfg.eval_only, device)
        facts = {"train_episodes": int(meta.get("train_episodes", 0)), "train_steps": meta.get("train_steps"),
                 "rollouts": meta.get("rollouts"), "policy_path": str(cfg.eval_only)}
        return (lambda obs, slots: policy.act(obs, deterministic=cfg.deterministic)), facts
    if cfg.algo == "reinforce":
        from agents.reinforce import ReinforceConfig, ReinforceTrainer

        budget = {k: hp.pop(k) for k in ("n_episodes", "n_timesteps") if k in hp}
        episodes = cfg.episodes if cfg.episodes is not None else (None if cfg.steps is not None
                                                                   else budget.get("n_episodes"))
        steps = cfg.steps if cfg.steps is not None else (None if episodes is not None else budget.get("n_timesteps"))
        rcfg = ReinforceConfig(**hp)
        if rcfg.preview_head_init > 0 and rule is None:
            raise ValueError("preview_head_init > 0 starts the policy at the preview rule fitted on training "
                             "images: use the level preview (rlasc/SemanticCoding-v7 with observation preview, or -v4) and "
                             "--preview-rule-images > 0")
        trainer = ReinforceTrainer(engine, rcfg, seed=seed, device=device, tb_dir=run_dir / "tb" / "REINFORCE_1",
                                   rule_weight=None if rule is None else rule.weight)
        if rcfg.preview_head_init > 0:
            log(f"policy starts at {rcfg.preview_head_init} x the preview rule's score (weight {rule.weight})")
        state_path = run_dir / "checkpoint.pt"
        if cfg.resume:
            resume(trainer, state_path, log, lambda t: f"{t.stats.episodes} episodes")
        log(f"REINFORCE: budget {episodes if episodes is not None else steps} "
            f"{'episodes' if episodes is not None else 'steps'}, lr {rcfg.learning_rate}, "
            f"b = {rcfg.episodes_per_update}, return {rcfg.return_mode}, baseline {rcfg.baseline}")
        t0 = time.perf_counter()
        trainer.train(episodes=episodes, steps=steps, progress=cfg.progress, checkpoint_path=state_path)
        trainer.close()
        policy_path = trainer.save_policy(run_dir / "policy.pt", {"task": str(engine.task.name), "seed": seed,
                                                                  "train_steps": trainer.stats.steps})
        policy = trainer.policy.eval()
        facts = {"train_episodes": trainer.stats.episodes, "train_steps": trainer.stats.steps,
                 "train_seconds": time.perf_counter() - t0, "policy_path": str(policy_path)}
        return (lambda obs, slots: policy.act(obs, deterministic=cfg.deterministic)), facts

    if cfg.algo == "rollout":
        return _train_rollout(cfg, engine, hp, seed, device, run_dir, log, rule)

    from agents.sb3 import load_sb3, sb3_act, train_sb3

    if cfg.eval_only is not None:  # run() checked that it fits the env (check_saved_policy)
        model = load_sb3(cfg.algo, cfg.eval_only, device)
        state = Path(cfg.eval_only).with_name("sb3_state.json")
        episodes = json.loads(state.read_text())["episodes"] if state.is_file() else None
        facts = {"train_episodes": episodes, "train_steps": int(model.num_timesteps), "policy_path": str(cfg.eval_only)}
    else:
        steps = cfg.steps if cfg.steps is not None else (None if cfg.episodes is not None else hp.get("n_timesteps"))
        log(f"{cfg.algo.upper()}: budget {steps if steps is not None else cfg.episodes} "
            f"{'steps' if steps is not None else 'episodes'}, n_envs {hp.get('n_envs', 8)}")
        model, facts = train_sb3(engine, cfg.algo, hp, seed, device, run_dir, steps, cfg.episodes, cfg.resume,
                                 cfg.progress)
        facts["policy_path"] = str(run_dir / "model.zip")
    return sb3_act(model, cfg.deterministic), facts


def _train_rollout(cfg: TrainAgentConfig, engine: Engine, hp: dict[str, Any], seed: int, device: str, run_dir: Path,
                   log: Log, rule: PreviewRule | None) -> tuple[ActFn, dict[str, Any]]:
    """Rollout policy iteration (agents.rollout): the preview rule plus a correction fitted to rollout returns."""
    from agents.rollout import RolloutConfig, RolloutTrainer

    if rule is None:
        raise ValueError("--algo rollout improves the preview rule fitted on training images: use an id with the "
                         "level preview (rlasc/SemanticCoding-v7 with observation preview, or -v4) and "
                         "--preview-rule-images > 0")
    if cfg.steps is not None:
        raise ValueError("--algo rollout is budgeted in training images (--episodes, or the hyperparameters "
                         "iterations x images_per_iteration), not in --steps")
    rcfg = RolloutConfig(**hp)
    if cfg.episodes is not None:  # the policy's own training episodes, split evenly over the iterations
        if cfg.episodes < rcfg.iterations:
            raise ValueError(f"--episodes {cfg.episodes} is fewer than the {rcfg.iterations} iterations")
        rcfg.images_per_iteration = cfg.episodes // rcfg.iterations
    trainer = RolloutTrainer(engine, rcfg, rule.weight, seed=seed, device=device, tb_dir=run_dir / "tb" / "ROLLOUT_1")
    state_path = run_dir / "checkpoint.pt"
    if cfg.resume:
        resume(trainer, state_path, log, lambda t: f"{t.iteration} iterations")
    log(f"rollout policy iteration: {rcfg.iterations} iterations x {rcfg.images_per_iteration} training images, "
        f"correcting the preview rule (weight {rule.weight}), {rcfg.members} networks of {rcfg.hidden}")
    t0 = time.perf_counter()
    trainer.train(checkpoint_path=state_path, log=log, progress=cfg.progress, snapshot_dir=run_dir)
    trainer.close()
    meta = {"task": str(engine.task.name), "seed": seed}
    policy_path = trainer.save_policy(run_dir / "policy.pt", meta)
    policy = trainer.policy.eval()
    facts = {"train_episodes": trainer.episodes, "train_steps": len(trainer.steps) if trainer.steps is not None else 0,
             "rollouts": trainer.rollouts, "train_seconds": time.perf_counter() - t0, "policy_path": str(policy_path)}
    return (lambda obs, slots: policy.act(obs, deterministic=cfg.deterministic)), facts


# --------------------------------------------------------------------------- one run
def design_json(cfg: TrainAgentConfig, task: str, seed: int, device: str, facts: dict[str, Any],
                ev: dict[str, dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """docs/design.md's object: algo, task, seed, device, train_episodes, eval_images, eval{NAME: 5 keys + extras}."""
    for name, row in ev.items():
        missing = [k for k in DESIGN_EVAL_KEYS if k not in row]
        if missing:
            raise KeyError(f"evaluation of {name} lacks {missing}")
    return {"algo": cfg.algo, "task": task, "seed": seed, "device": device,
            "train_episodes": facts.get("train_episodes"), "eval_images": cfg.eval_images, "eval": ev, **extra}


def run_one(cfg: TrainAgentConfig, engine: Engine, task: str, seed: int, device: str, run_dir: Path,
            cache: dict[str, dict[str, Any]], log: Log, rule: PreviewRule | None = None) -> dict[str, Any]:
    """Train/load, evaluate, write ``run_dir`` (config.yaml, results.json, results.md); returns the JSON object.
    ``rule``: the preview rule fitted on training images (-v4; fitted here when None and the id has the
    preview), evaluated as ``preview_rule`` and, with ``preview_head_init``, where REINFORCE starts."""
    t_start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    hp = hyperparameters(cfg)
    resolved = {"config": dataclasses.asdict(cfg), "task": task, "seed": seed, "device": device,
                "env_id": cfg.env_id, "observation": resolved_observation(cfg),
                "hyperparameters": hp, "environment": describe_engine(engine)}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_jsonable(resolved), sort_keys=False))
    write_json(run_dir / "config.json", resolved)
    table = (load_class_table(cfg.class_table, {**dataclasses.asdict(cfg), "task": task}, engine.weight_hashes())
             if cfg.class_table is not None else None)  # checked before training, not after
    torch.manual_seed(seed)
    np.random.seed(seed)
    if rule is None and engine.spec.preview and cfg.preview_rule_images > 0:
        rule = fitted_preview_rule(engine, cfg.preview_rule_images, log)
    act, facts = train_policy(cfg, engine, dict(hp), seed, device, run_dir, log, rule)

    t_eval = time.perf_counter()
    log(f"evaluating on the first {cfg.eval_images} test images")
    policies = {"policy": act, **baseline_policies(engine.num_levels, seed)}
    if table is not None:
        policies["class_table"] = table
    if rule is not None:
        policies["preview_rule"] = rule
    refs = protocol_references(cfg, engine, log)
    first = not cache  # deterministic baselines are evaluated once per task and shared by the seeds
    if refs is not None:  # the protocol's images: the baselines are the id's stored references (they replay: tests)
        stored = {n for n in refs.returns if n.startswith("fixed_") or n in ("greedy", "random")}
        if rule is not None and rule.weight == refs.record.get("preview_rule_weight"):
            stored.add("preview_rule")  # the same weight, fitted on the same training images
        policies = {k: v for k, v in policies.items() if k not in stored}
        if first:
            cache.update(reference_rows(refs, cfg.eval_images, sorted(stored)))
            log(f"{', '.join(sorted(stored))}: the stored references of {refs.env_id} (rlasc_env/references; random "
                f"is seed 0's)")
    if not first:
        policies = {k: v for k, v in policies.items() if k in ("policy", "random") and k not in cache}
    budget = engine.spec.bpp_budget is not None
    if budget and first and (cfg.greedy or cfg.oracle_cap or cfg.random_search):
        log("greedy, the oracle and random search not run: they try every level, and the rate-budget mode masks some")
    ev = evaluate(engine, policies, cfg.eval_images, batch_size=cfg.eval_batch,
                  greedy=cfg.greedy and first and refs is None and not budget,
                  oracle_cap=cfg.oracle_cap if first and not budget else 0,
                  log=log, keep_returns=True, random_search=cfg.random_search if first and not budget else ())
    if first:
        cache.update({k: dict(v) for k, v in ev.items() if k not in ("policy", "random")})
    ev.update({k: dict(v) for k, v in cache.items()})
    skipped = {k: ev.pop(k)["skipped"] for k in [k for k, v in ev.items() if "skipped" in v]}
    eval_seconds = time.perf_counter() - t_eval
    extra: dict[str, Any] = {
        "preset": cfg.preset, "metric": engine.metric_name, "train_steps": facts.get("train_steps"),
        "train_seconds": facts.get("train_seconds"), "eval_seconds": eval_seconds,
        "total_seconds": time.perf_counter() - t_start, "policy_path": facts.get("policy_path"),
        "run_dir": str(run_dir), "hyperparameters": hp, "environment": describe_engine(engine),
    }
    if facts.get("rollouts") is not None:
        extra["train_rollouts"] = facts["rollouts"]  # rollout policy iteration's extra episodes (one finish() each)
    if rule is not None:
        extra["preview_rule_weight"] = rule.weight  # fitted on training images; REINFORCE's start with preview_head_init
    if skipped:
        extra["skipped"] = skipped  # baselines not run, with the reason (e.g. an intractable oracle)
    if "greedy" in ev:
        extra["gap_closure"] = gap_closure(ev)
    if refs is not None:
        from .scoring import compare_with_references

        extra["benchmark_score"] = {"env_id": refs.env_id, "images": cfg.eval_images,
                                    **compare_with_references(ev["policy"]["returns"], task, refs.env_id)}
    result = design_json(cfg, task, seed, device, facts, ev, extra)
    write_json(run_dir / "results.json", result)
    table = results_table({**ev, **{k: {"skipped": v} for k, v in skipped.items()}}, engine.metric_name,
                          f"{cfg.algo} on {task}, seed {seed}, {cfg.eval_images} test images")
    table += _gap_line(result)
    (run_dir / "results.md").write_text(table)
    return result


def check_saved_policy(cfg: TrainAgentConfig, engine: Engine, device: str) -> None:
    """Raise ValueError when the --eval-only policy was trained for other observations or another Q than
    ``engine``'s env (for example a -v1 policy under -v4, the default id)."""
    from agents.policy import check_observations_fit, check_policy_fits, obs_shapes

    if cfg.algo in ("reinforce", "rollout"):
        from agents.checkpoint import load_policy

        check_policy_fits(load_policy(cfg.eval_only, device)[0], engine, cfg.eval_only)
    else:
        from agents.sb3 import load_sb3

        model = load_sb3(cfg.algo, cfg.eval_only, device)
        check_observations_fit(obs_shapes(model.observation_space), int(model.action_space.n), engine, cfg.eval_only)


def fitted_preview_rule(engine: Engine, num_images: int, log: Log) -> PreviewRule:
    """:class:`PreviewRule` with its weight fitted on the first ``num_images`` training images."""
    num_images = min(num_images, engine.num_images("train"))
    core = engine.core("train", len(PREVIEW_RULE_WEIGHTS) * num_images)
    weight, returns = fit_preview_rule(core, engine.parts("train").images, range(num_images), engine.metric_name)
    log(f"preview rule: weight {weight} (mean return on {num_images} training images: "
        + ", ".join(f"{w}: {r:.4f}" for w, r in returns.items()) + ")")
    return PreviewRule(weight, engine.num_levels)


def _gap_line(result: dict[str, Any]) -> str:
    score = result.get("benchmark_score")
    if score:
        return (f"\nBenchmark score ({score['env_id']}, {score['images']} test images; 0 = best fixed level, 1 = greedy): "
                f"{score['score']:.3f} [{score['score_low']:.3f}, {score['score_high']:.3f}]\n")
    gap = result.get("gap_closure")
    if not gap:
        return ""
    return (f"\nGap closure (policy - best fixed) / (greedy - best fixed) on the return: {gap['ratio']:.3f} "
            f"(best fixed = {gap['best_fixed']})\n")


# --------------------------------------------------------------------------- several runs
def run(cfg: TrainAgentConfig, log: Log = print, engine_factory: EngineFactory = make_engine) -> dict[str, Any]:
    """All runs of ``cfg`` (tasks x seeds); prints the table(s), writes results.md and --json.
    ``engine_factory(cfg, task, device)`` builds the codec/task/data (tests pass in-process ones)."""
    t0 = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.eval_only is not None and cfg.resume:
        raise ValueError("--eval-only and --resume exclude each other")
    device = str(resolve_device(cfg.device))
    seeds = list(cfg.seeds) if cfg.seeds else [cfg.seed]
    tasks = list(cfg.task)
    if not tasks:
        raise ValueError("give at least one --task")
    if cfg.bpp_budget is not None and cfg.algo not in ("reinforce", "maskable_ppo"):
        raise ValueError(f"--algo {cfg.algo} does not read action masks: the rate-budget mode (--bpp-budget) trains "
                         "reinforce or maskable_ppo")
    several = len(seeds) * len(tasks) > 1
    if several and cfg.eval_only is not None:
        raise ValueError("--eval-only evaluates one saved policy: give one task and one seed")
    results: list[dict[str, Any]] = []
    tables: list[str] = []
    for task in tasks:
        engine = engine_factory(cfg, task, device)
        cache: dict[str, dict[str, Any]] = {}
        if cfg.eval_only is not None:
            check_saved_policy(cfg, engine, device)  # before the preview rule's fit (about a minute), not after
        rule = (fitted_preview_rule(engine, cfg.preview_rule_images, log)  # deterministic: once for all seeds
                if engine.spec.preview and cfg.preview_rule_images > 0 else None)
        task_results = []
        for seed in seeds:
            run_dir = default_run_dir(cfg, task, seed, several)
            log(f"== {cfg.algo} | task {task} | seed {seed} | device {device} | run folder {run_dir}")
            res = run_one(cfg, engine, task, seed, device, run_dir, cache, log, rule)
            task_results.append(res)
            print((run_dir / "results.md").read_text())
        results += task_results
        if len(seeds) > 1:
            agg = aggregate([r["eval"] for r in task_results])
            tables.append(results_table(agg, engine.metric_name, f"{cfg.algo} on {task}: mean ± 95% CI over seeds "
                                        f"{seeds}, {cfg.eval_images} test images"))
            ratios = [r["gap_closure"]["ratio"] for r in task_results if "gap_closure" in r]
            if ratios:
                g = mean_ci(ratios)
                tables[-1] += f"\nGap closure (policy - best fixed) / (greedy - best fixed): {g['mean']:.3f}" + (
                    f" ± {g['ci95']:.3f}\n" if np.isfinite(g["ci95"]) else "\n")
    total = time.perf_counter() - t0
    if several:
        summary = _summary(cfg, tasks, seeds, device, results, total)
        out_dir = cfg.run_dir or Path("runs") / "agent" / f"{cfg.algo}-{'-'.join(tasks)}-seeds{'-'.join(map(str, seeds))}"
        out_dir.mkdir(parents=True, exist_ok=True)
        text = "\n".join(tables)
        (out_dir / "results.md").write_text(text)
        write_json(out_dir / "results.json", summary)
        if text:
            print(text)
        log(f"summary in {out_dir} ({total:.0f} s in all)")
    else:
        summary = results[0]
        summary["total_seconds"] = total
        log(f"done in {total:.0f} s")
    if cfg.json is not None:
        write_json(cfg.json, summary)
        log(f"JSON written to {cfg.json}")
    return summary


def _summary(cfg: TrainAgentConfig, tasks: list[str], seeds: list[int], device: str, results: list[dict[str, Any]],
             total: float) -> dict[str, Any]:
    """JSON of several runs. One task: docs/design.md's keys with ``seed`` the list of seeds and ``eval`` the
    per-policy means over seeds (``eval_ci95`` the 95% CI half-widths), plus every run under ``runs``.
    Several tasks: ``task`` is the list and ``eval`` maps task -> that per-task object's ``eval``."""
    per_task: dict[str, dict[str, Any]] = {}
    for task in tasks:
        rows = [r for r in results if r["task"] == task]
        agg = aggregate([r["eval"] for r in rows])
        per_task[task] = {"eval": {n: {k: v["mean"] for k, v in m.items()} for n, m in agg.items()},
                          "eval_ci95": {n: {k: v["ci95"] for k, v in m.items()} for n, m in agg.items()},
                          "train_episodes": float(np.mean([r["train_episodes"] or 0 for r in rows]))}
    base = {"algo": cfg.algo, "seed": seeds, "device": device, "eval_images": cfg.eval_images, "preset": cfg.preset,
            "total_seconds": total, "runs": results}
    if len(tasks) == 1:
        only = per_task[tasks[0]]
        return {**base, "task": tasks[0], "train_episodes": only["train_episodes"], "eval": only["eval"],
                "eval_ci95": only["eval_ci95"]}
    return {**base, "task": tasks, "train_episodes": {t: v["train_episodes"] for t, v in per_task.items()},
            "eval": {t: v["eval"] for t, v in per_task.items()},
            "eval_ci95": {t: v["eval_ci95"] for t, v in per_task.items()}}
