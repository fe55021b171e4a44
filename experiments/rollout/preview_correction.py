"""Is there more in SemanticCoding-v4's observation than the preview rule uses? A correction fitted on greedy's steps.

    python experiments/rollout/preview_correction.py --task segmentation --train-images 200 \
        --steps-cache runs/ctx/seg_paste.npz --out docs/preview_correction_segmentation.json

The preview rule picks argmax_q(-rate_q + w * perceptual_q) from the level preview (rlasc_env/preview.py). Here a
small network adds a per-level correction c_q(x) to that score, x being the -v4 observation's class one-hot and
stats (-v1's 8 entries and the preview's 1 + 2Q). It is fitted by least squares on greedy's steps on the first
``--train-images`` training images, where the reward of *every* level is known (greedy peeks at them all):
full-information supervision, which an RL agent, seeing the reward of the one level it picks, does not get.

Printed and written:

- per step, 5 image folds (the learnability gate's): the share of the best fixed level's regret removed by the rule
  and by the corrected rule, image-bootstrap intervals; and the same when the correction is fitted only on the reward
  of one level per step, drawn from the rule's softmax (what a bandit learner sees), 1 and 3 draws per step;
- per episode: the corrected rule (fitted on all training steps, ``--fit-seeds`` network seeds) and the rule played
  on the first ``--eval-images`` test images, per-image paired difference with a bootstrap interval.

``--steps-cache`` reuses (or writes) experiments/preview_rule/decoded_context.py's .npz of greedy's steps (about 12
minutes for 200 images on one core). Results in docs/env_v4.md, "What the rule leaves in the observation".
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

from agents.baselines import PreviewRule, greedy_episodes
from rlasc_harness.config import TrainAgentConfig
from rlasc_harness.evaluation import evaluate
from rlasc_harness.learnability import GreedySteps, regret_share_ci, steps_from_records
from rlasc_harness.runner import make_engine
from rlasc_env.preview import level_preview, preview_entries, preview_stats

STATS_V1 = 8  # -v1's stats entries; -v4 appends the preview's 1 + 2Q
PREVIEW_RULE_DIR = Path(__file__).resolve().parents[1] / "preview_rule"  # decoded_context.py's folder


@dataclass
class CorrectionConfig:
    task: str = "segmentation"
    train_images: int = 200
    """Greedy's steps on the first N training images (the fit's data)."""
    follow: Literal["greedy", "rule"] = "greedy"
    """Whose episodes the steps come from: greedy's (decoded_context.py's collection) or the rule's own (every
    level's reward is still recorded at every step)."""
    steps_cache: str = "runs/ctx/seg_paste.npz"
    """The .npz of the collected steps; collected (and written here) when missing."""
    target: Literal["immediate", "final"] = "immediate"
    """What a level is worth at a step: its immediate reward (what greedy maximises), or, with ``--follow rule``, the
    episode return when that concept alone takes the level and every other concept keeps the rule's level (the
    final allocation's coordinate-wise deviations; about 12 s per image on one core)."""
    final_cache: str = "runs/ctx/seg_rule_final.npz"
    """Where the final-context returns are kept, one file per shard (``.shardKofN.npz``)."""
    shard: int = 0
    shards: int = 1
    """Collect only images[shard::shards] of the final-context returns and stop (run the shards side by side, then
    run without ``--collect-only`` to fit and play)."""
    collect_only: bool = False
    rule_weight: float = 1.1
    """w of the rule the correction is added to (train_agent.py's fit on 16 training images)."""
    fit_images: int | None = None
    """Fit the episode policies on the steps of the first N training images only (default: all collected); the
    per-step cross-validation always uses every image."""
    eval_images: int = 48
    fit_seeds: tuple[int, ...] = (0, 1, 2)
    hidden: int = 64
    epochs: int = 300
    weight_decay: float = 1e-3
    folds: int = 5
    bootstrap: int = 5000
    threads: int = 1
    out: str | None = None


