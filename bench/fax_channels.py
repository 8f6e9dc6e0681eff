"""Simultaneous fax receptions per core: our G.711 and T.38 terminals against SpanDSP's fax machines.

What it does
------------
For each number of calls ``N`` (``--calls``, default 1, 10, 50) it runs ``N`` independent calls at
once, each one SpanDSP fax machine sending a one-page fax (an ITU chart, V.17 14400 by default) to
one of our receiving terminals, and measures the CPU time spent inside **our** terminals per second
of call per call.  In the same run, ``N`` SpanDSP-to-SpanDSP calls of the same fax measure SpanDSP's
receiving fax machine the same way: the anchor.  It prints, per transport and ``N``: CPU per
call-second for ours and for SpanDSP, the ratio, calls per core (1 / CPU per call-second) and the
worst one-second window of the call (all calls are in step, so that is the load when every call
trains or receives the page at once).

* **G.711** (audio): :class:`~ums.softfax_g711.terminal.AudioFaxTerminal` (T.30 engine, V.21 and
  image-modem receivers and transmitters, HDLC, T.4 decoding of the page) against SpanDSP's audio
  fax machine (:class:`tests.peers.spandsp_fax.SpanFax`), twice: with the terminals' receivers rows
  of one shared :class:`~ums.softfax_g711.pool.ModemPool` stepped once per tick (as the server runs
  them; ``--pool-bank``), and with receivers of their own (up to ``--independent-max`` calls).
* **T.38** (IFP packets, no UDPTL): :class:`~ums.fax_t38.terminal.T38Terminal` against SpanDSP's T.38
  terminal (:class:`tests.peers.spandsp_fax.SpanT38`).

The **modems only** table: in a first (warm-up) call the terminal's two receivers are subclasses
that time ``receive`` and keep what the front end fed them; that input is then replayed in 20 ms
blocks to one receiver per call and to one bank of ``n`` channels per modem (``--bank``; every
channel gets the same signal, restarts between bursts are not replayed).  The last column
estimates a terminal with banked receivers: its measured cost outside the receivers plus the
banked modems (the pooled G.711 table measures the real thing).

How it works
------------
Calls step in 20 ms ticks: every sending end makes 160 samples (or advances its clock 160 samples
and hands out its IFP packets), every receiving end transmits 160 samples and takes in the sender's
block (or takes its packets), then the senders take the receivers' output.  ``time.process_time``
is read around the loop over the receiving ends only, so the senders' cost is left out.  A call
leaves the loop when both ends are done; its length counts as call seconds.  Received pages are
stored at once and checked pel for pel against the sent chart.  SpanDSP runs through ctypes (one
copy of each block in the wrapper) and writes the received page to a TIFF file; our terminal decodes
the page to pels.  BLAS threads are limited to one (``OPENBLAS_NUM_THREADS`` etc., unless set), so
the CPU is one core's.  ``--profile`` prints a cProfile (top 15 by own time) of our receiving
terminals, G.711 and T.38, at the smallest ``N``.

Run: ``.venv/bin/python bench/fax_channels.py [--calls 1,10,50] [--modem v17|v29] [--no-ecm]
[--bank 10,50] [--transports g711,t38] [--pool-bank 64] [--independent-max 10] [--profile]``
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.peers import spandsp  # noqa: E402
from tests.peers import spandsp_fax as sf  # noqa: E402
from tests.unit.fax.pages import itu_page  # noqa: E402
from ums.fax.t30 import FaxResult, PageReceived, T30Config, T30Engine  # noqa: E402
from ums.fax_t38.terminal import T38Terminal  # noqa: E402
from ums.softfax_g711.pool import ModemPool  # noqa: E402
from ums.softfax_g711.terminal import AudioFaxTerminal  # noqa: E402

BLOCK = 160  # 20 ms at 8 kHz
RATE = 8000
#: What each side offers so that the chosen modem is the one used (T.30 Table 2 combinations).
OFFER: dict[str, tuple[str, ...]] = {"v17": ("v17", "v29", "v27ter"), "v29": ("v29",)}
BIT_RATE = {"v17": 14400, "v29": 9600}
SPAN_ID = "SPANDSP 7"
OUR_ID = "+49 30 1234"

Page = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.int16]


# --- our terminals as endpoints of the lock-step loops ---------------------------------------------


class OurAudio:
    """Our audio terminal as an ``AudioFaxEndpoint``: pages stored as soon as they are reported."""

    def __init__(self, engine: T30Engine, front_end: Any = None) -> None:
        self.term = AudioFaxTerminal(engine, front_end=front_end)
        self.pages: list[Page] = []

    @property
    def done(self) -> bool:
        return self.term.finished

    @property
    def ok(self) -> bool:
        res: FaxResult | None = self.term.result
        return res is not None and res.success

    def rx(self, samples: Samples) -> None:
        self.term.receive(samples)
        self.take()

    def take(self) -> None:
        for r in self.term.take_reports():
            if isinstance(r, PageReceived):
                self.pages.append(r.pels)
                self.term.page_stored(r.page_no)

    def tx(self, n: int) -> Samples:
        return self.term.transmit(n)


class OurT38:
    """Our T.38 terminal as a ``T38Endpoint``: a clock in samples, packets numbered in order."""

    def __init__(self, engine: T30Engine) -> None:
        self.term = T38Terminal(engine)
        self.samples = 0
        self.seq = 0
        self.pages: list[Page] = []
        self._outbox: list[sf.IfpPacket] = []
        self._started = False
        self._expect: int | None = None

    @property
    def done(self) -> bool:
        return self.term.finished

    @property
    def ok(self) -> bool:
        res = self.term.result
        return res is not None and res.success

    def _out(self, packets: list[bytes]) -> None:
        for data in packets:
            self._outbox.append(sf.IfpPacket(self.seq, data, 1, self.samples))
            self.seq = (self.seq + 1) & 0xFFFF
        for r in self.term.take_reports():
            if isinstance(r, PageReceived):
                self.pages.append(r.pels)
                self._out(self.term.page_stored(r.page_no, self.samples / RATE))

    def advance(self, samples: int) -> None:
        if not self._started:
            self._started = True
            self._out(self.term.start(self.samples / RATE))
        self.samples += samples
        self._out(self.term.poll(self.samples / RATE))

    def take_packets(self) -> list[sf.IfpPacket]:
        out, self._outbox = self._outbox, []
        return out

    def rx_packet(self, data: bytes, seq_no: int) -> None:
        if self._expect is not None and seq_no != self._expect:
            self.term.note_loss()
        self._expect = (seq_no + 1) & 0xFFFF
        self._out(self.term.receive_ifp(data, self.samples / RATE))


def _span_ok(end: Any) -> bool:
    return bool(end.done and end.result.ok)


# --- lock-step runs --------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured run of ``n`` calls: CPU of the receiving ends."""

    n: int
    call_seconds: float  # summed over calls
    cpu: float
    tick_cpu: npt.NDArray[np.float64]
    completed: int
    pages_ok: int
    wall: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_call_second(self) -> float:
        return self.cpu / max(self.call_seconds, 1e-9)

    @property
    def seconds_per_call(self) -> float:
        return self.call_seconds / self.n

    @property
    def peak(self) -> float:
        """CPU per call-second in the worst 1 s window (50 ticks) of the run."""
        w = RATE // BLOCK
        if self.tick_cpu.size < w:
            return self.per_call_second
        c = np.concatenate([[0.0], np.cumsum(self.tick_cpu)])
        return float((c[w:] - c[:-w]).max()) / self.n


