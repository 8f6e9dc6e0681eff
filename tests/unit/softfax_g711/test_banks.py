"""Stepping the first rows of a bank: the rows stepped behave as receivers fed only then, the others
do not change at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line
from ums.softfax_g711.banks import first_rows
from ums.softfax_g711.common import RxOutput
from ums.softfax_g711.hdlc import HdlcEncoder
from ums.softfax_g711.pool import ModemPool
from ums.softfax_g711.v17 import V17Rx, V17RxBank, V17Tx
from ums.softfax_g711.v21 import FskRxBank, FskTx

Samples = npt.NDArray[np.int16]
STEP = 160


def _burst(tx: Any, bits: npt.NDArray[np.uint8]) -> Samples:
    tx.send(bits)
    tx.finish()
    out = []
    while not tx.done:
        out.append(tx.generate(1600))
    return np.concatenate(out)


def _rows(signals: list[Samples], steps: int) -> Samples:
    x = np.zeros((len(signals), steps * STEP), dtype=np.int16)
    for i, s in enumerate(signals):
        x[i, : min(s.size, x.shape[1])] = s[: x.shape[1]]
    return x


def _state(bank: Any, rows: slice) -> dict[str, Any]:
    """Copies of a bank's per-row state (and its Viterbi decoder's) for ``rows``."""
    out: dict[str, Any] = {}
    for owner, prefix in ((bank, ""), (getattr(bank, "_viterbi", None), "viterbi.")):
        if owner is None:
            continue
        for name, value in vars(owner).items():
            if isinstance(value, np.ndarray) and name not in getattr(type(owner), "_BANK_SHARED", ()):
                axis1 = name in getattr(type(owner), "_BANK_ROW_AXIS1", ())
                out[prefix + name] = (value[:, rows] if axis1 else value[rows]).copy()
            elif name in getattr(type(owner), "_BANK_ROW_LISTS", ()):
                out[prefix + name] = list(value[rows])
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_v17_rows_stepped_equal_single_receivers_fed_only_then() -> None:
    rng = np.random.default_rng(3)
    n = 5
    signals = []
    for i in range(n):
        lead = np.zeros(int(rng.integers(0, 3000)), dtype=np.int16)
        burst = _burst(V17Tx(14400, level_dbm0=-12.0 - 5 * i), rng.integers(0, 2, 4000).astype(np.uint8))
        signals.append(line.impair(np.concatenate([lead, burst]), law="PCMA", snr_db=24.0, seed=i))
    steps = 160
    x = _rows(signals, steps)
    bank = V17RxBank(n, 14400)
    singles = [V17Rx(14400) for _ in range(n)]
    got: list[list[RxOutput]] = [[] for _ in range(n)]
    want: list[list[RxOutput]] = [[] for _ in range(n)]
    ks = rng.integers(2, n + 1, steps)  # rows 0 and 1 every step, the others now and then
    for s, k in enumerate(ks.tolist()):
        block = x[:k, s * STEP : (s + 1) * STEP]
        rest = _state(bank, slice(k, None))
        for r, out in enumerate(bank.receive_first(block)):
            got[r].append(out)
            want[r].append(singles[r].receive(block[r]))
        assert _same(rest, _state(bank, slice(k, None)))  # the rows not stepped did not change
        assert bank.n == n and bank._w.shape[0] == n
    for r in range(n):
        bits = np.concatenate([o.bits for o in got[r]])
        assert np.array_equal(bits, np.concatenate([o.bits for o in want[r]]))
        # Event samples count the bank's samples (all steps), bit indices and statuses match.
        assert [[(e.status, e.bit_index) for e in o.events] for o in got[r]] == [
            [(e.status, e.bit_index) for e in o.events] for o in want[r]
        ]
        assert bits.size > 1000 or r >= 2


def test_v21_rows_stepped_equal_the_others_held() -> None:
    rng = np.random.default_rng(5)
    n = 6
    enc = HdlcEncoder()
    signals = []
    for i in range(n):
        lead = np.zeros(int(rng.integers(0, 4000)), dtype=np.int16)
        bits = enc.frames([bytes(rng.integers(0, 256, 20, dtype=np.uint8))], preamble_flags=20)
        burst = _burst(FskTx(2, level_dbm0=-10.0 - 4 * i), bits)
        signals.append(line.impair(np.concatenate([lead, burst]), law="PCMU", ppm=50.0, seed=i))
    steps = 200
    x = _rows(signals, steps)
    first = FskRxBank(n)
    held = FskRxBank(n)
    bits_first: list[list[npt.NDArray[np.uint8]]] = [[] for _ in range(n)]
    for s, k in enumerate(rng.integers(1, n + 1, steps).tolist()):
        block = x[:, s * STEP : (s + 1) * STEP]
        lost = rng.random(k) < 0.05
        outs = first.receive_first(block[:k], hold=lost)
        hold = np.concatenate([lost, np.ones(n - k, dtype=np.bool_)])
        ref = held.receive(block, hold=hold)
        assert len(outs) == k
        for r in range(k):
            assert np.array_equal(outs[r].bits, ref[r].bits) and outs[r].events == ref[r].events
            bits_first[r].append(outs[r].bits)
        assert _same(_state(first, slice(None)), _state(held, slice(None)))
        assert first._psi == held._psi
    assert sum(np.concatenate(b).size > 100 for b in bits_first) >= 4


def test_first_rows_refuses_what_it_cannot_narrow() -> None:
    bank = V17RxBank(4, 9600)
    with pytest.raises(ValueError):
        with first_rows(bank, 0):
            pass
    with pytest.raises(ValueError):
        with first_rows(bank, 5):
            pass
    with pytest.raises(ValueError):  # not a multiple of 160 samples
        bank.receive_first(np.zeros((2, 100), dtype=np.int16))
    with first_rows(bank, 4):  # all rows: nothing to do
        assert bank.n == 4

    class Odd:
        _BANK_SHARED: frozenset[str] = frozenset()

        def __init__(self) -> None:
            self.n = 3
            self.rows = np.zeros(3)
            self.table = np.zeros(7)  # no row axis, not declared shared

    with pytest.raises(ValueError):
        with first_rows(Odd(), 2):
            pass
    odd = Odd()
    odd.table = np.zeros((3, 2))
    with pytest.raises(ValueError):
        with first_rows(odd, 2):
            odd.table = np.zeros((2, 5))  # changed shape beyond the row axis
    assert odd.n == 3 and odd.rows.shape == (3,)
    with first_rows(odd, 2):
        odd.rows = np.array([1, 2])  # replaced, and of another dtype: copied back
        odd.table[:] = 1.0  # changed in place through the view
    np.testing.assert_array_equal(odd.rows, [1, 2, 0])
    np.testing.assert_array_equal(odd.table, [[1, 1], [1, 1], [0, 0]])


def test_the_pool_gives_out_the_lowest_free_row() -> None:
    pool = ModemPool(bank_size=4)
    ends = [pool.front_end() for _ in range(3)]
    assert [fe._slots["v21"] for fe in ends] == [(0, 0), (0, 1), (0, 2)]
    ends[1].close()
    ends[0].close()
    assert pool.front_end()._slots["v21"] == (0, 0)
    assert pool.front_end()._slots["v21"] == (0, 1)
    assert pool.front_end()._slots["v21"] == (0, 3)
    assert pool.front_end()._slots["v21"] == (1, 0)
