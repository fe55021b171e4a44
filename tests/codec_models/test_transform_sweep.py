"""The linear block-transform sweep behind codec v2's levels (docs/codec_v2.md)."""
from __future__ import annotations

import json

from codec_models.transform_sweep import TransformSweepConfig, main, sweep


def test_sweep_rows_improve_with_centres_and_channels(tmp_path):
    cfg = TransformSweepConfig(train_images=8, val_images=4, channels=(1, 4), centres=(5, 17), preset="test")
    rows = sweep(cfg)
    assert len(rows) == 1 + 2 * 2 * 2
    common = {(r["channels"], r["centres"]): r for r in rows if r["scaling"] == "common"}
    assert common[(4, 17)]["psnr_db"] > common[(4, 5)]["psnr_db"]
    assert common[(4, 17)]["psnr_db"] > common[(1, 17)]["psnr_db"]
    assert common[(4, 17)]["feature_bpp"] > common[(1, 5)]["feature_bpp"] > 0
    out = tmp_path / "sweep.json"
    assert main(["--train-images", "8", "--val-images", "4", "--channels", "1", "--centres", "5", "--preset", "test",
                 "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 3
