"""Attachment encodings and greeting decoding."""

from __future__ import annotations

import io
import subprocess
import sys
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ums.render.audio import SAMPLE_RATE, decode_audio, decode_audio_file, encode_audio

av = pytest.importorskip("av")


def speechlike(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    signal = (
        np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 1100 * t) + 0.05 * rng.standard_normal(t.size)
    )
    return (6000 * envelope * signal).astype(np.int16)


def test_wav_round_trip_is_exact(tmp_path: Path) -> None:
    pcm = speechlike(1.3)
    data, ext, mime = encode_audio(pcm, "wav")
    assert (ext, mime) == ("wav", "audio/wav")
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
            1,
            2,
            8000,
            pcm.size,
        )
    np.testing.assert_array_equal(decode_audio(data), pcm)
    path = tmp_path / "x.wav"
    path.write_bytes(data)
    np.testing.assert_array_equal(decode_audio_file(path), pcm)
    assert decode_audio(encode_audio(np.zeros(0, np.int16), "wav")[0]).size == 0


@pytest.mark.parametrize(
    ("fmt", "ext", "mime"), [("mp3", "mp3", "audio/mpeg"), ("opus", "opus", "audio/ogg")]
)
def test_compressed_formats_decode_with_the_right_duration(fmt: str, ext: str, mime: str) -> None:
    pcm = speechlike(4.0)
    data, got_ext, got_mime = encode_audio(pcm, fmt)  # type: ignore[arg-type]
    assert (got_ext, got_mime) == (ext, mime)
    assert len(data) < pcm.nbytes / 4  # actually compressed
    decoded = decode_audio(data)
    assert decoded.dtype == np.int16
    assert abs(decoded.size - pcm.size) / SAMPLE_RATE < 0.1
    # still the same audio: correlation with the input at the best small lag
    n = min(decoded.size, pcm.size) - 400
    a = pcm[:n].astype(float)
    best = max(float(np.corrcoef(a, decoded[lag : lag + n].astype(float))[0, 1]) for lag in range(0, 400, 1))
    assert best > 0.9


def test_greeting_in_another_rate_and_layout_is_resampled(tmp_path: Path) -> None:
    # a 44.1 kHz stereo FLAC greeting, as an admin might upload it
    rate = 44100
    t = np.arange(rate * 2) / rate
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    stereo = np.stack([tone, tone]).T.reshape(1, -1)  # packed s16: interleaved L R
    path = tmp_path / "greeting.flac"
    with av.open(str(path), "w", format="flac") as c:
        s = c.add_stream("flac", rate=rate)
        s.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo), format="s16", layout="stereo")
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = decode_audio_file(path)
    assert abs(out.size - 2 * SAMPLE_RATE) <= 160
    spectrum = np.abs(np.fft.rfft(out[800:-800].astype(float)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (out.size - 1600)
    assert abs(peak_hz - 440) < 5


def test_wav_in_another_rate_goes_through_pyav() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000, dtype="<i2").tobytes())
    out = decode_audio(buf.getvalue())
    assert abs(out.size - 8000) <= 80


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_audio(np.zeros((2, 10), np.int16))
    with pytest.raises(ValueError):
        encode_audio(np.zeros(10, np.float32))
    with pytest.raises(ValueError):
        encode_audio(np.zeros(10, np.int16), "flac")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        decode_audio(b"this is not audio at all" * 10)


def test_wav_needs_no_pyav() -> None:
    code = (
        "import sys, numpy as np\n"
        "from ums.render.audio import decode_audio, encode_audio\n"
        "data, _, _ = encode_audio(np.arange(80, dtype=np.int16))\n"
        "assert decode_audio(data).size == 80\n"
        "print('av' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
