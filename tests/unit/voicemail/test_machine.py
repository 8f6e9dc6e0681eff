"""The voicemail call flow, run whole in memory: greeting, beep, recording, its ends and trims."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from ums.media.tones import DtmfDetector, Goertzel, dbm0_to_amplitude, dtmf_freqs, tone
from ums.voicemail import prompts
from ums.voicemail.machine import (
    DigitReceived,
    Event,
    HangupRequested,
    RecordingDiscarded,
    RecordingFinished,
    RecordingStarted,
    State,
    VoicemailSession,
    VoicemailSettings,
)

Pcm = npt.NDArray[np.int16]
RATE = 8000
FRAME = 160
GREETING = (0.4 * np.sin(2 * np.pi * 300 * np.arange(8000) / RATE) * 8000).astype(np.int16)  # 1 s
SETTINGS = VoicemailSettings()
PAUSE = round(SETTINGS.pause_before_beep * RATE)
BEEP = prompts.beep(SETTINGS.beep_frequency, SETTINGS.beep_duration, SETTINGS.beep_level_dbm0)
START = len(GREETING) + PAUSE + len(BEEP)  # where the recording starts: 1.6 s
THRESHOLD = dbm0_to_amplitude(SETTINGS.silence_threshold_dbm0) ** 2 / 2.0


def noise(n: int, rms: float, seed: int) -> Pcm:
    return np.clip(np.rint(np.random.default_rng(seed).normal(0.0, rms, n)), -32768, 32767).astype(np.int16)


def speechlike(seconds: float, seed: int) -> Pcm:
    """Noise "syllables" of 80-300 ms at about -20 dBm0, 40-250 ms apart, over a quiet line."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    x = rng.normal(0.0, 4.0, n)
    pos = 0
    while pos < n:
        length = int(rng.integers(640, 2400))
        seg = rng.normal(0.0, 2300.0, length) * np.hanning(length)
        seg = np.convolve(seg, np.ones(4) / 4, mode="same")  # a little low-pass
        x[pos : pos + length] += seg[: n - pos]
        pos += length + int(rng.integers(320, 2000))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def quiet(seconds: float, seed: int = 99) -> Pcm:
    return noise(round(seconds * RATE), 4.0, seed)  # about -78 dBm0: line noise


def voice_end(x: Pcm, start: int, stop: int) -> int:
    """Reference: end of the last 20 ms frame (grid from ``start``) at or above the threshold."""
    last = start
    for a in range(start, stop - FRAME + 1, FRAME):
        f = x[a : a + FRAME].astype(np.float64)
        if np.mean(f**2) >= THRESHOLD:
            last = a + FRAME
    return last


@dataclass
class Run:
    tx: Pcm
    recorded: Pcm
    events: list[Event]
    max_held: int
    state: State
    hangups: list[int] = field(default_factory=list)  # tx positions where HangupRequested came out


def drive(
    vm: VoicemailSession,
    rx: Pcm,
    *,
    digits: dict[int, str] | None = None,
    hangup_at: int | None = None,
    rx_size: Callable[[], int] = lambda: FRAME,
    tx_size: Callable[[], int] = lambda: FRAME,
    lazy_tx: bool = False,
    tail: int = 3 * RATE,
) -> Run:
    """Feed ``rx`` as the caller's audio (position 0 = answer), keeping the send side ahead of it.

    ``digits`` are delivered once ``rx`` has been fed up to their position; ``hangup_at`` ends the
    call there. With ``lazy_tx`` the send side is only run until the recording starts (received
    audio then comes in blocks far ahead of it), and catches up at the end.
    """
    digits = dict(digits or {})
    end = len(rx) if hangup_at is None else hangup_at
    tx_parts: list[Pcm] = []
    recorded: list[Pcm] = []
    events: list[Event] = []
    hangups: list[int] = []
    state = {"tx": 0, "held": 0}

    def collect() -> None:
        recorded.append(vm.take_recorded())
        for e in vm.events():
            events.append(e)
            if isinstance(e, HangupRequested):
                hangups.append(state["tx"])
        state["held"] = max(state["held"], vm.held_samples)

    def send(upto: int) -> None:
        while state["tx"] < upto:
            k = tx_size()
            tx_parts.append(vm.tx(k))
            state["tx"] += k
            collect()
            if lazy_tx and vm.recording_start is not None:
                return

    pos = 0
    while pos < end:
        stops = [p for p in digits if p > pos] + [end]
        target = min(pos + max(1, rx_size()), *stops)
        if not (lazy_tx and vm.recording_start is not None):
            send(target)
        vm.rx(rx[pos:target])
        pos = target
        collect()
        if pos in digits:
            vm.digit(digits.pop(pos))
            collect()
    if hangup_at is not None:
        vm.hangup()
        collect()
    send(end + tail)
    return Run(np.concatenate(tx_parts), np.concatenate(recorded), events, state["held"], vm.state, hangups)


