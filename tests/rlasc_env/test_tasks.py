"""Task plugins (eq. 4-9): registry, shipped task networks H, L_S and metrics, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import rlasc_env.tasks as tasks
from codec_models.checkpoint import CheckpointError, atomic_save, safe_load
from codec_models.classes import TRAIN_ID
from rlasc_env.tasks import base, make_task, register_task, registered_tasks
from rlasc_env.tasks.detection import class_box_iou, detection_loss, extract_boxes
from rlasc_env.tasks.networks import task_version
from rlasc_env.tasks.segmentation import batch_miou
from rlasc_env.tasks.training import TrainTasksConfig, evaluation_degradation, gaussian_blur, train_one

SHIPPED = ("segmentation", "detection", "classification")
B = 8


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor]:
    from codec_models.datasets import load_dataset

    ds = load_dataset("streets", split="val", preset="tiny", size=B)
    images, labels = zip(*(ds[i] for i in range(B)))
    return torch.stack(images), torch.stack(labels)


@pytest.fixture(scope="module")
def shipped() -> dict[str, dict[str, base.Task]]:
    return {name: {ref: make_task(name, reference=ref) for ref in base.REFERENCE_MODES} for name in SHIPPED}


def heavy_degradation(x: Tensor) -> Tensor:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return (gaussian_blur(evaluation_degradation(x), 3.0) + 0.25 * noise).clamp(0, 1)


# --- registry -----------------------------------------------------------------------------------

def test_registry_lists_shipped_tasks_and_rejects_unknown() -> None:
    assert set(SHIPPED) <= set(registered_tasks())
    with pytest.raises(ValueError, match="segmentation") as info:
        make_task("no-such-task")
    assert "detection" in str(info.value) and "classification" in str(info.value)


class _MeanBrightness(base.Task):
    name = "brightness"
    metric_name = "brightness"
    loss_scale = "[0, 1]"

    def references(self, images: Tensor, labels: Tensor) -> list[Tensor]:
        return list(images.mean((1, 2, 3)))

    def loss(self, x_hat: Tensor, references: list[Tensor]) -> tuple[Tensor, Tensor]:
        b = x_hat.mean((1, 2, 3)).cpu()
        return (b - torch.stack(references)).abs(), b


def test_custom_task_registration(batch) -> None:
    register_task("test_brightness",
                  lambda reference="ground_truth", device="cpu": _MeanBrightness(nn.Identity(), reference))
    try:
        task = make_task("test_brightness", reference="original")
        assert "test_brightness" in registered_tasks()
        images, labels = batch
        ls, metric = task.loss(images, task.references(images, labels))
        assert ls.shape == (B,) and torch.allclose(ls, torch.zeros(B))
        assert task.describe()["task"] == "brightness"
        with pytest.raises(ValueError, match="reference"):
            _MeanBrightness(nn.Identity(), reference="nonsense")
    finally:
        base._REGISTRY.pop("test_brightness", None)


# --- shipped tasks ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("reference", base.REFERENCE_MODES)
def test_shapes_and_describe(shipped, batch, name: str, reference: str) -> None:
    task = shipped[name][reference]
    images, labels = batch
    refs = task.references(images, labels)
    assert len(refs) == B
    ls, metric = task.loss(images, refs)
    for t in (ls, metric):
        assert t.shape == (B,) and t.dtype == torch.float32 and t.device.type == "cpu"
        assert torch.isfinite(t).all()
    info = task.describe()
    assert info["task"] == name and info["reference"] == reference and info["loss_scale"] == task.loss_scale
    assert info["weights"].endswith(f"{name}.pt")


@pytest.mark.parametrize("name", SHIPPED)
def test_original_reference_gives_minimum_loss(shipped, batch, name: str) -> None:
    task = shipped[name]["original"]
    images, labels = batch
    ls, metric = task.loss(images.clone(), task.references(images, labels))
    if name == "segmentation":
        assert torch.equal(metric, torch.ones(B)) and torch.equal(ls, torch.zeros(B))
    elif name == "detection":
        assert torch.equal(metric, torch.ones(B)) and torch.equal(ls, torch.zeros(B))
    else:
        assert torch.equal(metric, torch.ones(B)) and float(ls.max()) < 0.2


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("reference", base.REFERENCE_MODES)
def test_degraded_images_have_larger_loss(shipped, batch, name: str, reference: str) -> None:
    task = shipped[name][reference]
    images, labels = batch
    refs = task.references(images, labels)
    ls_clean, metric_clean = task.loss(images, refs)
    ls_bad, metric_bad = task.loss(heavy_degradation(images), refs)
    assert float(ls_bad.mean()) > float(ls_clean.mean())
    assert float(metric_bad.mean()) < float(metric_clean.mean())


def test_ground_truth_quality_of_shipped_networks(shipped, batch) -> None:
    """Far above trivial predictors (all-road mIoU ~0.05, prior-only presence accuracy ~0.85 on average)."""
    images, labels = batch
    seg = shipped["segmentation"]["ground_truth"]
    assert float(seg.loss(images, seg.references(images, labels))[1].mean()) > 0.25
    det = shipped["detection"]["ground_truth"]
    assert float(det.loss(images, det.references(images, labels))[1].mean()) > 0.15
    cls = shipped["classification"]["ground_truth"]
    assert float(cls.loss(images, cls.references(images, labels))[1].mean()) > 0.8


@pytest.mark.parametrize("weights_set", ["", "v2", "v3"])  # the -v1, -v2 and -v3 task networks
def test_shipped_weights_are_small_and_documented(weights_set: str) -> None:
    for name in SHIPPED:
        obj = safe_load(tasks.default_weights_path(name).parent / weights_set / f"{name}.pt")
        assert obj["format"] == tasks.TASK_FORMAT and obj["task"] == name
        assert obj["version"] == task_version(name)  # detection: 2 (FCOSDetH)
        assert sum(v.numel() * v.element_size() for v in obj["state"].values()) < 1_100_000  # -v3's width-64 H: 1.03 MB
        assert obj["meta"]["command"].startswith("python train_tasks.py") and "figures" in obj["meta"]


# --- loss definitions on hand-made data -----------------------------------------------------------

def test_batch_miou_hand_made() -> None:
    ref = torch.tensor([[[0, 0, 1, 1]], [[2, 2, 2, 255]]])
    pred = torch.tensor([[[0, 0, 1, 1]], [[2, 2, 3, 3]]])
    miou = batch_miou(pred, ref)
    assert miou[0] == 1.0
    assert miou[1] == pytest.approx((2 / 3 + 0.0) / 2)  # classes 2 (IoU 2/3) and 3 (IoU 0); ignore pixel skipped


def test_extract_boxes_hand_made() -> None:
    car, person, pole = TRAIN_ID["car"], TRAIN_ID["person"], TRAIN_ID["pole"]
    lm = np.zeros((12, 20), dtype=np.int64)  # road everywhere
    lm[2:5, 3:8] = car          # car 1: rows 2-4, cols 3-7
    lm[8:11, 12:18] = car       # car 2
    lm[1:9, 18] = pole          # a 1-pixel-wide pole, 8 pixels
    lm[0, 0] = person           # a 1-pixel person: below min_pixels, dropped
    boxes = extract_boxes(torch.from_numpy(lm))
    assert boxes == {pole: [(18, 1, 19, 9)], car: [(3, 2, 8, 5), (12, 8, 18, 11)]}
    assert extract_boxes(lm, min_pixels=1)[person] == [(0, 0, 1, 1)]
    diagonal = np.zeros((5, 5), dtype=np.int64)
    np.fill_diagonal(diagonal, car)
    assert extract_boxes(diagonal) == {car: [(0, 0, 5, 5)]}  # 8-connected


def test_detection_loss_hand_made() -> None:
    ref = {13: [(0, 0, 4, 4)], 11: [(10, 0, 12, 4)]}
    det = {13: [(2, 0, 6, 4)], 5: [(0, 8, 1, 10)]}   # car shifted, person missed, a spurious pole
    ious = class_box_iou(ref, det, (10, 16))
    assert ious == {13: pytest.approx(8 / 24), 11: 0.0}
    ls, metric = detection_loss(ref, det, (10, 16))
    assert metric == pytest.approx(8 / 48) and ls == pytest.approx(-np.log(8 / 48))
    assert detection_loss(ref, {}, (10, 16)) == (pytest.approx(-np.log(1e-3)), 0.0)
    assert detection_loss({}, det, (10, 16)) == (0.0, 1.0)


def test_presence_vector() -> None:
    lab = torch.zeros(10, 100, dtype=torch.long)
    lab[0, :4] = 5    # 0.4% -> absent
    lab[1, :] = 7     # 10% -> present
    lab[2, :] = 255   # ignored
    p = tasks.presence_vector(lab)
    assert p.shape == (1, 19) and p[0, 0] == 1 and p[0, 7] == 1 and p[0, 5] == 0 and p.sum() == 2


# --- checkpoints --------------------------------------------------------------------------------

def test_missing_weights_tell_how_to_train(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train_tasks.py --task detection"):
        make_task("detection", weights=tmp_path / "nothing.pt")


@pytest.mark.parametrize("change,match", [({"format": "rlasc-codec"}, "expected 'rlasc-task'"),
                                          ({"version": 99}, "version 99"),
                                          ({"task": "classification"}, "not 'segmentation'")])
def test_wrong_checkpoint_is_refused(tmp_path, change: dict, match: str) -> None:
    obj = safe_load(tasks.default_weights_path("segmentation"))
    path = atomic_save({**obj, **change}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=match):
        make_task("segmentation", weights=path)


def test_unreadable_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        make_task("classification", weights=path)


def test_training_round_trip(tmp_path, batch) -> None:
    images, labels = batch
    data = ((images * 255).round().to(torch.uint8), labels.to(torch.uint8))
    cfg = TrainTasksConfig(task="classification", steps=3, batch_size=4, out_dir=str(tmp_path), progress=False)
    meta = train_one("classification", cfg, data, data, torch.device("cpu"), "python train_tasks.py --steps 3")
    assert (tmp_path / "classification.json").is_file() and "val_accuracy" in meta["figures"]
    task = make_task("classification", weights=tmp_path / "classification.pt")
    assert task.meta["steps"] == 3 and task.loss(images, task.references(images, labels))[0].shape == (B,)


def test_init_from_starts_at_the_checkpoint_and_refuses_another_task(tmp_path, batch) -> None:
    """--init-from: a fine-tuning stage starts from the given weights and records them; a checkpoint of another
    task or network is refused."""
    from rlasc_env.tasks.networks import load_task_network
    from rlasc_env.versions import file_sha256

    images, labels = batch
    data = ((images * 255).round().to(torch.uint8), labels.to(torch.uint8))
    start = tasks.default_weights_path("segmentation")
    cfg = TrainTasksConfig(task="segmentation", steps=1, batch_size=2, lr=1e-9, out_dir=str(tmp_path),
                           run_dir=str(tmp_path / "run"), progress=False, test_size=0, init_from=str(start))
    meta = train_one("segmentation", cfg, data, data, torch.device("cpu"), "python train_tasks.py")
    assert meta["initialised_from"]["sha256"] == file_sha256(start)
    tuned, _, _ = load_task_network("segmentation", tmp_path / "segmentation.pt")
    shipped, _, _ = load_task_network("segmentation")
    conv = "head.weight"  # one step at lr 1e-9 leaves the weights where they started
    assert torch.allclose(tuned.state_dict()[conv], shipped.state_dict()[conv], atol=1e-6)
    wrong = TrainTasksConfig(task="segmentation", steps=1, out_dir=str(tmp_path), progress=False, test_size=0,
                             init_from=str(tasks.default_weights_path("classification")))
    with pytest.raises(CheckpointError, match="classification"):
        train_one("segmentation", wrong, data, data, torch.device("cpu"), "")


def test_presence_head_keeps_the_segmenter_and_the_share_ranking(tmp_path, batch) -> None:
    """--segmenter builds SegPresenceH: the segmenter's weights unchanged, only the calibration fitted, and the
    presence probabilities rank the images of each class as the area shares do (so AP is the share's)."""
    from rlasc_env.tasks.networks import SegPresenceH, load_task_network

    images, labels = batch
    data = ((images * 255).round().to(torch.uint8), labels.to(torch.uint8))
    seg_path = tasks.default_weights_path("segmentation")
    cfg = TrainTasksConfig(task="classification", steps=20, out_dir=str(tmp_path), run_dir=str(tmp_path / "run"),
                           progress=False, test_size=0, segmenter=str(seg_path))
    meta = train_one("classification", cfg, data, data, torch.device("cpu"), "python train_tasks.py")
    assert meta["network"] == "SegPresenceH" and meta["segmenter"]["path"] == str(seg_path)
    net, _, _ = load_task_network("classification", tmp_path / "classification.pt")
    seg, _, _ = load_task_network("segmentation", seg_path)
    assert isinstance(net, SegPresenceH)
    for name, value in seg.state_dict().items():
        assert torch.equal(net.segmenter.state_dict()[name], value), name
    assert not torch.allclose(net.bias, torch.zeros_like(net.bias))  # the calibration moved
    with torch.no_grad():
        shares, logits = net.shares(images), net(images)
    for c in range(shares.shape[1]):  # increasing per class: the same order of images
        order = torch.argsort(shares[:, c], stable=True)
        assert bool((logits[order, c].diff() >= -1e-5).all()), c
    task = make_task("classification", weights=tmp_path / "classification.pt")
    assert task.describe()["network"] == "SegPresenceH"
    with pytest.raises(ValueError, match="--task classification"):
        from rlasc_env.tasks.training import run
        run(TrainTasksConfig(task="segmentation", segmenter=str(seg_path), progress=False))


def test_presence_end_to_end_fine_tune_moves_the_segmenter_and_resumes_exactly(tmp_path, batch) -> None:
    """--presence-finetune-steps trains the whole SegPresenceH after the calibration; a run stopped half-way and
    resumed (--resume) ends on the same weights as an uninterrupted one; --width is carried into the head."""
    from rlasc_env.tasks.networks import SegNetH, load_task_network, task_payload

    images, labels = batch
    data = ((images * 255).round().to(torch.uint8), labels.to(torch.uint8))
    torch.manual_seed(0)
    wide = SegNetH(width=24)
    seg_path = tmp_path / "wide_segmentation.pt"
    atomic_save(task_payload("segmentation", wide, "SegNetH", {"width": 24}, {}, {"command": "test"}), seg_path)

    def fine_tune(name: str, steps: int, resume: bool = False) -> dict:
        cfg = TrainTasksConfig(task="classification", steps=5, batch_size=2, out_dir=str(tmp_path / name),
                               run_dir=str(tmp_path / name / "run"), progress=False, test_size=0,
                               segmenter=str(seg_path), presence_finetune_steps=steps, resume=resume, state_every=1)
        (tmp_path / name).mkdir(exist_ok=True)
        return train_one("classification", cfg, data, data, torch.device("cpu"), "python train_tasks.py")

    meta = fine_tune("whole", 4)
    assert meta["network_kwargs"]["width"] == 24 and meta["steps"] == 5 + 4 and "end-to-end" in meta["fit"]
    net, _, _ = load_task_network("classification", tmp_path / "whole" / "classification.pt")
    assert not torch.equal(net.segmenter.state_dict()["head.weight"], wide.state_dict()["head.weight"])
    from rlasc_env.tasks import training

    write = training.write_training_state

    def write_then_stop(state_path, key, step, *args, **kwargs):  # an interruption right after the step-2 state
        write(state_path, key, step, *args, **kwargs)
        if step == 2:
            raise KeyboardInterrupt

    training.write_training_state = write_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            fine_tune("split", 4)
    finally:
        training.write_training_state = write
    resumed = fine_tune("split", 4, resume=True)
    assert resumed["resumed_from_step"] == 2
    again, _, _ = load_task_network("classification", tmp_path / "split" / "classification.pt")
    for name, value in net.state_dict().items():
        assert torch.allclose(again.state_dict()[name], value, atol=1e-6), name
    with pytest.raises(ValueError, match="--segmenter"):
        from rlasc_env.tasks.training import run
        run(TrainTasksConfig(task="classification", presence_finetune_steps=3, progress=False))


def test_flip_average_is_mirror_equivariant_and_inference_only() -> None:
    """SegNetH(flip_average=True): in eval mode H(mirror(x)) = mirror(H(x)) and the argmax is that of the mean
    soft-max over both; in training mode it is the plain network."""
    from rlasc_env.tasks.networks import SegNetH

    torch.manual_seed(0)
    net = SegNetH(flip_average=True)
    plain = SegNetH()
    plain.load_state_dict(net.state_dict())
    x = torch.rand(2, 3, 32, 64)
    net.train()
    plain.train()
    assert torch.allclose(net(x), plain(x))
    net.eval()
    plain.eval()
    with torch.no_grad():
        out, mirrored = net(x), net(x.flip(-1))
        mean = (plain(x).softmax(1) + plain(x.flip(-1)).flip(-1).softmax(1)) / 2
    assert torch.allclose(mirrored, out.flip(-1), atol=1e-5)
    assert torch.allclose(out.exp(), mean, atol=1e-5)
