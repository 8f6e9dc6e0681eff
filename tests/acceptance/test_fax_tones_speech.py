"""Fax tone detection against ten minutes of speech, call-progress tones and music-like sounds.

A voice number listens for CNG (a fax calling) and a fax call for CED/ANSam; neither may fire on a
caller talking, on DTMF, on ringback or busy tones, or on music.  The signal is espeak-ng speech
(English and German, several voices, speeds and pitches, levels -30 to -12 dBm0), white noise at
-50 dBm0 and a track of tones and notes that are never a steady 1100 Hz or 2100 Hz, through G.711
µ-law and A-law, fed to :class:`ToneDetector` in 20 ms blocks.  The positive test puts CNG at
-30 dBm0 into the same speech and checks that it is found, at the right places.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.acceptance.conftest import require
from tests.peers import line, speech
from ums.softfax_g711.common import FULL_SCALE, FULL_SCALE_DBM0
from ums.softfax_g711.tones import Tone, ToneDetector, ToneEvent, cng

pytestmark = pytest.mark.acceptance

RATE = 8000
SECONDS = 600.0
NOISE_DBM0 = -50.0
BLOCK = 160
#: Steady sounds keep their partials this far from the fax tones.
GUARD_HZ = 60.0
FAX_HZ = (1100.0, 2100.0)


def _amp(level_dbm0: float) -> float:
    """Peak amplitude of a sine at ``level_dbm0``."""
    return float(FULL_SCALE * 10.0 ** ((level_dbm0 - FULL_SCALE_DBM0) / 20.0))


def _sines(freqs: list[float], seconds: float, level_dbm0: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return sum((_amp(level_dbm0) * np.sin(2 * np.pi * f * t) for f in freqs), np.zeros(t.size))


def _cadence(freqs: list[float], on: float, off: float, cycles: int, level: float) -> np.ndarray:
    burst = np.concatenate([_sines(freqs, on, level), np.zeros(round(off * RATE))])
    return np.tile(burst, cycles)


def _near_fax(f: float, harmonics: int = 4) -> bool:
    return any(abs(k * f - fax) < GUARD_HZ for k in range(1, harmonics + 1) for fax in FAX_HZ)


def _note(f: float, seconds: float, level: float, rng: np.random.Generator) -> np.ndarray:
    """A plucked or bowed note: four harmonics, attack and decay."""
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    weights = np.array([1.0, 0.5, 0.3, 0.2]) * rng.uniform(0.5, 1.0, 4)
    x = sum(w * np.sin(2 * np.pi * (k + 1) * f * t) for k, w in enumerate(weights))
    attack = np.minimum(1.0, t / 0.02)
    decay = np.exp(-t * rng.uniform(0.5, 4.0))
    note: np.ndarray = _amp(level) * x * attack * decay / weights.sum()
    return note


def _melody(rng: np.random.Generator) -> np.ndarray:
    notes = []
    level = rng.uniform(-28.0, -12.0)
    for _ in range(int(rng.integers(8, 20))):
        while True:
            f = 220.0 * 2.0 ** (int(rng.integers(0, 37)) / 12.0)  # A3 .. A6
            if not _near_fax(f):
                break
        notes.append(_note(f, rng.uniform(0.15, 0.6), level, rng))
    return np.concatenate(notes)


def _chords(rng: np.random.Generator) -> np.ndarray:
    parts = []
    level = rng.uniform(-30.0, -15.0)
    for _ in range(int(rng.integers(3, 8))):
        root = 110.0 * 2.0 ** (int(rng.integers(0, 36)) / 12.0)
        freqs = [root * 2.0 ** (s / 12.0) for s in (0, 4, 7, 12)]
        if any(_near_fax(f) for f in freqs):
            continue
        parts.append(sum(_note(f, 0.8, level, rng) for f in freqs))
    return np.concatenate(parts) if parts else np.zeros(RATE)


def _vibrato(rng: np.random.Generator) -> np.ndarray:
    """A sung or bowed note with 2-4 % vibrato at 5-7 Hz, anywhere, fax frequencies included."""
    f0 = rng.choice([rng.uniform(800.0, 2400.0), 1100.0, 2100.0])
    seconds = rng.uniform(0.6, 2.0)
    t = np.arange(round(seconds * RATE)) / RATE
    depth, rate = rng.uniform(0.02, 0.04), rng.uniform(5.0, 7.0)
    inst = f0 * (1.0 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(inst) / RATE
    return _amp(rng.uniform(-30.0, -12.0)) * np.sin(phase) * np.minimum(1.0, t / 0.05)


def _glide(rng: np.random.Generator) -> np.ndarray:
    """A slide through 1100 Hz or 2100 Hz at 80-800 Hz/s."""
    centre = float(rng.choice(FAX_HZ))
    speed = rng.uniform(80.0, 800.0) * rng.choice([-1.0, 1.0])
    seconds = min(3.0, 600.0 / abs(speed))
    t = np.arange(round(seconds * RATE)) / RATE
    inst = centre + speed * (t - seconds / 2)
    phase = 2 * np.pi * np.cumsum(inst) / RATE
    return _amp(rng.uniform(-30.0, -12.0)) * np.sin(phase)


def _dtmf(rng: np.random.Generator) -> np.ndarray:
    rows, cols = (697.0, 770.0, 852.0, 941.0), (1209.0, 1336.0, 1477.0, 1633.0)
    level = rng.uniform(-25.0, -8.0)
    parts = []
    for _ in range(int(rng.integers(4, 16))):
        pair = [rows[int(rng.integers(4))], cols[int(rng.integers(4))]]
        parts += [_sines(pair, rng.uniform(0.04, 0.2), level), np.zeros(round(rng.uniform(0.04, 0.2) * RATE))]
    return np.concatenate(parts)


def _call_progress(rng: np.random.Generator) -> np.ndarray:
    level = rng.uniform(-28.0, -10.0)
    kind = int(rng.integers(9))
    if kind == 0:
        return _cadence([425.0], 1.0, 4.0, 2, level)  # European ringback
    if kind == 1:
        return _cadence([440.0, 480.0], 2.0, 4.0, 2, level)  # North American ringback
    if kind == 2:
        return _cadence([425.0], 0.5, 0.5, 6, level)  # European busy
    if kind == 3:
        return _cadence([480.0, 620.0], 0.5, 0.5, 6, level)  # North American busy
    if kind == 4:
        return _sines([350.0, 440.0], rng.uniform(1.0, 4.0), level)  # dial tone
    if kind == 5:  # special information tone
        return np.concatenate([_sines([f], 0.33, level) for f in (913.8, 1370.6, 1776.7)])
    if kind == 6:
        return _sines([1004.0], 2.0, level)  # test tone
    if kind == 7:
        return _cadence([1300.0], 0.6, 2.0, 2, level)  # V.25 calling tone
    return _sines([2225.0], 3.0, level)  # Bell 103 answer tone


SOUNDS: tuple[Callable[[np.random.Generator], np.ndarray], ...] = (
    _melody,
    _chords,
    _vibrato,
    _glide,
    _dtmf,
    _call_progress,
)


def tone_track(seconds: float, seed: int) -> np.ndarray:
    """Sounds from :data:`SOUNDS` one after another with 0.5-6 s gaps, ``seconds`` long."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    track = np.zeros(n)
    pos = 0
    while True:
        pos += round(rng.uniform(0.5, 6.0) * RATE)
        sound = SOUNDS[int(rng.integers(len(SOUNDS)))](rng)
        if pos + sound.size > n:
            return track
        track[pos : pos + sound.size] += sound
        pos += sound.size


