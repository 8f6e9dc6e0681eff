"""T.38 fax terminal: the T.30 engine carried as ITU-T T.38 IFP packets, sans-I/O.

What it does
------------
:class:`T38Terminal` connects a :class:`~ums.fax.t30.T30Engine` to T.38 IFP packets.  The caller
passes the current time in seconds to every method and sends the returned IFP packets (encoded
bytes, :mod:`ums.fax_t38.ifp`) in order; it calls :meth:`~T38Terminal.poll` when ``now`` reaches
:meth:`~T38Terminal.next_deadline`.  Received IFP packets go to :meth:`~T38Terminal.receive_ifp`.
The engine's reports (:class:`~ums.fax.t30.Negotiated`, :class:`~ums.fax.t30.PageReceived`,
:class:`~ums.fax.t30.PageSent`, :class:`~ums.fax.t30.Finished`) collect in
:attr:`~T38Terminal.reports` (:meth:`~T38Terminal.take_reports`); a received page must be
acknowledged with :meth:`~T38Terminal.page_stored` before the engine confirms it.

:class:`UdptlLink` puts a terminal behind UDPTL (T.38 Annex A): datagrams in, datagrams out,
with :class:`~ums.fax_t38.udptl.UdptlEncoder` / :class:`~ums.fax_t38.udptl.UdptlDecoder`.

How it works
------------
Transmit.  The engine's sending commands are laid end to end on a transmit cursor and expanded
into packets with send times; :meth:`poll` hands out the packets that are due.  Every burst
starts with its ``t30-indicator`` (T.38 Annex A): ``v21-preamble`` for V.21, the training
indicator of the modem and rate for the image modem, ``cng`` / ``ced`` for tones.  Data follows
after the time the analogue signal would take: 1 s of V.21 flags (T.30 §5.3; peers drop HDLC
data sent sooner), the modem's training, and for ECM 200 ms of flags.  Data goes in chunks of
``pacing_ms`` worth of octets at the modem's bit rate, each chunk sent when the analogue modem
would have sent it (HDLC frames count their FCS, closing flag and zero-bit insertion).  HDLC
frames are ``hdlc-data`` fields; the packet with the last chunk of a frame also carries
``hdlc-fcs-OK``, except for the last frame of a burst, which is followed by a packet with only
``hdlc-fcs-OK-sig-end``.  Non-ECM data (TCF zeros, pages) is ``t4-non-ecm-data``; a page gets at
least 40 ms of zero fill after its RTC, then a packet with only ``t4-non-ecm-sig-end``.  Every
burst ends with ``no-signal`` (never ``hdlc-sig-end`` after ``hdlc-fcs-OK-sig-end``).  HDLC and
T.4 octets are sent first transmitted bit first (MSB), so they are bit-reversed from the engine's
line order (first bit in the LSB).

Repeats: indicators are sent ``indicator_repeats`` times and the data-less end-of-data packets
``data_end_repeats`` times, as *separate packets* ``repeat_spacing_ms`` apart (the UDPTL layer
numbers each one; loss on IP links comes in bursts).  Repeats carry no data, so a receiver that
takes each of them as new still sees every frame and every octet once.

``SendComplete`` goes to the engine when the last packet of the queue is due.  ``SendTone("cng",
None)`` sends the ``cng`` indicator and counts as done at once.  ``Receive`` commands need
nothing: a T.38 packet says what it carries.

Receive.  Indicators become ``CarrierUp`` (``v21-preamble``: "v21"; a training indicator: "fast")
and ``CarrierDown`` (``no-signal``, or the start of another carrier); ``cng`` / ``ced`` become
``ToneDetected``.  A repeated indicator is ignored.  The first image data after a training
indicator reports ``FastTrained(True)``.  HDLC data (V.21, or ECM frames with the image modem) is
collected and handed over as ``HdlcFrame`` at ``hdlc-fcs-OK`` / ``hdlc-fcs-BAD`` (and their
``-sig-end`` forms); a frame that lost octets (:meth:`T38Terminal.note_loss`, or data arriving
without its start) is reported with ``crc_ok=False``.  ``t4-non-ecm-data`` becomes ``PageData``,
also for TCF (the engine judges a TCF handed over as data at its end, ``docs/t30.md``); data is
passed on in batches of ``rx_batch`` octets.  Non-ECM data lost in a gap (``note_loss`` before
more data of the same signal, or before its end) is reported in order as ``PageDataLost``, with
the octets estimated from the time since the last data at the data type's bit rate, so that the
copy-quality check counts the missing rows (T.38 loss removes data rather than garbling it).
Any of ``hdlc-sig-end``, ``t4-non-ecm-sig-end``, ``hdlc-fcs-*-sig-end`` ends whatever carrier is
up (some gateways send the wrong one at the end of TCF), and counts as ``no-signal``.  Data
without its indicator starts the carrier its data type implies.  A burst with no packet for
``rx_timeout`` seconds (15 s, image modem) or ``v21_timeout`` (2 s, V.21) is ended as if
``no-signal`` had come: a V.21 burst whose end was lost must not keep the engine's T4 suspended
for long.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np

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
    T30Engine,
    ToneDetected,
)
from ums.fax_t38.ifp import (
    Data,
    FieldType,
    IfpError,
    IfpPacket,
    Indicator,
    T30Data,
    T30Indicator,
    decode_ifp,
    encode_ifp,
)
from ums.fax_t38.udptl import UdptlDecoder, UdptlEncoder, UdptlError

__all__ = [
    "RX_TIMEOUT",
    "V21_TIMEOUT",
    "Report",
    "T38Terminal",
    "TerminalStats",
    "UdptlLink",
    "data_type_for",
    "training_indicator",
]

Report = Negotiated | PageReceived | PageSent | Finished
Carrier = Literal["v21", "fast"]

V21_RATE: Final = 300
"""V.21 channel 2 signalling rate (bit/s)."""
V21_PREAMBLE_S: Final = 1.0
"""T.30 §5.3: 1 s +- 15 % of flags before the first V.21 frame."""
ECM_FLAGS_S: Final = 0.2
"""Flags sent with the image modem before the first ECM frame."""
PAGE_TAIL_S: Final = 0.04
"""Zero fill after a page's RTC before ``t4-non-ecm-sig-end`` (some gateways cut the last rows)."""
RX_TIMEOUT: Final = 15.0
"""An image-modem burst with no packet for this long is taken as ended."""
V21_TIMEOUT: Final = 2.0
"""A V.21 burst with no packet for this long is taken as ended: longer than the 1 s preamble, short
enough that a transmitter which heard only the start of a response repeats its command (T4)
before the far end gives up (T2)."""

