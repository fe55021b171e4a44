"""evaluate.py (rlasc_harness.evaluate_codecs): engineered codecs, BD deltas, AWGN accounting, --quick end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rlasc_harness.evaluate_codecs.awgn import AwgnSubject, IsolatedDecoder, awgn_curve
from rlasc_harness.evaluate_codecs.bd import bd_pair, pareto_front
from rlasc_harness.evaluate_codecs.classic import (CLASSIC_CODECS, DecodeError, bits_per_pixel, get_codec, to_uint8,
                                                   unavailable_reason)

H, W = 32, 64
DESIGN_POINT_KEYS = {"bpp", "miou", "psnr", "ssim", "fid", "kid"}
TASK_POINT_KEYS = {"box_iou", "accuracy", "miou_dataset", "map50", "map", "macro_ap"}
DESIGN_CODECS = {"rlasc", "rlasc_simplified", "jpeg", "jpeg2000", "webp", "heif", "avif"}


@pytest.fixture(scope="module")
def eval_images():
    from codec_models.streets import StreetsDataset

    return StreetsDataset("test", height=H, width=W, size=6)


@pytest.fixture(scope="module")
def small_tasks():
    """Task networks H built in-process (small, untrained): the evaluation does not need shipped weights."""
    from rlasc_env.tasks import ClassificationTask, ClsNetH, DetectionTask, SegmentationTask, SegNetH, build_detector

    torch.manual_seed(0)
    return {"segmentation": SegmentationTask(SegNetH(width=8, skip_width=4).eval(), network_name="SegNetH(test)"),
            "detection": DetectionTask(build_detector(widths=(4, 8, 8, 8, 8), fpn_width=32, depth=1, head_convs=1).eval(),
                                       network_name="FCOSDetH(test)", score_threshold=0.0),
            "classification": ClassificationTask(ClsNetH(widths=(4, 8)).eval(), network_name="ClsNetH(test)")}


class OracleDetector(torch.nn.Module):
    """A detector that answers, for an image it knows, that image's instance boxes (score 1): mAP@0.5 is 1
    against the instance boxes exactly, and lower against any other boxes."""

    def __init__(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.known, self.targets = images.float(), targets

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            i = next(k for k in range(len(self.known)) if torch.equal(self.known[k], image.cpu().float()))
            t = self.targets[i]
            out.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))})
        return out


@pytest.fixture(scope="module")
def eval_set(eval_images):
    from rlasc_harness.evaluate_codecs.sweep import EvalSet

    return EvalSet.from_dataset(eval_images, 6)


@pytest.fixture(scope="module")
def oracle_task(eval_set):
    from rlasc_env.tasks import DetectionTask
    from rlasc_env.tasks.detection_training import targets_from_instances

    targets = [targets_from_instances(eval_set.labels[i].numpy(), eval_set.instances[i]) for i in range(eval_set.count)]
    assert sum(len(t["labels"]) for t in targets) > 0  # the fixture images hold objects to detect
    return DetectionTask(OracleDetector(eval_set.images.float() / 255.0, targets), network_name="oracle",
                         score_threshold=0.5)


# ------------------------------------------------------------------ engineered codecs
@pytest.mark.parametrize("name", sorted(CLASSIC_CODECS))
def test_classic_codec_roundtrip_and_rate(name, eval_images):
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"{name} unavailable here: {reason}")
    from rlasc_harness.evaluate_codecs.metrics import QualityMeter
    from rlasc_harness.evaluate_codecs.sweep import EvalSet, evaluate_classic

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
    from rlasc_harness.evaluate_codecs.sweep import refine_candidates, select_settings

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


# ------------------------------------------------------------------ task metrics of a point
def test_eval_set_carries_the_data_sets_instance_maps(eval_images, eval_set):
    assert eval_set.instances is not None and eval_set.instances.shape == (6, H, W)
    assert np.array_equal(eval_set.instances[2], eval_images.instance_map(2))
    assert np.array_equal(eval_set.instance_batch([1, 3])[1], eval_images.instance_map(3))
    assert np.array_equal(eval_set.head(2).instances, eval_set.instances[:2])


def test_detection_map50_from_instance_boxes_without_label_map_fallback(eval_set, oracle_task, small_tasks):
    """The meter scores detection against the data set's instance boxes (a detector answering exactly those
    boxes gets mAP@0.5 = 1 and box IoU 1), never through the label-map fallback (which warns)."""
    import warnings

    from rlasc_env.tasks.classification import dataset_average_precision, presence_vector
    from rlasc_harness.evaluate_codecs.metrics import QualityMeter

    tasks = {"detection": oracle_task, "classification": small_tasks["classification"]}
    meter = QualityMeter(tasks, None, eval_set.count)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "detection ground truth from label maps only" would fail here
        for idx, images, labels in eval_set.batches(4):
            meter.update(images, images, labels, instances=eval_set.instance_batch(idx))
    result = meter.result()
    assert result["map50"] == pytest.approx(1.0) and result["map"] == pytest.approx(1.0)
    assert result["box_iou"] == pytest.approx(1.0)
    # macro AP is the classification module's own data-set figure over all images of the point
    x = eval_set.images.float() / 255.0
    direct = dataset_average_precision(small_tasks["classification"].probabilities(x), presence_vector(eval_set.labels))
    assert result["macro_ap"] == pytest.approx(direct["macro_ap"])
    # without instance maps: no mAP (None), and the task's label-map fallback says so
    meter.reset()
    with pytest.warns(UserWarning, match="label maps only"):
        for _, images, labels in eval_set.batches(4):
            meter.update(images, images, labels)
    assert meter.result()["map50"] is None


def test_box_iou_from_raw_detections_matches_the_box_sets(eval_set, small_tasks):
    """One forward pass of H serves box IoU and mAP: eq. 7 from H's raw detections (what the evaluation
    keeps for mAP) equals eq. 7 of the thresholded whole-pixel box sets of ``detect``."""
    from rlasc_env.tasks.detection import detection_loss

    task = small_tasks["detection"]
    x, labels = eval_set.images.float() / 255.0, eval_set.labels
    refs = task.references_for(x, labels, eval_set.instances)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ours = task.loss_of_detections(task.detections(noisy), refs, (H, W))[1]
    by_sets = torch.tensor([detection_loss(ref, det, (H, W))[1] for det, ref in zip(task.detect(noisy), refs)])
    assert torch.allclose(ours, by_sets)
    assert torch.allclose(ours, task.loss(noisy, refs)[1])
    assert ours.shape == (eval_set.count,)


# ------------------------------------------------------------------ rate range
def test_rate_range_derived_from_the_rlasc_points_and_flags_kept():
    from rlasc_harness.evaluate_codecs.runner import EvalConfig, rate_range

    rates = [0.39, 0.52, 0.74, 1.04, 1.48, 1.96]
    cfg, record = rate_range(EvalConfig(), rates)
    assert len(cfg.targets) == 15 and cfg.targets == tuple(sorted(cfg.targets))
    assert cfg.targets[0] < min(rates) and cfg.targets[-1] > max(rates)  # a bit below and above RL-ASC's range
    assert cfg.targets[0] == pytest.approx(0.39 / 1.5, abs=1e-4) and cfg.max_bpp == pytest.approx(1.96 * 1.5)
    assert record["rlasc_bpp"] == [0.39, 1.96] and "derived" in record["source"]
    quick, _ = rate_range(EvalConfig(quick=True).resolved(), rates)
    assert len(quick.targets) == 5 and quick.targets[0] < 0.39 and quick.max_bpp > 1.96
    given, record = rate_range(EvalConfig(max_bpp=0.5, targets=(0.1, 0.3)), rates)
    assert (given.max_bpp, given.targets) == (0.5, (0.1, 0.3)) and "given" in record["source"]
    only_max, _ = rate_range(EvalConfig(max_bpp=0.5), rates)
    assert only_max.targets[0] == pytest.approx(0.5 / 16, abs=1e-4) and only_max.targets[-1] == pytest.approx(0.5)
    only_targets, _ = rate_range(EvalConfig(targets=(0.2, 0.8)), rates)
    assert only_targets.max_bpp == 0.8
    with pytest.raises(ValueError, match="cannot be derived"):
        rate_range(EvalConfig(), [])


# ------------------------------------------------------------------ RL-ASC files
def test_compress_levels_matches_codec_compress(test_codec, eval_images):
    from rlasc_harness.evaluate_codecs.rlasc import compress_levels

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


def test_bd_by_task_names_each_tasks_metric_and_uses_the_uniform_level_curve():
    from rlasc_harness.evaluate_codecs.metrics import DATASET_KEYS
    from rlasc_harness.evaluate_codecs.runner import EvalConfig, bd_by_task

    def quality(r):
        return 0.2 + 0.1 * math.log2(r / 0.05)

    def points(rates, scale):
        return [{"bpp": r, "miou": quality(scale * r), "miou_dataset": quality(scale * r),
                 "map50": 0.5 * quality(scale * r), "macro_ap": 0.1 + quality(scale * r)} for r in rates]

    codecs = {"rlasc": points([0.1, 0.2, 0.4], 2.0),
              # the simplified model's single point at the highest level + the other uniform levels: one curve
              "rlasc_simplified": points([0.8], 1.0), "rlasc_fixed_0": points([0.1], 1.0),
              "rlasc_fixed_1": points([0.2, 0.4], 1.0),
              "jpeg": points([0.05, 0.1, 0.2, 0.4, 0.8], 1.0), "webp": []}
    skipped: dict[str, str] = {}
    tasks = dict.fromkeys(DATASET_KEYS, object())
    out = bd_by_task(codecs, tasks, EvalConfig(), skipped)
    assert set(out) == {"segmentation", "detection", "classification"}
    for task, table in out.items():
        assert set(table) == {"rlasc_vs_rlasc_simplified", "rlasc_vs_jpeg", "rlasc_vs_webp",
                              "rlasc_simplified_vs_jpeg", "rlasc_simplified_vs_webp"}
        for entry in table.values():
            assert entry["metric"] == DATASET_KEYS[task] and {"bd_rate", "bd_metric"} <= set(entry)
        assert table["rlasc_vs_jpeg"]["bd_rate"] == pytest.approx(-50.0, abs=0.5)  # half the rate at equal metric
        assert table["rlasc_vs_rlasc_simplified"]["bd_rate"] == pytest.approx(-50.0, abs=0.5)
        # the uniform-level curve has 4 points (a single rlasc_simplified point would give null deltas)
        assert table["rlasc_simplified_vs_jpeg"]["points"] == [4, 5]
        assert table["rlasc_simplified_vs_jpeg"]["bd_rate"] == pytest.approx(0.0, abs=1e-6)
        assert table["rlasc_vs_webp"]["bd_metric"] is None and "no point" in table["rlasc_vs_webp"]["reason_metric"]
    assert out["detection"]["rlasc_vs_jpeg"]["bd_metric"] == pytest.approx(0.05, abs=2e-3)  # map50 = half the quality
    missing = bd_by_task(codecs, {"segmentation": object()}, EvalConfig(), skipped)
    assert set(missing) == {"segmentation"} and "no detection task network" in skipped["bd_by_task detection"]


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


def test_awgn_pooled_detection_map50_counts_failed_files_as_no_detection(eval_set, oracle_task):
    """The AWGN points carry the detection mAP@0.5 over the received images: a perfect detector on files
    that all arrive scores 1; when files fail, their objects are missed."""
    from rlasc_harness.evaluate_codecs.awgn import detection_map50
    from rlasc_harness.evaluate_codecs.metrics import instance_targets_of

    images = eval_set.images.float() / 255.0
    pooled = detection_map50(oracle_task, instance_targets_of(oracle_task, eval_set.labels, eval_set.instances))
    payloads = [bytes([i]) * 64 for i in range(eval_set.count)]

    def decode(blob: bytes) -> torch.Tensor:
        if blob[0] % 2:  # odd images fail to decode
            raise DecodeError("test: odd image")
        return images[blob[0]]

    def ones(batch, idx):
        return torch.ones(batch.shape[0])

    curve = awgn_curve(AwgnSubject("half", payloads, decode), ones, [40.0], [0, 1], (H, W), progress=False,
                       pooled=pooled)
    assert curve[0]["failed_share"] == 0.5
    assert 0.0 < curve[0]["map50"] < 1.0 and curve[0]["map50_std"] == 0.0
    perfect = awgn_curve(AwgnSubject("all", payloads, lambda b: images[b[0]]), ones, [40.0], [0], (H, W),
                         progress=False, pooled=pooled)
    assert perfect[0]["map50"] == pytest.approx(1.0)


def test_awgn_reuses_clean_scores_and_pooled_outputs():
    """A file that arrives without a bit error is decoded and scored once over all seeds and SNRs, a seed whose
    files all arrive intact reuses the clean pooled figure, and scores/outputs passed in are used as they are."""
    from rlasc_harness.evaluate_codecs.awgn import PooledScore

    images = torch.rand(4, 3, H, W, generator=torch.Generator().manual_seed(0))
    payloads = [bytes([i]) * 64 for i in range(4)]
    decoded, pooled_calls = [], []

    def decode(blob: bytes) -> torch.Tensor:
        decoded.append(blob[0])
        return images[blob[0]]

    def score(batch, idx):
        return torch.tensor([float(i) for i in idx])

    def figure(outputs):
        pooled_calls.append(list(outputs))
        return float(sum(outputs))

    pooled = PooledScore("fig", lambda batch: [float(x.mean()) for x in batch], figure)
    subject = AwgnSubject("intact", payloads, decode)
    curve = awgn_curve(subject, score, [60.0, 70.0], [0, 1, 2], (H, W), progress=False, pooled=pooled)
    assert sorted(decoded) == [0, 1, 2, 3]  # 2 SNRs x 3 seeds x 4 files, all intact: each decoded once
    assert len(pooled_calls) == 1  # the all-intact figure is computed once
    assert [p["bit_errors_share"] for p in curve] == [0.0, 0.0]
    for point in curve:
        assert point["score"] == pytest.approx(1.5) and point["score_std"] == 0.0
        assert point["fig"] == pytest.approx(float(images.mean(dim=(1, 2, 3)).sum()))
    decoded.clear()
    given = awgn_curve(subject, score, [60.0], [0, 1], (H, W), progress=False, pooled=pooled,
                       clean={i: 10.0 for i in range(4)}, clean_outputs={i: 1.0 for i in range(4)})
    assert decoded == [] and given[0]["score"] == 10.0 and given[0]["fig"] == 4.0
    # clean scores without the pooled figure's outputs: the files are decoded again for their outputs
    again = awgn_curve(subject, score, [60.0], [0], (H, W), progress=False, pooled=pooled,
                       clean={i: 10.0 for i in range(4)})
    assert sorted(decoded) == [0, 1, 2, 3] and again[0]["score"] == pytest.approx(1.5)


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
    from agents.policy import PaperPolicy
    from rlasc_env.env import observation_space
    from rlasc_harness.evaluate_codecs.rlasc import LoadedPolicy

    torch.manual_seed(0)
    net = PaperPolicy(observation_space(codec, H, W), codec.num_levels, conv_channels=(4, 4), hidden=(8, 8))
    return LoadedPolicy(lambda obs, slots: net.act(obs), "in-process untrained policy (test)")


def test_policy_file_loads_with_its_env_settings(tmp_path, test_codec):
    from agents.checkpoint import save_policy
    from agents.policy import PaperPolicy
    from rlasc_env.env import observation_space
    from rlasc_harness.evaluate_codecs.rlasc import load_policy

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


def test_policy_trained_on_v4_is_played_with_the_level_preview(tmp_path, test_codec, eval_images, small_tasks):
    """evaluate.py's RL-ASC path gives a -v4 policy (stats with the level preview) the preview: a policy started at
    the preview rule plays the rule's levels; a stats width of neither id is refused."""
    from agents.baselines import PreviewRule
    from agents.checkpoint import save_policy
    from agents.policy import PaperPolicy
    from rlasc_env.engine import run_episodes
    from rlasc_env.env import EpisodeCore, build_parts, observation_space
    from rlasc_harness.evaluate_codecs.rlasc import load_policy, policy_plan

    q = test_codec.num_levels
    net = PaperPolicy(observation_space(test_codec, H, W, True), q, conv_channels=(4, 4), hidden=(8, 8),
                      preview_head=True)
    net.start_at_preview_rule(1.1, 1e4)
    path = save_policy(tmp_path / "policy.pt", net, {"algo": "reinforce", "task": "segmentation"})
    loaded = load_policy(path, q)
    assert loaded.preview
    task = small_tasks["segmentation"]
    plan = policy_plan(loaded, test_codec, "test", task, eval_images)
    core = EpisodeCore(build_parts(task=task, codec=test_codec, images=eval_images, preview=True), 6, 1.0, 10.0)
    rule = run_episodes(core, eval_images, list(range(len(eval_images))), PreviewRule(1.1, q), task.metric_name)
    assert plan.levels == [{int(c): int(lv) for c, lv in zip(r.concepts, r.levels)} for r in rule]

    odd = PaperPolicy({"features": (4, 8, 16), "mask": (1, 8, 16), "concept": (test_codec.num_classes,),
                       "stats": (11,)}, q, conv_channels=(4, 4), hidden=(8, 8))
    with pytest.raises(ValueError, match="another environment"):
        load_policy(save_policy(tmp_path / "odd.pt", odd, {"algo": "reinforce"}), q)


