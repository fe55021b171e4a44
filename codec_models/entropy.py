"""Entropy coding of the semantic bitstream (paper Sec. III-A, eq. 26 and 27).

Two parts are coded (eq. 27: ``psi = l(r_s) + sum_m l(r^(m))``):

* the quantized features of every semantic concept, ``r^(m) = Huffman(f_hat^(m))``
  (eq. 26): per quantization level ``q`` and channel ``k`` a fixed frequency table
  (:class:`SymbolTables`, built at training time and shipped with the weights) gives a
  Huffman code; ``coder="range"`` codes the same per-channel categorical models with
  constriction's range coder instead, which saves the up-to-one-bit-per-symbol overhead;
* the label map ``s`` (``r_s``), coded losslessly with a range coder under the context
  model ``P(label | left, up)`` (:class:`LabelMapModel`).

Symbol arrays have shape ``(n, P)`` (channels x positions of the concept's mask) and are
coded channel by channel, positions in order. Huffman payloads are padded with zero bits
to whole bytes; range-coder payloads are 32-bit words written big-endian, with the last
word cut to the fewest bytes that still decode (the decoder reads missing bytes as zero).
"""
from __future__ import annotations

from functools import lru_cache
from collections.abc import Iterable, Sequence

import constriction
import numpy as np
import torch

from .bitstream import BitstreamError

__all__ = [
    "CODERS",
    "SymbolTables",
    "LabelMapModel",
    "encode_symbols",
    "decode_symbols",
    "encoded_bits",
    "base_code_length",
    "encode_base",
    "decode_base",
    "encode_label_map",
    "decode_label_map",
]

CODERS = ("huffman", "range")

_huffman = constriction.symbol.huffman
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder
# One model family for every range-coded symbol; `perfect=False` must match on both sides.
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


# --------------------------------------------------------------------------- helpers


def _check_coder(coder: str) -> None:
    if coder not in CODERS:
        raise ValueError(f"unknown coder {coder!r}; expected one of {CODERS}")


def _smoothed(counts: np.ndarray, ndim: int, what: str) -> np.ndarray:
    """Validate a count array and apply add-one (Laplace) smoothing."""
    arr = np.asarray(counts)
    if arr.ndim != ndim or arr.size == 0:
        raise ValueError(f"{what}: expected a non-empty {ndim}-D count array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what}: counts must be finite and non-negative")
    return np.rint(arr).astype(np.int64) + 1


