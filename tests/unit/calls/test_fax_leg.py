"""The fax leg receives from our own transmitting T.30 engine, over audio samples and over T.38.

Each test plays the far end with a calling, transmitting engine (an ``AudioFaxTerminal`` fed
20 ms blocks, or a ``T38Terminal`` behind a ``UdptlLink`` with a fixed network delay) on a
simulated clock, and checks what the in-memory sink got.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tests.unit.fax.pages import itu_page
from ums.calls.fax import FaxLeg, FaxSettings
from ums.fax.t30 import T30Config, T30Engine
from ums.fax_t38.sdp import answer_t38, make_t38_offer
from ums.fax_t38.terminal import T38Terminal, UdptlLink
from ums.render.page import FaxPage
from ums.softfax_g711.terminal import AudioFaxTerminal

BLOCK = 160


@dataclass
class Stored:
    id: str = "fax-1"


@dataclass
class MemorySink:
    pages: list[tuple[int, np.ndarray, float, float, dict[str, object]]] = field(default_factory=list)
    finished: list[dict[str, object]] = field(default_factory=list)
    aborted: int = 0

    def store_page(
        self, page_no: int, pels: np.ndarray, xdpi: float, ydpi: float, info: dict[str, object]
    ) -> None:
        self.pages.append((page_no, pels, xdpi, ydpi, info))

    def finish(self, result: dict[str, object]) -> Stored | None:
        self.finished.append(result)
        return Stored() if self.pages else None

    def abort(self) -> None:
        self.aborted += 1


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def pages(count: int, rows: int) -> list[npt.NDArray[np.uint8]]:
    return [itu_page(name)[:rows] for name in ("itu1", "itu2", "itu5")[:count]]


def sender(docs: list[npt.NDArray[np.uint8]], ecm: bool = True) -> T30Engine:
    cfg = T30Config(ident="+49 30 5555", ecm=ecm)
    return T30Engine(cfg, "calling", "transmit", [FaxPage.at(p, "fine") for p in docs])


def make_leg(clock: Clock, sink: MemorySink, hangups: list[tuple[float, str]], **kw: object) -> FaxLeg:
    return FaxLeg(
        FaxSettings(ident="+49 30 1234", hangup_delay=2.0),
        sink,
        call_id="c1",
        clock=clock,
        on_hangup=lambda reason: hangups.append((clock.t, reason)),
        **kw,  # type: ignore[arg-type]
    )


def test_audio_reception_from_our_soft_modem() -> None:
    clock, sink = Clock(), MemorySink()
    hangups: list[tuple[float, str]] = []
    ced_done: list[float] = []
    leg = make_leg(clock, sink, hangups, on_ced_done=lambda: ced_done.append(clock.t))
    leg.start_audio()
    sent = pages(1, 300)
    far = AudioFaxTerminal(sender(sent, ecm=True))
    n = 0
    far_done_at: float | None = None
    while n < 120 * 8000 and not hangups:
        to_far = leg.tx_audio(BLOCK)
        assert to_far is not None
        from_far = far.transmit(BLOCK)
        far.receive(to_far)
        leg.rx_audio(from_far)
        n += BLOCK
        clock.t = n / 8000
        if far.finished and far_done_at is None:
            far_done_at = clock.t
    assert far.result is not None and far.result.success, far.result
    assert [p[0] for p in sink.pages] == [1]
    assert np.array_equal(sink.pages[0][1], sent[0])
    assert sink.pages[0][4]["transport"] == "g711"
    assert 3.0 <= ced_done[0] <= 4.0  # 0.2 s silence + 3 s CED
    # nobody sends BYE after DCN: the leg asks to hang up a couple of seconds later
    assert hangups and hangups[0][1] == "fax done"
    assert far_done_at is not None and hangups[0][0] - far_done_at < 4.0
    msg = leg.close("local-bye")
    assert msg is not None
    (result,) = sink.finished
    assert result["success"] is True and result["pages"] == 1 and result["transport"] == "g711"
    assert result["remote_ident"] == "+49 30 5555" and result["ecm"] is True
    assert set(result) == {
        "success",
        "reason",
        "pages",
        "remote_ident",
        "rate",
        "modem",
        "ecm",
        "resolution",
        "compression",
        "bad_rows",
        "duration",
        "transport",
    }


class T38Net:
    """Our leg and a far T.38 terminal, datagrams delayed by ``latency``."""

    def __init__(self, leg: FaxLeg, far: UdptlLink, clock: Clock, latency: float = 0.03) -> None:
        self.leg, self.far, self.clock, self.latency = leg, far, clock, latency
        self.q: list[tuple[float, int, str, bytes]] = []
        self.seq = itertools.count()

    def to_far(self, dgs: list[bytes]) -> None:
        for d in dgs:
            heapq.heappush(self.q, (self.clock.t + self.latency, next(self.seq), "far", d))

    def to_leg(self, dgs: list[bytes]) -> None:
        for d in dgs:
            heapq.heappush(self.q, (self.clock.t + self.latency, next(self.seq), "leg", d))

    def step(self) -> bool:
        times = [t for t in (self.leg.next_deadline(), self.far.next_deadline()) if t is not None]
        if self.q:
            times.append(self.q[0][0])
        if not times:
            return False
        self.clock.t = max(self.clock.t, min(times))
        while self.q and self.q[0][0] <= self.clock.t:
            _, _, who, d = heapq.heappop(self.q)
            if who == "far":
                self.to_leg(self.far.datagram(d, self.clock.t))
            else:
                self.to_far(self.leg.datagram(d, self.clock.t))
        self.to_leg(self.far.poll(self.clock.t))
        self.to_far(self.leg.poll(self.clock.t))
        return True


def t38_pair(
    clock: Clock, sink: MemorySink, hangups: list[tuple[float, str]], docs: list[npt.NDArray[np.uint8]]
) -> T38Net:
    offer = make_t38_offer()
    answered = answer_t38(offer)
    assert answered is not None
    _, session = answered
    leg = make_leg(clock, sink, hangups)
    far = UdptlLink(T38Terminal(sender(docs), version=session.version))
    net = T38Net(leg, far, clock)
    net.to_far(leg.start_t38(session, net.to_far))
    net.to_leg(far.start(clock.t))
    return net


def test_t38_reception_from_our_t38_terminal() -> None:
    clock, sink = Clock(), MemorySink()
    hangups: list[tuple[float, str]] = []
    sent = pages(2, 400)
    net = t38_pair(clock, sink, hangups, sent)
    far_done: float | None = None
    while not hangups and clock.t < 200 and net.step():
        if far_done is None and net.far.finished:
            far_done = clock.t
    r = net.far.terminal.result
    assert r is not None and r.success, r
    assert [p[0] for p in sink.pages] == [1, 2]
    for got, want in zip(sink.pages, sent, strict=True):
        assert np.array_equal(got[1], want)
        assert got[4]["transport"] == "t38"
    assert hangups and hangups[0][1] == "fax done"
    assert far_done is not None and hangups[0][0] - far_done < 4.0
    net.leg.close("local-bye")
    (result,) = sink.finished
    assert result["success"] is True and result["pages"] == 2 and result["transport"] == "t38"


def test_bye_during_phase_c_finishes_with_the_pages_received() -> None:
    clock, sink = Clock(), MemorySink()
    hangups: list[tuple[float, str]] = []
    sent = pages(3, 300)
    net = t38_pair(clock, sink, hangups, sent)
    # run until the first page is stored and the second one is on its way
    while len(sink.pages) < 1 and clock.t < 200 and net.step():
        pass
    assert len(sink.pages) == 1
    until = clock.t + 3.0
    while clock.t < until and net.step():
        pass
    assert len(sink.pages) == 1
    net.leg.hangup()  # remote BYE
    net.leg.close("remote-bye")
    (result,) = sink.finished
    assert result["pages"] == 1 and result["success"] is False
    assert not hangups


def test_store_failure_aborts_and_hangs_up() -> None:
    clock, sink = Clock(), MemorySink()
    hangups: list[tuple[float, str]] = []

    def broken(*_: object) -> None:
        raise OSError("disk full")

    sink.store_page = broken  # type: ignore[method-assign,assignment]
    net = t38_pair(clock, sink, hangups, pages(1, 200))
    while not hangups and clock.t < 200 and net.step():
        pass
    assert hangups and hangups[0][1] == "store failed"
    assert net.leg.close("local-bye") is None
    assert sink.aborted == 1 and not sink.finished


def test_store_failure_after_a_confirmed_page_finishes_with_the_reason() -> None:
    clock, sink = Clock(), MemorySink()
    hangups: list[tuple[float, str]] = []
    store = sink.store_page

    def second_fails(
        page_no: int, pels: np.ndarray, xdpi: float, ydpi: float, info: dict[str, object]
    ) -> None:
        if page_no == 2:
            raise OSError("disk full")
        store(page_no, pels, xdpi, ydpi, info)

    sink.store_page = second_fails  # type: ignore[method-assign]
    net = t38_pair(clock, sink, hangups, pages(2, 200))
    while not hangups and clock.t < 200 and net.step():
        pass
    assert hangups and hangups[0][1] == "store failed"
    assert net.leg.confirmed == 1 and [p[0] for p in sink.pages] == [1]
    net.leg.hangup()
    assert net.leg.close("local-bye") is not None  # the confirmed page is kept
    assert sink.aborted == 0
    (result,) = sink.finished
    assert result["success"] is False and result["pages"] == 1
    assert result["reason"] == "store failed: disk full"


class SpyTerminal:
    """Records what the leg hands an audio terminal."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.received: list[npt.NDArray[np.int16]] = []
        self.finished = False

    def receive(self, samples: npt.NDArray[np.int16]) -> None:
        self.calls.append(("receive", len(samples)))
        self.received.append(samples)

    def fillin(self, n: int) -> None:
        self.calls.append(("fillin", n))

    def take_reports(self) -> list[object]:
        return []


def test_lost_frames_reach_the_terminal_as_fillin_in_place() -> None:
    clock, sink = Clock(), MemorySink()
    leg = make_leg(clock, sink, [])
    leg.start_audio()
    spy = SpyTerminal()
    leg.audio = spy  # type: ignore[assignment]
    block = np.arange(800, dtype=np.int16) + 1
    block[160:320] = 0
    block[640:800] = 0
    leg.rx_audio(block, [(160, 160), (640, 160)])
    assert spy.calls == [("receive", 160), ("fillin", 160), ("receive", 320), ("fillin", 160)]
    np.testing.assert_array_equal(np.concatenate(spy.received), np.r_[block[:160], block[320:640]])
    # nothing lost: one receive, as before
    leg.rx_audio(block[:480])
    assert spy.calls[-1] == ("receive", 480)
    # two lost frames back to back open a block: one fillin each
    spy.calls.clear()
    leg.rx_audio(block, [(0, 160), (160, 160)])
    assert spy.calls == [("fillin", 160), ("fillin", 160), ("receive", 480)]
