"""T.38 terminal: two of our terminals over UDPTL on a simulated clock, and the packet rules.

The network
-----------
:func:`run_pair` connects a calling transmitter and an answering receiver, each a
:class:`~ums.fax_t38.terminal.UdptlLink` around a :class:`~ums.fax_t38.terminal.T38Terminal`.
Datagrams arrive ``latency`` seconds after they are sent, in order, unless the seeded loss drops
them.  The loop steps to the earliest of the next delivery and the two terminals' deadlines.
Received pages are acknowledged (``page_stored``) at once.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from tests.unit.fax.pages import itu_page
from ums.fax.t30 import (
    CarrierDown,
    CarrierUp,
    Command,
    Event,
    FastTrained,
    FaxResult,
    Finished,
    HdlcFrame,
    PageData,
    PageDataLost,
    PageReceived,
    PageSent,
    SendComplete,
    SendEcmFrames,
    SendPage,
    SendTcf,
    State,
    T30Config,
    T30Engine,
)
from ums.fax.t30_frames import Fcf, Frame, FrameError
from ums.fax_t38.ifp import Data, FieldType, Indicator, T30Data, T30Indicator, decode_ifp, encode_ifp
from ums.fax_t38.terminal import T38Terminal, UdptlLink
from ums.fax_t38.udptl import UdptlDecoder, UdptlEncoder
from ums.render.page import FaxPage

CALLER_ID = "+1 555 0199"
ANSWER_ID = "+1 555 0100"


@dataclass
class End:
    name: str
    link: UdptlLink
    pages: list[PageReceived] = field(default_factory=list)
    sent: list[PageSent] = field(default_factory=list)
    result: FaxResult | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> T38Terminal:
        return self.link.terminal


@dataclass
class Run:
    caller: End
    answerer: End
    now: float
    datagrams: int
    dropped: int


def run_pair(
    pages: Sequence[FaxPage],
    *,
    ecm: bool = True,
    loss: float = 0.0,
    seed: int = 1,
    latency: float = 0.02,
    depth: int = 3,
    tx_config: T30Config | None = None,
    rx_config: T30Config | None = None,
    max_time: float = 900.0,
    polling: bool = False,
    version: int = 0,
    drop: Callable[[float, int], bool] | None = None,
    setup: Callable[[list[End]], None] | None = None,
) -> Run:
    """Calling transmitter -> answering receiver (``polling``: calling receiver <- answering
    transmitter), run until both terminals are finished or ``max_time``.  ``drop(now, sender)``
    (sender 0 = caller) loses datagrams on top of the random ``loss``; ``setup`` gets the two ends
    (caller, answerer) before the call starts."""
    tx_cfg = tx_config or T30Config(ident=CALLER_ID, ecm=ecm)
    rx_cfg = rx_config or T30Config(ident=ANSWER_ID, ecm=ecm)
    if polling:
        caller_engine = T30Engine(rx_cfg, "calling", "receive")
        answer_engine = T30Engine(tx_cfg, "answering", "transmit", pages)
    else:
        caller_engine = T30Engine(tx_cfg, "calling", "transmit", pages)
        answer_engine = T30Engine(rx_cfg, "answering", "receive")

    def link(engine: T30Engine) -> UdptlLink:
        return UdptlLink(
            T38Terminal(engine, version=version), encoder=UdptlEncoder("redundancy", depth=depth)
        )

    ends = [End("caller", link(caller_engine)), End("answerer", link(answer_engine))]
    if setup is not None:
        setup(ends)
    rng = random.Random(seed)
    queue: list[tuple[float, int, int, bytes]] = []
    order = itertools.count()
    counts = {"sent": 0, "dropped": 0}

    def send(src: int, datagrams: list[bytes], now: float) -> None:
        for d in datagrams:
            counts["sent"] += 1
            if (loss and rng.random() < loss) or (drop is not None and drop(now, src)):
                counts["dropped"] += 1
                continue
            heapq.heappush(queue, (now + latency, next(order), 1 - src, d))

    def reports(i: int, now: float) -> None:
        end = ends[i]
        for r in end.terminal.take_reports():
            if isinstance(r, PageReceived):
                end.pages.append(r)
                send(i, end.link.page_stored(r.page_no, now), now)
            elif isinstance(r, PageSent):
                end.sent.append(r)
            elif isinstance(r, Finished):
                end.result = r.result
                end.finished_at = now

    now = 0.0
    for i, end in enumerate(ends):
        send(i, end.link.start(now), now)
        reports(i, now)
    while not all(e.link.finished for e in ends):
        times = [queue[0][0]] if queue else []
        times += [t for e in ends if (t := e.link.next_deadline()) is not None]
        if not times:
            break
        now = max(now, min(times))
        if now > max_time:
            break
        while queue and queue[0][0] <= now:
            _, _, dst, gram = heapq.heappop(queue)
            send(dst, ends[dst].link.datagram(gram, now), now)
            reports(dst, now)
        for i, end in enumerate(ends):
            send(i, end.link.poll(now), now)
            reports(i, now)
    return Run(ends[0], ends[1], now, counts["sent"], counts["dropped"])


def chart(name: str, resolution: str) -> FaxPage:
    pels = itu_page(name)
    return FaxPage.at(pels[::2] if resolution == "standard" else pels, resolution)  # type: ignore[arg-type]


def check_pages(run: Run, pages: Sequence[FaxPage]) -> None:
    got = run.answerer.pages
    assert len(got) == len(pages)
    for page, rx in zip(pages, got, strict=True):
        assert rx.pels.shape == page.pels.shape
        assert np.array_equal(rx.pels, page.pels), f"page {rx.page_no} differs"


# ======================================================================================================
# Whole calls
# ======================================================================================================

CASES = [
    # (pages, resolution, ecm)
    (["itu1"], "standard", False),
    (["itu1"], "fine", True),
    (["itu2"], "fine", False),
    (["itu2"], "standard", True),
    (["itu1", "itu2", "itu8"], "fine", False),
    (["itu1", "itu2", "itu8"], "standard", True),
    (["itu8", "itu1", "itu2"], "standard", False),
    (["itu8", "itu1", "itu2"], "fine", True),
]


@pytest.mark.parametrize(("names", "resolution", "ecm"), CASES)
def test_call(names: list[str], resolution: str, ecm: bool) -> None:
    pages = [chart(n, resolution) for n in names]
    run = run_pair(pages, ecm=ecm)
    for end in (run.caller, run.answerer):
        assert end.result is not None and end.result.success, end.result
        assert end.result.pages == len(pages)
        assert end.result.ecm is ecm
        assert end.result.resolution == resolution
        assert (end.result.modem, end.result.rate) == ("v17", 14400)
    assert run.caller.result is not None and run.caller.result.remote_ident == ANSWER_ID
    assert run.answerer.result is not None and run.answerer.result.remote_ident == CALLER_ID
    check_pages(run, pages)
    assert [s.response for s in run.caller.sent] == ["MCF"] * len(pages)
    assert run.now < 300
    for end in (run.caller, run.answerer):
        st = end.terminal.stats
        assert st.bad_packets == 0 and st.bad_frames == 0 and st.timeouts == 0


@pytest.mark.parametrize("ecm", [True, False])
def test_polling_and_version_2(ecm: bool) -> None:
    """The calling terminal receives (DIS says "ready to transmit", DTC), T.38 version 2 encoding."""
    pages = [chart("itu2", "standard"), chart("itu1", "standard")]
    run = run_pair(pages, ecm=ecm, polling=True, version=2)
    receiver, sender = run.caller, run.answerer
    assert sender.result is not None and sender.result.success and sender.result.pages == 2
    assert receiver.result is not None and receiver.result.success
    assert len(receiver.pages) == 2
    for page, rx in zip(pages, receiver.pages, strict=True):
        assert np.array_equal(rx.pels, page.pels)


def test_resolution_change_between_pages() -> None:
    """Standard, fine, standard: EOM and phase B again between the pages."""
    pages = [chart("itu1", "standard"), chart("itu2", "fine"), chart("itu8", "standard")]
    run = run_pair(pages, ecm=False)
    assert run.caller.result is not None and run.caller.result.success
    check_pages(run, pages)


@pytest.mark.parametrize(
    ("modems", "rate"), [(("v29",), 9600), (("v27ter",), 4800), (("v29", "v27ter"), 9600)]
)
def test_call_slower_modems(modems: tuple[str, ...], rate: int) -> None:
    pages = [chart("itu2", "standard")]
    cfg = T30Config(ident=ANSWER_ID, modems=modems)  # type: ignore[arg-type]
    run = run_pair(pages, ecm=False, rx_config=cfg)
    assert run.caller.result is not None and run.caller.result.success
    assert (run.caller.result.modem, run.caller.result.rate) == (modems[0], rate)
    check_pages(run, pages)


@pytest.mark.parametrize("ecm", [True, False])
def test_lossy_network(ecm: bool) -> None:
    """10 % of the datagrams are lost; redundancy (3 previous packets) covers nearly all of it."""
    pages = [chart(n, "standard") for n in ("itu1", "itu2", "itu8")]
    run = run_pair(pages, ecm=ecm, loss=0.10, seed=7)
    assert run.dropped > 0.08 * run.datagrams
    for end in (run.caller, run.answerer):
        assert end.result is not None and end.result.success, end.result
        assert end.result.pages == 3
    if ecm or run.answerer.terminal.stats.losses == 0:
        check_pages(run, pages)
    else:
        # packets lost for good in a non-ECM page cost rows (T.38 loss removes data, it does not
        # garble it); they are reported as PageDataLost and counted in the copy-quality check
        assert all(rx.pels.shape[1] == 1728 for rx in run.answerer.pages)
    assert run.now < 600


@pytest.mark.parametrize("direction", [0, 1, 2], ids=["caller-lost", "answerer-lost", "both-lost"])
def test_ecm_survives_outages(direction: int) -> None:
    """A 3 s network outage anywhere in an ECM call: frames are sent again, commands repeated, and
    a response whose end was lost does not keep the transmitter waiting (2 s V.21 backstop) until
    the receiver has given up."""
    pages = [FaxPage.at(itu_page(n)[:1200:2], "standard") for n in ("itu2", "itu1")]
    for start in np.arange(0.0, 40.0, 2.0):

        def outage(now: float, sender: int, start: float = float(start)) -> bool:
            return start <= now < start + 3.0 and direction in (sender, 2)

        run = run_pair(pages, ecm=True, drop=outage)
        for end in (run.caller, run.answerer):
            assert end.result is not None and end.result.success, (start, end.result)
        check_pages(run, pages)


def _record(engine: T30Engine, seen: list[tuple[float, Event]]) -> None:
    """Record the events ``engine`` gets (the terminal calls ``engine.handle``)."""
    handle = engine.handle

    def recording(event: Event, now: float) -> list[Command]:
        seen.append((now, event))
        return handle(event, now)

    engine.handle = recording  # type: ignore[method-assign]


def _fcfs(seen: list[tuple[float, Event]]) -> list[Fcf]:
    out = []
    for _, e in seen:
        if isinstance(e, HdlcFrame) and e.crc_ok:
            try:
                out.append(Frame.parse(e.data).fcf)
            except FrameError:
                pass
    return out


@pytest.mark.parametrize(("outage", "answer"), [(1.0, Fcf.RTP), (3.0, Fcf.RTN)])
def test_non_ecm_outage_mid_page(outage: float, answer: Fcf) -> None:
    """A network outage in the middle of a non-ECM page, no redundancy: the packets never come, the
    receiver reports the gap to the engine (PageDataLost, octets from the gap at 14400 bit/s), and
    copy quality answers RTP (1 s: about 10 % of the page lost) or RTN (3 s).  After RTN the page
    is sent again one step down and confirmed; either way the call ends normally."""
    pages = [chart("itu1", "standard")]
    ends: list[End] = []
    caller_seen: list[tuple[float, Event]] = []
    answer_seen: list[tuple[float, Event]] = []
    page_at: list[float] = []

    def setup(e: list[End]) -> None:
        ends[:] = e
        _record(e[0].terminal.engine, caller_seen)
        _record(e[1].terminal.engine, answer_seen)

    def drop(now: float, sender: int) -> bool:
        rx = ends[1].terminal.engine
        if (
            not page_at
            and rx.state is State.F_DOC_NON_ECM
            and any(isinstance(e, PageData) for _, e in answer_seen)
        ):
            page_at.append(now)  # the first page's data is arriving
        return sender == 0 and bool(page_at) and page_at[0] + 3.0 <= now < page_at[0] + 3.0 + outage

    run = run_pair(pages, ecm=False, depth=0, drop=drop, setup=setup)
    assert page_at and run.dropped > 0
    for end in (run.caller, run.answerer):
        assert end.result is not None and end.result.success, end.result
        assert end.result.pages == 1
    lost = [(t, e.octets) for t, e in answer_seen if isinstance(e, PageDataLost)]
    assert len(lost) == 1 and run.answerer.terminal.stats.losses == 1
    t, octets = lost[0]
    assert octets is not None and octets == pytest.approx(outage * 14400 / 8, rel=0.05)
    assert page_at[0] + 3.0 + outage <= t < page_at[0] + 3.0 + outage + 0.1
    # in order: data before the gap, the loss, data after it
    kinds = [type(e) for _, e in answer_seen if isinstance(e, (PageData, PageDataLost))]
    i = kinds.index(PageDataLost)
    assert kinds[i - 1] is PageData and kinds[i + 1] is PageData
    responses = [f for f in _fcfs(caller_seen) if f in (Fcf.MCF, Fcf.RTP, Fcf.RTN)]
    rx = run.answerer.pages
    if answer is Fcf.RTP:
        assert responses == [Fcf.RTP]
        assert [s.response for s in run.caller.sent] == ["RTP"]
        assert len(rx) == 1 and rx[0].quality == "poor"
        # missing data removes rows; the engine estimates them at the page's average octets per row
        assert 1188 - rx[0].pels.shape[0] > 0.05 * 1188 and rx[0].bad_rows > 0.05 * 1188
    else:
        assert responses == [Fcf.RTN, Fcf.MCF]
        assert [s.response for s in run.caller.sent] == ["MCF"]
        assert run.caller.result is not None and run.caller.result.rate == 12000  # one step down
        check_pages(run, pages)  # the damaged copy was dropped, the resent one is exact


def test_tcf_gap_answers_ftt() -> None:
    """TCF handed over as data: 0.3 s of it lost in the middle leaves no 1 s run of zeros, so the
    receiver answers FTT (not CFR) and the transmitter steps down; the call then goes through."""
    pages = [chart("itu2", "standard")]
    ends: list[End] = []
    answer_seen: list[tuple[float, Event]] = []
    tcf_at: list[float] = []

    def setup(e: list[End]) -> None:
        ends[:] = e
        _record(e[1].terminal.engine, answer_seen)

    def drop(now: float, sender: int) -> bool:
        rx = ends[1].terminal.engine
        if not tcf_at and rx.state is State.F_TCF and any(isinstance(e, FastTrained) for _, e in answer_seen):
            tcf_at.append(now)  # the first TCF's zeros are arriving (TCF data goes over in one batch)
        return sender == 0 and bool(tcf_at) and tcf_at[0] + 0.4 <= now < tcf_at[0] + 0.7

    run = run_pair(pages, ecm=False, depth=0, drop=drop, setup=setup)
    lost = [e for _, e in answer_seen if isinstance(e, PageDataLost)]
    assert len(lost) == 1 and lost[0].octets == pytest.approx(0.3 * 14400 / 8, rel=0.1)
    for end in (run.caller, run.answerer):
        assert end.result is not None and end.result.success, end.result
        assert (end.result.modem, end.result.rate) == ("v17", 12000)
    check_pages(run, pages)


def test_receive_non_ecm_gaps() -> None:
    """Losses while non-ECM data flows become PageDataLost in order: data so far, the loss
    (octets from the time since the last data, less what came then), the rest.  A gap that takes
    the end of the data reports before the page's end; gaps elsewhere report nothing."""
    eng = Recorder()
    term = T38Terminal(eng)
    dt = T30Data.V29_9600  # 1200 octets a second
    t4d = FieldType.T4_NON_ECM_DATA

    def rx(p: Indicator | Data, now: float) -> None:
        term.receive_ifp(encode_ifp(p, 0), now)

    rx(Indicator(T30Indicator.V29_9600_TRAINING), 0.0)
    rx(Data(dt, [(t4d, b"\x01" * 36)]), 0.3)
    rx(Data(dt, [(t4d, b"\x02" * 36)]), 0.33)
    term.note_loss()
    rx(Data(dt, [(t4d, b"\x04" * 36)]), 1.33)  # 1 s since the last data, which was 36 octets
    rx(Data(dt, [(t4d, b"\x08" * 36)]), 1.36)
    term.note_loss()
    rx(Data(dt, [(FieldType.T4_NON_ECM_SIG_END, b"")]), 1.39)  # only the sig-end's first copy lost
    term.note_loss()
    rx(Indicator(T30Indicator.NO_SIGNAL), 1.5)
    term.note_loss()
    rx(Indicator(T30Indicator.V29_9600_TRAINING), 2.0)  # the gap lost no non-ECM data
    term.note_loss()
    rx(Data(dt, [(t4d, b"\x10" * 8)]), 2.5)  # data lost before the first that came: amount unknown
    term.note_loss()
    rx(Indicator(T30Indicator.V21_PREAMBLE), 3.0)  # the end of the page was lost
    term.note_loss()  # V.21 and ECM losses only damage frames
    rx(Data(T30Data.V21, [(FieldType.HDLC_DATA, DIS_WIRE)]), 3.1)
    rx(Data(T30Data.V21, [(FieldType.HDLC_FCS_OK_SIG_END, b"")]), 3.2)
    rx(Indicator(T30Indicator.V17_9600_LONG_TRAINING), 4.0)
    rx(Data(T30Data.V17_9600, [(FieldType.HDLC_DATA, DIS_WIRE)]), 4.1)
    term.note_loss()
    rx(Data(T30Data.V17_9600, [(FieldType.HDLC_DATA, DIS_WIRE)]), 5.1)
    rx(Data(T30Data.V17_9600, [(FieldType.HDLC_FCS_OK_SIG_END, b"")]), 5.2)
    events = [e for e in eng.seen if not isinstance(e, (SendComplete, FastTrained))]
    assert events == [
        CarrierUp("fast"),
        PageData(b"\x80" * 36 + b"\x40" * 36),
        PageDataLost(1200 - 36),
        PageData(b"\x20" * 36 + b"\x10" * 36),
        PageDataLost(None),  # 30 ms after 36 octets at 9600 bit/s: nothing missing but the sig-end
        PageData(b"", end=True),
        CarrierDown("fast"),
        CarrierUp("fast"),
        PageDataLost(None),
        PageData(b"\x08" * 8),
        PageDataLost(600 - 8),
        PageData(b"", end=True),
        CarrierDown("fast"),
        CarrierUp("v21"),
        HdlcFrame(DIS, False),
        CarrierDown("v21"),
        CarrierUp("fast"),
        HdlcFrame(DIS + DIS, False),
        CarrierDown("fast"),
    ]
    assert term.stats.losses == 8


