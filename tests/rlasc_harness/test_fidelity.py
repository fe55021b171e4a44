"""Semantic-fidelity decoder training (rlasc_harness/fidelity.py) and its report (rlasc_harness/fidelity_report.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codec_models import load_codec
from codec_models.bitstream import BitstreamError
from codec_models.training import export_codec
from rlasc_harness.fidelity import (STATE_FILE, FidelityConfig, FidelityTrainer, level_fraction, sample_levels,
                                    scale_gradient)
from rlasc_harness.fidelity_report import FidelityReportConfig, fidelity_report


def config(tmp_path, **kw) -> FidelityConfig:
    base = dict(run_dir=str(tmp_path / "run"), steps=4, batch_size=2, train_images=8, val_images=2, eval_every=2,
                log_every=1, checkpoint_every=100, progress=False, warmup=0, label_images=8)
    base.update(kw)
    return FidelityConfig(**base)


@pytest.fixture(scope="module")
def codec_file(tmp_path_factory, test_codec):
    return str(export_codec(test_codec, tmp_path_factory.mktemp("fid") / "codec.pt", {"command": "test"}))


def test_sample_levels_draws_every_operating_point():
    rng = np.random.default_rng(0)
    present = torch.ones(4000, 19, dtype=torch.bool)
    levels = sample_levels(present, 6, 0.25, 0.5, rng)
    assert levels.shape == (4000, 19) and levels.dtype == torch.long
    assert set(levels.unique().tolist()) == set(range(6))
    uniform = (levels == levels[:, :1]).all(1).float().mean().item()
    assert 0.2 < uniform < 0.3  # the images with one level for all concepts
    per_concept = levels[~(levels == levels[:, :1]).all(1)]
    assert 0.45 < (per_concept == 0).float().mean().item() < 0.55


def test_level_weights_reach_each_pixel_through_its_concept():
    levels = torch.tensor([[0, 5, 2], [5, 0, 0]])
    labels = torch.tensor([[[0, 1], [2, 1]], [[0, 0], [1, 2]]])
    torch.testing.assert_close(level_fraction(levels, labels, 6), torch.tensor([[[0, 1], [0.4, 1]], [[1, 1], [0, 0]]]))
    x = torch.randn(2, 3, 2, 2, requires_grad=True)
    weight = level_fraction(levels, labels, 6).unsqueeze(1)
    out = scale_gradient(x, weight)
    assert torch.equal(out, x)  # the forward value is unchanged
    (2 * out).sum().backward()
    torch.testing.assert_close(x.grad, 2 * weight.expand_as(x))


def test_level_dependent_weights_change_the_step_and_default_to_the_uniform_loss(tmp_path, codec_file):
    """--level-l1-boost / --task-level-decay: 0 gives the same step as before; set, they change the update."""
    def first_step(**kw):
        trainer = FidelityTrainer(config(tmp_path / str(len(list(tmp_path.iterdir()))), codec=codec_file, **kw))
        out = trainer.train_step()
        state = {k: v.clone() for k, v in trainer.codec.state_dict().items() if k.startswith("local.")}
        trainer.close()
        return out, state

    plain, plain_state = first_step()
    zero, zero_state = first_step(level_l1_boost=0.0, task_level_decay=0.0)
    weighted, weighted_state = first_step(level_l1_boost=4.0, task_level_decay=1.0)
    assert plain["loss_total"] == zero["loss_total"]
    assert all(torch.equal(plain_state[k], zero_state[k]) for k in plain_state)
    assert weighted["loss_l1"] == pytest.approx(plain["loss_l1"])  # the logged L1 stays the plain mean
    assert weighted["loss_total"] != plain["loss_total"]
    assert any(not torch.equal(plain_state[k], weighted_state[k]) for k in plain_state)


def test_task_scale_weights_one_task_and_the_selection_can_count_level0_classification(tmp_path, codec_file):
    """--task-scale classification s: the total moves by w (s - 1) L_cls; --selection segmentation_classification
    averages level 0's classification AP into best.pt's score; bad keys, scales and selections are refused."""
    def first(name, **kw):
        trainer = FidelityTrainer(config(tmp_path / name, codec=codec_file, **kw))
        out, values = trainer.train_step(), trainer.validate()
        trainer.close()
        return out, values

    plain, plain_val = first("plain")
    scaled, scaled_val = first("scaled", task_scale={"classification": 3.0}, selection="segmentation_classification")
    assert scaled["loss_classification"] == pytest.approx(plain["loss_classification"], rel=1e-6)
    assert scaled["loss_total"] - plain["loss_total"] == pytest.approx(0.5 * 2.0 * plain["loss_classification"],
                                                                       rel=1e-4)
    assert 0.0 <= scaled_val["val/cls_ap_level0"] <= 1.0
    top = max(int(k.removeprefix("val/miou_level")) for k in plain_val if k.startswith("val/miou_level"))
    assert plain_val["val/selection"] == pytest.approx(
        0.5 * (plain_val["val/miou_level0"] + plain_val[f"val/miou_level{top}"]))
    assert scaled_val["val/selection"] == pytest.approx(
        (scaled_val["val/miou_level0"] + scaled_val[f"val/miou_level{top}"] + scaled_val["val/cls_ap_level0"]) / 3)
    for bad in ({"task_scale": {"colour": 2.0}}, {"task_scale": {"classification": -1.0}},
                {"task_scale": {"classification": float("nan")}}, {"selection": "psnr"},
                {"tasks": ("segmentation",), "selection": "segmentation_classification"}):
        with pytest.raises(ValueError, match="--task-scale|--selection"):
            FidelityTrainer(config(tmp_path / "bad", codec=codec_file, **bad))


def test_resume_continues_the_same_run(tmp_path, codec_file):
    straight = FidelityTrainer(config(tmp_path / "a", codec=codec_file))
    straight.run()
    straight.close()
    first = FidelityTrainer(config(tmp_path / "b", codec=codec_file))
    for _ in range(2):
        first.train_step()
        first.step += 1
    first.save_state()
    first.close()
    with pytest.raises(FileExistsError, match="--resume"):
        FidelityTrainer(config(tmp_path / "b", codec=codec_file))
    resumed = FidelityTrainer(config(tmp_path / "b", codec=codec_file, resume=True))
    assert resumed.step == 2
    resumed.run()
    resumed.close()
    a, b = straight.codec.state_dict(), resumed.codec.state_dict()
    changed = [k for k in a if not torch.equal(a[k], load_codec(codec_file).state_dict()[k])]
    assert any(k.startswith("local.") for k in changed), "training changed nothing"
    assert not any(k.startswith(("encoder.", "segmenter.")) for k in changed), "E and F must stay fixed"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert (tmp_path / "b" / "run" / STATE_FILE).is_file()


def test_export_with_the_up_right_label_context(tmp_path, codec_file, test_dataset):
    trainer = FidelityTrainer(config(tmp_path, codec=codec_file, steps=2, label_neighbours="wnne",
                                     export=str(tmp_path / "sf.pt")))
    trainer.run()
    paths = trainer.export()
    trainer.close()
    new, old = load_codec(paths["export"]), load_codec(codec_file)
    assert new.label_model.neighbours == "wnne" and new.bitstream_version == 3
    assert old.bitstream_version == 2
    image = test_dataset[0][0]
    data = new.compress(image)
    assert data[2] == 3  # format version byte
    torch.testing.assert_close(new.decompress(data), new.decompress(new.compress(image)))
    with pytest.raises(BitstreamError, match="format version 2, but this codec reads version 3"):
        new.decompress(old.compress(image))


def test_export_keeps_the_start_codecs_label_context_unless_told(tmp_path, codec_file):
    """--label-neighbours left out keeps the start codec's context set: a wnne start is not refit to wn."""
    first = FidelityTrainer(config(tmp_path / "a", codec=codec_file, steps=0, label_neighbours="wnne"))
    first.run()
    wnne_file = first.export()["codec"]
    first.close()
    kept = FidelityTrainer(config(tmp_path / "b", codec=str(wnne_file), steps=0, label_images=4))  # a refit differs
    kept.run()
    exported = load_codec(kept.export()["codec"])
    kept.close()
    assert exported.label_model.neighbours == "wnne" and exported.bitstream_version == 3
    torch.testing.assert_close(exported.label_model.state_dict()["counts"],
                               load_codec(wnne_file).label_model.state_dict()["counts"], rtol=0, atol=0)
    back = FidelityTrainer(config(tmp_path / "c", codec=str(wnne_file), steps=0, label_neighbours="wn"))
    back.run()
    assert load_codec(back.export()["codec"]).label_model.neighbours == "wn"
    back.close()
    with pytest.raises(ValueError, match="--label-neighbours must be one of"):
        FidelityTrainer(config(tmp_path / "d", codec=codec_file, label_neighbours="nw"))


