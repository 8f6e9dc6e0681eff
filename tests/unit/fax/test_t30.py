"""T.30 engine: a calling and an answering engine talking over a simulated line.

The line
--------
:class:`Link` runs a calling and an answering :class:`~ums.fax.t30.T30Engine` against each other
on a simulated clock.  Each engine's commands become the other engine's events with plausible
timing: V.21 bursts take 1 s of flags plus 8 bits per octet at 300 bit/s, the image modem trains
and then sends at its rate, silences and tones take their time.  A burst is heard only if the far
end is listening for that kind of signal (for the image modem: the same modem, rate and training)
and is not transmitting itself.  :class:`Faults` lets a test drop or damage V.21 bursts, TCF, page
data and ECM frames, or make one side deaf.  Sending commands are laid end to end from the sender's
transmit cursor; ``Receive`` takes effect when the sends before it are done; the loop takes the
earliest of the next action and the engines' deadlines.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.fax.pages import itu_page
from ums.fax import t4
from ums.fax.t30 import (
    LONG_TRAIN,
    MAX_V21_BURST,
    T1,
    T4,
    TCF_MAX,
    CarrierDown,
    CarrierUp,
    Command,
    Event,
    FastTrained,
    FaxResult,
    Finished,
    Hangup,
    HdlcFrame,
    Negotiated,
    PageData,
    PageDataLost,
    PageReceived,
    PageSent,
    PageStored,
    Receive,
    SendComplete,
    SendEcmFrames,
    SendHdlc,
    SendPage,
    SendTcf,
    SendTone,
    Silence,
    SourcePage,
    T30Config,
    T30Engine,
    TcfResult,
    ToneDetected,
    longest_zero_run,
)
from ums.fax.t30_frames import FALLBACK, Dcs, Dis, Fcf, Frame, FrameError, Modem, parse_ctc
from ums.render.page import FaxPage

V21_RATE = 300
PREAMBLE = 1.0
TRAIN_LONG = {"v17": 1.393, "v29": 0.253, "v27ter": 0.943}
TRAIN_SHORT = {"v17": 0.142, "v29": 0.253, "v27ter": 0.943}
JUNK = b"\xff\x3f"  # what a demodulator may pass on before the first EOL


def fcf_of(data: bytes) -> Fcf | None:
    try:
        return Frame.parse(data).fcf
    except FrameError:
        return None


class Faults:
    """Fault hooks; every method returns "no fault" by default.  ``n`` counts per sender and kind."""

    def drop_burst(self, sender: str, frames: tuple[bytes, ...], n: int) -> bool:
        return False

    def corrupt_frame(self, sender: str, frame: bytes, n: int) -> bool:
        return False

    def tcf_zero_run(self, sender: str, rate: int, n: int) -> int | None:
        return None

    def tcf_signal(self, sender: str, n: int) -> str | None:
        """None: TCF as sent; "lost": nothing of it arrives; "untrained": the receiver fails to train."""
        return None

    def page_data(self, sender: str, data: bytes, n: int) -> bytes:
        return data

    def page_losses(self, sender: str, data: bytes, n: int) -> list[tuple[int, int]]:
        """(offset, octets) spans of the page data lost on the way (T.38 packets that never came)."""
        return []

    def report_loss(self, sender: str, n: int) -> int | bool | None:
        """What the transport says about a lost span: its octets (int), None (unknown), False (nothing)."""
        return None

    def ecm_frame_bad(self, sender: str, frame: bytes, burst: int, index: int) -> bool:
        return False

    def deaf(self, listener: str, t: float) -> bool:
        return False


@dataclass
class Side:
    name: str
    engine: T30Engine
    store_delay: float = 0.0
    tx_end: float = 0.0
    rx: Receive = field(default_factory=lambda: Receive("v21"))
    events: list[tuple[float, Event]] = field(default_factory=list)
    commands: list[tuple[float, Command]] = field(default_factory=list)
    pages: list[PageReceived] = field(default_factory=list)
    sent: list[PageSent] = field(default_factory=list)
    negotiated: list[Negotiated] = field(default_factory=list)
    result: FaxResult | None = None
    finished_at: float | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        n = self.counters.get(kind, 0)
        self.counters[kind] = n + 1
        return n

    def frames_sent(self) -> list[tuple[float, Fcf | None, bytes]]:
        """(time, FCF, bytes) of every V.21 frame this side sent."""
        out = []
        for t, c in self.commands:
            if isinstance(c, SendHdlc):
                out += [(t, fcf_of(f), f) for f in c.frames]
        return out

    def fcfs_sent(self) -> list[Fcf | None]:
        return [f for _, f, _ in self.frames_sent()]


def hdlc_seconds(frames: Iterable[bytes]) -> float:
    return PREAMBLE + sum(len(f) + 3 for f in frames) * 8 / V21_RATE


class Link:
    """Two engines on a simulated line."""

    def __init__(
        self,
        caller: T30Engine,
        answerer: T30Engine,
        faults: Faults | None = None,
        *,
        caller_store_delay: float = 0.0,
        answerer_store_delay: float = 0.0,
        max_time: float = 3600.0,
        chunk: int = 2048,
    ) -> None:
        self.sides = {
            "caller": Side("caller", caller, caller_store_delay),
            "answerer": Side("answerer", answerer, answerer_store_delay),
        }
        self.faults = faults or Faults()
        self.max_time = max_time
        self.chunk = chunk
        self.now = 0.0
        self._q: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.trace: list[str] = []
        #: called with (link, side, command) for every command, before it is carried out
        self.hooks: list[Callable[[Link, Side, Command], None]] = []

    @property
    def caller(self) -> Side:
        return self.sides["caller"]

    @property
    def answerer(self) -> Side:
        return self.sides["answerer"]

    def peer(self, side: Side) -> Side:
        return self.sides["answerer" if side.name == "caller" else "caller"]

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._q, (t, next(self._seq), action))

    def hangup_at(self, t: float) -> None:
        """Both ends see the call drop at ``t``."""
        for side in self.sides.values():
            self.at(t, partial(self._deliver, side, Hangup()))

    # -- running --------------------------------------------------------------------------------

    def run(self) -> Link:
        self.at(0.0, lambda: self._process(self.caller, self.caller.engine.start(self.now)))
        self.at(0.0, lambda: self._process(self.answerer, self.answerer.engine.start(self.now)))
        while True:
            if all(s.engine.finished for s in self.sides.values()):
                break
            candidates: list[tuple[float, int, str]] = []
            if self._q:
                candidates.append((self._q[0][0], 0, ""))
            for s in self.sides.values():
                d = s.engine.next_deadline()
                if d is not None:
                    candidates.append((d, 1, s.name))
            if not candidates:
                break
            t, kind, name = min(candidates)
            if t > self.max_time:
                break
            self.now = max(self.now, t)
            if kind == 0:
                _, _, action = heapq.heappop(self._q)
                action()
            else:
                side = self.sides[name]
                self._process(side, side.engine.poll(self.now))
        return self

    def _deliver(self, side: Side, ev: Event) -> None:
        if side.engine.finished:
            return
        side.events.append((self.now, ev))
        self.trace.append(f"{self.now:9.3f} {side.name:8s} <- {_show(ev)}")
        self._process(side, side.engine.handle(ev, self.now))

    def _process(self, side: Side, cmds: list[Command]) -> None:
        cursor = max(self.now, side.tx_end)
        sends = False
        peer = self.peer(side)
        for c in cmds:
            for hook in self.hooks:
                hook(self, side, c)
            side.commands.append((self.now, c))
            self.trace.append(f"{self.now:9.3f} {side.name:8s} -> {_show(c)}")
            if isinstance(c, Silence):
                cursor += c.ms / 1000
                sends = True
            elif isinstance(c, SendTone):
                if c.duration_ms is not None:
                    start = cursor
                    cursor += c.duration_ms / 1000
                    sends = True
                    if c.tone == "ced":
                        self.at(start + 0.5, partial(self._deliver, peer, ToneDetected("ced")))
            elif isinstance(c, SendHdlc):
                start, cursor = cursor, cursor + hdlc_seconds(c.frames)
                sends = True
                self.at(start, partial(self._burst_v21, side, c, start))
            elif isinstance(c, SendTcf):
                dur = TRAIN_LONG[c.modem] + c.duration_ms / 1000
                start, cursor = cursor, cursor + dur
                sends = True
                self.at(start, partial(self._burst_tcf, side, c, start))
            elif isinstance(c, SendPage):
                train = (TRAIN_SHORT if c.short_train else TRAIN_LONG)[c.modem]
                dur = train + (len(c.data) + len(JUNK)) * 8 / c.rate + 0.05
                start, cursor = cursor, cursor + dur
                sends = True
                self.at(start, partial(self._burst_page, side, c, start))
            elif isinstance(c, SendEcmFrames):
                train = (TRAIN_SHORT if c.short_train else TRAIN_LONG)[c.modem]
                dur = train + 0.2 + sum(len(f) + 3 for f in c.frames) * 8 / c.rate
                start, cursor = cursor, cursor + dur
                sends = True
                self.at(start, partial(self._burst_ecm, side, c, start))
            elif isinstance(c, Receive):
                self.at(cursor, partial(setattr, side, "rx", c))
            elif isinstance(c, PageReceived):
                side.pages.append(c)
                self.at(self.now + side.store_delay, partial(self._deliver, side, PageStored(c.page_no)))
            elif isinstance(c, PageSent):
                side.sent.append(c)
            elif isinstance(c, Negotiated):
                side.negotiated.append(c)
            elif isinstance(c, Finished):
                side.result = c.result
                side.finished_at = self.now
                # The call is torn down shortly after one end is done.
                self.at(max(cursor, self.now) + 0.5, partial(self._deliver, peer, Hangup()))
        side.tx_end = cursor
        if sends:
            self.at(cursor, partial(self._deliver, side, SendComplete()))

    # -- what the far end hears -----------------------------------------------------------------

    def _hears(
        self, listener: Side, t: float, kind: str, modem: str | None = None, rate: int | None = None
    ) -> bool:
        if listener.engine.finished or listener.tx_end > t + 1e-9 or self.faults.deaf(listener.name, t):
            return False
        if kind == "v21":
            return True
        return listener.rx.kind == "fast"

    def _burst_v21(self, sender: Side, c: SendHdlc, start: float) -> None:
        peer = self.peer(sender)
        n = sender.count("v21")
        if self.faults.drop_burst(sender.name, c.frames, n) or not self._hears(peer, start, "v21"):
            return
        self.at(start + 0.3, lambda: self._deliver(peer, CarrierUp("v21")))
        t = start + PREAMBLE
        for f in c.frames:
            t += (len(f) + 3) * 8 / V21_RATE
            bad = self.faults.corrupt_frame(sender.name, f, sender.count("frame"))
            self.at(t, partial(self._deliver, peer, HdlcFrame(f, not bad)))
        self.at(t + 0.01, lambda: self._deliver(peer, CarrierDown("v21")))

    def _trained(self, peer: Side, modem: str, rate: int, short: bool) -> bool:
        rx = peer.rx
        return rx.kind == "fast" and rx.modem == modem and rx.rate == rate and rx.short_train == short

    def _burst_tcf(self, sender: Side, c: SendTcf, start: float) -> None:
        peer = self.peer(sender)
        n = sender.count("tcf")
        fault = self.faults.tcf_signal(sender.name, n)
        if fault == "lost" or not self._hears(peer, start, "fast"):
            return
        ok = self._trained(peer, c.modem, c.rate, False) and fault != "untrained"
        train_end = start + TRAIN_LONG[c.modem]
        end = train_end + c.duration_ms / 1000
        self.at(start + 0.05, lambda: self._deliver(peer, CarrierUp("fast")))
        self.at(train_end, lambda: self._deliver(peer, FastTrained(ok)))
        if ok:
            run = self.faults.tcf_zero_run(sender.name, c.rate, n)
            zeros = int(c.rate * c.duration_ms / 1000) if run is None else run
            self.at(end, lambda: self._deliver(peer, TcfResult(zeros)))
        self.at(end + 0.01, lambda: self._deliver(peer, CarrierDown("fast")))

    def _burst_page(self, sender: Side, c: SendPage, start: float) -> None:
        peer = self.peer(sender)
        n = sender.count("page")
        if not self._hears(peer, start, "fast"):
            return
        ok = self._trained(peer, c.modem, c.rate, c.short_train)
        train = (TRAIN_SHORT if c.short_train else TRAIN_LONG)[c.modem]
        t = start + train
        self.at(start + 0.05, lambda: self._deliver(peer, CarrierUp("fast")))
        self.at(t, lambda: self._deliver(peer, FastTrained(ok)))
        if ok:
            data = JUNK + self.faults.page_data(sender.name, c.data, n)
            losses = sorted((o + len(JUNK), k) for o, k in self.faults.page_losses(sender.name, c.data, n))
            pos = 0
            for i, (offset, octets) in enumerate([*losses, (len(data), 0)]):
                for j in range(pos, offset, self.chunk):
                    piece = data[j : min(j + self.chunk, offset)]
                    t += len(piece) * 8 / c.rate
                    self.at(t, partial(self._deliver, peer, PageData(piece)))
                if i < len(losses):
                    t += octets * 8 / c.rate
                    told = self.faults.report_loss(sender.name, i)
                    if told is not False:
                        self.at(
                            t, partial(self._deliver, peer, PageDataLost(None if told is None else int(told)))
                        )
                pos = offset + octets
        else:
            t += len(c.data) * 8 / c.rate
        self.at(t + 0.05, lambda: self._deliver(peer, CarrierDown("fast")))

    def _burst_ecm(self, sender: Side, c: SendEcmFrames, start: float) -> None:
        peer = self.peer(sender)
        n = sender.count("ecm")
        if not self._hears(peer, start, "fast"):
            return
        ok = self._trained(peer, c.modem, c.rate, c.short_train)
        train = (TRAIN_SHORT if c.short_train else TRAIN_LONG)[c.modem]
        t = start + train
        self.at(start + 0.05, lambda: self._deliver(peer, CarrierUp("fast")))
        self.at(t, lambda: self._deliver(peer, FastTrained(ok)))
        t += 0.2
        if ok:
            for i, f in enumerate(c.frames):
                t += (len(f) + 3) * 8 / c.rate
                good = not self.faults.ecm_frame_bad(sender.name, f, n, i)
                self.at(t, partial(self._deliver, peer, HdlcFrame(f, good)))
        else:
            t += sum(len(f) + 3 for f in c.frames) * 8 / c.rate
        self.at(t + 0.01, lambda: self._deliver(peer, CarrierDown("fast")))


def _name(data: bytes) -> str:
    f = fcf_of(data)
    return f.name if f is not None else "?"


def _show(x: object) -> str:
    if isinstance(x, HdlcFrame):
        return f"HdlcFrame({_name(x.data)}, ok={x.crc_ok}, {x.data[:8].hex()})"
    if isinstance(x, SendHdlc):
        return f"SendHdlc({[_name(f) for f in x.frames]})"
    if isinstance(x, SendPage):
        return f"SendPage({x.modem}, {x.rate}, {len(x.data)} octets, short={x.short_train})"
    if isinstance(x, SendEcmFrames):
        return f"SendEcmFrames({x.modem}, {x.rate}, {len(x.frames)} frames, short={x.short_train})"
    if isinstance(x, PageData):
        return f"PageData({len(x.data)} octets, end={x.end})"
    if isinstance(x, PageReceived):
        return f"PageReceived({x.page_no}, {x.pels.shape}, bad={x.bad_rows}, {x.quality})"
    return repr(x)


def pair(
    pages: Sequence[SourcePage],
    tx_config: T30Config | None = None,
    rx_config: T30Config | None = None,
    faults: Faults | None = None,
    *,
    polling: bool = False,
    hooks: Iterable[Callable[[Link, Side, Command], None]] = (),
    **kw: float,
) -> Link:
    """Calling transmitter -> answering receiver (or, with ``polling``, calling receiver <- answering
    transmitter), run to the end."""
    if polling:
        caller = T30Engine(rx_config or T30Config(ident="+1 555 0100"), "calling", "receive")
        answerer = T30Engine(tx_config or T30Config(ident="+1 555 0199"), "answering", "transmit", pages)
    else:
        caller = T30Engine(tx_config or T30Config(ident="+1 555 0199"), "calling", "transmit", pages)
        answerer = T30Engine(rx_config or T30Config(ident="+1 555 0100"), "answering", "receive")
    link = Link(caller, answerer, faults, **kw)  # type: ignore[arg-type]
    link.hooks.extend(hooks)
    return link.run()


def same_pels(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


# ======================================================================================================
# Test pages
# ======================================================================================================


def synthetic(rows: int, resolution: str = "standard", seed: int = 0, width: int = 1728) -> FaxPage:
    """A page with text-like blocks, lines and a little noise (a cheap stand-in for a document)."""
    rng = np.random.default_rng(seed)
    pels = np.zeros((rows, width), np.uint8)
    for _ in range(rows // 4):
        y, x = int(rng.integers(0, rows - 4)), int(rng.integers(0, width - 60))
        pels[y : y + int(rng.integers(1, 4)), x : x + int(rng.integers(4, 60))] = 1
    pels[rows // 3, 100 : width - 100] = 1  # a long rule
    pels[:, 0] = seed & 1
    pels |= (rng.random((rows, width)) < 0.002).astype(np.uint8)
    return FaxPage.at(pels, resolution)  # type: ignore[arg-type]


def config(**kw: object) -> T30Config:
    return T30Config(**kw)  # type: ignore[arg-type]


def assert_received(link: Link, pages: list[FaxPage], *, polling: bool = False) -> None:
    rx, tx = (link.caller, link.answerer) if polling else (link.answerer, link.caller)
    assert tx.result is not None and tx.result.success, (tx.result, "\n".join(link.trace[-40:]))
    assert rx.result is not None and rx.result.success, (rx.result, "\n".join(link.trace[-40:]))
    assert tx.result.pages == rx.result.pages == len(pages)
    assert [p.page_no for p in rx.pages] == list(range(1, len(pages) + 1))
    for got, want in zip(rx.pages, pages, strict=True):
        assert same_pels(got.pels, want.pels)
        assert (got.xdpi, got.ydpi) == (want.xdpi, want.ydpi)
        assert got.bad_rows == 0


def frames_of(side: Side, fcf: Fcf) -> list[tuple[float, bytes]]:
    return [(t, f) for t, c, f in side.frames_sent() if c is fcf]


# ======================================================================================================
# Whole calls
# ======================================================================================================


@pytest.mark.parametrize("ecm", [False, True])
@pytest.mark.parametrize("resolution", ["standard", "fine"])
def test_pages_arrive_pixel_exact(ecm: bool, resolution: str) -> None:
    pages = [synthetic(90, resolution, seed) for seed in range(3)]
    link = pair(pages, config(ident="+1 555 0199", ecm=ecm), config(ident="+1 555 0100", ecm=ecm))
    assert_received(link, pages)
    assert link.caller.result is not None and link.caller.result.ecm is ecm
    assert link.answerer.result is not None and link.answerer.result.remote_ident == "+1 555 0199"
    assert link.caller.result.remote_ident == "+1 555 0100"
    for side in (link.caller, link.answerer):
        (neg,) = side.negotiated
        assert (neg.modem, neg.rate, neg.ecm, neg.resolution) == ("v17", 14400, ecm, resolution)
        assert neg.compression == ("mmr" if ecm else "mr")
    # Phase D: MPS between pages, EOP at the end; one DCN from the transmitter.
    expected = [Fcf.PPS] * 3 if ecm else [Fcf.MPS, Fcf.MPS, Fcf.EOP]
    posts = [f for f in link.caller.fcfs_sent() if f in (Fcf.PPS, Fcf.MPS, Fcf.EOP)]
    assert posts == expected
    assert link.caller.fcfs_sent()[-1] is Fcf.DCN
    assert [s.response for s in link.caller.sent] == ["MCF"] * 3


@pytest.mark.parametrize("compression", ["mh", "mr", "mmr"])
def test_each_coding(compression: str) -> None:
    pages = [synthetic(50, "fine", 7)]
    ecm = compression == "mmr"
    tx = config(compressions=(compression,), ecm=ecm)
    link = pair(pages, tx, config())
    assert_received(link, pages)
    assert link.answerer.negotiated[0].compression == compression


@pytest.mark.parametrize("ecm", [False, True])
def test_itu_chart(ecm: bool) -> None:
    page = FaxPage.at(itu_page("itu1"), "fine")
    link = pair([page], config(ecm=ecm), config(ecm=ecm))
    assert_received(link, [page])


def test_64_octet_ecm_frames_and_multiple_blocks() -> None:
    # ~30 kB of MMR data in 64-octet frames: more than 256 frames, so PPS-NULL between blocks.
    rng = np.random.default_rng(3)
    page = FaxPage.at((rng.random((200, 1728)) < 0.08).astype(np.uint8), "fine")
    link = pair([page], config(ecm_frame_size=64), config())
    assert_received(link, [page])
    pps = [f for _, f in frames_of(link.caller, Fcf.PPS)]
    assert len(pps) >= 2
    assert pps[0][3] == 0x00 and pps[-1][3] & 0xFE == Fcf.EOP  # PPS-NULL ... PPS-EOP
    assert pps[0][6] == 255  # a full block of 256 frames
    assert link.answerer.negotiated[0].frame_size == 64


def test_polling_calling_receiver_answering_transmitter() -> None:
    pages = [synthetic(40, "fine", 1), synthetic(40, "fine", 2)]
    link = pair(pages, polling=True)
    assert_received(link, pages, polling=True)
    assert Fcf.DTC in link.caller.fcfs_sent()
    assert Fcf.DCS in link.answerer.fcfs_sent()


def test_eom_when_the_resolution_changes() -> None:
    pages = [synthetic(40, "standard", 1), synthetic(60, "fine", 2)]
    link = pair(pages, config(ecm=False), config(ecm=False))
    assert_received(link, pages)
    assert [f for f in link.caller.fcfs_sent() if f in (Fcf.MPS, Fcf.EOM, Fcf.EOP)] == [Fcf.EOM, Fcf.EOP]
    assert link.answerer.fcfs_sent().count(Fcf.DIS) >= 2  # back to phase B after EOM
    assert [n.resolution for n in link.answerer.negotiated] == ["standard", "fine"]


def test_superfine_is_reduced_when_the_receiver_lacks_it() -> None:
    page = synthetic(80, "superfine", 4)
    link = pair([page], config(), config(resolutions=("standard", "fine")))
    (got,) = link.answerer.pages
    assert got.resolution == "fine"
    assert same_pels(got.pels, page.pels[::2])


def test_300_dpi_page() -> None:
    rng = np.random.default_rng(5)
    page = FaxPage((rng.random((60, 2592)) < 0.05).astype(np.uint8), 300.0, 300.0)
    link = pair([page], config(), config())
    assert_received(link, [page])
    assert link.answerer.pages[0].resolution == "300"


def test_minimum_scan_time_adds_fill() -> None:
    page = synthetic(60, "standard", 9)
    link = pair([page], config(ecm=False, compressions=("mh",)), config(ecm=False, min_scan_ms=20))
    assert_received(link, [page])
    (neg,) = link.caller.negotiated
    assert neg.min_scan_ms == 20
    sent = [c for _, c in link.caller.commands if isinstance(c, SendPage)]
    plain = t4.encode(page.pels, compression="mh")
    assert len(sent[0].data) >= 60 * 14400 * 20 // 1000 // 8 > len(plain)


def test_ecm_uses_no_minimum_scan_time() -> None:
    page = synthetic(30, "standard", 9)
    link = pair([page], config(), config(min_scan_ms=40))
    assert_received(link, [page])
    assert link.caller.negotiated[0].min_scan_ms == 0


def test_sub_address_is_passed() -> None:
    page = synthetic(20, "standard", 1)
    link = pair([page], config(sub_address="1234"), config())
    assert link.answerer.negotiated[0].remote_sub == "1234"


# ======================================================================================================
# Phase B: training, fall-back, timeouts
# ======================================================================================================


class BadTcf(Faults):
    def __init__(self, bad: int) -> None:
        self.bad = bad

    def tcf_zero_run(self, sender: str, rate: int, n: int) -> int | None:
        return rate // 2 if n < self.bad else None  # 0.5 s of zeros: not enough


def dcs_modes(side: Side) -> list[tuple[str, int]]:
    return [(d.modem, d.rate) for d in (Dcs.parse(f[3:]) for _, f in frames_of(side, Fcf.DCS))]


def test_ftt_steps_down_the_ladder() -> None:
    page = synthetic(40, "fine", 3)
    link = pair([page], faults=BadTcf(3))
    assert_received(link, [page])
    assert link.answerer.fcfs_sent().count(Fcf.FTT) == 3
    assert dcs_modes(link.caller) == [("v17", 14400), ("v17", 12000), ("v17", 9600), ("v29", 9600)]
    assert (link.caller.negotiated[0].modem, link.caller.negotiated[0].rate) == ("v29", 9600)
    assert link.caller.result is not None and link.caller.result.rate == 9600


def test_ftt_at_the_lowest_rate_fails() -> None:
    link = pair([synthetic(20)], faults=BadTcf(100))
    assert dcs_modes(link.caller) == list(FALLBACK)
    assert link.caller.result is not None and not link.caller.result.success
    assert link.caller.result.code == "ftt" and link.caller.result.pages == 0
    assert link.answerer.result is not None and link.answerer.result.code == "dcn"


class LoseTcf(Faults):
    """The first ``count`` TCFs never arrive ("lost"), or arrive but the receiver fails to train."""

    def __init__(self, count: int, how: str = "lost") -> None:
        self.count, self.how = count, how

    def tcf_signal(self, sender: str, n: int) -> str | None:
        return self.how if n < self.count else None


def tcf_ends(side: Side) -> list[float]:
    """When each TCF of ``side`` ended: the SendComplete after it (nothing else is sent with it)."""
    done = [t for t, e in side.events if isinstance(e, SendComplete)]
    return [min(u for u in done if u > t) for t, c in side.commands if isinstance(c, SendTcf)]


@pytest.mark.parametrize("how", ["lost", "untrained"])
def test_missing_tcf_gets_ftt_before_t4(how: str) -> None:
    page = synthetic(40, "fine", 3)
    link = pair([page], faults=LoseTcf(2, how))
    assert_received(link, [page])
    # FTT each time, in time for the transmitter: no DCS repeated at the same rate.
    assert link.answerer.fcfs_sent().count(Fcf.FTT) == 2
    assert dcs_modes(link.caller) == [("v17", 14400), ("v17", 12000), ("v17", 9600)]
    ftts = [t for t, _ in frames_of(link.answerer, Fcf.FTT)]
    for end, ftt in zip(tcf_ends(link.caller), ftts, strict=False):
        assert end < ftt + 0.075 < end + T4 - 1.0
    assert link.caller.result is not None and link.caller.result.rate == 9600


def test_tcf_always_lost_fails_at_the_bottom_of_the_ladder() -> None:
    link = pair([synthetic(20)], faults=LoseTcf(100))
    assert dcs_modes(link.caller) == list(FALLBACK)
    assert link.answerer.fcfs_sent().count(Fcf.FTT) == len(FALLBACK)
    assert link.caller.result is not None and link.caller.result.code == "ftt"
    assert link.answerer.result is not None and link.answerer.result.code == "dcn"


def test_v29_only_receiver_starts_at_9600() -> None:
    page = synthetic(20)
    link = pair([page], config(), config(modems=("v29",)))
    assert_received(link, [page])
    assert dcs_modes(link.caller) == [("v29", 9600)]


def test_t1_no_answer() -> None:
    class Deaf(Faults):
        def deaf(self, listener: str, t: float) -> bool:
            return True

    link = pair([synthetic(20)], faults=Deaf())
    for side in (link.caller, link.answerer):
        assert side.result is not None and side.result.code == "t1" and not side.result.success
    assert link.caller.finished_at == pytest.approx(T1)
    assert Fcf.DCN not in link.caller.fcfs_sent()  # never heard the far end: nothing to disconnect
    # The answering terminal repeated CSI + DIS on T4 (from the end of each burst) for T1.
    bursts = [(t, c) for t, c in link.answerer.commands if isinstance(c, SendHdlc)]
    period = T4 + hdlc_seconds(bursts[0][1].frames)
    first_end = 3.075 + hdlc_seconds(bursts[0][1].frames)  # after CED and the gap
    expected = [0.0] + [first_end + T4 + k * period for k in range(10) if first_end + T4 + k * period < T1]
    assert [t for t, _ in bursts] == pytest.approx(expected)


def test_invalid_dcs_is_answered_with_dcn() -> None:
    engine = T30Engine(config(modems=("v29", "v27ter")), "answering", "receive")
    engine.start(0.0)
    engine.handle(SendComplete(), 4.0)
    fif = Dcs(modem="v17", rate=14400).to_fif()
    cmds = engine.handle(HdlcFrame(Frame(Fcf.DCS, fif, x=True).to_bytes()), 5.0)
    assert [fcf_of(f) for c in cmds if isinstance(c, SendHdlc) for f in c.frames] == [Fcf.DCN]
    cmds = engine.handle(SendComplete(), 6.5)
    (fin,) = [c for c in cmds if isinstance(c, Finished)]
    assert fin.result.code == "invalid_dcs" and engine.finished
    assert engine.handle(HdlcFrame(b"\xff\x13\xfb"), 7.0) == [] and engine.next_deadline() is None


def test_start_commands() -> None:
    caller = T30Engine(config(), "calling", "transmit", [synthetic(10)])
    assert caller.start(0.0) == [Receive("v21"), SendTone("cng")]
    assert caller.next_deadline() == pytest.approx(T1)
    answerer = T30Engine(config(ident="42"), "answering", "receive")
    cmds = answerer.start(0.0)
    assert cmds[:2] == [SendTone("ced", 3000), Silence(75)]
    assert isinstance(cmds[2], SendHdlc) and [fcf_of(f) for f in cmds[2].frames] == [Fcf.CSI, Fcf.DIS]
    assert cmds[3] == Receive("v21")
    assert answerer.next_deadline() == pytest.approx(T1)  # T4 starts when DIS is out
    answerer.handle(SendComplete(), 4.2)
    assert answerer.next_deadline() == pytest.approx(4.2 + T4)
    with pytest.raises(RuntimeError):
        answerer.start(5.0)


# ======================================================================================================
# Phase D: copy quality, lost and garbled signals
# ======================================================================================================


def damage(data: bytes, every: int, start: int = 40) -> bytes:
    """Flip a few bits every ``every`` octets."""
    out = bytearray(data)
    out[start::every] = bytes(b ^ 0x5A for b in out[start::every])
    return bytes(out)


def quality_of(data: bytes) -> float:
    res = t4.decode(data, width=1728, compression="mh")
    return res.bad_rows / max(res.rows, 1)


class DamagePage(Faults):
    def __init__(self, pages: set[int], every: int) -> None:
        self.pages, self.every = pages, every

    def page_data(self, sender: str, data: bytes, n: int) -> bytes:
        return damage(data, self.every) if n in self.pages else data


def test_rtn_then_retrain_and_resend() -> None:
    pages = [synthetic(100, "standard", 1), synthetic(100, "standard", 2)]
    coded = t4.encode(pages[0].pels, compression="mh")
    assert quality_of(damage(coded, 40)) > 0.15
    link = pair(pages, config(ecm=False, compressions=("mh",)), config(ecm=False), DamagePage({0}, 40))
    assert_received(link, pages)
    assert link.answerer.fcfs_sent().count(Fcf.RTN) == 1
    # After RTN: a new DCS one step down, TCF, and the same page again.
    assert dcs_modes(link.caller) == [("v17", 14400), ("v17", 12000)]
    assert [s.page_no for s in link.caller.sent] == [1, 2]
    # Both ends report the rate in use after the step down.
    for side in (link.caller, link.answerer):
        assert [n.rate for n in side.negotiated] == [14400, 12000]
        assert side.result is not None and side.result.rate == 12000


def test_rtn_every_time_gives_up() -> None:
    link = pair(
        [synthetic(100)],
        config(ecm=False, compressions=("mh",)),
        config(ecm=False),
        DamagePage(set(range(9)), 40),
    )
    assert link.caller.result is not None and link.caller.result.code == "rtn"
    assert link.answerer.fcfs_sent().count(Fcf.RTN) == 3  # first try + page_retries (2)
    assert link.answerer.pages == [] and link.answerer.result is not None and link.answerer.result.pages == 0


def test_rtp_accepts_the_page_and_retrains() -> None:
    pages = [synthetic(100, "standard", 1), synthetic(100, "standard", 2)]
    coded = t4.encode(pages[0].pels, compression="mh")
    every = next(e for e in range(200, 20, -10) if 0.05 <= quality_of(damage(coded, e)) < 0.15)
    link = pair(pages, config(ecm=False, compressions=("mh",)), config(ecm=False), DamagePage({0}, every))
    assert link.answerer.fcfs_sent().count(Fcf.RTP) == 1
    assert link.caller.result is not None and link.caller.result.success and link.caller.result.pages == 2
    first, second = link.answerer.pages
    assert first.quality == "poor" and first.bad_rows > 0
    assert same_pels(second.pels, pages[1].pels)
    assert link.answerer.result is not None and link.answerer.result.bad_rows == first.bad_rows
    assert len(dcs_modes(link.caller)) == 2  # RTP: retrain before the next page, same rate
    assert [s.response for s in link.caller.sent] == ["RTP", "MCF"]


class DropFirst(Faults):
    """Drop the first ``count`` V.21 bursts from ``sender`` whose last frame is ``fcf``."""

    def __init__(self, sender: str, fcf: Fcf, count: int = 1) -> None:
        self.sender, self.fcf, self.count, self.seen = sender, fcf, count, 0

    def drop_burst(self, sender: str, frames: tuple[bytes, ...], n: int) -> bool:
        if sender == self.sender and fcf_of(frames[-1]) is self.fcf and self.seen < self.count:
            self.seen += 1
            return True
        return False


@pytest.mark.parametrize("ecm", [False, True])
def test_lost_mcf_command_is_repeated_after_t4(ecm: bool) -> None:
    pages = [synthetic(40, "fine", 1), synthetic(40, "fine", 2)]
    link = pair(pages, config(ecm=ecm), config(ecm=ecm), DropFirst("answerer", Fcf.MCF))
    assert_received(link, pages)  # no duplicate page
    post = Fcf.PPS if ecm else Fcf.MPS
    heard = [
        (t, e.data) for t, e in link.answerer.events if isinstance(e, HdlcFrame) and fcf_of(e.data) is post
    ]
    assert len(heard) == (3 if ecm else 2)
    assert link.answerer.fcfs_sent().count(Fcf.MCF) == 3
    # The repeat was sent T4 after the first one ended.
    assert heard[1][0] - heard[0][0] == pytest.approx(T4 + 0.075 + hdlc_seconds([heard[1][1]]))


def test_lost_cfr_repeats_dcs_and_tcf() -> None:
    page = synthetic(30)
    link = pair([page], faults=DropFirst("answerer", Fcf.CFR))
    assert_received(link, [page])
    assert dcs_modes(link.caller) == [("v17", 14400)] * 2
    assert sum(isinstance(c, SendTcf) for _, c in link.caller.commands) == 2


def test_no_response_three_tries_then_dcn() -> None:
    link = pair(
        [synthetic(30)], config(ecm=False), config(ecm=False), DropFirst("answerer", Fcf.MCF, count=99)
    )
    assert link.caller.fcfs_sent().count(Fcf.EOP) == 3
    assert link.caller.fcfs_sent()[-1] is Fcf.DCN
    res = link.caller.result
    assert res is not None and not res.success and res.code == "no_response" and res.pages == 0
    # The receiver answered EOP with MCF and then got DCN: from where it stands, a complete fax.
    assert link.answerer.result is not None and link.answerer.result.success


def test_garbled_command_gets_crp_and_a_quick_repeat() -> None:
    class CorruptMps(Faults):
        done = False

        def corrupt_frame(self, sender: str, frame: bytes, n: int) -> bool:
            if sender == "caller" and fcf_of(frame) is Fcf.MPS and not self.done:
                self.done = True
                return True
            return False

    pages = [synthetic(30, "fine", 1), synthetic(30, "fine", 2)]
    link = pair(pages, config(ecm=False), config(ecm=False), CorruptMps())
    assert_received(link, pages)
    assert link.answerer.fcfs_sent().count(Fcf.CRP) == 1
    times = [t for t, _ in frames_of(link.caller, Fcf.MPS)]
    assert len(times) == 2 and times[1] - times[0] < T4


def test_dcn_from_the_far_end() -> None:
    def abort_on_first_page(link: Link, side: Side, cmd: Command) -> None:
        if side.name == "answerer" and isinstance(cmd, PageReceived):
            link.at(link.now, lambda: link._process(side, side.engine.abort(link.now)))

    link = pair([synthetic(30), synthetic(30, seed=2)], hooks=[abort_on_first_page], answerer_store_delay=0.5)
    assert link.answerer.result is not None and link.answerer.result.code == "aborted"
    assert link.caller.result is not None and link.caller.result.code == "dcn"
    assert link.caller.result.pages == 0 and not link.caller.result.success


@pytest.mark.parametrize("ecm", [False, True])
def test_hangup_mid_page_gives_a_partial_result(ecm: bool) -> None:
    pages = [synthetic(60, "fine", s) for s in range(3)]
    ref = pair(pages, config(ecm=ecm), config(ecm=ecm))
    # When the second page is on the line.
    t_mid = next(t for t, c in ref.caller.commands if isinstance(c, PageSent) and c.page_no == 1) + 1.5
    link = Link(
        T30Engine(config(ecm=ecm), "calling", "transmit", pages),
        T30Engine(config(ecm=ecm), "answering", "receive"),
    )
    link.hangup_at(t_mid)
    link.run()
    for side in (link.caller, link.answerer):
        assert side.result is not None and not side.result.success
        assert side.result.code == "hangup" and side.result.pages == 1
        assert side.finished_at == pytest.approx(t_mid)
    assert len(link.answerer.pages) == 1 and same_pels(link.answerer.pages[0].pels, pages[0].pels)


def test_hangup_after_the_last_mcf_is_a_success_for_the_receiver() -> None:
    page = synthetic(30)
    link = pair([page], faults=DropFirst("caller", Fcf.DCN))
    assert link.answerer.result is not None and link.answerer.result.success
    assert link.answerer.result.pages == 1


def test_slow_page_store_delays_mcf() -> None:
    page = synthetic(30)
    link = pair([page], config(ecm=False), config(ecm=False), answerer_store_delay=1.0)
    assert_received(link, [page])
    (t_rx,) = [t for t, c in link.answerer.commands if isinstance(c, PageReceived)]
    (t_mcf, _) = frames_of(link.answerer, Fcf.MCF)[0]
    assert t_mcf == pytest.approx(t_rx + 1.0)


def test_slow_page_store_in_ecm_sends_rnr() -> None:
    page = synthetic(30)
    link = pair([page], config(), config(), answerer_store_delay=6.0)
    assert_received(link, [page])
    assert link.answerer.fcfs_sent().count(Fcf.RNR) >= 2
    assert link.caller.fcfs_sent().count(Fcf.RR) >= 2
    t_rx = next(t for t, c in link.answerer.commands if isinstance(c, PageReceived))
    t_mcf = frames_of(link.answerer, Fcf.MCF)[0][0]
    assert t_mcf >= t_rx + 6.0


def test_receiver_that_never_stays_ready_hits_t5() -> None:
    link = pair([synthetic(30)], config(), config(), answerer_store_delay=1000.0)
    assert link.caller.result is not None and link.caller.result.code == "t5"
    assert link.answerer.pages and link.answerer.result is not None and link.answerer.result.pages == 0


class LosePageData(Faults):
    """Page data lost on the way (T.38 packets that never came) in the caller's first page transmission:
    ``spans`` as fractions of the coded page; ``told`` whether the receiving transport reports it."""

    def __init__(self, spans: list[tuple[float, float]], told: bool = True) -> None:
        self.spans, self.told = spans, told

    def page_losses(self, sender: str, data: bytes, n: int) -> list[tuple[int, int]]:
        if sender != "caller" or n:
            return []
        return [(int(a * len(data)), int((b - a) * len(data))) for a, b in self.spans]

    def report_loss(self, sender: str, n: int) -> int | bool | None:
        if not self.told:
            return False
        (a, b) = self.spans[n]
        return int((b - a) * 5000)  # an estimate is good enough


def test_lost_page_data_that_nobody_reports_goes_unnoticed() -> None:
    # Why PageDataLost exists: the decoder sees one spliced row, and the page gets MCF.
    page = synthetic(200, "standard", 4)
    cfg = config(ecm=False, compressions=("mh",))
    link = pair([page], cfg, config(ecm=False), LosePageData([(0.3, 0.6)], told=False))
    (got,) = link.answerer.pages
    assert got.pels.shape[0] < 150 and got.bad_rows <= 2 and got.quality in ("good", "perfect")
    assert Fcf.RTN not in link.answerer.fcfs_sent()


def test_lost_page_data_reported_gets_rtn_and_the_page_again() -> None:
    pages = [synthetic(200, "standard", 4), synthetic(50, "standard", 5)]
    cfg = config(ecm=False, compressions=("mh",))
    link = pair(pages, cfg, config(ecm=False), LosePageData([(0.3, 0.6)]))
    assert_received(link, pages)
    assert link.answerer.fcfs_sent().count(Fcf.RTN) == 1
    assert dcs_modes(link.caller) == [("v17", 14400), ("v17", 12000)]


class TestPageDataLost:
    """The engine's count of rows lost on the way, page data given by hand."""

    PAGE = synthetic(100, "standard", 6)

    @staticmethod
    def coded(rows: slice) -> bytes:
        # Byte-aligned EOLs: rows can be cut out cleanly, the worst case (no row decodes badly).
        return t4.encode(TestPageDataLost.PAGE.pels[rows], compression="mh", eol_align=True, rtc=False)

    def run(self, pieces: list[bytes | int | None], after_end: Sequence[int | None] = ()) -> list[Command]:
        engine, _ = receiver_after_cfr()
        self.engine = engine
        engine.handle(TcfResult(14400), 8.0)
        engine.handle(SendComplete(), 9.0)
        engine.handle(CarrierUp("fast"), 9.5)
        engine.handle(FastTrained(True), 9.7)
        t = 10.0
        for p in pieces:
            t += 0.1
            engine.handle(PageData(p) if isinstance(p, bytes) else PageDataLost(p), t)
        engine.handle(CarrierDown("fast"), t + 0.2)
        for p in after_end:
            engine.handle(PageDataLost(p), t + 0.3)
        return engine.handle(v21(Fcf.MPS), t + 1.5)

    def test_clean_loss_is_invisible_to_the_decoder(self) -> None:
        cmds = self.run([self.coded(slice(0, 40)), self.coded(slice(60, 100))])
        (rx,) = [c for c in cmds if isinstance(c, PageReceived)]
        assert rx.pels.shape[0] == 80 and rx.bad_rows == 0 and rx.quality == "perfect"

    def test_one_bad_row_per_loss_of_unknown_size(self) -> None:
        head, mid, tail = self.coded(slice(0, 30)), self.coded(slice(32, 60)), self.coded(slice(62, 100))
        cmds = self.run([head, None, mid, None, tail])
        (rx,) = [c for c in cmds if isinstance(c, PageReceived)]
        assert (rx.pels.shape[0], rx.bad_rows, rx.longest_bad_run, rx.quality) == (96, 2, 1, "good")
        # Five losses of two rows: 5 bad rows of 90 + 5, over 5 %: RTP (kept, then retrain).
        pieces: list[bytes | int | None] = [self.coded(slice(0, 10))]
        for start in range(12, 100, 20):
            pieces += [None, self.coded(slice(start, min(start + 18, 100)))]
        cmds = self.run(pieces)
        (rx,) = [c for c in cmds if isinstance(c, PageReceived)]
        assert (rx.pels.shape[0], rx.bad_rows, rx.quality) == (90, 5, "poor")
        assert sent_fcfs(self.engine.handle(PageStored(rx.page_no), 20.0)) == [Fcf.RTP]

    def test_rows_estimated_from_the_lost_octets(self) -> None:
        head, lost, tail = self.coded(slice(0, 45)), self.coded(slice(45, 55)), self.coded(slice(55, 100))
        cmds = self.run([head, len(lost), tail])
        (rx,) = [c for c in cmds if isinstance(c, PageReceived)]
        assert rx.pels.shape[0] == 90 and 8 <= rx.bad_rows <= 12 and rx.longest_bad_run == rx.bad_rows
        assert rx.quality == "poor"
        head, lost, tail = self.coded(slice(0, 30)), self.coded(slice(30, 70)), self.coded(slice(70, 100))
        cmds = self.run([head, len(lost), tail])
        assert sent_fcfs(cmds) == [Fcf.RTN] and not [c for c in cmds if isinstance(c, PageReceived)]

    def test_ecm_ignores_it(self) -> None:
        engine = T30Engine(config(), "answering", "receive")
        engine.start(0.0)
        engine.handle(SendComplete(), 5.0)
        engine.handle(v21(Fcf.DCS, Dcs(modem="v29", rate=9600, ecm=True).to_fif()), 6.0)
        engine.handle(TcfResult(14400), 8.0)
        engine.handle(SendComplete(), 9.0)
        engine.handle(CarrierUp("fast"), 9.5)
        assert engine.handle(PageDataLost(500), 10.0) == [] and engine.state.value == "F_DOC_ECM"

    def test_loss_noticed_after_the_page_ended_still_counts(self) -> None:
        head, lost, tail = self.coded(slice(0, 30)), self.coded(slice(30, 70)), self.coded(slice(70, 100))
        cmds = self.run([head, tail], after_end=[len(lost)])
        assert sent_fcfs(cmds) == [Fcf.RTN]


