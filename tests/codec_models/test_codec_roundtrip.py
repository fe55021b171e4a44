"""compress / decompress through real bytes; validation of inputs; graceful degradation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from codec_models import BitstreamError
from codec_models.channel import BinarySymmetric


def test_roundtrip_matches_tensor_path(test_codec, test_dataset):
    image, _ = test_dataset[3]
    data = test_codec.compress(image)
    assert isinstance(data, bytes) and len(data) > 0
    assert test_codec.compress(image) == data  # deterministic
    x_hat = test_codec.decompress(data)
    assert x_hat.shape == image.shape
    analysis = test_codec.analyse(image[None])
    levels = torch.full((1, test_codec.num_classes), test_codec.num_levels - 1)
    torch.testing.assert_close(x_hat, test_codec.decode(analysis, levels)[0], rtol=0, atol=1e-6)


def test_lower_levels_cost_fewer_bytes(test_codec, test_dataset):
    image, _ = test_dataset[1]
    sizes = [len(test_codec.compress(image, {m: q for m in range(test_codec.num_classes)}))
             for q in range(test_codec.num_levels)]
    assert sizes[0] < sizes[-1]
    assert sizes == sorted(sizes)


def test_levels_per_concept_round_trip(test_codec, test_dataset):
    image, _ = test_dataset[2]
    analysis = test_codec.analyse(image[None])
    present = analysis.present[0].nonzero().flatten().tolist()
    rng = np.random.default_rng(0)
    level_map = {m: int(rng.integers(test_codec.num_levels)) for m in present}
    level_map[test_codec.num_classes - 1 if test_codec.num_classes - 1 not in present else 0] = 0  # absent id: no effect
    data = test_codec.compress(image, level_map)
    x_hat, info = test_codec.decompress_with_info(data)
    levels = torch.full((1, test_codec.num_classes), test_codec.num_levels - 1)
    for m in present:
        levels[0, m] = level_map[m]
        assert info["levels"][m] == level_map[m]
    torch.testing.assert_close(x_hat, test_codec.decode(analysis, levels)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [
    {99: 0}, {0: 99}, {0: -1}, {"road": 1}, {0: 1.5},
])
def test_invalid_levels_raise(test_codec, test_dataset, bad):
    with pytest.raises(ValueError):
        test_codec.compress(test_dataset[0][0], bad)


@pytest.mark.parametrize("image", [
    torch.rand(3, 30, 64), torch.rand(1, 32, 64), torch.rand(3, 32, 64) * 3, torch.zeros(3, 32, 64, dtype=torch.uint8),
])
def test_invalid_images_raise(test_codec, image):
    with pytest.raises(ValueError):
        test_codec.compress(image)


def test_corrupted_streams_raise_or_degrade(test_codec, test_dataset):
    rng = np.random.default_rng(1)
    image, _ = test_dataset[5]
    data = test_codec.compress(image)
    outcomes = {"error": 0, "decoded": 0}
    for trial in range(200):
        buf = bytearray(data)
        kind = trial % 4
        if kind == 0:
            buf = buf[: int(rng.integers(0, len(buf)))]
        elif kind == 1:
            for _ in range(int(rng.integers(1, 4))):
                buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
        elif kind == 2:
            buf = bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
        else:
            pos = int(rng.integers(len(buf)))
            buf[pos:pos] = bytes(rng.integers(0, 256, 3, dtype=np.uint8).tolist())
        try:
            out = test_codec.decompress(bytes(buf))
            assert out.shape == image.shape and torch.isfinite(out).all()
            outcomes["decoded"] += 1
        except BitstreamError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100  # strict mode rejects damage


def test_noisy_channel_degrades_per_concept(test_codec, test_dataset):
    image, _ = test_dataset[4]
    data = test_codec.compress(image)
    rng = np.random.default_rng(3)
    degraded = 0
    for _ in range(30):
        noisy = BinarySymmetric(0.002).transmit(data, rng)
        try:
            x_hat, info = test_codec.decompress_with_info(noisy, strict=False)
        except BitstreamError:
            continue  # the header itself was hit
        assert x_hat.shape == image.shape and torch.isfinite(x_hat).all()
        degraded += bool(info["damaged"])
    assert degraded > 0


def test_foreign_codec_is_rejected(test_codec, test_dataset):
    from codec_models.codec import SemanticCodec
    other = SemanticCodec(test_codec.config).eval()
    other.tables, other.label_model = test_codec.tables, test_codec.label_model
    data = other.compress(test_dataset[0][0])
    with pytest.raises(BitstreamError, match="codec"):
        test_codec.decompress(data)


def test_not_bytes(test_codec):
    with pytest.raises(TypeError):
        test_codec.decompress("hello")


def test_v1_roundtrip_still_works(test_codec_v1, test_dataset):
    """Codec v1 (env -v0) keeps its format-1 streams (8-bit concept CRCs) and its reconstruction."""
    image = test_dataset[1][0]
    data = test_codec_v1.compress(image, {m: 1 for m in range(test_codec_v1.num_classes)})
    assert data[2] == 1
    analysis = test_codec_v1.analyse(image[None])
    levels = torch.full((1, test_codec_v1.num_classes), 1)
    torch.testing.assert_close(test_codec_v1.decompress(data), test_codec_v1.decode(analysis, levels)[0],
                               rtol=0, atol=1e-6)


def test_v2_refuses_a_format_1_stream_by_name(test_codec, test_dataset):
    from codec_models.bitstream import BitstreamError, pack, unpack

    data = test_codec.compress(test_dataset[2][0])
    assert data[2] == 2  # codec v2 writes format 2
    parsed = unpack(data)
    old = pack(dataclasses.replace(parsed.header, version=1), parsed.label_payload, parsed.concept_payloads)
    with pytest.raises(BitstreamError, match="format version 1.*reads version 2"):
        test_codec.decompress(old)


def test_coarse_levels_send_fewer_channels_and_drop_the_rest(test_codec, test_dataset):
    """Codec v2: level q codes only the first C_q channels; the others dequantize to 0."""
    analysis = test_codec.analyse(test_dataset[3][0][None])
    channels = test_codec.config.level_channels
    for q in range(test_codec.num_levels):
        quantized = analysis.quantized[q]
        assert bool((quantized[:, channels[q]:] == 0).all())
        present = int(analysis.present[0].nonzero()[0])
        assert test_codec.concept_symbols(analysis, 0, present, q).shape[0] == channels[q]


def test_concept_crc16_catches_damaged_payloads(test_codec, test_dataset):
    """Format 2's 16-bit concept CRC: among many single-byte corruptions of a payload, none passes."""
    from codec_models.bitstream import unpack

    data = test_codec.compress(test_dataset[4][0])
    parsed = unpack(data)
    rng = np.random.default_rng(0)
    end = len(data)
    sizes = [len(p) for p in parsed.concept_payloads]
    start = end - sum(n + 2 for n in sizes)  # first concept payload
    passed = 0
    for _ in range(2000):
        buf = bytearray(data)
        pos = int(rng.integers(start, end))
        buf[pos] ^= int(rng.integers(1, 256))
        loose = unpack(bytes(buf), strict=False)
        passed += all(loose.concept_ok)
    assert passed == 0


