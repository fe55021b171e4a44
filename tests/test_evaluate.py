"""evaluate.py (agents.evaluate_codecs): engineered codecs, BD deltas, AWGN accounting, --quick end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from agents.evaluate_codecs.awgn import AwgnSubject, IsolatedDecoder, awgn_curve
from agents.evaluate_codecs.bd import bd_pair, pareto_front
from agents.evaluate_codecs.classic import (CLASSIC_CODECS, DecodeError, bits_per_pixel, get_codec, to_uint8,
                                            unavailable_reason)

H, W = 32, 64
DESIGN_POINT_KEYS = {"bpp", "miou", "psnr", "ssim", "fid", "kid"}
DESIGN_CODECS = {"rlasc", "rlasc_simplified", "jpeg", "jpeg2000", "webp", "heif", "avif"}


@pytest.fixture(scope="module")
def eval_images():
    from codec_models.streets import StreetsDataset

    return StreetsDataset("test", height=H, width=W, size=6)


@pytest.fixture(scope="module")
def small_tasks():
    """Task networks H built in-process (small, untrained): the evaluation does not need shipped weights."""
    from rlasc_env.tasks import (ClassificationTask, ClsNetH, DetectionTask, SegmentationTask, SegNetH,
                                 build_detector)

    torch.manual_seed(0)
    return {"segmentation": SegmentationTask(SegNetH(width=8, skip_width=4).eval(), network_name="SegNetH(test)"),
            "detection": DetectionTask(build_detector(widths=(4, 8, 8, 8, 8), fpn_width=32, depth=1, head_convs=1).eval(),
                                       network_name="FCOSDetH(test)", score_threshold=0.0),
            "classification": ClassificationTask(ClsNetH(widths=(4, 8)).eval(), network_name="ClsNetH(test)")}


# ------------------------------------------------------------------ engineered codecs
@pytest.mark.parametrize("name", sorted(CLASSIC_CODECS))
def test_classic_codec_roundtrip_and_rate(name, eval_images):
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"{name} unavailable here: {reason}")
    from agents.evaluate_codecs.metrics import QualityMeter
    from agents.evaluate_codecs.sweep import EvalSet, evaluate_classic

    codec = get_codec(name)
    image = to_uint8(eval_images[0][0])
    setting = codec.grid[len(codec.grid) // 2]
    data = codec.encode(image, setting)
    assert isinstance(data, bytes) and len(data) > 0
    decoded = codec.decode(data, (H, W))
    assert decoded.shape == (H, W, 3) and decoded.dtype == np.uint8
    assert bits_per_pixel(data, H, W) == len(data) * 8 / (H * W)
    # a point's rate is the mean of the real file sizes
    subset = EvalSet.from_dataset(eval_images, 2)
    point = evaluate_classic(codec, setting, subset, QualityMeter({}, None, 2), progress=False)
    assert len(point.payloads) == 2
    assert point.record["bpp"] == pytest.approx(np.mean([len(b) * 8 / (H * W) for b in point.payloads]))
    assert point.payloads[0] == data  # deterministic encoder: the measured file is the file above
    with pytest.raises(DecodeError):
        codec.decode(b"\x00not an image file" * 4, (H, W))


def test_setting_selection_targets_spacing_and_refinement():
    from agents.evaluate_codecs.sweep import refine_candidates, select_settings

    # grid index, setting, calibrated bpp (settings 0 and 1 code to almost the same size)
    table = [(0, 1, 0.400), (1, 2, 0.401), (2, 3, 0.45), (3, 4, 0.52), (4, 5, 0.60), (5, 6, 0.75), (6, 7, 0.9)]
    assert select_settings(table, (0.1, 0.3, 0.5), 0.5, 2) == [0, 3]
    assert select_settings(table, (0.1, 0.3, 0.5), 0.5, 4) == [0, 2, 3, 4]  # cheapest added, 0.401 skipped
    points = [(0, {"bpp": 0.1, "miou": 0.1}), (4, {"bpp": 0.2, "miou": 0.5}), (6, {"bpp": 0.3, "miou": 0.55})]
    assert refine_candidates(points, "miou", 0.5) == [2, 5]  # steepest gap first


def test_classic_decode_rejects_wrong_size(eval_images):
    codec = get_codec("jpeg")
    data = codec.encode(to_uint8(eval_images[0][0]), 50)
    with pytest.raises(DecodeError, match="expected"):
        codec.decode(data, (H * 2, W))


# ------------------------------------------------------------------ RL-ASC files
def test_compress_levels_matches_codec_compress(test_codec, eval_images):
    from agents.evaluate_codecs.rlasc import compress_levels

    image = eval_images[1][0]
    q = test_codec.num_levels
    level_sets = [None, {m: 0 for m in range(test_codec.num_classes)}, {m: m % q for m in range(test_codec.num_classes)}]
    assert compress_levels(test_codec, image, level_sets) == [test_codec.compress(image, lv) for lv in level_sets]


# ------------------------------------------------------------------ Bjontegaard
def _curve(rates, fn):
    return [{"bpp": r, "miou": fn(r)} for r in rates]


def test_bd_synthetic_curves_sign_and_magnitude():
    def quality(r):
        return 0.2 + 0.1 * math.log2(r / 0.05)

    anchor = _curve([0.05, 0.1, 0.2, 0.4, 0.8], quality)
    # the test codec reaches the anchor's quality at half the rate
    test = _curve([0.025, 0.05, 0.1, 0.2, 0.4], lambda r: quality(2 * r))
    out = bd_pair(test, anchor)
    assert out["method"] == "pchip"
    assert out["bd_rate"] == pytest.approx(-50.0, abs=0.5)
    assert out["bd_miou"] == pytest.approx(0.1, abs=2e-3)  # one doubling of rate = +0.1 mIoU
    back = bd_pair(anchor, test)
    assert back["bd_rate"] == pytest.approx(100.0, abs=1.0)
    assert back["bd_miou"] == pytest.approx(-0.1, abs=2e-3)
    same = bd_pair(anchor, anchor)
    assert same["bd_rate"] == pytest.approx(0.0, abs=1e-9) and same["bd_miou"] == pytest.approx(0.0, abs=1e-12)


def test_bd_no_overlap_is_null_with_reason():
    low = _curve([0.02, 0.04, 0.08], lambda r: 0.1 + r)
    high = _curve([1.0, 2.0, 4.0], lambda r: 0.5 + 0.01 * r)
    out = bd_pair(low, high)
    assert out["bd_rate"] is None and out["bd_miou"] is None
    assert "do not overlap" in out["reason_rate"] and "do not overlap" in out["reason_miou"]
    # rates overlap on ~3% of their (log) union only: too short to average over
    touching = bd_pair(_curve([0.1, 0.2, 0.4], lambda r: r), _curve([0.38, 1.0, 5.0], lambda r: r))
    assert touching["bd_miou"] is None and "overlap on" in touching["reason_miou"]
    single = bd_pair(_curve([0.1], lambda r: 0.3), high)
    assert single["bd_rate"] is None and "too few points" in single["reason_rate"]


def test_pareto_front_drops_dominated_points():
    rates, values = pareto_front([0.4, 0.1, 0.2, 0.3, 0.3], [0.5, 0.2, 0.4, 0.35, 0.45])
    assert rates.tolist() == [0.1, 0.2, 0.3, 0.4]
    assert values.tolist() == [0.2, 0.4, 0.45, 0.5]


# ------------------------------------------------------------------ AWGN
def test_awgn_counts_undecodable_files_as_zero():
    def never(_: bytes) -> torch.Tensor:
        raise DecodeError("test: always fails")

    def always(_: bytes) -> torch.Tensor:
        return torch.zeros(3, H, W)

    def ones(images, idx):
        return torch.ones(images.shape[0])

    payloads = [bytes(range(64))] * 5
    failed = awgn_curve(AwgnSubject("never", payloads, never), ones, [20.0], [0, 1], (H, W), progress=False)
    assert failed[0]["score"] == 0.0 and failed[0]["failed_share"] == 1.0
    fine = awgn_curve(AwgnSubject("always", payloads, always), ones, [20.0], [0], (H, W), progress=False)
    assert fine[0]["score"] == 1.0 and fine[0]["failed_share"] == 0.0


def test_awgn_classic_failures_score_zero(eval_images):
    """JPEG through a very noisy channel: every file that fails scores 0, so score = 1 - failed share
    when every decoded file scores 1."""
    codec = get_codec("jpeg")
    payloads = [codec.encode(to_uint8(eval_images[i][0]), 30) for i in range(4)]
    with IsolatedDecoder(timeout=20) as decoder:
        def decode(blob: bytes) -> torch.Tensor:
            return torch.from_numpy(decoder.decode("jpeg", blob, (H, W)).copy()).permute(2, 0, 1).float() / 255

        curve = awgn_curve(AwgnSubject("jpeg", payloads, decode), lambda im, idx: torch.ones(im.shape[0]),
                           [0.0, 30.0], [0, 1, 2], (H, W), progress=False)
        with pytest.raises(DecodeError):
            decoder.decode("jpeg", b"garbage" * 10, (H, W))
        assert decoder.decode("jpeg", payloads[0], (H, W)).shape == (H, W, 3)  # the child survives bad files
    noisy, clean = curve
    assert noisy["failed_share"] > 0.5  # BER 7.9% at 0 dB: JPEG headers break
    assert noisy["score"] == pytest.approx(1.0 - noisy["failed_share"])
    assert clean["failed_share"] == 0.0 and clean["score"] == 1.0 and clean["bit_errors_share"] == 0.0


# ------------------------------------------------------------------ end to end
def _random_policy(codec):
    from agents.evaluate_codecs.rlasc import LoadedPolicy
    from agents.policy import PaperPolicy
    from rlasc_env.env import observation_space

    torch.manual_seed(0)
    net = PaperPolicy(observation_space(codec, H, W), codec.num_levels, conv_channels=(4, 4), hidden=(8, 8))
    return LoadedPolicy(lambda obs, slots: net.act(obs), "in-process untrained policy (test)")


def test_policy_file_loads_with_its_env_settings(tmp_path, test_codec):
    from agents.checkpoint import save_policy
    from agents.evaluate_codecs.rlasc import load_policy
    from agents.policy import PaperPolicy
    from rlasc_env.env import observation_space

    space = observation_space(test_codec, H, W)
    net = PaperPolicy(space, test_codec.num_levels, conv_channels=(4, 4), hidden=(8, 8))
    path = save_policy(tmp_path / "policy.pt", net, {"algo": "reinforce", "task": "segmentation"})
    # train_agent.py writes lambda and eta of eq. 13 in the run folder's config.json
    (tmp_path / "config.json").write_text(json.dumps({"config": {"algo": "reinforce", "lam": 0.5, "eta": 3.0},
                                                      "task": "segmentation"}))
    loaded = load_policy(path, test_codec.num_levels)
    assert (loaded.lam, loaded.eta, loaded.task) == (0.5, 3.0, "segmentation")
    obs = {k: np.zeros((2, *v.shape), np.float32) for k, v in space.spaces.items()}
    assert loaded.act(obs, np.arange(2)).shape == (2,)
    with pytest.raises(ValueError, match="levels"):
        load_policy(path, test_codec.num_levels + 1)


def test_quick_end_to_end_writes_design_json_report_and_plots(tmp_path, test_codec, eval_images, small_tasks):
    from agents.evaluate_codecs.runner import EvalConfig, Inputs, run

    cfg = EvalConfig(quick=True, out_dir=str(tmp_path / "eval"), json=str(tmp_path / "eval.json"), device="cpu",
                     progress=False)
    run(cfg, Inputs(codecs=[("test", test_codec)], tasks=small_tasks, dataset=eval_images,
                    policies=[_random_policy(test_codec)]))
    result = json.loads((tmp_path / "eval.json").read_text())
    assert {"dataset", "images", "codecs", "bd", "awgn"} <= set(result)
    assert result["images"] == 6
    assert DESIGN_CODECS <= set(result["codecs"])
    for name in DESIGN_CODECS - {n for n in DESIGN_CODECS if unavailable_reason(n)}:
        points = result["codecs"][name]
        assert points, name
        for p in points:
            assert DESIGN_POINT_KEYS <= set(p)
            assert p["bpp"] > 0 and 0.0 <= p["miou"] <= 1.0 and p["fid"] is not None and p["kid"] is not None
    # every uniform level of the codec is a point; rlasc has one point per level offset
    levels = {p["level"] for name in result["codecs"] if name.startswith(("rlasc_simplified", "rlasc_fixed_"))
              for p in result["codecs"][name]}
    assert levels == set(range(test_codec.num_levels))
    assert sorted(p["level_offset"] for p in result["codecs"]["rlasc"]) == [0, 1]
    assert result["bd"] and all(k.split("_vs_")[0] in ("rlasc", "rlasc_simplified") for k in result["bd"])
    for entry in result["bd"].values():
        assert {"bd_rate", "bd_miou"} <= set(entry)
    assert {"rlasc", "rlasc_simplified", "jpeg", "jpeg2000"} <= set(result["awgn"])
    for curve in result["awgn"].values():
        assert [p["snr_db"] for p in curve] == [0.0, 10.0, 20.0]
        assert all(0.0 <= p["score"] <= 1.0 and 0.0 <= p["failed_share"] <= 1.0 for p in curve)
    assert "not Inception" in result["networks"]["fid_kid_features"]["note"]
    out = tmp_path / "eval"
    report = (out / "report.md").read_text()
    assert "Bjontegaard" in report and "AWGN" in report and "not Inception" in report
    # the no-learning reference rows R0 / R1, through real bytes, in the JSON and the report
    assert set(result["references"]) == {"r0", "r1"}
    assert all(r["bpp"] > 0 and r["psnr"] > 0 for r in result["references"].values())
    assert "Reference rows (no learning)" in report and "| R1 |" in report
    for fig in ("fig5_miou_vs_bpp", "fig8_fid_kid_vs_bpp", "fig9_rate_semantic_perceptual", "fig10_grid",
                "fig11_psnr_ssim_vs_bpp", "fig12_score_vs_snr"):
        assert (out / f"{fig}.png").stat().st_size > 1000, fig


def test_without_policy_rlasc_is_skipped_with_a_labelled_line(tmp_path, test_codec, eval_images, small_tasks):
    from agents.evaluate_codecs.runner import EvalConfig, Inputs, run

    cfg = EvalConfig(quick=True, out_dir=str(tmp_path), device="cpu", progress=False, classic=("jpeg2000",),
                     awgn_codecs=("rlasc", "rlasc_simplified"), snrs=(20.0,), images=4)
    result = run(cfg, Inputs(codecs=[("test", test_codec)], tasks={"segmentation": small_tasks["segmentation"]},
                             dataset=eval_images))
    assert result["codecs"]["rlasc"] == []
    assert "no trained policy" in result["skipped"]["rlasc"]
    assert "SKIPPED rlasc: no trained policy" in (tmp_path / "report.md").read_text()
    assert set(result["awgn"]) == {"rlasc_simplified"}  # rlasc absent, the simplified model still runs
    assert result["codecs"]["jpeg2000"] and result["codecs"]["rlasc_simplified"][0].get("box_iou") is None


def test_cli_flags_parse():
    import tyro

    from agents.evaluate_codecs.runner import EvalConfig

    cfg = tyro.cli(EvalConfig, args=["--codec", "tiny", "--policy", "runs/a/policy.pt", "--task-weights", "w",
                                     "--dataset", "cityscapes", "--data-root", "/data", "--split", "val",
                                     "--images", "10", "--out-dir", "o", "--json", "r.json", "--seed", "3",
                                     "--device", "cpu", "--quick"])
    assert cfg.codec == ("tiny",) and cfg.policy == ("runs/a/policy.pt",) and cfg.dataset == "cityscapes"
    assert cfg.resolved().images == 6 and cfg.resolved().snrs == (0.0, 10.0, 20.0)