def test_quick_end_to_end_writes_design_json_report_and_plots(tmp_path, test_codec, eval_images, small_tasks):
    from rlasc_harness.evaluate_codecs.runner import EvalConfig, Inputs, run

    cfg = EvalConfig(quick=True, out_dir=str(tmp_path / "eval"), json=str(tmp_path / "eval.json"), device="cpu",
                     progress=False)
    run(cfg, Inputs(codecs=[("test", test_codec)], tasks=small_tasks, dataset=eval_images,
                    policies=[_random_policy(test_codec)], independent=small_tasks["segmentation"]))
    result = json.loads((tmp_path / "eval.json").read_text())
    assert {"dataset", "images", "codecs", "bd", "awgn"} <= set(result)
    # the independent scorer (here the same network as H, so it must read exactly H's data-set mIoU)
    for points in result["codecs"].values():
        for p in points:
            assert p["miou_dataset_independent"] == pytest.approx(p["miou_dataset"], abs=1e-6)
    independent = result["bd_by_task"].pop("segmentation_independent")
    assert set(independent) == set(result["bd"])
    assert all(e["metric"] == "miou_dataset_independent" for e in independent.values())
    assert result["bd_by_task_metrics"].pop("segmentation_independent")["metric"] == "miou_dataset_independent"
    assert result["images"] == 6
    assert DESIGN_CODECS <= set(result["codecs"])
    for name in DESIGN_CODECS - {n for n in DESIGN_CODECS if unavailable_reason(n)}:
        points = result["codecs"][name]
        assert points, name
        for p in points:
            assert DESIGN_POINT_KEYS | TASK_POINT_KEYS <= set(p)
            assert p["bpp"] > 0 and 0.0 <= p["miou"] <= 1.0 and p["fid"] is not None and p["kid"] is not None
            assert 0.0 <= p["map50"] <= 1.0 and 0.0 <= p["macro_ap"] <= 1.0 and p["box_iou"] is not None
    assert "map50" in result["reference"] and "macro_ap" in result["reference"]
    assert not any("map50" in k for k in result["skipped"])  # the streets data has instance maps
    # the engineered codecs' targets are derived from the RL-ASC points and span their range
    semantic = [p["bpp"] for n, pts in result["codecs"].items() if n.startswith("rlasc") for p in pts]
    targets = result["rate_range"]["targets"]
    assert min(targets) < min(semantic) and max(targets) > max(semantic) and result["config"]["max_bpp"] > max(semantic)
    assert result["rate_range"]["rlasc_bpp"] == [min(semantic), max(semantic)]
    # every uniform level of the codec is a point; rlasc has one point per level offset
    levels = {p["level"] for name in result["codecs"] if name.startswith(("rlasc_simplified", "rlasc_fixed_"))
              for p in result["codecs"][name]}
    assert levels == set(range(test_codec.num_levels))
    assert sorted(p["level_offset"] for p in result["codecs"]["rlasc"]) == [0, 1]
    assert result["bd"] and all(k.split("_vs_")[0] in ("rlasc", "rlasc_simplified") for k in result["bd"])
    for entry in result["bd"].values():
        assert {"bd_rate", "bd_miou"} <= set(entry)
    metrics = {"segmentation": "miou_dataset", "detection": "map50", "classification": "macro_ap"}
    assert set(result["bd_by_task"]) == set(metrics)
    for task, table in result["bd_by_task"].items():
        assert set(table) == set(result["bd"])  # the same pairs as Table II, on the task's metric
        assert all(e["metric"] == metrics[task] and {"bd_rate", "bd_metric"} <= set(e) for e in table.values())
        assert result["bd_by_task_metrics"][task]["metric"] == metrics[task]
    assert {"rlasc", "rlasc_simplified", "jpeg", "jpeg2000"} <= set(result["awgn"])
    for curve in result["awgn"].values():
        assert [p["snr_db"] for p in curve] == [0.0, 10.0, 20.0]
        assert all(0.0 <= p["score"] <= 1.0 and 0.0 <= p["failed_share"] <= 1.0 for p in curve)
        assert all(0.0 <= p["map50"] <= 1.0 for p in curve)  # detection mAP@0.5 against SNR
    assert "not Inception" in result["networks"]["fid_kid_features"]["note"]
    out = tmp_path / "eval"
    report = (out / "report.md").read_text()
    assert "Bjontegaard" in report and "AWGN" in report and "not Inception" in report
    for task, metric in metrics.items():
        assert f"### {task}: BD on `{metric}`" in report  # the report names each task's BD metric
    assert "Detection mAP@0.5 against SNR" in report and "| mAP@.5 |" in report
    # the no-learning reference rows R0 / R1, through real bytes, in the JSON and the report
    assert set(result["references"]) == {"r0", "r1"}
    assert all(r["bpp"] > 0 and r["psnr"] > 0 for r in result["references"].values())
    assert "Reference rows (no learning)" in report and "| R1 |" in report
    for fig in ("fig5_miou_vs_bpp", "fig8_fid_kid_vs_bpp", "fig9_rate_semantic_perceptual", "fig10_grid",
                "fig11_psnr_ssim_vs_bpp", "fig12_score_vs_snr"):
        assert (out / f"{fig}.png").stat().st_size > 1000, fig