def kinds(events: list[Event]) -> list[type]:
    return [type(e) for e in events]


# -- the prompt side --------------------------------------------------------------------------------


def test_greeting_then_beep_then_silence() -> None:
    s = VoicemailSession(GREETING)
    run = drive(s, quiet(3.0), hangup_at=round(2.5 * RATE), tail=0)
    tx = run.tx
    assert np.array_equal(tx[: len(GREETING)], GREETING)
    assert not tx[len(GREETING) : len(GREETING) + PAUSE].any()
    beep_tx = tx[len(GREETING) + PAUSE : START]
    assert np.array_equal(beep_tx, BEEP)
    assert not tx[START:].any()
    # the beep, measured on what was sent: 1000 Hz at -12 dBm0
    bank = Goertzel([425.0, 1000.0, 1400.0, 2000.0], window=len(beep_tx))
    powers, _ = bank.process(beep_tx)
    assert int(np.argmax(powers[0])) == 1
    level = 10 * np.log10(powers[0][1] / (dbm0_to_amplitude(-12.0) ** 2 / 2.0))
    assert level == pytest.approx(0.0, abs=0.2)
    assert run.events[0] == RecordingStarted(START)


def test_tx_blocks_may_straddle_segments() -> None:
    a = VoicemailSession(GREETING)
    one = a.tx(START + 500)
    b = VoicemailSession(GREETING)
    sizes = np.random.default_rng(1).integers(1, 700, 100)
    parts = []
    total = 0
    for k in sizes:
        parts.append(b.tx(int(k)))
        total += int(k)
        if total >= START + 500:
            break
    assert np.array_equal(np.concatenate(parts)[: START + 500], one)
    assert a.events() == b.events() == [RecordingStarted(START)]
    assert a.state is b.state is State.RECORDING


def test_empty_greeting_and_no_beep() -> None:
    s = VoicemailSession(
        np.zeros(0, dtype=np.int16), VoicemailSettings(beep_duration=0.0, pause_before_beep=0)
    )
    assert s.state is State.GREETING
    assert not s.tx(0).size
    assert s.state.value == "recording"
    assert s.events() == [RecordingStarted(0)]


# -- recording ----------------------------------------------------------------------------------------


def test_speech_recorded_exactly_until_hangup() -> None:
    speech = np.concatenate([prompts.default_goodbye(), prompts.default_greeting()])  # real speech
    rx = np.concatenate([noise(START, 3000.0, 5), speech, quiet(0.5)])  # loud talk during the greeting
    s = VoicemailSession(GREETING)
    run = drive(s, rx, hangup_at=len(rx))
    assert np.array_equal(run.recorded, rx[START:])
    n = len(rx) - START
    assert run.events == [RecordingStarted(START), RecordingFinished("hangup", n, n / RATE)]
    assert run.state is State.DONE
    assert not run.tx[START:].any()  # no goodbye and no hang-up request: the caller hung up


def test_pound_ends_and_its_tone_is_trimmed() -> None:
    speech = speechlike(4.0, 2)
    key, _ = tone(dtmf_freqs("#"), 0.12, -8.0)
    rx = np.concatenate([quiet(START / RATE), speech, key, quiet(1.0)])
    tone_at = START + len(speech)
    digit_at = tone_at + 400  # the RFC 4733 event comes 50 ms after the tone's audio
    s = VoicemailSession(GREETING)
    run = drive(s, rx, digits={digit_at: "#"})
    cut = digit_at - round(SETTINGS.digit_trim * RATE)
    assert np.array_equal(run.recorded, rx[START:cut])
    assert cut < tone_at
    n = cut - START
    assert run.events == [
        RecordingStarted(START),
        DigitReceived("#", "end-recording"),
        RecordingFinished("pound", n, n / RATE),
        HangupRequested("pound"),
    ]
    # the key is in what was received, not in what was recorded
    assert DtmfDetector().process(rx[START:]) == ["#"]
    assert DtmfDetector().process(run.recorded) == []