def test_fidelity_report_counts_real_bytes(tmp_path):
    report = fidelity_report(FidelityReportConfig(codecs=("tiny",), images=2, batch_size=2, independent=None,
                                                  json=str(tmp_path / "r.json")))
    row = report["codecs"]["tiny"]
    codec = load_codec("tiny")
    from codec_models.datasets import load_dataset

    data = load_dataset("streets", "test", preset="tiny", size=2, progress=False)
    sizes = [len(codec.compress((data[i][0] * 255).round() / 255, {m: 0 for m in range(codec.num_classes)}))
             for i in range(2)]
    assert row["level0"]["bpp"] == pytest.approx(8 * np.mean(sizes) / (64 * 128))
    assert row["level5"]["bpp"] > row["level0"]["bpp"]
    assert set(row["level0"]) >= {"miou_dataset", "map50", "macro_ap", "psnr"}
    assert row["concepts"] > 0 and np.isfinite(row["concept_psnr_gain_db"])
    assert (tmp_path / "r.json").is_file()


def test_divergence_rolls_back_to_the_best_checkpoint(tmp_path, codec_file):
    """A validation PSNR below the start's by more than --rollback-db restores best.pt and halves the lr."""
    trainer = FidelityTrainer(config(tmp_path, codec=codec_file, rollback_db=-100.0))  # every check "diverged"
    trainer.run()
    trainer.close()
    assert trainer.rollbacks == 2 and trainer.lr_scale == 0.25
    best = load_codec(str(tmp_path / "run" / "best.pt")).state_dict()
    for key, value in trainer.codec.state_dict().items():
        if key.startswith("local."):
            torch.testing.assert_close(value, best[key], rtol=0, atol=0)


