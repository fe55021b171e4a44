"""``evaluate.py``: RL-ASC against engineered codecs (Section IV: Fig. 5, 8-12, Table II).

Flow: load the evaluation images, the codec(s), the task networks H and the trained policy;
sweep RL-ASC's levels, then the engineered codecs over their rate knob across RL-ASC's measured
rate range (real bytes, decoded back, measured); Bjontegaard deltas (``bd``: per-image mIoU, as
docs/design.md fixes it; ``bd_by_task``: each task network's data-set metric, :data:`~.metrics.DATASET_KEYS`);
AWGN robustness at about equal rate (segmentation mIoU and detection mAP@0.5); write the JSON of
docs/design.md, a Markdown report and the figures. Anything that cannot run is named in the JSON's
``skipped`` and in the report.
"""
from __future__ import annotations

import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from codec_models.codec import SemanticCodec
from codec_models.device import resolve_device
from codec_models.references import REFERENCES
from rlasc_env.tasks import Task

from . import plots, report
from .awgn import AwgnSettings, run_awgn
from .bd import BD_METHOD, bd_table
from .classic import ClassicCodec, available_codecs
from .metrics import DATASET_KEYS, DATASET_METRICS, INDEPENDENT_KEY, INDEPENDENT_SEGMENTER, TASK_KEYS, PooledFeatures, QualityMeter
from .rlasc import LevelPlan, LoadedPolicy, fixed_plan, load_policy, offset_plan, policy_plan
from .sweep import (EvalSet, PointResult, calibrate, derived_targets, encode_plans, evaluate_classic, evaluate_plan,
                    evaluate_reference, refine_candidates, select_settings)

__all__ = ["EvalConfig", "Inputs", "main", "run"]

CLASSIC_NAMES = ("jpeg", "jpeg2000", "webp", "avif", "heif")
TASK_NAMES = ("segmentation", "detection", "classification")