def test_silence_timeout_ends_and_silence_is_trimmed() -> None:
    speech = speechlike(6.0, 3)
    rx = np.concatenate([quiet(START / RATE), speech, quiet(8.0)])
    s = VoicemailSession(GREETING)
    run = drive(s, rx)
    end = voice_end(rx, START, len(rx))
    assert START + len(speech) - round(0.3 * RATE) < end <= START + len(speech) + FRAME  # speech ends
    assert np.array_equal(run.recorded, rx[START:end])
    n = end - START
    assert run.events == [
        RecordingStarted(START),
        RecordingFinished("silence", n, n / RATE),
        HangupRequested("silence"),
    ]
    # decided after exactly silence_timeout of silence (on the frame grid)
    assert run.hangups[0] - (end + 5 * RATE) < 2 * FRAME


def test_pauses_shorter_than_the_timeout_are_kept() -> None:
    part = speechlike(2.0, 4)
    rx = np.concatenate([quiet(START / RATE), part, quiet(4.5), part, quiet(0.3)])
    run = drive(VoicemailSession(GREETING), rx, hangup_at=len(rx))
    assert np.array_equal(run.recorded, rx[START:])
    assert isinstance(run.events[-1], RecordingFinished) and run.events[-1].reason == "hangup"


def test_max_length_ends() -> None:
    settings = VoicemailSettings(max_length=3.0, min_length=1.0)
    rx = np.concatenate([quiet(START / RATE), noise(6 * RATE, 1500.0, 6)])
    run = drive(VoicemailSession(GREETING, settings), rx)
    assert np.array_equal(run.recorded, rx[START : START + 3 * RATE])
    assert run.events == [
        RecordingStarted(START),
        RecordingFinished("max-length", 3 * RATE, 3.0),
        HangupRequested("max-length"),
    ]


def test_short_hangup_is_discarded_and_nothing_handed_out() -> None:
    rx = np.concatenate([quiet(START / RATE), speechlike(1.0, 7)])
    run = drive(VoicemailSession(GREETING), rx, hangup_at=len(rx))
    assert len(run.recorded) == 0
    assert run.events == [RecordingStarted(START), RecordingDiscarded("too-short", RATE, 1.0)]
    assert run.state is State.DISCARDED
    assert run.hangups == []


def test_silent_caller_is_discarded_after_the_timeout() -> None:
    rx = quiet(START / RATE + 8.0)
    run = drive(VoicemailSession(GREETING), rx)
    assert len(run.recorded) == 0
    assert kinds(run.events) == [RecordingStarted, RecordingDiscarded, HangupRequested]
    discarded = run.events[1]
    assert isinstance(discarded, RecordingDiscarded) and discarded.reason == "no-speech"
    assert run.events[2] == HangupRequested("silence")


def test_hangup_before_the_beep() -> None:
    run = drive(VoicemailSession(GREETING), quiet(1.0), hangup_at=RATE)
    assert run.events == [RecordingDiscarded("before-beep")]
    assert run.state is State.DISCARDED
    assert not run.tx[RATE + FRAME :].any()  # the rest of the greeting and the beep are not played


# -- digits ---------------------------------------------------------------------------------------------


def test_star_skips_the_greeting() -> None:
    rx = np.concatenate([quiet(0.1), speechlike(3.0, 8)])
    s = VoicemailSession(GREETING)
    run = drive(s, rx, digits={800: "*"}, hangup_at=len(rx))
    start = 800 + len(BEEP)  # the send side was at 800 samples when the key came
    assert np.array_equal(run.tx[:800], GREETING[:800])
    assert np.array_equal(run.tx[800:start], BEEP)
    assert run.events[:2] == [DigitReceived("*", "skip-greeting"), RecordingStarted(start)]
    assert np.array_equal(run.recorded, rx[start:])


def test_other_digits_are_reported_and_ignored() -> None:
    rx = np.concatenate([quiet(START / RATE), speechlike(3.0, 9)])
    digits = {400: "5", 2000: "#", START + 4000: "*", START + 8000: "1"}
    run = drive(VoicemailSession(GREETING), rx, digits=digits, hangup_at=len(rx))
    assert run.events[:2] == [DigitReceived("5", "ignored"), DigitReceived("#", "ignored")]
    assert run.events[2] == RecordingStarted(START)  # the greeting played in full
    assert run.events[3:5] == [DigitReceived("*", "ignored"), DigitReceived("1", "ignored")]
    assert isinstance(run.events[5], RecordingFinished)
    assert np.array_equal(run.recorded, rx[START:])


