"""Synthetic speech from ``espeak-ng`` for tests that need a lot of real-sounding voice.

What it does
------------
:func:`corpus` returns ``seconds`` of 8 kHz int16 speech: English and German text read by several
espeak-ng voices at different speeds and pitches, each utterance at its own level, one after the
other with short pauses.  The result is cached as a WAV file in a directory the caller gives
(a pytest tmp dir), keyed by the parameters, so a second call in the same run costs a file read.
:func:`available` tells whether espeak-ng is installed (``scripts/install-peers.sh`` installs it).

How it works
------------
Each utterance is one ``espeak-ng -v VOICE -s SPEED -p PITCH -w file.wav TEXT`` run (22.05 kHz),
resampled to 8 kHz in the frequency domain (:func:`tests.peers.audio.resample`), scaled to a
level in dBm0 (a full-scale sine is +3.14 dBm0) measured over its active part.  The voice, speed,
pitch, level, text and pause of each utterance come from a seeded generator, so the corpus is the
same on every machine with the same espeak-ng.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tests.peers.audio import read_wav, resample, write_wav

__all__ = ["ENGLISH", "GERMAN", "VOICES", "available", "corpus", "utterance"]

RATE = 8000
FULL_SCALE_DBM0 = 3.14

ENGLISH = (
    "Thank you for calling. Nobody is available to take your call right now, so please leave a "
    "message after the tone, and we will call you back as soon as we can.",
    "The weather tomorrow will be cloudy in the morning, with a few showers spreading from the west "
    "during the afternoon. Temperatures will reach eleven degrees, falling to four overnight.",
    "Hello, this is Margaret from the accounts department. I am calling about invoice number "
    "four seven one one, which is still open. Could you ring me back on extension two hundred?",
    "Press one for sales, two for support, or stay on the line to speak to an operator. "
    "Your call is important to us; please hold and the next free agent will answer.",
    "In the beginning the line was quiet, then a long, slow voice began to read the minutes of "
    "the meeting: apologies, matters arising, the budget, and any other business.",
    "Shipping was delayed because of the strike at the harbour. The new estimate is Thursday "
    "the ninth, but I would not count on it before the following Monday, honestly.",
    "Oh, and one more thing: the key to the back door is under the flower pot, not the mat. "
    "Remember to feed the cat twice a day, and water the tomatoes if it does not rain.",
    "Zero, one, two, three, four, five, six, seven, eight, nine. Alpha, bravo, charlie, delta, "
    "echo, foxtrot, golf, hotel, india, juliet, kilo, lima, mike, november.",
)

GERMAN = (
    "Guten Tag, Sie sind mit der Mailbox von Familie Schneider verbunden. Bitte hinterlassen Sie "
    "nach dem Signalton eine Nachricht, wir rufen so bald wie möglich zurück.",
    "Die Wettervorhersage für morgen: im Norden zeitweise Regen, im Süden sonnig bei bis zu "
    "achtzehn Grad. In der Nacht kühlt es auf sechs Grad ab, der Wind weht schwach aus Ost.",
    "Hallo, hier ist Jürgen aus der Buchhaltung. Es geht um die Rechnung vom dritten März, die "
    "noch nicht bezahlt ist. Rufen Sie mich doch bitte unter der Durchwahl dreiundzwanzig an.",
    "Drücken Sie die Eins für den Verkauf, die Zwei für den Kundendienst, oder bleiben Sie am "
    "Apparat, um mit einem Mitarbeiter zu sprechen. Vielen Dank für Ihre Geduld.",
    "Der Zug nach München fährt heute ausnahmsweise von Gleis sieben ab. Wegen Bauarbeiten "
    "verzögert sich die Abfahrt um etwa zwanzig Minuten. Wir bitten um Ihr Verständnis.",
    "Null, eins, zwei, drei, vier, fünf, sechs, sieben, acht, neun. Ich wiederhole: die "
    "Kundennummer lautet vier, acht, fünfzehn, sechzehn, dreiundzwanzig, zweiundvierzig.",
)

#: (espeak-ng voice, language of the text it reads)
VOICES = (
    ("en-us", "en"),
    ("en-us+f3", "en"),
    ("en-gb+m3", "en"),
    ("en-gb+f2", "en"),
    ("en+klatt2", "en"),
    ("en-gb-x-rp+m7", "en"),
    ("en-gb-scotland+f4", "en"),
    ("de", "de"),
    ("de+f1", "de"),
    ("de+m2", "de"),
    ("de+f5", "de"),
    ("de+klatt", "de"),
)


def available() -> bool:
    return shutil.which("espeak-ng") is not None


def utterance(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """One espeak-ng utterance as 8 kHz float64 (espeak's own scale, not levelled)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (see scripts/install-peers.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "u.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        pcm, rate = read_wav(out)
    return resample(pcm.astype(np.float64), rate, RATE)


def _level(x: np.ndarray, level_dbm0: float) -> np.ndarray:
    """Scale ``x`` so its active part (20 ms frames within 30 dB of the loudest) is at ``level_dbm0``."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    power = np.mean(frames * frames, axis=1)
    active = power[power > power.max() * 1e-3] if power.size and power.max() > 0 else power
    ms = float(np.mean(active)) if active.size else 0.0
    if ms <= 0.0:
        return x
    target = 32768.0**2 / 2.0 * 10.0 ** ((level_dbm0 - FULL_SCALE_DBM0) / 10.0)
    scaled: np.ndarray = x * np.sqrt(target / ms)
    return scaled


def corpus(
    seconds: float,
    cache_dir: str | Path | None = None,
    *,
    seed: int = 1,
    level_range_dbm0: tuple[float, float] = (-30.0, -12.0),
) -> np.ndarray:
    """``seconds`` of 8 kHz int16 speech: utterances by the voices in :data:`VOICES` at speeds
    120-220 words/min and pitches 20-80, each at a level drawn from ``level_range_dbm0`` (active
    speech), separated by 0.1-1.0 s pauses.  Cached in ``cache_dir`` when given."""
    key = hashlib.sha256(
        f"{seconds}:{seed}:{level_range_dbm0}:{VOICES}:{ENGLISH}:{GERMAN}".encode()
    ).hexdigest()
    path = Path(cache_dir) / f"speech-{key[:16]}.wav" if cache_dir is not None else None
    if path is not None and path.exists():
        cached, _ = read_wav(path)
        return cached
    rng = np.random.default_rng(seed)
    need = round(seconds * RATE)
    parts: list[np.ndarray] = []
    total = 0
    while total < need:
        voice, lang = VOICES[int(rng.integers(len(VOICES)))]
        texts = ENGLISH if lang == "en" else GERMAN
        text = texts[int(rng.integers(len(texts)))]
        speed = int(rng.integers(120, 221))
        pitch = int(rng.integers(20, 81))
        level = float(rng.uniform(*level_range_dbm0))
        speech = _level(utterance(text, voice, speed, pitch), level)
        pause = np.zeros(int(rng.integers(800, 8001)))
        parts += [speech, pause]
        total += len(speech) + len(pause)
    x = np.concatenate(parts)[:need]
    pcm: np.ndarray = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, pcm, RATE)
    return pcm
