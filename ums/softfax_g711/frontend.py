"""Receive front end of a fax terminal: V.21 alone, or an image modem and V.21 at once.

What it does
------------
T.30 has the receiving side listen either for V.21 channel 2 only (phase B, post-page responses),
or for an image modem *and* V.21 together: after CFR or MCF the next signal is image data, but a
transmitter that missed the response repeats its command on V.21 (T.30 Figure 5-2).
:class:`ModemFrontEnd` feeds the samples to both receivers and decides which signal started:

* the image modem (``"fast"``) when its receiver reports ``TRAINING_SUCCEEDED``;
* V.21 (``"v21"``) when HDLC framing is established (``framing_ok_flags`` flags back to back), not
  on mere V.21 carrier, since image-modem signals put energy in the V.21 band.

From the decision on only the winner is fed, until its carrier goes down; then both listen again.
The output is a time-ordered list of items: :class:`Started`, :class:`FastBits` (image-modem data
bits), :class:`V21Frame` (an HDLC frame received on V.21), :class:`Ended` and
:class:`TrainingFailed` (an image-modem signal whose training failed, or a carrier of at least
:attr:`ModemFrontEnd.UNTRAINED_MIN` samples that never trained, with no V.21 framing in it: reported
when it ends, or :attr:`ModemFrontEnd.FAILED_HOLD` samples after a failure if it goes on).
:meth:`ModemFrontEnd.fillin` stands for lost packets.

How it works
------------
Samples are processed in pieces of at most :attr:`ModemFrontEnd.CHUNK` (20 ms), so a decision
takes effect within 20 ms whatever block size the caller uses.  The receivers are single-channel
banks (:class:`~.v21.FskRx`, :class:`~.v17.V17Rx`, :class:`~.v29.V29Rx`,
:class:`~.v27ter.V27terRx`), one per modem kept for the whole call so that a V.17 short train
reuses the equaliser of the last long train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from .common import Bits, RxOutput, Status
from .hdlc import HdlcDecoder, HdlcEventKind
from .v17 import V17Rx
from .v21 import FskRx
from .v27ter import V27terRx
from .v29 import V29Rx

__all__ = [
    "Ended",
    "FastBits",
    "FastModem",
    "FrontEndItem",
    "FrontEndOutput",
    "ListenMode",
    "ModemFrontEnd",
    "Source",
    "Started",
    "TrainingFailed",
    "V21Frame",
]

Source = Literal["v21", "fast"]
FastModem = Literal["v17", "v29", "v27ter"]

_EMPTY_BITS: Bits = np.zeros(0, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Started:
    """``source`` started: V.21 HDLC framing established, or the image modem trained.
    ``sample`` counts samples given to the front end (the end of the 20 ms piece)."""

    source: Source
    sample: int


@dataclass(frozen=True, slots=True)
class Ended:
    """The carrier of the started ``source`` went down."""

    source: Source
    sample: int


@dataclass(frozen=True, slots=True)
class TrainingFailed:
    """An image-modem signal whose training failed and which carried no V.21 framing.  Reported
    when it ends (``ongoing`` false), or while it goes on (``ongoing``: an :class:`Ended` follows)."""

    sample: int
    ongoing: bool = False


@dataclass(frozen=True, slots=True)
class FastBits:
    """Image-modem data bits (descrambled, after training), in order."""

    bits: Bits
    sample: int


@dataclass(frozen=True, slots=True)
class V21Frame:
    """An HDLC frame received on V.21 channel 2, without flags and FCS."""

    data: bytes
    crc_ok: bool
    sample: int


FrontEndItem = Started | Ended | TrainingFailed | FastBits | V21Frame


@dataclass(slots=True)
class FrontEndOutput:
    """What one call produced, in time order."""

    items: list[FrontEndItem] = field(default_factory=list)

    @property
    def started(self) -> Source | None:
        """The first source that started in this call, if any."""
        for it in self.items:
            if isinstance(it, Started):
                return it.source
        return None

    @property
    def bits(self) -> Bits:
        """All image-modem data bits of this call."""
        parts = [it.bits for it in self.items if isinstance(it, FastBits)]
        return np.concatenate(parts) if parts else _EMPTY_BITS.copy()

    @property
    def frames(self) -> list[V21Frame]:
        """The V.21 frames of this call."""
        return [it for it in self.items if isinstance(it, V21Frame)]


@dataclass(frozen=True, slots=True)
class ListenMode:
    """What to listen for: V.21 only (``modem`` None), or ``modem`` at ``rate`` and V.21."""

    modem: FastModem | None = None
    rate: int = 0
    short_train: bool = False


class ModemFrontEnd:
    """V.21 and image-modem receivers for one call, with the decision between them.

    ``listen()`` sets the mode (:class:`ListenMode` fields); ``receive(samples)`` returns a
    :class:`FrontEndOutput`; ``fillin(n)`` stands for ``n`` lost samples; ``reset()`` forgets the
    signals in progress (after the terminal's own transmission, say).  A mode set while a V.21 burst
    is being received takes effect when the burst ends.
    """

    #: Largest piece of samples processed before the decision is looked at again (20 ms).
    CHUNK = 160
    #: A failed training is reported after this many samples if the signal goes on (1 s).
    FAILED_HOLD = 8000
    #: An image-modem carrier this long (in samples, 0.5 s) that never trained counts as a failed
    #: training when it ends.
    UNTRAINED_MIN = 4000

    def __init__(
        self,
        *,
        v21_cutoff_dbm0: float = -45.5,
        fast_cutoff_dbm0: float = -45.5,
        framing_ok_flags: int = 5,
    ) -> None:
        self.v21_cutoff_dbm0 = v21_cutoff_dbm0
        self.fast_cutoff_dbm0 = fast_cutoff_dbm0
        self._v21 = FskRx(2, cutoff_dbm0=v21_cutoff_dbm0)
        self._hdlc = HdlcDecoder(framing_ok_flags=framing_ok_flags)
        self._rx: dict[str, V17Rx | V29Rx | V27terRx] = {}
        self._mode = ListenMode()
        self._next_mode: ListenMode | None = None
        self._active: Source | None = None
        self._fast_failed_at: int | None = None  # sample of an unreported training failure
        self._fast_up_at: int | None = None  # receiver's sample of the image-modem carrier-up
        self._samples = 0

    # -- control --------------------------------------------------------------------------------

    @property
    def mode(self) -> ListenMode:
        """The mode in force (a mode set during a V.21 burst is not in force yet)."""
        return self._mode

    @property
    def active(self) -> Source | None:
        """The source being received, None while listening for both."""
        return self._active

    @property
    def samples(self) -> int:
        """Samples received so far (lost ones from :meth:`fillin` included)."""
        return self._samples

    #: True when the items come later, through ``on_items`` (a :class:`~.pool.PooledFrontEnd`).
    deferred = False

    def idle(self, n: int) -> None:
        """``n`` samples during which nothing is listened to (the terminal is transmitting)."""

    def close(self) -> None:
        """The call is over: give back shared resources (none here)."""

    def listen(self, modem: FastModem | None = None, rate: int = 0, short_train: bool = False) -> None:
        """Listen for V.21 only (``modem`` None) or for ``modem`` at ``rate`` and V.21 together."""
        if modem is not None and modem not in ("v17", "v29", "v27ter"):
            raise ValueError(f"unknown image modem {modem!r}")
        mode = ListenMode(modem, rate if modem else 0, bool(short_train) and modem == "v17")
        if self._active == "v21":
            self._next_mode = mode
            return
        if self._active == "fast":
            same = mode.modem == self._mode.modem and mode.rate == self._mode.rate
            if same:
                self._next_mode = mode
                return
            self._active = None
        self._apply(mode)

    def reset(self) -> None:
        """Forget any signal in progress and listen afresh in the current mode."""
        self._active = None
        self._reset_v21()
        mode = self._next_mode or self._mode
        self._apply(mode)

    def _apply(self, mode: ListenMode) -> None:
        self._mode = mode
        self._next_mode = None
        self._fast_failed_at = None
        self._fast_up_at = None
        if mode.modem is None:
            return
        self._restart_fast(mode)

    def _restart_fast(self, mode: ListenMode) -> None:
        """Make the image-modem receiver of ``mode`` listen afresh."""
        assert mode.modem is not None
        rx = self._rx.get(mode.modem)
        if rx is None:
            if mode.modem == "v17":
                rx = V17Rx(mode.rate, cutoff_dbm0=self.fast_cutoff_dbm0)
            elif mode.modem == "v29":
                rx = V29Rx(mode.rate, cutoff_dbm0=self.fast_cutoff_dbm0)
            else:
                rx = V27terRx(mode.rate, cutoff_dbm0=self.fast_cutoff_dbm0)
            self._rx[mode.modem] = rx
        if isinstance(rx, V17Rx):
            rx.restart(mode.rate, mode.short_train)
        else:
            rx.restart(mode.rate)

    def _fast_rx(self) -> V17Rx | V29Rx | V27terRx | None:
        return self._rx.get(self._mode.modem) if self._mode.modem else None

    # -- samples ----------------------------------------------------------------------------------

    def receive(self, samples: npt.ArrayLike) -> FrontEndOutput:
        """Process int16 samples (any number)."""
        x = np.asarray(samples).ravel()
        out = FrontEndOutput()
        for start in range(0, x.size, self.CHUNK):
            self._piece(x[start : start + self.CHUNK], out.items, lost=False)
        return out

    def fillin(self, n: int) -> FrontEndOutput:
        """``n`` samples were lost (packet loss).  A receiver with ``fillin`` (V.29) keeps its clocks
        turning through the gap; the others are not fed at all.  Leaving the gap out keeps carrier
        and symbol clock in phase when ``n`` is a multiple of 80 (10 ms holds whole symbols and
        carrier cycles of every modem here), whereas silence would drop the carrier and lose the
        rest of the burst."""
        out = FrontEndOutput()
        zeros = np.zeros(self.CHUNK, dtype=np.int16)
        for start in range(0, n, self.CHUNK):
            self._piece(zeros[: min(self.CHUNK, n - start)], out.items, lost=True)
        return out

    def _piece(self, x: npt.NDArray[np.int16], items: list[FrontEndItem], *, lost: bool) -> None:
        need_fast, need_v21 = self._needs()
        fast_out: RxOutput | None = None
        if need_fast:
            rx = self._fast_rx()
            if rx is not None and not lost:
                fast_out = rx.receive(x)
            elif isinstance(rx, V29Rx):
                fast_out = rx.fillin(x.size)
        v21_out = self._v21.receive(x) if need_v21 and not lost else None
        self._absorb(x.size, fast_out, v21_out, items)

    def _needs(self) -> tuple[bool, bool]:
        """Which receivers the next piece is for: (image modem, V.21)."""
        if self._active == "fast":
            return True, False
        if self._active == "v21":
            return False, True
        return self._mode.modem is not None, True

    def _reset_v21(self) -> None:
        self._v21.reset()
        self._hdlc.reset()

    def _absorb(
        self, n: int, fast_out: RxOutput | None, v21_out: RxOutput | None, items: list[FrontEndItem]
    ) -> None:
        """Take the receivers' output for the next ``n`` samples (None: that receiver was not fed)."""
        self._samples += n
        if self._active == "fast":
            if fast_out is not None:
                self._fast_items(fast_out, items)
        elif self._active == "v21":
            if v21_out is not None:
                self._v21_items(v21_out, items)
        else:
            fast: list[FrontEndItem] = []
            if fast_out is not None:
                self._fast_items(fast_out, fast)
            if self._active == "fast":
                # The image modem won: V.21 starts afresh when it ends.
                items.extend(fast)
                self._reset_v21()
                return
            if v21_out is not None:
                self._v21_items(v21_out, items)
            if self._active == "v21":
                self._fast_failed_at = None
                self._fast_up_at = None
                return
            items.extend(fast)

    def _fast_items(self, o: RxOutput, items: list[FrontEndItem]) -> None:
        decided = self._active == "fast"
        pos = 0
        for ev in o.events:
            if decided and ev.bit_index > pos:
                items.append(FastBits(o.bits[pos : ev.bit_index], self._samples))
            pos = max(pos, ev.bit_index)
            st = ev.status
            if st is Status.TRAINING_SUCCEEDED and not decided:
                decided = True
                self._active = "fast"
                self._fast_failed_at = None
                items.append(Started("fast", self._samples))
            elif st is Status.TRAINING_FAILED and not decided:
                self._fast_failed_at = self._samples
            elif st is Status.CARRIER_DOWN:
                up_at, self._fast_up_at = self._fast_up_at, None
                if decided:
                    items.append(Ended("fast", self._samples))
                    decided = False
                    self._active = None
                    self._end_fast()
                elif self._fast_failed_at is not None or (
                    up_at is not None and ev.sample - up_at >= self.UNTRAINED_MIN
                ):
                    # Training failed, or a long signal never began to train (a receiver may drop
                    # a false start silently).
                    items.append(TrainingFailed(self._samples, ongoing=False))
                    self._fast_failed_at = None
                return
            elif st is Status.CARRIER_UP and not decided:
                self._fast_failed_at = None
                self._fast_up_at = ev.sample
        if decided and o.bits.size > pos:
            items.append(FastBits(o.bits[pos:], self._samples))
        if (
            not decided
            and self._fast_failed_at is not None
            and self._samples - self._fast_failed_at >= self.FAILED_HOLD
        ):
            # A long signal that failed to train: it is no V.21 burst, report it now.
            items.append(TrainingFailed(self._samples, ongoing=True))
            self._fast_failed_at = None
            self._active = "fast"

    def _end_fast(self) -> None:
        """The image-modem signal is over: V.21 afresh, the next mode if one was set."""
        self._reset_v21()
        self._apply(self._next_mode or self._mode)

    def _v21_items(self, o: RxOutput, items: list[FrontEndItem]) -> None:
        pos = 0
        for ev in o.events:
            if ev.bit_index > pos:
                self._hdlc_bits(o.bits[pos : ev.bit_index], items)
                pos = ev.bit_index
            if ev.status is Status.CARRIER_UP:
                self._hdlc.reset()
            elif ev.status is Status.CARRIER_DOWN:
                self._hdlc.reset()
                if self._active == "v21":
                    items.append(Ended("v21", self._samples))
                    self._active = None
                    self._apply(self._next_mode or self._mode)
        if o.bits.size > pos:
            self._hdlc_bits(o.bits[pos:], items)

    def _hdlc_bits(self, bits: Bits, items: list[FrontEndItem]) -> None:
        for ev in self._hdlc.put_bits(bits):
            if ev.kind is HdlcEventKind.FRAMING_OK:
                if self._active is None:
                    self._active = "v21"
                    items.append(Started("v21", self._samples))
            elif ev.kind is HdlcEventKind.FRAME and self._active == "v21":
                items.append(V21Frame(ev.data, ev.crc_ok, self._samples))