def test_odd_digit_strings() -> None:
    vm = VoicemailSession(GREETING)
    for d in ("", "*#", "x", " 5 "):
        vm.digit(d)
    vm.digit("a")  # RFC 4733 events 12-15 are A-D; lower case from SIP INFO bodies
    assert vm.events() == [
        DigitReceived("", "ignored"),
        DigitReceived("*#", "ignored"),
        DigitReceived("x", "ignored"),
        DigitReceived("5", "ignored"),
        DigitReceived("A", "ignored"),
    ]
    assert vm.state is State.GREETING
    vm.digit(" * ")
    assert vm.events() == [DigitReceived("*", "skip-greeting")]


def test_reused_input_buffer() -> None:
    rx = np.concatenate([quiet(START / RATE), speechlike(3.0, 17)])
    vm = VoicemailSession(GREETING)
    vm.tx(START)
    buf = np.zeros(FRAME, dtype=np.int16)
    for pos in range(0, len(rx), FRAME):
        buf[:] = rx[pos : pos + FRAME]
        vm.rx(buf)
    vm.hangup()
    assert np.array_equal(vm.take_recorded(), rx[START:])


def test_goodbye_is_played_before_the_hangup_request() -> None:
    goodbye = np.full(1280, 1234, dtype=np.int16)
    rx = np.concatenate([quiet(START / RATE), speechlike(3.0, 10), quiet(1.0)])
    digit_at = START + 3 * RATE
    run = drive(VoicemailSession(GREETING, goodbye=goodbye), rx, digits={digit_at: "#"})
    assert np.array_equal(run.tx[digit_at : digit_at + 1280], goodbye)
    assert not run.tx[digit_at + 1280 :].any()
    assert run.hangups == [digit_at + 1280]  # after the last goodbye sample was sent
    assert kinds(run.events)[-2:] == [RecordingFinished, HangupRequested]


def test_caller_hangup_during_goodbye_cancels_the_request() -> None:
    s = VoicemailSession(GREETING, goodbye=np.full(4000, 5, dtype=np.int16))
    s.tx(START)
    s.rx(np.concatenate([quiet(START / RATE), speechlike(3.0, 11)]))
    s.digit("#")
    s.tx(1000)
    s.hangup()
    assert not s.tx(5000).any()
    assert [type(e) for e in s.events()] == [RecordingStarted, DigitReceived, RecordingFinished]


# -- the send side keeps time when the caller's audio stops -----------------------------------------------


def test_stalled_audio_ends_by_silence() -> None:
    speech = speechlike(3.0, 12)
    rx = np.concatenate([quiet(START / RATE), speech])
    s = VoicemailSession(GREETING)
    run = drive(s, rx, tail=0)
    assert run.state is State.RECORDING
    end = voice_end(rx, START, len(rx))
    events: list[Event] = []
    sent = len(rx)
    while not events:
        s.tx(FRAME)
        sent += FRAME
        events = s.events()
    assert sent - (end + 6 * RATE) < FRAME  # silence_timeout + RX_LAG_ALLOWANCE after the last speech
    n = end - START
    assert events == [RecordingFinished("silence", n, n / RATE), HangupRequested("silence")]
    assert np.array_equal(np.concatenate([run.recorded, s.take_recorded()]), rx[START:end])


# -- block sizes do not matter; state stays bounded ------------------------------------------------------


def scenarios() -> dict[str, tuple[Pcm, dict[int, str], int | None, VoicemailSettings]]:
    speech = speechlike(8.0, 13)
    head = quiet(START / RATE)
    key, _ = tone(dtmf_freqs("#"), 0.1, -8.0)
    pound = np.concatenate([head, speech, key, quiet(0.5)])
    return {
        "pound": (pound, {START + len(speech) + 240: "#"}, None, SETTINGS),
        "silence": (np.concatenate([head, speech, quiet(7.0)]), {}, None, SETTINGS),
        "hangup": (np.concatenate([head, speech]), {}, START + len(speech) - 77, SETTINGS),
        "max-length": (
            np.concatenate([head, speech]),
            {},
            None,
            VoicemailSettings(max_length=5.0, min_length=0.5),
        ),
        "too-short": (np.concatenate([head, speech[: RATE + 33]]), {}, START + RATE + 33, SETTINGS),
    }


