"""Where the bits of the lowest operating point go (every concept at level 0), and what better models would save.

    python experiments/rate_breakdown/level0_rate.py --codec tiny-sf-f6k --images 200
    python experiments/rate_breakdown/level0_rate.py --codec tiny-sf2 --images 200   # bitstream format 4

Splits every file into: the fixed header, the per-concept header entries, the label map, the concept payloads
(with Huffman padding) and CRCs; then prints the ideal code lengths of the level-0 coefficients under the shipped
per-channel table, under a table per class, and under a table per (class, left-neighbour symbol).
"""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter

import numpy as np
import torch

from codec_models import bitstream
from codec_models.checkpoint import load_codec
from codec_models.datasets import load_dataset


def entropy_bits(counter_by_ctx: dict) -> float:
    total = 0.0
    for counts in counter_by_ctx.values():
        n = sum(counts.values())
        total += -sum(c * math.log2(c / n) for c in counts.values())
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--codec", default="tiny-sf-f6k")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(a.codec).eval()
    data = load_dataset("streets", split="test")
    parts = Counter()
    by_none, by_class, by_class_left = {}, {}, {}
    static_bits = 0.0
    probs = codec.tables.probabilities(0)  # (C0, K0)
    pixels = 0
    concepts = 0
    with torch.no_grad():
        for i in range(a.images):
            image = data[i][0] if isinstance(data[i], (tuple, list)) else data[i]["image"]
            x = image.unsqueeze(0)
            analysis = codec.analyse(x)
            present = analysis.present[0].nonzero().flatten().tolist()
            data_bytes = codec.compress(image, {m: 0 for m in present})
            h, w = image.shape[-2:]
            pixels += h * w
            concepts += len(present)
            parsed = bitstream.unpack(data_bytes, expected_codec_id=codec.codec_id, version=codec.bitstream_version)
            label_len = len(parsed.label_payload)
            payload_lens = [len(p) for p in parsed.concept_payloads]
            crc = bitstream.CONCEPT_CRC_BYTES[codec.bitstream_version]
            total = len(data_bytes)
            parts["label_payload"] += label_len
            parts["concept_payloads"] += sum(payload_lens) + len(parsed.base_payload)
            per_concept_header = sum(2 + bitstream.varint_size(n) for n in payload_lens)
            parts["concept_entries"] += per_concept_header
            parts["concept_crcs"] += len(payload_lens) * crc
            parts["fixed_header_label_len_crcs"] += total - label_len - sum(payload_lens) - len(parsed.base_payload) \
                - per_concept_header - len(payload_lens) * crc
            idx = codec.quantizer.indices(analysis.features[0], 0)[0]  # (h, w) level-0 symbols of channel 0
            labels_blocks = analysis.mask[0]  # (M, h, w)
            for m in present:
                pos = labels_blocks[m] > 0
                sym = idx[pos].numpy()
                static_bits += float(-np.log2(probs[0][sym]).sum())
                rr, cc = pos.nonzero(as_tuple=True)
                for s, r, c in zip(sym, rr.tolist(), cc.tolist()):
                    left = int(idx[r, c - 1]) if c > 0 and bool(pos[r, c - 1]) else -1
                    by_none.setdefault(0, Counter())[int(s)] += 1
                    by_class.setdefault(m, Counter())[int(s)] += 1
                    by_class_left.setdefault((m, left), Counter())[int(s)] += 1
    bpp = {k: 8 * v / pixels for k, v in parts.items()}
    bpp["total"] = sum(bpp.values())
    ideal = {
        "shipped_table": static_bits / pixels,
        "empirical_one_table": entropy_bits(by_none) / pixels,
        "empirical_per_class": entropy_bits(by_class) / pixels,
        "empirical_per_class_left": entropy_bits(by_class_left) / pixels,
    }
    out = {"codec": a.codec, "images": a.images, "concepts_per_image": concepts / a.images, "bpp": bpp,
           "level0_coefficients_ideal_bpp": ideal,
           "note": "empirical_* fit on the scored images themselves: optimistic bounds"}
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
