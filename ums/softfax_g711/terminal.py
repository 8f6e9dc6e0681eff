"""An audio fax terminal: the T.30 engine over the soft modems, samples in and samples out.

What it does
------------
:class:`AudioFaxTerminal` runs one :class:`~ums.fax.t30.T30Engine` on an 8 kHz audio line.  The
caller feeds the received samples with :meth:`~AudioFaxTerminal.receive` and takes the samples to
send with :meth:`~AudioFaxTerminal.transmit` (or both at once, per 20 ms, with
:meth:`~AudioFaxTerminal.process`); :meth:`~AudioFaxTerminal.fillin` stands for lost packets.  Time is
the sample count (``now = samples / 8000``) unless the caller passes ``now``.  Reports for the
application (:class:`~ums.fax.t30.Negotiated`, :class:`~ums.fax.t30.PageReceived`,
:class:`~ums.fax.t30.PageSent`, :class:`~ums.fax.t30.Finished`) collect in
:attr:`~AudioFaxTerminal.reports`; a received page is confirmed to the far end only after
:meth:`~AudioFaxTerminal.page_stored`.

How it works
------------
Transmit: the engine's sending commands are played back to back from a queue.  CED is 2100 Hz after
0.2 s of silence (T.30 §4); CNG (T.30 §4) plays between the other commands until the first of them;
``SendHdlc`` is V.21 channel 2 with 1 s of flags before the frames (T.30 §5.3); ``SendTcf``,
``SendPage`` and ``SendEcmFrames`` use the image modem (V.17, V.29, V.27 ter) with the page bits
sent first bit first (the T.4 octets least significant bit first) and, in ECM, HDLC framing after
200 ms of flags (T.30 Annex A).  CED and a V.21 burst are generated whole when they start, then
played out in blocks.  ``Receive`` takes effect when the sends before it are done, and
:class:`~ums.fax.t30.SendComplete` is reported when the queue is empty.

Receive: half duplex, so nothing is received while a command is being sent (our own signal, or its
echo, is never taken for the far end's).  The :class:`~.frontend.ModemFrontEnd` listens for what the
engine asked and reports V.21 bursts (carrier events and HDLC frames) and image-modem signals.  What
an image-modem signal carries follows the engine's state when it trains: the training check (the
longest run of zeros, :class:`~ums.fax.t30.TcfResult`), a non-ECM page (:class:`~ums.fax.t30.PageData`
octets, first bit in the LSB) or ECM frames (HDLC, :class:`~ums.fax.t30.HdlcFrame`).  A lost packet
(:meth:`~AudioFaxTerminal.fillin`) during a non-ECM page is reported as
:class:`~ums.fax.t30.PageDataLost` with the octets it carried at the page's rate, so that the rows it
held count as bad in the copy-quality check; in ECM the damaged frames are found by number.
"""

from __future__ import annotations

from collections import deque
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from ums.fax.t30 import (
    CarrierDown,
    CarrierUp,
    Command,
    Event,
    FastTrained,
    FaxResult,
    Finished,
    Hangup,
    HdlcFrame,
    PageData,
    PageDataLost,
    PageStored,
    Receive,
    SendComplete,
    SendEcmFrames,
    SendHdlc,
    SendPage,
    SendTcf,
    SendTone,
    Silence,
    State,
    T30Engine,
    TcfResult,
)

from .common import SAMPLE_RATE, Bits, Samples
from .frontend import (
    Ended,
    FastBits,
    FrontEndItem,
    ModemFrontEnd,
    Started,
    TrainingFailed,
    V21Frame,
)
from .hdlc import HdlcDecoder, HdlcEncoder, HdlcEventKind
from .tones import ANS_HZ, Segment, ToneGenerator, cng
from .v17 import V17Tx
from .v21 import FskTx
from .v27ter import V27terTx
from .v29 import V29Tx

__all__ = ["AudioFaxTerminal"]

#: T.30 §5.3: the first HDLC frame of a V.21 transmission follows 1 s ±15 % of flags.
V21_PREAMBLE_S = 1.0
#: Flags before the first ECM frame on the image modem (T.30 Annex A; 200 ms as usual practice).
ECM_PREAMBLE_S = 0.2
#: T.30 §4: the answering terminal waits at least 0.2 s before CED.
CED_DELAY_S = 0.2

