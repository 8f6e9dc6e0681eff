"""Our audio fax terminal faxes to itself: two terminals exchanging 20 ms sample blocks in memory.

Every call checks both results and that each received page is the sent page, pel for pel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line
from tests.unit.fax.pages import itu_page
from ums.fax.t30 import (
    Finished,
    Negotiated,
    PageReceived,
    PageSent,
    SendEcmFrames,
    SendHdlc,
    SendPage,
    SendTcf,
    T30Config,
    T30Engine,
)
from ums.fax.t30_frames import Modem
from ums.render.page import FaxPage, Resolution
from ums.softfax_g711.common import power_dbm0
from ums.softfax_g711.terminal import AudioFaxTerminal

Page = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.int16]
LineFn = Callable[[Samples], Samples]
BLOCK = 160

MODEMS: dict[str, tuple[Modem, ...]] = {
    "v17": ("v17", "v29", "v27ter"),
    "v29": ("v29",),
    "v27ter": ("v27ter",),
}
RATES = {"v17": 14400, "v29": 9600, "v27ter": 4800}


def _pages(count: int, rows: int) -> list[Page]:
    return [itu_page(name)[:rows] for name in ("itu1", "itu2", "itu5")[:count]]


@dataclass
class Side:
    """A terminal with what it reported; received pages are stored at once."""

    term: AudioFaxTerminal
    received: list[PageReceived] = field(default_factory=list)
    sent: list[PageSent] = field(default_factory=list)
    negotiated: list[Negotiated] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)

    def reports(self) -> None:
        for r in self.term.take_reports():
            if isinstance(r, PageReceived):
                self.received.append(r)
                self.term.page_stored(r.page_no)
            elif isinstance(r, PageSent):
                self.sent.append(r)
            elif isinstance(r, Negotiated):
                self.negotiated.append(r)
            elif isinstance(r, Finished):
                self.finished.append(r)


def terminal(
    role: Literal["calling", "answering"],
    direction: Literal["transmit", "receive"],
    *,
    modem: str = "v17",
    ecm: bool = True,
    pages: list[Page] | None = None,
    resolution: Resolution = "fine",
    level_dbm0: float = -10.0,
    **config: Any,
) -> Side:
    docs = [FaxPage.at(p, resolution) for p in pages or []]
    cfg = T30Config(ident=f"{role.upper()} 1", modems=MODEMS[modem], ecm=ecm, **config)
    engine = T30Engine(cfg, role, direction, docs)
    return Side(AudioFaxTerminal(engine, level_dbm0=level_dbm0))


Line = Callable[[Samples, Samples], tuple[Samples, Samples]]


def run(
    a: Side,
    b: Side,
    *,
    line_fn: Line | None = None,
    max_seconds: float = 200.0,
    watch: Callable[[], None] | None = None,
) -> float:
    """Exchange 20 ms blocks until both have finished; returns the seconds of signal.  ``line_fn``
    maps the two transmitted blocks to what (b, a) receive."""
    t = 0
    while t < max_seconds * 8000 and not (a.term.finished and b.term.finished):
        sa, sb = a.term.transmit(BLOCK), b.term.transmit(BLOCK)
        if watch is not None:
            watch()
        to_b, to_a = line_fn(sa, sb) if line_fn else (sa, sb)
        b.term.receive(to_b)
        a.term.receive(to_a)
        a.reports()
        b.reports()
        t += BLOCK
    return t / 8000


def check_call(
    sender: Side, receiver: Side, sent: list[Page], *, modem: str, ecm: bool, rate: int | None = None
) -> None:
    tx, rx = sender.term.result, receiver.term.result
    assert tx is not None and tx.success, tx
    assert rx is not None and rx.success, rx
    assert tx.pages == rx.pages == len(sent)
    assert (tx.modem, tx.rate, tx.ecm) == (rx.modem, rx.rate, rx.ecm) == (modem, rate or RATES[modem], ecm)
    assert [p.response for p in sender.sent] == ["MCF"] * len(sent)
    assert len(receiver.received) == len(sent)
    for got, want in zip(receiver.received, sent, strict=True):
        assert got.pels.shape == want.shape
        assert np.array_equal(got.pels, want), (
            f"page {got.page_no}: {int((got.pels != want).sum())} pels differ"
        )
        assert got.bad_rows == 0 and got.ecm is ecm
    assert len(sender.finished) == len(receiver.finished) == 1


@pytest.mark.parametrize(
    ("modem", "ecm", "count", "resolution"),
    [
        ("v27ter", False, 1, "standard"),
        ("v27ter", True, 1, "fine"),
        ("v29", False, 1, "fine"),
        ("v29", True, 2, "standard"),
        ("v17", False, 2, "fine"),
        ("v17", True, 2, "fine"),
    ],
)
def test_call(modem: str, ecm: bool, count: int, resolution: Resolution) -> None:
    sent = _pages(count, 500 if modem == "v27ter" else 700)
    caller = terminal("calling", "transmit", modem=modem, ecm=ecm, pages=sent, resolution=resolution)
    answerer = terminal("answering", "receive", modem=modem, ecm=ecm)
    run(caller, answerer)
    check_call(caller, answerer, sent, modem=modem, ecm=ecm)
    assert [n.resolution for n in answerer.negotiated] == [resolution]
    assert caller.term.result is not None and caller.term.result.remote_ident == "ANSWERING 1"
    assert answerer.term.result is not None and answerer.term.result.remote_ident == "CALLING 1"


def test_polling_through_alaw_at_minus_20_dbm0_with_echo() -> None:
    """The caller polls (DTC) the answering machine's document; both send at -20 dBm0 through
    A-law, and each hears an echo of itself 26 dB down, 8 ms late."""
    sent = _pages(1, 600)
    delay = 64
    past = {"a": np.zeros(delay, np.int16), "b": np.zeros(delay, np.int16)}
    levels: list[float] = []

    def echo(own: str, x: Samples) -> npt.NDArray[np.float64]:
        past[own] = np.concatenate([past[own], x])
        e = past[own][:BLOCK].astype(np.float64) * 10 ** (-26 / 20)
        past[own] = past[own][BLOCK:]
        return e

    def hop(sa: Samples, sb: Samples) -> tuple[Samples, Samples]:
        if sb.any():
            levels.append(power_dbm0(sb))
        return line.g711(sa + echo("b", sb), "PCMA"), line.g711(sb + echo("a", sa), "PCMA")

    caller = terminal("calling", "receive", level_dbm0=-20.0)
    answerer = terminal("answering", "transmit", pages=sent, level_dbm0=-20.0)
    run(caller, answerer, line_fn=hop)
    check_call(answerer, caller, sent, modem="v17", ecm=True)
    assert -21.0 < float(np.median(levels)) < -19.0


def test_eom_between_resolutions_and_mh_with_scan_time() -> None:
    """A fine page then a standard one: EOM and phase B again.  MH only, and the receiver asks for
    a 10 ms minimum scan-line time, so the sender adds fill."""
    pages = _pages(2, 400)
    docs = [FaxPage.at(pages[0], "fine"), FaxPage.at(pages[1], "standard")]
    caller = Side(
        AudioFaxTerminal(
            T30Engine(
                T30Config(ident="CALLING 1", modems=MODEMS["v29"], ecm=False, compressions=("mh",)),
                "calling",
                "transmit",
                docs,
            )
        )
    )
    answerer = terminal("answering", "receive", modem="v29", ecm=False, min_scan_ms=10)
    run(caller, answerer)
    check_call(caller, answerer, pages, modem="v29", ecm=False)
    assert [n.resolution for n in answerer.negotiated] == ["fine", "standard"]
    assert {r.compression for r in answerer.received} == {"mh"}


@pytest.mark.parametrize("modem", ["v29", "v17"])
def test_ecm_recovers_lost_packets(modem: str) -> None:
    """Packets of the first ECM burst are lost on the way (the receiver gets ``fillin`` for them);
    PPR asks for the damaged frames, a second burst brings them and the page arrives whole."""
    sent = _pages(1, 900)
    caller = terminal("calling", "transmit", pages=sent, modem=modem)
    answerer = terminal("answering", "receive", modem=modem)
    bursts: list[SendEcmFrames] = []
    t = 0
    lost = 0
    while t < 200 * 8000 and not (caller.term.finished and answerer.term.finished):
        sa, sb = caller.term.transmit(BLOCK), answerer.term.transmit(BLOCK)
        c = caller.term.sending
        if isinstance(c, SendEcmFrames) and (not bursts or bursts[-1] is not c):
            bursts.append(c)
        if len(bursts) == 1 and c is bursts[0] and lost < 3 and (t // BLOCK) % 29 == 0:
            answerer.term.fillin(BLOCK)
            lost += 1
        else:
            answerer.term.receive(sa)
        caller.term.receive(sb)
        caller.reports()
        answerer.reports()
        t += BLOCK
    assert lost == 3
    check_call(caller, answerer, sent, modem=modem, ecm=True)
    assert len(bursts) == 2 and 1 <= len(bursts[1].frames) - 3 < len(bursts[0].frames) - 3


@pytest.mark.parametrize(
    ("fcf", "modem", "ecm"),
    [(0x84, "v17", False), (0x8C, "v29", True)],
    ids=["lost-CFR", "lost-MCF"],
)
def test_lost_response_is_repeated(fcf: int, modem: str, ecm: bool) -> None:
    """The answerer's first CFR (or MCF) never arrives: the caller repeats DCS and TCF (or PPS)
    after T4, and the answerer, listening for the image modem and V.21 together, takes the V.21
    command and answers again."""
    sent = _pages(2, 300)
    caller = terminal("calling", "transmit", modem=modem, ecm=ecm, pages=sent)
    answerer = terminal("answering", "receive", modem=modem, ecm=ecm)
    state = {"dropping": False, "dropped": False}

    def drop_first(sa: Samples, sb: Samples) -> tuple[Samples, Samples]:
        c = answerer.term.sending
        if isinstance(c, SendHdlc) and not state["dropped"] and any(f[2] & 0xFE == fcf for f in c.frames):
            state["dropping"] = True
        elif state["dropping"] and not isinstance(c, SendHdlc):
            state["dropping"], state["dropped"] = False, True
        return sa, np.zeros_like(sb) if state["dropping"] else sb

    run(caller, answerer, line_fn=drop_first)
    assert state["dropped"]
    check_call(caller, answerer, sent, modem=modem, ecm=ecm)


def test_noisy_tcf_gets_ftt_and_the_caller_falls_back() -> None:
    """Heavy noise on the TCF at 14400 bit/s: the answerer's zero run is too short, it answers FTT
    and the caller trains again at 12000 bit/s."""
    sent = _pages(1, 300)
    caller = terminal("calling", "transmit", pages=sent)
    answerer = terminal("answering", "receive")
    rng = np.random.default_rng(1)

    def noisy_tcf(sa: Samples, sb: Samples) -> tuple[Samples, Samples]:
        c = caller.term.sending
        if isinstance(c, SendTcf) and c.rate == 14400:
            sa = line.to_int16(sa + rng.normal(0.0, 600.0, sa.size))
        return sa, sb

    run(caller, answerer, line_fn=noisy_tcf)
    check_call(caller, answerer, sent, modem="v17", ecm=True, rate=12000)


def test_non_ecm_page_with_v17_short_train() -> None:
    """Non-ECM V.17: TCF with the long train, the page with the short one."""
    sent = _pages(1, 500)
    caller = terminal("calling", "transmit", pages=sent, ecm=False)
    answerer = terminal("answering", "receive", ecm=False)
    seen: list[SendPage] = []

    def watch() -> None:
        c = caller.term.sending
        if isinstance(c, SendPage) and (not seen or seen[-1] is not c):
            seen.append(c)

    run(caller, answerer, watch=watch)
    check_call(caller, answerer, sent, modem="v17", ecm=False)
    assert [(c.modem, c.rate, c.short_train) for c in seen] == [("v17", 14400, True)]


def test_hangup_and_abort() -> None:
    sent = _pages(1, 200)
    caller = terminal("calling", "transmit", pages=sent)
    answerer = terminal("answering", "receive")
    run(caller, answerer, max_seconds=5.0)
    answerer.term.hangup()
    assert answerer.term.finished
    assert answerer.term.result is not None and answerer.term.result.code == "hangup"
    caller.term.abort("test")
    run(caller, answerer, max_seconds=3.0)
    assert caller.term.finished
    assert caller.term.result is not None and caller.term.result.code == "aborted"
    # once finished, a terminal is silent and ignores what it hears
    assert not caller.term.transmit(BLOCK).any()
    caller.term.receive(np.zeros(BLOCK, np.int16))


def test_process_and_silence_on_a_dead_line() -> None:
    """``process`` per 20 ms: the caller sends CNG and gives up after T1 without DCN."""
    side = terminal("calling", "transmit", pages=_pages(1, 50), t1=4.0)
    tones = 0
    for _ in range(int(6 * 8000 / BLOCK)):
        out = side.term.process(np.zeros(BLOCK, np.int16))
        tones += bool(out.any())
        side.reports()
    assert side.term.finished
    assert side.term.result is not None and side.term.result.code == "t1"
    assert 20 <= tones <= 60  # 0.5 s of CNG every 3.5 s: 25 blocks per cadence
