"""V.17 trellis coding: mapping, encoders, Viterbi decoder (banked, streaming)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from ums.softfax_g711 import trellis as T

H = T.TRACEBACK_DEPTH - 1


def _noisy(
    z: npt.NDArray[np.complex128], es_n0_db: float, rng: np.random.Generator
) -> npt.NDArray[np.complex128]:
    sigma = np.sqrt(41.0 / 10.0 ** (es_n0_db / 10.0) / 2.0)
    return z + sigma * (rng.normal(size=z.shape) + 1j * rng.normal(size=z.shape))


def _encode(rate: int, n: int, length: int, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2 ** T.bits_per_symbol(rate), (n, length))
    return words, T.TrellisEncoder(n).encode(words)


@pytest.mark.parametrize("rate", T.RATES)
def test_constellation_shape(rate: int) -> None:
    c = T.constellation(rate)
    assert c.size == 2 ** (T.bits_per_symbol(rate) + 1)
    assert np.unique(c).size == c.size
    assert 39.0 <= np.mean(np.abs(c) ** 2) <= 43.0  # same mean power at every rate
    # A quarter turn keeps the uncoded bits and moves Y1 Y2 by one step (V.17 §2).
    idx = np.arange(c.size)
    turned = np.array([np.flatnonzero(np.isclose(c, p * 1j))[0] for p in c])
    assert (turned >> 3 == idx >> 3).all()
    assert (((turned >> 1) - (idx >> 1)) & 3 == 3).all()


def test_training_points_are_the_7200_mapping_corners() -> None:
    assert np.allclose(T.ABCD[1], T.ABCD[0] * 1j)
    assert np.allclose(T.ABCD[2], -T.ABCD[0])
    assert np.allclose(np.abs(T.ABCD) ** 2, 40.0)


def test_differential_code_round_trip() -> None:
    rng = np.random.default_rng(1)
    q = rng.integers(0, 4, (3, 50))
    d, last = T.differential_encode(q, np.array([0, 1, 3]))
    back, last2 = T.differential_decode(d, np.array([0, 1, 3]))
    assert (back == q).all()
    assert (last == last2).all()
    # Split in two = in one go.
    d1, mid = T.differential_encode(q[:, :20], np.array([0, 1, 3]))
    d2, _ = T.differential_encode(q[:, 20:], mid)
    assert (np.concatenate([d1, d2], axis=1) == d).all()


def test_convolutional_encoder_matches_step_by_step() -> None:
    rng = np.random.default_rng(2)
    d = rng.integers(0, 4, (4, 77))
    y0, final = T.convolutional_encode(d, np.array([0, 3, 5, 7]))
    for c, start in enumerate([0, 3, 5, 7]):
        state = start
        for t in range(d.shape[1]):
            assert y0[c, t] == state & 1
            s0, s1, s2 = state & 1, state >> 1 & 1, state >> 2 & 1
            y1, y2 = d[c, t] & 1, d[c, t] >> 1
            state = (s1 ^ y2 ^ (s0 & y1)) | (s2 ^ y1 ^ y2 ^ (s0 & s1) ^ (s0 & y2)) << 1 | s0 << 2
        assert final[c] == state


def test_encoder_streams() -> None:
    words, whole = _encode(14400, 2, 200, seed=3)
    enc = T.TrellisEncoder(2)
    parts = [enc.encode(words[:, a:b]) for a, b in [(0, 1), (1, 64), (64, 64), (64, 200)]]
    assert (np.concatenate(parts, axis=1) == whole).all()


@pytest.mark.parametrize("rate", T.RATES)
def test_noiseless_round_trip(rate: int) -> None:
    words, idx = _encode(rate, 2, 500, seed=4)
    dec = T.ViterbiBank(2, rate)
    got, points = dec.decode(T.constellation(rate)[idx])
    assert (got[:, H + 1 :] == words[:, 1 : 500 - H]).all()
    assert (points[:, H:] == idx[:, : 500 - H]).all()


@pytest.mark.parametrize("turn", [1j, -1, -1j])
def test_quarter_turn_costs_only_the_first_symbols(turn: complex) -> None:
    words, idx = _encode(9600, 1, 400, seed=5)
    got, _ = T.ViterbiBank(1, 9600).decode(T.constellation(9600)[idx] * turn)
    assert (got[:, H + 4 :] == words[:, 4 : 400 - H]).all()


def test_noise_tolerance_14400() -> None:
    """Es/N0 23.5 dB (about 21.3 dB SNR over the 0-4 kHz band) decodes cleanly; a slicer would not."""
    rng = np.random.default_rng(6)
    words, idx = _encode(14400, 8, 3000, seed=7)
    c = T.constellation(14400)
    z = _noisy(c[idx], 23.5, rng)
    got, _ = T.ViterbiBank(8, 14400).decode(z)
    assert (got[:, H + 1 :] == words[:, 1 : 3000 - H]).all()
    hard = np.argmin(np.abs(z[..., None] - c) ** 2, axis=2)
    assert (hard != idx).mean() > 0.01


def test_block_size_does_not_matter_and_bank_equals_single() -> None:
    rng = np.random.default_rng(8)
    rates = [14400, 7200, 12000]
    length = 700
    z = np.zeros((3, length), dtype=np.complex128)
    for c, rate in enumerate(rates):
        _, idx = _encode(rate, 1, length, seed=10 + c)
        z[c] = _noisy(T.constellation(rate)[idx[0]], 17.0, rng)  # noisy enough for decision errors
    singles = []
    for c, rate in enumerate(rates):
        w, p = T.ViterbiBank(1, rate).decode(z[c : c + 1])
        singles.append((w[0], p[0]))
    bank = T.ViterbiBank(3)
    for c, rate in enumerate(rates):
        bank.reset([c], rate)
    # Ragged blocks: each channel takes a different number of symbols per call.
    pos = np.zeros(3, dtype=np.int64)
    outs: list[list[npt.NDArray[np.int64]]] = [[], [], []]
    pts: list[list[npt.NDArray[np.int64]]] = [[], [], []]
    while (pos < length).any():
        counts = np.minimum(rng.integers(0, 40, 3), length - pos)
        block = np.zeros((3, int(counts.max())), dtype=np.complex128)
        for c in range(3):
            block[c, : counts[c]] = z[c, pos[c] : pos[c] + counts[c]]
        w, p = bank.decode(block, counts)
        for c in range(3):
            outs[c].append(w[c, : counts[c]])
            pts[c].append(p[c, : counts[c]])
        pos += counts
    for c in range(3):
        assert (np.concatenate(outs[c]) == singles[c][0]).all()
        assert (np.concatenate(pts[c]) == singles[c][1]).all()


def test_nearest_points() -> None:
    rates = np.array([T.rate_index(r) for r in T.RATES])
    for r, rate in zip(rates, T.RATES, strict=True):
        c = T.constellation(rate)
        assert np.allclose(T.nearest_points(c + 0.3 - 0.2j, np.full(c.size, r)), c)


def test_unknown_rate() -> None:
    with pytest.raises(ValueError):
        T.constellation(4800)


@pytest.mark.parametrize("rate", T.RATES)
def test_branch_metrics_are_exact_near_the_points(rate: int) -> None:
    """The lookup-grid branch metrics equal brute force wherever a subset is within 6 (squared)."""
    rng = np.random.default_rng(rate)
    c = T.constellation(rate)
    z = c[rng.integers(0, c.size, 4000)] + 1.2 * (rng.normal(size=4000) + 1j * rng.normal(size=4000))
    bank = T.ViterbiBank(1, rate)
    dist, idx = bank.branch_metrics(z[None, :])
    full = np.abs(z[:, None] - c[None, :]) ** 2
    exact = np.stack([full[:, j::8].min(axis=1) for j in range(8)], axis=1)
    near = exact < 6.0
    assert np.allclose(dist[0][near], exact[near], atol=1e-3)
    assert np.allclose(np.abs(z[:, None] - c[idx[0]]) ** 2, dist[0], atol=1e-3)