def test_without_policy_rlasc_is_skipped_with_a_labelled_line(tmp_path, test_codec, eval_images, small_tasks):
    from rlasc_harness.evaluate_codecs.runner import EvalConfig, Inputs, run

    cfg = EvalConfig(quick=True, out_dir=str(tmp_path), device="cpu", progress=False, classic=("jpeg2000",),
                     awgn_codecs=("rlasc", "rlasc_simplified"), snrs=(20.0,), images=4)
    result = run(cfg, Inputs(codecs=[("test", test_codec)], tasks={"segmentation": small_tasks["segmentation"]},
                             dataset=eval_images))
    assert result["codecs"]["rlasc"] == []
    assert "no trained policy" in result["skipped"]["rlasc"]
    assert "SKIPPED rlasc: no trained policy" in (tmp_path / "report.md").read_text()
    assert set(result["awgn"]) == {"rlasc_simplified"}  # rlasc absent, the simplified model still runs
    assert result["codecs"]["jpeg2000"] and result["codecs"]["rlasc_simplified"][0].get("box_iou") is None
    assert "box_iou" in result["codecs"]["rlasc_simplified"][0]  # the key stays, None: no detection network
    assert set(result["bd_by_task"]) == {"segmentation"}
    assert "no detection task network" in result["skipped"]["bd_by_task detection"]
    assert "no detection task network" in result["skipped"]["awgn map50"]