def _pages_ok(got: list[Page], sent: Page) -> bool:
    return len(got) == 1 and got[0].shape == sent.shape and bool(np.array_equal(got[0], sent))


def run_audio(
    pairs: Sequence[tuple[Any, Any]],
    page: Page | None,
    max_seconds: float,
    prof: cProfile.Profile | None = None,
    pool: ModemPool | None = None,
) -> Run:
    """``(sender, receiver)`` audio endpoints in 20 ms lock step; the receivers are timed (with the
    ``pool`` their front ends share, stepped once all have their block)."""
    n = len(pairs)
    active = list(range(n))
    length = [0] * n
    ticks: list[float] = []
    cpu = 0.0
    limit = int(max_seconds * RATE)
    t = 0
    w0 = time.perf_counter()
    while active and t < limit:
        a = [pairs[i][0].tx(BLOCK) for i in active]
        if prof is not None:
            prof.enable()
        c0 = time.process_time()
        b = []
        for k, i in enumerate(active):
            rx = pairs[i][1]
            b.append(rx.tx(BLOCK))
            rx.rx(a[k])
        if pool is not None:
            pool.step()
            for i in active:
                pairs[i][1].take()
        dt = time.process_time() - c0
        if prof is not None:
            prof.disable()
        for k, i in enumerate(active):
            pairs[i][0].rx(b[k])
        cpu += dt
        ticks.append(dt)
        t += BLOCK
        still = []
        for i in active:
            if pairs[i][0].done and pairs[i][1].done:
                length[i] = t
            else:
                still.append(i)
        active = still
    wall = time.perf_counter() - w0
    for i in active:
        length[i] = t
    return _finish(pairs, page, n, length, cpu, ticks, wall)