@dataclass
class EvalConfig:
    """Flags of evaluate.py (one field per flag)."""

    env_id: str | None = "rlasc/SemanticCoding-v7"
    """Registered id whose codec, task networks and data the comparison uses (rlasc_env.resolve_env, pins checked).
    None: a custom comparison of --codec / --task-weights / --dataset / --preset (not tied to an id)."""
    codec: tuple[str, ...] | None = None
    """Codec name(s) or checkpoint path(s) of a custom comparison (--env-id None; default tiny); several = several
    bitrate modes (e.g. n = 16/32/64)."""
    policy: tuple[str, ...] = ()
    """Trained policy file(s) of train_agent.py (run with the first codec). None given: rlasc is skipped."""
    task_weights: str | None = None
    """Folder with {segmentation,detection,classification}.pt of a custom comparison (default: the id's)."""
    independent_segmenter: str | None = str(INDEPENDENT_SEGMENTER)
    """A second segmentation scorer that no codec trainer loads (issue 31): its data-set mIoU per point and its BD
    deltas (``bd_by_task.segmentation_independent``); None to skip."""
    dataset: Literal["streets", "cityscapes"] | None = None
    """Data set of a custom comparison (default: the id's, streets)."""
    data_root: str | None = None
    """Local Cityscapes folder (dataset=cityscapes)."""
    preset: str | None = None
    """Data set size preset of a custom comparison (tiny 64x128, paper 256x512; default: the id's, tiny)."""
    split: str = "test"
    images: int = 100
    """Number of evaluation images (the first N of the split)."""
    out_dir: str = "results/eval"
    """Folder of the report, the figures and (by default) results.json."""
    json: str | None = None
    """Where to write the JSON (default OUT_DIR/results.json)."""
    seed: int = 0
    device: str = "auto"
    quick: bool = False
    """Few images, few quality points, few SNRs (for tests and smoke runs)."""
    classic: tuple[str, ...] = CLASSIC_NAMES
    """Engineered codecs to compare."""
    max_bpp: float | None = None
    """Upper end (bpp) of the engineered codecs' sweeps. Default: derived, rate_margin x the highest RL-ASC rate measured. Why derived: the paper's 0-0.5 bpp was for 256x512 Cityscapes; a 64x128 file pays its headers and label map on 16x fewer pixels (the tiny codec spans ~0.39 bpp, every concept at level 0, to ~2.0 bpp at level 5), so a fixed 0-0.5 range misses RL-ASC's and every BD delta is null. Given without --targets: rate_points targets from max_bpp/16 to max_bpp."""
    targets: tuple[float, ...] | None = None
    """Target rates (bpp) of the engineered codecs' sweeps. Default: derived, rate_points rates spaced geometrically from the lowest RL-ASC rate measured / rate_margin to max_bpp (see --max-bpp for why). Given without --max-bpp: max_bpp is their largest."""
    rate_margin: float = 1.5
    """How far the derived rate range reaches beyond RL-ASC's measured one (factor below the lowest and above the highest rlasc / rlasc_simplified / rlasc_fixed_* rate), so that the curves overlap for BD."""
    rate_points: int = 15
    """Number of derived target rates (when --targets is not given)."""
    min_points: int = 4
    """Points per engineered codec at least (taken above max_bpp when it cannot go lower)."""
    refine: int = 3
    """Extra settings per engineered codec where its mIoU curve is steepest."""
    calibration_images: int = 4
    rlasc_offsets: tuple[int, ...] = (0, 1, 2, 3)
    """Points of rlasc: the agent's levels lowered by each offset (0 = the policy as trained; negative: raised,
    clamped at the highest level)."""
    bd_method: Literal["pchip", "akima"] = BD_METHOD
    bd_min_overlap: float = 0.1
    """A BD delta is reported only where the two curves overlap on at least this share of their range."""
    snrs: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0)
    awgn_seeds: int = 3
    awgn_codecs: tuple[str, ...] = ("rlasc", "rlasc_simplified", "jpeg", "jpeg2000")
    awgn_images: int | None = None
    """Images used for the AWGN curves (default: all evaluation images)."""
    awgn_detection: bool = True
    """Also score the AWGN curves with the detection H's mAP@0.5 (one mAP per SNR, seed and codec)."""
    grid_image: int = 0
    """Index (among the evaluation images) of the image of the Fig. 10 grid."""
    batch_size: int = 16
    progress: bool = True

    def resolved(self) -> "EvalConfig":
        """The configuration with the id's pins filled in (a clear error where a flag contradicts them) and
        --quick applied."""
        cfg = self
        if self.env_id is not None:
            from rlasc_env.registration import resolve_env
            from rlasc_env.tasks.networks import WEIGHTS_DIR

            pins = resolve_env(self.env_id).card.pins
            folder = pins.get("task_weights")
            pinned = {"codec": (pins["codec"],), "task_weights": str(WEIGHTS_DIR / folder) if folder else None,
                      "dataset": pins["data"]["dataset"], "preset": pins.get("preset", "tiny")}
            given = {k: getattr(self, k) for k in pinned if getattr(self, k) is not None}
            wrong = {k: v for k, v in given.items() if v != pinned[k]}
            if wrong or self.data_root is not None:
                raise ValueError(f"--env-id {self.env_id} pins the codec, the task networks and the data; "
                                 f"{sorted(wrong) or ['data_root']} contradict it: pass --env-id None for a custom "
                                 "comparison")
            cfg = replace(self, **pinned)
        else:
            cfg = replace(self, codec=self.codec or ("tiny",), dataset=self.dataset or "streets",
                          preset=self.preset or "tiny")
        if not cfg.quick:
            return cfg
        return replace(cfg, images=min(self.images, 6), rate_points=min(self.rate_points, 5), min_points=2, refine=0,
                       calibration_images=2, rlasc_offsets=(0, 1), snrs=(0.0, 10.0, 20.0), awgn_seeds=1)


@dataclass
class Inputs:
    """Objects to evaluate instead of loading them (tests inject small in-process ones)."""

    codecs: list[tuple[str, SemanticCodec]] = field(default_factory=list)
    tasks: dict[str, Task] | None = None
    dataset: Any = None
    policies: list[LoadedPolicy] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # things that could not be loaded, with the reason
    independent: Task | None = None  # the independent segmenter (a second scorer of segmentation), when loaded


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- loading
def load_inputs(cfg: EvalConfig, device: torch.device) -> Inputs:
    """Codecs, task networks, data set and policies named by the flags; what fails goes to ``skipped``."""
    from codec_models.checkpoint import load_codec
    from codec_models.datasets import load_dataset
    from rlasc_env.tasks import make_task

    inputs = Inputs()
    if cfg.env_id is not None:  # the files the id pins, checked by sha256 before anything is loaded
        from rlasc_env.registration import resolve_env
        from rlasc_env.versions import check_pins

        pins = resolve_env(cfg.env_id).card.pins
        for task in TASK_NAMES:
            check_pins(pins, cfg.codec[0], task, cfg.dataset, None)
    for name in cfg.codec:
        try:
            inputs.codecs.append((name, load_codec(name, device=device).eval()))
        except (FileNotFoundError, ValueError) as exc:
            inputs.skipped[f"codec {name}"] = str(exc)
    tasks: dict[str, Task] = {}
    for task in TASK_NAMES:
        weights = None if cfg.task_weights is None else str(Path(cfg.task_weights) / f"{task}.pt")
        try:
            tasks[task] = make_task(task, reference="ground_truth", device=device, weights=weights)
        except (FileNotFoundError, ValueError) as exc:
            inputs.skipped[f"task {task}"] = str(exc)
    inputs.tasks = tasks
    if cfg.independent_segmenter:
        try:
            inputs.independent = make_task("segmentation", reference="ground_truth", device=device,
                                           weights=cfg.independent_segmenter)
            inputs.independent.network.eval()
        except (FileNotFoundError, ValueError) as exc:
            inputs.skipped["independent segmenter"] = str(exc)
    extra = {} if cfg.data_root is None else {"root": cfg.data_root}
    inputs.dataset = load_dataset(cfg.dataset, split=cfg.split, preset=cfg.preset, **extra)
    if inputs.codecs:
        codec = inputs.codecs[0][1]
        for path in cfg.policy:
            try:
                inputs.policies.append(load_policy(path, codec.num_levels, device))
            except (FileNotFoundError, ValueError, RuntimeError, KeyError) as exc:
                inputs.skipped[f"policy {path}"] = f"{type(exc).__name__}: {exc}"
    return inputs