def _counts_from_tensor(value: object, ndim: int, what: str) -> np.ndarray:
    """Counts stored by ``state_dict`` (already smoothed, so every entry is >= 1)."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.ndim != ndim or arr.size == 0 or np.any(arr < 1):
        raise ValueError(f"{what}: stored counts must be a {ndim}-D array of entries >= 1")
    return arr.astype(np.int64)


def _range_finish(encoder: "_RangeEncoder") -> bytes:
    """Seal a range encoder into bytes, cutting the final word to as few bytes as decode.

    constriction seals with one word ``w`` such that ``w * 2**32`` lies in the coder's final
    interval ``[lower, lower + range)`` (64-bit state) and the decoder reads zeros past the
    end. Any point of that interval whose low bytes are zero decodes identically, so we
    emit only the leading bytes of the smallest such point. Whenever the coder's state does
    not match this picture (e.g. a pending carry), the sealed words are kept unchanged.
    """
    words = encoder.get_compressed()
    position, (lower, rng) = encoder.pos()
    full = words.astype(">u4").tobytes()
    if len(words) != position + 1 or -(-lower >> 32) != int(words[-1]):
        return full
    for keep in range(5):  # bytes of the last word to keep
        grain = 1 << (64 - 8 * keep)
        point = -(-lower // grain) * grain
        if point < lower + rng and point < 1 << 64:
            return full[: 4 * position] + int(point >> 32).to_bytes(4, "big")[:keep]
    return full


def _range_decoder(data: bytes) -> "_RangeDecoder":
    padded = bytes(data) + bytes(-len(data) % 4)
    return _RangeDecoder(np.frombuffer(padded, dtype=">u4").astype(np.uint32))


def _as_symbols(symbols: np.ndarray, num_channels: int, num_symbols: int) -> np.ndarray:
    """Validate a ``(n, P)`` integer symbol array; out-of-range values -> ValueError."""
    arr = np.asarray(symbols)
    if arr.ndim != 2 or arr.shape[0] != num_channels:
        raise ValueError(f"symbols must have shape ({num_channels}, P), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"symbols must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_symbols):
        raise ValueError(
            f"symbol out of range [0, {num_symbols}): min {arr.min()}, max {arr.max()}"
        )
    return arr.astype(np.int64, copy=False)


# --------------------------------------------------------------------- symbol tables


class _HuffmanLevel:
    """Huffman codes of one level (eq. 26): constriction's trees plus a flat code table.

    ``codes[c * K + s]`` holds the code word of symbol ``s`` in channel ``c`` as emitted by
    constriction (first bit in the least significant position), ``lengths`` its length.
    """

    def __init__(self, probabilities: np.ndarray) -> None:
        n, k = probabilities.shape
        self.num_symbols = k
        self.encoders = [_huffman.EncoderHuffmanTree(probabilities[c]) for c in range(n)]
        self.decoders = [_huffman.DecoderHuffmanTree(probabilities[c]) for c in range(n)]
        codes = np.zeros(n * k, dtype=np.uint64)
        lengths = np.zeros(n * k, dtype=np.int64)
        for c, tree in enumerate(self.encoders):
            for s in range(k):
                enc = constriction.symbol.QueueEncoder()
                enc.encode_symbol(s, tree)
                words, nbits = enc.get_compressed_and_bitrate()
                lengths[c * k + s] = nbits
                if nbits <= _MAX_FAST_CODE:
                    codes[c * k + s] = int(words[0]) if len(words) else 0
        self.codes = codes
        self.lengths = lengths
        self.fast = int(lengths.max()) <= _MAX_FAST_CODE
        # Bit matrix (one row per code word, padded) for short messages.
        self.width = max(int(lengths.max()), 1)
        shifts = np.arange(self.width, dtype=np.uint64)
        self.bit_rows = ((codes[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        self.bit_valid = shifts[None, :] < lengths[:, None].astype(np.uint64)

    def flat_index(self, sym: np.ndarray) -> np.ndarray:
        return (sym + (np.arange(sym.shape[0]) * self.num_symbols)[:, None]).reshape(-1)


class _PairCode:
    """The order-2 extended Huffman code of one level (format 4's base section): one Huffman code over the pairs
    of consecutive symbols of a channel, built on the product of the level's probabilities (the i.i.d. model of
    eq. 26, so no new statistics), and the level's order-1 code for an odd last symbol. A dominant symbol costs
    the order-1 code at least one bit; a pair code spends about half that (tiny-sf2's level 0: 1.30 bits per
    symbol with the order-1 code, 0.96 entropy)."""

    def __init__(self, probabilities: np.ndarray) -> None:
        n, k = probabilities.shape
        self.num_symbols = k
        self.pairs = _HuffmanLevel((probabilities[:, :, None] * probabilities[:, None, :]).reshape(n, k * k))
        self.single = _HuffmanLevel(probabilities)
        if not (self.pairs.fast and self.single.fast):
            raise ValueError(f"pair code words longer than {_MAX_FAST_CODE} bits: this level cannot use the base "
                             "section's pair code")

    def code_words(self, sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, lengths) of one concept's symbols ``(C, P)``: per channel, its pairs then an odd last symbol."""
        c, p = sym.shape
        half = p // 2
        pairs = self.pairs.flat_index(sym[:, 0:2 * half:2] * self.num_symbols + sym[:, 1:2 * half:2]).reshape(c, half)
        codes, lengths = self.pairs.codes[pairs], self.pairs.lengths[pairs]
        if p % 2:
            last = self.single.flat_index(sym[:, -1:])
            codes = np.concatenate([codes, self.single.codes[last].reshape(c, 1)], axis=1)
            lengths = np.concatenate([lengths, self.single.lengths[last].reshape(c, 1)], axis=1)
        return codes.reshape(-1), lengths.reshape(-1)


_MAX_FAST_CODE = 32  # code words up to one 32-bit word take the vectorised paths
_MAX_BIT_MATRIX = 4096  # symbols x longest code word up to which the bit matrix is faster