_Use = Literal["tcf", "page", "ecm"]
_SENDS = (SendTone, Silence, SendHdlc, SendTcf, SendPage, SendEcmFrames)


class _Generator(Protocol):
    @property
    def done(self) -> bool: ...

    def generate(self, n: int) -> Samples: ...


class _Player:
    """One send command being played: exact-length silence, or a generator whose trailing zeros
    after it is done are dropped so that the next command starts right after it."""

    def __init__(self, gen: _Generator | None = None, silence: int = 0) -> None:
        self.gen = gen
        self.silence = silence

    def play(self, n: int) -> tuple[Samples, bool]:
        if self.gen is None:
            take = min(n, self.silence)
            self.silence -= take
            return np.zeros(take, dtype=np.int16), self.silence == 0
        if self.gen.done:
            return np.zeros(0, dtype=np.int16), True
        chunk = self.gen.generate(n)
        if not self.gen.done:
            return chunk, False
        nz = np.flatnonzero(chunk)
        return chunk[: int(nz[-1]) + 1 if nz.size else 0], True


class _Rendered:
    """A signal generated in one piece beforehand (CED, a V.21 burst: everything to send is known when
    the command starts), played out in blocks; trailing zeros are dropped as :class:`_Player` does."""

    def __init__(self, samples: Samples) -> None:
        nz = np.flatnonzero(samples)
        self._samples = samples[: int(nz[-1]) + 1 if nz.size else 0]
        self._pos = 0

    @property
    def done(self) -> bool:
        return self._pos >= self._samples.size

    def generate(self, n: int) -> Samples:
        chunk = self._samples[self._pos : self._pos + n]
        self._pos += n
        if chunk.size < n:
            chunk = np.concatenate([chunk, np.zeros(n - chunk.size, dtype=np.int16)])
        return chunk


def _fast_tx(modem: str, rate: int, level_dbm0: float, short_train: bool) -> V17Tx | V29Tx | V27terTx:
    if modem == "v17":
        return V17Tx(rate, level_dbm0=level_dbm0, short_train=short_train)
    if modem == "v29":
        return V29Tx(rate, level_dbm0=level_dbm0)
    if modem == "v27ter":
        return V27terTx(rate, level_dbm0=level_dbm0)
    raise ValueError(f"unknown image modem {modem!r}")


def _blocks_rx(c: Command) -> bool:
    """A send that occupies the line (every send but CNG, which is played while listening)."""
    return isinstance(c, _SENDS) and not (isinstance(c, SendTone) and c.tone == "cng")


def _octet_bits(data: bytes) -> Bits:
    """Octets as bits in line order, least significant bit first (how T.4 data and HDLC octets go out)."""
    return np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8), bitorder="little")