@pytest.fixture(scope="module")
def base_codec(test_codec):
    """The test codec with bitstream format 4 (its level-0 concepts in one shared base section)."""
    from codec_models.checkpoint import build_codec, codec_payload

    out = build_codec(codec_payload(test_codec), "test-v2")
    out.config = dataclasses.replace(out.config, base_section=True).validate()
    out.invalidate_id()
    return out


def test_base_section_decodes_as_format3_and_costs_less(test_codec, base_codec, test_dataset):
    assert base_codec.bitstream_version == 4 and base_codec.codec_id != test_codec.codec_id
    rng = np.random.default_rng(0)
    for i in range(6):
        image, _ = test_dataset[i]
        levels = {m: (0 if i < 2 else int(rng.integers(test_codec.num_levels))) for m in range(test_codec.num_classes)}
        old, new = test_codec.compress(image, levels), base_codec.compress(image, levels)
        assert torch.equal(test_codec.decompress(old), base_codec.decompress(new))
        if i < 2:  # every concept at level 0: about 5 bytes and the padding saved per concept
            assert len(new) < len(old)
        with pytest.raises(BitstreamError, match="version 3, but this codec reads version 4|version 2, but"):
            base_codec.decompress(old)


def test_base_section_damage_is_caught_or_degrades(base_codec, test_dataset):
    image, _ = test_dataset[5]
    data = base_codec.compress(image, {m: 0 for m in range(base_codec.num_classes)})
    with pytest.raises(BitstreamError):
        base_codec.decompress(data + b"\x00")  # a byte more than the code words fill: CRC or length check
    broken = bytearray(data)
    broken[-3] ^= 0x40  # a base-section byte
    with pytest.raises(BitstreamError, match="base section"):
        base_codec.decompress(bytes(broken))
    x_hat, info = base_codec.decompress_with_info(bytes(broken), strict=False)
    assert torch.isfinite(x_hat).all() and info["damaged"] and info["label_ok"]


