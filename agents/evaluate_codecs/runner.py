"""``evaluate.py``: RL-ASC against engineered codecs (Section IV: Fig. 5, 8-12, Table II).

Flow: load the evaluation images, the codec(s), the task networks H and the trained policy;
sweep every codec over its rate knob (real bytes, decoded back, measured); Bjontegaard deltas;
AWGN robustness at about equal rate; write the JSON of DESIGN.md, a Markdown report and the
figures. Anything that cannot run is named in the JSON's ``skipped`` and in the report.
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

from codec_models.bitstream import BitstreamError
from codec_models.codec import SemanticCodec
from rlasc_env.tasks import Task

from . import plots, report
from .awgn import AwgnSubject, IsolatedDecoder, awgn_curve
from .bd import BD_METHOD, bd_table
from .classic import ClassicCodec, DecodeError, available_codecs, bits_per_pixel
from .metrics import PooledFeatures, QualityMeter, per_image_miou
from .rlasc import LevelPlan, LoadedPolicy, fixed_plan, load_policy, offset_plan, policy_plan
from .sweep import (DEFAULT_TARGETS, EvalSet, PointResult, calibrate, encode_plans, evaluate_classic, evaluate_plan,
                    refine_candidates, select_settings)

__all__ = ["EvalConfig", "Inputs", "main", "run"]

CLASSIC_NAMES = ("jpeg", "jpeg2000", "webp", "avif", "heif")
TASK_NAMES = ("segmentation", "detection", "classification")


@dataclass
class EvalConfig:
    """Flags of evaluate.py (one field per flag)."""

    codec: tuple[str, ...] = ("tiny",)
    """Shipped codec name(s) or checkpoint path(s); several = several bitrate modes (e.g. n = 16/32/64)."""
    policy: tuple[str, ...] = ()
    """Trained policy file(s) of train_agent.py (run with the first codec). None given: rlasc is skipped."""
    task_weights: str | None = None
    """Folder with {segmentation,detection,classification}.pt (default: the shipped rlasc_env/weights)."""
    dataset: Literal["streets", "cityscapes"] = "streets"
    data_root: str | None = None
    """Local Cityscapes folder (dataset=cityscapes)."""
    preset: str = "tiny"
    """Data set size preset (tiny 64x128, paper 256x512)."""
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
    max_bpp: float = 0.5
    """Upper end of the rate range swept (the paper's 0-0.5 bpp)."""
    targets: tuple[float, ...] = DEFAULT_TARGETS
    """Target rates (bpp) of the engineered codecs' sweeps."""
    min_points: int = 4
    """Points per engineered codec at least (taken above max_bpp when it cannot go lower)."""
    refine: int = 3
    """Extra settings per engineered codec where its mIoU curve is steepest."""
    calibration_images: int = 4
    rlasc_offsets: tuple[int, ...] = (0, 1, 2, 3)
    """Points of rlasc: the agent's levels lowered by each offset (0 = the policy as trained)."""
    bd_method: Literal["pchip", "akima"] = BD_METHOD
    snrs: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0)
    awgn_seeds: int = 3
    awgn_codecs: tuple[str, ...] = ("rlasc", "rlasc_simplified", "jpeg", "jpeg2000")
    awgn_images: int | None = None
    """Images used for the AWGN curves (default: all evaluation images)."""
    grid_image: int = 0
    """Index (among the evaluation images) of the image of the Fig. 10 grid."""
    batch_size: int = 16
    progress: bool = True

    def resolved(self) -> "EvalConfig":
        """The configuration with --quick applied."""
        if not self.quick:
            return self
        return replace(self, images=min(self.images, 6), targets=(0.1, 0.3, 0.5), min_points=2, refine=0,
                       calibration_images=2, rlasc_offsets=(0, 1), snrs=(0.0, 10.0, 20.0), awgn_seeds=1)


@dataclass
class Inputs:
    """Objects to evaluate instead of loading them (tests inject small in-process ones)."""

    codecs: list[tuple[str, SemanticCodec]] = field(default_factory=list)
    tasks: dict[str, Task] | None = None
    dataset: Any = None
    policies: list[LoadedPolicy] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # things that could not be loaded, with the reason


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- loading
def load_inputs(cfg: EvalConfig, device: torch.device) -> Inputs:
    """Codecs, task networks, data set and policies named by the flags; what fails goes to ``skipped``."""
    from codec_models.checkpoint import load_codec
    from codec_models.datasets import load_dataset
    from rlasc_env.tasks import make_task

    inputs = Inputs()
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
                                           "comparable to published FID values"}
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
            f"{_num(rec.get('miou'))}, PSNR {_num(rec.get('psnr'))} [{time.time() - start:.0f} s]")
    return points


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _setting_text(record: dict[str, Any]) -> str:
    keys = [k for k in ("level", "level_offset") if k in record]
    return ", ".join(f"{k} {record[k]}" for k in keys) or "-"