@pytest.mark.parametrize("seed", range(4))
def test_heavy_loss_never_hangs(seed: int) -> None:
    """20 % loss with one redundant packet: V.21 frames get damaged, the engines repeat commands,
    answer CRP, retransmit ECM frames.  Some calls fail, but both ends always finish, in minutes."""
    pages = [chart("itu1", "standard"), chart("itu2", "standard")]
    run = run_pair(pages, ecm=bool(seed & 1), loss=0.2, depth=1, seed=seed, max_time=1200)
    assert run.caller.link.finished and run.answerer.link.finished
    assert run.now < 300
    caller, answerer = run.caller.result, run.answerer.result
    assert caller is not None and answerer is not None
    assert run.caller.terminal.stats.bad_frames + run.answerer.terminal.stats.bad_frames > 0
    assert caller.success == (caller.pages == 2)
    if caller.success:
        assert answerer.success and len(run.answerer.pages) == 2
    if seed & 1:  # ECM never delivers a damaged page
        for page, rx in zip(pages, run.answerer.pages, strict=False):
            assert np.array_equal(rx.pels, page.pels)


# ======================================================================================================
# Packets on the wire
# ======================================================================================================


def _decoded(packets: list[bytes]) -> list[Indicator | Data]:
    return [decode_ifp(p, 0) for p in packets]


