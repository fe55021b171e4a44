"""Stage III (rlasc_harness/stage3.py): joint fine-tuning of E, decoder, D and the agent on the "test" preset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tb_events import scalar_tags

from agents.checkpoint import load_policy, save_policy
from agents.policy import PaperPolicy
from codec_models import CheckpointError, load_codec
from codec_models.checkpoint import safe_load
from codec_models.training import export_codec, fit_code_tables, train_config_for
from rlasc_env.engine import reset_slots
from rlasc_env.env import observation_space
from rlasc_env.tasks import make_task
from rlasc_harness.stage3 import STATE_FILE, Stage3Trainer, task_training_loss


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, test_codec):
    """A stage-I-like codec file (with D) and a freshly initialised, saved REINFORCE policy."""
    folder = tmp_path_factory.mktemp("stage3-inputs")
    codec_path = export_codec(test_codec, folder / "codec.pt", {"command": "test"})
    torch.manual_seed(0)
    policy = PaperPolicy(observation_space(test_codec, 32, 64), test_codec.num_levels, (8, 8), (16, 16), 0.1)
    policy_path = save_policy(folder / "policy.pt", policy, {"task": "segmentation", "train_episodes": 5})
    return {"codec": str(codec_path), "policy": str(policy_path)}


def config(run_dir: Path, inputs: dict, **overrides):
    kwargs = dict(run_dir=str(run_dir), device="cpu", stage3=True, codec=inputs["codec"], policy=inputs["policy"],
                  stage3_agent_hp=("episodes_per_update=2", "rollouts_per_image=2"))
    return train_config_for("test", **{**kwargs, **overrides})


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_stage3_end_to_end_export_and_reload(tmp_path, inputs):
    export = tmp_path / "out" / "codec-s3.pt"
    trainer = Stage3Trainer(config(tmp_path / "run", inputs, export=str(export)))
    assert trainer.engine.codec is trainer.codec  # the env runs the weights being trained
    assert trainer.sources["discriminator"] == "loaded"
    encoder, disc, policy = _params(trainer.codec.encoder), _params(trainer.codec.discriminator), \
        _params(trainer.agent.policy)
    history = trainer.run()
    paths = trainer.export(["--stage3"])
    trainer.close()

    assert trainer.step == 2 and trainer.agent.stats.updates == 2 and trainer.agent.stats.episodes == 4
    assert any(not torch.equal(v, trainer.codec.encoder.state_dict()[k]) for k, v in encoder.items())  # E changed
    assert any(not torch.equal(v, trainer.codec.discriminator.state_dict()[k]) for k, v in disc.items())
    assert any(not torch.equal(v, trainer.agent.policy.state_dict()[k]) for k, v in policy.items())
    assert np.isfinite(history["stage3/loss_task"]) and history["stage3/loss_task"] > 0
    assert {"stage3/loss_d", "stage3/loss_p", "stage3/loss_task", "stage3/psnr", "stage3/agent_return",
            "stage3/policy_return"} <= scalar_tags(tmp_path / "run" / "tb")
    state = safe_load(tmp_path / "run" / STATE_FILE)
    assert state["step"] == 2 and state["agent"]["stats"]["updates"] == 2

    # env episodes after the updates use the current weights (no stale copy, no stale cache)
    core = trainer.engine.core("train", 1)
    image, _ = trainer.train_set[0]
    reset_slots(core, trainer.train_set, np.array([0]), [0])
    with torch.no_grad():
        analysis = trainer.codec.analyse(image.unsqueeze(0))
        x0 = trainer.codec.decode(analysis, torch.zeros(1, trainer.codec.num_classes, dtype=torch.long))
    assert torch.allclose(core.x_hat[:1], x0, atol=1e-5)

    # exported codec: the fine-tuned weights, tables refitted for the new E, real bytes round trip
    codec = load_codec(export, device="cpu")
    assert paths["export"] == export and (tmp_path / "run" / "codec.pt").is_file()
    assert torch.equal(codec.encoder.project.weight, trainer.codec.encoder.project.weight.cpu())
    assert codec.meta["stage"] == 3
    refit = load_codec(export, device="cpu")
    fit_code_tables(refit, trainer.train_set, trainer.cfg.table_images, trainer.cfg.batch_size, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(codec.tables.state_dict().values(), refit.tables.state_dict().values()))
    levels = {m: 0 for m in range(codec.num_classes)}
    data = codec.compress(image, levels)
    assert isinstance(data, bytes) and len(data) > 0
    decoded = codec.decompress(data)
    with torch.no_grad():
        reference = codec.decode(codec.analyse(image.unsqueeze(0)), torch.zeros(1, codec.num_classes, dtype=torch.long))
    assert torch.allclose(decoded, reference[0], atol=1e-5)

    # the fine-tuned policy reloads, next to the run and next to --export
    for path in (tmp_path / "run" / "policy.pt", export.with_suffix(".policy.pt")):
        loaded, meta = load_policy(path)
        assert meta["stage"] == 3 and meta["train_episodes"] == 5 + 4
        assert all(torch.equal(v, trainer.agent.policy.state_dict()[k].cpu()) for k, v in loaded.state_dict().items())


def test_stage3_resume_matches_an_uninterrupted_run(tmp_path, inputs):
    common = dict(checkpoint_every=2, stage3_refit_every=2)
    straight = Stage3Trainer(config(tmp_path / "a", inputs, stage3_steps=3, **common))
    straight.run()
    straight.close()

    first = Stage3Trainer(config(tmp_path / "b", inputs, stage3_steps=2, **common))
    first.run()
    first.close()
    again = Stage3Trainer(config(tmp_path / "b", inputs, stage3_steps=2, resume=True, **common))
    assert (again.step, again.agent.stats.updates, again.agent.stats.episodes) == (2, 2, 4)
    assert again.opt_g.state_dict()["state"] and again.agent.optimizer.state_dict()["state"]
    assert all(torch.equal(v, again.codec.state_dict()[k]) for k, v in first.codec.state_dict().items())
    again.close()
    resumed = Stage3Trainer(config(tmp_path / "b", inputs, stage3_steps=3, resume=True, **common))
    resumed.run()
    resumed.close()

    assert (resumed.step, resumed.agent.stats.updates) == (3, 3)
    for a, b in ((straight.codec, resumed.codec), (straight.agent.policy, resumed.agent.policy)):
        for k, v in a.state_dict().items():
            assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k


def test_stage3_input_errors(tmp_path, inputs, test_codec):
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "last.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="stage-I run"):
        Stage3Trainer(config(tmp_path / "stage1", inputs))
    with pytest.raises(ValueError, match="needs --policy"):
        Stage3Trainer(config(tmp_path / "r1", inputs, policy=None))
    with pytest.raises(FileNotFoundError, match="train_agent.py"):
        Stage3Trainer(config(tmp_path / "r2", inputs, policy=str(tmp_path / "missing.pt")))
    with pytest.raises(CheckpointError, match="codec checkpoint"):
        Stage3Trainer(config(tmp_path / "r3", inputs, policy=inputs["codec"]))
    other = tmp_path / "other.pt"
    torch.save({"format": "rlasc-agent-policy", "version": 99}, other)
    with pytest.raises(CheckpointError, match="version"):
        Stage3Trainer(config(tmp_path / "r4", inputs, policy=str(other)))
    wrong = PaperPolicy(observation_space(test_codec, 64, 128), test_codec.num_levels, (8, 8), (16, 16))
    save_policy(tmp_path / "wrong.pt", wrong)
    with pytest.raises(ValueError, match="another codec"):
        Stage3Trainer(config(tmp_path / "r5", inputs, policy=str(tmp_path / "wrong.pt")))
    with pytest.raises(FileNotFoundError, match="shipped codecs"):
        Stage3Trainer(config(tmp_path / "r6", inputs, codec="no-such-codec"))


def train_codec_main(argv):
    """main() of the train_codec.py script, which dispatches stage III (the script layer)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_codec_script", Path(__file__).resolve().parents[2] / "train_codec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_cli_flags(tmp_path, inputs):
    run = tmp_path / "cli"
    argv = ["--preset", "test", "--stage3", "--codec", inputs["codec"], "--policy", inputs["policy"], "--device", "cpu",
            "--run-dir", str(run), "--stage3-steps", "1", "--stage3-agent-hp", "episodes_per_update=2", "rollouts_per_image=2",
            "--stage3-levels", "argmax", "--stage3-task-weight", "0.5"]
    assert train_codec_main(argv) == 0
    assert {"codec.pt", "codec.json", "policy.pt", STATE_FILE} <= {p.name for p in run.iterdir()}
    saved = safe_load(run / STATE_FILE)["train_config"]
    assert saved["stage3_levels"] == "argmax" and saved["stage3_task_weight"] == 0.5
    with pytest.raises(SystemExit, match="--stage3"):
        train_codec_main(["--preset", "test", "--policy", inputs["policy"], "--run-dir", str(tmp_path / "x")])


