"""Container format of the RL-ASC bitstream: ``r_s`` plus every ``r^(m)`` (paper eq. 27).

Layout (big-endian)::

    magic b"RA" | version u8 | flags u8 (bits 0-1 coder: 0 huffman, 1 range; others 0)
    height u16 | width u16 | codec_id 4 bytes | num_classes M u8 | num_levels Q u8
    channels n u8 | K u8 (number of concept sections) | label_len varint (LEB128)
    K x (class_id u8, level u8, payload_len varint)   # class ids strictly increasing
    header_crc u16 (crc32 of all header bytes before it, & 0xFFFF)
    label payload (label_len bytes) | label_crc u16 (crc32 & 0xFFFF)
    K x (payload bytes | concept crc)
    version 4 only: base payload | base_crc u16, to the end of the stream
        version 4 (codecs with a shared base section, ``CodecConfig.base_section``): as version 3, but the
                              header lists only the concepts coded above level 0. The concepts at level 0
                              (those of the label map without an entry) carry no entry, length or CRC of
                              their own: their level-0 symbols, coded with the order-2 extended Huffman code
                              of the level-0 table (pairs of consecutive symbols of a channel; an odd last
                              one with the order-1 code; entropy.encode_base), follow one another bit by bit
                              in class order in one base section padded to a byte, with one CRC; the decoder
                              knows every concept's symbol count from the label map. Saves about 5 bytes,
                              the padding and a third of the code bits per level-0 concept. The base section
                              is in the pair code whatever the coder flag says; the flag (Huffman or range)
                              codes the payloads of the concepts above level 0
        version 3 (codec v2 with the up-right label context): as version 2; the label payload is
                              coded with contexts (left, up, up-right), entropy.LabelMapModel "wnne"
        version 2 (codec v2): crc u16 = crc32(payload) & 0xFFFF, lets through ~1 in 65536
                              damaged payloads; label contexts (left, up)
        version 1 (codec v1): crc u8 = crc32(payload) & 0xFF, ~1 in 256; read and written only
                              for codec v1 (env -v0)

Varints are minimal LEB128 of at most 4 bytes (values < 2**28). Every byte string that is
not a valid stream raises :class:`BitstreamError`, the one documented exception, and
parsing never allocates more than the input's size.
"""
from __future__ import annotations

import numbers
import struct
import zlib
from dataclasses import dataclass, field

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "BitstreamError",
    "StreamHeader",
    "ParsedStream",
    "pack",
    "unpack",
    "section_sizes",
    "varint_size",
]

FORMAT_VERSION = 2
CONCEPT_CRC_BYTES = {1: 1, 2: 2, 3: 2, 4: 2}  # format version -> bytes of each concept payload's CRC
BASE_SECTION_VERSION = 4  # first format version with the shared base section
MAGIC = b"RA"
CODER_IDS = {"huffman": 0, "range": 1}
MIN_SIZE, MAX_SIZE = 8, 8192
MAX_VARINT_BYTES = 4
MAX_SECTION_LEN = (1 << (7 * MAX_VARINT_BYTES)) - 1
_FIXED = struct.Struct(">2sBBHH4sBBBB")  # magic .. K: 16 bytes
_CODER_NAMES = {v: k for k, v in CODER_IDS.items()}


class BitstreamError(ValueError):
    """Bytes that are not a valid RL-ASC bitstream (the message says what is wrong)."""


