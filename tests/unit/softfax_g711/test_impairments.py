"""Our audio fax terminal against SpanDSP's fax machine over an impaired packet line, in memory.

The line is 20 ms G.711 packets (A-law or mu-law) with seeded random packet loss; the receiving end
is told of a lost packet (our terminal: ``fillin(160)``; SpanDSP: ``fax_rx_fillin``).  With ECM every
page must arrive pel for pel; without ECM the damage must show as bad rows, and the response
(MCF / RTP / RTN) must follow the copy-quality thresholds (5 % and 15 % of rows).  Also: one sample
slipped (inserted or dropped once), and a weak line (-30 dBm0) with a sample-clock offset.

The seeds are fixed, and chosen so that packets of image data are lost.  Not every seed succeeds: at
1 % a command and its two repeats are all hit now and then (T.30 gives up), and a packet lost in our
V.17 long training makes SpanDSP 0.0.6 fail the TCF without answering FTT; it then takes our repeated
DCS for an unexpected frame and sends DCN.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line, spandsp
from tests.peers import spandsp_fax as sf
from tests.unit.fax.pages import itu_page
from ums.fax.t30 import Finished, PageDataLost, PageReceived, PageSent, State, T30Config, T30Engine
from ums.fax.t30_frames import Modem
from ums.render.page import FaxPage
from ums.softfax_g711.terminal import AudioFaxTerminal

pytestmark = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

Page = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.int16]
BLOCK = 160
#: One direction of the line: a 20 ms packet in, the packet delivered (None: lost).
LineFn = Callable[[npt.NDArray[np.int16]], npt.NDArray[np.int16] | None]
MODEMS: dict[str, tuple[Modem, ...]] = {
    "v17": ("v17", "v29", "v27ter"),
    "v29": ("v29",),
    "v27ter": ("v27ter",),
}
#: SpanDSP's audio fax machine sends its modems at -14 dBm0.
SPANDSP_LEVEL_DBM0 = -14.0


# -- the two ends ------------------------------------------------------------------------------------


class OurFax:
    """Our terminal; received pages are stored at once."""

    def __init__(self, engine: T30Engine, level_dbm0: float = -10.0) -> None:
        self.term = AudioFaxTerminal(engine, level_dbm0=level_dbm0)
        self.received: list[PageReceived] = []
        self.sent: list[PageSent] = []
        self.finished: list[Finished] = []

    @property
    def done(self) -> bool:
        return self.term.finished

    def tx(self, n: int) -> Samples:
        return self.term.transmit(n)

    def rx(self, samples: Samples) -> None:
        self.term.receive(samples)
        self._reports()

    def fillin(self, n: int) -> None:
        self.term.fillin(n)
        self._reports()

    def _reports(self) -> None:
        for r in self.term.take_reports():
            if isinstance(r, PageReceived):
                self.received.append(r)
                self.term.page_stored(r.page_no)
            elif isinstance(r, PageSent):
                self.sent.append(r)
            elif isinstance(r, Finished):
                self.finished.append(r)


class SpanEnd(sf.SpanFax):
    """SpanDSP's fax machine with ``fax_rx_fillin`` for lost packets."""

    def fillin(self, n: int) -> None:
        lib = self.lib
        if lib.fax_rx_fillin.argtypes is None:
            lib.fax_rx_fillin.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.fax_rx_fillin.restype = ctypes.c_int
        lib.fax_rx_fillin(self.state, n)
        self.samples += n


# -- the line ------------------------------------------------------------------------------------------