class SymbolTables:
    """Fixed frequency tables of the quantized features, per level ``q`` and channel ``k``.

    ``counts[q]`` has shape ``(C_q, K_q)``: ``C_q`` the channels level ``q`` sends (codec v1:
    all n at every level; codec v2: fewer at coarse levels, non-decreasing in q). Symbol
    probabilities are ``counts / sum``. These are the code tables of eq. 26, fixed at training
    time and stored with the weights.
    """

    def __init__(self, smoothed_counts: list[np.ndarray]) -> None:
        if not smoothed_counts:
            raise ValueError("SymbolTables needs at least one level")
        for q, c in enumerate(smoothed_counts):
            if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1 or np.any(c < 1):
                raise ValueError(f"level {q}: counts must have shape (C_q, K_q) with entries >= 1")
            if q and c.shape[0] < smoothed_counts[q - 1].shape[0]:
                raise ValueError(f"level {q} codes {c.shape[0]} channels, fewer than level {q - 1}")
            if c.shape[1] > 1 << 16:
                raise ValueError(f"level {q}: at most 65536 symbols, got {c.shape[1]}")
        self._counts = [np.ascontiguousarray(c, dtype=np.int64) for c in smoothed_counts]
        self._probs = [c / c.sum(axis=1, keepdims=True) for c in self._counts]
        self._probs32 = [p.astype(np.float32) for p in self._probs]
        self._huffman: dict[int, _HuffmanLevel] = {}
        self._pair_codes: dict[int, _PairCode] = {}
        self._range_models: dict[int, list] = {}

    @classmethod
    def from_counts(cls, counts: list[np.ndarray]) -> "SymbolTables":
        """Tables from raw symbol counts ``counts[q]`` of shape ``(n, K_q)`` (+1 smoothing)."""
        return cls([_smoothed(c, 2, f"counts[{q}]") for q, c in enumerate(counts)])

    @classmethod
    def uniform(cls, num_channels: int, symbols_per_level: list[int]) -> "SymbolTables":
        """Tables with equal probabilities (before any statistics are collected)."""
        return cls.from_counts([np.zeros((num_channels, k)) for k in symbols_per_level])

    # ----- shape
    @property
    def num_levels(self) -> int:
        return len(self._counts)

    @property
    def num_channels(self) -> int:
        """Channels of the highest level (all n)."""
        return int(self._counts[-1].shape[0])

    def channels(self, level: int) -> int:
        """``C_q``, the channels that ``level`` codes."""
        return int(self._counts[self._level(level)].shape[0])

    def num_symbols(self, level: int) -> int:
        """``K_q``, the number of quantization centres of ``level``."""
        return int(self._counts[self._level(level)].shape[1])

    def probabilities(self, level: int) -> np.ndarray:
        """``(n, K_q)`` float64 symbol probabilities of ``level`` (read-only view)."""
        p = self._probs[self._level(level)].view()
        p.flags.writeable = False
        return p

    def _level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level < self.num_levels:
            raise ValueError(f"level must be an int in [0, {self.num_levels}), got {level!r}")
        return int(level)

    def _range_level(self, level: int) -> list:
        """Concrete per-channel categorical models (same quantization as the lazy family)."""
        models = self._range_models.get(level)
        if models is None:
            models = self._range_models[level] = [
                constriction.stream.model.Categorical(row, perfect=False) for row in self._probs32[level]
            ]
        return models

    def _huffman_level(self, level: int) -> _HuffmanLevel:
        table = self._huffman.get(level)
        if table is None:
            table = self._huffman[level] = _HuffmanLevel(self._probs[level])
        return table

    def _pair_level(self, level: int) -> _PairCode:
        code = self._pair_codes.get(level)
        if code is None:
            code = self._pair_codes[level] = _PairCode(self._probs[level])
        return code

    # ----- persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"counts.<q>": int64 tensor (n, K_q)}`` (smoothed counts)."""
        return {f"counts.{q}": torch.from_numpy(c.copy()) for q, c in enumerate(self._counts)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "SymbolTables":
        """Inverse of :meth:`state_dict`."""
        keys = [k for k in state if k.startswith("counts.")]
        levels = sorted(int(k.split(".", 1)[1]) for k in keys)
        if not levels or levels != list(range(len(levels))):
            raise ValueError(f"state dict needs keys counts.0 .. counts.<Q-1>, got {sorted(state)}")
        return cls([_counts_from_tensor(state[f"counts.{q}"], 2, f"counts.{q}") for q in levels])

    def __getstate__(self) -> dict:
        """Pickle without the constriction caches (rebuilt on demand), e.g. for subprocess envs."""
        return {"counts": self._counts}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["counts"])

    def __repr__(self) -> str:
        ks = [c.shape[1] for c in self._counts]
        cs = [c.shape[0] for c in self._counts]
        return f"SymbolTables(channels_per_level={cs}, symbols_per_level={ks})"


