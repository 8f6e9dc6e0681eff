"""ModemPool: front ends sharing banks behave like front ends with their own receivers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import spandsp
from tests.peers import spandsp_fax as sf
from tests.unit.fax.pages import itu_page
from ums.fax.t30 import PageReceived, T30Config, T30Engine
from ums.fax.t30_frames import Modem
from ums.softfax_g711.frontend import FastBits, FrontEndItem, ModemFrontEnd, V21Frame
from ums.softfax_g711.hdlc import HdlcEncoder
from ums.softfax_g711.pool import ModemPool, PooledFrontEnd
from ums.softfax_g711.terminal import AudioFaxTerminal
from ums.softfax_g711.v17 import V17Tx
from ums.softfax_g711.v21 import FskTx

Samples = npt.NDArray[np.int16]
Page = npt.NDArray[np.uint8]
BLOCK = 160


def _v21_burst(frames: list[bytes], level: float) -> Samples:
    enc = HdlcEncoder()
    tx = FskTx(2, level_dbm0=level)
    tx.send(enc.frames(frames, preamble_flags=40))
    tx.finish()
    out = []
    while not tx.done:
        out.append(tx.generate(BLOCK))
    return np.concatenate(out)


def _v17_burst(bits: npt.NDArray[np.uint8], rate: int, level: float) -> Samples:
    tx = V17Tx(rate, level_dbm0=level)
    tx.send(bits)
    tx.finish()
    out = []
    while not tx.done:
        out.append(tx.generate(BLOCK))
    return np.concatenate(out)


def _signal(seed: int) -> tuple[Samples, int]:
    """Silence, a V.21 burst, silence, a V.17 burst, silence; and the V.17 rate."""
    rng = np.random.default_rng(seed)
    rate = [14400, 12000, 9600, 7200][seed % 4]
    level = -12.0 - 3 * (seed % 3)
    frames = [bytes(rng.integers(0, 256, 20, dtype=np.uint8)) for _ in range(2)]
    v21 = _v21_burst(frames, level)
    bits = rng.integers(0, 2, 6000, dtype=np.uint8)
    gap = np.zeros(800 + 37 * seed, dtype=np.int16)
    sig = np.concatenate([gap, v21, gap, np.zeros(600, np.int16), _v17_burst(bits, rate, level), gap, gap])
    sig = np.concatenate([sig, np.zeros((-sig.size) % BLOCK, dtype=np.int16)])
    return sig, rate


def _summary(items: list[FrontEndItem]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    bits: list[npt.NDArray[np.uint8]] = []
    for it in items:
        if isinstance(it, FastBits):
            bits.append(it.bits)
            continue
        if bits:
            out.append(("bits", np.concatenate(bits).tobytes()))
            bits = []
        if isinstance(it, V21Frame):
            out.append(("frame", (it.data, it.crc_ok, it.sample)))
        else:
            out.append((type(it).__name__, getattr(it, "sample", None)))
    if bits:
        out.append(("bits", np.concatenate(bits).tobytes()))
    return out


def test_pooled_front_ends_give_the_same_items_as_single_ones() -> None:
    """Five calls in two banks of three; each pooled front end's items equal those of a front end
    with its own receivers fed the same signal."""
    pool = ModemPool(bank_size=3)
    signals = [_signal(seed) for seed in range(5)]
    single = [ModemFrontEnd() for _ in signals]
    pooled = [pool.front_end() for _ in signals]
    assert pool.banks("v21") == 2
    got: list[list[FrontEndItem]] = [[] for _ in signals]
    want: list[list[FrontEndItem]] = [[] for _ in signals]
    for k, ((_, rate), s, p) in enumerate(zip(signals, single, pooled, strict=True)):
        s.listen("v17", rate)
        p.listen("v17", rate)
        p.on_items = got[k].extend
    length = max(sig.size for sig, _ in signals)
    for start in range(0, length, BLOCK):
        for k, (sig, _) in enumerate(signals):
            block = sig[start : start + BLOCK]
            if block.size < BLOCK:
                block = np.zeros(BLOCK, dtype=np.int16)
            want[k].extend(single[k].receive(block).items)
            assert not pooled[k].receive(block).items
        assert pool.step() == 1
    assert pool.banks("v17") == 2
    for k in range(len(signals)):
        w = _summary(want[k])
        assert [kind for kind, _ in w].count("frame") == 2
        assert any(kind == "bits" for kind, _ in w)
        assert _summary(got[k]) == w, f"call {k}"


def test_the_pool_waits_for_every_call_then_goes_on_without_a_stalled_one() -> None:
    pool = ModemPool(bank_size=4, max_backlog=3)
    a, b = pool.front_end(), pool.front_end()
    a.receive(np.zeros(2 * BLOCK, dtype=np.int16))
    assert pool.step() == 0 and a.queued == 2
    b.idle(BLOCK)
    assert pool.step() == 1 and (a.queued, b.queued) == (1, 0)
    a.receive(np.zeros(3 * BLOCK, dtype=np.int16))
    assert pool.step() == 1  # four queued, over the backlog of three: one step without b
    assert pool.stalled_steps == 1 and a.queued == 3
    b.close()
    assert pool.channels == 1
    assert pool.step() == 3 and a.queued == 0
    # b's rows are free again: a new call takes them, no new bank.
    c = pool.front_end()
    assert isinstance(c, PooledFrontEnd) and pool.banks("v21") == 1
    a.close()
    c.close()
    assert pool.channels == 0 and pool.step() == 0


def test_a_front_end_silent_for_too_long_is_dropped() -> None:
    pool = ModemPool(bank_size=2, max_backlog=2, drop_after=5)
    a, b = pool.front_end(), pool.front_end()
    for _ in range(10):
        a.receive(np.zeros(BLOCK, dtype=np.int16))
        pool.step()
    assert b.closed and pool.channels == 1
    assert a.queued == 0  # once b is gone, a is no longer held back


def test_partial_blocks_are_joined_into_whole_steps() -> None:
    pool = ModemPool(bank_size=2)
    a = pool.front_end()
    a.receive(np.zeros(100, dtype=np.int16))
    assert a.queued == 0
    a.receive(np.zeros(100, dtype=np.int16))
    a.fillin(120)
    assert a.queued == 2  # the second piece holds lost samples
    assert pool.step() == 2 and a.samples == 2 * BLOCK


@pytest.mark.skipif(not spandsp.available(), reason="SpanDSP (libspandsp2) is not installed")
def test_three_spandsp_faxes_into_terminals_sharing_a_pool(tmp_path: Path) -> None:
    """SpanDSP sends three faxes at once (V.17 ECM, V.29 non-ECM, V.27ter ECM) to our terminals whose
    receivers are rows of one pool (banks of two); every page arrives pel for pel."""
    cases: list[tuple[tuple[Modem, ...], bool, int]] = [
        (("v17", "v29", "v27ter"), True, 1100),
        (("v29",), False, 1000),
        (("v27ter",), True, 500),
    ]
    pool = ModemPool(bank_size=2)
    calls = []
    for i, (modems, ecm, rows) in enumerate(cases):
        page = np.ascontiguousarray(itu_page(["itu1", "itu2", "itu4"][i])[:rows])
        tiff = sf.write_fax_tiff(tmp_path / f"tx{i}.tif", [page], resolution="fine")
        span = sf.SpanFax(True, transmit_tiff=tiff, ecm=ecm, modems=set(modems), ident="SPANDSP 7")
        cfg = T30Config(ident="OURS 42", modems=modems, ecm=ecm)
        term = AudioFaxTerminal(T30Engine(cfg, "answering", "receive"), front_end=pool.front_end())
        calls.append((span, term, page, []))
    for _ in range(int(200 * 8000 / BLOCK)):
        if all(span.done and term.finished for span, term, _, _ in calls):
            break
        out = []
        for span, term, _, _ in calls:
            a = span.tx(BLOCK)
            out.append(term.transmit(BLOCK))
            term.receive(a)
        pool.step()
        for (span, term, _, pages), b in zip(calls, out, strict=True):
            span.rx(b)
            for r in term.take_reports():
                if isinstance(r, PageReceived):
                    pages.append(r.pels)
                    term.page_stored(r.page_no)
    for span, term, page, pages in calls:
        res = term.result
        assert res is not None and res.success, res
        assert span.result.ok, span.result.completion_text
        assert len(pages) == 1 and pages[0].shape == page.shape
        assert np.array_equal(pages[0], page)
        term.close()
    assert pool.channels == 0 and pool.stalled_steps == 0
    assert pool.banks("v21") == 2