#: Duration (s) of the synchronizing (training) sequence before data: V.29 §5 (608 symbols at
#: 2400 Bd), V.27 ter Table 3 without echo protection (1132 symbols at 1200 / 1600 Bd), V.17 long
#: and short trains.
_TRAIN_S: Final[dict[tuple[str, int], float]] = {
    ("v27ter", 2400): 1132 / 1200,
    ("v27ter", 4800): 1132 / 1600,
    ("v29", 7200): 608 / 2400,
    ("v29", 9600): 608 / 2400,
}
_V17_LONG_S: Final = 1.393
_V17_SHORT_S: Final = 0.142

_DATA_TYPES: Final[dict[tuple[str, int], T30Data]] = {
    ("v27ter", 2400): T30Data.V27_2400,
    ("v27ter", 4800): T30Data.V27_4800,
    ("v29", 7200): T30Data.V29_7200,
    ("v29", 9600): T30Data.V29_9600,
    ("v17", 7200): T30Data.V17_7200,
    ("v17", 9600): T30Data.V17_9600,
    ("v17", 12000): T30Data.V17_12000,
    ("v17", 14400): T30Data.V17_14400,
}
_TRAINING: Final[dict[tuple[str, int], T30Indicator]] = {
    ("v27ter", 2400): T30Indicator.V27_2400_TRAINING,
    ("v27ter", 4800): T30Indicator.V27_4800_TRAINING,
    ("v29", 7200): T30Indicator.V29_7200_TRAINING,
    ("v29", 9600): T30Indicator.V29_9600_TRAINING,
}
_V17_TRAINING: Final[dict[tuple[int, bool], T30Indicator]] = {
    (7200, False): T30Indicator.V17_7200_LONG_TRAINING,
    (7200, True): T30Indicator.V17_7200_SHORT_TRAINING,
    (9600, False): T30Indicator.V17_9600_LONG_TRAINING,
    (9600, True): T30Indicator.V17_9600_SHORT_TRAINING,
    (12000, False): T30Indicator.V17_12000_LONG_TRAINING,
    (12000, True): T30Indicator.V17_12000_SHORT_TRAINING,
    (14400, False): T30Indicator.V17_14400_LONG_TRAINING,
    (14400, True): T30Indicator.V17_14400_SHORT_TRAINING,
}
_FAST_INDICATORS: Final = frozenset(
    set(_TRAINING.values())
    | set(_V17_TRAINING.values())
    | {T30Indicator.V33_12000_TRAINING, T30Indicator.V33_14400_TRAINING, T30Indicator.V34_PRI_CHANNEL}
)
_DATA_RATES: Final[dict[T30Data, int]] = {dt: rate for (_, rate), dt in _DATA_TYPES.items()}
_HDLC_END: Final = {
    FieldType.HDLC_FCS_OK: (True, False),
    FieldType.HDLC_FCS_BAD: (False, False),
    FieldType.HDLC_FCS_OK_SIG_END: (True, True),
    FieldType.HDLC_FCS_BAD_SIG_END: (False, True),
}
#: octet -> octet with its bits in reverse order (line order <-> T.38 order)
_REVERSE: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def data_type_for(modem: str, rate: int) -> T30Data:
    """The ``t30-data`` type of an image modem at ``rate`` (T.38 Annex A)."""
    try:
        return _DATA_TYPES[(modem, rate)]
    except KeyError:
        raise ValueError(f"no T.38 data type for {modem} at {rate} bit/s") from None