def run_t38(
    pairs: Sequence[tuple[Any, Any]],
    page: Page | None,
    max_seconds: float,
    prof: cProfile.Profile | None = None,
) -> Run:
    """``(sender, receiver)`` T.38 endpoints: clocks advance 20 ms a tick, each tick's packets are
    delivered in the same tick; the receivers are timed."""
    n = len(pairs)
    active = list(range(n))
    length = [0] * n
    ticks: list[float] = []
    cpu = 0.0
    limit = int(max_seconds * RATE)
    t = 0
    w0 = time.perf_counter()
    while active and t < limit:
        out = []
        for i in active:
            pairs[i][0].advance(BLOCK)
            out.append(pairs[i][0].take_packets())
        if prof is not None:
            prof.enable()
        c0 = time.process_time()
        back = []
        for k, i in enumerate(active):
            rx = pairs[i][1]
            rx.advance(BLOCK)
            for p in out[k]:
                rx.rx_packet(p.data, p.seq_no)
            back.append(rx.take_packets())
        dt = time.process_time() - c0
        if prof is not None:
            prof.disable()
        for k, i in enumerate(active):
            for p in back[k]:
                pairs[i][0].rx_packet(p.data, p.seq_no)
        cpu += dt
        ticks.append(dt)
        t += BLOCK
        still = []
        for i in active:
            if pairs[i][0].done and pairs[i][1].done:
                length[i] = t
            else:
                still.append(i)
        active = still
    wall = time.perf_counter() - w0
    for i in active:
        length[i] = t
    return _finish(pairs, page, n, length, cpu, ticks, wall)


def _finish(
    pairs: Sequence[tuple[Any, Any]],
    page: Page | None,
    n: int,
    length: list[int],
    cpu: float,
    ticks: list[float],
    wall: float,
) -> Run:
    completed = 0
    pages_ok = 0
    for tx, rx in pairs:
        for end in (tx, rx):
            if not end.done and isinstance(end, sf.T30Peer):
                end.terminate()
        ok_rx = rx.ok if hasattr(rx, "ok") else _span_ok(rx)
        completed += int(_span_ok(tx) and ok_rx)
        if page is not None and hasattr(rx, "pages"):
            pages_ok += int(_pages_ok(rx.pages, page))
    return Run(n, sum(length) / RATE, cpu, np.array(ticks), completed, pages_ok, wall)


# --- the calls -------------------------------------------------------------------------------------


@dataclass
class Setup:
    modem: str
    ecm: bool
    page: Page
    tiff: Path
    workdir: Path
    max_seconds: float

    def our_engine(self) -> T30Engine:
        cfg = T30Config(ident=OUR_ID, modems=OFFER[self.modem], ecm=self.ecm)  # type: ignore[arg-type]
        return T30Engine(cfg, "answering", "receive")

    def span_sender(self, t38: bool) -> Any:
        cls = sf.SpanT38 if t38 else sf.SpanFax
        return cls(True, transmit_tiff=self.tiff, ecm=self.ecm, modems=set(OFFER[self.modem]), ident=SPAN_ID)

    def span_receiver(self, t38: bool, i: int) -> Any:
        cls = sf.SpanT38 if t38 else sf.SpanFax
        path = self.workdir / f"rx-{'t38' if t38 else 'g711'}-{i}.tif"
        return cls(False, receive_tiff=path, ecm=self.ecm, modems=set(OFFER[self.modem]), ident=OUR_ID)