class Chaos(Faults):
    """Random losses: V.21 bursts dropped or damaged, ECM frames damaged, TCF failing or lost."""

    def __init__(self, seed: int, drop: float, bad: float, ecm: float, tcf: float) -> None:
        self.rng = np.random.default_rng(seed)
        self.tcf_rng = np.random.default_rng(seed + 1000)
        self.p = (drop, bad, ecm, tcf)

    def tcf_signal(self, sender: str, n: int) -> str | None:
        return "lost" if self.tcf_rng.random() < self.p[3] / 2 else None

    def drop_burst(self, sender: str, frames: tuple[bytes, ...], n: int) -> bool:
        return bool(self.rng.random() < self.p[0])

    def corrupt_frame(self, sender: str, frame: bytes, n: int) -> bool:
        return bool(self.rng.random() < self.p[1])

    def ecm_frame_bad(self, sender: str, frame: bytes, burst: int, index: int) -> bool:
        return bool(self.rng.random() < self.p[2])

    def tcf_zero_run(self, sender: str, rate: int, n: int) -> int | None:
        return rate // 3 if self.rng.random() < self.p[3] else None


@pytest.mark.parametrize(
    ("rates", "min_success"), [((0.15, 0.1, 0.05, 0.2), 0.5), ((0.04, 0.03, 0.03, 0.1), 0.95)]
)
def test_random_losses_keep_the_invariants(
    rates: tuple[float, float, float, float], min_success: float
) -> None:
    pages = [synthetic(60, "fine", s) for s in range(3)]
    runs = successes = 0
    for seed in range(30):
        for ecm in (False, True):
            link = pair(pages, config(ecm=ecm), config(ecm=ecm), Chaos(seed, *rates))
            tx, rx = link.caller.result, link.answerer.result
            assert tx is not None and rx is not None  # both ends always finish
            got = link.answerer.pages
            # Pages arrive once each, in order, pel for pel; the counts differ at most by a lost MCF.
            assert len(got) <= len(pages)
            assert all(same_pels(g.pels, p.pels) for g, p in zip(got, pages, strict=False))
            assert tx.pages <= rx.pages <= tx.pages + 1 and rx.pages <= len(got)
            assert not tx.success or rx.pages == len(pages)
            runs += 1
            successes += tx.success
    assert successes / runs >= min_success


