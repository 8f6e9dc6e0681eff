"""Voicemail prompts: greetings (admin files or the built-in one), the beep, the goodbye.

What it does
------------
* ``load_greeting(path, decode)``: the greeting an administrator configured, decoded to int16 PCM at
  8 kHz mono by the ``decode`` function passed in (the server passes the audio renderer's
  ``decode_audio_file``); no path gives the built-in prompt "Please leave a message after the tone."
* ``load_greetings(default=, busy=, unavailable=, decode=)``: the three greetings of a mailbox.
* ``greeting_kind(reason)`` / ``select_greeting(reason, greetings)``: which greeting a call gets from
  the reason the PBX gave for diverting it: ``user-busy`` plays the busy greeting, ``no-answer`` and
  ``unavailable`` the unavailable greeting, anything else (or a greeting not configured) the default.
* ``beep(...)``: the record tone; ``default_greeting()`` / ``default_goodbye()``: the built-in prompts.
* ``read_wav(path)``: an 8 kHz mono 16-bit WAV file via the stdlib ``wave`` module.

How it works
------------
The built-in prompts are WAV files shipped as package data (``ums/voicemail/data/*.wav``), made by
``data/make-prompts.sh`` with espeak-ng and sox: 8 kHz, 16-bit mono, about -16 dBFS. They are read
once and cached; callers get read-only arrays. Decoding any other format is the business of the
function passed in, so this module stays free of media libraries.

The reason for a diversion comes as a Diversion ``reason`` parameter (RFC 5806 §4) or as the
``cause`` URI parameter of a History-Info entry (RFC 4458 §3, SIP status codes).
"""

from __future__ import annotations

import functools
import os
import wave
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import IO, Literal

import numpy as np
import numpy.typing as npt

from ums.media.tones import tone

__all__ = [
    "RATE",
    "Decoder",
    "GreetingError",
    "GreetingKind",
    "beep",
    "default_goodbye",
    "default_greeting",
    "greeting_kind",
    "load_greeting",
    "load_greetings",
    "read_wav",
    "select_greeting",
]

Pcm = npt.NDArray[np.int16]
Decoder = Callable[[Path], Pcm]
GreetingKind = Literal["default", "busy", "unavailable"]

#: RFC 3551 §4.5.14: G.711 is sampled at 8000 Hz.
RATE = 8000

#: RFC 5806 §4 ("reason" values) and RFC 4458 §3 (History-Info "cause", a SIP status code:
#: 486 Busy Here; 408 Request Timeout = no answer; 480 Temporarily Unavailable; 503 Service
#: Unavailable = out of service).
_BUSY = frozenset({"user-busy", "486", "600"})
_UNAVAILABLE = frozenset({"no-answer", "unavailable", "out-of-service", "away", "408", "480", "503"})

#: Ramps at both ends of the beep so it starts and stops without a click.
BEEP_RAMP_S = 0.005


class GreetingError(ValueError):
    """A greeting file cannot be used: ``<path>: <problem>``."""


def read_wav(source: str | os.PathLike[str] | IO[bytes]) -> Pcm:
    """Samples of an 8 kHz, mono, 16-bit PCM WAV file; anything else raises :class:`GreetingError`."""
    name = getattr(source, "name", source)
    try:
        with wave.open(source if not isinstance(source, os.PathLike) else os.fspath(source), "rb") as w:
            shape = (w.getframerate(), w.getnchannels(), w.getsampwidth())
            if shape != (RATE, 1, 2):
                raise GreetingError(
                    f"{name}: need {RATE} Hz mono 16-bit PCM, got {shape[0]} Hz, "
                    f"{shape[1]} channel(s), {8 * shape[2]}-bit"
                )
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise GreetingError(f"{name}: not a PCM WAV file ({exc})") from exc
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


@functools.cache
def _builtin(name: str) -> Pcm:
    with resources.files(__package__).joinpath("data", name).open("rb") as f:
        pcm = read_wav(f)
    pcm.flags.writeable = False
    return pcm


def default_greeting() -> Pcm:
    """The built-in greeting, "Please leave a message after the tone." (read-only array)."""
    return _builtin("greeting_default.wav")