def test_range_coded_concepts_with_the_base_section(test_codec, base_codec, test_dataset):
    """Format 4 with the range coder (tiny-sf3): the base section stays in the Huffman pair code, the concepts above
    level 0 are range-coded. The same decoded images; no more bytes in total; each codec refuses the other's files."""
    from codec_models.checkpoint import build_codec, codec_payload

    ranged = build_codec(codec_payload(base_codec), "test-v2")
    ranged.config = dataclasses.replace(base_codec.config, coder="range").validate()
    ranged.invalidate_id()
    assert ranged.bitstream_version == 4 and ranged.codec_id != base_codec.codec_id
    rng = np.random.default_rng(1)
    total = {"huffman": 0, "range": 0}
    for i in range(6):
        image, _ = test_dataset[i]
        levels = {m: int(rng.integers(test_codec.num_levels)) for m in range(test_codec.num_classes)}
        old, new = base_codec.compress(image, levels), ranged.compress(image, levels)
        total["huffman"] += len(old)
        total["range"] += len(new)
        assert torch.equal(base_codec.decompress(old), ranged.decompress(new))
        with pytest.raises(BitstreamError, match="made by another codec"):
            ranged.decompress(old)
    assert total["range"] <= total["huffman"]
    level0 = {m: 0 for m in range(test_codec.num_classes)}
    image, _ = test_dataset[0]
    assert len(ranged.compress(image, level0)) == len(base_codec.compress(image, level0))  # the same base section


def test_shipped_range_coded_codec_decodes_tiny_sf2s_images():
    """tiny-sf3 is tiny-sf2 repacked with range-coded concepts: identical pictures, fewer bytes above level 0."""
    from codec_models import load_codec, load_dataset

    sf2, sf3 = load_codec("tiny-sf2", device="cpu").eval(), load_codec("tiny-sf3", device="cpu").eval()
    assert sf3.config.coder == "range" and sf3.config.base_section and sf2.config.coder == "huffman"
    data = load_dataset("streets", split="test", preset="tiny", size=3)
    for q in (0, 2, 5):
        for i in range(3):
            levels = {m: q for m in range(sf2.num_classes)}
            a, b = sf2.compress(data[i][0], levels), sf3.compress(data[i][0], levels)
            assert torch.equal(sf2.decompress(a), sf3.decompress(b))
            assert len(b) == len(a) if q == 0 else len(b) < len(a)


def test_quantization_matrix_codec_round_trips_through_bytes(test_codec, test_dataset):
    """A codec with a quantization matrix (channel_step_ratio): the file decodes to the tensor path's picture."""
    from codec_models.codec import SemanticCodec
    from codec_models.training import fit_code_tables

    graded = SemanticCodec(dataclasses.replace(test_codec.config, level_centers=(3, 5, 9), channel_step_ratio=4.0))
    graded.load_state_dict(test_codec.state_dict())
    fit_code_tables(graded, test_dataset, 4, progress=False)
    graded.eval()
    image, _ = test_dataset[3]
    analysis = graded.analyse(image[None])
    rng = np.random.default_rng(0)
    levels = torch.from_numpy(rng.integers(0, 3, (1, graded.num_classes)))
    x_hat = graded.decompress(graded.compress(image, {m: int(q) for m, q in enumerate(levels[0])}))
    torch.testing.assert_close(x_hat, graded.decode(analysis, levels)[0], rtol=0, atol=1e-6)