# ======================================================================================================
# One engine driven by hand
# ======================================================================================================


def sent_fcfs(cmds: list[Command]) -> list[Fcf | None]:
    return [fcf_of(f) for c in cmds if isinstance(c, SendHdlc) for f in c.frames]


def v21(fcf: Fcf, fif: bytes = b"", x: bool = True) -> HdlcFrame:
    return HdlcFrame(Frame(fcf, fif, x=x).to_bytes())


def receiver_after_cfr(**kw: object) -> tuple[T30Engine, Dcs]:
    engine = T30Engine(config(**kw), "answering", "receive")
    engine.start(0.0)
    engine.handle(SendComplete(), 5.0)
    dcs = Dcs(modem="v29", rate=9600, compression="mh", min_scan_ms=0)
    cmds = engine.handle(v21(Fcf.DCS, dcs.to_fif()), 6.0)
    assert cmds == [Receive("fast", "v29", 9600, False)]
    return engine, dcs


def test_tcf_given_as_data_is_checked_at_its_end() -> None:
    engine, _ = receiver_after_cfr()
    assert engine.handle(PageData(bytes(1000)), 7.0) == []
    cmds = engine.handle(PageData(bytes(500), end=True), 7.5)  # 12000 zero bits >= 9600
    assert sent_fcfs(cmds) == [Fcf.CFR]
    engine, _ = receiver_after_cfr()
    engine.handle(PageData(bytes(600) + b"\x01" + bytes(600)), 7.0)
    cmds = engine.handle(CarrierDown("fast"), 7.5)  # longest run 4807 bits < 1 s at 9600
    assert sent_fcfs(cmds) == [Fcf.FTT]


