"""``rlasc-codec``: compress an image file (PNG/JPEG) to a ``.rlasc`` bitstream and back.

    rlasc-codec compress photo.png photo.rlasc [--codec tiny] [--level 3] [--levels 13:5,11:5]
    rlasc-codec decompress photo.rlasc restored.png [--codec tiny]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .bitstream import BitstreamError
from .checkpoint import load_codec


def read_image(path: Path, height: int, width: int) -> torch.Tensor:
    """Image file -> (3,H,W) float in [0,1], resized (bicubic, antialiased) to the codec's size."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BICUBIC)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise SystemExit(f"error: cannot read image {path}: {exc}") from exc
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def write_image(image: torch.Tensor, path: Path) -> None:
    array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(array).save(path)


def parse_levels(text: str | None, uniform: int | None, num_classes: int) -> dict[int, int] | None:
    levels: dict[int, int] = {}
    if uniform is not None:
        levels = {m: uniform for m in range(num_classes)}
    if text:
        for item in text.split(","):
            try:
                cls, lvl = item.split(":")
                levels[int(cls)] = int(lvl)
            except ValueError as exc:
                raise SystemExit(f"error: --levels wants 'class:level,...', got {item!r}") from exc
    return levels or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlasc-codec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compress", help="image file -> .rlasc")
    comp.add_argument("input", type=Path)
    comp.add_argument("output", type=Path)
    comp.add_argument("--level", type=int, default=None, help="one level for every concept (default: highest)")
    comp.add_argument("--levels", default=None, help="per-class levels, e.g. 13:5,10:0")
    dec = sub.add_parser("decompress", help=".rlasc -> image file")
    dec.add_argument("input", type=Path)
    dec.add_argument("output", type=Path)
    for p in (comp, dec):
        p.add_argument("--codec", default="tiny", help="shipped codec name or checkpoint path")
        p.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    codec = load_codec(args.codec, device=args.device)
    if args.command == "compress":
        image = read_image(args.input, codec.config.height, codec.config.width)
        try:
            data = codec.compress(image, parse_levels(args.levels, args.level, codec.num_classes))
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from exc
        args.output.write_bytes(data)
        h, w = image.shape[-2:]
        print(f"{args.output}: {len(data)} bytes, {len(data) * 8 / (h * w):.4f} bpp ({w}x{h})")
    else:
        try:
            data = args.input.read_bytes()
            image = codec.decompress(data)
        except (OSError, BitstreamError) as exc:
            raise SystemExit(f"error: {args.input}: {exc}") from exc
        write_image(image, args.output)
        h, w = image.shape[-2:]
        print(f"{args.output}: {w}x{h} from {len(data) * 8 / (h * w):.4f} bpp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