@dataclass(frozen=True)
class StreamHeader:
    """Everything the decoder needs before the payloads. ``concepts``: (class id, level)."""

    height: int
    width: int
    codec_id: bytes
    num_classes: int
    num_levels: int
    channels: int
    coder: str
    concepts: list[tuple[int, int]] = field(default_factory=list)
    version: int = FORMAT_VERSION  # bitstream format version (1: codec v1 streams)

    @property
    def concept_crc_bytes(self) -> int:
        return CONCEPT_CRC_BYTES[self.version]

    @property
    def has_base(self) -> bool:
        """Format 4: level-0 concepts share one base section at the end of the stream."""
        return self.version >= BASE_SECTION_VERSION

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that the format cannot hold."""
        problem = _header_problem(self)
        if problem:
            raise ValueError(f"invalid stream header: {problem}")


@dataclass
class ParsedStream:
    """Result of :func:`unpack`. Damaged sections (``strict=False``) are flagged not ok;
    a truncated section holds only the bytes that arrived (possibly ``b""``)."""

    header: StreamHeader
    label_payload: bytes
    label_ok: bool
    concept_payloads: list[bytes]
    concept_ok: list[bool]
    base_payload: bytes = b""  # format 4: the level-0 concepts' code words
    base_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.label_ok and all(self.concept_ok) and self.base_ok


# ------------------------------------------------------------------------ varints


def varint_size(value: int) -> int:
    """Bytes of the LEB128 encoding of ``value``."""
    return max(1, -(-int(value).bit_length() // 7))


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Decode a minimal LEB128 varint of at most 4 bytes at ``pos``; returns (value, end)."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise BitstreamError(f"truncated: header ends inside the {what} varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise BitstreamError(f"malformed header: {what} varint is not minimal")
            return value, pos + i + 1
    raise BitstreamError(f"malformed header: {what} varint longer than {MAX_VARINT_BYTES} bytes")


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# ------------------------------------------------------------------------- header


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _header_problem(h: StreamHeader) -> str | None:
    if h.version not in CONCEPT_CRC_BYTES:
        return f"format version {h.version!r} unknown (known: {sorted(CONCEPT_CRC_BYTES)})"
    """First reason why ``h`` is not a valid header, or None."""
    if h.coder not in CODER_IDS:
        return f"coder {h.coder!r} unknown (expected one of {tuple(CODER_IDS)})"
    for name in ("height", "width"):
        v = getattr(h, name)
        if not _is_int(v) or not MIN_SIZE <= v <= MAX_SIZE:
            return f"{name} {v!r} outside [{MIN_SIZE}, {MAX_SIZE}]"
    if not isinstance(h.codec_id, (bytes, bytearray)) or len(h.codec_id) != 4:
        return f"codec_id must be 4 bytes, got {h.codec_id!r}"
    for name in ("num_classes", "num_levels", "channels"):
        v = getattr(h, name)
        if not _is_int(v) or not 1 <= v <= 255:
            return f"{name} {v!r} outside [1, 255]"
    if len(h.concepts) > h.num_classes:
        return f"{len(h.concepts)} concept sections but only {h.num_classes} classes"
    previous = -1
    for cls, level in h.concepts:
        if not _is_int(cls) or not previous < cls < h.num_classes:
            return f"class ids must be strictly increasing ints in [0, {h.num_classes}), got {cls!r}"
        if not _is_int(level) or not 0 <= level < h.num_levels:
            return f"level {level!r} of class {cls} outside [0, {h.num_levels})"
        if h.version >= BASE_SECTION_VERSION and level == 0:
            return f"class {cls} has an entry at level 0: format {h.version} codes level 0 in the base section"
        previous = cls
    return None


def _header_bytes(h: StreamHeader, label_len: int, payload_lens: list[int]) -> bytes:
    fixed = _FIXED.pack(
        MAGIC, h.version, CODER_IDS[h.coder], h.height, h.width, bytes(h.codec_id),
        h.num_classes, h.num_levels, h.channels, len(h.concepts),
    )
    parts = [fixed, _write_varint(label_len)]
    for (cls, level), n in zip(h.concepts, payload_lens):
        parts += [bytes((cls, level)), _write_varint(n)]
    body = b"".join(parts)
    return body + struct.pack(">H", _crc(body) & 0xFFFF)


def section_sizes(header: StreamHeader, label_len: int, payload_lens: list[int], base_bits: int = 0) -> int:
    """Total byte length of ``pack(header, label, payloads, base)`` without building the bytes.

    Fixed 16 bytes + varints + 2 bytes per concept entry + header CRC (2) + label and its
    CRC (2) + every payload and its CRC (2 in formats 2-4, 1 in format 1); format 4 adds the
    base section, ``ceil(base_bits / 8)`` bytes, and its CRC (2). ``8 *`` this is the rate
    ``psi`` of eq. 27.
    """
    if len(payload_lens) != len(header.concepts):
        raise ValueError(f"{len(payload_lens)} payload lengths for {len(header.concepts)} concepts")
    if base_bits and not header.has_base:
        raise ValueError(f"format {header.version} has no base section")
    total = _FIXED.size + varint_size(label_len) + 2 + label_len + 2
    for n in payload_lens:
        total += 2 + varint_size(n) + n + header.concept_crc_bytes
    if header.has_base:
        total += -(-int(base_bits) // 8) + 2
    return total


def pack(header: StreamHeader, label_payload: bytes, concept_payloads: list[bytes],
         base_payload: bytes | None = None) -> bytes:
    """Assemble the bitstream: header, label map ``r_s``, concept payloads ``r^(m)`` and, in format 4, the base
    section (the level-0 concepts' code words, required there, ``b""`` when no concept is at level 0)."""
    header.validate()
    if header.has_base != (base_payload is not None):
        raise ValueError(f"format {header.version} " + ("needs a base payload" if header.has_base
                                                         else "has no base section"))
    if len(concept_payloads) != len(header.concepts):
        raise ValueError(
            f"{len(concept_payloads)} concept payloads for {len(header.concepts)} concepts"
        )
    lens = [len(p) for p in concept_payloads]
    for n in [len(label_payload), *lens]:
        if n > MAX_SECTION_LEN:
            raise ValueError(f"section of {n} bytes exceeds the format limit {MAX_SECTION_LEN}")
    parts = [
        _header_bytes(header, len(label_payload), lens),
        bytes(label_payload),
        struct.pack(">H", _crc(label_payload) & 0xFFFF),
    ]
    crc_bytes = header.concept_crc_bytes
    for p in concept_payloads:
        parts += [bytes(p), (_crc(p) & ((1 << (8 * crc_bytes)) - 1)).to_bytes(crc_bytes, "big")]
    if base_payload is not None:
        parts += [bytes(base_payload), struct.pack(">H", _crc(base_payload) & 0xFFFF)]
    return b"".join(parts)


def _parse_header(data: bytes) -> tuple[StreamHeader, int, list[int], int]:
    """Parse and check the header; returns (header, label_len, payload_lens, header_end)."""
    if len(data) < 2 or data[:2] != MAGIC:
        what = "empty input" if not data else "bad magic"
        raise BitstreamError(f"not an RL-ASC bitstream ({what})")
    if len(data) >= 3 and data[2] not in CONCEPT_CRC_BYTES:
        raise BitstreamError(
            f"format version {data[2]} not supported (this reader: {sorted(CONCEPT_CRC_BYTES)})"
        )
    if len(data) < _FIXED.size:
        raise BitstreamError(
            f"truncated: header needs at least {_FIXED.size} bytes, got {len(data)}"
        )
    _, version, flags, height, width, codec_id, m, q, n, k = _FIXED.unpack_from(data)
    label_len, pos = _read_varint(data, _FIXED.size, "label length")
    concepts, lens = [], []
    for i in range(k):
        if pos + 2 > len(data):
            raise BitstreamError(f"truncated: header ends inside concept entry {i}")
        concepts.append((data[pos], data[pos + 1]))
        length, pos = _read_varint(data, pos + 2, f"concept {i} length")
        lens.append(length)
    if pos + 2 > len(data):
        raise BitstreamError("truncated: header ends before its CRC")
    (stored,) = struct.unpack_from(">H", data, pos)
    if stored != _crc(data[:pos]) & 0xFFFF:
        raise BitstreamError("header CRC mismatch (header damaged)")
    if flags & ~0x03:
        raise BitstreamError(f"malformed header: reserved flag bits set (flags {flags:#04x})")
    if flags not in _CODER_NAMES:
        raise BitstreamError(f"malformed header: unknown coder id {flags}")
    header = StreamHeader(height, width, bytes(codec_id), m, q, n, _CODER_NAMES[flags], concepts, version)
    problem = _header_problem(header)
    if problem:
        raise BitstreamError(f"malformed header: {problem}")
    return header, label_len, lens, pos + 2


def _section(data: bytes, pos: int, length: int, crc_bytes: int) -> tuple[bytes, bool, int]:
    """Cut one section (payload + CRC) at ``pos``; returns (payload, ok, next position)."""
    payload = data[pos : pos + length]
    stored = data[pos + length : pos + length + crc_bytes]
    if len(payload) < length or len(stored) < crc_bytes:
        return payload, False, pos + length + crc_bytes
    mask = (1 << (8 * crc_bytes)) - 1
    ok = int.from_bytes(stored, "big") == _crc(payload) & mask
    return payload, ok, pos + length + crc_bytes


def unpack(
    data: bytes,
    strict: bool = True,
    expected_codec_id: bytes | None = None,
    expected_shape: tuple[int, int, int] | None = None,
    version: int | None = None,
) -> ParsedStream:
    """Parse a bitstream made by :func:`pack`.

    ``strict=True``: any problem raises :class:`BitstreamError`. ``strict=False`` (after a
    noisy channel): a damaged header still raises, but damaged or truncated sections come
    back flagged not ok (truncated ones cut to the bytes present); trailing bytes are
    ignored. ``expected_codec_id`` and ``expected_shape`` = ``(num_classes, num_levels,
    channels)`` reject streams made by another codec; ``version`` a stream of another format
    version (a codec reads only the version it writes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    header, label_len, lens, pos = _parse_header(data)
    if version is not None and header.version != version:
        raise BitstreamError(
            f"bitstream format version {header.version}, but this codec reads version {version} "
            f"(version 1 is written by codec v1, env -v0; version 2 by codec v2, env -v1 to -v5; version 3 by "
            f"codecs with the up-right label-map context; version 4 by codecs with a shared base section): "
            f"decode it with "
            f"the codec that wrote it"
        )
    if expected_codec_id is not None and header.codec_id != bytes(expected_codec_id):
        raise BitstreamError(
            f"made by another codec (id {header.codec_id.hex()}, expected {bytes(expected_codec_id).hex()})"
        )
    if expected_shape is not None:
        _check_shape(header, expected_shape)
    crc_bytes = header.concept_crc_bytes
    declared = pos + label_len + 2 + sum(n + crc_bytes for n in lens)
    if header.has_base:  # the base section runs to the end: at least its CRC
        declared += 2
        if strict and len(data) < declared:
            raise BitstreamError(f"truncated: stream has {len(data)} bytes, header declares at least {declared}")
    elif strict and len(data) < declared:
        raise BitstreamError(f"truncated: stream has {len(data)} bytes, header declares {declared}")
    if strict and len(data) > declared and not header.has_base:
        raise BitstreamError(f"trailing garbage: {len(data) - declared} bytes after the last section")
    label, label_ok, pos = _section(data, pos, label_len, 2)
    if strict and not label_ok:
        raise BitstreamError("label map CRC mismatch (label payload damaged)")
    payloads, oks = [], []
    for (cls, _), n in zip(header.concepts, lens):
        payload, ok, pos = _section(data, pos, n, crc_bytes)
        if strict and not ok:
            raise BitstreamError(f"payload CRC mismatch for concept class {cls}")
        payloads.append(payload)
        oks.append(ok)
    if not header.has_base:
        return ParsedStream(header, label, label_ok, payloads, oks)
    base, base_ok, _ = _section(data, pos, max(0, len(data) - pos - 2), 2)
    if strict and not base_ok:
        raise BitstreamError("base section CRC mismatch (level-0 concepts damaged)")
    return ParsedStream(header, label, label_ok, payloads, oks, base, base_ok)


def _check_shape(header: StreamHeader, expected: tuple[int, int, int]) -> None:
    got = (header.num_classes, header.num_levels, header.channels)
    if tuple(expected) != got:
        raise BitstreamError(
            f"made by another codec configuration: (num_classes, num_levels, channels) = {got}, "
            f"expected {tuple(expected)}"
        )
