"""Markdown report of an evaluation (the JSON object of :func:`rlasc_harness.evaluate_codecs.runner.run`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["render"]

POINT_COLUMNS = (("bpp", "bpp", 4), ("miou", "mIoU", 4), ("miou_dataset", "mIoU (dataset)", 4),
                 ("map50", "mAP@.5", 4), ("map", "mAP", 4), ("macro_ap", "macro AP", 4),
                 ("box_iou", "box IoU", 4), ("accuracy", "cls acc", 4), ("psnr", "PSNR", 2), ("ssim", "SSIM", 4),
                 ("fid", "FID", 3), ("kid", "KID", 4))
METRIC_LABELS = {"miou": "mIoU", "miou_dataset": "mIoU (dataset)", "map50": "mAP@.5", "macro_ap": "macro AP",
                 "miou_dataset_independent": "mIoU (independent segmenter)"}


def _relative_to_cwd(path: object) -> object:
    """A file path inside the working directory as a relative path (a report that names no machine's folders);
    anything else unchanged."""
    if not isinstance(path, str) or not path.startswith("/"):
        return path
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _setting(point: Mapping[str, Any]) -> str:
    if "setting" in point:
        return ", ".join(f"{k} {v}" for k, v in point["setting"].items())
    parts = []
    if point.get("codec"):
        parts.append(str(point["codec"]))
    if point.get("level") is not None:
        parts.append(f"level {point['level']}")
    if point.get("level_offset") is not None:
        k = int(point["level_offset"])
        parts.append(f"agent levels {'-' if k >= 0 else '+'}{abs(k)}")
        if point.get("level_mean") is not None:
            parts.append(f"mean level {point['level_mean']:.2f}")
    if point.get("refined"):
        parts.append("refined")
    return ", ".join(parts)


def render(result: Mapping[str, Any]) -> str:
    """The report as Markdown text."""
    cfg = result.get("config") or {}
    lines = [f"# RL-ASC evaluation: {result['dataset']}", "",
             f"- images: {result['images']} (first {result['images']} of the split), device {cfg.get('device')}, "
             f"seed {cfg.get('seed')}, {result.get('seconds', '?')} s",
             f"- command: `{result.get('command') or 'in-process'}`",
             "- rate: every bpp is `len(file) * 8 / (H * W)` of the real file (headers included) that was decoded "
             "back and measured", ""]
    skipped = result.get("skipped") or {}
    if skipped:
        lines += ["## Not evaluated", ""]
        lines += [f"- SKIPPED {name}: {reason}" for name, reason in skipped.items()]
        lines.append("")
    lines += ["## Networks and weights", ""]
    nets = result.get("networks") or {}
    shown = _relative_to_cwd
    for name, info in (nets.get("codecs") or {}).items():
        lines.append(f"- codec `{name}`: {shown(info.get('source'))} (Q = {info.get('levels')} levels, n = "
                     f"{info.get('code_channels')} channels, trained at {info.get('trained_size')})")
    for task in ("segmentation", "detection", "classification"):
        if task in nets:
            info = nets[task]
            lines.append(f"- {task} task network H: {info['network']} ({shown(info['weights'])}), "
                         f"metric {info['metric']} against the {info['reference'].replace('_', ' ')}")
    for pol in nets.get("policies") or []:
        lines.append(f"- rlasc agent: {shown(pol['path'])} ({pol.get('algo') or 'policy'}, "
                     f"{pol.get('train_episodes')} training episodes, task {pol['task']}, lambda {pol['lam']:g}, "
                     f"eta {pol['eta']:g}, deterministic actions)")
    feat = nets.get("fid_kid_features")
    if feat:
        kid = (f"; KID: {feat.get('kid_subsets')} random subsets of {feat['kid_subset_size']} images"
               if feat.get("kid_subset_size") else "; KID not computed (fewer than 4 images)")
        lines.append(f"- FID/KID: {feat['note']} ({feat['features']}-dimensional features of "
                     f"{feat.get('fid_images', '?')} originals vs as many reconstructions{kid})")
        if feat.get("bias"):
            lines.append(f"- NOTE on FID/KID: {feat['bias']}")
    lines += ["- mIoU: mean over images of the per-image mIoU of H (eq. 5-6, classes present in the reference or "
              "the prediction); `mIoU (dataset)`: torchmetrics MulticlassJaccardIndex over all pixels of all images",
              "- mAP@.5 / mAP: detection mAP@0.5 and mAP@[.5:.95] against the data set's instance boxes, over all "
              "images of a point (torchmetrics MeanAveragePrecision); macro AP: classification macro average "
              "precision over classes, over all images; box IoU / cls acc: the per-image metrics of the env (v0)"]
    rr = result.get("rate_range") or {}
    if rr.get("targets"):
        lines.append(f"- engineered codecs' target rates: {rr.get('source')}; {len(rr['targets'])} targets "
                     f"{min(rr['targets']):.3f}-{max(rr['targets']):.3f} bpp, max_bpp {rr.get('max_bpp', 0.0):.3f}")
    lines.append("")
    ref = result.get("reference") or {}
    if ref:
        lines += ["Original (uncoded) images: " + ", ".join(
            f"{label} {_fmt(ref.get(key), d)}" for key, label, d in POINT_COLUMNS if key in ref and key != "bpp"), ""]
    overhead = result.get("header_overhead_bytes") or {}
    if overhead:
        h_w = result["dataset"].rsplit(" ", 1)[-1].rstrip(")")
        lines += ["## Smallest file of each codec (flat grey image, lowest-rate setting)", "",
                  f"At {h_w} pixels, fixed headers and minimum payloads weigh heavily: the rates below are a floor "
                  "that no image of this size can go under. Headers are not stripped anywhere.", ""]
        lines += _table(["codec", "bytes", "bpp"], [[k, _fmt(v.get("bytes")), _fmt(v.get("bpp"), 3)]
                                                    for k, v in overhead.items() if "bytes" in v])
        rl = overhead.get("rlasc") or {}
        if "container_bytes" in rl:
            lines += ["", f"RL-ASC's file above: {rl['container_bytes']} bytes of container (header, section lengths, "
                          f"CRCs), {rl['label_map_bytes']} bytes of label map and {rl['concepts']} concept payloads "
                          "at level 0; every RL-ASC rate below includes its container and label map."]
        lines.append("")
    notes = result.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- NOTE: {n}" for n in notes] + [""]

    lines += ["## Operating points", ""]
    for name, points in result["codecs"].items():
        if not points:
            lines += [f"### {name}", "", f"- no point ({skipped.get(name, 'see Not evaluated')})", ""]
            continue
        present = [c for c in POINT_COLUMNS if any(p.get(c[0]) is not None for p in points)]
        rows = [[_fmt(p.get(k), d) for k, _, d in present] + [_setting(p)] for p in points]
        lines += [f"### {name}", ""] + _table([c[1] for c in present] + ["setting"], rows) + [""]

    refs = result.get("references") or {}
    if refs:
        lines += ["### Reference rows (no learning)", "",
                  "R0: the codec's label map + the mean colour of each class (3 bytes per class); R1: the label map + "
                  "the mean colour of each (class, 8x8 block) (3 bytes per pair). Real bytes that decode "
                  "(`codec_models.references`). A codec whose highest level is below R1 spends its feature bits on "
                  "nothing.", ""]
        present = [c for c in POINT_COLUMNS if any(r.get(c[0]) is not None for r in refs.values())]
        lines += _table(["reference"] + [c[1] for c in present],
                        [[name.upper()] + [_fmt(r.get(k), d) for k, _, d in present] for name, r in refs.items()])
        lines.append("")
    lines += _bd_section(result.get("bd") or {}, cfg)
    lines += _bd_task_section(result.get("bd_by_task") or {}, result.get("bd_by_task_metrics") or {}, nets)
    lines += _awgn_section(result.get("awgn") or {}, result.get("awgn_meta") or {})
    figures = result.get("figures") or {}
    if figures:
        lines += ["## Figures", ""]
        lines += [f"- {name}: [{Path(path).name}]({Path(path).name})" for name, path in figures.items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def _bd_section(bd: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any]) -> list[str]:
    if not bd:
        return ["## Bjontegaard deltas (Table II)", "", "- not computed (no mIoU)", ""]
    lines = ["## Bjontegaard deltas (Table II analogue)", "",
             f"bjontegaard package, '{cfg.get('bd_method', 'pchip')}' interpolation over the overlap of the two "
             "curves only (no extrapolation; null below an overlap of "
             f"{cfg.get('bd_min_overlap', 0.1):.0%} of their range). BD-mIoU > 0 and BD-rate < 0 mean the first codec "
             "is better. Metric: the per-image mIoU of the segmentation H (`bd` of the JSON); the per-task deltas on "
             "the data-set metrics follow.", ""]
    return lines + _bd_tables(bd, "miou", "BD-mIoU")


def _bd_tables(bd: Mapping[str, Mapping[str, Any]], metric: str, label: str, neutral: bool = False) -> list[str]:
    """One table per test codec: BD-<metric> and BD-rate against each anchor, reasons as footnotes.
    ``neutral``: the entries name their metric's keys ``bd_metric`` / ``reason_metric`` / ``metric_overlap``."""
    name = "metric" if neutral else metric
    value_key, lines = f"bd_{name}", []
    tests = sorted({k.split("_vs_")[0] for k in bd}, key=lambda t: (t != "rlasc", t))
    footnotes: list[str] = []
    for test in tests:
        pairs = {k.split("_vs_", 1)[1]: v for k, v in bd.items() if k.split("_vs_")[0] == test}
        header = [f"{test} vs"] + list(pairs)
        rows = []
        for row_label, key, fmt in ((label, value_key, "{:+.4f}"), ("BD-rate (%)", "bd_rate", "{:+.2f}")):
            row = [row_label]
            for anchor, entry in pairs.items():
                value = entry.get(key)
                if value is None:
                    reason = entry.get(f"reason_{name}" if key == value_key else "reason_rate") or "not computable"
                    text = f"{test} vs {anchor}: {reason}"
                    if text not in footnotes:
                        footnotes.append(text)
                    row.append(f"n/a [{footnotes.index(text) + 1}]")
                else:
                    overlap = entry.get("rate_overlap" if key == value_key else f"{name}_overlap")
                    row.append(fmt.format(value) + (f" (overlap {overlap:.0%})" if overlap is not None and overlap < 0.5
                                                    else ""))
            rows.append(row)
        lines += _table(header, rows) + [""]
    if footnotes:
        lines += [f"[{i}] {text}" + "  " for i, text in enumerate(footnotes, start=1)] + [""]
    return lines


def _bd_task_section(bd: Mapping[str, Mapping[str, Mapping[str, Any]]], metrics: Mapping[str, Mapping[str, str]],
                     nets: Mapping[str, Any]) -> list[str]:
    """Per task: which metric its BD deltas use, then the tables."""
    lines = ["## Bjontegaard deltas per task (data-set metrics of the task networks)", ""]
    if not bd:
        return lines + ["- not computed (no task network; see Not evaluated)", ""]
    trained = sorted({str(p.get("task")) for p in nets.get("policies") or []})
    lines += ["Same method as above, each task's curves on its own data-set metric. rlasc_simplified is the curve "
              "through the codec's uniform levels." + (f" The rlasc agent(s) were trained on: {', '.join(trained)}; "
                                                       "on the other tasks rlasc measures how that allocation transfers."
                                                       if trained else ""), ""]
    for task, table in bd.items():
        metric = (metrics.get(task) or {}).get("metric") or next(iter(table.values()), {}).get("metric", "?")
        definition = (metrics.get(task) or {}).get("definition", "")
        lines += [f"### {task}: BD on `{metric}`", ""] + ([f"Metric: {definition}.", ""] if definition else [])
        lines += _bd_tables(table, metric, f"BD-{METRIC_LABELS.get(metric, metric)}", neutral=True)
    return lines


def _awgn_section(awgn: Mapping[str, Sequence[Mapping[str, Any]]], meta: Mapping[str, Any]) -> list[str]:
    if not awgn:
        return ["## AWGN robustness (Fig. 12)", "", "- not run (see Not evaluated)", ""]
    names = list(awgn)
    lines = ["## AWGN robustness (Fig. 12 analogue)", "",
             f"BPSK over AWGN with hard decisions on the real bytes; rate matched to {meta.get('rate_matched_to')} "
             f"({_fmt(meta.get('target_bpp'), 3)} bpp); {meta.get('images')} images x seeds {meta.get('seeds')}. "
             "Score: mIoU of H; a file that fails to decode scores 0 (its share in brackets). RL-ASC decodes with "
             "strict=False.", ""]
    has_map = any(p.get("map50") is not None for n in names for p in awgn[n])
    lines += _table(["codec", "bpp", "setting", "clean score"] + (["clean mAP@.5"] if has_map else []),
                    [[n, _fmt((meta.get(n) or {}).get("bpp"), 3), str((meta.get(n) or {}).get("setting")),
                      _fmt((meta.get(n) or {}).get("clean_score"))]
                     + ([_fmt((meta.get(n) or {}).get("clean_map50"))] if has_map else []) for n in names])
    lines += ["", "Segmentation mIoU against SNR:", ""] + _awgn_table(awgn, names, "score")
    if has_map:
        lines += ["Detection mAP@0.5 against SNR (" + str((meta.get("metrics") or {}).get("map50", "")) + "):", ""]
        lines += _awgn_table(awgn, names, "map50")
    return lines


def _awgn_table(awgn: Mapping[str, Sequence[Mapping[str, Any]]], names: Sequence[str], key: str) -> list[str]:
    """SNR rows, one column per codec: ``key`` ± its std over seeds [share of failed files]."""
    rows = []
    for i, snr in enumerate(p["snr_db"] for p in awgn[names[0]]):
        row = [f"{snr:g}", f"{awgn[names[0]][i]['ber']:.2e}"]
        for n in names:
            p = awgn[n][i]
            std = p.get(f"{key}_std")
            row.append(f"{_fmt(p.get(key), 3)} ± {_fmt(std, 3)} [{p['failed_share']:.0%}]")
        rows.append(row)
    return _table(["SNR (dB)", "BER"] + list(names), rows) + [""]