@dataclass
class PacketLine:
    """One direction: gain, then G.711 ``law`` per 20 ms packet, each lost with probability ``loss``;
    ``slip`` (sample index, +1 or -1) inserts a repeated sample or drops one there, once."""

    law: Literal["PCMA", "PCMU"]
    loss: float = 0.0
    seed: int = 0
    gain_db: float = 0.0
    slip: tuple[int, int] | None = None
    resampler: StreamResampler | None = None
    prefill: int = 0
    lost_at: list[int] = field(default_factory=list)
    sent: int = 0
    _rng: np.random.Generator = field(init=False)
    _fifo: Samples = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._fifo = np.zeros(self.prefill, np.int16)

    def __call__(self, x: Samples) -> Samples | None:
        y: npt.NDArray[np.float64] = x.astype(np.float64) * 10 ** (self.gain_db / 20)
        if self.resampler is not None:
            y = self.resampler.process(y)
        if self.slip is not None:
            at, kind = self.slip
            if self.sent <= at < self.sent + x.size:
                i = at - self.sent
                y = np.concatenate([y[: i + 1], y[i:]]) if kind > 0 else np.delete(y, i)
        self.sent += x.size
        # Packets stay 160 samples: a slip or a clock offset moves the packet boundaries.
        fifo = np.concatenate([self._fifo, line.g711(y, self.law)])
        if fifo.size < BLOCK:
            fifo = np.pad(fifo, (0, BLOCK - fifo.size))
        pkt, self._fifo = fifo[:BLOCK], fifo[BLOCK:]
        if self.loss and self._rng.random() < self.loss:
            self.lost_at.append(self.sent)
            return None
        return pkt