def _drain(term: T38Terminal, start: float = 0.0, until: float = 1e9) -> list[tuple[float, Indicator | Data]]:
    """Poll ``term`` at its deadlines until it has nothing left to send (or ``until``)."""
    out: list[tuple[float, Indicator | Data]] = []
    now = start
    while True:
        d = term.next_deadline()
        if d is None or d > until:
            return out
        now = max(now, d)
        out += [(now, p) for p in _decoded(term.poll(now))]
        if term.engine.finished and not term._txq:
            return out


def test_transmit_hdlc_packets() -> None:
    """Answering: CED, then CSI + DIS: preamble x3, >= 1 s of flags, data, fcs-OK-sig-end x3, no-signal."""
    term = T38Terminal(T30Engine(T30Config(ident=ANSWER_ID), "answering", "receive"))
    first = [(0.0, p) for p in _decoded(term.start(0.0))]
    sent = first + _drain(term, until=6.0)
    kinds = [p.kind if isinstance(p, Indicator) else None for _, p in sent]
    assert kinds[:3] == [T30Indicator.CED] * 3
    pre = [t for t, p in sent if isinstance(p, Indicator) and p.kind is T30Indicator.V21_PREAMBLE]
    assert len(pre) == 3
    data = [(t, p) for t, p in sent if isinstance(p, Data)]
    assert data[0][0] - pre[0] >= 1.0
    assert all(p.data_type is T30Data.V21 for _, p in data)
    fields = [f for _, p in data for f in p.fields]
    types = [f.type for f in fields]
    # CSI, then DIS: one hdlc-fcs-OK between them, the end three times, nothing after
    assert types.count(FieldType.HDLC_FCS_OK) == 1
    assert types[-3:] == [FieldType.HDLC_FCS_OK_SIG_END] * 3
    assert FieldType.HDLC_SIG_END not in types
    for _, p in data:  # data-less fields only last in a packet (both field layouts agree)
        assert all(f.data for f in p.fields[:-1])
        if p.fields[-1].type is FieldType.HDLC_FCS_OK_SIG_END:
            assert len(p.fields) == 1
    after = [p for t, p in sent if t >= data[-1][0] and isinstance(p, Indicator)]
    assert [p.kind for p in after] == [T30Indicator.NO_SIGNAL] * 3
    # pacing: one octet per packet at 300 bit/s, 26.7 ms apart
    octets = [(t, f.data) for t, p in data for f in p.fields if f.data]
    assert all(len(d) == 1 for _, d in octets)
    gaps = np.diff([t for t, _ in octets])
    assert gaps.min() >= 8 / 300 - 1e-9
    # frames in T.38 order: first transmitted bit in the MSB (address 0xFF, DIS FCF 0x80 -> 0x01)
    wire = b"".join(d for _, d in octets)
    assert wire.startswith(b"\xff")
    assert b"\xff\xc8\x01" in wire  # final frame: control 0x13 -> 0xc8, DIS


