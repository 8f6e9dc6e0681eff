"""The fax leg of a call: T.30 reception over G.711 audio or T.38 UDPTL, pages to a sink.

What it does
------------
:class:`FaxLeg` receives one fax for a mailbox.  It runs a :class:`~ums.fax.t30.T30Engine` in the
answering role (CED, then CSI/DIS), first on the call's audio with the soft modems
(:class:`~ums.softfax_g711.terminal.AudioFaxTerminal`), and after a switch to T.38 with a fresh
engine behind a :class:`~ums.fax_t38.terminal.UdptlLink`.  Every received page goes to the
:class:`FaxReceptionSink` (``store_page``, durable before it returns) and only then is confirmed to
the far end (``page_stored``, T.30 §5.3.6: MCF after the page is safe).  When T.30 is over (DCN
received, or the engine gave up) the leg asks for a hang-up after ``hangup_delay`` seconds unless
the far end hangs up first; a BYE in the middle ends T.30 with the pages stored so far.
:meth:`FaxLeg.close` hands the outcome to ``sink.finish``.  When storing a page fails the leg asks
for a hang-up; the pages confirmed before still go to ``sink.finish`` (``success`` False, the
failure as ``reason``), and only a call with no confirmed page is dropped with ``sink.abort``.

How it works
------------
Audio: the media endpoint's received audio goes to :meth:`FaxLeg.rx_audio`, with the frames the
jitter buffer filled in for lost packets, which reach the modems as
:meth:`~ums.softfax_g711.terminal.AudioFaxTerminal.fillin` (not as silence, which would drop a fast
modem's carrier and the rest of the page); its ``source(n)`` pulls :meth:`FaxLeg.tx_audio` every
packet, which also keeps the leg's timers going (the end of CED
for our own re-INVITE to T.38, the hang-up after T.30).  T.38: the UDPTL endpoint passes
datagrams to :meth:`FaxLeg.datagram`, calls :meth:`FaxLeg.poll` at :meth:`FaxLeg.next_deadline`
and sends what they return; datagrams due later (after a page was stored) go out through the
``send`` callback given to :meth:`FaxLeg.start_t38`.  Blocking sink calls run through ``runner``:
in the server a thread (``offload=True``), in tests inline.  Time ``now`` comes from ``clock``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from ums.config import Mailbox
from ums.fax.t30 import Command, FaxResult, Finished, Negotiated, PageReceived, SendTone, T30Config, T30Engine
from ums.fax_t38.sdp import T38Session
from ums.fax_t38.terminal import T38Terminal, UdptlLink
from ums.fax_t38.udptl import UdptlDecoder
from ums.log import kv
from ums.softfax_g711.pool import ModemPool
from ums.softfax_g711.terminal import AudioFaxTerminal

__all__ = [
    "FaxLeg",
    "FaxReceptionSink",
    "FaxSettings",
    "FaxSinkFactory",
    "StoredFax",
    "fax_result_fields",
    "inline_runner",
]

log = logging.getLogger("ums.calls.fax")

Transport = Literal["g711", "t38"]
Pcm = npt.NDArray[np.int16]


class StoredFax(Protocol):
    @property
    def id(self) -> str: ...


class FaxReceptionSink(Protocol):
    """Where the pages of one incoming fax call go (one per call)."""

    def store_page(
        self, page_no: int, pels: np.ndarray, xdpi: float, ydpi: float, info: dict[str, object]
    ) -> None: ...

    def finish(self, result: dict[str, object]) -> StoredFax | None: ...

    def abort(self) -> None: ...


class FaxSinkFactory(Protocol):
    def __call__(
        self,
        *,
        mailbox: Mailbox,
        caller: str,
        caller_name: str | None,
        called: str,
        call_id: str,
        started_at: datetime,
    ) -> FaxReceptionSink: ...


@dataclass(frozen=True)
class FaxSettings:
    """``[fax]`` options that a leg uses."""

    ident: str = ""
    ecm: bool = True
    #: transmit level of the soft modems
    level_dbm0: float = -10.0
    #: seconds after T.30 ended (DCN) before we hang up ourselves
    hangup_delay: float = 2.0
    #: UDPTL redundancy depth for what we send
    udptl_depth: int = 3


def fax_result_fields(
    result: FaxResult | None, pages: int, duration: float, transport: Transport, reason: str
) -> dict[str, object]:
    """The ``finish`` dictionary of a :class:`FaxReceptionSink`."""
    return {
        "success": bool(result is not None and result.success and pages > 0),
        "reason": result.reason if result is not None else reason,
        "pages": pages,
        "remote_ident": result.remote_ident if result is not None else "",
        "rate": result.rate if result is not None else None,
        "modem": result.modem if result is not None else None,
        "ecm": result.ecm if result is not None else False,
        "resolution": result.resolution if result is not None else None,
        "compression": result.compression if result is not None else None,
        "bad_rows": result.bad_rows if result is not None else 0,
        "duration": round(duration, 3),
        "transport": transport,
    }


Runner = Callable[[Callable[[], object], Callable[[object, BaseException | None], None]], None]


def inline_runner(job: Callable[[], object], done: Callable[[object, BaseException | None], None]) -> None:
    """Run a blocking sink call at once (tests, or a sink that does not block)."""
    try:
        value = job()
    except Exception as exc:
        done(None, exc)
        return
    done(value, None)


class FaxLeg:
    """One fax reception; see the module notes.

    ``on_hangup(reason)`` asks the call to hang up; ``on_ced_done()`` (optional) is called once,
    when CED has been sent on the audio line.
    """

    def __init__(
        self,
        settings: FaxSettings,
        sink: FaxReceptionSink,
        *,
        call_id: str,
        clock: Callable[[], float],
        on_hangup: Callable[[str], None],
        on_ced_done: Callable[[], None] | None = None,
        runner: Runner = inline_runner,
        modem_pool: ModemPool | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.call_id = call_id
        self.clock = clock
        self.on_hangup = on_hangup
        self.on_ced_done = on_ced_done
        self.runner = runner
        #: shared receiver banks of the process's G.711 fax calls (None: receivers of its own)
        self.modem_pool = modem_pool
        self.started_at = clock()
        self.transport: Transport | None = None
        self.audio: AudioFaxTerminal | None = None
        self.link: UdptlLink | None = None
        #: pages the sink has stored
        self.pages = 0
        #: stored pages confirmed to the far end (MCF)
        self.confirmed = 0
        self.negotiated: Negotiated | None = None
        self.result: FaxResult | None = None
        self.failed: str | None = None
        self.hangup_requested = False
        self.closed = False
        self._done_at: float | None = None  # T.30 over and our last signal sent
        self._pending = 0  # sink calls in flight
        self._idle = asyncio.Event() if _has_loop() else None
        self._t38_send: Callable[[list[bytes]], None] | None = None
        self._ced_seen = False
        self._ced_signalled = False
        self._generation = 0  # bumped when the transport changes: late page_stored go nowhere

    # -- engines --------------------------------------------------------------------------------
    def _engine(self) -> T30Engine:
        cfg = T30Config(ident=self.settings.ident, ecm=self.settings.ecm)
        return T30Engine(cfg, "answering", "receive")

    @property
    def finished(self) -> bool:
        """T.30 is over on the current transport."""
        if self.audio is not None:
            return self.audio.finished
        if self.link is not None:
            return self.link.terminal.engine.finished
        return False

    # -- audio ----------------------------------------------------------------------------------
    def start_audio(self) -> None:
        """Start T.30 on the audio line (CED, then DIS)."""
        self.transport = "g711"
        front_end = self.modem_pool.front_end() if self.modem_pool is not None else None
        self.audio = AudioFaxTerminal(
            self._engine(), level_dbm0=self.settings.level_dbm0, front_end=front_end
        )
        log.info(kv("fax.started", call_id=self.call_id, transport="g711"))

    def rx_audio(self, pcm: Pcm, lost: Sequence[tuple[int, int]] = ()) -> None:
        """Received audio (any block size).  ``lost`` gives the ``(offset, length)`` of each frame
        of ``pcm`` that stands for a lost packet (the media endpoint's ``on_audio_lost``); those go
        to the modems as ``fillin(length)``, in place, instead of as samples."""
        term = self.audio
        if term is None or self.closed:
            return
        if not lost:
            term.receive(pcm)
        else:
            pos = 0
            for start, length in sorted(lost):
                if start > pos:
                    term.receive(pcm[pos:start])
                if length > 0:
                    term.fillin(length)
                pos = max(pos, start + length)
            if pos < len(pcm):
                term.receive(pcm[pos:])
        if self.modem_pool is not None:
            # Runs the banks once every call has its audio (the last to deliver does the work).
            self.modem_pool.step()
        self._reports(term.take_reports())

    def tx_audio(self, n: int) -> Pcm | None:
        """The next ``n`` samples to send; also runs the leg's timers."""
        term = self.audio
        if term is None or self.closed:
            return None
        out = term.transmit(n)
        sending = term.sending
        if isinstance(sending, SendTone) and sending.tone == "ced":
            self._ced_seen = True
        elif self._ced_seen and not self._ced_signalled:
            self._ced_signalled = True
            if self.on_ced_done is not None:
                self.on_ced_done()
        self._reports(term.take_reports())
        self._check_done(self.clock(), transmitting=term.transmitting)
        return out

    # -- T.38 -----------------------------------------------------------------------------------
    def start_t38(self, session: T38Session, send: Callable[[list[bytes]], None]) -> list[bytes]:
        """Switch to T.38 (a fresh T.30 engine; the audio terminal is dropped).  Returns the
        datagrams to send now; later ones go to ``send``."""
        now = self.clock()
        if self.audio is not None:
            self._reports(self.audio.take_reports())
            self.audio.close()
        self.audio = None
        self._generation += 1
        self._done_at = None
        self.transport = "t38"
        self._t38_send = send
        terminal = T38Terminal(self._engine(), version=session.version)
        self.link = UdptlLink(
            terminal, encoder=session.encoder(depth=self.settings.udptl_depth), decoder=UdptlDecoder()
        )
        log.info(
            kv(
                "fax.started",
                call_id=self.call_id,
                transport="t38",
                version=session.version,
                ec=session.ec.value,
                pages_before=self.pages or None,
            )
        )
        return self._after_t38(self.link.start(now), now)

    def datagram(self, data: bytes, now: float | None = None) -> list[bytes]:
        """A received UDPTL datagram; returns the datagrams to send."""
        if self.link is None or self.closed:
            return []
        t = self.clock() if now is None else now
        return self._after_t38(self.link.datagram(data, t), t)

    def poll(self, now: float | None = None) -> list[bytes]:
        """Run the timers due (T.38 packets, T.30 timers, the hang-up after T.30)."""
        t = self.clock() if now is None else now
        out: list[bytes] = []
        if self.link is not None and not self.closed:
            out = self._after_t38(self.link.poll(t), t)
        self._check_hangup(t)
        return out

    def next_deadline(self) -> float | None:
        times: list[float] = []
        if self.link is not None and not self.closed:
            d = self.link.next_deadline()
            if d is not None:
                times.append(d)
        if self._done_at is not None and not self.hangup_requested:
            times.append(self._done_at + self.settings.hangup_delay)
        return min(times) if times else None

    def _after_t38(self, out: list[bytes], now: float) -> list[bytes]:
        assert self.link is not None
        self._reports(list(self.link.terminal.take_reports()))
        self._check_done(now, transmitting=not self.link.finished)
        return out

    # -- reports --------------------------------------------------------------------------------
    def _reports(self, reports: list[Command]) -> None:
        for r in reports:
            if isinstance(r, PageReceived):
                self._store(r)
            elif isinstance(r, Negotiated):
                self._negotiated(r)
            elif isinstance(r, Finished):
                self._finished(r, self.pages)

    def _negotiated(self, r: Negotiated) -> None:
        self.negotiated = r
        log.info(
            kv(
                "fax.negotiated",
                call_id=self.call_id,
                transport=self.transport,
                modem=r.modem,
                rate=r.rate,
                ecm=r.ecm,
                resolution=r.resolution,
                compression=r.compression,
                remote_ident=r.remote_ident or None,
            )
        )

    def _finished(self, r: Finished, pages: int) -> None:
        """T.30 is over; ``pages`` is what the log line counts (stored or confirmed)."""
        self.result = r.result
        log.info(
            kv(
                "fax.t30_finished",
                call_id=self.call_id,
                code=r.result.code,
                success=r.result.success,
                pages=pages,
            )
        )

    def _store(self, page: PageReceived) -> None:
        number = self.pages + self._pending + 1
        generation = self._generation
        info: dict[str, object] = {
            "resolution": page.resolution,
            "compression": page.compression,
            "ecm": page.ecm,
            "bad_rows": page.bad_rows,
            "longest_bad_run": page.longest_bad_run,
            "quality": page.quality,
            "transport": self.transport,
        }

        def job() -> object:
            self.sink.store_page(number, page.pels, page.xdpi, page.ydpi, info)
            return None

        def done(_value: object, exc: BaseException | None) -> None:
            self._pending -= 1
            if exc is not None:
                log.error(kv("fax.store_failed", call_id=self.call_id, page=number, reason=exc))
                self.failed = f"store failed: {exc}"
                self._request_hangup("store failed")
            else:
                self.pages += 1
                log.info(kv("fax.page", call_id=self.call_id, page=number, rows=int(page.pels.shape[0])))
                if generation == self._generation and not self.closed:
                    self._confirm(page.page_no)
            if self._pending == 0 and self._idle is not None:
                self._idle.set()

        self._pending += 1
        if self._idle is not None:
            self._idle.clear()
        self.runner(job, done)

    def _confirm(self, page_no: int) -> None:
        self.confirmed += 1
        if self.audio is not None:
            self.audio.page_stored(page_no)
            self._reports(self.audio.take_reports())
        elif self.link is not None:
            now = self.clock()
            out = self._after_t38(self.link.page_stored(page_no, now), now)
            if out and self._t38_send is not None:
                self._t38_send(out)

    # -- the end --------------------------------------------------------------------------------
    def _check_done(self, now: float, *, transmitting: bool) -> None:
        if self._done_at is None and self.finished and not transmitting:
            self._done_at = now
        self._check_hangup(now)

    def _check_hangup(self, now: float) -> None:
        if (
            self._done_at is not None
            and not self.hangup_requested
            and now >= self._done_at + self.settings.hangup_delay
        ):
            self._request_hangup("fax done")

    def _request_hangup(self, reason: str) -> None:
        if self.hangup_requested or self.closed:
            return
        self.hangup_requested = True
        self.on_hangup(reason)

    def hangup(self) -> None:
        """The call is gone (BYE either way): T.30 ends with what was received."""
        if self.audio is not None and not self.audio.finished:
            self.audio.hangup()
            self._reports(self.audio.take_reports())
        elif self.link is not None and not self.link.finished:
            now = self.clock()
            self.link.hangup(now)
            self._reports(list(self.link.terminal.take_reports()))

    async def wait_idle(self) -> None:
        """Until no sink call is in flight."""
        if self._idle is not None and self._pending:
            await self._idle.wait()

    def outcome(self, reason: str = "hangup") -> dict[str, object]:
        """The result dictionary for ``sink.finish`` (a failed page store is the reason)."""
        fields = fax_result_fields(
            self.result, self.pages, self.clock() - self.started_at, self.transport or "g711", reason
        )
        if self.failed is not None:
            fields["success"] = False
            fields["reason"] = self.failed
        return fields

    def close(self, reason: str = "hangup") -> StoredFax | None:
        """End T.30 (if still running) and finish the sink (blocking: durable on return).

        Call after :meth:`wait_idle`.  Returns the stored message (None: nothing kept).  After a
        failed page store the pages confirmed before are still finished (``success`` False); with
        none confirmed the sink is aborted.
        """
        self.hangup()
        self.closed = True
        if self.audio is not None:
            self.audio.close()
        if self.failed is not None and self.confirmed == 0:
            self.sink.abort()
            return None
        fields = self.outcome(reason)
        return self.sink.finish(fields)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