def test_shipped_tiny_sf_keeps_the_bits_of_every_concept_and_codes_the_map_with_three_neighbours():
    """tiny-sf is tiny's F, E and code tables with a retrained decoder: every concept section is byte for byte
    tiny's; only the label map (up-right context, bitstream version 3) and the pictures differ."""
    import json
    from pathlib import Path

    from codec_models.datasets import load_dataset

    tiny, sf = load_codec("tiny"), load_codec("tiny-sf")
    assert sf.bitstream_version == 3 and sf.label_model.neighbours == "wnne" and tiny.bitstream_version == 2
    record = json.loads((Path(sf.source).with_suffix(".json")).read_text())
    assert record["seed"] == 0 and record["sources"]["task_networks"]["segmentation"].endswith("segmentation.pt")
    assert "/v3/" not in json.dumps(record["sources"]["task_networks"])  # never the scoring networks
    data = load_dataset("streets", "test", preset="tiny", size=3, progress=False)
    label_bytes = [0, 0]
    for i in range(3):
        x = data[i][0][None]
        a, b = tiny.analyse(x), sf.analyse(x)
        assert torch.equal(a.labels, b.labels)
        for m in a.present[0].nonzero().flatten().tolist():
            for level in (0, 5):
                assert tiny.encode_concept(a, 0, m, level) == sf.encode_concept(b, 0, m, level)
        label_bytes[0] += len(tiny.encode_labels(a.labels[0]))
        label_bytes[1] += len(sf.encode_labels(b.labels[0]))
        assert sf.decompress(sf.compress(data[i][0])).shape == (3, 64, 128)
    assert label_bytes[1] < label_bytes[0]