def _engine_commands_from(term: T38Terminal, cmds: list[object]) -> list[tuple[float, Indicator | Data]]:
    term._started = True
    term._commands(cmds, 0.0)  # type: ignore[arg-type]
    return _drain(term)


def test_transmit_page_packets() -> None:
    """A non-ECM page: training indicator, paced data, >= 40 ms of zero fill, sig-end x3, no-signal x3."""
    data = bytes(range(1, 200)) * 20
    term = T38Terminal(T30Engine(T30Config(), "calling", "transmit"))
    sent = _engine_commands_from(term, [SendPage("v17", 9600, data, True)])
    ind = [p.kind for _, p in sent if isinstance(p, Indicator)]
    assert ind == [T30Indicator.V17_9600_SHORT_TRAINING] * 3 + [T30Indicator.NO_SIGNAL] * 3
    packets = [(t, p) for t, p in sent if isinstance(p, Data)]
    assert all(p.data_type is T30Data.V17_9600 for _, p in packets)
    body = [(t, p.fields[0].data) for t, p in packets if p.fields[0].type is FieldType.T4_NON_ECM_DATA]
    assert {len(d) for _, d in body[:-1]} == {36}  # 30 ms at 9600 bit/s
    payload = b"".join(d for _, d in body)
    rev = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
    assert payload[: len(data)] == data.translate(rev)
    assert len(payload) - len(data) >= 9600 * 0.04 / 8 and not any(payload[len(data) :])
    ends = [p for _, p in packets if p.fields[0].type is FieldType.T4_NON_ECM_SIG_END]
    assert len(ends) == 3 and all(len(p.fields) == 1 and not p.fields[0].data for p in ends)
    # paced at the bit rate: the data takes as long as the modem would need
    span = body[-1][0] - body[0][0]
    assert span == pytest.approx((len(payload) - len(body[-1][1])) * 8 / 9600)


