"""Our T.38 terminal against SpanDSP's T.38 terminal, both ways, pel for pel.

:class:`OurT38` adapts :class:`~ums.fax_t38.terminal.T38Terminal` to the ``T38Endpoint`` protocol of
``tests/peers/spandsp_fax.py`` (a clock in samples, IFP packets with sequence numbers), so
:func:`~tests.peers.spandsp_fax.run_t38_pair` can connect it to :class:`~tests.peers.spandsp_fax.SpanT38`.
Every call sends ITU test charts (``testdata/itu-fax``) at standard (every other row) or fine
resolution and checks both ends' results and every received page against its source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import spandsp
from tests.peers import spandsp_fax as sf
from tests.unit.fax.pages import itu_page
from ums.fax.t30 import FaxResult, Finished, PageReceived, PageSent, T30Config, T30Engine
from ums.fax_t38.ifp import Data, FieldType, decode_ifp
from ums.fax_t38.terminal import T38Terminal
from ums.render.page import FaxPage

pytestmark = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

Page = npt.NDArray[np.uint8]
SAMPLE_RATE = 8000
OUR_ID = "+49 30 1234"
SPAN_ID = "SPANDSP 1"
RATES = {"v17": 14400, "v29": 9600, "v27ter": 4800}
#: what our engine offers so that the far end's single modem is used (T.30 Table 2 combinations)
OUR_MODEMS: dict[str, tuple[str, ...]] = {
    "v17": ("v17", "v29", "v27ter"),
    "v29": ("v29",),
    "v27ter": ("v27ter",),
}
Y_RES = {"standard": 3850, "fine": 7700}


class OurT38:
    """Our terminal as a ``T38Endpoint``: time from :meth:`advance`, packets numbered in order.

    Received pages are stored at once; a gap in the received sequence numbers is reported to the
    terminal as a loss, and repeated packets are passed on as they come.
    """

    def __init__(self, engine: T30Engine) -> None:
        self.terminal = T38Terminal(engine)
        self.samples = 0
        self.seq = 0
        self.sent: list[sf.IfpPacket] = []
        self.pages: list[PageReceived] = []
        self.confirmed: list[PageSent] = []
        self.result: FaxResult | None = None
        self._outbox: list[sf.IfpPacket] = []
        self._started = False
        self._expect: int | None = None

    @property
    def now(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def done(self) -> bool:
        return self.terminal.finished

    def _out(self, packets: list[bytes]) -> None:
        for data in packets:
            pkt = sf.IfpPacket(self.seq, data, 1, self.samples)
            self.seq = (self.seq + 1) & 0xFFFF
            self._outbox.append(pkt)
            self.sent.append(pkt)
        for report in self.terminal.take_reports():
            if isinstance(report, PageReceived):
                self.pages.append(report)
                self._out(self.terminal.page_stored(report.page_no, self.now))
            elif isinstance(report, PageSent):
                self.confirmed.append(report)
            elif isinstance(report, Finished):
                self.result = report.result

    def advance(self, samples: int) -> None:
        if not self._started:
            self._started = True
            self._out(self.terminal.start(self.now))
        self.samples += samples
        self._out(self.terminal.poll(self.now))

    def take_packets(self) -> list[sf.IfpPacket]:
        out, self._outbox = self._outbox, []
        return out

    def rx_packet(self, data: bytes, seq_no: int) -> None:
        behind = self._expect is not None and (seq_no - self._expect) & 0xFFFF > 0x8000
        if not behind:
            if self._expect is not None and seq_no != self._expect:
                self.terminal.note_loss()
            self._expect = (seq_no + 1) & 0xFFFF
        # a repeat (same sequence number) goes to the terminal too, like a peer's repeat with
        # its own number would: the terminal must not take it as new data
        self._out(self.terminal.receive_ifp(data, self.now))


def _pages(count: int, resolution: str) -> list[Page]:
    names = ["itu1", "itu2", "itu8"][:count]
    return [itu_page(n)[::2] if resolution == "standard" else itu_page(n) for n in names]


def _assert_same(received: list[Page], sent: list[Page]) -> None:
    assert len(received) == len(sent)
    for number, (got, want) in enumerate(zip(received, sent, strict=True), 1):
        assert got.shape == want.shape, f"page {number}"
        assert np.array_equal(got, want), f"page {number}: {int((got != want).sum())} pels differ"


def _assert_results(
    span: sf.SpanT38, ours: OurT38, count: int, modem: str, ecm: bool, resolution: str
) -> None:
    sr, our = span.result, ours.result
    assert sr.ok, sr.completion_text
    assert our is not None and our.success, our
    assert our.pages == count
    assert (our.modem, our.rate, our.ecm, our.resolution) == (modem, RATES[modem], ecm, resolution)
    assert our.remote_ident == SPAN_ID
    assert sr.remote_ident == OUR_ID
    assert sr.bit_rate == RATES[modem] and sr.ecm is ecm
    assert all(p.bad_rows == 0 and p.y_resolution == Y_RES[resolution] for p in sr.pages)


def sr_pages(span: sf.SpanT38) -> tuple[int, int]:
    return span.result.pages_tx, span.result.pages_rx


CASES = [
    (modem, ecm, resolution, count)
    for modem in ("v17", "v29", "v27ter")
    for ecm in (True, False)
    for resolution in ("standard", "fine")
    for count in (1, 3)
]


def _id(modem: str, ecm: bool, resolution: str, count: int) -> str:
    return f"{modem}-{'ecm' if ecm else 'noecm'}-{resolution}-{count}p"


@pytest.mark.parametrize(("modem", "ecm", "resolution", "count"), CASES, ids=[_id(*c) for c in CASES])
def test_spandsp_sends_to_us(tmp_path: Path, modem: str, ecm: bool, resolution: str, count: int) -> None:
    sent = _pages(count, resolution)
    src = sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution=resolution)  # type: ignore[arg-type]
    span = sf.SpanT38(True, transmit_tiff=src, ecm=ecm, modems={modem}, ident=SPAN_ID)
    cfg = T30Config(ident=OUR_ID, modems=OUR_MODEMS[modem], ecm=ecm)  # type: ignore[arg-type]
    ours = OurT38(T30Engine(cfg, "answering", "receive"))
    # SpanDSP's repeated indicators and end-of-data packets are delivered as it asks on odd counts
    run = sf.run_t38_pair(span, ours, max_seconds=400, latency=160, repeats=count == 3)
    assert run.completed, (span.result, ours.result)
    _assert_results(span, ours, count, modem, ecm, resolution)
    assert sr_pages(span) == (count, 0)
    _assert_same([p.pels for p in ours.pages], sent)
    assert all(p.bad_rows == 0 and p.ecm is ecm for p in ours.pages)
    stats = ours.terminal.stats
    assert stats.bad_packets == stats.bad_frames == stats.losses == stats.timeouts == 0


@pytest.mark.parametrize(("modem", "ecm", "resolution", "count"), CASES, ids=[_id(*c) for c in CASES])
def test_we_send_to_spandsp(tmp_path: Path, modem: str, ecm: bool, resolution: str, count: int) -> None:
    sent = _pages(count, resolution)
    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanT38(False, receive_tiff=rx_tiff, ecm=ecm, modems={modem}, ident=SPAN_ID)
    cfg = T30Config(ident=OUR_ID, modems=OUR_MODEMS[modem], ecm=ecm)  # type: ignore[arg-type]
    docs = [FaxPage.at(p, resolution) for p in sent]  # type: ignore[arg-type]
    ours = OurT38(T30Engine(cfg, "calling", "transmit", docs))
    run = sf.run_t38_pair(ours, span, max_seconds=400, latency=160)
    assert run.completed, (span.result, ours.result)
    _assert_results(span, ours, count, modem, ecm, resolution)
    assert sr_pages(span) == (0, count)
    assert [c.response for c in ours.confirmed] == ["MCF"] * count
    _assert_same(sf.read_fax_tiff(rx_tiff), sent)
    assert len(span.result.pages) == count


def _lossy(rate: float, seed: int, dropped: list[int]) -> sf.LinkFn:
    """Drops image-data packets (longer than 20 octets) with probability ``rate``."""
    rng = np.random.default_rng(seed)

    def link(packets: list[sf.IfpPacket]) -> list[sf.IfpPacket]:
        kept = []
        for p in packets:
            if len(p.data) > 20 and rng.random() < rate:
                dropped.append(p.seq_no)
            else:
                kept.append(p)
        return kept

    return link


def test_ecm_repairs_lost_packets_from_spandsp(tmp_path: Path) -> None:
    """Image packets SpanDSP sends are lost: our receiver asks again for the damaged frames (PPR)."""
    sent = _pages(1, "standard")
    src = sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="standard")
    span = sf.SpanT38(True, transmit_tiff=src, ecm=True, ident=SPAN_ID)
    ours = OurT38(T30Engine(T30Config(ident=OUR_ID), "answering", "receive"))
    dropped: list[int] = []
    run = sf.run_t38_pair(span, ours, link=(_lossy(0.03, 3, dropped), lambda p: p), max_seconds=300)
    assert run.completed and dropped
    assert span.result.ok and ours.result is not None and ours.result.success
    assert ours.terminal.stats.losses > 0 and ours.terminal.stats.bad_frames > 0
    assert span.result.pages[0].ecm_retries > 0
    assert "PPR" in [f.name for f in span.frames if not f.sent]
    _assert_same([p.pels for p in ours.pages], sent)


def test_ecm_repairs_lost_packets_to_spandsp(tmp_path: Path) -> None:
    """Image packets we send are lost: SpanDSP answers PPR and we send the damaged frames again."""
    sent = _pages(1, "fine")
    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanT38(False, receive_tiff=rx_tiff, ecm=True, ident=SPAN_ID)
    docs = [FaxPage.at(p, "fine") for p in sent]
    ours = OurT38(T30Engine(T30Config(ident=OUR_ID), "calling", "transmit", docs))
    dropped: list[int] = []
    run = sf.run_t38_pair(ours, span, link=(_lossy(0.03, 4, dropped), lambda p: p), max_seconds=300)
    assert run.completed and dropped
    assert span.result.ok and ours.result is not None and ours.result.success
    assert "PPR" in [f.name for f in span.frames if f.sent]
    _assert_same(sf.read_fax_tiff(rx_tiff), sent)


@pytest.mark.parametrize("ecm", [True, False], ids=["ecm", "no-ecm"])
def test_unpaced_spandsp(tmp_path: Path, ecm: bool) -> None:
    """SpanDSP without pacing (its TCP mode): whole V.21 frames with their FCS field in one packet
    (``[hdlc-data, hdlc-fcs-OK-sig-end]``), image data in 300-octet chunks, as fast as it can."""
    sent = _pages(1, "fine")
    src = sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="fine")
    span = sf.SpanT38(True, transmit_tiff=src, ecm=ecm, ident=SPAN_ID, pacing=False)
    ours = OurT38(T30Engine(T30Config(ident=OUR_ID, ecm=ecm), "answering", "receive"))
    run = sf.run_t38_pair(span, ours, max_seconds=300)
    assert run.completed and span.result.ok
    assert ours.result is not None and ours.result.success
    packets = [decode_ifp(p.data, 0) for p in span.sent]
    fields = [tuple(f.type for f in p.fields) for p in packets if isinstance(p, Data)]
    assert (FieldType.HDLC_DATA, FieldType.HDLC_FCS_OK_SIG_END) in fields
    assert max(len(p.data) for p in span.sent) > 300
    _assert_same([p.pels for p in ours.pages], sent)
    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanT38(False, receive_tiff=rx_tiff, ecm=ecm, ident=SPAN_ID, pacing=False)
    docs = [FaxPage.at(p, "fine") for p in sent]
    ours = OurT38(T30Engine(T30Config(ident=OUR_ID, ecm=ecm), "calling", "transmit", docs))
    run = sf.run_t38_pair(ours, span, max_seconds=300)
    assert run.completed and span.result.ok
    assert ours.result is not None and ours.result.success
    _assert_same(sf.read_fax_tiff(rx_tiff), sent)


TEN = [f"itu{i}" for i in range(1, 9)] + ["test1", "test2"]


@pytest.mark.parametrize("ecm", [True, False], ids=["ecm", "noecm"])
def test_ten_pages_each_way(tmp_path: Path, ecm: bool) -> None:
    """Ten ITU charts (itu1-8, test1-2) at fine resolution each way over T.38, V.17."""
    sent = [itu_page(n) for n in TEN]
    src = sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="fine")
    span = sf.SpanT38(True, transmit_tiff=src, ecm=ecm, modems={"v17"}, ident=SPAN_ID)
    ours = OurT38(
        T30Engine(T30Config(ident=OUR_ID, modems=OUR_MODEMS["v17"], ecm=ecm), "answering", "receive")
    )
    assert sf.run_t38_pair(span, ours, max_seconds=1200, latency=160).completed, (span.result, ours.result)
    _assert_results(span, ours, 10, "v17", ecm, "fine")
    _assert_same([p.pels for p in ours.pages], sent)

    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanT38(False, receive_tiff=rx_tiff, ecm=ecm, modems={"v17"}, ident=SPAN_ID)
    docs = [FaxPage.at(p, "fine") for p in sent]
    ours = OurT38(
        T30Engine(T30Config(ident=OUR_ID, modems=OUR_MODEMS["v17"], ecm=ecm), "calling", "transmit", docs)
    )
    assert sf.run_t38_pair(ours, span, max_seconds=1200, latency=160).completed, (span.result, ours.result)
    _assert_results(span, ours, 10, "v17", ecm, "fine")
    assert [c.response for c in ours.confirmed] == ["MCF"] * 10
    _assert_same(sf.read_fax_tiff(rx_tiff), sent)