def test_segmenter_from_another_codec_refits_the_tables(tmp_path, codec_file):
    donor = load_codec(codec_file)
    with torch.no_grad():
        for p in donor.segmenter.parameters():
            p.add_(0.05 * torch.randn_like(p))
    donor_file = str(export_codec(donor, tmp_path / "donor.pt", {"command": "test"}))
    trainer = FidelityTrainer(config(tmp_path, codec=codec_file, segmenter_from=donor_file, label_neighbours="wnne"))
    trainer.close()
    for key, value in trainer.codec.segmenter.state_dict().items():
        torch.testing.assert_close(value, donor.segmenter.state_dict()[key], rtol=0, atol=0)
    start = load_codec(codec_file)
    torch.testing.assert_close(trainer.codec.local.state_dict()["head_weight"], start.local.state_dict()["head_weight"])
    assert trainer.codec.label_model.neighbours == "wnne" and trainer.sources["segmenter"] == donor_file


def test_shipped_tiny_sf_f6k_records_both_runs_and_round_trips():
    import json
    from pathlib import Path

    from codec_models.datasets import load_dataset

    codec, sf = load_codec("tiny-sf-f6k"), load_codec("tiny-sf")
    assert codec.bitstream_version == 3
    record = json.loads(Path(codec.source).with_suffix(".json").read_text())
    assert record["segmenter_record"]["command"].startswith("python train_codec.py --preset tiny")
    assert "/v3/" not in json.dumps(record["sources"]["task_networks"])
    for key, value in sf.local.state_dict().items():  # the decoder is tiny-sf's (the run's start)
        torch.testing.assert_close(codec.local.state_dict()[key], value, rtol=0, atol=0)
    assert not torch.equal(codec.segmenter.state_dict()["head.weight"], sf.segmenter.state_dict()["head.weight"])
    image = load_dataset("streets", "test", preset="tiny", size=1, progress=False)[0][0]
    data = codec.compress(image)
    assert data[2] == 3 and codec.decompress(data).shape == (3, 64, 128)


def test_task_reference_original_targets_the_task_networks_view_of_the_original(tmp_path, codec_file):
    """--task-reference original: the task terms' targets are H(x) (eq. 4's f_degrade(H(x), H(x_hat))), so a
    reconstruction equal to the original scores its lowest segmentation loss; a bad value is refused."""
    from rlasc_harness.stage3 import task_training_loss

    with pytest.raises(ValueError, match="task-reference"):
        FidelityTrainer(config(tmp_path / "bad", codec=codec_file, task_reference="pixels"))
    trainer = FidelityTrainer(config(tmp_path / "orig", codec=codec_file, task_reference="original",
                                     tasks=("segmentation",)))
    task = trainer.tasks["segmentation"]
    assert task.reference_mode == "original"
    x, y = trainer.val_x[:2], trainer.val_y[:2]
    with torch.no_grad():
        own = task_training_loss(task, x, x, y)
        noisy = task_training_loss(task, (x + 0.3 * torch.randn_like(x)).clamp(0, 1), x, y)
    assert float(own) < float(noisy)
    trainer.run()
    trainer.close()


