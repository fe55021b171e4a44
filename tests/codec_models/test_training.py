"""Stage-I trainer: one run of every phase, resume, checkpoints, tensorboard, DDP with gloo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tb_events import scalar_tags

from codec_models import CheckpointError, load_codec
from codec_models.checkpoint import atomic_save, safe_load
from codec_models.training import CodecTrainer, train_config_for

ROOT = Path(__file__).resolve().parents[2]


def test_all_phases_then_load_and_roundtrip(tmp_path):
    cfg = train_config_for("test", run_dir=str(tmp_path / "run"), device="cpu")
    trainer = CodecTrainer(cfg)
    before = trainer.codec.encoder.project.weight.detach().clone()
    history = trainer.run()
    assert not torch.equal(before, trainer.codec.encoder.project.weight)  # stage I changed E
    assert {"segmenter/loss", "perceptual/loss", "stage1/loss_d", "stage1/loss_p", "stage1/psnr"} <= scalar_tags(tmp_path / "run" / "tb")
    assert history["stage1/psnr"] > 0
    from codec_models.training import export_codec
    path = export_codec(trainer.codec, tmp_path / "codec.pt", {"command": "test"})
    codec = load_codec(path, device="cpu")
    image = trainer.train_set[0][0]
    data = codec.compress(image)
    assert codec.decompress(data).shape == image.shape


def test_resume_continues_from_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = train_config_for("test", run_dir=str(run), device="cpu", stage1_steps=4, checkpoint_every=2)
    CodecTrainer(cfg).run()
    state = safe_load(run / "last.pt")
    assert state["phase"] == "done"
    # Roll the saved state back into stage I at step 2 and resume: it must finish from there.
    state["phase"], state["step"] = "stage1", 2
    state["optimizers"] = {}
    atomic_save(state, run / "last.pt")
    trainer = CodecTrainer(train_config_for("test", run_dir=str(run), device="cpu", stage1_steps=4, resume=True))
    trainer.load_state()
    assert (trainer.phase, trainer.step) == ("stage1", 2)
    trainer.run()
    assert safe_load(run / "last.pt")["phase"] == "done"


def test_checkpoint_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_codec(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "rlasc-codec", "version": 999}, other)
    with pytest.raises(CheckpointError, match="version"):
        load_codec(other)
    with pytest.raises(FileNotFoundError, match="shipped codecs"):
        load_codec("no-such-codec")


@pytest.mark.timeout(300)
def test_torchrun_ddp_two_cpu_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(ROOT / "train_codec.py"), "--preset", "test", "--run-dir", str(tmp_path / "ddp"), "--device", "cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "codec.pt").is_file()
    codec = load_codec(tmp_path / "ddp" / "codec.pt", device="cpu")
    assert codec.tables is not None


def test_codec_v2_variable_rate_run_logs_validation_psnr_per_level(tmp_path):
    cfg = train_config_for("test-v2", run_dir=str(tmp_path / "run"), device="cpu")
    assert cfg.level_sampling == "variable"
    trainer = CodecTrainer(cfg)
    history = trainer.run()
    levels = trainer.codec.num_levels
    assert {f"val/psnr_level{q}" for q in range(levels)} <= scalar_tags(tmp_path / "run" / "tb")
    assert all(history[f"val/psnr_level{q}"] > 0 for q in range(levels))
    # code tables of a level hold only the channels that level sends
    tables = trainer.codec.tables
    assert [tables.channels(q) for q in range(levels)] == list(trainer.codec.config.level_channels)


def test_random_levels_variable_and_highest():
    from codec_models.training import random_levels

    present = torch.ones(400, 19, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    highest = random_levels(present, 6, "highest", 0.5, gen)
    assert bool((highest == 5).all())
    levels = random_levels(present, 6, "variable", 0.5, gen)
    assert set(levels.unique().tolist()) == set(range(6))
    uniform_rows = (levels == levels[:, :1]).all(1).float().mean().item()
    assert 0.35 < uniform_rows < 0.65  # about half the images have one level for every concept
    with pytest.raises(ValueError, match="level_sampling"):
        random_levels(present, 6, "sometimes", 0.5, gen)


def test_device_run_smoke_writes_weights_log_and_report(tmp_path):
    """The GPU session's one-command script, on the CPU with --smoke: weights, record, tensorboard, level report."""
    import json

    from codec_models.device_run import main

    assert main(["--out", str(tmp_path / "out"), "--smoke"]) == 0
    out = tmp_path / "out"
    codec = load_codec(out / "tiny-cuda.pt", device="cpu")
    assert codec.config.architecture == 2 and codec.tables is not None
    record = json.loads((out / "tiny-cuda.json").read_text())
    assert record["device"] == "cpu" and record["command"].startswith("python -m codec_models.device_run")
    assert len(record["level_report"]["levels"]) == codec.num_levels
    assert (out / "levels.md").read_text().startswith("# Quantization levels")
    assert any((out / "run" / "tb").iterdir())