def test_cli_flags_parse():
    import tyro

    from rlasc_harness.evaluate_codecs.runner import EvalConfig

    pinned = tyro.cli(EvalConfig, args=[]).resolved()  # the current id's codec, task networks and data
    assert pinned.codec == ("tiny-sf3",) and pinned.task_weights.endswith("weights/v3") and pinned.preset == "tiny"
    with pytest.raises(ValueError, match="contradict"):
        tyro.cli(EvalConfig, args=["--codec", "tiny-v0"]).resolved()
    cfg = tyro.cli(EvalConfig, args=["--env-id", "None", "--codec", "tiny", "--policy", "runs/a/policy.pt", "--task-weights", "w",
                                     "--dataset", "cityscapes", "--data-root", "/data", "--split", "val",
                                     "--images", "10", "--out-dir", "o", "--json", "r.json", "--seed", "3",
                                     "--device", "cpu", "--quick"])
    assert cfg.codec == ("tiny",) and cfg.policy == ("runs/a/policy.pt",) and cfg.dataset == "cityscapes"
    assert cfg.resolved().images == 6 and cfg.resolved().snrs == (0.0, 10.0, 20.0)
    assert cfg.max_bpp is None and cfg.resolved().targets is None  # derived from the RL-ASC points at run time
    given = tyro.cli(EvalConfig, args=["--max-bpp", "0.5", "--targets", "0.1", "0.3", "--no-awgn-detection"])
    assert given.max_bpp == 0.5 and given.targets == (0.1, 0.3) and given.awgn_detection is False


