"""The SIP message corpus in testdata/sip and a seeded mutator built on it.

What it does
------------
:func:`load` reads one corpus file as wire bytes, :func:`corpus` reads them all, and
:func:`mutated_messages` yields a reproducible stream of damaged messages for fuzzing anything
that takes SIP bytes (the parser here, the user agent elsewhere).

How it works
------------
Corpus files are stored with LF line ends (converted to CRLF on load) and may spell raw octets
as ``<hex>0D0A</hex>``, so NULs, bare CRs and non-UTF-8 bytes survive editors and git.  Each
mutated message is one corpus message (or a splice of two) with one to four mutations applied:
bit flips, byte inserts/deletes, truncation, header lines duplicated, removed, swapped or given
a random value, absurd Content-Length values, NULs, non-UTF-8 bytes, LF-only line ends.  Only
:class:`random.Random` with the caller's seed is used, so a seed names a stream exactly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parents[3] / "testdata" / "sip"

_HEX_RE = re.compile(rb"<hex>([0-9A-Fa-f]*)</hex>")

#: Bytes that sit on the grammar's boundaries, where parsers break.
INTERESTING: tuple[bytes, ...] = (
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b";",
    b",",
    b":",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"%0",
    b"%zz",
    b"@",
    b"[",
    b"]",
    b"[::1]",
    b"=",
    b"/",
    b"?",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\x80\xfe\xff",
    "²".encode(),
    "١٢".encode(),
    b"sip:",
    b"tel:",
    b"SIP/2.0",
    b"65536",
    b"-1",
    b"99999999999999999999",
    b"z9hG4bK",
    b";tag=",
    b";branch=",
    b";lr",
    b"\r\n ",
    b"m=audio 0 RTP/AVP 0\r\n",
    b"c=IN IP4 0.0.0.0\r\n",
    b"a=rtpmap:",
)

_HEADER_VALUES: tuple[bytes, ...] = (
    b"",
    b" ",
    b"<",
    b'"unterminated <sip:a@b>',
    b"<sip:a@b>;tag",
    b"<sip:a@b>;;",
    b"sip:a@b?x=y",
    b"<sip:[::1>",
    b"<sip:a@[::1]:99999>",
    b"<sip:a@b:0x10>",
    b"<tel:>",
    b"<nobody:x>",
    b"SIP/2.0/UDP",
    b"SIP/2.0/UDP host;branch",
    b"SIP/2.0/UDP host;received=999.1.1.1",
    b"SIP/2.0/UDP [::1]:5060;rport=70000",
    b"SIP/3.0/UDP host",
    b"1 INVITE extra",
    b"4294967296 INVITE",
    b"-5 INVITE",
    b'Digest realm="a, b", nonce="x", qop="auth,auth-int", algorithm=SHA-256',
    b'Digest realm="unterminated',
    b"Digest nonce=,realm=",
    b"Basic realm=x",
    b"application/sdp",
    b"99999999999999999999999999999999999999",
    b"\x00\x01\x02",
    b"\xff\xfe",
)

_CONTENT_LENGTHS: tuple[bytes, ...] = (
    b"-1",
    b"0",
    b"1",
    b"65535",
    b"65536",
    b"4294967296",
    b"99999999999999999999",
    b"1" * 5000,
    b"0x10",
    b" 12 ",
    b"",
    "²".encode(),
)


# any octet -> a printable ASCII character (for random header values)
_PRINTABLE = bytes(32 + i % 95 for i in range(256))


def decode_corpus_text(raw: bytes) -> bytes:
    """Corpus file bytes -> wire bytes (LF -> CRLF, ``<hex>..</hex>`` -> octets)."""
    wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return _HEX_RE.sub(lambda m: bytes.fromhex(m.group(1).decode("ascii")), wire)


def load(name: str) -> bytes:
    """One corpus message by file stem (``"wsinv"``) as wire bytes."""
    return decode_corpus_text((CORPUS_DIR / f"{name}.txt").read_bytes())


@cache
def _corpus() -> tuple[tuple[str, bytes], ...]:
    return tuple((p.stem, decode_corpus_text(p.read_bytes())) for p in sorted(CORPUS_DIR.glob("*.txt")))


def corpus() -> dict[str, bytes]:
    """Every corpus message, by file stem."""
    return dict(_corpus())


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), (sep + body)


def _join(lines: list[bytes], rest: bytes) -> bytes:
    return b"\r\n".join(lines) + rest


def _bit_flip(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _insert(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data) + 1)
    piece = rng.choice(INTERESTING) if rng.random() < 0.8 else bytes([rng.randrange(256)])
    return data[:i] + piece + data[i:]


def _delete(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 8) :]


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    lines.insert(rng.randrange(1, len(lines) + 1), lines[i])
    return _join(lines, rest)


def _remove_line(rng: random.Random, data: bytes) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    del lines[rng.randrange(1, len(lines))]
    return _join(lines, rest)


def _swap_lines(rng: random.Random, data: bytes) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 3:
        return data
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines, rest)


def _header_value(rng: random.Random, data: bytes) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    name, colon, _value = lines[i].partition(b":")
    if not colon:
        return data
    if rng.random() < 0.5:
        value = rng.choice(_HEADER_VALUES)
    else:
        value = rng.randbytes(rng.randint(0, 40)).translate(_PRINTABLE)
    lines[i] = name + b": " + value
    return _join(lines, rest)


def _content_length(rng: random.Random, data: bytes) -> bytes:
    lines, rest = _lines(data)
    value = rng.choice(_CONTENT_LENGTHS)
    for i, line in enumerate(lines):
        low = line.lower()
        if low.startswith((b"content-length", b"l:", b"l :")):
            lines[i] = line.partition(b":")[0] + b": " + value
            return _join(lines, rest)
    lines.append(b"Content-Length: " + value)
    return _join(lines, rest)


def _lf_only(rng: random.Random, data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def _double(rng: random.Random, data: bytes) -> bytes:
    return data + data[: rng.randrange(len(data) + 1)]


def _replace_char(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + rng.choice(INTERESTING) + data[i + 1 :]


_Mutator = Callable[[random.Random, bytes], bytes]

#: (mutation, weight)
MUTATIONS: tuple[tuple[_Mutator, int], ...] = (
    (_bit_flip, 3),
    (_insert, 4),
    (_delete, 3),
    (_truncate, 1),
    (_duplicate_line, 2),
    (_remove_line, 2),
    (_swap_lines, 1),
    (_header_value, 4),
    (_content_length, 2),
    (_lf_only, 1),
    (_double, 1),
    (_replace_char, 4),
)
_FUNCS = [f for f, _ in MUTATIONS]
_WEIGHTS = [w for _, w in MUTATIONS]


def mutated_messages(seed: int, count: int) -> Iterator[bytes]:
    """``count`` damaged SIP messages, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    messages = [data for _, data in _corpus()]
    for _ in range(count):
        data = rng.choice(messages)
        if rng.random() < 0.05:
            other = rng.choice(messages)
            data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
        for func in rng.choices(_FUNCS, _WEIGHTS, k=rng.randint(1, 4)):
            data = func(rng, data)
        yield data
