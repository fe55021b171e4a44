"""python -m rlasc_env.tasks.sensitivity: the per-level and per-class tables on a few test images."""
from __future__ import annotations

import json

import pytest
import torch

from rlasc_env.tasks.sensitivity import SensitivityConfig, main, resolve_task_names, run

IMAGES = 3


@pytest.fixture(scope="module")
def segmentation_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sensitivity")
    argv = ["--task", "segmentation", "--images", str(IMAGES), "--batch-size", "2", "--device", "cpu",
            "--json", str(out / "s.json"), "--markdown", str(out / "s.md"), "--no-progress"]
    report = main(argv)
    return report, json.loads((out / "s.json").read_text()), (out / "s.md").read_text()


def present_counts(images: int) -> torch.Tensor:
    """Per class: in how many of the first ``images`` test images the codec's label map holds it."""
    from codec_models.checkpoint import load_codec
    from codec_models.datasets import load_dataset

    codec = load_codec("tiny", device="cpu")
    data = load_dataset("streets", "test", "tiny")
    with torch.inference_mode():
        an = codec.analyse(torch.stack([data[i][0] for i in range(images)]))
    return an.present.sum(0).cpu()


def test_json_structure(segmentation_report):
    _, rep, md = segmentation_report
    assert {"config", "codec", "data", "tasks", "wall_seconds", "warnings"} <= set(rep)
    assert rep["config"]["task"] == "segmentation" and rep["config"]["images"] == IMAGES
    assert rep["codec"]["name"] == "tiny" and rep["codec"]["num_levels"] >= 2 and "meta" in rep["codec"]
    assert rep["data"]["images"] == IMAGES and rep["wall_seconds"] > 0
    seg = rep["tasks"]["segmentation"]
    assert seg["describe"]["task"] == "segmentation" and seg["metric_name"] == "miou"
    for key in ("original", "levels", "drop_highest_minus_level0", "per_class", "dataset_note"):
        assert key in seg
    assert seg["original"]["level"] is None and seg["original"]["images"] == IMAGES
    assert "## segmentation" in md and "### Per uniform level" in md and "### Per class" in md


def test_level_rows_ordered(segmentation_report):
    _, rep, _ = segmentation_report
    seg, q = rep["tasks"]["segmentation"], rep["codec"]["num_levels"]
    assert [row["level"] for row in seg["levels"]] == list(range(q))
    for row in [seg["original"]] + seg["levels"]:
        assert row["images"] == IMAGES
        assert 0.0 <= row["metric_mean"] <= 1.0
        assert row["semantic_loss_mean"] == pytest.approx(1.0 - row["metric_mean"], abs=1e-6)  # eq. 6
        if seg["dataset_metric_name"] is not None:
            assert 0.0 <= row["dataset_metric"] <= 1.0
    drop = seg["drop_highest_minus_level0"]
    assert drop["metric_mean"] == pytest.approx(seg["levels"][-1]["metric_mean"] - seg["levels"][0]["metric_mean"])


def test_per_class_counts_add_up(segmentation_report):
    _, rep, _ = segmentation_report
    rows = rep["tasks"]["segmentation"]["per_class"]
    assert sum(row["images"] for row in rows) == rep["data"]["concepts"]
    counts = present_counts(IMAGES)
    assert rep["data"]["concepts"] == int(counts.sum())
    assert {row["class_id"]: row["images"] for row in rows} == {int(c): int(n) for c, n in enumerate(counts) if n}
    means = [row["metric_change_mean"] for row in rows]
    assert means == sorted(means)
    for row in rows:
        assert 1 <= row["images"] <= IMAGES and 0.0 < row["share_mean"] <= 1.0


def test_classification_dataset_figure():
    rep = run(SensitivityConfig(task="classification", images=2, batch_size=4, device="cpu", progress=False))
    cls = rep["tasks"]["classification"]
    assert cls["metric_name"] == "accuracy" and len(cls["levels"]) == rep["codec"]["num_levels"]
    assert sum(row["images"] for row in cls["per_class"]) == rep["data"]["concepts"]
    if cls["dataset_metric_name"] is not None:
        assert cls["original"]["dataset"] and "dataset_metric" in cls["levels"][0]


def test_bad_task_is_a_clear_error(capsys):
    with pytest.raises(SystemExit, match="unknown --task 'bogus'"):
        main(["--task", "bogus"])
    with pytest.raises(ValueError, match="segmentation"):
        run(SensitivityConfig(task="bogus"))
    assert resolve_task_names("all") == ["segmentation", "detection", "classification"]


def test_detection_references_use_instance_maps(tmp_path):
    """Detection's ground truth in the report is one box per object (the data's instance maps), with no warning."""
    argv = ["--task", "detection", "--images", "2", "--batch-size", "2", "--device", "cpu",
            "--json", str(tmp_path / "d.json"), "--no-progress"]
    main(argv)
    rep = json.loads((tmp_path / "d.json").read_text())
    assert not any("connected components" in w for w in rep["warnings"])
    assert "detection" in rep["tasks"]


def test_task_weights_folder_selects_the_networks():
    """--task-weights rlasc_env/weights/v2 builds H from that folder (the -v2 set); without it, the shipped -v1 set."""
    import torch

    from rlasc_env.tasks.networks import WEIGHTS_DIR
    from rlasc_env.tasks.sensitivity import load_tasks

    v2, errors = load_tasks(["classification"], "ground_truth", torch.device("cpu"), strict=True,
                            weights_dir=str(WEIGHTS_DIR / "v2"))
    v1, _ = load_tasks(["classification"], "ground_truth", torch.device("cpu"), strict=True)
    assert not errors and v2["classification"].network_name == "SegPresenceH"
    assert v1["classification"].network_name == "ClsNetH"
