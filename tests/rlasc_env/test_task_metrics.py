"""Data-set figures of the task networks H (mIoU, macro AP), resumable and deterministic training."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import rlasc_env.tasks.training as training
from codec_models.checkpoint import CheckpointError, atomic_save, safe_load
from rlasc_env.tasks import ClsNetH, load_task_network, make_task
from rlasc_env.tasks.classification import dataset_average_precision
from rlasc_env.tasks.segmentation import dataset_iou
from rlasc_env.tasks.training import TrainTasksConfig, train_one

B = 6


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    from codec_models.datasets import load_dataset

    ds = load_dataset("streets", split="val", preset="tiny", size=B)
    images, labels = zip(*(ds[i] for i in range(B)))
    return (torch.stack(images) * 255).round().to(torch.uint8), torch.stack(labels).to(torch.uint8)


def test_dataset_iou_hand_made() -> None:
    ref = torch.tensor([[[0, 0, 1, 1]], [[2, 2, 2, 255]]])
    pred = torch.tensor([[[0, 0, 1, 0]], [[2, 2, 3, 3]]])
    out = dataset_iou(pred, ref, num_classes=5)
    iou = out["per_class_iou"]
    # over all pixels: class 0 tp 2 / union 3, class 1 1/2, class 2 2/3, class 3 0/1 (ignored pixel skipped)
    assert iou[:4] == pytest.approx([2 / 3, 1 / 2, 2 / 3, 0.0])
    assert math.isnan(iou[4])  # absent from reference and prediction: excluded
    assert out["miou"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3 + 0.0) / 4)
    assert out["pixels"] == [2, 2, 3, 0, 0]


def test_dataset_average_precision_hand_made() -> None:
    probs = torch.tensor([[0.9, 0.2, 0.5], [0.8, 0.6, 0.4], [0.1, 0.7, 0.3], [0.3, 0.1, 0.2]])
    target = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    out = dataset_average_precision(probs, target)
    # class 0: ranks 0.9(+) 0.8(+) 0.3(+) above 0.1(-) -> AP 1; class 1: 0.7(-) then 0.6(+) -> AP 1/2
    assert out["per_class_ap"][:2] == pytest.approx([1.0, 0.5])
    assert math.isnan(out["per_class_ap"][2]) and out["absent_classes"] == [2]
    assert out["macro_ap"] == pytest.approx(0.75) and out["positives"] == [3, 1, 0]


def test_old_checkpoint_kwargs_still_load_and_foreign_ones_are_refused(tmp_path) -> None:
    net = ClsNetH(map_presence=True)
    payload = training.task_payload("classification", net, "ClsNetH", {"map_presence": True}, {}, {"command": "x"})
    path = atomic_save(payload, tmp_path / "classification.pt")
    loaded, _, _ = load_task_network("classification", path)
    assert loaded.map_presence
    wrong = {**payload, "config": {**payload["config"], "network_kwargs": {}}}  # state with extra parameters
    with pytest.raises(CheckpointError, match="do not fit"):
        load_task_network("classification", atomic_save(wrong, tmp_path / "wrong.pt"))
    with pytest.raises(CheckpointError, match="version 0"):
        load_task_network("classification", atomic_save({**payload, "version": 0}, tmp_path / "old.pt"))


def _cfg(tmp_path, name: str, task: str, **kw) -> TrainTasksConfig:
    return TrainTasksConfig(task=task, steps=4, batch_size=2, out_dir=str(tmp_path / name),
                            run_dir=str(tmp_path / name / "run"), progress=False, **kw)


@pytest.mark.parametrize("task,figure", [("segmentation", "test_miou"), ("classification", "test_macro_ap")])
def test_training_smoke_reports_dataset_figures(tmp_path, data, task: str, figure: str) -> None:
    meta = train_one(task, _cfg(tmp_path, "a", task), data, data, torch.device("cpu"), "python train_tasks.py",
                     test=data)
    figures = meta["figures"]
    assert 0.0 <= figures[figure] <= 1.0 and 0.0 <= figures[figure.replace("test_", "test_degraded_")] <= 1.0
    per_class = figures["test_per_class_iou" if task == "segmentation" else "test_per_class_ap"]
    assert len(per_class) == 19 and "road" in per_class
    assert meta["data_version"] is not None and meta["steps"] == 4 and "wall_seconds" in meta
    assert (tmp_path / "a" / "run" / task / "state.pt").is_file()
    assert any((tmp_path / "a" / "run" / task / "tb").iterdir())
    assert make_task(task, weights=tmp_path / "a" / f"{task}.pt").meta["figures"][figure] == figures[figure]


def _state(path) -> dict[str, Tensor]:
    return safe_load(path)["state"]


def test_resume_and_task_independence_give_identical_weights(tmp_path, data, monkeypatch) -> None:
    dev = torch.device("cpu")
    train_one("segmentation", _cfg(tmp_path, "full", "segmentation"), data, data, dev, "")
    # 'all' order: classification first, then segmentation -> same segmentation weights
    train_one("classification", _cfg(tmp_path, "all", "classification"), data, data, dev, "")
    train_one("segmentation", _cfg(tmp_path, "all", "segmentation"), data, data, dev, "")
    full = _state(tmp_path / "full" / "segmentation.pt")
    for k, v in _state(tmp_path / "all" / "segmentation.pt").items():
        assert torch.equal(v, full[k]), k
    # interrupted after the state written at step 2, then resumed
    calls = {"n": 0}
    original = training.augment_batch

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "augment_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        train_one("segmentation", _cfg(tmp_path, "cut", "segmentation", state_every=2), data, data, dev, "")
    monkeypatch.setattr(training, "augment_batch", original)
    assert safe_load(tmp_path / "cut" / "run" / "segmentation" / "state.pt")["step"] == 2
    meta = train_one("segmentation", _cfg(tmp_path, "cut", "segmentation", state_every=2, resume=True), data, data,
                     dev, "")
    assert meta["resumed_from_step"] == 2
    for k, v in _state(tmp_path / "cut" / "segmentation.pt").items():
        assert torch.equal(v, full[k]), k
    with pytest.raises(ValueError, match="cannot resume"):
        train_one("segmentation", _cfg(tmp_path, "cut", "segmentation", resume=True, seed=1), data, data, dev, "")