@pytest.mark.parametrize("name", ["pound", "silence", "hangup", "max-length", "too-short"])
def test_block_sizes_do_not_change_the_result(name: str) -> None:
    rx, digits, hangup_at, settings = scenarios()[name]
    reference = drive(VoicemailSession(GREETING, settings), rx, digits=digits, hangup_at=hangup_at)
    assert any(isinstance(e, RecordingFinished | RecordingDiscarded) for e in reference.events)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        big = int(rng.integers(2, 1500))

        def rx_size(rng: np.random.Generator = rng, big: int = big) -> int:
            return int(rng.integers(1, big))

        def tx_size(rng: np.random.Generator = rng) -> int:
            return int(rng.integers(1, 1200))

        run = drive(
            VoicemailSession(GREETING, settings),
            rx,
            digits=digits,
            hangup_at=hangup_at,
            rx_size=rx_size,
            tx_size=tx_size,
        )
        assert run.events == reference.events, seed
        assert np.array_equal(run.recorded, reference.recorded), seed
    # received audio in one block, the send side only as far as the end of the beep
    one = drive(
        VoicemailSession(GREETING, settings),
        rx,
        digits=digits,
        hangup_at=hangup_at,
        rx_size=lambda: len(rx),
        lazy_tx=True,
    )
    assert one.events == reference.events
    assert np.array_equal(one.recorded, reference.recorded)


def test_held_back_samples_stay_bounded() -> None:
    rx = np.concatenate([quiet(START / RATE), speechlike(60.0, 14)])
    seen: list[int] = []
    s = VoicemailSession(GREETING)
    out = 0
    for pos in range(0, len(rx), FRAME):
        s.tx(FRAME)
        s.rx(rx[pos : pos + FRAME])
        out += len(s.take_recorded())
        seen.append(s.held_samples)
    bound = round((SETTINGS.min_length + SETTINGS.silence_timeout + SETTINGS.digit_trim) * RATE) + FRAME
    assert max(seen) <= bound
    assert out > len(rx) - START - bound  # handed out as it goes, not at the end
    s.hangup()
    out += len(s.take_recorded())
    assert out == len(rx) - START


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="min_length"):
        VoicemailSettings(min_length=10.0, max_length=5.0)
    with pytest.raises(ValueError, match="silence_timeout"):
        VoicemailSettings(silence_timeout=0.0)
    with pytest.raises(ValueError, match="end_digits"):
        VoicemailSettings(end_digits="#x")
    with pytest.raises(ValueError, match="beep_frequency"):
        VoicemailSettings(beep_frequency=4000.0)


def test_received_audio_ahead_of_the_beep_is_not_recorded() -> None:
    """Not the usual order (received audio lags what is sent), but it must stay consistent."""
    rx = np.concatenate([quiet(2.0), speechlike(3.0, 15)])
    s = VoicemailSession(GREETING)
    s.rx(rx[: 2 * RATE])  # 2 s received before anything was sent
    s.tx(START)
    assert s.events() == [RecordingStarted(2 * RATE)]
    s.rx(rx[2 * RATE :])
    s.hangup()
    assert np.array_equal(s.take_recorded(), rx[2 * RATE :])


def test_pound_arriving_before_its_audio() -> None:
    """RFC 4733 events overtake the jitter-buffered audio: the cut is taken where the key came."""
    speech = speechlike(4.0, 16)
    key, _ = tone(dtmf_freqs("#"), 0.1, -8.0)
    rx = np.concatenate([quiet(START / RATE), speech, key])
    digit_at = START + len(speech) - 480  # 60 ms before the tone reaches the recording
    run = drive(VoicemailSession(GREETING), rx, digits={digit_at: "#"})
    assert np.array_equal(run.recorded, rx[START : digit_at - round(SETTINGS.digit_trim * RATE)])


def test_tx_active_is_tx_with_none_for_silence() -> None:
    a, b = VoicemailSession(GREETING), VoicemailSession(GREETING)
    speech = (np.random.default_rng(8).standard_normal(4 * RATE) * 3000).astype(np.int16)
    nones = 0
    for k in range(4 * RATE // FRAME):
        full = a.tx(FRAME)
        part = b.tx_active(FRAME)
        if part is None:
            nones += 1
            assert not full.any()
        else:
            np.testing.assert_array_equal(part, full)
        block = speech[k * FRAME : (k + 1) * FRAME]
        a.rx(block)
        b.rx(block)
        assert a.has_output == b.has_output
        np.testing.assert_array_equal(a.take_recorded(), b.take_recorded())
        assert a.events() == b.events()
        assert not b.has_output
    assert nones == (4 * RATE - START) // FRAME  # silent once the beep is over