def test_codec_overrides_and_init_aux(tmp_path):
    """--codec-overrides changes the codec's config; --init-aux copies F and phi and skips their phases."""
    first = CodecTrainer(train_config_for("test-v2", run_dir=str(tmp_path / "a"), device="cpu"))
    first.run()
    cfg = train_config_for("test-v2", run_dir=str(tmp_path / "b"), device="cpu", init_aux=str(tmp_path / "a" / "last.pt"),
                           codec_overrides=("encoder_norm=instance", "encoder_bound=clamp"))
    second = CodecTrainer(cfg)
    assert second.codec.config.encoder_norm_kind == "instance" and second.codec.encoder.bound == "clamp"
    second.run()
    for name in ("segmenter", "perceptual"):
        a, b = getattr(first.codec, name).state_dict(), getattr(second.codec, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert "segmenter/loss" not in second.history  # the F phase was skipped
    with pytest.raises(ValueError, match="key=value"):
        CodecTrainer(train_config_for("test-v2", run_dir=str(tmp_path / "c"), codec_overrides=("oops",)))


def level_errors(codec, dataset, count: int = 8) -> list[float]:
    """MSE of 8 images decoded with every concept at level q, for each q (eval mode, ground-truth labels)."""
    codec.eval()
    images = torch.stack([dataset[i][0] for i in range(count)])
    labels = torch.stack([dataset[i][1] for i in range(count)]).clamp_max(codec.num_classes - 1)
    with torch.no_grad():
        analysis = codec.analyse(images, labels)
        return [(codec.decode(analysis, torch.full(analysis.present.shape, q)) - images).pow(2).mean().item()
                for q in range(codec.num_levels)]


def test_block_transform_init_orders_channels_by_energy(test_dataset):
    """The PCA warm start: before any training, each finer level (more channels) reconstructs better."""
    from codec_models.codec import SemanticCodec
    from codec_models.config import codec_preset
    from codec_models.training import init_block_transform

    torch.manual_seed(0)
    codec = SemanticCodec(codec_preset("test-v2", block_basis=True))
    figures = init_block_transform(codec, test_dataset, images=16)
    assert figures["block_transform/init_psnr"] > 15
    errors = level_errors(codec, test_dataset)
    assert errors[0] > errors[1] > errors[2]
    with pytest.raises(ValueError, match="block_basis"):
        init_block_transform(SemanticCodec(codec_preset("test-v2")), test_dataset, images=4)


def test_finished_run_continues_stage1_when_asked_for_more_steps(tmp_path):
    run = tmp_path / "run"
    CodecTrainer(train_config_for("test-v2", run_dir=str(run), device="cpu", stage1_steps=2)).run()
    state = safe_load(run / "last.pt")
    assert state["phase"] == "done" and state["history"]["stage1/steps_done"] == 2
    trainer = CodecTrainer(train_config_for("test-v2", run_dir=str(run), device="cpu", stage1_steps=4, resume=True))
    history = trainer.run()
    assert history["stage1/steps_done"] == 4 and safe_load(run / "last.pt")["phase"] == "done"


def test_common_block_scale_and_linear_output_start_from_the_orthonormal_transform(test_dataset):
    """block_scale=common: one scale for every channel (equal steps); local_output=linear: the synthesis is exact."""
    from codec_models.codec import SemanticCodec
    from codec_models.config import codec_preset
    from codec_models.training import init_block_transform

    torch.manual_seed(0)
    codec = SemanticCodec(codec_preset("test-v2", block_basis=True, block_scale="common", local_output="linear",
                                       level_centers=(5, 9, 17), level_channels=(1, 2, 4)))
    init_block_transform(codec, test_dataset, images=16)
    norms = codec.encoder.patch.weight.flatten(1).norm(dim=1)
    assert torch.allclose(norms, norms[0].expand_as(norms), rtol=1e-4)  # orthonormal rows, one common scale
    errors = level_errors(codec, test_dataset)
    assert errors[0] > errors[1] > errors[2]
    with pytest.raises(ValueError, match="block_scale"):
        codec_preset("test-v2", block_scale="sometimes")
    with pytest.raises(ValueError, match="local_output"):
        codec_preset("test-v2", local_output="tanh")


def test_frozen_encoder_and_block_synthesis_do_not_move(tmp_path):
    """--freeze-encoder / --freeze-block-transform: stage I trains the decoder only; E's lr scale makes a group."""
    overrides = ("block_basis=true", "block_scale=common", "local_output=linear")
    cfg = train_config_for("test-v2", run_dir=str(tmp_path / "run"), device="cpu", codec_overrides=overrides,
                           freeze_encoder=True, freeze_block_transform=True, stage1_steps=3)
    trainer = CodecTrainer(cfg)
    trainer.phase = "stage1"
    trainer.train_stage1()  # the PCA start happens here, at step 0
    after = {k: v.clone() for k, v in trainer.codec.state_dict().items()}
    trainer.step = 0
    trainer.cfg = train_config_for("test-v2", run_dir=str(tmp_path / "run"), device="cpu", codec_overrides=overrides,
                                   freeze_encoder=True, freeze_block_transform=True, stage1_steps=3, block_init=False)
    trainer.optimizers = {}
    trainer.train_stage1()
    state = trainer.codec.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state if k.startswith("encoder.") or k.startswith("local.skip."))
    assert any(not torch.equal(state[k], after[k]) for k in state if k.startswith("local.trunk."))
    lr_cfg = train_config_for("test-v2", run_dir=str(tmp_path / "lr"), device="cpu", encoder_lr_scale=0.1, stage1_steps=1,
                              lr_decay=True)
    lr_trainer = CodecTrainer(lr_cfg)
    lr_trainer.phase = "stage1"
    lr_trainer.train_stage1()
    groups = lr_trainer.optimizers["stage1_g"].param_groups
    assert sorted(round(g["base_lr"] / lr_cfg.lr, 6) for g in groups)[0] == 0.1


