#!/bin/sh
# Regenerate speech-alaw.wav: about 12 s of synthetic speech, 8 kHz A-law mono.
# Needs espeak-ng and sox (scripts/install-peers.sh installs both).
# The voice and the wording are fixed; re-running with another espeak-ng version may give
# slightly different audio, which is why the result is kept in the repository.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 170 -w "$tmp/raw.wav" \
  "Hello, this is Jane Doe from the accounts department. I am calling about the invoice we sent you \
last week. Could you please check whether the payment has gone out, and call me back? Thank you."
# 8 kHz, telephone band, peak at -6 dBFS, leading and trailing silence trimmed, A-law.
sox "$tmp/raw.wav" -r 8000 -c 1 "$tmp/8k.wav" highpass 200 lowpass 3400 \
  silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse gain -n -6
sox "$tmp/8k.wav" -e a-law -b 8 speech-alaw.wav
soxi speech-alaw.wav
