"""Container format: layout, round trips, every error case, and a fuzz test."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from codec_models.bitstream import (CONCEPT_CRC_BYTES, FORMAT_VERSION, BitstreamError, ParsedStream, StreamHeader, pack,
                                    section_sizes, unpack)

CODEC_ID = b"\x01\x02\x03\x04"


def make_header(concepts=((0, 5), (2, 0), (11, 3)), coder="huffman", **kw) -> StreamHeader:
    fields = dict(height=64, width=128, codec_id=CODEC_ID, num_classes=19, num_levels=6, channels=16)
    fields.update(kw)
    return StreamHeader(coder=coder, concepts=list(concepts), **fields)


def make_stream(seed=0, sizes=(40, 3, 0), label_len=25, **kw) -> tuple[bytes, StreamHeader, bytes, list[bytes]]:
    rng = np.random.default_rng(seed)
    concepts = [(c, int(rng.integers(6))) for c in sorted(rng.choice(19, len(sizes), replace=False).tolist())]
    header = make_header(concepts, **kw)
    label = rng.bytes(label_len)
    payloads = [rng.bytes(n) for n in sizes]
    return pack(header, label, payloads), header, label, payloads


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


def raw_stream(flags=0, height=64, width=128, m=19, q=6, n=16, entries=((3, 1, b"ab"),), label=b"xyz",
               version=FORMAT_VERSION, label_len_bytes=None) -> bytes:
    """Independent writer of the documented layout (valid CRCs), to reach every check."""
    head = struct.pack(">2sBBHH4sBBBB", b"RA", version, flags, height, width, CODEC_ID, m, q, n, len(entries))
    head += label_len_bytes if label_len_bytes is not None else varint(len(label))
    for cls, level, payload in entries:
        head += bytes((cls, level)) + varint(len(payload))
    out = head + struct.pack(">H", zlib.crc32(head) & 0xFFFF) + label
    out += struct.pack(">H", zlib.crc32(label) & 0xFFFF)
    for _, _, payload in entries:  # concept CRC: 16 bits in format 2, 8 bits in format 1
        out += payload + (struct.pack(">H", zlib.crc32(payload) & 0xFFFF) if version >= 2
                          else bytes((zlib.crc32(payload) & 0xFF,)))
    return out


# --------------------------------------------------------------------- round trips


def test_layout_matches_independent_writer():
    header = make_header([(3, 1)], coder="range")
    assert pack(header, b"xyz", [b"ab"]) == raw_stream(flags=1)


@pytest.mark.parametrize("coder", ["huffman", "range"])
@pytest.mark.parametrize("sizes", [(), (0,), (40, 3, 0), (200, 20000, 1, 7), tuple(range(19))])
def test_round_trip_and_section_sizes(coder, sizes):
    data, header, label, payloads = make_stream(sizes=sizes, coder=coder, label_len=300)
    assert section_sizes(header, len(label), [len(p) for p in payloads]) == len(data)
    parsed = unpack(data, expected_codec_id=CODEC_ID, expected_shape=(19, 6, 16))
    assert isinstance(parsed, ParsedStream) and parsed.ok
    assert parsed.header == header
    assert parsed.label_payload == label and parsed.label_ok
    assert parsed.concept_payloads == payloads and all(parsed.concept_ok)
    assert unpack(data, strict=False).concept_payloads == payloads


def test_section_sizes_large_varints():
    header = make_header([(1, 0), (4, 2)])
    for label_len, lens in [(0, [0, 0]), (127, [128, 16383]), (16384, [2**21 - 1, 2**21])]:
        expected = len(pack(header, bytes(label_len), [bytes(n) for n in lens]))
        assert section_sizes(header, label_len, lens) == expected


def test_extreme_header_fields():
    header = make_header([(c, c % 255) for c in range(255)], height=8, width=8192, num_classes=255,
                         num_levels=255, channels=255)
    data = pack(header, b"", [b""] * 255)
    assert unpack(data).header == header


def test_pack_rejects_invalid_headers():
    bad = [
        dict(coder="lzma"), dict(height=7), dict(width=8193), dict(codec_id=b"abc"),
        dict(num_classes=0), dict(num_levels=256), dict(channels=0),
        dict(concepts=[(2, 0), (2, 1)]), dict(concepts=[(3, 0), (1, 0)]), dict(concepts=[(19, 0)]),
        dict(concepts=[(1, 6)]), dict(concepts=[(1, -1)]), dict(num_classes=2, concepts=[(0, 0), (1, 0), (2, 0)]),
    ]
    for fields in bad:
        concepts = fields.pop("concepts", [(1, 0)])
        header = make_header(concepts, **fields)
        with pytest.raises(ValueError):
            pack(header, b"", [b""] * len(concepts))
    with pytest.raises(ValueError):
        pack(make_header([(1, 0)]), b"", [])  # payload count mismatch


# ---------------------------------------------------------------------- error cases


def expect_error(data: bytes, fragment: str, **kw) -> None:
    with pytest.raises(BitstreamError, match=fragment):
        unpack(data, **kw)


def test_not_a_bitstream():
    expect_error(b"", "empty input")
    expect_error(b"R", "bad magic")
    expect_error(b"\x89PNG\r\n\x1a\n" + bytes(40), r"not an RL-ASC bitstream \(bad magic\)")
    expect_error(raw_stream(version=7), r"format version 7 not supported \(this reader: \[1, 2, 3, 4\]\)")
    with pytest.raises(BitstreamError):
        unpack("RA")  # type: ignore[arg-type]


def test_truncated_everywhere():
    data = make_stream()[0]
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            unpack(data[:cut])
    expect_error(data[:10], "truncated: header needs at least 16 bytes")
    expect_error(data[:-1], "truncated: stream has")


def test_trailing_garbage():
    data = make_stream()[0]
    expect_error(data + b"\x00", "trailing garbage: 1 bytes")
    assert unpack(data + b"junk", strict=False).ok


def test_header_crc_and_fields():
    data = bytearray(make_stream()[0])
    data[5] ^= 0x01  # height
    expect_error(bytes(data), "header CRC mismatch")
    expect_error(bytes(data), "header CRC mismatch", strict=False)
    expect_error(raw_stream(flags=0x04), "reserved flag bits")
    expect_error(raw_stream(flags=0x02), "unknown coder id 2")
    expect_error(raw_stream(height=7), "height 7 outside")
    expect_error(raw_stream(width=8193), "width 8193 outside")
    expect_error(raw_stream(m=0, entries=()), "num_classes 0")
    expect_error(raw_stream(q=0), "num_levels 0")
    expect_error(raw_stream(n=0), "channels 0")
    expect_error(raw_stream(m=2, entries=((0, 0, b""), (1, 0, b""), (1, 0, b""))), "concept sections but only 2")
    expect_error(raw_stream(entries=((4, 0, b""), (4, 1, b""))), "strictly increasing")
    expect_error(raw_stream(entries=((5, 0, b""), (2, 1, b""))), "strictly increasing")
    expect_error(raw_stream(entries=((19, 0, b""),)), "strictly increasing")
    expect_error(raw_stream(entries=((3, 6, b""),)), "level 6 of class 3 outside")


def test_varints():
    expect_error(raw_stream(label=b"", label_len_bytes=b"\x80\x80\x80\x80\x01"), "longer than 4 bytes")
    expect_error(raw_stream(label=b"", label_len_bytes=b"\x80\x00"), "not minimal")
    # a 4-byte length that the data cannot hold
    expect_error(raw_stream(label=b"", label_len_bytes=b"\xff\xff\xff\x7f"), "truncated: stream has")
    assert not unpack(raw_stream(label=b"", label_len_bytes=b"\xff\xff\xff\x7f"), strict=False).label_ok


def test_codec_mismatch():
    data = make_stream()[0]
    expect_error(data, r"made by another codec \(id 01020304", expected_codec_id=b"abcd")
    expect_error(data, "another codec configuration", expected_shape=(19, 6, 32))


C = CONCEPT_CRC_BYTES[FORMAT_VERSION]  # bytes of each concept CRC


def test_section_crcs_strict_and_graceful():
    data, header, label, payloads = make_stream(sizes=(40, 3, 9))
    start = len(data) - sum(len(p) + C for p in payloads) - len(label) - 2
    damaged = bytearray(data)
    damaged[start + 4] ^= 0x10  # inside the label payload
    expect_error(bytes(damaged), "label map CRC mismatch")
    parsed = unpack(bytes(damaged), strict=False)
    assert not parsed.label_ok and all(parsed.concept_ok) and parsed.concept_payloads == payloads
    assert len(parsed.label_payload) == len(label)

    damaged = bytearray(data)
    damaged[len(data) - 9 - C - 3 - C - 1] ^= 0x01  # last byte of the first concept payload
    expect_error(bytes(damaged), f"payload CRC mismatch for concept class {header.concepts[0][0]}")
    parsed = unpack(bytes(damaged), strict=False)
    assert parsed.label_ok and parsed.concept_ok == [False, True, True]


def test_graceful_truncation():
    data, _, label, payloads = make_stream(sizes=(40, 3, 9))
    cut = len(data) - (9 + C) - (3 + C) + 2  # two bytes into the second concept payload
    parsed = unpack(data[:cut], strict=False)
    assert parsed.label_ok and parsed.concept_ok == [True, False, False]
    assert parsed.concept_payloads[0] == payloads[0]
    assert parsed.concept_payloads[1] == payloads[1][:2] and parsed.concept_payloads[2] == b""
    header_only = data[: len(data) - sum(len(p) + C for p in payloads) - len(label) - 2]
    parsed = unpack(header_only, strict=False)
    assert parsed.label_payload == b"" and not parsed.label_ok and not any(parsed.concept_ok)


# ----------------------------------------------------------------------------- fuzz


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(7))
    buf = bytearray(data)
    if kind == 0 and buf:  # flip one bit
        buf[rng.integers(len(buf))] ^= 1 << int(rng.integers(8))
    elif kind == 1 and buf:  # overwrite a few bytes
        for _ in range(int(rng.integers(1, 4))):
            buf[rng.integers(len(buf))] = int(rng.integers(256))
    elif kind == 2:  # insert random bytes
        at = int(rng.integers(len(buf) + 1))
        buf[at:at] = rng.bytes(int(rng.integers(1, 5)))
    elif kind == 3 and buf:  # delete a run
        at = int(rng.integers(len(buf)))
        del buf[at : at + int(rng.integers(1, 5))]
    elif kind == 4:  # random bytes behind a valid magic
        return b"RA" + bytes((FORMAT_VERSION,)) + rng.bytes(int(rng.integers(0, 60)))
    elif kind == 5:  # pure noise
        return rng.bytes(int(rng.integers(0, 80)))
    else:  # burst of bit errors
        bits = np.unpackbits(np.frombuffer(bytes(buf), np.uint8))
        bits ^= (rng.random(bits.size) < 0.01).astype(np.uint8)
        return np.packbits(bits).tobytes()
    return bytes(buf)


def check_parse(data: bytes) -> None:
    """Only BitstreamError may escape; an accepted strict stream re-packs to itself."""
    try:
        parsed = unpack(data)
    except BitstreamError:
        pass
    else:  # strict acceptance implies every CRC (header, label, payloads) holds
        assert pack(parsed.header, parsed.label_payload, parsed.concept_payloads) == data
    try:
        loose = unpack(data, strict=False)
    except BitstreamError:
        return
    assert len(loose.concept_payloads) == len(loose.concept_ok) == len(loose.header.concepts)
    assert len(loose.label_payload) + sum(map(len, loose.concept_payloads)) <= len(data)
    if loose.ok:  # every section intact: the stream starts with their exact packing
        assert data.startswith(pack(loose.header, loose.label_payload, loose.concept_payloads))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuzz(seed):
    sizes = [(12, 0, 5), (), (3, 30, 1, 0, 17)][seed]
    data = make_stream(seed, sizes=sizes, label_len=(20, 0, 7)[seed], coder=("huffman", "range")[seed % 2])[0]
    check_parse(b"")
    for cut in range(len(data) + 1):
        check_parse(data[:cut])
    rng = np.random.default_rng(100 + seed)
    accepted = 0
    for _ in range(2000):
        bad = mutate(data, rng)
        check_parse(bad)
        try:
            unpack(bad)
            accepted += bad != data
        except BitstreamError:
            pass
    assert accepted < 40  # only mutations that happen to keep every CRC valid (~1/256 each)


# ------------------------------------------------------------------- format 4: the base section


def test_format4_layout_round_trip_and_sizes():
    header = make_header([(3, 1)], version=4)
    base = b"\x5a\x01"
    data = pack(header, b"xyz", [b"ab"], base)
    assert data == raw_stream(version=4) + base + struct.pack(">H", zlib.crc32(base) & 0xFFFF)
    parsed = unpack(data)
    assert parsed.base_payload == base and parsed.base_ok and parsed.concept_payloads == [b"ab"]
    assert section_sizes(header, 3, [2], base_bits=9) == len(data)  # 9 bits pad to the 2 bytes
    assert section_sizes(header, 3, [2], base_bits=16) == len(data)
    empty = pack(make_header([], version=4), b"xyz", [], b"")
    assert unpack(empty).base_payload == b"" and len(empty) == section_sizes(make_header([], version=4), 3, [])


def test_format4_errors():
    with pytest.raises(ValueError, match="base section"):
        pack(make_header([(3, 0)], version=4), b"", [b""], b"")  # level 0 has no entry in format 4
    with pytest.raises(ValueError, match="needs a base payload"):
        pack(make_header([(3, 1)], version=4), b"", [b""])
    with pytest.raises(ValueError, match="has no base section"):
        pack(make_header([(3, 1)]), b"", [b""], b"")
    data = pack(make_header([(3, 1)], version=4), b"xyz", [b"ab"], b"\x07\x08")
    damaged = data[:-3] + bytes((data[-3] ^ 0x10,)) + data[-2:]
    expect_error(damaged, "base section CRC mismatch")
    soft = unpack(damaged, strict=False)
    assert not soft.base_ok and soft.concept_ok == [True] and soft.label_ok
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            unpack(data[:cut])