def describe_networks(codecs: Sequence[tuple[str, SemanticCodec]], tasks: dict[str, Task],
                      features: PooledFeatures | None) -> dict[str, Any]:
    out: dict[str, Any] = {"codecs": {}}
    for name, codec in codecs:
        out["codecs"][name] = {"source": getattr(codec, "source", "in-process"), "levels": codec.num_levels,
                               "code_channels": codec.config.code_channels, "classes": codec.num_classes,
                               "trained_size": [codec.config.height, codec.config.width]}
    for name, task in tasks.items():
        out[name] = {"network": task.network_name, "weights": getattr(task, "weights", "") or "in-process",
                     "metric": task.metric_name, "reference": task.reference_mode}
    if features is not None:
        out["fid_kid_features"] = {"network": features.name, "features": features.num_features,
                                   "note": f"FID/KID computed on features of {features.name}, not Inception; not "
                                           "comparable to published FID values",
                                   "bias": "phi is the network whose features RL-ASC's decoder was trained to match "
                                           "(perceptual loss, eq. 11): FID/KID on phi favour RL-ASC over the "
                                           "engineered codecs"}
    return out


# --------------------------------------------------------------------------- sweeps
def sweep_semantic(plans: Sequence[LevelPlan], data: EvalSet, meter: QualityMeter, cfg: EvalConfig
                   ) -> list[PointResult]:
    """One point per plan; every image is analysed once, every file decoded back with ``decompress``."""
    start = time.time()
    files = encode_plans(plans, data, cfg.progress)
    points = []
    for plan, plan_files in zip(plans, files):
        points.append(evaluate_plan(plan, data, meter, cfg.batch_size, cfg.grid_image, cfg.progress, plan_files))
        rec = points[-1].record
        log(f"{plan.name} ({plan.codec_name}, {_setting_text(rec)}): {rec['bpp']:.4f} bpp, mIoU "
            f"{_num(rec.get('miou'))}, mIoU (dataset) {_num(rec.get('miou_dataset'))}, mAP@.5 "
            f"{_num(rec.get('map50'))}, macro AP {_num(rec.get('macro_ap'))}, PSNR {_num(rec.get('psnr'))} "
            f"[{time.time() - start:.0f} s]")
    return points


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _setting_text(record: dict[str, Any]) -> str:
    keys = [k for k in ("level", "level_offset") if k in record]
    return ", ".join(f"{k} {record[k]}" for k in keys) or "-"


