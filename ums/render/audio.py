"""Audio files for e-mail attachments and greetings.

What it does
------------
``encode_audio(pcm, fmt)`` turns a recording (int16 samples at 8 kHz, mono)
into the bytes of an attachment — WAV, MP3 or Opus — and returns them with the
file extension and MIME type.  ``decode_audio_file(path)`` and
``decode_audio(data)`` read any audio file PyAV understands (an admin's
greeting as MP3, FLAC, 44.1 kHz stereo WAV, ...) and return int16 samples at
8 kHz mono, ready to be G.711-encoded.

How it works
------------
WAV is written and read with the stdlib ``wave`` module: PCM 16-bit little
endian, 8000 Hz, one channel (RIFF WAVE, format tag 1).  MP3 (libmp3lame,
MPEG-2.5 Layer III at 8 kHz) and Opus in Ogg (libopus, RFC 7845) go through
PyAV, which is imported only when one of them is used, so a server that only
sends WAV needs no PyAV.  PyAV's encoder context converts the sample format
(s16 -> s16p/flt) and cuts frames to the codec's frame size; decoding runs
every frame through ``av.AudioResampler`` to s16/mono/8000 Hz and flushes the
resampler at the end so no tail is lost.  Decoders drop the encoder delay
(LAME tag, Opus pre-skip), so durations survive a round trip to within a
frame.
"""

from __future__ import annotations

import io
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "AUDIO_FORMATS",
    "SAMPLE_RATE",
    "AudioFormat",
    "decode_audio",
    "decode_audio_file",
    "encode_audio",
]

AudioFormat = Literal["wav", "mp3", "opus"]
AUDIO_FORMATS: tuple[AudioFormat, ...] = ("wav", "mp3", "opus")

#: G.711 sampling rate (ITU-T G.711 §1: 8000 samples per second).
SAMPLE_RATE = 8000

#: (PyAV container format, encoder, bit rate, extension, MIME type).
#: MP3 at 8 kHz is MPEG-2.5 Layer III, bit rates 8-64 kbit/s; 24 kbit/s is ample for telephone speech.
#: Opus: RFC 7587 §3.1.1 puts narrowband speech at 8-12 kbit/s; 16 kbit/s leaves headroom.
#: MIME types: audio/mpeg (RFC 3003), audio/ogg (RFC 5334 §10.3), audio/wav (RFC 2361 names audio/vnd.wave;
#: audio/wav is what mail clients recognise).
_CODECS: dict[str, tuple[str, str, int, str, str]] = {
    "mp3": ("mp3", "libmp3lame", 24_000, "mp3", "audio/mpeg"),
    "opus": ("ogg", "libopus", 16_000, "opus", "audio/ogg"),
}


def _as_pcm(pcm: npt.ArrayLike) -> npt.NDArray[np.int16]:
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {arr.shape}")
    if arr.dtype != np.int16:
        raise ValueError(f"expected int16 samples, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def _encode_wav(pcm: npt.NDArray[np.int16]) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.astype("<i2", copy=False).tobytes())
    return buf.getvalue()


def _encode_av(pcm: npt.NDArray[np.int16], fmt: str) -> bytes:
    import av

    container_fmt, encoder, bit_rate, _, _ = _CODECS[fmt]
    buf = io.BytesIO()
    container: Any = av.open(buf, "w", format=container_fmt)
    with container:
        stream = container.add_stream(encoder, rate=SAMPLE_RATE)
        stream.layout = "mono"
        stream.bit_rate = bit_rate
        if encoder == "libopus":
            stream.codec_context.options = {"application": "voip"}
        if len(pcm):
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = 0
            frame.time_base = Fraction(1, SAMPLE_RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def encode_audio(pcm: npt.ArrayLike, fmt: AudioFormat = "wav") -> tuple[bytes, str, str]:
    """Encode int16 8 kHz mono samples; returns ``(data, extension, mime_type)``.

    ``fmt`` is ``"wav"`` (PCM 16-bit, 8 kHz, mono; stdlib only), ``"mp3"`` or
    ``"opus"`` (Ogg Opus); the last two need PyAV.
    """
    samples = _as_pcm(pcm)
    if fmt == "wav":
        return _encode_wav(samples), "wav", "audio/wav"
    if fmt not in _CODECS:
        raise ValueError(f"audio format must be one of {', '.join(AUDIO_FORMATS)}, got {fmt!r}")
    _, _, _, ext, mime = _CODECS[fmt]
    return _encode_av(samples, fmt), ext, mime


def _read_plain_wav(source: io.BytesIO | Path) -> npt.NDArray[np.int16] | None:
    """Samples of a WAV that is already PCM 16-bit 8 kHz mono, else None (let PyAV convert it)."""
    try:
        with wave.open(source if isinstance(source, io.BytesIO) else str(source), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
                return None
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        return None
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def _decode_av(source: io.BytesIO | str) -> npt.NDArray[np.int16]:
    import av

    try:
        return _decode_av_frames(av, source)
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode audio: {exc}") from exc


def _decode_av_frames(av: Any, source: io.BytesIO | str) -> npt.NDArray[np.int16]:
    container: Any = av.open(source, "r")
    with container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        chunks: list[npt.NDArray[np.int16]] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(chunks).astype(np.int16, copy=False)


def decode_audio_file(path: str | Path) -> npt.NDArray[np.int16]:
    """Read any audio file PyAV can open; int16 samples at 8 kHz mono.

    A WAV that is already PCM 16-bit 8 kHz mono is read without PyAV.  Undecodable data raises
    ``ValueError``.
    """
    p = Path(path)
    with p.open("rb") as fh:
        head = fh.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        plain = _read_plain_wav(p)
        if plain is not None:
            return plain
    return _decode_av(str(p))


def decode_audio(data: bytes) -> npt.NDArray[np.int16]:
    """Like :func:`decode_audio_file`, for file contents in memory."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        plain = _read_plain_wav(io.BytesIO(data))
        if plain is not None:
            return plain
    return _decode_av(io.BytesIO(data))
