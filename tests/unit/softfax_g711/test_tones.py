"""Fax connect tones: generation (cadence, frequency, level, AM, reversals) and detection (latency,
levels, G.711 laws, clock offset, noise, frequency tolerance, streaming), silence detection, and
interworking with SpanDSP's tone generator and detector."""

from __future__ import annotations

import numpy as np
import pytest

from tests.peers import line, spandsp
from ums.softfax_g711.common import SAMPLE_RATE, power_dbm0
from ums.softfax_g711.tones import (
    T30_ANSWER,
    V25_ANSWER,
    AnswerSequence,
    Segment,
    SilenceDetector,
    Tone,
    ToneDetector,
    ToneEvent,
    ToneGenerator,
    ToneSpec,
    answer_tone,
    ced,
    cng,
)

MS = SAMPLE_RATE // 1000


def ons(events: list[ToneEvent]) -> list[ToneEvent]:
    return [e for e in events if e.on]


def feed(detector: ToneDetector | SilenceDetector, samples: np.ndarray, block: int = 160) -> list[ToneEvent]:
    events: list[ToneEvent] = []
    for start in range(0, samples.size, block):
        events += detector.receive(samples[start : start + block])
    return events


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    k = int(np.argmax(spec))
    # parabolic interpolation between bins
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-12)
    return float((k + 0.5 * (a - c) / (a - 2 * b + c)) * SAMPLE_RATE / x.size)


def line_out(
    x: np.ndarray, law: str, level: float, ppm: float, snr_db: float | None, seed: int = 1
) -> np.ndarray:
    """The tone through a line: clock offset, white noise ``snr_db`` below the tone level, G.711."""
    y = line.clock_offset(x, ppm)
    if snr_db is not None:
        y = line.awgn(y, snr_db, np.random.default_rng(seed), signal_dbm0=level)
    return line.g711(y, law)


# ---------------------------------------------------------------------------------------------
# Generation


def test_cng_cadence_frequency_and_level() -> None:
    x = cng(-10.0).generate(8 * SAMPLE_RATE)
    on = np.convolve(np.abs(x), np.ones(5), mode="same") > 0  # bridge the sine's zero samples
    edges = np.flatnonzero(np.diff(on.astype(np.int8)))
    # 0.5 s on, 3 s off, repeated (sample-exact up to a zero crossing at an edge)
    assert np.allclose(edges[:4], [4000, 28000, 32000, 56000], atol=2)
    burst = x[:4000]
    assert peak_hz(burst) == pytest.approx(1100.0, abs=0.5)
    assert power_dbm0(burst) == pytest.approx(-10.0, abs=0.05)
    assert not np.any(x[4010:27990])


def test_generation_is_the_same_in_blocks() -> None:
    whole = answer_tone(Tone.ANSAM_PR, -12.0).generate(40000)
    gen = answer_tone(Tone.ANSAM_PR, -12.0)
    parts = np.concatenate([gen.generate(n) for n in (1, 159, 160, 7, 3673, 36000)])
    assert np.array_equal(whole, parts)


def test_ced_answering_sequence_and_done() -> None:
    gen = ced(-10.0)
    x = gen.generate(4 * SAMPLE_RATE)
    assert gen.done
    nz = np.flatnonzero(x)
    assert nz[0] == pytest.approx(0.2 * SAMPLE_RATE, abs=2)  # T.30: 0.2 s of silence first
    assert nz[-1] == pytest.approx(3.5 * SAMPLE_RATE, abs=2)  # 3.3 s of tone
    tone = x[nz[0] : nz[-1]]
    assert peak_hz(tone) == pytest.approx(2100.0, abs=0.5)
    assert power_dbm0(tone) == pytest.approx(-10.0, abs=0.05)
    assert not np.any(gen.generate(1000))


def test_answer_sequence_is_configurable() -> None:
    x = answer_tone(Tone.ANS, -10.0, V25_ANSWER).generate(6 * SAMPLE_RATE)
    nz = np.flatnonzero(x)
    assert nz[0] == pytest.approx(V25_ANSWER.silence_before_s * SAMPLE_RATE, abs=2)
    short = AnswerSequence(silence_before_s=0.0, tone_s=2.6, silence_after_s=0.075)
    gen = answer_tone(Tone.ANS, -10.0, short)
    y = gen.generate(round(2.675 * SAMPLE_RATE))
    assert gen.done
    assert np.flatnonzero(y)[-1] == pytest.approx(2.6 * SAMPLE_RATE, abs=2)
    assert T30_ANSWER.silence_before_s == 0.2
    with pytest.raises(ValueError):
        answer_tone(Tone.CNG)