def sweep_classic(codec: ClassicCodec, data: EvalSet, meter: QualityMeter, cfg: EvalConfig,
                  score_key: str) -> tuple[list[PointResult], list[tuple[int, Any, float]]]:
    """Points of one engineered codec: calibrated settings, then refinement where the curve is steepest.
    ``cfg.targets`` and ``cfg.max_bpp`` must be set (:func:`rate_range`)."""
    if cfg.targets is None or cfg.max_bpp is None:
        raise ValueError("sweep_classic needs target rates and max_bpp: resolve them with rate_range first")
    stride = max(1, len(codec.grid) // 12) if cfg.quick else 1
    table = calibrate(codec, data, cfg.calibration_images, stride)
    chosen = select_settings(table, cfg.targets, cfg.max_bpp, cfg.min_points)
    done: dict[int, PointResult] = {}
    for g in chosen:
        done[g] = evaluate_classic(codec, codec.grid[g], data, meter, cfg.batch_size, cfg.grid_image, cfg.progress)
    log(f"{codec.name}: calibrated {len(table)} settings, sweeping {len(chosen)}")
    rate_of = {row[0]: row[2] for row in table}
    for _ in range(cfg.refine):
        rates = [rate_of.get(k, v.bpp) for k, v in done.items()]
        candidates = [g for g in refine_candidates([(k, v.record) for k, v in done.items()], score_key, cfg.max_bpp)
                      if g not in done and (g not in rate_of or _far(rate_of[g], rates))]
        if not candidates:
            break
        g = candidates[0]
        done[g] = evaluate_classic(codec, codec.grid[g], data, meter, cfg.batch_size, cfg.grid_image, cfg.progress)
        done[g].record["refined"] = True
    for g, point in done.items():
        point.record["above_max_bpp"] = bool(point.bpp > cfg.max_bpp)
    points = sorted(done.values(), key=lambda p: p.bpp)
    return points, table


def _far(bpp: float, others: Sequence[float], spacing: float = 0.02) -> bool:
    return all(abs(bpp - o) > spacing * max(o, 1e-9) for o in others)


# --------------------------------------------------------------------------- main flow
def measure_originals(data: EvalSet, meter: QualityMeter, batch_size: int) -> dict[str, Any]:
    """Add the originals to FID/KID's reference statistics; the task scores of the uncoded images."""
    for _, images, _ in data.batches(batch_size):
        meter.add_real(images)
    meter.reset()
    for idx, images, labels in data.batches(batch_size):
        meter.update(images, images, labels, instances=data.instance_batch(idx))
    # FID/KID/PSNR of the originals against themselves say nothing (KID's subsets even overlap): not reported
    return {k: v for k, v in meter.result().items() if k.split("_")[0] not in ("bpp", "fid", "kid", "psnr")}


def semantic_points(inputs: Inputs, tasks: dict[str, Task], data: EvalSet, meter: QualityMeter, cfg: EvalConfig,
                    notes: list[str], skipped: dict[str, str]) -> dict[str, list[PointResult]]:
    """RL-ASC: every uniform level of every codec (highest = simplified), then each trained agent."""
    results: dict[str, list[PointResult]] = {}
    h, w = data.shape
    for name, codec in inputs.codecs:
        if (codec.config.height, codec.config.width) != (h, w):
            notes.append(f"codec {name} was trained at {codec.config.height}x{codec.config.width}, the images are "
                         f"{h}x{w}")
        plans = [fixed_plan(codec, name, q, data.count) for q in reversed(range(codec.num_levels))]
        for point in sweep_semantic(plans, data, meter, cfg):
            point.record["_codec_obj"] = codec
            results.setdefault(point.family, []).append(point)
    primary_name, primary = inputs.codecs[0]
    if not inputs.policies:
        skipped["rlasc"] = ("no trained policy file given (--policy PATH from train_agent.py): RL-ASC with the "
                            "agent is not evaluated")
    for policy in inputs.policies:
        task = tasks.get(policy.task)
        if task is None:
            skipped[f"rlasc {policy.path}"] = f"the policy was trained on task {policy.task!r}, whose network is missing"
            continue
        log(f"rlasc: playing {policy.path} on {data.count} images")
        base = policy_plan(policy, primary, primary_name, task, _IndexedImages(data), cfg.batch_size)
        for point in sweep_semantic([offset_plan(base, k) for k in cfg.rlasc_offsets], data, meter, cfg):
            point.record["_codec_obj"] = primary
            results.setdefault("rlasc", []).append(point)
    if any(cfg.rlasc_offsets) and results.get("rlasc"):
        notes.append("rlasc points with level_offset k > 0 apply the agent's per-concept levels lowered by k "
                     "(clamped at the coarsest level), k < 0 raised by -k (clamped at the highest): the agent's "
                     "allocation at other bitrate modes of the same codec; the k = 0 point is the policy as trained")
    return results


def classic_points(data: EvalSet, meter: QualityMeter, cfg: EvalConfig, score_key: str, notes: list[str],
                   skipped: dict[str, str], t_start: float
                   ) -> tuple[dict[str, list[PointResult]], dict[str, Any], list[ClassicCodec]]:
    """(points per engineered codec, calibration tables, the codecs that ran)."""
    codecs, unavailable = available_codecs(cfg.classic)
    skipped.update(unavailable)
    results: dict[str, list[PointResult]] = {}
    calibration: dict[str, Any] = {}
    h, w = data.shape
    for codec in codecs:
        points, table = sweep_classic(codec, data, meter, cfg, score_key)
        results[codec.name] = points
        lowest = min(row[2] for row in table)
        calibration[codec.name] = {"knob": codec.knob, "library": codec.library, "lowest_bpp": lowest,
                                   "table": [[row[1], round(row[2], 5)] for row in table]}
        if lowest > cfg.max_bpp:
            notes.append(f"{codec.name} cannot code these {h}x{w} images below {lowest:.3f} bpp (headers and minimum "
                         f"payload); its points lie above {cfg.max_bpp} bpp")
        log(f"{codec.name} [{time.time() - t_start:.0f} s]: " + ", ".join(
            f"{p.bpp:.3f} bpp / {score_key} {_num(p.record.get(score_key))}" for p in points))
    return results, calibration, codecs


BD_TESTS = ("rlasc", "rlasc_simplified")


def bd_curves(codecs_json: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The curves of the BD deltas: each codec's points, with the simplified curve = every uniform-level
    point (rlasc_simplified + rlasc_fixed_*: the curve through the codec's uniform levels)."""
    uniform = [rec for fam, recs in codecs_json.items() if fam == "rlasc_simplified" or fam.startswith("rlasc_fixed_")
               for rec in recs]
    curves = {k: v for k, v in codecs_json.items() if not k.startswith("rlasc_fixed_")}
    curves["rlasc_simplified"] = sorted(uniform, key=lambda rec: rec.get("bpp") or 0.0)
    return curves


def bd_results(codecs_json: dict[str, list[dict[str, Any]]], cfg: EvalConfig, notes: list[str]
               ) -> dict[str, dict[str, Any]]:
    """Table II: rlasc and the simplified (uniform-level) curve against every other codec, on the per-image mIoU."""
    curves = bd_curves(codecs_json)
    notes.append(f"BD deltas: bjontegaard package, '{cfg.bd_method}' interpolation, curves reduced to their Pareto "
                 "front; the rlasc_simplified curve is every uniform-level point (rlasc_simplified + rlasc_fixed_*: "
                 "no agent, equal precision for every concept)")
    anchors = [k for k in curves if k != "rlasc"]
    return bd_table(curves, list(BD_TESTS), anchors, "miou", cfg.bd_method, cfg.bd_min_overlap)


def task_bd_entry(entry: dict[str, Any], metric: str) -> dict[str, Any]:
    """A :func:`~.bd.bd_pair` entry with its metric-named keys (``bd_<metric>``, ``reason_<metric>``,
    ``<metric>_overlap``, ``<metric>_interval``) under task-neutral names, and ``metric`` naming it."""
    names = {f"bd_{metric}": "bd_metric", f"reason_{metric}": "reason_metric", f"{metric}_overlap": "metric_overlap",
             f"{metric}_interval": "metric_interval"}
    return {"metric": metric, **{names.get(k, k): v for k, v in entry.items()}}


def bd_by_task(codecs_json: dict[str, list[dict[str, Any]]], tasks: dict[str, Task], cfg: EvalConfig,
               skipped: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task with a network: rlasc and rlasc_simplified against every other curve (the engineered codecs,
    and rlasc_simplified for rlasc) on the task's data-set metric (:data:`DATASET_KEYS`):
    ``{task: {"<A>_vs_<B>": {"bd_rate", "bd_metric", "metric", ...}}}``."""
    curves = bd_curves(codecs_json)
    anchors = [k for k in curves if k != "rlasc"]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, metric in DATASET_KEYS.items():
        if task not in tasks:
            skipped[f"bd_by_task {task}"] = f"no {task} task network: no {metric}, no BD on it"
            continue
        table = bd_table(curves, list(BD_TESTS), anchors, metric, cfg.bd_method, cfg.bd_min_overlap)
        out[task] = {pair: task_bd_entry(entry, metric) for pair, entry in table.items()}
    if any(p.get(INDEPENDENT_KEY) is not None for pts in curves.values() for p in pts):
        table = bd_table(curves, list(BD_TESTS), anchors, INDEPENDENT_KEY, cfg.bd_method, cfg.bd_min_overlap)
        out["segmentation_independent"] = {pair: task_bd_entry(e, INDEPENDENT_KEY) for pair, e in table.items()}
    return out


def semantic_rates(results: dict[str, list[PointResult]]) -> list[float]:
    """The rates (bpp) of every RL-ASC point measured: rlasc, rlasc_simplified, rlasc_fixed_*."""
    return [p.bpp for fam, points in results.items() if fam.startswith("rlasc") for p in points]


def rate_range(cfg: EvalConfig, rates: Sequence[float]) -> tuple[EvalConfig, dict[str, Any]]:
    """``cfg`` with the engineered sweeps' ``max_bpp`` and ``targets`` resolved, and how (the JSON's
    ``rate_range``). Not given: derived from RL-ASC's measured ``rates`` (from lowest / rate_margin to
    highest x rate_margin); --max-bpp alone: targets from max_bpp / 16 to max_bpp; --targets alone:
    max_bpp = their largest."""
    low, high = (min(rates), max(rates)) if rates else (None, None)
    record: dict[str, Any] = {"rlasc_bpp": [low, high], "margin": cfg.rate_margin}
    max_bpp, targets = cfg.max_bpp, cfg.targets
    if max_bpp is None and targets is None:
        if low is None:
            raise ValueError("no RL-ASC point was measured: the rate range cannot be derived; give --max-bpp or "
                             "--targets")
        max_bpp = high * cfg.rate_margin
        targets = derived_targets(low / cfg.rate_margin, max_bpp, cfg.rate_points)
        record["source"] = (f"derived from the RL-ASC points ({low:.3f}-{high:.3f} bpp) widened by x{cfg.rate_margin:g} "
                            "on both sides")
    elif targets is None:
        targets = derived_targets(max_bpp / 16.0, max_bpp, cfg.rate_points)
        record["source"] = "--max-bpp given: targets spaced geometrically from max_bpp / 16 to max_bpp"
    elif max_bpp is None:
        max_bpp = max(targets)
        record["source"] = "--targets given: max_bpp is the largest target"
    else:
        record["source"] = "--max-bpp and --targets given"
    record.update({"max_bpp": float(max_bpp), "targets": [float(t) for t in targets]})
    return replace(cfg, max_bpp=float(max_bpp), targets=tuple(float(t) for t in targets)), record


def rate_range_notes(record: dict[str, Any], notes: list[str]) -> None:
    """A note on where the engineered codecs' targets come from, and on a range that misses RL-ASC's."""
    targets, (low, high) = record["targets"], record["rlasc_bpp"]
    notes.append(f"engineered codecs' target rates: {record['source']}: {len(targets)} targets "
                 f"{min(targets):.3f}-{max(targets):.3f} bpp, max_bpp {record['max_bpp']:.3f}")
    if low is not None and (record["max_bpp"] < low or min(targets) > high):
        notes.append(f"the engineered codecs' rate range ({min(targets):.3f}-{record['max_bpp']:.3f} bpp) does not "
                     f"reach RL-ASC's ({low:.3f}-{high:.3f} bpp): their BD deltas against RL-ASC will be null")


def instance_notes(data: EvalSet, tasks: dict[str, Task], notes: list[str], skipped: dict[str, str]) -> None:
    """Say how detection is scored: the data set's instance boxes, or why mAP is missing."""
    if "detection" not in tasks:
        return
    if data.instances is None:
        skipped["detection mAP"] = ("the data set has no instance maps (instance_map(i)): detection mAP@0.5 / mAP against one "
                            "box per object is not computed; box_iou uses the task's label-map fallback (connected "
                            "components, touching objects merge)")
    else:
        notes.append("detection: references and mAP targets are the data set's instance boxes (one box per object, "
                     "as the env builds them); map50 / map over all images of a point (torchmetrics "
                     "MeanAveragePrecision, 100 detections per image), box_iou per image at H's score threshold")


def awgn_points(results: dict[str, list[PointResult]], primary_name: str) -> dict[str, PointResult]:
    """The RL-ASC files sent through the channel: the agent as trained, the simplified model of the first codec."""
    out = {}
    if results.get("rlasc"):
        out["rlasc"] = next((p for p in results["rlasc"] if not p.record.get("level_offset")), results["rlasc"][0])
    simplified = [p for p in results.get("rlasc_simplified", []) if p.record.get("codec") == primary_name]
    if simplified:
        out["rlasc_simplified"] = simplified[0]
    return out


def run(cfg: EvalConfig, inputs: Inputs | None = None, command: str = "") -> dict[str, Any]:
    """Run the whole evaluation; writes the JSON, the report and the figures; returns the JSON object."""
    cfg = cfg.resolved()
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    inputs = inputs if inputs is not None else load_inputs(cfg, device)
    skipped: dict[str, str] = dict(inputs.skipped)
    notes: list[str] = []
    if not inputs.codecs:
        raise SystemExit("no RL-ASC codec could be loaded: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    tasks = dict(inputs.tasks or {})
    primary_name, primary = inputs.codecs[0]
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    data = EvalSet.from_dataset(inputs.dataset, cfg.images, f"{cfg.dataset}/{cfg.split}", cfg.progress)
    if data.count < cfg.images:
        notes.append(f"the {cfg.split} split holds {data.count} images; all are used")
    cfg = replace(cfg, grid_image=min(max(cfg.grid_image, 0), data.count - 1))
    h, w = data.shape
    features = PooledFeatures(primary.perceptual, f"the codec's perceptual network phi "
                              f"({getattr(primary.perceptual, 'name', 'phi')} of codec '{primary_name}', "
                              f"stage activations global-average-pooled)")
    meter = QualityMeter(tasks, features, data.count, device, seed=cfg.seed, independent=inputs.independent)
    if meter.kid is None:
        skipped["kid"] = f"KID needs at least 4 images, got {data.count}"
    instance_notes(data, tasks, notes, skipped)
    reference = measure_originals(data, meter, cfg.batch_size)
    log("originals: " + ", ".join(f"{k} {v:.4f}" for k, v in reference.items()
                                  if isinstance(v, float) and not k.endswith("_std")))
    score_key = "miou" if "segmentation" in tasks else "psnr"
    if score_key != "miou":
        notes.append("no segmentation network: mIoU, BD-mIoU and the AWGN scores are not computed; the "
                     "engineered sweeps are refined on PSNR instead")

    results = semantic_points(inputs, tasks, data, meter, cfg, notes, skipped)
    cfg, rates = rate_range(cfg, semantic_rates(results))
    rate_range_notes(rates, notes)
    references = {name: clean_record(evaluate_reference(primary, name, data, meter, cfg.batch_size, cfg.grid_image,
                                                        cfg.progress).record) for name in REFERENCES}
    log("references: " + ", ".join(f"{k} {v['bpp']:.3f} bpp / PSNR {v['psnr']:.2f}" for k, v in references.items()))
    classic, calibration, classic_codecs = classic_points(data, meter, cfg, score_key, notes, skipped, t_start)
    results.update(classic)
    codecs_json: dict[str, list[dict[str, Any]]] = {"rlasc": [], "rlasc_simplified": []}
    for family, points in results.items():
        codecs_json[family] = [clean_record(p.record) for p in sorted(points, key=lambda p: p.bpp)]
    for name in CLASSIC_NAMES:
        codecs_json.setdefault(name, [])
    bd = bd_results(codecs_json, cfg, notes) if score_key == "miou" else {}
    task_bd = bd_by_task(codecs_json, tasks, cfg, skipped)
    settings = AwgnSettings(cfg.snrs, list(range(cfg.seed, cfg.seed + cfg.awgn_seeds)), cfg.awgn_codecs, cfg.awgn_images,
                            cfg.calibration_images, cfg.batch_size, cfg.progress)
    detection = awgn_detection_task(cfg, tasks, data, skipped)
    awgn, awgn_meta = run_awgn(settings, data, tasks.get("segmentation"), awgn_points(results, primary_name),
                               {c.name: c for c in classic_codecs}, notes, skipped, log, detection=detection)

    networks = describe_networks(inputs.codecs, tasks, features)
    networks["fid_kid_features"].update({"kid_subset_size": meter.kid_subset, "kid_subsets": 100,
                                         "fid_images": data.count})
    networks["policies"] = [{"path": p.path, "task": p.task, "lam": p.lam, "eta": p.eta, "actions": "deterministic",
                             "algo": p.meta.get("algo"), "train_episodes": p.meta.get("train_episodes")}
                            for p in inputs.policies]
    others = other_shipped_codecs([name for name, _ in inputs.codecs], (h, w))
    if others:
        notes.append(f"other shipped codec checkpoints at {h}x{w} not evaluated: {others} (pass them with --codec to "
                     "add their bitrate modes to rlasc_simplified / rlasc_fixed_*)")
    result = {
        "dataset": f"{cfg.dataset}/{cfg.split} ({cfg.preset} preset, {h}x{w})",
        "images": data.count,
        "codecs": codecs_json,
        "bd": bd,
        "bd_by_task": task_bd,
        "bd_by_task_metrics": {task: {"metric": metric, "definition": DATASET_METRICS[metric]}
                               for task, metric in {**DATASET_KEYS, "segmentation_independent": INDEPENDENT_KEY}.items()
                               if task in task_bd},
        "rate_range": rates,
        "awgn": awgn,
        "awgn_meta": awgn_meta,
        "reference": reference,
        "references": references,
        "networks": networks,
        "header_overhead_bytes": header_overhead(classic_codecs, primary, (h, w)),
        "calibration": calibration,
        "skipped": skipped,
        "notes": notes,
        "config": {**asdict(cfg), "device": str(device)},
        "command": command,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()},
    }
    figures = plots.make_all(result, out_dir)
    grid_path = plots.image_grid(data, results, primary_name, out_dir / "fig10_grid.png", cfg.grid_image)
    if grid_path is not None:
        figures["fig10"] = str(grid_path)
    result["figures"] = figures
    result["seconds"] = round(time.time() - t_start, 1)
    json_path = Path(cfg.json) if cfg.json else out_dir / "results.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    result = jsonable(result)
    json_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    report_path = out_dir / "report.md"
    report_path.write_text(report.render(result))
    log(f"wrote {json_path}, {report_path} and {len(figures)} figures in {out_dir} ({result['seconds']:.0f} s)")
    return result


def awgn_detection_task(cfg: EvalConfig, tasks: dict[str, Task], data: EvalSet, skipped: dict[str, str]
                        ) -> Task | None:
    """The detection task whose mAP@0.5 the AWGN curves also report, or None with the reason in ``skipped``."""
    if not cfg.awgn_detection:
        skipped["awgn map50"] = "--no-awgn-detection: the AWGN curves report the segmentation score only"
    elif "detection" not in tasks:
        skipped["awgn map50"] = "no detection task network"
    elif data.instances is None:
        skipped["awgn map50"] = "the data set has no instance maps: no mAP targets"
    else:
        return tasks["detection"]
    return None


class _IndexedImages:
    """The evaluation images as a data set of (float image, labels) for the environment."""

    def __init__(self, data: EvalSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.count

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.data.image(i), self.data.labels[i]


def other_shipped_codecs(used: Sequence[str], shape: tuple[int, int]) -> list[str]:
    """Shipped codec checkpoints (codec_models/weights/*.pt) for images of ``shape`` not in ``used``."""
    from codec_models.checkpoint import WEIGHTS_DIR, safe_load

    out = []
    for path in sorted(WEIGHTS_DIR.glob("*.pt")):
        if path.stem in used or str(path) in used:
            continue
        try:
            config = safe_load(path).get("config") or {}
        except (ValueError, OSError):
            continue
        if (config.get("height"), config.get("width")) == tuple(shape):
            out.append(path.stem)
    return out


def header_overhead(classic: Sequence[ClassicCodec], codec: SemanticCodec, shape: tuple[int, int]) -> dict[str, Any]:
    """Bytes of the smallest file of each codec: a flat grey image at its lowest-rate setting."""
    flat = np.full((*shape, 3), 128, np.uint8)
    out: dict[str, Any] = {}
    for c in classic:
        size = len(c.encode(flat, c.grid[0]))
        out[c.name] = {"bytes": size, "bpp": size * 8 / (shape[0] * shape[1])}
    try:
        from codec_models.bitstream import unpack

        blob = codec.compress(torch.full((3, *shape), 0.5, device=codec.device), {m: 0 for m in range(codec.num_classes)})
        parsed = unpack(blob, expected_codec_id=codec.codec_id)
        container = len(blob) - len(parsed.label_payload) - sum(len(p) for p in parsed.concept_payloads)
        out["rlasc"] = {"bytes": len(blob), "bpp": len(blob) * 8 / (shape[0] * shape[1]), "container_bytes": container,
                        "label_map_bytes": len(parsed.label_payload), "concepts": len(parsed.concept_payloads)}
    except (ValueError, RuntimeError) as exc:
        out["rlasc"] = {"error": str(exc)}
    return out


POINT_KEYS = ("bpp", "miou", "psnr", "ssim", "fid", "kid", *TASK_KEYS.values(), *DATASET_KEYS.values(), "map",
              INDEPENDENT_KEY)


def clean_record(record: dict[str, Any]) -> dict[str, Any]:
    """A point's JSON record: private objects dropped, docs/design.md's keys and every task metric's key always
    present (None where not measured; ``skipped`` says why)."""
    out = {k: v for k, v in record.items() if not k.startswith("_")}
    for key in POINT_KEYS:
        out.setdefault(key, None)
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy scalars as Python numbers, non-finite floats as None, paths and tuples plain."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def main(argv: list[str] | None = None) -> int:
    """Entry point of evaluate.py."""
    import tyro

    argv = sys.argv[1:] if argv is None else argv
    cfg = tyro.cli(EvalConfig, args=argv, description=__doc__)
    run(cfg, command="python evaluate.py " + shlex.join(argv))
    return 0