def training_indicator(modem: str, rate: int, short_train: bool) -> T30Indicator:
    """The ``t30-indicator`` announcing an image modem's training (T.38 Annex A)."""
    if modem == "v17":
        key = (rate, short_train)
        if key in _V17_TRAINING:
            return _V17_TRAINING[key]
    elif (modem, rate) in _TRAINING:
        return _TRAINING[(modem, rate)]
    raise ValueError(f"no T.38 training indicator for {modem} at {rate} bit/s")


def _training_seconds(modem: str, rate: int, short_train: bool) -> float:
    if modem == "v17":
        return _V17_SHORT_S if short_train else _V17_LONG_S
    return _TRAIN_S[(modem, rate)]


def _stuffed_bits(frame: bytes) -> int:
    """Zero bits HDLC inserts after each run of five ones (ISO 3309), line order."""
    bits = np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little").astype(np.int8)
    edges = np.diff(np.concatenate(([0], bits, [0])).astype(np.int8))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int((runs // 5).sum())


@dataclass
class TerminalStats:
    """Counters of a :class:`T38Terminal`."""

    packets_sent: int = 0
    packets_received: int = 0
    bad_packets: int = 0
    frames_received: int = 0
    bad_frames: int = 0
    losses: int = 0
    timeouts: int = 0


@dataclass
class _Burst:
    """The receive side's view of the signal in progress."""

    carrier: Carrier | None = None
    trained: bool = False
    hdlc: bytearray = field(default_factory=bytearray)
    hdlc_damaged: bool = False
    page: bytearray = field(default_factory=bytearray)
    non_ecm: bool = False
    data_at: float | None = None  # when the last non-ECM data arrived
    data_octets: int = 0  # how much it was
    rate: int = 0  # bit rate of the non-ECM data type


class T38Terminal:
    """A T.38 fax terminal around one :class:`~ums.fax.t30.T30Engine`; see the module notes.

    Parameters
    ----------
    engine : T30Engine
        The T.30 engine (not started yet).
    version : int
        Negotiated ``T38FaxVersion``, for encoding and decoding IFP packets.
    pacing_ms : int
        Image and V.21 data per packet, in milliseconds of the modem's bit rate (at least 1 octet).
    indicator_repeats, data_end_repeats : int
        How many times indicators and end-of-data packets are sent.
    repeat_spacing_ms : float
        Time between the copies of a repeated packet.
    rx_timeout, v21_timeout : float
        Seconds without a packet after which an image-modem / V.21 burst in progress is ended.
    rx_batch : int
        Non-ECM octets collected before they are handed to the engine.
    """

    def __init__(
        self,
        engine: T30Engine,
        *,
        version: int = 0,
        pacing_ms: int = 30,
        indicator_repeats: int = 3,
        data_end_repeats: int = 3,
        repeat_spacing_ms: float = 10.0,
        rx_timeout: float = RX_TIMEOUT,
        v21_timeout: float = V21_TIMEOUT,
        rx_batch: int = 4096,
    ) -> None:
        if pacing_ms < 1 or indicator_repeats < 1 or data_end_repeats < 1 or rx_batch < 1:
            raise ValueError("pacing_ms, repeats and rx_batch must be >= 1")
        if repeat_spacing_ms < 0 or rx_timeout <= 0 or v21_timeout <= 0:
            raise ValueError("repeat_spacing_ms must be >= 0 and the timeouts > 0")
        self.engine = engine
        self.version = version
        self.pacing_ms = pacing_ms
        self.indicator_repeats = indicator_repeats
        self.data_end_repeats = data_end_repeats
        self.repeat_spacing = repeat_spacing_ms / 1000.0
        self.rx_timeout = rx_timeout
        self.v21_timeout = v21_timeout
        self.rx_batch = rx_batch
        self.reports: list[Report] = []
        self.stats = TerminalStats()
        self._started = False
        # transmit
        self._txq: deque[tuple[float, bytes]] = deque()
        self._last_at = 0.0  # send time of the last queued packet
        self._cursor = 0.0  # end of the transmission queued so far
        self._complete_at: float | None = None
        self._tx_indicator: T30Indicator | None = None
        # receive
        self._rx_indicator: T30Indicator | None = None
        self._last_field: tuple[T30Data, FieldType] | None = None
        self._burst = _Burst()
        self._rx_deadline: float | None = None
        self._gap = False  # packets lost before the next one received

    # -- public API -----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """The engine is done and everything it asked for has been sent."""
        return self.engine.finished and not self._txq

    @property
    def result(self) -> FaxResult | None:
        return self.engine.result

    def start(self, now: float) -> list[bytes]:
        """Start the engine (CNG or CED, DIS); returns the packets due now."""
        if self._started:
            raise RuntimeError("start() called twice")
        self._started = True
        self._cursor = self._last_at = now
        self._commands(self.engine.start(now), now)
        return self._pump(now)

    def receive_ifp(self, ifp: bytes, now: float) -> list[bytes]:
        """Take one received IFP packet (in sequence order); returns the packets due now.

        Packets that do not decode are counted in ``stats.bad_packets`` and otherwise ignored.
        """
        self.stats.packets_received += 1
        try:
            packet = decode_ifp(ifp, self.version)
        except IfpError:
            self.stats.bad_packets += 1
            self.note_loss()
            return self._pump(now)
        self._rx_packet(packet, now)
        return self._pump(now)

    def note_loss(self) -> None:
        """Packets were lost before the next one received.

        An HDLC frame being collected is damaged.  Non-ECM data (page or TCF) lost in the gap is
        reported to the engine as ``PageDataLost`` when the next packet shows what the gap was in:
        more non-ECM data of the same signal, or the end of a signal that carried non-ECM data.
        """
        self.stats.losses += 1
        self._burst.hdlc_damaged = True
        self._gap = True

    def poll(self, now: float) -> list[bytes]:
        """Run what is due at ``now``: packets to send, ``SendComplete``, engine timers, timeouts."""
        return self._pump(now)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must be called next (None: nothing pending)."""
        if self.finished:
            return None
        times = [
            t for t in (self._complete_at, self.engine.next_deadline(), self._rx_deadline) if t is not None
        ]
        if self._txq:
            times.append(self._txq[0][0])
        return min(times) if times else None

    def page_stored(self, page_no: int, now: float) -> list[bytes]:
        """The page of a :class:`~ums.fax.t30.PageReceived` report is durable."""
        return self._event(PageStored(page_no), now)

    def hangup(self, now: float) -> list[bytes]:
        """The call is gone (BYE): nothing more is sent, the engine finishes."""
        self._txq.clear()
        self._complete_at = None
        self._handle(Hangup(), now)
        self._txq.clear()
        self._complete_at = None
        return []

    def abort(self, now: float, reason: str = "aborted locally") -> list[bytes]:
        """Cancel the call: the engine sends DCN and finishes."""
        self._commands(self.engine.abort(now, reason), now)
        return self._pump(now)

    def take_reports(self) -> list[Report]:
        """The reports collected since the last call."""
        out, self.reports = self.reports, []
        return out

    # -- engine plumbing ------------------------------------------------------------------------

    def _event(self, event: Event, now: float) -> list[bytes]:
        self._handle(event, now)
        return self._pump(now)

    def _handle(self, event: Event, now: float) -> None:
        self._commands(self.engine.handle(event, now), now)

    def _pump(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        polled: float | None = None
        while True:
            while self._txq and self._txq[0][0] <= now:
                out.append(self._txq.popleft()[1])
            if self._complete_at is not None and self._complete_at <= now and not self._txq:
                self._complete_at = None
                self._handle(SendComplete(), now)
                continue
            deadline = self.engine.next_deadline()
            if deadline is not None and deadline <= now and deadline != polled:
                polled = deadline  # an engine that keeps a timer due after poll() is not spun on
                self._commands(self.engine.poll(now), now)
                continue
            if self._rx_deadline is not None and self._rx_deadline <= now:
                self._rx_deadline = None
                self.stats.timeouts += 1
                self._end_carrier(now)
                self._rx_indicator = T30Indicator.NO_SIGNAL
                continue
            if self._txq and self._txq[0][0] <= now:
                continue
            break
        self.stats.packets_sent += len(out)
        return out

    def _commands(self, cmds: list[Command], now: float) -> None:
        cursor = max(now, self._cursor)
        busy = False
        for c in cmds:
            if isinstance(c, (Negotiated, PageReceived, PageSent, Finished)):
                self.reports.append(c)
            elif isinstance(c, Receive):
                continue
            elif isinstance(c, SendTone):
                indicator = T30Indicator.CNG if c.tone == "cng" else T30Indicator.CED
                self._indicator(indicator, cursor)
                if c.duration_ms is not None:
                    cursor += c.duration_ms / 1000.0
                    self._indicator(T30Indicator.NO_SIGNAL, cursor)
                    busy = True
            elif isinstance(c, Silence):
                if self._tx_indicator is not T30Indicator.NO_SIGNAL:
                    self._indicator(T30Indicator.NO_SIGNAL, cursor)
                cursor += c.ms / 1000.0
                busy = True
            elif isinstance(c, SendHdlc):
                cursor = self._send_hdlc(
                    T30Data.V21, V21_RATE, T30Indicator.V21_PREAMBLE, V21_PREAMBLE_S, c.frames, cursor
                )
                busy = True
            elif isinstance(c, SendTcf):
                zeros = bytes(c.rate * c.duration_ms // 8000)
                cursor = self._send_non_ecm(c.modem, c.rate, False, zeros, cursor)
                busy = True
            elif isinstance(c, SendPage):
                fill = bytes(math.ceil(c.rate * PAGE_TAIL_S / 8))
                data = c.data.translate(_REVERSE) + fill
                cursor = self._send_non_ecm(c.modem, c.rate, c.short_train, data, cursor)
                busy = True
            elif isinstance(c, SendEcmFrames):
                ind = training_indicator(c.modem, c.rate, c.short_train)
                lead = _training_seconds(c.modem, c.rate, c.short_train) + ECM_FLAGS_S
                cursor = self._send_hdlc(data_type_for(c.modem, c.rate), c.rate, ind, lead, c.frames, cursor)
                busy = True
        self._cursor = max(cursor, self._last_at)
        if busy:
            self._complete_at = self._cursor

    # -- transmit -------------------------------------------------------------------------------

    def _queue(self, at: float, packet: IfpPacket, repeats: int = 1) -> float:
        """Queue ``packet`` ``repeats`` times from ``at``; returns the send time of the last copy."""
        ifp = encode_ifp(packet, self.version)
        for k in range(repeats):
            t = max(at + k * self.repeat_spacing, self._last_at)
            self._txq.append((t, ifp))
            self._last_at = t
        return self._last_at

    def _indicator(self, indicator: T30Indicator, at: float) -> float:
        self._tx_indicator = indicator
        return self._queue(at, Indicator(indicator), self.indicator_repeats)

    def _octets_per_packet(self, rate: int) -> int:
        return max(1, rate * self.pacing_ms // 8000)

    def _send_hdlc(
        self,
        data_type: T30Data,
        rate: int,
        indicator: T30Indicator,
        lead: float,
        frames: tuple[bytes, ...],
        at: float,
    ) -> float:
        """Indicator, ``lead`` seconds (training, flags), the frames, sig-end, no-signal.

        The lead is counted from the last copy of the indicator, so that a receiver that only
        got that one still sees the whole preamble.  Returns the end of the burst.
        """
        t = self._indicator(indicator, at) + lead
        n = self._octets_per_packet(rate)
        for i, frame in enumerate(frames):
            wire = frame.translate(_REVERSE)
            chunks = [wire[j : j + n] for j in range(0, len(wire), n)] or [b""]
            for j, chunk in enumerate(chunks):
                fields: list[tuple[FieldType, bytes]] = []
                if chunk:
                    fields.append((FieldType.HDLC_DATA, chunk))
                if j == len(chunks) - 1 and i < len(frames) - 1:
                    fields.append((FieldType.HDLC_FCS_OK, b""))
                if fields:
                    self._queue(t, Data(data_type, fields))
                t += 8 * len(chunk) / rate
            t += (16 + 8 + _stuffed_bits(frame)) / rate  # FCS and closing flag
        end = self._queue(t, Data(data_type, [(FieldType.HDLC_FCS_OK_SIG_END, b"")]), self.data_end_repeats)
        return self._indicator(T30Indicator.NO_SIGNAL, end + self.repeat_spacing)

    def _send_non_ecm(self, modem: str, rate: int, short_train: bool, data: bytes, at: float) -> float:
        """Training indicator, training time, ``data`` (T.38 bit order) paced at ``rate``, sig-end,
        no-signal.  Returns the end of the burst."""
        data_type = data_type_for(modem, rate)
        t = self._indicator(training_indicator(modem, rate, short_train), at)
        t += _training_seconds(modem, rate, short_train)
        n = self._octets_per_packet(rate)
        for j in range(0, len(data), n):
            chunk = data[j : j + n]
            self._queue(t, Data(data_type, [(FieldType.T4_NON_ECM_DATA, chunk)]))
            t += 8 * len(chunk) / rate
        end = self._queue(t, Data(data_type, [(FieldType.T4_NON_ECM_SIG_END, b"")]), self.data_end_repeats)
        return self._indicator(T30Indicator.NO_SIGNAL, end + self.repeat_spacing)

    # -- receive --------------------------------------------------------------------------------

    def _rx_packet(self, packet: IfpPacket, now: float) -> None:
        if isinstance(packet, Indicator):
            self._rx_indicator_packet(packet.kind, now)
        else:
            for ftype, fdata in packet.fields:
                self._rx_field(packet.data_type, ftype, fdata, now)
                self._last_field = (packet.data_type, ftype)
            self._arm_backstop(now)
        self._gap = False  # the packet after a gap shows what was lost; nothing more to learn

    def _arm_backstop(self, now: float) -> None:
        carrier = self._burst.carrier
        if carrier is None:
            self._rx_deadline = None
        else:
            self._rx_deadline = now + (self.v21_timeout if carrier == "v21" else self.rx_timeout)

    def _rx_indicator_packet(self, kind: T30Indicator, now: float) -> None:
        if kind is self._rx_indicator:
            return  # a repeat: indicators are sent more than once
        self._rx_indicator = kind
        self._last_field = None
        if kind is T30Indicator.V21_PREAMBLE:
            self._start_carrier("v21", now)
        elif kind in _FAST_INDICATORS:
            self._start_carrier("fast", now)
        else:
            self._end_carrier(now)
            if kind is T30Indicator.CNG:
                self._handle(ToneDetected("cng"), now)
            elif kind is T30Indicator.CED:
                self._handle(ToneDetected("ced"), now)

    def _start_carrier(self, kind: Carrier, now: float) -> None:
        self._end_carrier(now)
        self._burst = _Burst(carrier=kind)
        self._arm_backstop(now)
        self._handle(CarrierUp(kind), now)

    def _end_carrier(self, now: float) -> None:
        burst = self._burst
        if burst.carrier is None:
            self._burst = _Burst()
            self._rx_deadline = None
            return
        if burst.non_ecm and self._gap:
            self._data_lost(burst, now)  # the end of the data went with the gap
        self._burst = _Burst()
        self._rx_deadline = None
        if burst.non_ecm:
            self._handle(PageData(bytes(burst.page), end=True), now)
        self._handle(CarrierDown(burst.carrier), now)

    def _data_lost(self, burst: _Burst, now: float) -> None:
        """Report non-ECM data lost before ``now``: the data collected so far, then ``PageDataLost``.

        The amount is estimated from the time since the last data arrived at the data type's bit
        rate, less the octets that came then (unknown, None, without earlier data in this signal).
        """
        self._gap = False
        if burst.page:
            data = bytes(burst.page)
            burst.page.clear()
            self._handle(PageData(data), now)
        octets: int | None = None
        if burst.data_at is not None and burst.rate:
            estimate = round((now - burst.data_at) * burst.rate / 8) - burst.data_octets
            octets = estimate if estimate > 0 else None
        self._handle(PageDataLost(octets), now)

    def _ensure_carrier(self, data_type: T30Data, now: float) -> _Burst:
        """The burst ``data_type`` belongs to, started if its indicator was lost."""
        kind: Carrier = "v21" if data_type is T30Data.V21 else "fast"
        if self._burst.carrier != kind:
            self._start_carrier(kind, now)
            self._rx_indicator = None
        burst = self._burst
        if kind == "fast" and not burst.trained:
            burst.trained = True
            self._handle(FastTrained(True), now)
        return burst

    def _rx_field(self, data_type: T30Data, ftype: FieldType, fdata: bytes, now: float) -> None:
        if ftype is FieldType.HDLC_DATA:
            if not fdata:
                return
            burst = self._ensure_carrier(data_type, now)
            wire = fdata.translate(_REVERSE)
            if not burst.hdlc and wire[0] != 0xFF:
                burst.hdlc_damaged = True  # every T.30 frame starts with the address 0xFF: lost octets
            burst.hdlc += wire
        elif ftype in _HDLC_END:
            ok, sig_end = _HDLC_END[ftype]
            if sig_end and self._last_field == (data_type, ftype):
                return  # a repeated end-of-data packet
            burst = self._burst
            if fdata:  # data in an FCS field: some gateways do this
                burst = self._ensure_carrier(data_type, now)
                burst.hdlc += fdata.translate(_REVERSE)
            if burst.hdlc:
                good = ok and not burst.hdlc_damaged
                self.stats.frames_received += 1
                self.stats.bad_frames += not good
                frame = bytes(burst.hdlc)
                burst.hdlc.clear()
                burst.hdlc_damaged = False
                self._handle(HdlcFrame(frame, good), now)
            burst.hdlc_damaged = False
            if sig_end:
                self._sig_end(now)
        elif ftype is FieldType.T4_NON_ECM_DATA:
            if fdata:
                self._page_data(data_type, fdata, now)
        elif ftype is FieldType.T4_NON_ECM_SIG_END:
            if self._last_field == (data_type, ftype):
                return
            if fdata:
                self._page_data(data_type, fdata, now)
            self._sig_end(now)
        elif ftype is FieldType.HDLC_SIG_END:
            if self._last_field == (data_type, ftype):
                return
            self._burst.hdlc.clear()
            self._sig_end(now)

    def _page_data(self, data_type: T30Data, fdata: bytes, now: float) -> None:
        if data_type is T30Data.V21:
            return  # non-ECM data only comes with an image modem
        burst = self._ensure_carrier(data_type, now)
        burst.non_ecm = True
        if self._gap:
            self._data_lost(burst, now)
        burst.data_at = now
        burst.data_octets = len(fdata)
        burst.rate = _DATA_RATES.get(data_type, 0)
        burst.page += fdata.translate(_REVERSE)
        if len(burst.page) >= self.rx_batch:
            data = bytes(burst.page)
            burst.page.clear()
            self._handle(PageData(data), now)

    def _sig_end(self, now: float) -> None:
        """The signal ended (any kind of sig-end ends any carrier); as if ``no-signal`` came."""
        self._end_carrier(now)
        self._rx_indicator = T30Indicator.NO_SIGNAL


class UdptlLink:
    """A :class:`T38Terminal` behind UDPTL (T.38 Annex A): datagrams in and out, sans-I/O.

    Every method returns the datagrams to send now.  Received datagrams that do not parse are
    counted in :attr:`bad_datagrams`; packets the decoder gives up on are reported to the
    terminal (:meth:`T38Terminal.note_loss`).
    """

    def __init__(
        self,
        terminal: T38Terminal,
        *,
        encoder: UdptlEncoder | None = None,
        decoder: UdptlDecoder | None = None,
    ) -> None:
        self.terminal = terminal
        self.encoder = encoder or UdptlEncoder("redundancy", depth=3)
        self.decoder = decoder or UdptlDecoder()
        self.bad_datagrams = 0
        self._expect: int | None = None

    def wrap(self, packets: list[bytes]) -> list[bytes]:
        """Datagrams for IFP packets the terminal returned."""
        return [self.encoder.packet(p) for p in packets]

    def start(self, now: float) -> list[bytes]:
        return self.wrap(self.terminal.start(now))

    def datagram(self, data: bytes, now: float) -> list[bytes]:
        """Take one received datagram."""
        try:
            items = self.decoder.receive(data)
        except UdptlError:
            self.bad_datagrams += 1
            return self.wrap(self.terminal.poll(now))
        out: list[bytes] = []
        for item in items:
            if self._expect is not None and item.seq != self._expect:
                self.terminal.note_loss()
            self._expect = (item.seq + 1) & 0xFFFF
            out += self.terminal.receive_ifp(item.ifp, now)
        out += self.terminal.poll(now)
        return self.wrap(out)

    def poll(self, now: float) -> list[bytes]:
        return self.wrap(self.terminal.poll(now))

    def next_deadline(self) -> float | None:
        return self.terminal.next_deadline()

    def page_stored(self, page_no: int, now: float) -> list[bytes]:
        return self.wrap(self.terminal.page_stored(page_no, now))

    def hangup(self, now: float) -> list[bytes]:
        return self.wrap(self.terminal.hangup(now))

    @property
    def finished(self) -> bool:
        return self.terminal.finished