def test_report_names_files_under_the_working_directory_relatively(tmp_path, monkeypatch):
    """report.md names the codec, task weights and policy files under the working directory by relative path (a
    report committed to the repository names no machine's folders); other paths and values are left as they are."""
    from rlasc_harness.evaluate_codecs.report import _relative_to_cwd

    monkeypatch.chdir(tmp_path)
    assert _relative_to_cwd(str(tmp_path / "runs" / "policy.pt")) == "runs/policy.pt"
    assert _relative_to_cwd("/elsewhere/codec.pt") == "/elsewhere/codec.pt"
    assert _relative_to_cwd("tiny") == "tiny" and _relative_to_cwd(None) is None


def test_offset_plan_lowers_and_raises_the_agents_levels_within_the_codecs(test_codec):
    from rlasc_harness.evaluate_codecs.rlasc import LevelPlan, offset_plan

    top = test_codec.num_levels - 1
    plan = LevelPlan("rlasc", test_codec, "test", [{0: 0, 1: 1, 2: top}], {})
    assert offset_plan(plan, 1).levels == [{0: 0, 1: 0, 2: top - 1}]
    assert offset_plan(plan, -1).levels == [{0: 1, 1: min(2, top), 2: top}]
    assert offset_plan(plan, -1).extra["level_offset"] == -1 and plan.levels == [{0: 0, 1: 1, 2: top}]