def test_transmit_tcf_and_ecm_packets() -> None:
    term = T38Terminal(T30Engine(T30Config(), "calling", "transmit"))
    frames = (b"\xff\x03\x06\x00" + bytes(64), b"\xff\x03\x06\x01" + bytes(10), b"\xff\x13\x86")
    sent = _engine_commands_from(
        term, [SendTcf("v29", 7200, 1500), SendEcmFrames("v27ter", 4800, frames, False)]
    )
    ind = [p.kind for _, p in sent if isinstance(p, Indicator)]
    assert (
        ind
        == [T30Indicator.V29_7200_TRAINING] * 3
        + [T30Indicator.NO_SIGNAL] * 3
        + [T30Indicator.V27_4800_TRAINING] * 3
        + [T30Indicator.NO_SIGNAL] * 3
    )
    tcf = b"".join(
        f.data for _, p in sent if isinstance(p, Data) and p.data_type is T30Data.V29_7200 for f in p.fields
    )
    assert tcf == bytes(7200 * 1500 // 8000)
    ecm = [p for _, p in sent if isinstance(p, Data) and p.data_type is T30Data.V27_4800]
    types = [f.type for p in ecm for f in p.fields]
    assert types.count(FieldType.HDLC_FCS_OK) == 2 and types[-3:] == [FieldType.HDLC_FCS_OK_SIG_END] * 3


class Recorder(T30Engine):
    """An engine that records the events it gets."""

    def __init__(self) -> None:
        super().__init__(T30Config(), "answering", "receive")
        self.seen: list[Event] = []

    def handle(self, event: Event, now: float) -> list[Command]:
        self.seen.append(event)
        return super().handle(event, now)


def _feed(packets: list[Indicator | Data], version: int = 0) -> list[Event]:
    eng = Recorder()
    term = T38Terminal(eng, version=version)
    for i, p in enumerate(packets):
        term.receive_ifp(encode_ifp(p, version), 0.1 * i)
    return [e for e in eng.seen if not type(e).__name__ == "SendComplete"]


V21 = T30Data.V21
DIS_WIRE = b"\xff\xc8\x01\x00\x50\x00"  # ff 13 80 ... reversed
DIS = DIS_WIRE.translate(bytes(int(f"{b:08b}"[::-1], 2) for b in range(256)))


def test_receive_hdlc_with_repeats_and_missing_indicators() -> None:
    hd = FieldType.HDLC_DATA
    events = _feed(
        [
            Indicator(T30Indicator.V21_PREAMBLE),
            Indicator(T30Indicator.V21_PREAMBLE),
            Data(V21, [(hd, DIS_WIRE[:3])]),
            Data(V21, [(hd, DIS_WIRE[3:]), (FieldType.HDLC_FCS_OK, b"")]),
            Data(V21, [(FieldType.HDLC_FCS_OK, b"")]),  # a repeat: no empty frame
            Data(V21, [(hd, DIS_WIRE)]),
            Data(V21, [(FieldType.HDLC_FCS_OK_SIG_END, b"")]),
            Data(V21, [(FieldType.HDLC_FCS_OK_SIG_END, b"")]),
            Indicator(T30Indicator.NO_SIGNAL),
            # no indicator at all: the data starts the carrier
            Data(V21, [(hd, DIS_WIRE)]),
            Data(V21, [(FieldType.HDLC_FCS_BAD_SIG_END, b"")]),
            # a frame whose start was lost
            Indicator(T30Indicator.V21_PREAMBLE),
            Data(V21, [(hd, DIS_WIRE[2:])]),
            Data(V21, [(FieldType.HDLC_FCS_OK, b"")]),
            Data(V21, [(FieldType.HDLC_SIG_END, b"")]),
        ]
    )
    assert events == [
        CarrierUp("v21"),
        HdlcFrame(DIS, True),
        HdlcFrame(DIS, True),
        CarrierDown("v21"),
        CarrierUp("v21"),
        HdlcFrame(DIS, False),
        CarrierDown("v21"),
        CarrierUp("v21"),
        HdlcFrame(DIS[2:], False),
        CarrierDown("v21"),
    ]


def test_receive_non_ecm_any_sig_end() -> None:
    """TCF ended with hdlc-sig-end (a known gateway bug) still ends the image carrier."""
    t4d = FieldType.T4_NON_ECM_DATA
    dt = T30Data.V29_9600
    events = _feed(
        [
            Indicator(T30Indicator.V29_9600_TRAINING),
            Data(dt, [(t4d, b"\x00" * 36)]),
            Data(dt, [(t4d, b"\x80" * 4)]),
            Data(dt, [(FieldType.HDLC_SIG_END, b"")]),
            Data(dt, [(FieldType.HDLC_SIG_END, b"")]),
            Indicator(T30Indicator.NO_SIGNAL),
            # data without a training indicator, then V.21 without no-signal in between
            Data(dt, [(t4d, b"\x01\x02")]),
            Indicator(T30Indicator.V21_PREAMBLE),
        ]
    )
    assert events == [
        CarrierUp("fast"),
        FastTrained(True),
        PageData(b"\x00" * 36 + b"\x01" * 4, end=True),
        CarrierDown("fast"),
        CarrierUp("fast"),
        FastTrained(True),
        PageData(b"\x80\x40", end=True),
        CarrierDown("fast"),
        CarrierUp("v21"),
    ]


def test_receive_backstop_timeout() -> None:
    """A burst whose end is lost ends after 2 s without packets (V.21) or 15 s (image modem)."""
    eng = Recorder()
    term = T38Terminal(eng)
    term.receive_ifp(encode_ifp(Indicator(T30Indicator.V21_PREAMBLE), 0), 1.0)
    term.receive_ifp(encode_ifp(Data(V21, [(FieldType.HDLC_DATA, b"\xff")]), 0), 2.0)
    assert term.next_deadline() == pytest.approx(4.0)
    term.poll(4.0)
    assert eng.seen[-1] == CarrierDown("v21")
    term.receive_ifp(encode_ifp(Indicator(T30Indicator.V17_9600_LONG_TRAINING), 0), 5.0)
    term.receive_ifp(encode_ifp(Data(T30Data.V17_9600, [(FieldType.T4_NON_ECM_DATA, b"\x01")]), 0), 6.0)
    assert term.next_deadline() == pytest.approx(21.0)
    term.poll(21.0)
    assert eng.seen[-3:] == [FastTrained(True), PageData(b"\x80", end=True), CarrierDown("fast")]
    assert term.stats.timeouts == 2
    assert term.receive_ifp(b"\xff\xff\xff", 22.0) == [] and term.stats.bad_packets == 1


def test_udptl_link_reports_losses() -> None:
    eng = Recorder()
    link = UdptlLink(T38Terminal(eng), decoder=UdptlDecoder())
    enc = UdptlEncoder("none")
    grams = [
        enc.packet(encode_ifp(p, 0))
        for p in (
            Indicator(T30Indicator.V21_PREAMBLE),
            Data(V21, [(FieldType.HDLC_DATA, DIS_WIRE[:3])]),
            Data(V21, [(FieldType.HDLC_DATA, DIS_WIRE[3:4])]),
            Data(V21, [(FieldType.HDLC_DATA, DIS_WIRE[4:]), (FieldType.HDLC_FCS_OK, b"")]),
        )
    ]
    for g in grams[:2] + grams[3:]:
        link.datagram(g, 0.0)
    assert link.datagram(b"\x00", 0.0) == [] and link.bad_datagrams == 1
    frames = [e for e in eng.seen if isinstance(e, HdlcFrame)]
    assert frames == [HdlcFrame(DIS[:3] + DIS[4:], False)]
    assert link.terminal.stats.losses == 1


def test_abort_and_hangup() -> None:
    pages = [chart("itu2", "standard")]
    term = T38Terminal(T30Engine(T30Config(ident=CALLER_ID), "calling", "transmit", pages))
    assert [p.kind for p in _decoded(term.start(0.0)) if isinstance(p, Indicator)] == [T30Indicator.CNG]
    assert len(term._txq) == 2  # the other two copies, 10 ms apart
    sent = _decoded(term.abort(1.0))
    sent += [p for _, p in _drain(term, 1.0)]
    assert term.finished and term.next_deadline() is None
    wire = b"".join(f.data for p in sent if isinstance(p, Data) for f in p.fields)
    assert wire.endswith(b"\xff\xc8\x5f")  # DCN, T.30 "X101 1111" with X = 0, first bit in the MSB
    reports = term.take_reports()
    assert isinstance(reports[-1], Finished) and reports[-1].result.code == "aborted"
    assert term.result is not None and not term.result.success

    term = T38Terminal(T30Engine(T30Config(ident=ANSWER_ID), "answering", "receive"))
    term.start(0.0)
    assert term.next_deadline() is not None
    assert term.hangup(0.5) == []
    assert term.finished and term.next_deadline() is None
    assert term.result is not None and term.result.code == "hangup"