def envelope(x: np.ndarray) -> np.ndarray:
    """Magnitude of the analytic signal (FFT Hilbert transform)."""
    spec = np.fft.fft(x)
    h = np.zeros(x.size)
    h[0] = 1.0
    h[1 : x.size // 2] = 2.0
    h[x.size // 2] = 1.0
    return np.abs(np.fft.ifft(spec * h))


def test_ansam_envelope_is_15_hz_plus_minus_20_percent() -> None:
    seq = AnswerSequence(silence_before_s=0.0, tone_s=2.0, silence_after_s=0.0)
    x = answer_tone(Tone.ANSAM, -10.0, seq).generate(2 * SAMPLE_RATE).astype(np.float64)
    env = envelope(x)[800:-800]
    mean = env.mean()
    assert env.max() / mean == pytest.approx(1.2, abs=0.01)
    assert env.min() / mean == pytest.approx(0.8, abs=0.01)
    assert peak_hz(env - mean) == pytest.approx(15.0, abs=0.2)
    assert power_dbm0(x) == pytest.approx(-10.0 + 10 * np.log10(1 + 0.2**2 / 2), abs=0.05)


@pytest.mark.parametrize("tone", [Tone.ANS_PR, Tone.ANSAM_PR])
def test_phase_reverses_every_450_ms(tone: Tone) -> None:
    seq = AnswerSequence(silence_before_s=0.0, tone_s=2.0, silence_after_s=0.0)
    x = answer_tone(tone, -10.0, seq).generate(2 * SAMPLE_RATE).astype(np.float64)
    ref = ToneGenerator([Segment(2.0, 2100.0)], -10.0).generate(2 * SAMPLE_RATE).astype(np.float64)
    # sign of the correlation with a steady 2100 Hz tone, per 10 ms
    sign = np.sign(np.sum((x * ref)[: 199 * 80].reshape(-1, 80), axis=1))
    flips = np.flatnonzero(np.diff(sign)) + 1
    assert list(flips[:4] * 80) == [3600, 7200, 10800, 14400]


# ---------------------------------------------------------------------------------------------
# Detection


def test_cng_detected_in_the_first_burst_and_in_every_burst() -> None:
    x = line.g711(cng(-10.0).generate(round(11.5 * SAMPLE_RATE)), "PCMU")
    events = feed(ToneDetector(), x)
    on = ons(events)
    assert [e.tone for e in on] == [Tone.CNG] * 4
    onsets = [0, 28000, 56000, 84000]
    for e, onset in zip(on, onsets, strict=True):
        assert abs(e.start - onset) <= 5 * MS
        assert 350 * MS <= e.sample - onset <= 420 * MS  # within the first 0.425 s of every burst
    off = [e for e in events if not e.on]
    assert [e.sample for e in off] == pytest.approx([4000, 32000, 60000, 88000], abs=5 * MS)


@pytest.mark.parametrize(
    ("tone", "first", "final"),
    [
        (Tone.ANS, Tone.ANS, Tone.ANS),
        (Tone.ANS_PR, Tone.ANS, Tone.ANS_PR),
        (Tone.ANSAM, Tone.ANSAM, Tone.ANSAM),
        (Tone.ANSAM_PR, Tone.ANSAM, Tone.ANSAM_PR),
    ],
)
def test_answer_tones_detected_and_classified(tone: Tone, first: Tone, final: Tone) -> None:
    x = line.g711(answer_tone(tone, -13.0).generate(4 * SAMPLE_RATE), "PCMA")
    events = feed(ToneDetector(), x)
    on = ons(events)
    onset = 1600
    assert on[0].tone is first
    assert on[-1].tone is final
    assert len(on) <= 2
    assert all(e.start == pytest.approx(onset, abs=5 * MS) for e in events)
    assert 400 * MS <= on[0].sample - onset <= 500 * MS
    # a phase reversal, 450 ms after the onset, is recognised within 20 ms
    if final is not first:
        assert on[-1].sample - onset <= 470 * MS
    ends = [e for e in events if not e.on]
    assert len(ends) == 1 and ends[0].sample == pytest.approx(onset + 3.3 * SAMPLE_RATE, abs=5 * MS)
    assert ends[0].tone is final
    assert on[0].level_dbm0 == pytest.approx(-13.0, abs=0.5)


def test_ced_alias() -> None:
    assert Tone["CED"] is Tone.ANS


LEVELS = [-9.0, -20.0, -30.0, -43.0]


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("ppm", [-100.0, 100.0])
def test_levels_laws_clock_offset_and_noise(law: str, level: float, ppm: float) -> None:
    """CNG and CED from -9 to -43 dBm0 through G.711 with a +-100 ppm clock and white noise 10 dB
    below the tone: found once, on time, at the right level."""
    for gen, tone, onset, latest in ((cng(level), Tone.CNG, 0, 420), (ced(level), Tone.ANS, 1600, 500)):
        x = line_out(gen.generate(round(1.4 * SAMPLE_RATE)).astype(np.float64), law, level, ppm, 10.0)
        on = ons(feed(ToneDetector(), x))
        assert [e.tone for e in on] == [tone]
        assert on[0].sample - onset <= latest * MS
        assert abs(on[0].start - onset) <= 10 * MS
        assert on[0].level_dbm0 == pytest.approx(level, abs=1.0)


def test_too_weak_tones_are_ignored() -> None:
    x = line.g711(cng(-52.0).generate(2 * SAMPLE_RATE), "PCMU")
    assert ons(feed(ToneDetector(), x)) == []
    weaker_floor = ToneDetector(min_level_dbm0=-55.0)
    assert [e.tone for e in ons(feed(weaker_floor, x))] == [Tone.CNG]


@pytest.mark.parametrize(
    ("freq", "found"),
    [
        (1000.0, None),
        (1055.0, None),
        (1062.0, Tone.CNG),
        (1138.0, Tone.CNG),
        (1150.0, None),
        (1200.0, None),
        (1300.0, None),
        (2050.0, None),
        (2085.0, Tone.ANS),
        (2115.0, Tone.ANS),
        (2150.0, None),
        (2225.0, None),
    ],
)
def test_frequency_tolerance(freq: float, found: Tone | None) -> None:
    """T.30: CNG 1100 +-38 Hz, CED 2100 +-15 Hz are found; other steady tones are not."""
    x = line.g711(ToneGenerator([Segment(1.5, freq)], -15.0).generate(12000), "PCMA")
    assert [e.tone for e in ons(feed(ToneDetector(), x))] == ([found] if found else [])


def test_short_bursts_glides_and_warbles_are_not_tones() -> None:
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    amp = 3000.0
    short = ToneGenerator([Segment(0.3, 1100.0), Segment(0.5)], -15.0, repeat=True).generate(t.size)
    glide = amp * np.sin(2 * np.pi * np.cumsum(1000.0 + 100.0 * t) / SAMPLE_RATE)  # 100 Hz/s through 1100
    warble = amp * np.sin(2 * np.pi * np.cumsum(2100.0 + 20.0 * np.sin(2 * np.pi * 6.0 * t)) / SAMPLE_RATE)
    for x in (short, glide, warble):
        assert ons(feed(ToneDetector(), line.g711(x, "PCMU"))) == []


def test_streaming_in_any_block_size_gives_the_same_events() -> None:
    rng = np.random.default_rng(5)
    clean = np.concatenate(
        [
            cng(-20.0, repeat=False).generate(12000),
            answer_tone(Tone.ANSAM_PR, -25.0).generate(30000),
            cng(-35.0).generate(20000),
        ]
    ).astype(np.float64)
    x = line.g711(clean + rng.normal(0.0, 30.0, clean.size), "PCMU")
    whole = ToneDetector().receive(x)
    assert [e.tone for e in ons(whole)] == [Tone.CNG, Tone.ANSAM, Tone.ANSAM_PR, Tone.CNG]
    for block in (1, 37, 160, 4001):
        assert feed(ToneDetector(), x, block) == whole
    sizes = rng.integers(1, 900, 400)
    detector, events, pos = ToneDetector(), [], 0
    for n in sizes:
        events += detector.receive(x[pos : pos + n])
        pos += int(n)
    events += detector.receive(x[pos:])
    assert events == whole
    assert detector.samples == x.size


def test_single_tone_detectors() -> None:
    x = line.g711(
        np.concatenate([cng(-20.0, repeat=False).generate(8000), ced(-20.0).generate(8000)]), "PCMA"
    )
    assert [e.tone for e in ons(ToneDetector([ToneSpec.cng()]).receive(x))] == [Tone.CNG]
    assert [e.tone for e in ons(ToneDetector([ToneSpec.ans()]).receive(x))] == [Tone.ANS]
    with pytest.raises(ValueError):
        ToneDetector([ToneSpec(Tone.ANSAM, 2100.0, 25.0, 0.5)])


def test_longer_min_on_trades_latency() -> None:
    x = line.g711(ced(-20.0).generate(3 * SAMPLE_RATE), "PCMU")
    fast = ons(ToneDetector([ToneSpec.ans(min_on_s=0.3)]).receive(x))
    slow = ons(ToneDetector([ToneSpec.ans(min_on_s=1.0)]).receive(x))
    assert fast[0].sample < slow[0].sample
    assert 260 * MS <= fast[0].sample - 1600 <= 310 * MS
    assert 900 * MS <= slow[0].sample - 1600 <= 1010 * MS


# ---------------------------------------------------------------------------------------------
# Silence


def test_silence_gap_of_t30_is_detected() -> None:
    tone = ToneGenerator([Segment(0.3, 1650.0)], -20.0).generate(2400)
    gaps = [600, 240, 440, 760]  # 75 ms, 30 ms, 55 ms, 95 ms
    parts, starts, pos = [], [], 0
    for gap in gaps:
        parts += [tone, np.zeros(gap, dtype=np.int16)]
        starts.append(pos + tone.size)
        pos += tone.size + gap
    parts.append(tone)
    x = line.g711(np.concatenate(parts), "PCMA")
    events = feed(SilenceDetector(min_duration_s=0.045), x, block=37)
    on = ons(events)
    assert [e.tone for e in events] == [Tone.SILENCE] * 6
    found = {gaps[int(np.argmin([abs(s - e.start) for s in starts]))] for e in on}
    assert found == {600, 440, 760}  # not the 30 ms one
    for e in on:
        assert e.sample - e.start == pytest.approx(45 * MS, abs=5 * MS)
    assert SilenceDetector(min_duration_s=0.045).receive(x) == events


def test_silence_at_stream_start_and_threshold() -> None:
    quiet_noise = np.random.default_rng(2).normal(0.0, 10.0, 4000)  # about -67 dBm0
    events = SilenceDetector(threshold_dbm0=-45.0, min_duration_s=0.1).receive(quiet_noise)
    assert len(events) == 1 and events[0].start == 0 and events[0].sample == 800
    assert events[0].level_dbm0 < -60.0
    loud = SilenceDetector(threshold_dbm0=-70.0, min_duration_s=0.1).receive(quiet_noise)
    assert loud == []


# ---------------------------------------------------------------------------------------------
# SpanDSP

needs_spandsp = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")


@needs_spandsp
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cng", Tone.CNG),
        ("ced", Tone.ANS),
        ("ans_pr", Tone.ANS_PR),
        ("ansam", Tone.ANSAM),
        ("ansam_pr", Tone.ANSAM_PR),
    ],
)
def test_spandsp_tones_to_our_detector(name: str, expected: Tone) -> None:
    x = line_out(
        spandsp.ToneTx(name).generate(6 * SAMPLE_RATE).astype(np.float64), "PCMU", -11.0, 100.0, 20.0
    )
    on = ons(feed(ToneDetector(), x))
    assert on and on[-1].tone is expected
    assert len({e.start for e in on}) == (2 if name == "cng" else 1)  # CNG repeats every 3.5 s
    onset = 0 if name == "cng" else 1600
    assert on[0].sample - onset <= 500 * MS


@needs_spandsp
@pytest.mark.parametrize(
    ("tone", "mode", "expected"),
    [
        (Tone.CNG, "cng", "cng"),
        (Tone.ANS, "ced", "ced"),
        (Tone.ANS_PR, "ced", "ans_pr"),
        (Tone.ANSAM, "ced", "ansam"),
        (Tone.ANSAM_PR, "ced", "ansam_pr"),
    ],
)
def test_our_tones_to_spandsp_detector(tone: Tone, mode: str, expected: str) -> None:
    gen = cng(-10.0) if tone is Tone.CNG else answer_tone(tone, -10.0)
    x = line_out(gen.generate(6 * SAMPLE_RATE).astype(np.float64), "PCMA", -10.0, -100.0, 20.0)
    found = spandsp.ToneRx(mode).receive(x)
    assert found and found[0][0] == expected
    assert all(name == expected for name, _ in found)
    other = "ced" if mode == "cng" else "cng"
    assert spandsp.ToneRx(other).receive(x) == []