def collect_along_rule(cfg: CorrectionConfig) -> GreedySteps:
    """Every level's immediate reward at every step of the rule's own episodes (greedy_episodes with follow=the
    rule), on the first ``cfg.train_images`` training images, with the raw preview rows beside the observation."""
    engine = make_engine(TrainAgentConfig(env_id="rlasc/SemanticCoding-v4", train_images=cfg.train_images),
                         cfg.task, "cpu")
    q = engine.num_levels
    per_core = 16
    core = engine.core("train", q * per_core)
    original = core.observation

    def observation(slots: np.ndarray) -> dict[str, np.ndarray]:
        obs = original(slots)
        rate, paste = level_preview(core, np.asarray(slots, np.int64))  # memoized: the observation's own preview
        return {**obs, "stats": obs["stats"][:, :STATS_V1], "rate": rate, "paste": paste}

    core.observation = observation
    def follow(obs: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
        return (-obs["rate"] + cfg.rule_weight * obs["paste"]).argmax(1).astype(np.int64)  # = rule on -v4's stats

    records = []
    started = time.time()
    for start in range(0, cfg.train_images, per_core):
        chunk = list(range(start, min(start + per_core, cfg.train_images)))
        records += greedy_episodes(core, engine.parts("train").images, chunk, engine.metric_name, observe=True,
                                   follow=follow)
        print(f"along the rule: {start + len(chunk)}/{cfg.train_images} images, {time.time() - started:.0f} s",
              flush=True)
    return steps_from_records(records)


def load_steps(cfg: CorrectionConfig) -> GreedySteps:
    cache = Path(cfg.steps_cache)
    if not cache.is_file():
        if cfg.follow == "rule":
            steps = collect_along_rule(cfg)
        else:
            import sys  # noqa: PLC0415

            sys.path.insert(0, str(PREVIEW_RULE_DIR))
            from decoded_context import ContextConfig, collect  # noqa: PLC0415 (experiments/preview_rule/)

            ctx = ContextConfig(env_id="rlasc/SemanticCoding-v1", task=cfg.task, train_images=cfg.train_images,
                                threads=cfg.threads)  # -v1's observation, as measured (docs/env_v4.md)
            steps = collect(make_engine(ctx, cfg.task, "cpu"), ctx)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, levels=steps.levels, candidates=steps.candidates, classes=steps.classes,
                            image=steps.image, **{f"obs_{k}": v for k, v in steps.observations.items()})
    with np.load(cache) as data:
        obs = {k[4:]: data[k] for k in data.files if k.startswith("obs_")}
        steps = GreedySteps(obs, data["levels"], data["candidates"], data["classes"], data["image"])
    if "paste" not in steps.observations:
        raise ValueError(f"{cache} has no level preview (paste): collect it with decoded_context.py")
    return steps


