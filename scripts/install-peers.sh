#!/usr/bin/env bash
# Install the Debian programs the acceptance tests use as real peers, only when missing.
set -euo pipefail
declare -A need=(
  [sipp]=sip-tester
  [kamailio]=kamailio
  [baresip]="baresip baresip-core"
  [espeak-ng]=espeak-ng
  [sox]=sox
  [fax2tiff]=libtiff-tools
  [redis-server]=redis-server
  [dovecot]=dovecot-imapd
  [pdftoppm]=poppler-utils
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=(${need[$cmd]})
done
# libraries the tests load with ctypes (SpanDSP is the independent fax machine)
declare -A libs=(
  [libspandsp.so.2]=libspandsp2
)
for lib in "${!libs[@]}"; do
  /sbin/ldconfig -p 2>/dev/null | grep -q "$lib" || missing+=(${libs[$lib]})
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing test peers: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