@pytest.fixture(scope="module")
def speech_noise(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Ten minutes of speech plus white noise at -50 dBm0 (float64, before G.711)."""
    require("espeak-ng")
    cache: Path = tmp_path_factory.mktemp("speech")
    voice = speech.corpus(SECONDS, cache, seed=7).astype(np.float64)
    rng = np.random.default_rng(11)
    noise = rng.normal(0.0, _amp(NOISE_DBM0) / np.sqrt(2.0), voice.size)
    return voice + noise


def detect(samples: np.ndarray) -> list[ToneEvent]:
    detector = ToneDetector()
    events: list[ToneEvent] = []
    for start in range(0, samples.size, BLOCK):
        events += detector.receive(samples[start : start + BLOCK])
    return events


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_no_fax_tone_in_speech_and_music(speech_noise: np.ndarray, law: str) -> None:
    mix = speech_noise + tone_track(SECONDS, seed=3 if law == "PCMU" else 4)
    signal = line.g711(mix, law)
    found = [e for e in detect(signal) if e.on]
    report = [(e.tone.value, round(e.start / RATE, 2), round(e.level_dbm0, 1)) for e in found]
    assert found == [], f"false detections in {SECONDS:.0f} s of speech and tones: {report}"


def test_cng_in_speech_is_detected(speech_noise: np.ndarray) -> None:
    """CNG at -30 dBm0 under the speech: bursts that fall in quiet moments are found, each at most
    within its 0.5 s, and nothing else is reported."""
    seconds = 120.0
    n = round(seconds * RATE)
    gen = cng(-30.0)
    onsets = np.arange(0, n, round(3.5 * RATE))
    mix = speech_noise[:n] + gen.generate(n).astype(np.float64)
    found = [e for e in detect(line.g711(mix, "PCMA")) if e.on]
    assert found, "CNG at -30 dBm0 in speech never detected"
    assert all(e.tone is Tone.CNG for e in found)
    hits = set()
    for e in found:
        burst = int(np.searchsorted(onsets, e.sample)) - 1
        assert 0 <= e.sample - onsets[burst] <= round(0.51 * RATE), (
            f"detection at {e.sample} is not in a burst"
        )
        hits.add(burst)
    # a fax calling a voice number: caught within the first few bursts, and in most of them
    assert min(hits) <= 2
    assert len(hits) >= 0.5 * onsets.size, f"only {len(hits)} of {onsets.size} bursts detected"