def test_training_failure_gets_ftt_when_the_tcf_ends() -> None:
    engine, _ = receiver_after_cfr()
    engine.handle(CarrierUp("fast"), 6.2)
    assert engine.handle(FastTrained(False), 6.5) == []  # the far end is still sending TCF
    assert sent_fcfs(engine.handle(CarrierDown("fast"), 8.0)) == [Fcf.FTT]
    assert engine.handle(CarrierDown("fast"), 8.1) == []  # decided once


def tcf_deadline(dcs_at: float, modem: Modem) -> float:
    return dcs_at + 0.095 + LONG_TRAIN[modem] + TCF_MAX + T30Config().tcf_margin


def test_no_tcf_at_all_gets_ftt_once_it_must_be_over() -> None:
    engine, _ = receiver_after_cfr()  # DCS (V.29) at 6.0
    deadline = tcf_deadline(6.0, "v29")
    assert engine.next_deadline() == pytest.approx(deadline)
    assert deadline < 6.0 + 0.075 + 0.253 + 1.5 + T4 - 1.0  # well before the transmitter's T4
    assert engine.poll(deadline - 0.01) == []
    cmds = engine.poll(deadline)
    assert sent_fcfs(cmds) == [Fcf.FTT] and cmds[-1] == Receive("v21")
    # The transmitter steps down: DCS again, and this time TCF arrives.
    dcs = Dcs(modem="v27ter", rate=4800, compression="mh", min_scan_ms=0)
    engine.handle(SendComplete(), deadline + 1.2)
    assert engine.handle(v21(Fcf.DCS, dcs.to_fif()), deadline + 4.0) == [
        Receive("fast", "v27ter", 4800, False)
    ]
    assert sent_fcfs(engine.handle(TcfResult(4800 * 3 // 2), deadline + 6.5)) == [Fcf.CFR]


def test_a_click_before_the_tcf_is_not_taken_for_it() -> None:
    engine, _ = receiver_after_cfr()
    engine.handle(CarrierUp("fast"), 6.1)
    engine.handle(FastTrained(False), 6.15)
    assert engine.handle(CarrierDown("fast"), 6.2) == []  # too short to be a TCF: wait for it
    engine.handle(CarrierUp("fast"), 6.3)
    engine.handle(FastTrained(True), 6.6)
    assert sent_fcfs(engine.handle(TcfResult(9600 * 3 // 2), 8.1)) == [Fcf.CFR]


def test_tcf_still_arriving_at_the_deadline_gets_one_more_margin() -> None:
    engine, _ = receiver_after_cfr()
    deadline = tcf_deadline(6.0, "v29")
    engine.handle(CarrierUp("fast"), 8.0)  # late: the far end's TCF started long after DCS
    assert engine.poll(deadline) == []
    assert engine.next_deadline() == pytest.approx(deadline + T30Config().tcf_margin)
    assert sent_fcfs(engine.handle(TcfResult(9600 * 3 // 2), deadline + 0.5)) == [Fcf.CFR]
    engine, _ = receiver_after_cfr()
    engine.handle(CarrierUp("fast"), 8.0)
    engine.poll(deadline)
    assert sent_fcfs(engine.poll(deadline + T30Config().tcf_margin)) == [Fcf.FTT]  # never ends


def test_tcf_given_as_data_with_a_gap_fails() -> None:
    engine, _ = receiver_after_cfr()
    engine.handle(PageData(bytes(800)), 7.0)
    engine.handle(PageDataLost(100), 7.1)  # 6400 + 6400 zero bits arrived, but not in one run
    assert sent_fcfs(engine.handle(PageData(bytes(800), end=True), 8.0)) == [Fcf.FTT]
    engine, _ = receiver_after_cfr()
    engine.handle(PageData(bytes(800)), 7.0)
    assert sent_fcfs(engine.handle(PageData(bytes(800), end=True), 8.0)) == [Fcf.CFR]


def test_pri_eop_is_answered_like_eop() -> None:
    engine, _ = receiver_after_cfr()
    engine.handle(TcfResult(14400), 8.0)
    engine.handle(SendComplete(), 9.0)
    page = synthetic(20)
    engine.handle(CarrierUp("fast"), 9.5)
    engine.handle(FastTrained(True), 9.7)
    engine.handle(PageData(t4.encode(page.pels, compression="mh")), 10.0)
    engine.handle(CarrierDown("fast"), 10.1)
    cmds = engine.handle(v21(Fcf.PRI_EOP), 11.5)
    (rx,) = [c for c in cmds if isinstance(c, PageReceived)]
    assert same_pels(rx.pels, page.pels) and sent_fcfs(cmds) == []
    cmds = engine.handle(PageStored(rx.page_no), 11.6)
    assert sent_fcfs(cmds) == [Fcf.MCF]
    cmds = engine.handle(v21(Fcf.DCN), 14.0)
    (fin,) = [c for c in cmds if isinstance(c, Finished)]
    assert fin.result.success and fin.result.pages == 1


def transmitter_at_post_page() -> tuple[T30Engine, list[Command]]:
    engine = T30Engine(config(ecm=False), "calling", "transmit", [synthetic(20), synthetic(20, seed=1)])
    engine.start(0.0)
    cmds = engine.handle(v21(Fcf.DIS, Dis(ecm=False).to_fif(), x=False), 5.0)
    assert sent_fcfs(cmds) == [Fcf.DCS] and isinstance(cmds[3], SendTcf)
    engine.handle(SendComplete(), 8.0)
    cmds = engine.handle(v21(Fcf.CFR, x=False), 9.0)
    assert [type(c).__name__ for c in cmds] == [
        "Negotiated",
        "Silence",
        "SendPage",
        "Silence",
        "SendHdlc",
        "Receive",
    ]
    engine.handle(SendComplete(), 12.0)
    return engine, cmds


def test_pip_confirms_and_pin_resends() -> None:
    engine, _ = transmitter_at_post_page()
    cmds = engine.handle(v21(Fcf.PIP, x=False), 13.0)
    (sent,) = [c for c in cmds if isinstance(c, PageSent)]
    assert sent.response == "PIP" and any(isinstance(c, SendPage) for c in cmds)
    engine, _ = transmitter_at_post_page()
    cmds = engine.handle(v21(Fcf.PIN, x=False), 13.0)
    assert not [c for c in cmds if isinstance(c, PageSent)]
    assert sent_fcfs(cmds) == [Fcf.DCS]  # retrain, then the same page again
    assert Dcs.parse(Frame.parse(cmds[1].frames[-1]).fif).rate == 12000  # type: ignore[union-attr]


def test_t4_suspended_while_the_response_is_arriving() -> None:
    engine, _ = transmitter_at_post_page()
    assert engine.next_deadline() == pytest.approx(12.0 + T4)
    engine.handle(CarrierUp("v21"), 14.0)
    assert engine.next_deadline() == pytest.approx(14.0 + T4 + MAX_V21_BURST)  # not over the far end's flags
    cmds = engine.handle(CarrierDown("v21"), 16.0)  # nothing decodable: wait T4 again
    assert cmds == [] and engine.next_deadline() == pytest.approx(16.0 + T4)
    engine.handle(CarrierUp("v21"), 17.0)
    engine.handle(HdlcFrame(b"\xff\x13\x8c", crc_ok=False), 18.0)
    cmds = engine.handle(CarrierDown("v21"), 18.1)  # garbled response: repeat at once
    assert sent_fcfs(cmds) == [Fcf.MPS]


def test_abort_sends_dcn() -> None:
    engine, _ = transmitter_at_post_page()
    cmds = engine.abort(13.0, "operator")
    assert sent_fcfs(cmds) == [Fcf.DCN]
    (fin,) = [c for c in engine.handle(SendComplete(), 14.2) if isinstance(c, Finished)]
    assert fin.result.code == "aborted" and fin.result.reason == "operator" and not fin.result.success
    assert engine.abort(15.0) == []


def test_longest_zero_run() -> None:
    assert longest_zero_run(b"") == 0
    assert longest_zero_run(bytes(3)) == 24
    assert longest_zero_run(b"\xff\x00\x00\x80\xff") == 23
    assert longest_zero_run(b"\xff") == 0


def test_config_checks() -> None:
    with pytest.raises(ValueError):
        T30Config(modems=("v17", "v29"))  # T.30 Table 2 has no code for that
    with pytest.raises(ValueError):
        T30Config(min_scan_ms=15)
    with pytest.raises(ValueError):
        T30Config(ecm_frame_size=128)
    with pytest.raises(ValueError):
        T30Engine(role="caller")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        T30Config(modems=("v17",))
    with pytest.raises(ValueError):
        T30Config(tcf_margin=-1.0)


# ======================================================================================================
# Against SpanDSP's T.30 engine (libspandsp2 through ctypes, no modems)
# ======================================================================================================

try:
    from tests.peers import spandsp_fax as sf
    from tests.peers.spandsp_fax import T30Peer, library

    SPANDSP = sf.available()
except ImportError:  # pragma: no cover - the peer module is optional
    SPANDSP = False
    T30Peer = object  # type: ignore[assignment,misc]

SET_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int)
SEND_HDLC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_int)
# t30.h (2011): T30_MODEM_*, T30_FRONT_END_*; async.h: SIG_STATUS_*
M_NONE, M_PAUSE, M_CED, M_CNG, M_V21, M_V27TER, M_V29, M_V17, M_V34, M_DONE = range(10)
MODEM_NUM = {"v27ter": M_V27TER, "v29": M_V29, "v17": M_V17}
MODEM_NAME = {v: k for k, v in MODEM_NUM.items()}
SEND_STEP_COMPLETE = 0
CARRIER_DOWN, CARRIER_UP, TRAINING_SUCCEEDED, TRAINING_FAILED, FRAMING_OK = -1, -2, -4, -5, -6
TRAIN_LONG = {"v17": 1.393, "v29": 0.253, "v27ter": 0.943}
TRAIN_SHORT = {"v17": 0.142, "v29": 0.253, "v27ter": 0.943}
TICK = 0.01


def _declare(lib: ctypes.CDLL) -> None:
    vp, i = ctypes.c_void_p, ctypes.c_int
    u8p = ctypes.POINTER(ctypes.c_uint8)
    lib.t30_init.argtypes = [vp, i, SET_HANDLER, vp, SET_HANDLER, vp, SEND_HDLC, vp]
    lib.t30_init.restype = vp
    lib.t30_free.argtypes = [vp]
    lib.t30_hdlc_accept.argtypes = [vp, u8p, i, i]
    lib.t30_front_end_status.argtypes = [vp, i]
    lib.t30_non_ecm_put_bit.argtypes = [vp, i]
    lib.t30_non_ecm_put_chunk.argtypes = [vp, u8p, i]
    lib.t30_non_ecm_get_chunk.argtypes = [vp, u8p, i]
    lib.t30_non_ecm_get_chunk.restype = i
    lib.t30_timer_update.argtypes = [vp, i]


class SpanT30(T30Peer):
    """SpanDSP's T.30 engine on its own; callbacks are queued and handled by :class:`SpanLink`."""

    def __init__(self, calling: bool, log_level: int | None = None, **kw: Any) -> None:
        self.lib = library()
        _declare(self.lib)
        self.calling = calling
        self.samples = 0
        self.t30 = None
        self.calls: list[tuple[Any, ...]] = []
        self._rx_cb = SET_HANDLER(lambda _u, t, r, s, h: self.calls.append(("rx", t, r, s, h)))
        self._tx_cb = SET_HANDLER(lambda _u, t, r, s, h: self.calls.append(("tx", t, r, s, h)))
        self._hdlc_cb = SEND_HDLC(
            lambda _u, msg, n: self.calls.append(("hdlc", ctypes.string_at(msg, n) if n > 0 else None))
        )
        self.t30 = self.lib.t30_init(
            None, int(calling), self._rx_cb, None, self._tx_cb, None, self._hdlc_cb, None
        )
        assert self.t30
        self._setup_logging([self.lib.t30_get_logging_state(self.t30)], log_level)
        self._setup_t30(**kw)

    def hdlc_accept(self, data: bytes | None, status: int = 0, ok: bool = True) -> None:
        if data is None:
            self.lib.t30_hdlc_accept(self.t30, None, status, 1)
        else:
            buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            self.lib.t30_hdlc_accept(self.t30, buf, len(data), int(ok))

    def put_status(self, status: int) -> None:
        self.lib.t30_non_ecm_put_bit(self.t30, status)

    def put_chunk(self, data: bytes) -> None:
        buf = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data.ljust(1, b"\0"))
        self.lib.t30_non_ecm_put_chunk(self.t30, buf, len(data))

    def get_all(self) -> bytes:
        out = bytearray()
        buf = (ctypes.c_uint8 * 1024)()
        while True:
            n = self.lib.t30_non_ecm_get_chunk(self.t30, buf, 1024)
            out += bytes(buf[:n])
            if n < 1024:
                return bytes(out)

    def step_complete(self) -> None:
        self.lib.t30_front_end_status(self.t30, SEND_STEP_COMPLETE)

    def tick(self, samples: int) -> None:
        self.samples += samples
        self.lib.t30_timer_update(self.t30, samples)


class SpanLink:
    """Our engine and SpanDSP's T.30 engine on a simulated line, in 10 ms ticks.

    SpanDSP is driven the way its own audio front end (``fax.c``) drives it: ``set_tx_type`` /
    ``send_hdlc`` calls become timed bursts to our engine, and ``t30_front_end_status`` (send step
    complete) is reported when each frame, pause or image transfer would have ended; our bursts reach
    it through ``t30_hdlc_accept`` and ``t30_non_ecm_put_*`` with the modem status codes.  A
    response SpanDSP queues before its phase change is held until it starts V.21.
    """

    def __init__(
        self,
        ours: T30Engine,
        span: SpanT30,
        max_time: float = 600.0,
        *,
        ecm_bad: Callable[[str, bytes, int], bool] = lambda sender, frame, burst: False,
        tcf_bad: Callable[[str, int], bool] = lambda sender, n: False,
        tcf_lost: Callable[[int], bool] = lambda n: False,
        page_damage: Callable[[str, bytes, int], bytes] = lambda sender, data, n: data,
        drop: Callable[[str, bytes], bool] = lambda sender, frame: False,
    ) -> None:
        self.ours, self.span = ours, span
        self.ecm_bad, self.tcf_bad, self.page_damage, self.drop = ecm_bad, tcf_bad, page_damage, drop
        self.tcf_lost = tcf_lost  # SpanDSP's n-th TCF never reaches our engine
        self.pages_sent = {"ours": 0, "span": 0}
        self.bursts = {"ours": 0, "span": 0}
        self.tcfs = {"ours": 0, "span": 0}
        self.now = 0.0
        self.max_time = max_time
        self._q: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.trace: list[str] = []
        self.trace_cmds: list[tuple[float, Command]] = []
        self.events: list[tuple[float, Event]] = []
        self.pages: list[PageReceived] = []
        self.finished: Finished | None = None
        # our side
        self.our_tx_end = 0.0
        self.our_rx = Receive("v21")
        # SpanDSP side
        self.span_tx: tuple[int, int, int, int] = (M_NONE, 0, 0, 0)
        self.span_rx: tuple[int, int, int, int] = (M_NONE, 0, 0, 0)
        self.span_cursor = 0.0  # end of what SpanDSP has queued for sending
        self.span_busy_until = 0.0
        self._span_pending: list[bytes | None] = []

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._q, (t, next(self._seq), action))

    def run(self) -> SpanLink:
        self.at(0.0, lambda: self._ours(self.ours.start(self.now)))
        self._span_calls()
        while self.now < self.max_time and not (self.ours.finished and self.span.done):
            while self._q and self._q[0][0] <= self.now + 1e-9:
                heapq.heappop(self._q)[2]()
                self._span_calls()
            d = self.ours.next_deadline()
            if d is not None and d <= self.now:
                self._ours(self.ours.poll(self.now))
            self.span.tick(int(TICK * 8000))
            self._span_calls()
            self.now = round(self.now + TICK, 6)
        return self

    # -- our engine -------------------------------------------------------------------------------

    def _deliver(self, ev: Event) -> None:
        if self.ours.finished:
            return
        self.events.append((self.now, ev))
        self.trace.append(f"{self.now:8.3f} ours <- {ev!r:.100}")
        self._ours(self.ours.handle(ev, self.now))

    def _ours(self, cmds: list[Command]) -> None:
        cursor = max(self.now, self.our_tx_end)
        sends = False
        for c in cmds:
            self.trace_cmds.append((self.now, c))
            self.trace.append(f"{self.now:8.3f} ours -> {c!r:.100}")
            if isinstance(c, Silence):
                cursor += c.ms / 1000
                sends = True
            elif isinstance(c, SendTone) and c.duration_ms is not None:
                cursor += c.duration_ms / 1000
                sends = True
            elif isinstance(c, SendHdlc):
                sends = True
                self.at(cursor + 0.3, partial(self._to_span_status, CARRIER_UP, FRAMING_OK))
                t = cursor + 1.0
                for f in c.frames:
                    t += (len(f) + 3) * 8 / 300
                    if not self.drop("ours", f):
                        self.at(t, partial(self._to_span_frame, f))
                cursor = t + 0.02
                self.at(cursor, partial(self._to_span_status, CARRIER_DOWN))
            elif isinstance(c, (SendTcf, SendPage)):
                sends = True
                short = isinstance(c, SendPage) and c.short_train
                train = (TRAIN_SHORT if short else TRAIN_LONG)[c.modem]
                data = bytes(c.rate * c.duration_ms // 8000) if isinstance(c, SendTcf) else c.data
                if isinstance(c, SendTcf):
                    self.tcfs["ours"] += 1
                    if self.tcf_bad("ours", self.tcfs["ours"] - 1):
                        data = _broken_tcf(data)
                else:
                    self.pages_sent["ours"] += 1
                    data = self.page_damage("ours", data, self.pages_sent["ours"] - 1)
                start, cursor = cursor, cursor + train + len(data) * 8 / c.rate + 0.02
                self.at(start + train, partial(self._to_span_fast, c.modem, c.rate, False, data, cursor))
            elif isinstance(c, SendEcmFrames):
                sends = True
                train = (TRAIN_SHORT if c.short_train else TRAIN_LONG)[c.modem]
                start = cursor
                t = start + train + 0.2
                self.at(start + train, partial(self._to_span_fast_up, c.modem, c.rate, True))
                burst = self.bursts["ours"]
                self.bursts["ours"] += 1
                for f in c.frames:
                    t += (len(f) + 3) * 8 / c.rate
                    self.at(t, partial(self._to_span_ecm_frame, f, not self.ecm_bad("ours", f, burst)))
                cursor = t + 0.02
                self.at(cursor, partial(self._to_span_ecm_down, c.modem, c.rate))
            elif isinstance(c, Receive):
                self.at(cursor, partial(setattr, self, "our_rx", c))
            elif isinstance(c, PageReceived):
                self.pages.append(c)
                self.at(self.now, partial(self._deliver, PageStored(c.page_no)))
            elif isinstance(c, Finished):
                self.finished = c
        self.our_tx_end = cursor
        if sends:
            self.at(cursor, partial(self._deliver, SendComplete()))

    # -- to SpanDSP -----------------------------------------------------------------------------

    def _span_listening(self) -> bool:
        return self.span_rx[0] not in (M_NONE, M_DONE) and self.span_busy_until <= self.now + 1e-9

    def _to_span_status(self, *statuses: int) -> None:
        if not self._span_listening():
            return
        for s in statuses:
            self.trace.append(f"{self.now:8.3f} span <- hdlc status {s}")
            self.span.hdlc_accept(None, s)

    def _to_span_frame(self, f: bytes) -> None:
        if self._span_listening():
            self.trace.append(f"{self.now:8.3f} span <- frame {f[:8].hex()}")
            self.span.hdlc_accept(f)

    def _span_fast_match(self, modem: str, rate: int, hdlc: bool) -> bool:
        t, r, _s, h = self.span_rx
        return self._span_listening() and t == MODEM_NUM[modem] and r == rate and bool(h) == hdlc

    def _to_span_fast(self, modem: str, rate: int, hdlc: bool, data: bytes, end: float) -> None:
        if not self._span_fast_match(modem, rate, hdlc):
            self.trace.append(f"{self.now:8.3f} span misses {modem} {rate} (rx {self.span_rx})")
            return
        self.trace.append(f"{self.now:8.3f} span <- fast {modem} {rate} {len(data)} octets")
        self.span.put_status(TRAINING_SUCCEEDED)
        t = self.now
        for i in range(0, len(data), 2048):  # the data arrives at the line rate
            piece = data[i : i + 2048]
            t += len(piece) * 8 / rate
            self.at(t, partial(self.span.put_chunk, piece))
        self.at(end, partial(self.span.put_status, CARRIER_DOWN))

    def _to_span_fast_up(self, modem: str, rate: int, hdlc: bool) -> None:
        self._ecm_heard = self._span_fast_match(modem, rate, hdlc)
        if self._ecm_heard:
            self.span.hdlc_accept(None, TRAINING_SUCCEEDED)

    def _to_span_ecm_frame(self, f: bytes, ok: bool) -> None:
        if self._ecm_heard:
            self.span.hdlc_accept(f, ok=ok)

    def _to_span_ecm_down(self, modem: str, rate: int) -> None:
        if self._ecm_heard:
            self.span.hdlc_accept(None, CARRIER_DOWN)

    # -- from SpanDSP ---------------------------------------------------------------------------

    def _span_calls(self) -> None:
        while self.span.calls:
            call = self.span.calls.pop(0)
            shown = call[1:] if call[0] != "hdlc" else (call[1] or b"").hex()[:16]
            self.trace.append(f"{self.now:8.3f} span -> {call[0]} {shown}")
            if call[0] == "rx":
                self.span_rx = call[1:]
            elif call[0] == "tx":
                self._span_tx_type(*call[1:])
            else:
                self._span_hdlc(call[1])

    def _span_step_complete(self) -> None:
        self.trace.append(f"{self.now:8.3f} span <- step complete")
        self.span.step_complete()

    def _span_tx_type(self, typ: int, rate: int, short: int, hdlc: int) -> None:
        if (typ, rate, short, hdlc)[0] == self.span_tx[0]:
            return  # fax.c: the same type again changes nothing
        self.span_tx = (typ, rate, short, hdlc)
        cursor = max(self.now, self.span_cursor)
        if typ == M_PAUSE:
            cursor += short / 1000
            self.at(cursor, self._span_step_complete)
        elif typ == M_CED:
            cursor += 2.6
            self.at(cursor, self._span_step_complete)
        elif typ == M_V21:
            cursor += 0.075
            self.at(cursor + 0.3, partial(self._to_ours_v21_up))
            cursor += 32 * 8 / 300  # preamble flags
        elif typ in MODEM_NAME:
            modem = MODEM_NAME[typ]
            cursor += 0.075
            start = cursor
            cursor += (TRAIN_SHORT if short else TRAIN_LONG)[modem]
            if hdlc:
                cursor += 0.2
                self._span_burst = self.bursts["span"]
                self.bursts["span"] += 1
                self.at(start, partial(self._to_ours_fast_up, modem, rate, bool(short)))
            else:
                data = self.span.get_all()
                heard = True
                if data and not any(data):  # TCF
                    self.tcfs["span"] += 1
                    heard = not self.tcf_lost(self.tcfs["span"] - 1)
                    if self.tcf_bad("span", self.tcfs["span"] - 1):
                        data = _broken_tcf(data)
                elif data:
                    self.pages_sent["span"] += 1
                    data = self.page_damage("span", data, self.pages_sent["span"] - 1)
                if heard:
                    self.at(start, partial(self._to_ours_fast_up, modem, rate, bool(short)))
                t = cursor
                for i in range(0, len(data), 2048):
                    piece = data[i : i + 2048]
                    t += len(piece) * 8 / rate
                    if heard:
                        self.at(t, partial(self._to_ours_data, piece))
                cursor = t + 0.02
                if heard:
                    self.at(cursor, partial(self._to_ours_fast_down))
                self.at(cursor, self._span_step_complete)
        else:
            pass  # NONE / DONE / CNG: nothing to time
        self.span_cursor = cursor
        self.span_busy_until = cursor if typ not in (M_NONE, M_DONE, M_CNG) else self.now
        if typ == M_V21 or (typ in MODEM_NAME and hdlc):
            pending, self._span_pending = self._span_pending, []
            for frame in pending:
                self._span_hdlc(frame)

    def _span_hdlc(self, data: bytes | None) -> None:
        typ, rate = self.span_tx[0], self.span_tx[1]
        if typ not in (M_V21, *MODEM_NAME):
            # SpanDSP queues a response before its phase change (made when our carrier drops).
            self._span_pending.append(data)
            return
        bps = 300 if typ == M_V21 else rate
        cursor = max(self.now, self.span_cursor)
        if data is None:
            cursor += 0.02
            kind = "v21" if typ == M_V21 else "fast"
            self.at(cursor, partial(self._to_ours_down, kind))
        else:
            cursor += (len(data) + 3) * 8 / bps
            ok = typ == M_V21 or not self.ecm_bad("span", data, self._span_burst)
            if not (typ == M_V21 and self.drop("span", data)):
                self.at(cursor, partial(self._to_ours_frame, data, typ == M_V21, ok))
        self.at(cursor, self._span_step_complete)
        self.span_cursor = cursor
        self.span_busy_until = cursor

    # -- to our engine --------------------------------------------------------------------------

    def _ours_listening(self) -> bool:
        return self.our_tx_end <= self.now + 1e-9

    def _to_ours_v21_up(self) -> None:
        if self._ours_listening():
            self._deliver(CarrierUp("v21"))

    def _to_ours_frame(self, data: bytes, v21: bool, ok: bool) -> None:
        if self._ours_listening() and (v21 or self._fast_heard):
            self._deliver(HdlcFrame(data, ok))

    def _to_ours_down(self, kind: str) -> None:
        if self._ours_listening() and (kind == "v21" or self._fast_heard):
            self._deliver(CarrierDown(kind))  # type: ignore[arg-type]

    def _to_ours_fast_up(self, modem: str, rate: int, short: bool) -> None:
        rx = self.our_rx
        self._fast_heard = self._ours_listening() and rx.kind == "fast"
        if self._fast_heard:
            self._deliver(CarrierUp("fast"))
            self._deliver(FastTrained(rx.modem == modem and rx.rate == rate))
            self._fast_heard = rx.modem == modem and rx.rate == rate

    def _to_ours_data(self, piece: bytes) -> None:
        if self._fast_heard:
            self._deliver(PageData(piece))

    def _to_ours_fast_down(self) -> None:
        if self._fast_heard:
            self._deliver(CarrierDown("fast"))

    _fast_heard = False
    _ecm_heard = False
    _span_burst = 0


def _broken_tcf(data: bytes) -> bytes:
    """TCF with a one bit every 0.4 s or so: no run of zeros lasts 1 s."""
    out = bytearray(data)
    out[100::500] = b"\x01" * len(out[100::500])
    return bytes(out)


spandsp_only = pytest.mark.skipif(not SPANDSP, reason="libspandsp2 is not installed")
SPAN_PAGES = ("itu1", 400), ("itu2", 300)


def span_pair(
    tmp_path: Path,
    ours_transmit: bool,
    *,
    ecm: bool,
    compressions: tuple[str, ...] | None = None,
    polling: bool = False,
    modems: tuple[str, ...] = ("v27ter", "v29", "v17"),
    ours: T30Config | None = None,
    pages: list[np.ndarray] | None = None,
    scan_ms: int | None = None,
    **faults: Any,
) -> tuple[SpanLink, SpanT30, list[np.ndarray]]:
    """Our engine and SpanDSP's, one sending ``pages`` (fine) to the other.

    Normally the transmitter calls; with ``polling`` the receiver calls and polls.
    """
    pages = pages if pages is not None else [itu_page(name)[:rows] for name, rows in SPAN_PAGES]
    cfg = ours or config(ident="UMS", ecm=ecm)
    common: dict[str, Any] = dict(
        ecm=ecm,
        modems=modems,
        ident="SPANDSP",
        compressions=compressions,
        resolutions=None,
        image_sizes=None,
        rx_encoding=None,
    )
    tx_calls = not polling
    if ours_transmit:
        engine = T30Engine(
            cfg, "calling" if tx_calls else "answering", "transmit", [FaxPage.at(p, "fine") for p in pages]
        )
        span = SpanT30(not tx_calls, receive_tiff=tmp_path / "rx.tif", transmit_tiff=None, **common)
    else:
        src = sf.write_fax_tiff(tmp_path / "tx.tif", pages, resolution="fine")
        engine = T30Engine(cfg, "answering" if tx_calls else "calling", "receive")
        span = SpanT30(tx_calls, transmit_tiff=src, receive_tiff=None, **common)
    if scan_ms is not None:
        span.lib.t30_set_minimum_scan_line_time(span.t30, scan_ms)
    link = SpanLink(engine, span, max_time=300.0, **faults).run()
    assert engine.result is not None and span.done, "\n".join(link.trace[-40:])
    return link, span, pages


def assert_span_call(
    link: SpanLink, span: SpanT30, pages: list[np.ndarray], tmp_path: Path, ours_transmit: bool
) -> None:
    res = link.ours.result
    assert res is not None and res.success, (res, "\n".join(link.trace[-40:]))
    assert span.result.ok, span.result.completion_text
    assert res.remote_ident == "SPANDSP" and span.result.remote_ident == "UMS"
    assert res.rate == span.result.bit_rate and res.ecm is span.result.ecm
    received = sf.read_fax_tiff(tmp_path / "rx.tif") if ours_transmit else [p.pels for p in link.pages]
    assert len(received) == len(pages)
    for got, want in zip(received, pages, strict=True):
        assert same_pels(got, want)
    assert res.pages == len(pages)
    assert (span.result.pages_rx if ours_transmit else span.result.pages_tx) == len(pages)


@spandsp_only
@pytest.mark.parametrize("ecm", [False, True], ids=["no-ecm", "ecm"])
@pytest.mark.parametrize("ours_transmit", [True, False], ids=["ums-to-spandsp", "spandsp-to-ums"])
def test_spandsp_t30(tmp_path: Path, ours_transmit: bool, ecm: bool) -> None:
    link, span, pages = span_pair(tmp_path, ours_transmit, ecm=ecm)
    assert_span_call(link, span, pages, tmp_path, ours_transmit)
    assert link.ours.result is not None and link.ours.result.rate == 14400


@spandsp_only
@pytest.mark.parametrize("ours_transmit", [True, False], ids=["ums-to-spandsp", "spandsp-to-ums"])
def test_spandsp_ecm_frame_errors(tmp_path: Path, ours_transmit: bool) -> None:
    sender = "ours" if ours_transmit else "span"

    def bad(who: str, frame: bytes, burst: int) -> bool:
        return who == sender and burst == 0 and frame[2] == Fcf.FCD and frame[3] in (2, 5, 9)

    link, span, pages = span_pair(tmp_path, ours_transmit, ecm=True, ecm_bad=bad)
    assert_span_call(link, span, pages, tmp_path, ours_transmit)
    assert "PPR" in [f.name for f in span.frames if f.sent == ours_transmit]  # from the receiver


@spandsp_only
@pytest.mark.parametrize("ours_transmit", [True, False], ids=["ums-to-spandsp", "spandsp-to-ums"])
def test_spandsp_ftt_and_step_down(tmp_path: Path, ours_transmit: bool) -> None:
    sender = "ours" if ours_transmit else "span"
    link, span, pages = span_pair(
        tmp_path, ours_transmit, ecm=False, tcf_bad=lambda who, n: who == sender and n < 2
    )
    assert_span_call(link, span, pages, tmp_path, ours_transmit)
    assert span.result.bit_rate == 9600
    assert [f.name for f in span.frames].count("FTT") == 2


@spandsp_only
def test_spandsp_tcf_lost_gets_ftt_and_a_step_down(tmp_path: Path) -> None:
    # SpanDSP's first two TCFs never reach us: FTT before its T4, and it steps down each time.
    link, span, pages = span_pair(tmp_path, False, ecm=False, tcf_lost=lambda n: n < 2)
    assert_span_call(link, span, pages, tmp_path, False)
    assert [f.name for f in span.frames if not f.sent].count("FTT") == 2
    assert [f.name for f in span.frames if f.sent].count("DCS") == 3
    dcs = [t for t, e in link.events if isinstance(e, HdlcFrame) and fcf_of(e.data) is Fcf.DCS]
    ftt = [t for t, c in link.trace_cmds if isinstance(c, SendHdlc) and fcf_of(c.frames[-1]) is Fcf.FTT]
    # At the TCF deadline (V.17: 4.15 s after DCS, 1.1 s after the TCF), not at T2 (6 s).
    assert [b - a for a, b in zip(dcs, ftt, strict=False)] == pytest.approx(
        [tcf_deadline(0.0, "v17")] * 2, abs=0.02
    )
    assert span.result.bit_rate == 9600
    assert link.ours.result is not None and link.ours.result.rate == 9600


def _frame_one_bad(sender: str, bursts: int) -> Callable[[str, bytes, int], bool]:
    def bad(who: str, frame: bytes, burst: int) -> bool:
        return who == sender and burst < bursts and frame[2] == Fcf.FCD and frame[3] == 1

    return bad


@spandsp_only
def test_ctc_from_spandsp(tmp_path: Path) -> None:
    # SpanDSP sends CTC after four PPRs, keeping its rate; our receiver takes the rate from the FIF.
    link, span, pages = span_pair(tmp_path, False, ecm=True, ecm_bad=_frame_one_bad("span", 4))
    assert_span_call(link, span, pages, tmp_path, False)
    (ctc,) = [f for f in span.frames if f.sent and f.name == "CTC"]
    assert parse_ctc(Frame.parse(ctc.data).fif) == ("v17", 14400)
    assert link.ours.result is not None and link.ours.result.rate == 14400


@spandsp_only
@pytest.mark.parametrize(("step_down", "rate"), [(True, 12000), (False, 14400)])
def test_ctc_to_spandsp(tmp_path: Path, step_down: bool, rate: int) -> None:
    pages = [itu_page(name)[:rows] for name, rows in SPAN_PAGES]
    ours = T30Engine(
        config(ident="UMS", ctc_step_down=step_down),
        "calling",
        "transmit",
        [FaxPage.at(p, "fine") for p in pages],
    )
    span = SpanT30(
        False,
        receive_tiff=tmp_path / "rx.tif",
        transmit_tiff=None,
        ecm=True,
        modems=("v27ter", "v29", "v17"),
        ident="SPANDSP",
        compressions=None,
        resolutions=None,
        image_sizes=None,
        rx_encoding=None,
    )
    link = SpanLink(ours, span, ecm_bad=_frame_one_bad("ours", 4)).run()
    assert_span_call(link, span, pages, tmp_path, True)
    (ctc,) = [f for f in span.frames if not f.sent and f.name == "CTC"]
    assert parse_ctc(Frame.parse(ctc.data).fif) == ("v17", rate)
    assert span.result.bit_rate == rate
    assert link.ours.result is not None and link.ours.result.rate == rate


@spandsp_only
@pytest.mark.parametrize("ours_transmit", [True, False], ids=["ums-to-spandsp", "spandsp-to-ums"])
def test_spandsp_polling(tmp_path: Path, ours_transmit: bool) -> None:
    link, span, pages = span_pair(tmp_path, ours_transmit, ecm=True, polling=True)
    assert_span_call(link, span, pages, tmp_path, ours_transmit)
    names = [f.name for f in span.frames]
    assert names.index("DTC") < names.index("DCS")


@spandsp_only
@pytest.mark.parametrize("ours_transmit", [True, False], ids=["ums-to-spandsp", "spandsp-to-ums"])
def test_spandsp_mmr(tmp_path: Path, ours_transmit: bool) -> None:
    link, span, pages = span_pair(tmp_path, ours_transmit, ecm=True, compressions=("mh", "mr", "mmr"))
    assert_span_call(link, span, pages, tmp_path, ours_transmit)
    assert link.ours.result is not None and link.ours.result.compression == "mmr"


@spandsp_only
@pytest.mark.parametrize(("modem", "rate"), [("v29", 9600), ("v27ter", 4800)])
@pytest.mark.parametrize("ours_transmit", [True, False], ids=["ums-to-spandsp", "spandsp-to-ums"])
def test_spandsp_slower_modems(tmp_path: Path, ours_transmit: bool, modem: str, rate: int) -> None:
    link, span, pages = span_pair(tmp_path, ours_transmit, ecm=False, modems=(modem,))
    assert_span_call(link, span, pages, tmp_path, ours_transmit)
    assert link.ours.result is not None and (link.ours.result.modem, link.ours.result.rate) == (modem, rate)


@spandsp_only
def test_spandsp_eom_and_minimum_scan_time(tmp_path: Path) -> None:
    # A standard page, then a fine one: EOM and phase B again; SpanDSP asks for 20 ms scan lines.
    pages = [itu_page("itu1")[:400:2], itu_page("itu2")[:300]]
    engine = T30Engine(
        config(ident="UMS", ecm=False, compressions=("mh",)),
        "calling",
        "transmit",
        [FaxPage.at(pages[0], "standard"), FaxPage.at(pages[1], "fine")],
    )
    span = SpanT30(
        False,
        receive_tiff=tmp_path / "rx.tif",
        transmit_tiff=None,
        ecm=False,
        modems=("v27ter", "v29", "v17"),
        ident="SPANDSP",
        compressions=None,
        resolutions=None,
        image_sizes=None,
        rx_encoding=None,
    )
    span.lib.t30_set_minimum_scan_line_time(span.t30, 20)
    link = SpanLink(engine, span).run()
    assert_span_call(link, span, pages, tmp_path, True)
    names = [f.name for f in span.frames]
    assert names.count("DIS") == 2 and "EOM" in names
    sent = [c for _, c in link.trace_cmds if isinstance(c, SendPage)]
    assert len(sent[0].data) * 8 >= 200 * 14400 * 20 // 1000  # 20 ms per standard line at least


def _damage_first(sender: str) -> Callable[[str, bytes, int], bytes]:
    def damage_page(who: str, data: bytes, n: int) -> bytes:
        return damage(data, 40) if who == sender and n == 0 else data

    return damage_page


@spandsp_only
@pytest.mark.parametrize("ours_transmit", [True, False], ids=["ums-to-spandsp", "spandsp-to-ums"])
def test_spandsp_rtn(tmp_path: Path, ours_transmit: bool) -> None:
    sender = "ours" if ours_transmit else "span"
    link, span, pages = span_pair(
        tmp_path, ours_transmit, ecm=False, compressions=("mh",), page_damage=_damage_first(sender)
    )
    assert [f.name for f in span.frames].count("RTN") == 1
    assert_span_call(link, span, pages, tmp_path, ours_transmit)


@spandsp_only
@pytest.mark.parametrize("ours_transmit", [True, False], ids=["ums-to-spandsp", "spandsp-to-ums"])
@pytest.mark.parametrize("ecm", [False, True], ids=["no-ecm", "ecm"])
def test_spandsp_lost_mcf(tmp_path: Path, ours_transmit: bool, ecm: bool) -> None:
    receiver = "span" if ours_transmit else "ours"
    lost: list[bytes] = []

    def drop(who: str, frame: bytes) -> bool:
        if who == receiver and frame[2] & 0xFE == Fcf.MCF and not lost:
            lost.append(frame)
            return True
        return False

    link, span, pages = span_pair(tmp_path, ours_transmit, ecm=ecm, drop=drop)
    assert lost
    assert_span_call(link, span, pages, tmp_path, ours_transmit)
    post = "PPS" if ecm else "MPS"
    assert [f.name for f in span.frames].count(post) == (3 if ecm else 2)


def test_a_v21_burst_that_never_ends_still_times_out() -> None:
    engine, _ = transmitter_at_post_page()
    engine.handle(CarrierUp("v21"), 14.0)  # ...and no CarrierDown ever
    assert engine.poll(14.0 + T4 + MAX_V21_BURST - 0.1) == []
    assert sent_fcfs(engine.poll(14.0 + T4 + MAX_V21_BURST)) == [Fcf.MPS]