def test_task_training_loss_reaches_x_hat(test_dataset):
    images = torch.stack([test_dataset[i][0] for i in range(2)])
    labels = torch.stack([test_dataset[i][1] for i in range(2)])
    for name in ("segmentation", "detection", "classification"):
        task = make_task(name, device="cpu")
        x_hat = (images * 0.8 + 0.1).requires_grad_(True)
        loss = task_training_loss(task, x_hat, images, labels)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss), name
        assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0, name
        assert all(p.grad is None for p in task.network.parameters()), name  # H stays frozen
    with pytest.raises(TypeError, match="training_loss"):
        task_training_loss(make_task("pixel-test"), images, images, labels)


def test_shipped_stage3_codec_and_agent_match_their_record_and_play():
    """codec_models/weights/tiny-stage3.pt and its agent: the files are the ones the record names (sha256), the
    codec is -v1's codec v2 fine-tuned (same layout, other weights) and the agent plays an episode on it."""
    import json

    from codec_models import load_dataset
    from rlasc_env import SemanticCodingEnv
    from rlasc_env.versions import file_sha256

    root = Path(__file__).resolve().parents[2]
    codec_path = root / "codec_models" / "weights" / "tiny-stage3.pt"
    policy_path = root / "agents" / "weights" / "tiny-stage3-reinforce-segmentation.pt"
    if not (codec_path.is_file() and policy_path.is_file()):
        pytest.skip("shipped stage III codec or agent absent (see codec_models/weights/tiny-stage3.json)")
    record = json.loads(codec_path.with_suffix(".json").read_text())
    assert record["stage"] == 3
    assert record["sha256"] == {"codec": file_sha256(codec_path), "policy": file_sha256(policy_path)}
    base, tuned = load_codec("tiny", device="cpu"), load_codec("tiny-stage3", device="cpu")
    assert tuned.config.to_dict() == base.config.to_dict() and tuned.bitstream_version == base.bitstream_version
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed  # fine-tuned weights, same layout
    policy, _ = load_policy(policy_path)
    env = SemanticCodingEnv(task="pixel-test", codec=tuned, images=load_dataset("streets", split="test", preset="tiny",
                                                                                 size=2))
    obs, info = env.reset(seed=0)
    done, steps = False, 0
    while not done:
        level = int(policy.act({k: v[None] for k, v in obs.items()})[0])
        obs, reward, done, _, step_info = env.step(level)
        assert reward == pytest.approx(info["loss"] - step_info["loss"], abs=1e-9)
        info, steps = step_info, steps + 1
    assert steps >= 1 and info["bits"] > 0