def default_goodbye() -> Pcm:
    """The built-in goodbye prompt, "Thank you. Goodbye." (read-only array)."""
    return _builtin("goodbye_default.wav")


def _checked(pcm: npt.ArrayLike, name: str) -> Pcm:
    arr = np.asarray(pcm)
    if arr.ndim != 1 or arr.size == 0:
        raise GreetingError(f"{name}: decoded to {arr.shape}, need a non-empty mono signal")
    if arr.dtype != np.int16:
        raise GreetingError(f"{name}: decoded to {arr.dtype}, need int16 samples at {RATE} Hz")
    return arr


def load_greeting(path: str | os.PathLike[str] | None, decode: Decoder | None = None) -> Pcm:
    """The greeting at ``path`` as int16 PCM at 8 kHz mono; ``None`` or ``""``: the built-in one.

    Parameters
    ----------
    path : the administrator's file, in any format ``decode`` understands.
    decode : ``decode(path) -> int16 array at 8 kHz mono``; ``None`` reads 8 kHz WAV files only
        (:func:`read_wav`). Its exceptions (other than ``GreetingError``) are wrapped in
        :class:`GreetingError` naming the file.
    """
    if path is None or os.fspath(path) == "":
        return default_greeting()
    p = Path(path)
    try:
        pcm = decode(p) if decode is not None else read_wav(p)
    except GreetingError:
        raise
    except Exception as exc:
        raise GreetingError(f"{p}: cannot decode ({exc})") from exc
    return _checked(pcm, str(p))


def load_greetings(
    *,
    default: str | os.PathLike[str] | None = None,
    busy: str | os.PathLike[str] | None = None,
    unavailable: str | os.PathLike[str] | None = None,
    decode: Decoder | None = None,
) -> dict[str, Pcm]:
    """A mailbox's greetings keyed by :data:`GreetingKind`; busy/unavailable only when configured."""
    greetings = {"default": load_greeting(default, decode)}
    for kind, path in (("busy", busy), ("unavailable", unavailable)):
        if path is not None and os.fspath(path) != "":
            greetings[kind] = load_greeting(path, decode)
    return greetings


def greeting_kind(reason: str | None) -> GreetingKind:
    """Which greeting a diversion ``reason`` (RFC 5806) or History-Info ``cause`` (RFC 4458) asks for."""
    value = (reason or "").strip().strip('"').strip().lower()
    if value in _BUSY:
        return "busy"
    if value in _UNAVAILABLE:
        return "unavailable"
    return "default"


def select_greeting(reason: str | None, greetings: Mapping[str, Pcm]) -> Pcm:
    """The greeting for ``reason``: busy / unavailable when configured, else default, else built-in."""
    kind = greeting_kind(reason)
    if kind in greetings:
        return greetings[kind]
    if "default" in greetings:
        return greetings["default"]
    return default_greeting()


@functools.lru_cache(maxsize=16)
def beep(
    frequency: float = 1000.0, duration: float = 0.4, level_dbm0: float = -12.0, rate: int = RATE
) -> Pcm:
    """The record tone: a sine at ``frequency`` and ``level_dbm0`` with 5 ms raised-cosine ramps.

    Made once per set of parameters (every call uses the same); the array is read-only.
    """
    return _readonly(_make_beep(frequency, duration, level_dbm0, rate))


def _readonly(pcm: Pcm) -> Pcm:
    pcm.setflags(write=False)
    return pcm


def _make_beep(frequency: float, duration: float, level_dbm0: float, rate: int) -> Pcm:
    if duration <= 0.0:
        return np.zeros(0, dtype=np.int16)
    pcm, _ = tone([frequency], duration, level_dbm0, rate)
    ramp = min(round(BEEP_RAMP_S * rate), len(pcm) // 2)
    if ramp > 0:
        window = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        shaped = pcm.astype(np.float64)
        shaped[:ramp] *= window
        shaped[len(pcm) - ramp :] *= window[::-1]
        pcm = np.rint(shaped).astype(np.int16)
    return pcm