# ------------------------------------------------------------- concept payloads (26)


def _huffman_encode(sym: np.ndarray, table: _HuffmanLevel) -> bytes:
    """Concatenate the code words, LSB first in little-endian 32-bit words, cut to bytes.

    Vectorised two ways (the faster one is picked by size): short messages select the
    valid bits of each code word's bit row and ``packbits`` them; long ones place every
    code word (<= 32 bits, so it touches at most two words) with ``bincount``, which is
    exact in float64 because the bit fields are disjoint.
    """
    if not table.fast:
        return _huffman_encode_slow(sym, table)
    index = table.flat_index(sym)
    if index.size * table.width <= _MAX_BIT_MATRIX:
        bits = table.bit_rows[index][table.bit_valid[index]]
        return np.packbits(bits, bitorder="little").tobytes()
    return _pack_code_words(table.codes[index], table.lengths[index])


def _pack_code_words(codes: np.ndarray, lengths: np.ndarray) -> bytes:
    """Code words (<= 32 bits each) one after another, LSB first in little-endian 32-bit words (constriction's
    QueueEncoder layout), cut to whole bytes. Each word touches at most two 32-bit words, placed with
    ``bincount``, exact in float64 because the bit fields are disjoint."""
    end = np.cumsum(lengths)
    total = int(end[-1]) if end.size else 0
    if not total:
        return b""
    start = end - lengths
    word = start >> 5
    shifted = codes << (start & 31).astype(np.uint64)
    parts = np.concatenate((shifted & np.uint64(0xFFFFFFFF), shifted >> np.uint64(32)))
    words = np.bincount(np.concatenate((word, word + 1)), parts.astype(np.float64))
    return words.astype("<u4").tobytes()[: -(-total // 8)]


def _huffman_encode_slow(sym: np.ndarray, table: _HuffmanLevel) -> bytes:
    """Symbol-by-symbol constriction encoding, for tables with code words over 32 bits."""
    encoder = constriction.symbol.QueueEncoder()
    for tree, row in zip(table.encoders, sym.tolist()):
        for s in row:
            encoder.encode_symbol(s, tree)
    words, nbits = encoder.get_compressed_and_bitrate()
    return words.astype("<u4").tobytes()[: -(-nbits // 8)]


def _range_encode(sym: np.ndarray, probs32: np.ndarray) -> bytes:
    encoder = _RangeEncoder()
    if sym.size and probs32.shape[1] > 1:  # a one-symbol alphabet carries no information
        encoder.encode(
            sym.reshape(-1).astype(np.int32), _CATEGORICAL, np.repeat(probs32, sym.shape[1], axis=0)
        )
    return _range_finish(encoder)


def encode_symbols(
    symbols: np.ndarray, level: int, tables: SymbolTables, coder: str = "huffman"
) -> bytes:
    """Entropy-code one concept's quantized features, ``r^(m) = Huffman(f_hat^(m))`` (eq. 26).

    ``symbols``: integer array ``(C_level, P)`` with values in ``[0, K_level)``. ``coder``:
    ``"huffman"`` (per-channel Huffman codes, padded to whole bytes) or ``"range"``.
    """
    _check_coder(coder)
    level = tables._level(level)
    sym = _as_symbols(symbols, tables.channels(level), tables.num_symbols(level))
    if coder == "huffman":
        return _huffman_encode(sym, tables._huffman_level(level))
    return _range_encode(sym, tables._probs32[level])


def base_code_length(symbols: np.ndarray, level: int, tables: SymbolTables) -> int:
    """Bits of one concept's symbols ``(C_level, P)`` in a format-4 base section (the order-2 pair code, no
    padding): what the concept adds there, exactly, since code words follow one another bit by bit."""
    level = tables._level(level)
    sym = _as_symbols(symbols, tables.channels(level), tables.num_symbols(level))
    return int(tables._pair_level(level).code_words(sym)[1].sum())


def encode_base(symbols: Sequence[np.ndarray], level: int, tables: SymbolTables) -> bytes:
    """Format 4's base section: the pair-code words of every concept's symbols ``(C_level, P_i)``, in the given
    order, one after another, padded once to a byte."""
    level = tables._level(level)
    code = tables._pair_level(level)
    words = [code.code_words(_as_symbols(s, tables.channels(level), tables.num_symbols(level))) for s in symbols]
    if not words:
        return b""
    return _pack_code_words(np.concatenate([w[0] for w in words]), np.concatenate([w[1] for w in words]))


def decode_base(data: bytes, level: int, counts: Sequence[int], tables: SymbolTables) -> list[np.ndarray]:
    """Inverse of :func:`encode_base` for concepts of ``counts`` positions: int64 arrays ``(C_level, P_i)``.
    Data that ends early raises :class:`BitstreamError`."""
    level = tables._level(level)
    code = tables._pair_level(level)
    n, k = tables.channels(level), tables.num_symbols(level)
    padded = bytes(data) + bytes(-len(data) % 4)
    decoder = constriction.symbol.QueueDecoder(np.frombuffer(padded, dtype="<u4").copy())
    out = []
    try:
        for count in counts:
            sym = np.empty((n, int(count)), dtype=np.int64)
            for c in range(n):
                pairs = np.array([decoder.decode_symbol(code.pairs.decoders[c]) for _ in range(count // 2)],
                                 dtype=np.int64)
                sym[c, 0:2 * (count // 2):2], sym[c, 1:2 * (count // 2):2] = pairs // k, pairs % k
                if count % 2:
                    sym[c, -1] = decoder.decode_symbol(code.single.decoders[c])
            out.append(sym)
    except Exception as err:  # constriction: "Ran out of bits in compressed data."
        raise BitstreamError(f"truncated: base section of {len(data)} bytes ended early") from err
    return out


def encoded_bits(
    symbols: np.ndarray, level: int, tables: SymbolTables, coder: str = "huffman"
) -> int:
    """``8 * len(encode_symbols(...))`` (the ``l(r^(m))`` of eq. 27); cheap for Huffman."""
    _check_coder(coder)
    level = tables._level(level)
    if coder == "range":
        return 8 * len(encode_symbols(symbols, level, tables, "range"))
    sym = _as_symbols(symbols, tables.channels(level), tables.num_symbols(level))
    table = tables._huffman_level(level)
    nbits = int(table.lengths[table.flat_index(sym)].sum())
    return 8 * (-(-nbits // 8))


def _huffman_decode(data: bytes, table: _HuffmanLevel, num_positions: int) -> np.ndarray:
    padded = bytes(data) + bytes(-len(data) % 4)
    decoder = constriction.symbol.QueueDecoder(np.frombuffer(padded, dtype="<u4").copy())
    out = np.empty((len(table.decoders), num_positions), dtype=np.int64)
    try:
        for c, tree in enumerate(table.decoders):
            out[c] = [decoder.decode_symbol(tree) for _ in range(num_positions)]
    except Exception as err:  # constriction: "Ran out of bits in compressed data."
        raise BitstreamError(f"truncated: Huffman payload of {len(data)} bytes ended early") from err
    return out


def decode_symbols(
    data: bytes, level: int, num_positions: int, tables: SymbolTables, coder: str = "huffman"
) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: an int64 array ``(C_level, num_positions)``.

    Corrupted data gives garbage symbols (always in range) or :class:`BitstreamError`.
    """
    _check_coder(coder)
    level = tables._level(level)
    if not isinstance(num_positions, (int, np.integer)) or num_positions < 0:
        raise ValueError(f"num_positions must be a non-negative int, got {num_positions!r}")
    n, num_positions = tables.channels(level), int(num_positions)
    if n * num_positions == 0 or tables.num_symbols(level) == 1:
        return np.zeros((n, num_positions), dtype=np.int64)
    if coder == "huffman":
        return _huffman_decode(data, tables._huffman_level(level), num_positions)
    out = np.empty((n, num_positions), dtype=np.int64)
    decoder = _range_decoder(data)
    try:
        for c, model in enumerate(tables._range_level(level)):
            out[c] = decoder.decode(model, num_positions)
    except Exception as err:  # constriction signals invalid data in several ways
        raise BitstreamError(f"range-coded payload could not be decoded: {err}") from err
    return out


# ------------------------------------------------------------------ label map (r_s)


class LabelMapModel:
    """Context model of the lossless label map ``r_s`` (eq. 27).

    Two context sets, told apart by the shape of the counts:

    - ``"wn"`` (codecs up to v2, bitstream versions 1-2): ``P(label | left, up)``, counts
      ``(M+1, M+1, M)``;
    - ``"wnne"`` (bitstream version 3): ``P(label | left, up, up-right)``, counts
      ``(M+1, M+1, M+1, M)``: the up-right neighbour sees a boundary one pixel before it reaches the
      current column, which saves 8% of the label bits on the streets data
      (experiments/semantic_fidelity/label_map_coding.md).

    Contexts are class ids in ``[0, M]``, ``M`` standing for "outside the image". Counts are add-one
    smoothed.
    """

    NEIGHBOURS = {3: "wn", 4: "wnne"}  # counts ndim -> context set

    def __init__(self, smoothed_counts: np.ndarray) -> None:
        c = np.asarray(smoothed_counts)
        if c.ndim not in self.NEIGHBOURS or c.shape[-1] < 1 or any(d != c.shape[-1] + 1 for d in c.shape[:-1]):
            raise ValueError(f"label counts must have shape (M+1, M+1, M) or (M+1, M+1, M+1, M), got {c.shape}")
        if c.shape[-1] > 255 or np.any(c < 1):
            raise ValueError("label counts: at most 255 classes, entries >= 1")
        self._counts = np.ascontiguousarray(c, dtype=np.int64)
        self.neighbours = self.NEIGHBOURS[c.ndim]
        probs = self._counts / self._counts.sum(axis=-1, keepdims=True)
        # Row ``context`` (see :func:`_contexts`) holds the distribution of that context.
        self._table = probs.reshape(-1, self.num_classes).astype(np.float32)

    @property
    def num_classes(self) -> int:
        return int(self._counts.shape[-1])

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "LabelMapModel":
        """Model from raw ``(M+1, M+1, M)`` or ``(M+1, M+1, M+1, M)`` context counts (+1 smoothing)."""
        counts = np.asarray(counts)
        return cls(_smoothed(counts, counts.ndim if counts.ndim in cls.NEIGHBOURS else 3, "label counts"))

    @classmethod
    def from_label_maps(cls, label_maps: Iterable[np.ndarray], num_classes: int,
                        neighbours: str = "wn") -> "LabelMapModel":
        """Count ``(context, label)`` pairs over training label maps (values in ``[0, M)``)."""
        m = int(num_classes)
        if not 1 <= m <= 255:
            raise ValueError(f"num_classes must be in [1, 255], got {num_classes}")
        ndim = {v: k for k, v in cls.NEIGHBOURS.items()}.get(neighbours)
        if ndim is None:
            raise ValueError(f"neighbours must be one of {sorted(cls.NEIGHBOURS.values())}, got {neighbours!r}")
        shape = (m + 1,) * (ndim - 1) + (m,)
        counts = np.zeros(int(np.prod(shape)), dtype=np.int64)
        for labels in label_maps:
            lab = _as_label_map(labels, m)
            index = _contexts(lab, m, neighbours) * m + lab.reshape(-1)
            counts += np.bincount(index, minlength=counts.size)
        return cls.from_counts(counts.reshape(shape))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"counts": int64 tensor}`` (smoothed counts; their shape tells the context set)."""
        return {"counts": torch.from_numpy(self._counts.copy())}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "LabelMapModel":
        """Inverse of :meth:`state_dict`."""
        if "counts" not in state:
            raise ValueError(f"state dict needs key 'counts', got {sorted(state)}")
        counts = state["counts"]
        ndim = counts.dim() if isinstance(counts, torch.Tensor) else np.asarray(counts).ndim
        return cls(_counts_from_tensor(counts, ndim if ndim in cls.NEIGHBOURS else 3, "counts"))

    def contexts(self, lab: np.ndarray) -> np.ndarray:
        """Flat context index of every pixel (row-major)."""
        return _contexts(lab, self.num_classes, self.neighbours)

    def bits(self, labels: np.ndarray) -> float:
        """Ideal code length (bits) of ``labels`` under the model (no coder overhead)."""
        lab = _as_label_map(labels, self.num_classes)
        p = self._table[self.contexts(lab), lab.reshape(-1)]
        return float(-np.log2(p.astype(np.float64)).sum())

    def __repr__(self) -> str:
        return f"LabelMapModel(num_classes={self.num_classes}, neighbours={self.neighbours!r})"


def _as_label_map(labels: np.ndarray, num_classes: int) -> np.ndarray:
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.ndim != 2 or lab.size == 0:
        raise ValueError(f"label map must be a non-empty 2-D array, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"label map must hold integers, got dtype {lab.dtype}")
    if lab.min() < 0 or lab.max() >= num_classes:
        raise ValueError(f"label out of range [0, {num_classes}): min {lab.min()}, max {lab.max()}")
    return lab.astype(np.int64, copy=False)


def _contexts(lab: np.ndarray, m: int, neighbours: str = "wn") -> np.ndarray:
    """Flat context index of every pixel (row-major): ``left * (M + 1) + up`` (``"wn"``), or
    ``(left * (M + 1) + up) * (M + 1) + up_right`` (``"wnne"``); ``M`` outside the image."""
    h, w = lab.shape
    padded = np.full((h + 1, w + 2), m, dtype=np.int64)
    padded[1:, 1:-1] = lab
    ctx = padded[1:, :-2] * (m + 1) + padded[:-1, 1:-1]
    if neighbours == "wnne":
        ctx = ctx * (m + 1) + padded[:-1, 2:]
    elif neighbours != "wn":
        raise ValueError(f"unknown label-map context set {neighbours!r}")
    return ctx.reshape(-1)


@lru_cache(maxsize=8)
def _wavefront_order(height: int, width: int, slope: int = 1) -> np.ndarray:
    """Pixels (row-major flat indices) by wavefront ``slope * i + j``, row ascending within one.

    With ``slope`` 1 (contexts left and up) the context of pixel ``(i, j)`` lies on wavefronts before
    ``i + j``; with ``slope`` 2 (left, up and up-right) before ``2i + j``. So the decoder decodes a
    whole wavefront in one vectorised call once the previous ones are known.
    """
    i, j = np.indices((height, width)).reshape(2, -1)
    order = np.lexsort((i, slope * i + j))
    order.flags.writeable = False
    return order


def _slope(model: LabelMapModel) -> int:
    return 2 if model.neighbours == "wnne" else 1


def encode_label_map(labels: np.ndarray, model: LabelMapModel) -> bytes:
    """Losslessly code an ``HxW`` label map into ``r_s`` (range coder, one vectorised call)."""
    m = model.num_classes
    lab = _as_label_map(labels, m)
    if m == 1:  # a single class carries no information
        return b""
    order = _wavefront_order(*lab.shape, _slope(model))
    ctx = model.contexts(lab)[order]
    encoder = _RangeEncoder()
    encoder.encode(lab.reshape(-1)[order].astype(np.int32), _CATEGORICAL, model._table[ctx])
    return _range_finish(encoder)


def decode_label_map(data: bytes, height: int, width: int, model: LabelMapModel) -> np.ndarray:
    """Inverse of :func:`encode_label_map`: a ``uint8`` ``(height, width)`` map.

    Decodes one wavefront per call (``height + width - 1`` calls, ``2 * height + width - 2``
    with the up-right context); memory stays at a few bytes per pixel. Corrupted data gives a
    garbage map (labels in range) or :class:`BitstreamError`.
    """
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 1 << 14:
            raise ValueError(f"{name} must be an int in [1, 16384], got {v!r}")
    m, height, width = model.num_classes, int(height), int(width)
    if m == 1:
        return np.zeros((height, width), dtype=np.uint8)
    slope = _slope(model)
    stride = width + 2
    # Decoded labels with a border of M above, left and right: pixel (i, j) at [i+1, j+1].
    padded = np.full((height + 1) * stride, m, dtype=np.uint8)
    rows = np.arange(height, dtype=np.intp)
    decoder = _range_decoder(data)
    table = model._table
    try:
        for d in range(slope * (height - 1) + width):
            i = rows[(d - slope * rows >= 0) & (d - slope * rows < width)]
            target = (i + 1) * stride + (d - slope * i) + 1
            ctx = padded[target - 1].astype(np.intp) * (m + 1) + padded[target - stride]
            if slope == 2:
                ctx = ctx * (m + 1) + padded[target - stride + 1]
            padded[target] = decoder.decode(_CATEGORICAL, table[ctx])
    except Exception as err:  # constriction signals invalid data in several ways
        raise BitstreamError(f"label map payload could not be decoded: {err}") from err
    return padded.reshape(height + 1, stride)[1:, 1:-1].copy()