def measure(setup: Setup, t38: bool, n: int, ours: bool, bank: int = 0) -> Run:
    """``n`` calls; with ``bank``, our audio terminals share a :class:`ModemPool` of that bank size."""
    pairs: list[tuple[Any, Any]] = []
    pool = ModemPool(bank_size=bank) if bank and ours and not t38 else None
    for i in range(n):
        rx: Any
        if ours:
            fe = pool.front_end() if pool is not None else None
            rx = OurT38(setup.our_engine()) if t38 else OurAudio(setup.our_engine(), front_end=fe)
        else:
            rx = setup.span_receiver(t38, i)
        pairs.append((setup.span_sender(t38), rx))
    if t38:
        run = run_t38(pairs, setup.page if ours else None, setup.max_seconds)
    else:
        run = run_audio(pairs, setup.page if ours else None, setup.max_seconds, pool=pool)
    if not ours:
        # SpanDSP's received TIFF is checked on the first call only (reading it back is not timed).
        got = sf.read_fax_tiff(setup.workdir / f"rx-{'t38' if t38 else 'g711'}-0.tif")
        run.pages_ok = n if _pages_ok(got, setup.page) else 0
    return run


# --- modems only ---------------------------------------------------------------------------------


def _fast_classes(modem: str) -> tuple[type, type]:
    if modem == "v17":
        from ums.softfax_g711.v17 import V17Rx, V17RxBank

        return V17Rx, V17RxBank
    from ums.softfax_g711.v29 import V29Rx, V29RxBank

    return V29Rx, V29RxBank


def _recording(cls: type) -> type:
    """``cls`` with ``receive`` timed and its input kept (the front end's receivers are subclassed,
    so its ``isinstance`` checks still hold)."""

    class Recording(cls):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fed: list[Samples] = []
            self.cpu = 0.0

        def receive(self, samples: Any) -> Any:
            x = np.asarray(samples)
            self.fed.append(np.array(x, dtype=np.int16).ravel())
            c0 = time.process_time()
            out = super().receive(x)
            self.cpu += time.process_time() - c0
            return out

    return Recording


@dataclass
class ModemRecord:
    """What the receivers of one terminal were fed during a call, and their CPU."""

    seconds: float
    v21: Samples
    fast: Samples
    v21_cpu: float
    fast_cpu: float
    terminal_cpu: float


def recorded_call(setup: Setup) -> ModemRecord | None:
    """One call to our audio terminal whose front end has recording receivers; None if the front end
    no longer has the attributes this relies on (``_v21``, ``_rx``)."""
    from ums.softfax_g711.frontend import ModemFrontEnd
    from ums.softfax_g711.v21 import FskRx

    fe = ModemFrontEnd()
    if not hasattr(fe, "_v21") or not isinstance(getattr(fe, "_rx", None), dict):
        return None
    fast_cls, _ = _fast_classes(setup.modem)
    v21 = _recording(FskRx)(2, cutoff_dbm0=fe.v21_cutoff_dbm0)
    fast = _recording(fast_cls)(BIT_RATE[setup.modem], cutoff_dbm0=fe.fast_cutoff_dbm0)
    fe._v21 = v21
    fe._rx[setup.modem] = fast
    ours = OurAudio(setup.our_engine(), fe)
    run = run_audio([(setup.span_sender(False), ours)], setup.page, setup.max_seconds)
    if run.completed != 1:
        return None

    def cat(parts: list[Samples]) -> Samples:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    return ModemRecord(run.call_seconds, cat(v21.fed), cat(fast.fed), v21.cpu, fast.cpu, run.cpu)


