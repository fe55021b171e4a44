"""Entropy coding (eq. 26, 27): Huffman / range round trips, label map, persistence."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from codec_models.bitstream import BitstreamError
from codec_models.entropy import (CODERS, LabelMapModel, SymbolTables, decode_label_map, decode_symbols,
                                  encode_label_map, encode_symbols, encoded_bits)

N_CHANNELS = 6
SYMBOLS_PER_LEVEL = [2, 3, 5, 8, 16, 33]


@pytest.fixture(scope="module")
def tables() -> SymbolTables:
    rng = np.random.default_rng(0)
    counts = [rng.dirichlet(np.full(k, 0.3), size=N_CHANNELS) * 1e4 for k in SYMBOLS_PER_LEVEL]
    return SymbolTables.from_counts(counts)


def sample(tables: SymbolTables, level: int, positions: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = tables.probabilities(level)
    return np.stack([rng.choice(p.shape[1], size=positions, p=row) for row in p])


# ------------------------------------------------------------------ concept symbols


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("level", range(len(SYMBOLS_PER_LEVEL)))
@pytest.mark.parametrize("positions", [0, 1, 7, 300])
def test_symbol_round_trip(tables, coder, level, positions):
    sym = sample(tables, level, positions, seed=level * 1000 + positions)
    data = encode_symbols(sym, level, tables, coder)
    assert isinstance(data, bytes)
    out = decode_symbols(data, level, positions, tables, coder)
    assert out.shape == (N_CHANNELS, positions)
    np.testing.assert_array_equal(out, sym)
    assert encoded_bits(sym, level, tables, coder) == 8 * len(data)


@pytest.mark.parametrize("coder", CODERS)
def test_uniform_random_symbols_round_trip(tables, coder):
    """Symbols that the skewed tables find improbable still round-trip."""
    rng = np.random.default_rng(5)
    for level, k in enumerate(SYMBOLS_PER_LEVEL):
        sym = rng.integers(0, k, size=(N_CHANNELS, 123))
        out = decode_symbols(encode_symbols(sym, level, tables, coder), level, 123, tables, coder)
        np.testing.assert_array_equal(out, sym)


def test_huffman_rate_close_to_entropy(tables):
    """Eq. 26: Huffman is within 1 bit/symbol of the ideal code length."""
    level = 4
    sym = sample(tables, level, 2000)
    p = tables.probabilities(level)
    ideal = -np.log2(p[np.arange(N_CHANNELS)[:, None], sym]).sum()
    bits = encoded_bits(sym, level, tables, "huffman")
    assert ideal <= bits <= ideal + sym.size + 8


def test_range_beats_huffman_on_skewed_binary():
    tables = SymbolTables.from_counts([np.array([[970, 30], [990, 10]])])
    sym = sample(tables, 0, 4000, seed=3)
    huff = encode_symbols(sym, 0, tables, "huffman")
    rng_ = encode_symbols(sym, 0, tables, "range")
    assert len(huff) == 2 * 4000 // 8  # one bit per symbol at best
    assert len(rng_) < 0.3 * len(huff)
    np.testing.assert_array_equal(decode_symbols(rng_, 0, 4000, tables, "range"), sym)


def test_long_code_words_use_exact_fallback():
    """Fibonacci counts give Huffman code words longer than 32 bits."""
    fib = [1, 1]
    while len(fib) < 42:
        fib.append(fib[-1] + fib[-2])
    tables = SymbolTables.from_counts([np.array([fib]) - 1])
    sym = np.arange(42)[None, :]
    for coder in CODERS:
        data = encode_symbols(sym, 0, tables, coder)
        np.testing.assert_array_equal(decode_symbols(data, 0, 42, tables, coder), sym)
    assert encoded_bits(sym, 0, tables) == 8 * len(encode_symbols(sym, 0, tables))


def test_single_symbol_alphabet():
    tables = SymbolTables.from_counts([np.zeros((3, 1)), np.ones((3, 2))])
    for coder in CODERS:
        assert encode_symbols(np.zeros((3, 9), int), 0, tables, coder) == b""
        np.testing.assert_array_equal(decode_symbols(b"", 0, 9, tables, coder), 0)


@pytest.mark.parametrize("coder", CODERS)
def test_encode_rejects_bad_input(tables, coder):
    good = sample(tables, 1, 4)
    with pytest.raises(ValueError):
        encode_symbols(good + 3, 1, tables, coder)  # >= K_1 = 3
    with pytest.raises(ValueError):
        encode_symbols(good - 1, 1, tables, coder)
    with pytest.raises(ValueError):
        encode_symbols(good[:-1], 1, tables, coder)  # wrong channel count
    with pytest.raises(ValueError):
        encode_symbols(good.astype(float), 1, tables, coder)
    with pytest.raises(ValueError):
        encode_symbols(good[0], 1, tables, coder)
    with pytest.raises(ValueError):
        encode_symbols(good, len(SYMBOLS_PER_LEVEL), tables, coder)
    with pytest.raises(ValueError):
        decode_symbols(b"", 1, -1, tables, coder)
    with pytest.raises(ValueError):
        encode_symbols(good, 1, tables, "arithmetic")


@pytest.mark.parametrize("coder", CODERS)
def test_decode_corrupted_payloads(tables, coder):
    """Garbage in: symbols in range with the requested shape, or BitstreamError; no hang."""
    rng = np.random.default_rng(7)
    sym = sample(tables, 5, 200)
    good = encode_symbols(sym, 5, tables, coder)
    candidates = [b"", good[:1], good[: len(good) // 2], bytes(len(good)), b"\xff" * len(good)]
    for _ in range(60):
        bad = bytearray(good)
        bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        candidates.append(bytes(bad))
        candidates.append(rng.bytes(int(rng.integers(0, 3 * len(good)))))
    for data in candidates:
        try:
            out = decode_symbols(data, 5, 200, tables, coder)
        except BitstreamError:
            continue
        assert out.shape == (N_CHANNELS, 200)
        assert out.min() >= 0 and out.max() < SYMBOLS_PER_LEVEL[5]


def test_tables_state_dict_round_trip(tables):
    buffer = io.BytesIO()
    torch.save(tables.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    again = SymbolTables.from_state_dict(state)
    assert again.num_levels == tables.num_levels and again.num_channels == N_CHANNELS
    for level in range(tables.num_levels):
        np.testing.assert_array_equal(again.probabilities(level), tables.probabilities(level))
        sym = sample(tables, level, 50)
        for coder in CODERS:
            assert encode_symbols(sym, level, again, coder) == encode_symbols(sym, level, tables, coder)


def test_tables_smoothing_and_validation():
    tables = SymbolTables.from_counts([np.array([[0, 0, 10]])])
    np.testing.assert_allclose(tables.probabilities(0), [[1 / 13, 1 / 13, 11 / 13]])
    with pytest.raises(ValueError):
        SymbolTables.from_counts([np.array([[-1, 2]])])
    with pytest.raises(ValueError):
        SymbolTables.from_counts([np.ones((3, 3)), np.ones((2, 3))])  # a finer level with fewer channels
    with pytest.raises(ValueError):
        SymbolTables.from_counts([])
    with pytest.raises(ValueError):
        SymbolTables.from_state_dict({"counts.1": torch.ones(2, 2, dtype=torch.int64)})


# ------------------------------------------------------------------------ label map


def street_map(height: int, width: int, seed: int, num_classes: int = 19) -> np.ndarray:
    """Piecewise-constant street-like map: sky, buildings, a road trapezoid, rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    lab = np.full((height, width), 10, dtype=np.int64)  # sky
    lab[yy >= height // 3] = 2  # building
    lab[yy >= height // 2] = 1  # sidewalk
    depth = (yy - 0.55 * height) / (0.45 * height)
    lab[(depth > 0) & (np.abs(xx - width / 2) < depth * 0.6 * width + 0.05 * width)] = 0  # road
    for _ in range(6):
        y0, x0 = rng.integers(height // 4, height - 2), rng.integers(0, width - 2)
        h, w = rng.integers(2, max(3, height // 4)), rng.integers(2, max(3, width // 6))
        lab[y0 : y0 + h, x0 : x0 + w] = rng.integers(3, num_classes)
    return lab


@pytest.fixture(scope="module")
def label_model() -> LabelMapModel:
    return LabelMapModel.from_label_maps((street_map(64, 128, s) for s in range(12)), 19)


@pytest.mark.parametrize("shape", [(64, 128), (1, 1), (1, 9), (9, 1), (17, 5), (33, 70)])
def test_label_map_round_trip(label_model, shape):
    lab = street_map(*shape, seed=99) if min(shape) > 4 else np.random.default_rng(0).integers(0, 19, shape)
    data = encode_label_map(lab, label_model)
    out = decode_label_map(data, *shape, label_model)
    assert out.shape == shape
    np.testing.assert_array_equal(out, lab)


def test_label_map_all_classes_noise(label_model):
    lab = np.random.default_rng(1).integers(0, 19, size=(40, 56))
    assert set(np.unique(lab)) == set(range(19))
    out = decode_label_map(encode_label_map(lab.astype(np.uint8), label_model), 40, 56, label_model)
    np.testing.assert_array_equal(out, lab)


def test_label_map_single_class():
    model = LabelMapModel.from_label_maps([np.zeros((8, 8), int)], 1)
    data = encode_label_map(np.zeros((12, 20), int), model)
    np.testing.assert_array_equal(decode_label_map(data, 12, 20, model), 0)
    one_of_many = LabelMapModel.from_label_maps([np.full((200, 200), 4)], 19)
    lab = np.full((30, 40), 4)
    data = encode_label_map(lab, one_of_many)
    assert len(data) <= 8
    np.testing.assert_array_equal(decode_label_map(data, 30, 40, one_of_many), lab)


def test_label_map_rate_on_street_scene(label_model):
    lab = street_map(64, 128, seed=123)
    data = encode_label_map(lab, label_model)
    bpp = 8 * len(data) / lab.size
    print(f"label map 64x128: {len(data)} bytes, {bpp:.4f} bpp (ideal {label_model.bits(lab) / lab.size:.4f})")
    assert bpp < 0.25
    assert 8 * len(data) <= label_model.bits(lab) + 32  # range coder overhead < one word


def test_label_map_errors_and_garbage(label_model):
    with pytest.raises(ValueError):
        encode_label_map(np.full((4, 4), 19), label_model)
    with pytest.raises(ValueError):
        encode_label_map(np.zeros((2, 2, 2), int), label_model)
    with pytest.raises(ValueError):
        decode_label_map(b"", 0, 4, label_model)
    rng = np.random.default_rng(2)
    good = encode_label_map(street_map(32, 48, 5), label_model)
    for data in [b"", good[:3], rng.bytes(40), bytes(good[:-1]) + b"\x00", b"\xff" * 64]:
        try:
            out = decode_label_map(data, 32, 48, label_model)
        except BitstreamError:
            continue
        assert out.shape == (32, 48) and out.max() < 19


def test_label_model_state_dict_round_trip(label_model):
    buffer = io.BytesIO()
    torch.save(label_model.state_dict(), buffer)
    buffer.seek(0)
    again = LabelMapModel.from_state_dict(torch.load(buffer, weights_only=True))
    assert again.num_classes == 19
    lab = street_map(40, 64, 8)
    assert encode_label_map(lab, again) == encode_label_map(lab, label_model)
    with pytest.raises(ValueError):
        LabelMapModel.from_state_dict({"counts": torch.ones(3, 3, 3, dtype=torch.int64)})


def test_tables_pickle_after_use(tables):
    """Caches of constriction objects are dropped on pickling (subprocess vector envs)."""
    import copy
    import pickle

    sym = sample(tables, 2, 40)
    data = encode_symbols(sym, 2, tables, "huffman") + encode_symbols(sym, 2, tables, "range")
    decode_symbols(encode_symbols(sym, 2, tables, "range"), 2, 40, tables, "range")
    for again in (pickle.loads(pickle.dumps(tables)), copy.deepcopy(tables)):
        assert encode_symbols(sym, 2, again, "huffman") + encode_symbols(sym, 2, again, "range") == data


# ------------------------------------------------------------ format 4: the base section's pair code


def test_base_section_round_trip_and_exact_lengths(tables):
    from codec_models.entropy import base_code_length, decode_base, encode_base

    rng = np.random.default_rng(4)
    for level in range(tables.num_levels):
        n, k = tables.channels(level), tables.num_symbols(level)
        probs = tables.probabilities(level)
        counts = [0, 1, 2, 7, 30]  # empty, odd, even concepts
        symbols = [np.stack([rng.choice(k, size=c, p=probs[ch]) for ch in range(n)]) for c in counts]
        data = encode_base(symbols, level, tables)
        bits = sum(base_code_length(s, level, tables) for s in symbols)
        assert len(data) == -(-bits // 8)  # code words bit by bit, padded once
        for got, want in zip(decode_base(data, level, counts, tables), symbols):
            np.testing.assert_array_equal(got, want)
    assert encode_base([], 0, tables) == b"" and decode_base(b"", 0, [], tables) == []


def test_pair_code_beats_the_order1_code_on_a_dominant_symbol():
    from codec_models.entropy import base_code_length, encoded_bits

    skewed = SymbolTables([np.array([[2, 13, 78, 8, 1]]) * 100])  # tiny-sf2's level 0, roughly: 1.30 vs 0.96 bits
    rng = np.random.default_rng(0)
    sym = rng.choice(5, size=(1, 4000), p=skewed.probabilities(0)[0])
    pair_bits = base_code_length(sym, 0, skewed)
    entropy_bits = -np.log2(skewed.probabilities(0)[0][sym]).sum()
    assert pair_bits < 0.85 * encoded_bits(sym, 0, skewed, "huffman") and pair_bits < 1.15 * entropy_bits


def test_base_section_truncated_raises(tables):
    from codec_models.entropy import decode_base, encode_base

    rng = np.random.default_rng(1)
    sym = rng.integers(0, tables.num_symbols(0), size=(tables.channels(0), 200))
    data = encode_base([sym], 0, tables)
    with pytest.raises(BitstreamError, match="base section"):
        decode_base(data[: len(data) // 4], 0, [200], tables)