def sweep_classic(codec: ClassicCodec, data: EvalSet, meter: QualityMeter, cfg: EvalConfig,
                  score_key: str) -> tuple[list[PointResult], list[tuple[int, Any, float]]]:
    """Points of one engineered codec: calibrated settings, then refinement where the curve is steepest."""
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


# --------------------------------------------------------------------------- AWGN
def rlasc_receiver(codec: SemanticCodec):
    """RL-ASC's receiver after a noisy channel: ``decompress(strict=False)``; a damaged header fails."""
    def decode(blob: bytes) -> Tensor:
        try:
            return codec.decompress(blob, strict=False).float().cpu()
        except BitstreamError as exc:
            raise DecodeError(f"rlasc: BitstreamError: {exc}") from None
        except (ValueError, RuntimeError, IndexError, OverflowError, KeyError) as exc:
            raise DecodeError(f"rlasc: {type(exc).__name__}: {exc}") from None
    return decode


def classic_receiver(codec: ClassicCodec, decoder: IsolatedDecoder, shape: tuple[int, int]):
    def decode(blob: bytes) -> Tensor:
        return torch.from_numpy(decoder.decode(codec.name, blob, shape).copy()).permute(2, 0, 1).float() / 255.0
    return decode


def run_awgn(cfg: EvalConfig, data: EvalSet, seg: Task | None, semantic: dict[str, PointResult],
             classic: dict[str, ClassicCodec], notes: list[str], skipped: dict[str, str]
             ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Score against SNR for RL-ASC and the engineered codecs at about RL-ASC's rate."""
    if seg is None:
        skipped["awgn"] = "no segmentation task network: the AWGN score is its mIoU"
        return {}, {}
    ref_name = "rlasc" if "rlasc" in semantic else "rlasc_simplified"
    if ref_name not in semantic:
        skipped["awgn"] = "no RL-ASC point to match the rate of"
        return {}, {}
    n = data.count if cfg.awgn_images is None else max(1, min(cfg.awgn_images, data.count))
    target = float(np.mean([bits_per_pixel(b, *data.shape) for b in semantic[ref_name].payloads[:n]]))
    sub = EvalSet(data.images[:n], data.labels[:n], data.description)
    refs = seg.references(sub.images.float() / 255.0, sub.labels)

    def score(images: Tensor, idx: Sequence[int]) -> Tensor:
        return per_image_miou(seg, images, [refs[i] for i in idx])[0]

    subjects: list[AwgnSubject] = []
    meta: dict[str, Any] = {"rate_matched_to": ref_name, "target_bpp": target, "images": n,
                            "seeds": list(range(cfg.seed, cfg.seed + cfg.awgn_seeds))}
    decoder = IsolatedDecoder()
    for name in cfg.awgn_codecs:
        if name in semantic:
            point = semantic[name]
            setting = {k: point.record[k] for k in ("codec", "level", "level_offset") if k in point.record}
            subjects.append(AwgnSubject(name, point.payloads[:n], rlasc_receiver(point.record["_codec_obj"]), setting))
        elif name in classic:
            codec = classic[name]
            g, payloads = rate_matched_files(codec, sub, target, cfg.calibration_images)
            subjects.append(AwgnSubject(name, payloads, classic_receiver(codec, decoder, data.shape),
                                        {codec.knob: codec.grid[g]}))
        elif name.startswith("rlasc"):
            skipped[f"awgn {name}"] = f"{name} was not evaluated (see its own line)"
        else:
            skipped[f"awgn {name}"] = f"{name} is not an evaluated codec"
    curves: dict[str, list[dict[str, Any]]] = {}
    seeds = meta["seeds"]
    try:
        for subject in subjects:
            bpp = float(np.mean([len(p) * 8 / (data.shape[0] * data.shape[1]) for p in subject.payloads]))
            clean = clean_scores(subject, score, cfg.batch_size)
            curves[subject.name] = awgn_curve(subject, score, cfg.snrs, seeds, data.shape, cfg.batch_size, cfg.progress,
                                              clean=dict(enumerate(clean)))
            meta[subject.name] = {"bpp": bpp, "setting": subject.setting, "clean_score": float(np.mean(clean))}
            log(f"awgn {subject.name}: {bpp:.3f} bpp, clean {np.mean(clean):.3f}, " + ", ".join(
                f"{p['snr_db']:g} dB {p['score']:.3f}" for p in curves[subject.name]))
    finally:
        meta["decoder_restarts"] = decoder.restarts
        decoder.close()
    for name in classic:
        bpp = (meta.get(name) or {}).get("bpp")
        if bpp is not None and abs(bpp - target) > 0.25 * target:
            notes.append(f"AWGN: {name} cannot come near {ref_name}'s {target:.3f} bpp at this image size; it runs at "
                         f"{bpp:.3f} bpp (its setting nearest to the target)")
    return curves, meta


def rate_matched_files(codec: ClassicCodec, data: EvalSet, target: float, calibration_images: int
                       ) -> tuple[int, list[bytes]]:
    """(grid index, files) of the setting whose mean rate over all images is nearest to ``target``:
    the three nearest settings on the calibration images are measured on every image."""
    table = sorted(calibrate(codec, data, calibration_images), key=lambda row: abs(row[2] - target))[:3]
    best = None
    for g, setting, _ in table:
        files = [codec.encode(data.rgb(i), setting) for i in range(data.count)]
        gap = abs(np.mean([bits_per_pixel(f, *data.shape) for f in files]) - target)
        if best is None or gap < best[0]:
            best = (gap, g, files)
    return best[1], best[2]


def clean_scores(subject: AwgnSubject, score, batch_size: int) -> list[float]:
    """Per-image scores of the subject's files decoded without channel noise."""
    values = []
    for start in range(0, len(subject.payloads), batch_size):
        idx = list(range(start, min(len(subject.payloads), start + batch_size)))
        images = torch.stack([subject.decode(subject.payloads[i]) for i in idx])
        values += score(images, idx).double().tolist()
    return values


# --------------------------------------------------------------------------- main flow
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
    meter = QualityMeter(tasks, features, data.count, device, seed=cfg.seed)
    for _, images, _ in data.batches(cfg.batch_size):
        meter.add_real(images)
    if meter.kid is None:
        skipped["kid"] = f"KID needs at least 4 images, got {data.count}"
    meter.reset()
    for _, images, labels in data.batches(cfg.batch_size):
        meter.update(images, images, labels)
    reference = meter.result()
    for key in ("bpp", "bpp_std"):
        reference.pop(key, None)
    # FID/KID/PSNR of the originals against themselves say nothing (KID's subsets even overlap): not reported
    log("originals: " + ", ".join(f"{k} {v:.4f}" for k, v in reference.items() if isinstance(v, float)
                                  and not k.endswith("_std") and k.split("_")[0] not in ("fid", "kid")))
    score_key = "miou" if "segmentation" in tasks else "psnr"
    if "segmentation" not in tasks:
        notes.append("no segmentation network: mIoU, BD-mIoU and the AWGN scores are not computed; the "
                     "engineered sweeps are refined on PSNR instead")

    # RL-ASC: uniform levels (simplified = highest) for every codec, then the agent
    results: dict[str, list[PointResult]] = {}
    for name, codec in inputs.codecs:
        if (codec.config.height, codec.config.width) != (h, w):
            notes.append(f"codec {name} was trained at {codec.config.height}x{codec.config.width}, the images are "
                         f"{h}x{w}")
        plans = [fixed_plan(codec, name, q, data.count) for q in reversed(range(codec.num_levels))]
        for point in sweep_semantic(plans, data, meter, cfg):
            point.record["_codec_obj"] = codec
            results.setdefault(point.family, []).append(point)
    policies = list(inputs.policies)
    if not policies:
        skipped["rlasc"] = ("no trained policy file given (--policy PATH from train_agent.py): RL-ASC with the "
                            "agent is not evaluated")
    for policy in policies:
        task = tasks.get(policy.task)
        if task is None:
            skipped[f"rlasc {policy.path}"] = f"the policy was trained on task {policy.task!r}, whose network is missing"
            continue
        subset = _IndexedImages(data)
        log(f"rlasc: playing {policy.path} on {data.count} images")
        base = policy_plan(policy, primary, primary_name, task, subset, cfg.batch_size)
        plans = [offset_plan(base, k) for k in cfg.rlasc_offsets]
        for point in sweep_semantic(plans, data, meter, cfg):
            point.record["_codec_obj"] = primary
            results.setdefault("rlasc", []).append(point)
    if any(k for k in cfg.rlasc_offsets if k) and "rlasc" in results:
        notes.append("rlasc points with level_offset k > 0 apply the agent's per-concept levels lowered by k "
                     "(clamped at the coarsest level): the agent's allocation at lower bitrate modes of the same "
                     "codec; the k = 0 point is the policy as trained")

    # engineered codecs
    classic_codecs, unavailable = available_codecs(cfg.classic)
    skipped.update({name: reason for name, reason in unavailable.items()})
    calibration: dict[str, Any] = {}
    for codec in classic_codecs:
        points, table = sweep_classic(codec, data, meter, cfg, score_key)
        results[codec.name] = points
        calibration[codec.name] = {"knob": codec.knob, "library": codec.library,
                                   "lowest_bpp": min(row[2] for row in table),
                                   "table": [[row[1], round(row[2], 5)] for row in table]}
        if min(row[2] for row in table) > cfg.max_bpp:
            notes.append(f"{codec.name} cannot code these {h}x{w} images below {min(row[2] for row in table):.3f} bpp "
                         f"(headers and minimum payload); its points lie above {cfg.max_bpp} bpp")
        log(f"{codec.name} [{time.time() - t_start:.0f} s]: " + ", ".join(
            f"{p.bpp:.3f} bpp / {score_key} {_num(p.record.get(score_key))}" for p in points))

    # JSON curves
    codecs_json: dict[str, list[dict[str, Any]]] = {"rlasc": [], "rlasc_simplified": []}
    for family, points in results.items():
        codecs_json[family] = [clean_record(p.record) for p in sorted(points, key=lambda p: p.bpp)]
    for name in CLASSIC_NAMES:
        codecs_json.setdefault(name, [])

    # Bjontegaard deltas: rlasc and the simplified (uniform-level) curve against every other codec
    uniform = [rec for fam, recs in codecs_json.items() if fam == "rlasc_simplified" or fam.startswith("rlasc_fixed_")
               for rec in recs]
    curves = {k: v for k, v in codecs_json.items() if not k.startswith("rlasc_fixed_")}
    curves["rlasc_simplified"] = uniform
    anchors = [k for k in curves if k != "rlasc"]
    bd = bd_table(curves, ["rlasc", "rlasc_simplified"], anchors, "miou", cfg.bd_method) if score_key == "miou" else {}
    notes.append(f"BD deltas: bjontegaard package, '{cfg.bd_method}' interpolation, curves reduced to their Pareto "
                 "front; the rlasc_simplified curve is every uniform-level point (rlasc_simplified + rlasc_fixed_*: "
                 "no agent, equal precision for every concept)")

    # AWGN (Fig. 12)
    semantic_refs = {}
    if results.get("rlasc"):
        semantic_refs["rlasc"] = next((p for p in results["rlasc"] if not p.record.get("level_offset")), results["rlasc"][0])
    simplified = [p for p in results.get("rlasc_simplified", []) if p.record.get("codec") == primary_name]
    if simplified:
        semantic_refs["rlasc_simplified"] = simplified[0]
    classic_by_name = {c.name: c for c in classic_codecs}
    awgn, awgn_meta = run_awgn(cfg, data, tasks.get("segmentation"), semantic_refs, classic_by_name, notes, skipped)

    # headers and figures
    overhead = header_overhead(classic_codecs, primary, (h, w))
    networks = describe_networks(inputs.codecs, tasks, features)
    networks["fid_kid_features"].update({"kid_subset_size": meter.kid_subset, "kid_subsets": 100,
                                         "fid_images": data.count})
    networks["policies"] = [{"path": p.path, "task": p.task, "lam": p.lam, "eta": p.eta, "actions": "deterministic",
                             "algo": p.meta.get("algo"), "train_episodes": p.meta.get("train_episodes")}
                            for p in policies]
    others = other_shipped_codecs([name for name, _ in inputs.codecs], (h, w))
    if others:
        notes.append(f"other shipped codec checkpoints at {h}x{w} not evaluated: {others} (pass them with --codec to "
                     "add their bitrate modes to rlasc_simplified / rlasc_fixed_*)")
    result = {
        "dataset": f"{cfg.dataset}/{cfg.split} ({cfg.preset} preset, {h}x{w})",
        "images": data.count,
        "codecs": codecs_json,
        "bd": {k: {kk: vv for kk, vv in v.items()} for k, v in bd.items()},
        "awgn": awgn,
        "awgn_meta": awgn_meta,
        "reference": {k: v for k, v in reference.items() if k.split("_")[0] not in ("fid", "kid", "psnr")},
        "networks": networks,
        "header_overhead_bytes": overhead,
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


def clean_record(record: dict[str, Any]) -> dict[str, Any]:
    """A point's JSON record: private objects dropped, DESIGN's keys always present."""
    out = {k: v for k, v in record.items() if not k.startswith("_")}
    for key in ("bpp", "miou", "psnr", "ssim", "fid", "kid"):
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
