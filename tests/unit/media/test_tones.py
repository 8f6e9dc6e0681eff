"""Goertzel bank, in-band DTMF detector and tone generator."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from ums.media import g711
from ums.media.tones import (
    DTMF_COLS,
    DTMF_ROWS,
    DtmfDetector,
    Goertzel,
    dbm0_to_amplitude,
    dtmf_freqs,
    tone,
)

KEYS = "123A456B789C*0#D"


def key_sequence(keys: str, on_s: float, off_s: float, level: float, lead: int = 0) -> npt.NDArray[np.int16]:
    parts = [np.zeros(lead, dtype=np.int16)]
    for k in keys:
        pcm, _ = tone(dtmf_freqs(k), on_s, level)
        parts += [pcm, np.zeros(round(off_s * 8000), dtype=np.int16)]
    return np.concatenate(parts)


def chunks(x: npt.NDArray[np.int16], seed: int) -> list[npt.NDArray[np.int16]]:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=len(x) // 97, replace=False))
    return np.split(x, cuts)


def test_levels() -> None:
    assert dbm0_to_amplitude(3.14) == pytest.approx(32768.0)
    assert dbm0_to_amplitude(-20 + 3.14) == pytest.approx(3276.8)
    pcm, _ = tone([1000.0], 1.0, 0.0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(pcm.astype(float) ** 2)) * np.sqrt(2) / 32768.0) + 3.14
    assert rms_db == pytest.approx(0.0, abs=0.01)


def test_tone_phase_continues_across_calls() -> None:
    whole, ph_whole = tone([697.0, 1209.0], 0.1, -10)
    a, ph = tone([697.0, 1209.0], 0.037, -10)
    b, ph2 = tone([697.0, 1209.0], 0.063, -10, phase=ph)
    joined = np.concatenate([a, b])
    assert np.max(np.abs(joined.astype(int) - whole.astype(int))) <= 1
    np.testing.assert_allclose(ph2, ph_whole, atol=1e-9)


def test_goertzel_measures_tone_power() -> None:
    amp = 5000.0
    x = amp * np.sin(2 * np.pi * 1000.0 * np.arange(800) / 8000)
    powers, energy = Goertzel([1000.0, 1500.0], window=160).process(x)
    assert powers.shape == (5, 2) and energy.shape == (5,)
    np.testing.assert_allclose(powers[:, 0], amp**2 / 2, rtol=1e-3)
    np.testing.assert_allclose(energy, amp**2 / 2, rtol=1e-3)
    assert np.all(powers[:, 1] < 1e-6 * amp**2)


def test_goertzel_chunked_equals_one_shot() -> None:
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(8000) * 4000).astype(np.int16)
    freqs = DTMF_ROWS + DTMF_COLS
    one_p, one_e = Goertzel(freqs, 160, 80).process(x)
    g = Goertzel(freqs, 160, 80)
    parts = [g.process(c) for c in chunks(x, 12)]
    np.testing.assert_allclose(np.concatenate([p for p, _ in parts]), one_p, rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([e for _, e in parts]), one_e, rtol=1e-12)
    assert len(one_p) == (8000 - 160) // 80 + 1


@pytest.mark.parametrize("lead", [0, 1, 37, 79, 80, 159])
def test_detects_all_keys_at_minus_20_dbm0_40ms(lead: int) -> None:
    x = key_sequence(KEYS, 0.040, 0.040, -20.0, lead=lead)
    assert DtmfDetector().process(x) == list(KEYS)


def test_detects_keys_through_g711_and_in_chunks() -> None:
    x = key_sequence("0815*#", 0.045, 0.045, -20.0, lead=13)
    x = g711.decode("PCMA", g711.encode("PCMA", x))
    det = DtmfDetector()
    got: list[str] = []
    for c in chunks(x, 3):
        got += det.process(c)
    assert got == list("0815*#")
    assert DtmfDetector().process(x) == got


def test_long_key_press_is_reported_once_and_repeats_after_a_pause() -> None:
    x = key_sequence("55", 0.5, 0.05, -10.0)
    assert DtmfDetector().process(x) == ["5", "5"]


def test_nothing_in_white_noise_or_single_tones() -> None:
    rng = np.random.default_rng(42)
    for level in (-30.0, -20.0, -10.0):
        noise = rng.standard_normal(8000 * 3) * dbm0_to_amplitude(level) / np.sqrt(2)
        assert DtmfDetector().process(noise.astype(np.int16)) == []
    single, _ = tone([770.0], 0.5, -10.0)
    assert DtmfDetector().process(single) == []


def test_short_tones_and_strong_twist_are_rejected() -> None:
    assert DtmfDetector().process(key_sequence("1", 0.015, 0.1, -10.0)) == []
    row, _ = tone([DTMF_ROWS[0]], 0.1, -10.0)
    col, _ = tone([DTMF_COLS[0]], 0.1, -25.0)  # 15 dB twist
    assert DtmfDetector().process(row + col) == []