def test_ground_truth_labels_in_stage1_still_train_f(tmp_path):
    """--labels ground_truth feeds the data's label maps to stage I; F still trains (it labels at inference)."""
    cfg = train_config_for("test-v2", run_dir=str(tmp_path / "run"), device="cpu", labels="ground_truth")
    trainer = CodecTrainer(cfg)
    before = {k: v.clone() for k, v in trainer.codec.segmenter.state_dict().items()}
    history = trainer.run()
    after = trainer.codec.segmenter.state_dict()
    assert "segmenter/loss" in history
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())


def test_init_codec_retrains_f_alone_and_refits_tables(tmp_path):
    """--init-codec X --perceptual-steps 0 --stage1-steps 0 --no-block-init: only F moves; tables are refitted."""
    first = CodecTrainer(train_config_for("test-v2", run_dir=str(tmp_path / "a"), device="cpu"))
    first.run()
    source = {k: v.clone() for k, v in first.codec.state_dict().items()}
    cfg = train_config_for("test-v2", run_dir=str(tmp_path / "b"), device="cpu", init_codec=str(tmp_path / "a" / "last.pt"),
                           segmenter_steps=3, perceptual_steps=0, stage1_steps=0, block_init=False, val_every=0)
    second = CodecTrainer(cfg)
    second.run()
    state = second.codec.state_dict()
    assert any(not torch.equal(state[k], source[k]) for k in state if k.startswith("segmenter.") and state[k].is_floating_point())
    assert all(torch.equal(state[k], source[k]) for k in state
               if k.startswith(("encoder.", "local.", "global_.", "attention.", "perceptual.")))
    assert second.codec.tables is not None
    with pytest.raises(ValueError, match="config differs"):
        CodecTrainer(train_config_for("test-v2", run_dir=str(tmp_path / "c"), device="cpu",
                                      init_codec=str(tmp_path / "a" / "last.pt"), codec_overrides=("code_channels=8",
                                      "level_channels=[1,4,8]"))).run()