def replay(signal: Samples, make_single: Any, make_bank: Any, n: int | None) -> float:
    """CPU seconds to feed ``signal`` in 20 ms blocks to one receiver (``n`` None) or, per channel,
    to a bank of ``n``."""
    if signal.size == 0:
        return 0.0
    if n is None:
        rx = make_single()
        c0 = time.process_time()
        for s in range(0, signal.size, BLOCK):
            rx.receive(signal[s : s + BLOCK])
        return time.process_time() - c0
    bank = make_bank(n)
    many = np.ascontiguousarray(np.broadcast_to(signal, (n, signal.size)))
    c0 = time.process_time()
    for s in range(0, signal.size, BLOCK):
        bank.receive(many[:, s : s + BLOCK])
    return (time.process_time() - c0) / n


def modem_table(rec: ModemRecord, setup: Setup, banks: list[int]) -> None:
    from ums.softfax_g711.v21 import FskRx, FskRxBank

    fast_cls, bank_cls = _fast_classes(setup.modem)
    rate = BIT_RATE[setup.modem]
    sec = rec.seconds
    name = f"{setup.modem} {rate}"
    print(
        f"\n### Modems only: the V.21 and {name} receivers of one terminal, fed what it fed them in one call "
        f"(V.21 {rec.v21.size / RATE:.1f} s, {name} {rec.fast.size / RATE:.1f} s of a {sec:.1f} s call)\n"
    )
    print(f"| receivers | V.21 | {name} | both, per call-second | calls per core (modems) | terminal |")
    print("|---|---|---|---|---|---|")
    inside = (rec.v21_cpu + rec.fast_cpu) / sec
    term = rec.terminal_cpu / sec
    rest = term - inside
    print(
        f"| inside the terminal (timed in place) | {_ms(rec.v21_cpu / sec)} | {_ms(rec.fast_cpu / sec)} "
        f"| {_ms(inside)} | {_per_core(inside)} | {_ms(term)} measured, {_ms(rest)} outside the receivers |"
    )
    v1 = replay(rec.v21, lambda: FskRx(2), None, None) / sec
    f1 = replay(rec.fast, lambda: fast_cls(rate), None, None) / sec
    print(
        f"| replayed, one receiver per call | {_ms(v1)} | {_ms(f1)} | {_ms(v1 + f1)} "
        f"| {_per_core(v1 + f1)} | |"
    )
    for b in banks:
        vb = replay(rec.v21, None, lambda k: FskRxBank(k, 2), b) / sec
        fb = replay(rec.fast, None, lambda k: bank_cls(k, rate), b) / sec
        est = rest + vb + fb
        print(
            f"| replayed, one bank of {b} per modem | {_ms(vb)} | {_ms(fb)} | {_ms(vb + fb)} "
            f"| {_per_core(vb + fb)} | estimate {_ms(est)}: {_per_core(est)} calls per core |"
        )


# --- output --------------------------------------------------------------------------------------


def _ms(v: float) -> str:
    return f"{v * 1e3:.2f} ms/s" if v >= 0.001 else f"{v * 1e3:.3f} ms/s"


def _per_core(v: float) -> str:
    return f"{1.0 / v:,.0f}" if v > 0 else "-"


