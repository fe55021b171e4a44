"""Stage-I trainer: one run of every phase, resume, checkpoints, tensorboard, DDP with gloo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codec_models import CheckpointError, load_codec
from codec_models.checkpoint import atomic_save, safe_load
from codec_models.training import CodecTrainer, train_config_for
from tb_events import scalar_tags

ROOT = Path(__file__).resolve().parents[1]


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
