"""The voicemail call flow: greeting, beep, recording, as a sans-I/O state machine.

What it does
------------
``VoicemailSession`` is one caller leaving one message. The call layer feeds it what happens on the
call and drains what it produces:

* ``tx(n)`` -> the next ``n`` samples to send: the greeting, a short pause, the beep, then silence
  (and, once the recording has ended by itself, the goodbye prompt when one was given);
  ``tx_active(n)`` is the same but returns None for silence;
* ``rx(pcm)``: the caller's decoded audio, in order. Ignored until the end of the beep, recorded
  from there on;
* ``digit(d)``: a DTMF key (RFC 4733, SIP INFO or in-band). A skip key (``*``) during the greeting
  jumps to the beep; an end key (``#``) while recording ends the message; every key is reported;
* ``hangup()``: the caller hung up (BYE). Call it after the last received audio was fed (the media
  endpoint flushes its jitter buffer when it closes);
* ``events()`` -> :class:`RecordingStarted`, :class:`RecordingFinished`,
  :class:`RecordingDiscarded`, :class:`HangupRequested`, :class:`DigitReceived`;
* ``take_recorded()`` -> the recorded samples that are final, to stream to a file. A recording that
  ends up discarded never hands out a sample, so nothing has to be deleted. ``has_output`` tells
  whether events or samples wait, so a shell can skip draining after most ``tx`` calls.

The recording ends on hang-up, on ``#``, after ``silence_timeout`` seconds below the silence
threshold, or at ``max_length``. The trailing silence that triggered the timeout and the last
``digit_trim`` seconds before ``#`` (its in-band tone: RFC 4733 events overtake the jitter-buffered
audio, in-band detection lags it) are not part of the message. A message shorter than
``min_length``, or without a single frame above the silence threshold, is discarded.

How it works
------------
Time is counted in samples, never read from a clock. Sent and received audio share one timeline
that starts when the call is answered: sample ``k`` of ``tx`` and sample ``k`` of ``rx`` are the same
instant (received audio arrives later than that, which only delays it). The recording therefore
starts at the received sample whose index equals the position where the beep ended in the sent
audio. The shell calls ``tx`` on its send schedule and ``rx`` as audio arrives, which keeps ``tx``
ahead of ``rx``. (Received audio that is already past the end of the beep when the beep ends is
not kept; the recording then starts at the received position.)

The states follow the flow, as an enum and a transition table (``_TRANSITIONS``)::

    GREETING --greeting played / skip key--> BEEP --beep played--> RECORDING
    RECORDING --end key / silence / max length / hang-up--> DONE --too short / no speech--> DISCARDED
    GREETING, BEEP --hang-up--> DISCARDED

Silence is detected per 20 ms frame on a grid anchored at the start of the recording: a frame is
speech when its mean-square level ``sum(x**2) / N`` reaches that of a sine at
``silence_threshold_dbm0`` (``A**2 / 2``). Each ``rx`` block computes the energies of all its
complete frames with one matrix product; one step per frame (not per sample) then updates the end
of the last speech frame and the length of the silent run after it. A partial frame waits for the
next block, so feeding any block sizes gives the same frames, events and samples.

Samples are kept back only as long as they may still be cut: until the recording is at least
``min_length`` long and contains speech, the trailing silence after the last speech frame (at most
``silence_timeout``), and the last ``digit_trim``. Everything before is handed out by
``take_recorded``, so the state is bounded by ``min_length + silence_timeout + digit_trim``.

If the caller's audio stops altogether (a stalled RTP stream), the send side still advances: when
``tx`` is more than ``RX_LAG_ALLOWANCE`` past where the silence timeout or the maximum length would
have fired, the recording ends with that reason.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ums.media.tones import dbm0_to_amplitude

from .prompts import RATE, beep

__all__ = [
    "RX_LAG_ALLOWANCE",
    "DigitReceived",
    "Event",
    "HangupRequested",
    "RecordingDiscarded",
    "RecordingFinished",
    "RecordingStarted",
    "State",
    "VoicemailSession",
    "VoicemailSettings",
]

log = logging.getLogger("ums.voicemail")

Pcm = npt.NDArray[np.int16]
FinishReason = Literal["hangup", "pound", "silence", "max-length"]
DiscardReason = Literal["too-short", "no-speech", "before-beep"]
DigitAction = Literal["skip-greeting", "end-recording", "ignored"]

#: Energy frame: 20 ms, the RTP packet time of RFC 3551 §4.5 (G.711 default ptime).
FRAME_S = 0.020
#: How far received audio may lag the sent audio (jitter buffer plus network) before a caller
#: whose audio has stopped is treated as silent.
RX_LAG_ALLOWANCE = 1.0
#: RFC 4733 §3.2 and ITU-T Q.23: the sixteen DTMF keys.
DTMF_KEYS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True)
class VoicemailSettings:
    """How a message is recorded (``[voicemail]`` in the configuration)."""

    #: A 20 ms frame below this level (dBm0, mean square as for a sine) is silence.
    silence_threshold_dbm0: float = -45.0
    #: Seconds of silence that end the recording; the silence is not kept.
    silence_timeout: float = 5.0
    #: Longest message in seconds.
    max_length: float = 180.0
    #: Shorter messages are hang-ups and are discarded.
    min_length: float = 2.0
    #: The record tone.
    beep_frequency: float = 1000.0
    beep_duration: float = 0.4
    beep_level_dbm0: float = -12.0
    #: Silence between the greeting and the beep.
    pause_before_beep: float = 0.2
    #: Received audio cut before an end key (its in-band tone and the key click).
    digit_trim: float = 0.2
    #: Keys that end the recording, and keys that skip the greeting.
    end_digits: str = "#"
    skip_digits: str = "*"
    rate: int = RATE

    def __post_init__(self) -> None:
        checks = (
            (self.rate > 0, "rate must be positive"),
            (self.silence_timeout > 0.0, "silence_timeout must be positive"),
            (self.max_length > 0.0, "max_length must be positive"),
            (0.0 <= self.min_length <= self.max_length, "min_length must be between 0 and max_length"),
            (self.beep_duration >= 0.0, "beep_duration must not be negative"),
            (0.0 < self.beep_frequency < self.rate / 2, "beep_frequency must be below rate / 2"),
            (self.pause_before_beep >= 0.0, "pause_before_beep must not be negative"),
            (self.digit_trim >= 0.0, "digit_trim must not be negative"),
            (set(self.end_digits) <= DTMF_KEYS, "end_digits must be DTMF keys"),
            (set(self.skip_digits) <= DTMF_KEYS, "skip_digits must be DTMF keys"),
        )
        for ok, problem in checks:
            if not ok:
                raise ValueError(problem)


class State(enum.Enum):
    GREETING = "greeting"
    BEEP = "beep"
    RECORDING = "recording"
    DONE = "done"
    DISCARDED = "discarded"


class _Input(enum.Enum):
    GREETING_PLAYED = enum.auto()
    SKIP_KEY = enum.auto()
    BEEP_PLAYED = enum.auto()
    END = enum.auto()  # end key, silence, max length or hang-up while recording
    HANGUP = enum.auto()
    REJECTED = enum.auto()  # too short or no speech


_TRANSITIONS: dict[tuple[State, _Input], State] = {
    (State.GREETING, _Input.GREETING_PLAYED): State.BEEP,
    (State.GREETING, _Input.SKIP_KEY): State.BEEP,
    (State.GREETING, _Input.HANGUP): State.DISCARDED,
    (State.BEEP, _Input.BEEP_PLAYED): State.RECORDING,
    (State.BEEP, _Input.HANGUP): State.DISCARDED,
    (State.RECORDING, _Input.END): State.DONE,
    (State.RECORDING, _Input.HANGUP): State.DONE,
    (State.DONE, _Input.REJECTED): State.DISCARDED,
}


@dataclass(frozen=True)
class RecordingStarted:
    """The beep has been sent; the recording starts at ``position`` (samples since answer)."""

    position: int


@dataclass(frozen=True)
class RecordingFinished:
    """The message is complete: ``samples`` were handed out by ``take_recorded`` in all."""

    reason: FinishReason
    samples: int
    duration: float


@dataclass(frozen=True)
class RecordingDiscarded:
    """No message: hung up before the beep, too short, or nothing above the silence threshold."""

    reason: DiscardReason
    samples: int = 0
    duration: float = 0.0


@dataclass(frozen=True)
class HangupRequested:
    """The recording ended by itself (and the goodbye, if any, has been sent): send BYE."""

    reason: FinishReason


@dataclass(frozen=True)
class DigitReceived:
    """A DTMF key and what it did."""

    digit: str
    action: DigitAction


Event = RecordingStarted | RecordingFinished | RecordingDiscarded | HangupRequested | DigitReceived


class _Segment(enum.Enum):
    GREETING = enum.auto()
    BEEP = enum.auto()
    GOODBYE = enum.auto()


class VoicemailSession:
    """One message: greeting -> beep -> recording. See the module docstring for the protocol.

    Parameters
    ----------
    greeting : int16 PCM at ``settings.rate`` (see :func:`ums.voicemail.prompts.select_greeting`).
    settings : thresholds, limits and the beep.
    goodbye : played after the recording ended by itself, before :class:`HangupRequested`;
        ``None`` requests the hang-up at once.
    """

    def __init__(
        self, greeting: Pcm, settings: VoicemailSettings | None = None, goodbye: Pcm | None = None
    ) -> None:
        s = settings if settings is not None else VoicemailSettings()
        self.settings = s
        rate = s.rate
        self._frame = max(1, round(FRAME_S * rate))
        self._threshold = dbm0_to_amplitude(s.silence_threshold_dbm0) ** 2 / 2.0
        self._timeout = max(1, round(s.silence_timeout * rate))
        self._max = max(1, round(s.max_length * rate))
        self._min = round(s.min_length * rate)
        self._trim = round(s.digit_trim * rate)
        self._lag = round(RX_LAG_ALLOWANCE * rate)
        self._goodbye = None if goodbye is None else np.asarray(goodbye, dtype=np.int16).reshape(-1)

        pause = np.zeros(round(s.pause_before_beep * rate), dtype=np.int16)
        greeting_pcm = np.asarray(greeting, dtype=np.int16).reshape(-1)
        self._script: deque[tuple[_Segment, Pcm]] = deque(
            [
                (_Segment.GREETING, np.concatenate([greeting_pcm, pause])),
                (_Segment.BEEP, beep(s.beep_frequency, s.beep_duration, s.beep_level_dbm0, rate)),
            ]
        )
        self._offset = 0  # samples of the first script segment already sent

        self.state = State.GREETING
        self._events: list[Event] = []
        self._tx_pos = 0
        self._rx_pos = 0
        # Recording, on the shared timeline (sample positions since answer).
        self._start = 0  # first recorded sample (set when the beep ends)
        self._end = 0  # end of the samples received into the recording so far
        self._held: deque[Pcm] = deque()  # samples [self._released, self._end)
        self._released = 0
        self._out: list[Pcm] = []
        self._rest = np.zeros(0, dtype=np.float64)  # samples of the frame not yet complete
        self._voice_end = 0  # end of the last speech frame (self._start: none yet)
        self._first_voice: int | None = None  # start of the first speech frame
        self._hangup_reason: FinishReason | None = None

    # -- inputs ----------------------------------------------------------------------------------
    def tx(self, n: int) -> Pcm:
        """The next ``n`` samples to send (always ``n``; silence when nothing is to be played)."""
        out = self.tx_active(n)
        return out if out is not None else np.zeros(n, dtype=np.int16)

    def tx_active(self, n: int) -> Pcm | None:
        """As :meth:`tx`, but None instead of ``n`` zeros when nothing is being played (most of a
        call: the recording), so the sender can use its encoded silence."""
        if not self._script:
            self._tx_pos += n
            self._check_stall()
            return None
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while self._script and (filled < n or len(self._script[0][1]) == self._offset):
            kind, pcm = self._script[0]
            take = min(n - filled, len(pcm) - self._offset)
            out[filled : filled + take] = pcm[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset == len(pcm):
                self._script.popleft()
                self._offset = 0
                self._segment_played(kind, self._tx_pos + filled)
        self._tx_pos += n
        self._check_stall()
        return out

    def rx(self, pcm: npt.ArrayLike) -> None:
        """The caller's audio, in order, as decoded int16 samples."""
        x = np.asarray(pcm, dtype=np.int16).reshape(-1)
        begin = self._rx_pos
        self._rx_pos += len(x)
        if self.state is not State.RECORDING or self._rx_pos <= self._end:
            return
        lo = max(begin, self._end)
        hi = min(self._rx_pos, self._start + self._max)
        if hi > lo:
            self._record(x[lo - begin : hi - begin], lo)
        if self.state is State.RECORDING and self._end >= self._start + self._max:
            self._finish("max-length", self._end)
        elif self.state is State.RECORDING:
            self._release()

    def digit(self, digit: str) -> None:
        """A DTMF key from any source (RFC 4733, SIP INFO, in-band)."""
        key = digit.strip().upper()
        action: DigitAction = "ignored"
        if key not in DTMF_KEYS:
            pass
        elif self.state is State.GREETING and key in self.settings.skip_digits:
            action = "skip-greeting"
        elif self.state is State.RECORDING and key in self.settings.end_digits:
            action = "end-recording"
        self._events.append(DigitReceived(key if key in DTMF_KEYS else digit, action))
        if action == "skip-greeting":
            self._skip_greeting()
        elif action == "end-recording":
            cut = min(max(self._rx_pos - self._trim, self._start), self._end)
            self._finish("pound", max(cut, self._released))

    def hangup(self) -> None:
        """The caller hung up (BYE received). Feed all received audio first."""
        if self.state in (State.GREETING, State.BEEP):
            self._script.clear()
            self._move(_Input.HANGUP)
            self._events.append(RecordingDiscarded("before-beep"))
        elif self.state is State.RECORDING:
            self._finish("hangup", self._end, partial_frame=True)
        else:
            self._script.clear()  # stop a goodbye still playing; no HangupRequested any more
            self._hangup_reason = None

    # -- outputs ---------------------------------------------------------------------------------
    def events(self) -> list[Event]:
        """Events since the last call (drained)."""
        out, self._events = self._events, []
        return out

    def take_recorded(self) -> Pcm:
        """Recorded samples that are final, since the last call (possibly none)."""
        if not self._out:
            return np.zeros(0, dtype=np.int16)
        out = self._out[0] if len(self._out) == 1 else np.concatenate(self._out)
        self._out = []
        return out

    @property
    def has_output(self) -> bool:
        """Events or recorded samples are waiting (``events`` / ``take_recorded`` have work)."""
        return bool(self._events or self._out)

    @property
    def finished(self) -> bool:
        """The recording's fate is decided (DONE or DISCARDED)."""
        return self.state in (State.DONE, State.DISCARDED)

    @property
    def recording_start(self) -> int | None:
        """Position (samples since answer) where recording starts, once the beep has been sent."""
        return self._start if self.state not in (State.GREETING, State.BEEP) else None

    @property
    def held_samples(self) -> int:
        """Samples received into the recording but not yet final (bounded, see module docstring)."""
        return self._end - self._released

    # -- internals -------------------------------------------------------------------------------
    def _move(self, what: _Input) -> None:
        new = _TRANSITIONS.get((self.state, what))
        if new is None:
            raise AssertionError(f"no transition from {self.state} on {what}")
        log.debug("voicemail %s -> %s (%s)", self.state.value, new.value, what.name)
        self.state = new

    def _segment_played(self, kind: _Segment, position: int) -> None:
        if kind is _Segment.GREETING:
            self._move(_Input.GREETING_PLAYED)
        elif kind is _Segment.BEEP:
            self._move(_Input.BEEP_PLAYED)
            # Received audio already past the end of the beep (not the usual order) was not kept.
            start = max(position, self._rx_pos)
            self._start = self._end = self._released = self._voice_end = start
            self._events.append(RecordingStarted(start))
        elif self._hangup_reason is not None:
            self._events.append(HangupRequested(self._hangup_reason))
            self._hangup_reason = None

    def _skip_greeting(self) -> None:
        if self._script and self._script[0][0] is _Segment.GREETING:
            self._script.popleft()
            self._offset = 0
        self._move(_Input.SKIP_KEY)

    def _check_stall(self) -> None:
        """End the recording from the send side when the caller's audio has stopped."""
        if self.state is not State.RECORDING:
            return
        if self._tx_pos >= self._voice_end + self._timeout + self._lag:
            self._finish("silence", max(self._voice_end, self._released))
        elif self._tx_pos >= self._start + self._max + self._lag:
            self._finish("max-length", self._end)

    def _record(self, seg: Pcm, position: int) -> None:
        """Append ``seg`` (starting at ``position == self._end``) and run the silence detector."""
        f = self._frame
        x = seg.astype(np.float64)
        if len(self._rest):
            x = np.concatenate([self._rest, x])
        count = len(x) // f
        if count:
            frames = x[: count * f].reshape(count, f)
            voiced = (np.einsum("ij,ij->i", frames, frames) >= self._threshold * f).tolist()
            frame_end = position - len(self._rest)
            for speech in voiced:  # one step per 20 ms frame
                frame_end += f
                if speech:
                    if self._first_voice is None:
                        self._first_voice = frame_end - f
                    self._voice_end = frame_end
                elif frame_end - self._voice_end >= self._timeout:
                    self._append(seg[: frame_end - position])
                    self._finish("silence", max(self._voice_end, self._released))
                    return
        self._rest = x[count * f :]
        self._append(seg)

    def _append(self, seg: Pcm) -> None:
        if len(seg):
            self._held.append(seg.copy())  # the caller may reuse its buffer
            self._end += len(seg)

    def _release(self) -> None:
        """Hand out what can no longer be cut (see the module docstring)."""
        if self._first_voice is None:
            return
        upto = min(self._voice_end, self._rx_pos - self._trim, self._end)
        if upto - self._start < self._min or upto <= self._first_voice:
            return
        self._release_to(upto)

    def _release_to(self, upto: int) -> None:
        need = upto - self._released
        while need > 0:
            chunk = self._held.popleft()
            if len(chunk) > need:
                self._held.appendleft(chunk[need:])
                chunk = chunk[:need]
            self._out.append(chunk)
            need -= len(chunk)
            self._released += len(chunk)

    def _finish(self, reason: FinishReason, cut: int, partial_frame: bool = False) -> None:
        if partial_frame and self._first_voice is None and len(self._rest):
            if float(np.mean(self._rest**2)) >= self._threshold:
                self._first_voice = self._end - len(self._rest)
        self._move(_Input.HANGUP if reason == "hangup" else _Input.END)
        length = cut - self._start
        discard: DiscardReason | None = None
        if self._first_voice is None or self._first_voice >= cut:
            discard = "no-speech"
        elif length < self._min:
            discard = "too-short"
        if discard is None:
            self._release_to(cut)
            self._events.append(RecordingFinished(reason, length, length / self.settings.rate))
        else:
            if self._released != self._start:  # the release rule makes this impossible
                raise AssertionError("samples of a discarded recording were handed out")
            self._move(_Input.REJECTED)
            self._events.append(RecordingDiscarded(discard, length, length / self.settings.rate))
        self._held.clear()
        self._rest = np.zeros(0, dtype=np.float64)
        if reason != "hangup":
            if self._goodbye is not None and len(self._goodbye):
                self._script = deque([(_Segment.GOODBYE, self._goodbye)])
                self._offset = 0
                self._hangup_reason = reason
            else:
                self._events.append(HangupRequested(reason))