def table(title: str, rows: list[tuple[Run, Run]]) -> None:
    print(f"\n### {title}\n")
    print(
        "| calls N | call length | ours: CPU per call-second | worst 1 s | SpanDSP: CPU per call-second "
        "| worst 1 s | ratio ours/SpanDSP | calls per core: ours | SpanDSP | completed ours / SpanDSP "
        "| pages exact ours / SpanDSP |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for o, s in rows:
        print(
            f"| {o.n} | {o.seconds_per_call:.1f} s | {_ms(o.per_call_second)} | {_ms(o.peak)} "
            f"| {_ms(s.per_call_second)} | {_ms(s.peak)} "
            f"| {o.per_call_second / max(s.per_call_second, 1e-12):.1f}x "
            f"| {_per_core(o.per_call_second)} | {_per_core(s.per_call_second)} | {o.completed}/{o.n} / "
            f"{s.completed}/{s.n} | {o.pages_ok}/{o.n} / {s.pages_ok}/{s.n} |"
        )


def profile(setup: Setup, n: int) -> None:
    for t38 in (False, True):
        prof = cProfile.Profile()
        pairs: list[tuple[Any, Any]] = [
            (setup.span_sender(t38), OurT38(setup.our_engine()) if t38 else OurAudio(setup.our_engine()))
            for _ in range(n)
        ]
        (run_t38 if t38 else run_audio)(pairs, setup.page, setup.max_seconds, prof)
        print(f"\n### cProfile: our {'T.38' if t38 else 'G.711'} terminal, {n} call(s), top 15 by own time\n")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--calls", default="1,10,50", help="numbers of simultaneous calls")
    ap.add_argument("--transports", default="g711,t38")
    ap.add_argument("--modem", choices=sorted(OFFER), default="v17", help="image modem both ends offer")
    ap.add_argument("--no-ecm", action="store_true", help="non-ECM page (default: ECM)")
    ap.add_argument("--page", default="itu1", help="ITU chart sent (standard resolution: every other row)")
    ap.add_argument("--bank", default="10,50", help="bank sizes for the modems-only table ('' to skip)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="a call still going is cut here")
    ap.add_argument("--profile", action="store_true", help="cProfile our terminals instead of measuring")
    ap.add_argument("--pool-bank", type=int, default=64, help="bank size of the ModemPool (server: 64)")
    ap.add_argument(
        "--independent-max", type=int, default=10, help="largest N also run with receivers of their own"
    )
    args = ap.parse_args(argv)
    if not spandsp.available():
        print("SpanDSP (libspandsp2) is needed as the reference: apt-get install libspandsp2")
        return 2
    calls = [int(c) for c in args.calls.split(",") if c]
    transports = [t for t in args.transports.split(",") if t]
    page = np.ascontiguousarray(itu_page(args.page)[::2])
    with tempfile.TemporaryDirectory(prefix="ums-bench-fax-") as tmp:
        work = Path(tmp)
        tiff = sf.write_fax_tiff(work / "tx.tif", [page], resolution="standard")
        setup = Setup(args.modem, not args.no_ecm, page, tiff, work, args.max_seconds)
        if args.profile:
            profile(setup, min(calls))
            return 0
        ecm = "ECM" if setup.ecm else "non-ECM"
        print(
            f"One page ({args.page}, 1728 x {page.shape[0]}, standard), {args.modem} {BIT_RATE[args.modem]}, "
            f"{ecm}; SpanDSP sends, the measured end receives; 20 ms lock step; CPU = time.process_time"
        )
        # Warm-up (first-call costs: caches, lazy initialisation in SpanDSP and numpy), untimed; the
        # first of them records what our audio terminal's receivers are fed.
        rec = recorded_call(setup) if "g711" in transports else None
        for tr in transports:
            measure(setup, tr == "t38", 1, False)
            if tr == "t38":
                measure(setup, True, 1, True)
        results: dict[str, list[tuple[Run, Run]]] = {}
        for tr in transports:
            t38 = tr == "t38"
            rows = []
            pooled = []
            for n in calls:
                s = measure(setup, t38, n, False)
                if not t38:
                    p = measure(setup, t38, n, True, args.pool_bank)
                    pooled.append((p, s))
                    print(f"  {tr} N={n}: ours with a shared pool {_ms(p.per_call_second)}", flush=True)
                if t38 or n <= args.independent_max:
                    o = measure(setup, t38, n, True)
                    rows.append((o, s))
                    print(f"  {tr} N={n}: ours {_ms(o.per_call_second)}", flush=True)
                print(f"  {tr} N={n}: SpanDSP {_ms(s.per_call_second)}", flush=True)
            results[tr] = rows
            if pooled:
                results["g711-pool"] = pooled
        titles = {
            "g711-pool": (
                f"G.711 audio: our AudioFaxTerminals sharing a ModemPool (banks of {args.pool_bank}, "
                "as in the server) vs SpanDSP fax_rx/fax_tx"
            ),
            "g711": "G.711 audio: our AudioFaxTerminal with receivers of its own vs SpanDSP fax_rx/fax_tx",
            "t38": "T.38 (IFP, no UDPTL): our T38Terminal vs SpanDSP t38_terminal",
        }
        for tr, rows in results.items():
            table(titles.get(tr, tr), rows)
        banks = [int(b) for b in args.bank.split(",") if b]
        if rec is not None and banks:
            modem_table(rec, setup, banks)
        elif "g711" in transports and banks:
            print("\n(modems-only table skipped: the front end's receivers could not be recorded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
