"""Write a codec's weights and code tables under another bitstream container: ``train_codec.py repack``.

    python train_codec.py repack --codec tiny-sf-f6k --base-section --export codec_models/weights/tiny-sf2.pt
    python train_codec.py repack --codec tiny-sf2 --coder range --export codec_models/weights/tiny-sf3.pt

The networks, the code tables and the label-map model are copied bit for bit; only the container changes
(``--base-section``: bitstream format 4, the level-0 concepts share one base section, ``codec_models/bitstream.py``;
``--coder``: the concept payloads' entropy coder),
so the decoded images are the source codec's and only the rate differs. The record beside the export keeps the
source codec's record (how its weights were trained) under ``source_record``.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from .checkpoint import atomic_save, codec_payload, load_codec, resolve_codec_path


@dataclass
class RepackConfig:
    """Copy a codec into another bitstream container."""

    codec: str  # shipped name or codec.pt to copy
    export: str  # where to write the new codec (.pt; its record goes beside it as .json)
    base_section: bool = True  # bitstream format 4: level-0 concepts in one shared base section
    coder: str | None = None  # entropy coder of the concept payloads ("huffman" or "range"; None: the source's).
    # In format 4 the base section stays in the Huffman pair code; "range" drops the up-to-one-bit-per-symbol
    # overhead of the concepts above level 0


def repack(cfg: RepackConfig, argv: list[str] | None = None) -> Path:
    """Write ``cfg.codec`` with ``cfg.base_section`` to ``cfg.export`` (+ ``.json`` record); returns the path."""
    source = resolve_codec_path(cfg.codec)
    codec = load_codec(source, device="cpu")
    if codec.tables is None or codec.label_model is None:
        raise ValueError(f"{source} has no code tables: nothing to repack")
    coder = cfg.coder or codec.config.coder
    codec.config = dataclasses.replace(codec.config, base_section=cfg.base_section, coder=coder).validate()
    codec.invalidate_id()
    record_path = source.with_suffix(".json")
    source_record = json.loads(record_path.read_text()) if record_path.is_file() else None
    command = "python train_codec.py repack " + " ".join(shlex.quote(a) for a in (argv or []))
    meta = {"command": command, "source": source.name, "base_section": cfg.base_section, "coder": coder,
            "bitstream_version": codec.bitstream_version, "codec_id": codec.codec_id.hex()}
    out = atomic_save(codec_payload(codec, {**codec.meta, "repack": meta}), cfg.export)
    record = {**meta, "device": "cpu", "source_record": source_record}
    Path(cfg.export).with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out} (bitstream format {codec.bitstream_version}, codec id {codec.codec_id.hex()})")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    repack(tyro.cli(RepackConfig, args=argv), argv)
    return 0