def test_shipped_tiny_hq_keeps_64_coefficients_at_the_top_and_records_both_stages():
    """Codec tiny-hq (issue 31, experiments/code_capacity): tiny's levels 0-3, tiny's former top as level 4, and a
    highest level of 64 coefficients with 129 centres; format 4; its record names stage I and the fidelity run;
    the highest level reconstructs closer than level 4 (through real bytes)."""
    import json
    from pathlib import Path

    from codec_models.datasets import load_dataset
    from rlasc_harness.evaluate_codecs.rlasc import compress_levels

    codec = load_codec("tiny-hq")
    cfg = codec.config
    assert (cfg.code_channels, cfg.level_channels[-1], cfg.level_centers[-1]) == (64, 64, 129)
    assert cfg.level_channels[:5] == (1, 4, 8, 16, 32) and codec.bitstream_version == 4
    record = json.loads(Path(codec.source).with_suffix(".json").read_text())
    assert record["sources"]["codec_record"]["command"].startswith("python train_codec.py --preset tiny")
    assert record["command"].startswith("python train_codec.py fidelity")
    assert "/v3/" not in json.dumps(record["sources"]["task_networks"])  # the scorers never trained it
    image = load_dataset("streets", "test", preset="tiny", size=1, progress=False)[0][0]
    errors, sizes = [], []
    for level in (4, 5):
        data = compress_levels(codec, image, [{m: level for m in range(codec.num_classes)}])[0]
        errors.append(float((codec.decompress(data) - image).pow(2).mean()))
        sizes.append(len(data))
    assert errors[1] < errors[0] and sizes[1] > sizes[0]


def test_a_new_quantizer_at_the_start_refits_the_tables_and_survives_export_and_resume(tmp_path, test_codec,
                                                                                       test_dataset):
    """--channel-step-ratio / --coder: the run starts from the same networks under the new quantizer, with symbol
    tables refit for its symbols; the export and a resumed run keep it; a matrix on even centres is refused."""
    import dataclasses

    from codec_models.codec import SemanticCodec
    from codec_models.training import fit_code_tables, requantized

    odd = SemanticCodec(dataclasses.replace(test_codec.config, level_centers=(3, 5, 9)))
    odd.load_state_dict(test_codec.state_dict())
    fit_code_tables(odd, test_dataset, 8, progress=False)
    start_file = str(export_codec(odd.eval(), tmp_path / "odd.pt", {"command": "test"}))

    graded = requantized(odd, test_dataset, 8, channel_step_ratio=4.0, coder="range")
    assert (graded.config.channel_step_ratio, graded.config.coder) == (4.0, "range")
    assert (odd.config.channel_step_ratio, odd.config.coder) == (1.0, test_codec.config.coder)  # source untouched
    for key, value in odd.state_dict().items():
        torch.testing.assert_close(graded.state_dict()[key], value, rtol=0, atol=0)
    assert graded.codec_id != odd.codec_id
    image = test_dataset[2][0]
    top = {m: 2 for m in range(odd.num_classes)}
    assert len(graded.compress(image, top)) < len(odd.compress(image, top))  # coarser steps: fewer bits
    torch.testing.assert_close(graded.decompress(graded.compress(image, top)),
                               graded.decode(graded.analyse(image[None]), torch.full((1, odd.num_classes), 2))[0],
                               rtol=0, atol=1e-6)

    trainer = FidelityTrainer(config(tmp_path / "q", codec=start_file, channel_step_ratio=4.0, coder="range"))
    assert trainer.sources["quantizer"] == {"channel_step_ratio": 4.0, "coder": "range", "table_images": 8}
    for a, b in zip(trainer.codec.tables.state_dict().values(), graded.tables.state_dict().values()):
        assert np.array_equal(np.asarray(a), np.asarray(b))  # the same refit on the same images
    trainer.train_step()
    trainer.step += 1
    trainer.save_state()
    trainer.close()
    resumed = FidelityTrainer(config(tmp_path / "q", codec=start_file, resume=True))
    assert resumed.codec.config.channel_step_ratio == 4.0 and resumed.step == 1
    resumed.run()
    paths = resumed.export()
    resumed.close()
    exported = load_codec(paths["codec"])
    assert (exported.config.channel_step_ratio, exported.config.coder) == (4.0, "range")
    assert exported.decompress(exported.compress(image, top)).shape == image.shape

    with pytest.raises(ValueError, match="odd"):
        FidelityTrainer(config(tmp_path / "even", codec=codec_file_even(tmp_path, test_codec), channel_step_ratio=4.0))


def codec_file_even(tmp_path, test_codec) -> str:
    assert any(k % 2 == 0 for k in test_codec.config.level_centers)
    return str(export_codec(test_codec, tmp_path / "even.pt", {"command": "test"}))