def final_context_values(cfg: CorrectionConfig, steps: GreedySteps, shard: int) -> dict[int, np.ndarray]:
    """{image: (K, Q) episode returns} of the rule's allocation with one concept's level changed, for the images of
    ``shard`` (played from one reset per image on a -v1 core: -v4's rewards are -v1's, without the preview's cost)."""
    from rlasc_env.engine import copy_slot, reset_slots

    path = Path(cfg.final_cache).with_suffix(f".shard{shard}of{cfg.shards}.npz")
    if path.is_file():
        with np.load(path) as data:
            return {int(k[6:]): data[k] for k in data.files}
    engine = make_engine(TrainAgentConfig(env_id="rlasc/SemanticCoding-v1", train_images=cfg.train_images),
                         cfg.task, "cpu")
    q, core, images = engine.num_levels, engine.core("train", 96), engine.parts("train").images
    out: dict[int, np.ndarray] = {}
    started = time.time()
    for index in np.unique(steps.image)[shard::cfg.shards].tolist():
        seq = steps.levels[steps.image == index]
        k = len(seq)
        changed = np.array([(j, lv) for j in range(k) for lv in range(q)])
        sequences = np.tile(seq, (len(changed), 1))
        sequences[np.arange(len(changed)), changed[:, 0]] = changed[:, 1]
        totals = np.zeros(len(changed))
        for start in range(0, len(changed), core.num_slots):
            chunk = sequences[start:start + core.num_slots]
            rows = np.arange(len(chunk))
            reset_slots(core, images, rows[:1], [index])
            copy_slot(core, 0, rows[1:])
            for t in range(k):
                totals[start:start + len(chunk)] += core.step(rows, chunk[:, t])[0]
        out[index] = totals.reshape(k, q)
        print(f"final context: image {index} ({len(out)} of shard {shard}), {time.time() - started:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{f"image_{i}": v for i, v in out.items()})
    return out


def inputs(stats: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """The correction network's input: the -v4 stats and the class one-hot."""
    return np.concatenate([stats, np.eye(num_classes)[classes]], 1).astype(np.float32)


class Correction:
    """c_q(x), fitted so that w * perceptual_q + stake * c_q(x) matches the non-rate part of level q's reward."""

    def __init__(self, x: np.ndarray, target: np.ndarray, stake: np.ndarray, mask: np.ndarray | None,
                 cfg: CorrectionConfig, seed: int) -> None:
        torch.manual_seed(seed)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        q = target.shape[1]
        self.net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], cfg.hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(cfg.hidden, q))
        torch.nn.init.zeros_(self.net[2].weight)
        torch.nn.init.zeros_(self.net[2].bias)
        xt = torch.tensor((x - self.mu) / self.sd)
        yt, st = torch.tensor(target, dtype=torch.float32), torch.tensor(stake, dtype=torch.float32)[:, None]
        weight = torch.ones_like(yt) if mask is None else torch.tensor(mask, dtype=torch.float32)
        opt = torch.optim.Adam(self.net.parameters(), 3e-3)
        for _ in range(cfg.epochs):
            opt.zero_grad()
            err = (st * self.net(xt) - yt) ** 2
            loss = (err * weight).sum() / weight.sum() + cfg.weight_decay * (self.net[0].weight ** 2).sum()
            loss.backward()
            opt.step()

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.net(torch.tensor((x - self.mu) / self.sd)).numpy()


