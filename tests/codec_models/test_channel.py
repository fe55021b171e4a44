"""Channel models: identity, measured bit error rates against theory, spec parsing."""
from __future__ import annotations

import math

import numpy as np
import pytest

from codec_models.channel import AWGNBPSK, BinarySymmetric, Channel, Lossless, make_channel

NUM_BYTES = 125_000  # 1e6 bits


def measured_ber(channel, seed: int = 0) -> float:
    data = np.random.default_rng(seed).bytes(NUM_BYTES)
    out = channel.transmit(data, np.random.default_rng(seed + 1))
    assert isinstance(out, bytes) and len(out) == len(data)
    diff = np.unpackbits(np.frombuffer(data, np.uint8) ^ np.frombuffer(out, np.uint8))
    return diff.mean()


def assert_close_to_theory(measured: float, theory: float) -> None:
    sigma = math.sqrt(theory * (1 - theory) / (8 * NUM_BYTES))
    assert abs(measured - theory) < 5 * sigma + 1e-6, (measured, theory)


def test_lossless_identity():
    data = bytes(range(256)) * 3
    channel = Lossless()
    assert channel.transmit(data, np.random.default_rng(0)) == data
    assert channel.transmit(b"", np.random.default_rng(0)) == b""
    assert isinstance(channel, Channel) and channel.bit_error_rate == 0.0


@pytest.mark.parametrize("p", [0.001, 0.01, 0.2])
def test_bsc_bit_error_rate(p):
    channel = BinarySymmetric(p)
    assert channel.bit_error_rate == p
    assert_close_to_theory(measured_ber(channel), p)


@pytest.mark.parametrize("snr_db", [0.0, 4.0, 7.0])
def test_awgn_bit_error_rate(snr_db):
    channel = AWGNBPSK(snr_db)
    theory = 0.5 * math.erfc(math.sqrt(10 ** (snr_db / 10)))
    assert channel.bit_error_rate == pytest.approx(theory)
    assert_close_to_theory(measured_ber(channel), theory)


def test_awgn_theory_values():
    assert AWGNBPSK(0.0).bit_error_rate == pytest.approx(0.0786496, rel=1e-5)  # Q(sqrt(2))
    assert AWGNBPSK(9.6).bit_error_rate == pytest.approx(1.0e-5, rel=0.05)


def test_high_snr_and_zero_probability_are_error_free():
    data = np.random.default_rng(3).bytes(4096)
    for channel in (AWGNBPSK(20.0), BinarySymmetric(0.0)):
        assert channel.transmit(data, np.random.default_rng(4)) == data
        assert channel.transmit(b"", np.random.default_rng(4)) == b""


def test_deterministic_given_rng():
    data = np.random.default_rng(5).bytes(1000)
    for channel in (BinarySymmetric(0.05), AWGNBPSK(3.0)):
        a = channel.transmit(data, np.random.default_rng(9))
        b = channel.transmit(data, np.random.default_rng(9))
        assert a == b != data


def test_make_channel():
    assert isinstance(make_channel("lossless"), Lossless)
    bsc = make_channel("bsc:0.001")
    assert isinstance(bsc, BinarySymmetric) and bsc.p == 0.001
    awgn = make_channel(" AWGN:10 ")
    assert isinstance(awgn, AWGNBPSK) and awgn.snr_db == 10.0
    assert make_channel("awgn:-2.5").snr_db == -2.5
    for channel in (bsc, awgn):
        assert isinstance(channel, Channel)


@pytest.mark.parametrize(
    "spec", ["", "lossy", "lossless:1", "bsc", "bsc:", "bsc:x", "bsc:1.5", "bsc:-0.1", "bsc:nan",
             "awgn", "awgn:inf", "awgn:ten", "rayleigh:3"],
)
def test_make_channel_rejects(spec):
    with pytest.raises(ValueError):
        make_channel(spec)
    with pytest.raises(ValueError):
        make_channel(3)  # type: ignore[arg-type]