class AudioFaxTerminal:
    """A fax terminal on an audio line: ``engine`` (started here at time 0) driven by samples.

    Parameters
    ----------
    engine : T30Engine
        A fresh engine (not started).
    level_dbm0 : float
        Transmit level of every signal.
    front_end : ModemFrontEnd, optional
        The receivers (a default one otherwise).
    """

    #: ECM image-modem bits collected before they are decoded (about 0.3 s at 14400 bit/s).
    ECM_BATCH = 4096

    def __init__(
        self, engine: T30Engine, *, level_dbm0: float = -10.0, front_end: ModemFrontEnd | None = None
    ) -> None:
        self.engine = engine
        self.level_dbm0 = level_dbm0
        self.front_end = front_end or ModemFrontEnd()
        #: Commands for the application, in order: Negotiated, PageReceived, PageSent, Finished.
        self.reports: list[Command] = []
        self._queue: deque[Command] = deque()
        self._player: _Player | None = None
        self._sending: Command | None = None
        self._cng: ToneGenerator | None = None
        self._sent_any = False  # a send was played since the last SendComplete
        self._tx_samples = 0
        self._rx_samples = 0
        self._now = 0.0
        self._rx_stale = True  # we transmitted since the receivers last listened
        # image-modem reception
        self._use: _Use | None = None
        self._tcf_run = 0
        self._tcf_longest = 0
        self._page_bits: Bits = np.zeros(0, dtype=np.uint8)
        self._ecm_hdlc = HdlcDecoder()
        self._ecm_bits: list[Bits] = []  # ECM image-modem bits not decoded yet
        self._ecm_pending = 0
        if self.front_end.deferred:
            self.front_end.on_items = self._deferred_items  # type: ignore[attr-defined]
        self._run(engine.start(0.0))

    # -- public ---------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """T.30 is over (the engine reported Finished)."""
        return self.engine.finished

    @property
    def result(self) -> FaxResult | None:
        return self.engine.result

    @property
    def transmitting(self) -> bool:
        """A send command is being played (the receivers are not listening)."""
        return self._player is not None or (bool(self._queue) and any(_blocks_rx(c) for c in self._queue))

    @property
    def sending(self) -> Command | None:
        """The send command being played, if any."""
        return self._sending

    @property
    def samples(self) -> int:
        """Samples transmitted so far (the terminal's clock)."""
        return self._tx_samples

    def take_reports(self) -> list[Command]:
        """The reports collected since the last call."""
        out, self.reports = self.reports, []
        return out

    def page_stored(self, page_no: int, now: float | None = None) -> None:
        """The page of a PageReceived is durable: the engine may confirm it."""
        self._handle(PageStored(page_no), self._time(now, self._rx_samples))

    def hangup(self, now: float | None = None) -> None:
        """The call is gone."""
        self._handle(Hangup(), self._time(now, self._rx_samples))

    def abort(self, reason: str = "aborted locally", now: float | None = None) -> None:
        """Cancel: DCN, then Finished."""
        t = self._time(now, self._rx_samples)
        self._run(self.engine.abort(t, reason), t)

    def process(self, rx_block: npt.ArrayLike) -> Samples:
        """One step (typically 20 ms): the samples to send, then the received block taken in."""
        x = np.asarray(rx_block)
        out = self.transmit(x.size)
        self.receive(x)
        return out

    def transmit(self, n: int, now: float | None = None) -> Samples:
        """The next ``n`` samples to send (silence when idle)."""
        base = self._tx_samples
        self._poll(self._time(now, base))
        if self._player is None and not self._queue and not self._sent_any:  # nothing to play
            self._tx_samples += n
            return self._cng.generate(n) if self._cng is not None else np.zeros(n, dtype=np.int16)
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n:
            if self._player is None:
                t = self._time(now, base + filled)
                if not self._next_player(t):
                    break
            assert self._player is not None
            chunk, done = self._player.play(n - filled)
            out[filled : filled + chunk.size] = chunk
            filled += chunk.size
            if done:
                self._player = None
                self._sending = None
        if filled < n and self._cng is not None:
            out[filled:] = self._cng.generate(n - filled)
        self._tx_samples += n
        return out

    def receive(self, samples: npt.ArrayLike, now: float | None = None) -> None:
        """Take in received samples (int16)."""
        x = np.asarray(samples).ravel()
        self._rx_samples += x.size
        t = self._time(now, self._rx_samples)
        self._poll(t)
        if self.engine.finished or self.transmitting:
            self.front_end.idle(x.size)
            return
        if self._rx_stale:
            self._listen_fresh()
        items = self.front_end.receive(x).items
        if items:  # a pooled front end's come later, from the pool
            self._items(items, t)

    def fillin(self, n: int, now: float | None = None) -> None:
        """``n`` received samples were lost (packet loss).  During a non-ECM page the engine is told
        how many octets went missing (:class:`~ums.fax.t30.PageDataLost`), so that the rows they
        carried count in the copy-quality check."""
        self._rx_samples += n
        t = self._time(now, self._rx_samples)
        self._poll(t)
        if self.finished or self.transmitting:
            self.front_end.idle(n)
            return
        self._listen_fresh()
        in_page = self._use == "page"
        self._items(self.front_end.fillin(n).items, t)
        if in_page and self._use == "page" and not self.finished:
            rate = self.front_end.mode.rate
            self._handle(PageDataLost(max(1, round(n * rate / (8 * SAMPLE_RATE))) if rate else None), t)

    def close(self) -> None:
        """The terminal is no longer used (call over, or switched to T.38): frees its receivers."""
        self.front_end.close()

    def _deferred_items(self, items: list[FrontEndItem]) -> None:
        """Items of a pooled front end, delivered when the pool steps."""
        if self.finished or self.transmitting:
            return
        self._items(items, self._now)

    # -- engine plumbing --------------------------------------------------------------------------

    def _time(self, now: float | None, samples: int) -> float:
        t = samples / SAMPLE_RATE if now is None else now
        if t > self._now:
            self._now = t
        return self._now

    def _poll(self, now: float) -> None:
        deadline = self.engine.next_deadline()
        if deadline is not None and now >= deadline:
            self._run(self.engine.poll(now), now)

    def _handle(self, event: Event, now: float) -> None:
        self._run(self.engine.handle(event, now), now)

    def _run(self, cmds: list[Command], now: float = 0.0) -> None:
        for c in cmds:
            if isinstance(c, Receive | SendTone | Silence | SendHdlc | SendTcf | SendPage | SendEcmFrames):
                if _blocks_rx(c):
                    self._cng = None  # CNG lasts until the next transmit command
                if isinstance(c, Receive) and not self.transmitting:
                    self._apply_receive(c)
                else:
                    self._queue.append(c)
            else:
                self.reports.append(c)
                if isinstance(c, Finished):
                    self._queue.clear()
                    self._cng = None

    def _next_player(self, now: float) -> bool:
        """Start the next send in the queue, applying Receive / CNG on the way; False when empty."""
        while self._queue:
            c = self._queue.popleft()
            if isinstance(c, Receive):
                self._apply_receive(c)
                continue
            if isinstance(c, SendTone) and c.tone == "cng":
                self._cng = cng(self.level_dbm0)
                continue
            self._player = self._make_player(c)
            self._sending = c
            self._sent_any = True
            self._rx_stale = True
            return True
        if self._sent_any:
            self._sent_any = False
            self._handle(SendComplete(), now)
            if self._queue:
                return self._next_player(now)
        return False

    def _make_player(self, c: Command) -> _Player:
        lvl = self.level_dbm0
        if isinstance(c, Silence):
            return _Player(silence=round(c.ms * SAMPLE_RATE / 1000))
        if isinstance(c, SendTone):
            ms = 3000 if c.duration_ms is None else c.duration_ms
            segments = [Segment(CED_DELAY_S), Segment(ms / 1000, ANS_HZ)]
            length = sum(round(s.duration_s * SAMPLE_RATE) for s in segments)
            return _Player(_Rendered(ToneGenerator(segments, lvl).generate(length)))
        enc = HdlcEncoder()
        if isinstance(c, SendHdlc):
            tx = FskTx(2, level_dbm0=lvl)
            flags = -(-round(V21_PREAMBLE_S * 300) // 8)
            bits = np.concatenate([enc.frames(list(c.frames), preamble_flags=flags), enc.flags(1)])
            tx.send(bits)
            tx.finish()
            # The whole burst at once (bit edges on the nearest sample: 80/3 samples a bit).
            parts = [tx.generate(-(-bits.size * SAMPLE_RATE // tx.spec.baud) + 1)]
            while not tx.done:
                parts.append(tx.generate(SAMPLE_RATE // 50))
            return _Player(_Rendered(np.concatenate(parts)))
        if isinstance(c, SendTcf):
            ftx = _fast_tx(c.modem, c.rate, lvl, False)
            ftx.send(np.zeros(c.rate * c.duration_ms // 1000, dtype=np.uint8))
        elif isinstance(c, SendPage):
            ftx = _fast_tx(c.modem, c.rate, lvl, c.short_train)
            ftx.send(_octet_bits(c.data))
        elif isinstance(c, SendEcmFrames):
            ftx = _fast_tx(c.modem, c.rate, lvl, c.short_train)
            flags = max(1, round(ECM_PREAMBLE_S * c.rate / 8))
            ftx.send(enc.frames(list(c.frames), preamble_flags=flags))
            ftx.send(enc.flags(2))
        else:
            raise TypeError(f"not a send command: {c!r}")
        ftx.finish()
        return _Player(ftx)

    # -- receive --------------------------------------------------------------------------------

    def _apply_receive(self, c: Receive) -> None:
        fe = self.front_end
        if c.kind == "fast" and c.modem is not None and c.rate is not None:
            fe.listen(c.modem, c.rate, c.short_train)
        else:
            fe.listen(None)

    def _listen_fresh(self) -> None:
        """First samples after our own transmission: the receivers start afresh."""
        if self._rx_stale:
            self._rx_stale = False
            self.front_end.reset()

    def _items(self, items: list[FrontEndItem], now: float) -> None:
        for it in items:
            if self.finished:
                return
            if isinstance(it, V21Frame):
                self._handle(HdlcFrame(it.data, it.crc_ok), now)
            elif isinstance(it, FastBits):
                self._fast_bits(it.bits, now)
            elif isinstance(it, Started):
                if it.source == "v21":
                    self._handle(CarrierUp("v21"), now)
                else:
                    self._fast_started(now)
            elif isinstance(it, Ended):
                if it.source == "v21":
                    self._handle(CarrierDown("v21"), now)
                else:
                    self._fast_ended(now)
            elif isinstance(it, TrainingFailed):
                self._use = None
                self._handle(CarrierUp("fast"), now)
                self._handle(FastTrained(False), now)
                if not it.ongoing:
                    self._handle(CarrierDown("fast"), now)

    def _fast_started(self, now: float) -> None:
        st = self.engine.state
        if st is State.F_TCF:
            self._use = "tcf"
            self._tcf_run = 0
            self._tcf_longest = 0
        elif st in (State.F_DOC_ECM, State.F_POST_DOC_ECM):
            self._use = "ecm"
            self._ecm_hdlc.reset()
            self._ecm_bits = []
            self._ecm_pending = 0
        else:
            self._use = "page"
            self._page_bits = np.zeros(0, dtype=np.uint8)
        self._handle(CarrierUp("fast"), now)
        self._handle(FastTrained(True), now)

    def _fast_bits(self, bits: Bits, now: float) -> None:
        if self._use == "tcf":
            self._tcf_zeros(bits)
        elif self._use == "ecm":
            # Decoded in batches (the engine acts on ECM frames only when the burst ends).
            self._ecm_bits.append(bits)
            self._ecm_pending += bits.size
            if self._ecm_pending >= self.ECM_BATCH:
                self._ecm_flush(now)
        elif self._use == "page":
            buf = np.concatenate([self._page_bits, bits]) if self._page_bits.size else bits
            whole = buf.size - buf.size % 8
            self._page_bits = buf[whole:].copy()
            if whole:
                self._handle(PageData(np.packbits(buf[:whole], bitorder="little").tobytes()), now)

    def _ecm_flush(self, now: float) -> None:
        if not self._ecm_bits:
            return
        bits = np.concatenate(self._ecm_bits) if len(self._ecm_bits) > 1 else self._ecm_bits[0]
        self._ecm_bits = []
        self._ecm_pending = 0
        for ev in self._ecm_hdlc.put_bits(bits):
            if ev.kind is HdlcEventKind.FRAME:
                self._handle(HdlcFrame(ev.data, ev.crc_ok), now)

    def _tcf_zeros(self, bits: Bits) -> None:
        """Longest run of zeros so far, carried across blocks."""
        if bits.size == 0:
            return
        ones = np.flatnonzero(bits)
        if ones.size == 0:
            self._tcf_run += bits.size
        else:
            gaps = np.diff(ones) - 1
            inner = int(gaps.max()) if gaps.size else 0
            self._tcf_longest = max(self._tcf_longest, self._tcf_run + int(ones[0]), inner)
            self._tcf_run = bits.size - 1 - int(ones[-1])
        self._tcf_longest = max(self._tcf_longest, self._tcf_run)

    def _fast_ended(self, now: float) -> None:
        if self._use == "ecm":
            self._ecm_flush(now)
        use, self._use = self._use, None
        if use == "tcf":
            self._handle(TcfResult(self._tcf_longest), now)
        elif use == "page" and self._page_bits.size:
            rest = np.packbits(self._page_bits, bitorder="little").tobytes()
            self._page_bits = np.zeros(0, dtype=np.uint8)
            self._handle(PageData(rest), now)
        self._handle(CarrierDown("fast"), now)