def main(cfg: CorrectionConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    steps = load_steps(cfg)
    obs = steps.observations
    rate, paste = obs["rate"].astype(np.float64), obs["paste"].astype(np.float64)
    n, q = steps.candidates.shape
    num_classes = obs["concept"].shape[1]
    stats = np.concatenate([obs["stats"], preview_stats(rate, paste)], 1)  # what -v4 shows at each greedy step
    stake = np.maximum(rate.max(1) + np.abs(paste).max(1), 1e-12)
    x = inputs(stats, steps.classes, num_classes)
    rule_score = -rate + cfg.rule_weight * paste
    if cfg.target == "final":
        if cfg.follow != "rule":
            raise ValueError("--target final deviates from the rule's allocation: use it with --follow rule")
        if cfg.collect_only:
            final_context_values(cfg, steps, cfg.shard)
            return {}
        values: dict[int, np.ndarray] = {}
        for shard in range(cfg.shards):
            values.update(final_context_values(cfg, steps, shard))
        worth = np.concatenate([values[i] for i in np.unique(steps.image).tolist()])  # steps are grouped by image
        if not (np.diff(steps.image) >= 0).all() or len(worth) != n:
            raise RuntimeError("the collected steps are not grouped by image in ascending order")
        ruled = np.arange(n), steps.levels
        # the rule's own level keeps the rule's score; every other level differs by its change of the return
        steps = GreedySteps(steps.observations, steps.levels, worth - worth[ruled][:, None] + rule_score[ruled][:, None],
                            steps.classes, steps.image)
    target = steps.candidates - rule_score  # what the rule's score misses, per level

    best = steps.candidates.max(1)
    regret = lambda chosen: best - steps.candidates[np.arange(n), chosen]  # noqa: E731
    fixed = min(range(q), key=lambda lv: regret(np.full(n, lv)).sum())
    reference = regret(np.full(n, fixed))
    folds = np.array_split(np.random.default_rng(0).permutation(np.unique(steps.image)), cfg.folds)
    report: dict = {"task": cfg.task, "target": cfg.target, "train_images": cfg.train_images, "steps": int(n),
                    "best_fixed": fixed,
                    "rule_weight": cfg.rule_weight, "per_step_shares": {}, "config": vars(cfg)}

    def share(name: str, chosen: np.ndarray) -> None:
        s = regret_share_ci(steps.image, regret(chosen), reference, cfg.bootstrap, 0)
        report["per_step_shares"][name] = s
        print(f"per step, {name}: {s['share']:.1%} [{s['low']:.1%}, {s['high']:.1%}]", flush=True)

    share("rule", rule_score.argmax(1))
    draws = np.random.default_rng(1)
    for name, feedback in (("corrected rule, every level's reward", None), ("corrected rule, one draw per step", 1),
                           ("corrected rule, three draws per step", 3)):
        chosen = np.zeros(n, np.int64)
        for held in folds:
            test = np.isin(steps.image, held)
            train = np.flatnonzero(~test)
            mask = None
            if feedback is not None:  # only the drawn levels' rewards are seen (softmax of the rule at 30x, the preset)
                logits = 30.0 * rule_score[train] / stake[train, None]
                prob = np.exp(logits - logits.max(1, keepdims=True))
                prob /= prob.sum(1, keepdims=True)
                mask = np.zeros((len(train), q))
                for _ in range(feedback):
                    mask[np.arange(len(train)), (prob.cumsum(1) > draws.random((len(train), 1))).argmax(1)] = 1
            corr = Correction(x[train], target[train], stake[train], mask, cfg, seed=0)
            chosen[test] = (rule_score[test] / stake[test, None] + corr(x[test])).argmax(1)
        share(name, chosen)

    # episodes on test images: the corrected rule fitted on every training step, against the rule
    agent_cfg = TrainAgentConfig(env_id="rlasc/SemanticCoding-v4", eval_images=cfg.eval_images)
    engine = make_engine(agent_cfg, cfg.task, "cpu")
    policies = {"preview_rule": PreviewRule(cfg.rule_weight, q)}
    used = np.flatnonzero(steps.image < cfg.fit_images) if cfg.fit_images is not None else np.arange(n)
    report["fit_steps"] = int(len(used))
    fits = [Correction(x[used], target[used], stake[used], None, cfg, seed) for seed in cfg.fit_seeds]
    for name, members in [(f"corrected_{seed}", [fit]) for seed, fit in zip(cfg.fit_seeds, fits)] + [
            ("corrected_mean", fits)]:  # the last: the mean of the seeds' corrections

        def act(o: dict[str, np.ndarray], slots: np.ndarray, members: list[Correction] = members) -> np.ndarray:
            st = np.asarray(o["stats"], np.float64)
            r, p = preview_entries(st, q)  # over the stake: the argmax is the raw score's
            x_now = inputs(st, np.asarray(o["concept"]).argmax(1), num_classes)
            corr = np.mean([fit(x_now) for fit in members], 0)
            return (-r + cfg.rule_weight * p + corr).argmax(1).astype(np.int64)

        policies[name] = act
    t0 = time.perf_counter()
    ev = evaluate(engine, policies, cfg.eval_images, greedy=False, keep_returns=True)
    rule = np.asarray(ev["preview_rule"]["returns"])
    report["episodes"] = {"eval_images": cfg.eval_images, "seconds": time.perf_counter() - t0}
    for name, row in ev.items():
        returns = np.asarray(row["returns"])
        diff = returns - rule
        boot = np.random.default_rng(0).choice(diff, (cfg.bootstrap, len(diff))).mean(1)
        report["episodes"][name] = {"return": float(returns.mean()), "bpp": row["bpp_mean"],
                                    "metric": row.get(f"{engine.metric_name}_mean"), "level_mean": row.get("level_mean"),
                                    "minus_rule": float(diff.mean()),
                                    "minus_rule_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
                                    "images_ahead": int((diff > 1e-9).sum()), "images_behind": int((diff < -1e-9).sum())}
        e = report["episodes"][name]
        print(f"{name}: return {e['return']:.4f}, bpp {e['bpp']:.3f}, minus rule {e['minus_rule']:+.4f} "
              f"[{e['minus_rule_ci95'][0]:+.4f}, {e['minus_rule_ci95'][1]:+.4f}], ahead/behind "
              f"{e['images_ahead']}/{e['images_behind']}", flush=True)
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report


if __name__ == "__main__":
    main(tyro.cli(CorrectionConfig))