class StreamResampler:
    """Block-wise band-limited resampling for a sample clock ``ppm`` fast (linear-phase windowed sinc,
    32 taps, fractional delay interpolated from 256 phases); state carried across blocks."""

    TAPS = 32
    PHASES = 256

    def __init__(self, ppm: float) -> None:
        self.ratio = 1.0 + ppm * 1e-6
        half = self.TAPS // 2
        taps = np.arange(-half + 1, half + 1)
        frac = np.arange(self.PHASES + 1)[:, None] / self.PHASES
        d = frac - taps[None, :]
        r = np.clip(d / (half + 1), -1.0, 1.0)
        self.table = np.sinc(d) * np.i0(8.0 * np.sqrt(1.0 - r * r)) / np.i0(8.0)
        self.taps = taps
        self.buf = np.zeros(self.TAPS)  # history, first element has input index self.base
        self.base = -self.TAPS
        self.t = 0.0  # next output time in input samples

    def process(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        self.buf = np.concatenate([self.buf, x])
        end = self.base + self.buf.size  # input index after the last sample held
        half = self.TAPS // 2
        n = max(0, int(np.floor((end - half - 1 - self.t) / self.ratio)) + 1)
        tt = self.t + np.arange(n) * self.ratio
        ib = np.floor(tt).astype(np.int64)
        pos = (tt - ib) * self.PHASES
        p0 = np.minimum(pos.astype(np.int64), self.PHASES - 1)
        w = (pos - p0)[:, None]
        h = self.table[p0] * (1.0 - w) + self.table[p0 + 1] * w
        idx = ib[:, None] + self.taps[None, :] - self.base
        out = np.einsum("ij,ij->i", self.buf[idx], h)
        self.t += n * self.ratio
        keep = int(np.floor(self.t)) - half - self.base
        if keep > 0:
            self.buf = self.buf[keep:]
            self.base += keep
        return np.asarray(out)


@dataclass
class Call:
    """What happened on the line: simulated samples, and for each lost packet which way it went and
    what our terminal was doing then (its engine state, and the send command being played)."""

    samples: int = 0
    losses: list[tuple[str, State, str]] = field(default_factory=list)

    def lost_in_image(self) -> int:
        """Lost packets of image data (a page or ECM frames, whichever end sent them)."""
        rx = {State.F_DOC_ECM, State.F_DOC_NON_ECM}
        return sum(
            1
            for way, st, c in self.losses
            if c in ("SendPage", "SendEcmFrames") or (way == "in" and st in rx and c == "")
        )


def run(our: OurFax, span: SpanEnd, to_span: LineFn, to_us: LineFn, max_seconds: float = 240.0) -> Call:
    """Both ends exchange 20 ms packets until both are done; a lost packet is a ``fillin``."""
    call = Call()
    while call.samples < max_seconds * 8000 and not (our.done and span.done):
        ours_out, span_out = our.tx(BLOCK), span.tx(BLOCK)
        sending = type(our.term.sending).__name__ if our.term.sending is not None else ""
        state = our.term.engine.state
        pkt = to_span(ours_out)
        if pkt is None:
            call.losses.append(("out", state, sending))
            span.fillin(BLOCK)
        else:
            span.rx(pkt)
        pkt = to_us(span_out)
        if pkt is None:
            call.losses.append(("in", state, sending))
            our.fillin(BLOCK)
        else:
            our.rx(pkt)
        call.samples += BLOCK
    if not span.done:
        span.terminate()
    return call


def ours(
    role: Literal["calling", "answering"],
    direction: Literal["transmit", "receive"],
    modem: str,
    ecm: bool,
    pages: tuple[Page, ...] | list[Page] = (),
    level_dbm0: float = -10.0,
) -> OurFax:
    cfg = T30Config(ident="OURS 42", modems=MODEMS[modem], ecm=ecm)
    docs = [FaxPage.at(p, "standard") for p in pages]
    return OurFax(T30Engine(cfg, role, direction, docs), level_dbm0)


def pages_of(spec: list[tuple[str, int]]) -> list[Page]:
    return [itu_page(n)[:rows] for n, rows in spec]


def span_sender(tmp: Path, sent: list[Page], modem: str, ecm: bool) -> SpanEnd:
    tiff = sf.write_fax_tiff(tmp / "tx.tif", sent, resolution="standard")
    return SpanEnd(True, transmit_tiff=tiff, ecm=ecm, modems=set(MODEMS[modem]), ident="SPANDSP 7")


def span_receiver(tmp: Path, modem: str, ecm: bool) -> SpanEnd:
    return SpanEnd(False, receive_tiff=tmp / "rx.tif", ecm=ecm, modems=set(MODEMS[modem]), ident="SPANDSP 7")


def span_responses(span: SpanEnd, sent: bool) -> list[str]:
    """The post-page responses in the frames SpanDSP sent (``sent``) or received."""
    return [f.name for f in span.frames if f.sent == sent and f.name in ("MCF", "RTP", "RTN", "PIP", "PIN")]


def spandsp_verdict(bad_rows: int, rows: int) -> str:
    """SpanDSP's copy-quality rule (t30.c ``copy_quality``): < 5 % bad rows MCF, < 15 % RTP, else RTN."""
    if rows and bad_rows * 20 < rows:
        return "MCF"
    return "RTP" if bad_rows * 20 < rows * 3 else "RTN"


def our_verdict(p: PageReceived) -> str:
    return {"perfect": "MCF", "good": "MCF", "poor": "RTP"}[p.quality]


def check_ecm(our: OurFax, span: SpanEnd, sent: list[Page], tmp: Path, *, receiving: bool) -> None:
    res = our.term.result
    assert res is not None and res.success, res
    assert span.result.ok, span.result.completion_text
    assert res.ecm and span.result.ecm
    got = [p.pels for p in our.received] if receiving else sf.read_fax_tiff(tmp / "rx.tif")
    assert len(got) == len(sent)
    for n, (g, want) in enumerate(zip(got, sent, strict=True), 1):
        assert g.shape == want.shape and np.array_equal(g, want), f"page {n}"


def setup(
    tmp: Path, direction: str, modem: str, ecm: bool, sent: list[Page], level_dbm0: float = -10.0
) -> tuple[OurFax, SpanEnd]:
    """SpanDSP sends to us (``"in"``) or we send to SpanDSP (``"out"``)."""
    if direction == "in":
        return ours("answering", "receive", modem, ecm, level_dbm0=level_dbm0), span_sender(
            tmp, sent, modem, ecm
        )
    return ours("calling", "transmit", modem, ecm, sent, level_dbm0), span_receiver(tmp, modem, ecm)


def ppr_count(span: SpanEnd) -> int:
    return sum(1 for f in span.frames if f.name == "PPR")


# (direction, modem, law, loss, seed, pages)
ECM_CASES = [
    ("in", "v17", "PCMA", 0.001, 11, [("itu1", 800), ("itu2", 500)]),
    ("in", "v17", "PCMU", 0.001, 14, [("itu1", 800), ("itu2", 500)]),
    ("out", "v17", "PCMA", 0.001, 18, [("itu1", 800), ("itu2", 500)]),
    ("out", "v17", "PCMU", 0.001, 15, [("itu1", 800), ("itu2", 500)]),
    ("in", "v17", "PCMU", 0.01, 7, [("itu1", 1100)]),
    ("out", "v17", "PCMA", 0.01, 7, [("itu1", 1100)]),
    ("in", "v29", "PCMA", 0.01, 3, [("itu1", 600)]),
    ("out", "v29", "PCMU", 0.01, 1, [("itu1", 1100)]),
]


def _id(case: tuple[Any, ...]) -> str:
    direction, modem, law, loss, seed, spec = case
    who = "spandsp-to-us" if direction == "in" else "us-to-spandsp"
    return f"{who}-{modem}-{law}-{loss * 100:g}pc-seed{seed}-{len(spec)}p"


@pytest.mark.parametrize("case", ECM_CASES, ids=_id)
def test_ecm_packet_loss_pages_arrive_whole(tmp_path: Path, case: tuple[Any, ...]) -> None:
    """ECM: lost packets damage frames, PPR asks for them again, every page arrives pel for pel."""
    direction, modem, law, loss, seed, spec = case
    sent = pages_of(spec)
    our, span = setup(tmp_path, direction, modem, True, sent)
    call = run(our, span, PacketLine(law, loss, seed), PacketLine(law, loss, seed + 1))
    assert call.lost_in_image() >= 1, call.losses
    assert ppr_count(span) >= 1
    check_ecm(our, span, sent, tmp_path, receiving=direction == "in")
    assert our.term.result is not None and our.term.result.modem == modem


NON_ECM_CASES = [
    ("in", "v17", "PCMU", 0.001, 3, [("itu1", 800), ("itu2", 500)]),
    ("out", "v17", "PCMA", 0.001, 6, [("itu1", 800), ("itu2", 500)]),
    ("in", "v27ter", "PCMU", 0.01, 2, [("itu2", 600)]),
    ("out", "v27ter", "PCMA", 0.01, 1, [("itu2", 600)]),
]


@pytest.mark.parametrize("case", NON_ECM_CASES, ids=_id)
def test_non_ecm_packet_loss_follows_copy_quality(tmp_path: Path, case: tuple[Any, ...]) -> None:
    """Without ECM lost packets cost rows: the receiver reports them as bad rows and answers MCF,
    RTP or RTN as the share of bad rows says (< 5 %, < 15 %, more)."""
    direction, modem, law, loss, seed, spec = case
    sent = pages_of(spec)
    our, span = setup(tmp_path, direction, modem, False, sent)
    call = run(our, span, PacketLine(law, loss, seed), PacketLine(law, loss, seed + 1))
    assert call.lost_in_image() >= 1, call.losses
    res = our.term.result
    assert res is not None and res.success, res
    assert span.result.ok, span.result.completion_text
    if direction == "in":
        assert len(our.received) == len(sent)
        assert sum(p.bad_rows for p in our.received) >= 1
        for p in our.received:
            rows = p.pels.shape[0]
            assert p.pels.shape[1] == sent[p.page_no - 1].shape[1]
            assert (p.quality == "perfect") == (p.bad_rows == 0)
            assert p.quality != "good" or p.bad_rows < 0.05 * (rows + p.bad_rows)
            assert p.quality != "poor" or p.bad_rows >= 0.05 * rows
        # SpanDSP heard, page by page, the response our quality asks for (RTN pages were sent again).
        heard = span_responses(span, sent=False)
        assert [r for r in heard if r != "RTN"][-len(sent) :] == [our_verdict(p) for p in our.received]
    else:
        stats = span.result.pages
        assert sum(p.bad_rows for p in stats) >= 1
        verdicts = [spandsp_verdict(p.bad_rows, p.length) for p in stats]
        assert [s.response for s in our.sent] == [v for v in verdicts if v != "RTN"]
        got = sf.read_fax_tiff(tmp_path / "rx.tif")
        assert [g.shape[0] for g in got] == [
            p.length for p in stats if spandsp_verdict(p.bad_rows, p.length) != "RTN"
        ]


#: One sample slipped in the middle of the (first) page's image data.
SLIP_AT = {"in": 15 * 8000, "out": 14 * 8000}


@pytest.mark.parametrize("kind", [1, -1], ids=["insert", "drop"])
@pytest.mark.parametrize("direction", ["in", "out"], ids=["spandsp-to-us", "us-to-spandsp"])
@pytest.mark.parametrize("ecm", [True, False], ids=["ecm", "noecm"])
def test_one_sample_slip(tmp_path: Path, direction: str, kind: int, ecm: bool) -> None:
    """A sample inserted or dropped once, during the image data.  The receivers' timing absorbs it,
    but the carrier jumps by 81 degrees (1800 Hz) and the bits after it are garbled until the
    receiver has pulled in again: with ECM the damaged frames come again after PPR and the page
    arrives whole; without ECM the page is damaged and the damage reported as bad rows (our V.17
    receiver takes longer to pull in than SpanDSP's, and many rows vanish with few bad rows)."""
    sent = pages_of([("itu1", 1100)])
    our, span = setup(tmp_path, direction, "v17", ecm, sent)
    slip = PacketLine("PCMA", slip=(SLIP_AT[direction], kind), prefill=1)
    clean = PacketLine("PCMA")
    to_span, to_us = (slip, clean) if direction == "out" else (clean, slip)
    run(our, span, to_span, to_us)
    res = our.term.result
    assert res is not None and res.success, res
    assert span.result.ok, span.result.completion_text
    if ecm:
        assert ppr_count(span) >= 1
        check_ecm(our, span, sent, tmp_path, receiving=direction == "in")
    elif direction == "in":
        (page,) = our.received
        assert page.bad_rows >= 1
    else:
        (stats,) = span.result.pages
        assert stats.bad_rows >= 1 or stats.length < 1100


@pytest.mark.parametrize(
    ("direction", "ecm", "law", "ppm"),
    [
        ("in", True, "PCMU", 30.0),
        ("out", True, "PCMA", -30.0),
        ("in", False, "PCMA", -30.0),
        ("out", False, "PCMU", -30.0),
        ("out", False, "PCMU", 30.0),
    ],
)
def test_weak_line_with_clock_offset(
    tmp_path: Path, direction: str, ecm: bool, law: Literal["PCMA", "PCMU"], ppm: float
) -> None:
    """Both ways at -30 dBm0 through G.711, the far end's sample clock ``ppm`` off (resampled block
    by block): every page arrives pel for pel at 14400 bit/s."""
    sent = pages_of([("itu1", 1100)])
    our, span = setup(tmp_path, direction, "v17", ecm, sent, level_dbm0=-30.0)
    gain = -30.0 - SPANDSP_LEVEL_DBM0
    to_us = PacketLine(law, gain_db=gain, resampler=StreamResampler(ppm), prefill=BLOCK)
    to_span = PacketLine(law, resampler=StreamResampler(-ppm), prefill=BLOCK)
    run(our, span, to_span, to_us)
    res = our.term.result
    assert res is not None and res.success and span.result.ok, (res, span.result.completion_text)
    assert (res.modem, res.rate, span.result.bit_rate) == ("v17", 14400, 14400)
    if ecm:
        check_ecm(our, span, sent, tmp_path, receiving=direction == "in")
    else:
        got = [p.pels for p in our.received] if direction == "in" else sf.read_fax_tiff(tmp_path / "rx.tif")
        assert len(got) == 1 and np.array_equal(got[0], sent[0])


def test_lost_page_data_is_reported_to_the_engine(tmp_path: Path) -> None:
    """Every packet lost while a non-ECM page is coming in reaches the engine as PageDataLost with
    the octets it held (20 ms at 14400 bit/s: 36 octets), and the page's bad rows include them."""
    sent = pages_of([("itu1", 800)])
    our, span = setup(tmp_path, "in", "v17", False, sent)
    events: list[PageDataLost] = []
    handle = our.term.engine.handle

    def spy(event: Any, now: float) -> Any:
        if isinstance(event, PageDataLost):
            events.append(event)
        return handle(event, now)

    our.term.engine.handle = spy  # type: ignore[method-assign]
    dropped: list[int] = []
    to_us_line = PacketLine("PCMA")

    def to_us(x: Samples) -> Samples | None:
        pkt = to_us_line(x)
        in_page = our.term.engine.state is State.F_DOC_NON_ECM and our.term.front_end.active == "fast"
        if in_page and to_us_line.sent % (40 * BLOCK) == 0 and len(dropped) < 4:
            dropped.append(to_us_line.sent)
            return None
        return pkt

    run(our, span, PacketLine("PCMA"), to_us)
    assert len(dropped) == 4
    assert [e.octets for e in events] == [36] * 4
    res = our.term.result
    assert res is not None and res.success and span.result.ok
    (page,) = our.received
    assert page.bad_rows >= 4 and page.quality in ("good", "poor")
