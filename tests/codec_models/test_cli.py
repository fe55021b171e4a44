"""rlasc-codec command line: PNG -> .rlasc -> PNG, printing bpp; clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from codec_models import cli
from codec_models.training import export_codec


@pytest.fixture()
def codec_file(tmp_path, test_codec):
    return export_codec(test_codec, tmp_path / "c.pt", {})


def test_compress_decompress_png(tmp_path, codec_file, test_dataset, capsys):
    image = (test_dataset[0][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(image).save(src)
    assert cli.main(["compress", str(src), str(tmp_path / "x.rlasc"), "--codec", str(codec_file)]) == 0
    assert "bpp" in capsys.readouterr().out
    assert cli.main(["decompress", str(tmp_path / "x.rlasc"), str(tmp_path / "out.png"), "--codec", str(codec_file)]) == 0
    assert Image.open(tmp_path / "out.png").size == (64, 32)
    (tmp_path / "bad.rlasc").write_bytes(b"RA\x01garbage")
    with pytest.raises(SystemExit, match="error"):
        cli.main(["decompress", str(tmp_path / "bad.rlasc"), str(tmp_path / "o2.png"), "--codec", str(codec_file)])
    (tmp_path / "notimage.png").write_bytes(b"hello")
    with pytest.raises(SystemExit, match="cannot read image"):
        cli.main(["compress", str(tmp_path / "notimage.png"), str(tmp_path / "y.rlasc"), "--codec", str(codec_file)])
