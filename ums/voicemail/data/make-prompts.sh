#!/bin/sh
# Regenerates the built-in prompts of ums.voicemail (8 kHz, 16-bit, mono WAV).
#   sh ums/voicemail/data/make-prompts.sh [python]
# Needs espeak-ng, sox and a Python with numpy (default: .venv/bin/python).
# Speech is synthesised at 22.05 kHz, resampled to 8 kHz with sox's linear-phase "rate" filter,
# compressed gently (sox compand, so speech peaks do not limit the level), trimmed to 50 ms of silence at each end, then scaled so that the RMS level of the whole prompt is
# -16 dBFS (re a full-scale square wave), with the peaks limited to -1 dBFS.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=${1:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make() {
    name=$1
    text=$2
    espeak-ng -v en-us -s 150 -p 45 -w "$tmp/$name.raw.wav" "$text"
    sox "$tmp/$name.raw.wav" -r 8000 -c 1 -b 16 "$tmp/$name.8k.wav" \
        highpass 100 rate -v 8000 compand 0.001,0.08 -70,-70,-50,-40,-30,-22,0,-10 -4 -90 0.002 \
        silence 1 0.01 -50d reverse silence 1 0.01 -50d reverse pad 0.05 0.05
    "$py" - "$tmp/$name.8k.wav" "$here/$name.wav" <<'PY'
import sys
import wave

import numpy as np

with wave.open(sys.argv[1], "rb") as w:
    assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
target_rms = 32768.0 * 10.0 ** (-16.0 / 20.0)
peak_limit = 32768.0 * 10.0 ** (-1.0 / 20.0)
gain = min(target_rms / np.sqrt(np.mean(x**2)), peak_limit / np.max(np.abs(x)))
y = np.clip(np.rint(x * gain), -32768, 32767).astype("<i2")
with wave.open(sys.argv[2], "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(8000)
    w.writeframes(y.tobytes())
rms_db = 20 * np.log10(np.sqrt(np.mean(y.astype(float) ** 2)) / 32768)
peak_db = 20 * np.log10(np.max(np.abs(y.astype(float))) / 32768)
print(f"{sys.argv[2]}: {len(y) / 8000:.2f} s, rms {rms_db:.1f} dBFS, peak {peak_db:.1f} dBFS")
PY
}

make greeting_default "Please leave a message after the tone."
make goodbye_default "Thank you. Goodbye."
