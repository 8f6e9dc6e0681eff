"""Greetings, their selection by diversion reason, the beep and the built-in prompts."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import ums.voicemail
from ums.media.tones import DtmfDetector, Goertzel, dbm0_to_amplitude
from ums.voicemail import prompts
from ums.voicemail.prompts import (
    GreetingError,
    beep,
    default_goodbye,
    default_greeting,
    greeting_kind,
    load_greeting,
    load_greetings,
    read_wav,
    select_greeting,
)

DATA = Path(ums.voicemail.__file__).parent / "data"


def write_wav(path: Path, pcm: npt.NDArray[np.int16], rate: int = 8000, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def rms_dbfs(pcm: npt.NDArray[np.int16]) -> float:
    x = pcm.astype(np.float64)
    return float(10.0 * np.log10(np.mean(x**2) / 32768.0**2))


@pytest.mark.parametrize("get", [default_greeting, default_goodbye])
def test_builtin_prompts(get: object) -> None:
    assert callable(get)
    pcm = get()
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert 1.0 < len(pcm) / 8000 < 4.0
    assert -19.0 < rms_dbfs(pcm) < -15.0  # "about -16 dBFS"
    assert int(np.max(np.abs(pcm.astype(np.int32)))) < 32767  # not clipped
    assert not pcm.flags.writeable
    assert get() is pcm  # read once
    assert DtmfDetector().process(pcm) == []  # speech does not look like a key press


def test_builtin_files_are_small_8k_wavs() -> None:
    for name in ("greeting_default.wav", "goodbye_default.wav"):
        path = DATA / name
        assert path.stat().st_size < 100_000
        with wave.open(str(path), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)


def test_read_wav_roundtrip_and_rejects(tmp_path: Path) -> None:
    pcm = (np.arange(800, dtype=np.int16) * 37).astype(np.int16)
    write_wav(tmp_path / "ok.wav", pcm)
    assert np.array_equal(read_wav(tmp_path / "ok.wav"), pcm)
    assert np.array_equal(read_wav(str(tmp_path / "ok.wav")), pcm)
    write_wav(tmp_path / "wide.wav", pcm, rate=16000)
    with pytest.raises(GreetingError, match="16000 Hz"):
        read_wav(tmp_path / "wide.wav")
    write_wav(tmp_path / "stereo.wav", np.repeat(pcm, 2), channels=2)
    with pytest.raises(GreetingError, match="2 channel"):
        read_wav(tmp_path / "stereo.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(GreetingError, match=r"junk\.wav"):
        read_wav(tmp_path / "junk.wav")


def test_load_greeting_uses_the_decoder(tmp_path: Path) -> None:
    seen: list[Path] = []

    def decode(path: Path) -> npt.NDArray[np.int16]:
        seen.append(path)
        return np.full(4000, 7, dtype=np.int16)

    pcm = load_greeting(tmp_path / "hello.mp3", decode)
    assert seen == [tmp_path / "hello.mp3"]
    assert len(pcm) == 4000 and pcm.dtype == np.int16
    assert load_greeting(None, decode) is default_greeting()
    assert load_greeting("", decode) is default_greeting()
    assert len(seen) == 1


def test_load_greeting_errors(tmp_path: Path) -> None:
    def broken(path: Path) -> npt.NDArray[np.int16]:
        raise OSError("no such file")

    with pytest.raises(GreetingError, match=r"missing\.ogg: cannot decode \(no such file\)"):
        load_greeting(tmp_path / "missing.ogg", broken)
    with pytest.raises(GreetingError, match="float64"):
        load_greeting(tmp_path / "x.wav", lambda p: np.zeros(10, dtype=np.float64))
    with pytest.raises(GreetingError, match="non-empty mono"):
        load_greeting(tmp_path / "x.wav", lambda p: np.zeros(0, dtype=np.int16))
    with pytest.raises(GreetingError, match="non-empty mono"):
        load_greeting(tmp_path / "x.wav", lambda p: np.zeros((10, 2), dtype=np.int16))
    # without a decoder, only 8 kHz WAV files are read
    write_wav(tmp_path / "g.wav", np.ones(100, dtype=np.int16))
    assert len(load_greeting(tmp_path / "g.wav")) == 100


def test_load_greetings(tmp_path: Path) -> None:
    write_wav(tmp_path / "busy.wav", np.ones(100, dtype=np.int16))
    greetings = load_greetings(busy=tmp_path / "busy.wav", unavailable="")
    assert set(greetings) == {"default", "busy"}
    assert greetings["default"] is default_greeting()
    assert len(greetings["busy"]) == 100


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("user-busy", "busy"),
        ('"user-busy"', "busy"),
        ("User-Busy", "busy"),
        ("486", "busy"),
        ("no-answer", "unavailable"),
        ("unavailable", "unavailable"),
        ("408", "unavailable"),
        ("480", "unavailable"),
        ("unconditional", "default"),
        ("deflection", "default"),
        ("302", "default"),
        ("", "default"),
        (None, "default"),
    ],
)
def test_greeting_kind(reason: str | None, kind: str) -> None:
    assert greeting_kind(reason) == kind


def test_select_greeting_falls_back() -> None:
    default = np.full(10, 1, dtype=np.int16)
    busy = np.full(10, 2, dtype=np.int16)
    unavailable = np.full(10, 3, dtype=np.int16)
    all_three = {"default": default, "busy": busy, "unavailable": unavailable}
    assert select_greeting("user-busy", all_three) is busy
    assert select_greeting("no-answer", all_three) is unavailable
    assert select_greeting("unconditional", all_three) is default
    assert select_greeting("user-busy", {"default": default}) is default
    assert select_greeting("no-answer", {}) is default_greeting()


def test_beep_frequency_level_and_ramps() -> None:
    pcm = beep(1000.0, 0.4, -12.0)
    assert len(pcm) == 3200
    bank = Goertzel([425.0, 1000.0, 2000.0], window=len(pcm))
    powers, energy = bank.process(pcm)
    p425, p1000, p2000 = powers[0]
    expected = dbm0_to_amplitude(-12.0) ** 2 / 2.0
    assert 10 * np.log10(p1000 / expected) == pytest.approx(0.0, abs=0.2)
    assert p1000 > 1000 * max(p425, p2000)
    assert p1000 == pytest.approx(energy[0], rel=0.02)  # all the energy is at 1000 Hz
    assert abs(int(pcm[0])) < 50 and abs(int(pcm[-1])) < 50  # ramped: no click
    assert len(beep(duration=0.0)) == 0
    assert prompts.RATE == 8000
