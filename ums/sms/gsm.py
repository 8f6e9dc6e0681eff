"""SMS text encoding: the GSM 7-bit alphabet, UCS-2, septet packing, concatenated messages.

What it does
------------
* ``gsm7_encodable``, ``encode_gsm7`` and ``decode_gsm7`` convert between text and the GSM 7-bit
  default alphabet with its default extension table (3GPP TS 23.038 §6.2.1 and §6.2.1.1): one
  septet value per byte, an extension character (``^ { } \\ [ ~ ] | €`` and form feed) as the
  escape 0x1B followed by its code.
* ``pack_septets`` and ``unpack_septets`` pack septets into octets and back (TS 23.038
  §6.1.2.1.1), with the fill bits that put the first septet on a septet boundary after a user data
  header (TS 23.040 §9.2.3.24).
* ``choose_encoding`` picks GSM 7-bit when every character is in the alphabet and UCS-2 otherwise.
  UCS-2 is sent as UTF-16BE, so a character outside the Basic Multilingual Plane (an emoji)
  becomes a surrogate pair, as phones send it.
* ``split_sms`` turns a text into the parts to submit: one part when it fits (160 septets or 70
  UTF-16 units), else concatenated parts (TS 23.040 §9.2.3.24.1 and .8) of 153 septets or 67
  units (152 and 66 with a 16-bit reference).  A part never ends inside an escape pair or a
  surrogate pair.  More than ``max_parts`` raises :class:`SmsTooLong`.
* ``parse_part`` reads one received part, ``join_sms`` puts the parts of a concatenated message
  back together in sequence order and decodes them; ``parse_udh`` and ``build_udh`` read and write
  a user data header.

How it works
------------
Pure functions on ``str`` and ``bytes``, no I/O.  The part payload is what SMPP's
``short_message`` carries (SMPP v3.4 §5.2.12 with ``esm_class`` UDHI 0x40 when there is a
header): the header, then the text.  For GSM 7-bit the text is the unpacked septets, one per
octet, with ``data_coding`` 0: that is what SMSCs usually expect over SMPP (they pack it for the
air interface themselves).  :meth:`SmsPart.packed` gives the packed TP-User-Data of an SMS-SUBMIT
PDU (TS 23.040 §9.2.3.24) for a modem or an SMSC that wants it packed.

``data_coding`` is the TS 23.038 §4 data coding scheme: 0x00 for GSM 7-bit, 0x08 for UCS-2
(SMPP uses the same two values).  The trailing spare bits of a packed message are zero: the
septet count in TP-UDL says where the text ends, so the <CR> padding of §6.1.2.1.1 is not needed
for SMS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DCS_GSM7",
    "DCS_UCS2",
    "GSM7_ALPHABET",
    "GSM7_EXTENSION",
    "IEI_CONCAT_8BIT",
    "IEI_CONCAT_16BIT",
    "Encoding",
    "SmsFormatError",
    "SmsPart",
    "SmsTooLong",
    "build_udh",
    "choose_encoding",
    "decode_gsm7",
    "encode_gsm7",
    "fill_bits_after",
    "gsm7_encodable",
    "join_sms",
    "pack_septets",
    "parse_part",
    "parse_udh",
    "split_sms",
    "unpack_septets",
]

Encoding = Literal["gsm7", "ucs2"]

DCS_GSM7: Final = 0x00
"""TS 23.038 §4: general data coding, GSM 7-bit default alphabet, no message class."""
DCS_UCS2: Final = 0x08
"""TS 23.038 §4: general data coding, UCS-2 (sent as UTF-16BE)."""
IEI_CONCAT_8BIT: Final = 0x00
"""TS 23.040 §9.2.3.24.1: concatenated short messages, 8-bit reference number."""
IEI_CONCAT_16BIT: Final = 0x08
"""TS 23.040 §9.2.3.24.8: concatenated short messages, 16-bit reference number."""

ESC: Final = 0x1B
"""TS 23.038 §6.2.1: escape to the extension table."""

#: TS 23.038 §6.2.1, the GSM 7-bit default alphabet by septet value (0x1B is the escape, not a character)
GSM7_ALPHABET: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
#: TS 23.038 §6.2.1.1, the default alphabet extension table: code after the escape -> character
GSM7_EXTENSION: Final[dict[int, str]] = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_ENCODE: Final[dict[str, tuple[int, ...]]] = {
    **{char: (code,) for code, char in enumerate(GSM7_ALPHABET) if code != ESC},
    **{char: (ESC, code) for code, char in GSM7_EXTENSION.items()},
}

SINGLE_SEPTETS: Final = 160
"""Septets in one short message: 140 octets of user data (TS 23.040 §9.2.3.16)."""
SINGLE_UNITS: Final = 70
"""UTF-16 code units in one short message (140 octets)."""
_USER_DATA_OCTETS: Final = 140


class SmsTooLong(ValueError):
    """The text needs more parts than allowed; ``reason`` says so for the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SmsFormatError(ValueError):
    """A received part or user data header cannot be read; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- GSM 7-bit alphabet --------------------------------------------------------------------------------


def gsm7_encodable(text: str) -> bool:
    """True when every character of ``text`` is in the default alphabet or its extension table."""
    return all(char in _ENCODE for char in text)


def encode_gsm7(text: str) -> bytes:
    """The septet values of ``text``, one per byte; an extension character is ESC (0x1B) and its code.

    Raises ValueError naming the first character that is not in the alphabet.
    """
    out = bytearray()
    for index, char in enumerate(text):
        codes = _ENCODE.get(char)
        if codes is None:
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) at {index} is not in the GSM 7-bit alphabet"
            )
        out.extend(codes)
    return bytes(out)


def decode_gsm7(septets: Iterable[int]) -> str:
    """The text of septet values (one per item, 0..127).

    TS 23.038 §6.2.1.1: an escape followed by a code the extension table does not define shows the
    default alphabet's character for that code; an escape followed by another escape (reserved for a
    further table) and a lone escape at the end show a space.  Raises ValueError for a value above 127.
    """
    values = list(septets)
    out: list[str] = []
    index = 0
    while index < len(values):
        code = values[index]
        if not 0 <= code <= 0x7F:
            raise ValueError(f"septet value {code} at {index} is out of range 0..127")
        index += 1
        if code != ESC:
            out.append(GSM7_ALPHABET[code])
            continue
        if index == len(values):
            out.append(" ")
            break
        code = values[index]
        if not 0 <= code <= 0x7F:
            raise ValueError(f"septet value {code} at {index} is out of range 0..127")
        index += 1
        out.append(" " if code == ESC else GSM7_EXTENSION.get(code, GSM7_ALPHABET[code]))
    return "".join(out)


def _check_fill(fill_bits: int) -> None:
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, not {fill_bits}")


def pack_septets(septets: Iterable[int], fill_bits: int = 0) -> bytes:
    """Pack septets into octets, least significant bit first (TS 23.038 §6.1.2.1.1).

    ``fill_bits`` zero bits come first, so that after a user data header of N octets the first
    septet starts on a septet boundary (TS 23.040 §9.2.3.24: ``(7 - (8 * N) % 7) % 7`` fill bits).
    Spare bits of the last octet are zero.
    """
    _check_fill(fill_bits)
    out = bytearray()
    acc = 0
    bits = fill_bits
    count = 0
    for count, septet in enumerate(septets, start=1):
        if not 0 <= septet <= 0x7F:
            raise ValueError(f"septet value {septet} at {count - 1} is out of range 0..127")
        acc |= septet << bits
        bits += 7
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if count and bits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    """The first ``count`` septets packed in ``data`` after ``fill_bits`` fill bits (inverse of pack)."""
    _check_fill(fill_bits)
    if count < 0:
        raise ValueError(f"septet count must not be negative, not {count}")
    needed = (fill_bits + 7 * count + 7) // 8 if count else 0
    if len(data) < needed:
        raise SmsFormatError(f"{count} septets need {needed} octets, the data has {len(data)}")
    value = int.from_bytes(data[:needed], "little") >> fill_bits
    return [(value >> (7 * index)) & 0x7F for index in range(count)]


def fill_bits_after(udh_octets: int) -> int:
    """Fill bits between a user data header of ``udh_octets`` octets and the first septet."""
    return (7 - (8 * udh_octets) % 7) % 7


def choose_encoding(text: str) -> Encoding:
    """``"gsm7"`` when the text is in the GSM 7-bit alphabet (extension table included), else ``"ucs2"``."""
    return "gsm7" if gsm7_encodable(text) else "ucs2"


def _utf16(text: str) -> bytes:
    """UTF-16BE; a lone surrogate (not a character, cannot be sent) becomes U+FFFD."""
    if any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        text = "".join("\ufffd" if 0xD800 <= ord(char) <= 0xDFFF else char for char in text)
    return text.encode("utf-16-be")


# -- user data header ----------------------------------------------------------------------------------


def build_udh(ies: Sequence[tuple[int, bytes]]) -> bytes:
    """A user data header: UDHL, then each information element as IEI, IEDL, data (TS 23.040 §9.2.3.24).

    Returns ``b""`` for no elements.
    """
    if not ies:
        return b""
    body = bytearray()
    for iei, data in ies:
        if not 0 <= iei <= 0xFF or len(data) > 0xFF:
            raise ValueError(f"information element {iei} with {len(data)} octets does not fit a header")
        body += bytes((iei, len(data))) + data
    if len(body) > _USER_DATA_OCTETS - 1:
        raise ValueError(f"user data header of {len(body)} octets is too long")
    return bytes((len(body),)) + bytes(body)


def parse_udh(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split user data that starts with a header into its information elements and the rest.

    ``data`` begins with the UDHL octet (TS 23.040 §9.2.3.24).  Returns ``([(iei, data), ...], rest)``;
    for GSM 7-bit packed data the rest starts with the fill bits.  Raises :class:`SmsFormatError` for
    a header longer than the data or an element that overruns it.
    """
    if not data:
        raise SmsFormatError("the user data is empty, no header length")
    length = data[0]
    if len(data) < 1 + length:
        raise SmsFormatError(f"the user data header says {length} octets, only {len(data) - 1} are there")
    header = data[1 : 1 + length]
    ies: list[tuple[int, bytes]] = []
    index = 0
    while index < len(header):
        if index + 2 > len(header):
            raise SmsFormatError(f"information element at octet {index} of the header has no length")
        iei, size = header[index], header[index + 1]
        if index + 2 + size > len(header):
            raise SmsFormatError(f"information element 0x{iei:02X} overruns the header")
        ies.append((iei, bytes(header[index + 2 : index + 2 + size])))
        index += 2 + size
    return ies, bytes(data[1 + length :])


def _concat_ie(ref: int, total: int, seq: int, ref16: bool) -> tuple[int, bytes]:
    if ref16:
        return IEI_CONCAT_16BIT, ref.to_bytes(2, "big") + bytes((total, seq))
    return IEI_CONCAT_8BIT, bytes((ref, total, seq))


def _concat_info(ies: Sequence[tuple[int, bytes]]) -> tuple[int, int, int] | None:
    """(reference, total, sequence) from a concatenation element, None when there is none."""
    for iei, data in ies:
        if iei == IEI_CONCAT_8BIT and len(data) == 3:
            return data[0], data[1], data[2]
        if iei == IEI_CONCAT_16BIT and len(data) == 4:
            return int.from_bytes(data[:2], "big"), data[2], data[3]
    return None


# -- parts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsPart:
    """One short message of a text.

    Attributes
    ----------
    encoding : {"gsm7", "ucs2"}
    udh : bytes
        The user data header with its length octet first; ``b""`` for a single message.
    payload : bytes
        SMPP ``short_message``: the header, then the text as unpacked septets (one per octet, GSM
        7-bit; SMSCs usually take it so with ``data_coding`` 0 and pack it themselves) or UTF-16BE.
        Set ``esm_class`` UDHI (0x40) when :attr:`udh` is not empty.  See :meth:`packed` for the
        packed form.
    data_coding : int
        TS 23.038 data coding scheme: :data:`DCS_GSM7` or :data:`DCS_UCS2`.
    septets_or_octets : int
        TP-User-Data-Length (TS 23.040 §9.2.3.16): septets for GSM 7-bit, the header and its fill
        bits counted as septets; octets for UCS-2, the header included.
    text : str
        The text this part carries.
    """

    encoding: Encoding
    udh: bytes
    payload: bytes
    data_coding: int
    septets_or_octets: int
    text: str

    @property
    def body(self) -> bytes:
        """The payload without the header: unpacked septets or UTF-16BE."""
        return self.payload[len(self.udh) :]

    @property
    def udhi(self) -> bool:
        """TP-UDHI / SMPP ``esm_class`` 0x40: the user data starts with a header."""
        return bool(self.udh)

    def packed(self) -> bytes:
        """TP-User-Data as in an SMS-SUBMIT PDU: the header, then septets packed after the fill bits.

        For UCS-2 this is :attr:`payload`.
        """
        if self.encoding == "ucs2":
            return self.payload
        return self.udh + pack_septets(self.body, fill_bits_after(len(self.udh)))


def _udl(encoding: Encoding, udh: bytes, body: bytes) -> int:
    if encoding == "ucs2":
        return len(udh) + len(body)
    return (len(udh) * 8 + fill_bits_after(len(udh))) // 7 + len(body)


def _make_part(encoding: Encoding, udh: bytes, text: str) -> SmsPart:
    body = encode_gsm7(text) if encoding == "gsm7" else _utf16(text)
    dcs = DCS_GSM7 if encoding == "gsm7" else DCS_UCS2
    return SmsPart(encoding, udh, udh + body, dcs, _udl(encoding, udh, body), text)


def _capacity(encoding: Encoding, udh_octets: int) -> int:
    """Septets or UTF-16 units left in one message after a header of ``udh_octets`` octets."""
    if encoding == "ucs2":
        return (_USER_DATA_OCTETS - udh_octets) // 2
    return SINGLE_SEPTETS - (udh_octets * 8 + fill_bits_after(udh_octets)) // 7


def _units(char: str, encoding: Encoding) -> int:
    if encoding == "gsm7":
        return len(_ENCODE[char])
    return 2 if ord(char) > 0xFFFF else 1


def _chunks(text: str, encoding: Encoding, capacity: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``capacity`` units, never inside one character's units."""
    chunks: list[str] = []
    start = 0
    used = 0
    for index, char in enumerate(text):
        size = _units(char, encoding)
        if used + size > capacity:
            chunks.append(text[start:index])
            start, used = index, 0
        used += size
    chunks.append(text[start:])
    return chunks


def split_sms(text: str, ref: int, *, max_parts: int = 255, ref16: bool = False) -> list[SmsPart]:
    """The short messages that carry ``text``.

    Parameters
    ----------
    text
        The message text.  An empty text is one empty part.
    ref
        Concatenation reference number, the same for all parts of this text and different from the
        other recent texts to the same recipient: 0..255, or 0..65535 with ``ref16``.
    max_parts
        Most parts allowed, 1..255.
    ref16
        Use the 16-bit reference element (0x08) instead of the 8-bit one (0x00).

    Returns
    -------
    list of SmsPart
        One part without a header when the text fits in 160 septets (GSM 7-bit) or 70 UTF-16 units
        (UCS-2); else parts of at most 153 septets or 67 units (152 or 66 with ``ref16``), each
        with a concatenation header (reference, total, sequence number from 1).

    Raises
    ------
    SmsTooLong
        The text needs more than ``max_parts`` parts.
    ValueError
        ``ref`` or ``max_parts`` out of range.
    """
    if not 1 <= max_parts <= 255:
        raise ValueError(f"max_parts must be 1..255, not {max_parts}")
    if not 0 <= ref <= (0xFFFF if ref16 else 0xFF):
        raise ValueError(f"reference {ref} is out of range for a {16 if ref16 else 8}-bit reference")
    encoding = choose_encoding(text)
    total_units = sum(_units(char, encoding) for char in text)
    if total_units <= _capacity(encoding, 0):
        return [_make_part(encoding, b"", text)]
    udh_octets = 1 + 2 + (4 if ref16 else 3)
    chunks = _chunks(text, encoding, _capacity(encoding, udh_octets))
    if len(chunks) > max_parts:
        what = "GSM 7-bit" if encoding == "gsm7" else "Unicode (UCS-2)"
        raise SmsTooLong(
            f"the text is too long for SMS: {len(text)} characters need {len(chunks)} {what} messages,"
            f" at most {max_parts} are allowed"
        )
    total = len(chunks)
    return [
        _make_part(encoding, build_udh([_concat_ie(ref, total, seq, ref16)]), chunk)
        for seq, chunk in enumerate(chunks, start=1)
    ]


# -- received parts ------------------------------------------------------------------------------------


def _encoding_of(data_coding: int) -> Encoding:
    """GSM 7-bit or UCS-2 from a TS 23.038 §4 data coding scheme; anything else is refused."""
    group = data_coding >> 4
    alphabet: int | None = None
    if group <= 0x7:  # general data coding, 0x40..0x7F marked for automatic deletion (bit 5 compressed)
        if data_coding & 0x20:
            raise SmsFormatError(f"data coding 0x{data_coding:02X}: compressed text is not supported")
        alphabet = (data_coding >> 2) & 0x3
    elif group in (0xC, 0xD):  # message waiting indication, GSM 7-bit
        alphabet = 0
    elif group == 0xE:  # message waiting indication, UCS-2
        alphabet = 2
    elif group == 0xF:  # data coding / message class
        alphabet = 1 if data_coding & 0x04 else 0
    if alphabet == 0:
        return "gsm7"
    if alphabet == 2:
        return "ucs2"
    raise SmsFormatError(f"data coding 0x{data_coding:02X} is not text (8-bit data or reserved)")


def parse_part(
    user_data: bytes, data_coding: int, *, udhi: bool = False, packed: bool = False, udl: int | None = None
) -> SmsPart:
    """A received short message as an :class:`SmsPart`.

    Parameters
    ----------
    user_data
        SMPP ``short_message`` or TP-User-Data: the header first when ``udhi``.
    data_coding
        The TS 23.038 data coding scheme (0 GSM 7-bit, 8 UCS-2; the message waiting and class groups
        are understood too).
    udhi
        TP-UDHI, or SMPP ``esm_class & 0x40``.
    packed
        GSM 7-bit septets are packed (as in a PDU); then ``udl`` (TP-UDL, septets including the header)
        is needed.  Unpacked (SMPP) septets are one per octet.

    Raises
    ------
    SmsFormatError
        Unsupported coding, a broken header, too little data, or septet values above 127.
    """
    encoding = _encoding_of(data_coding)
    udh = b""
    rest = user_data
    if udhi:
        parse_udh(user_data)
        udh = bytes(user_data[: 1 + user_data[0]])
        rest = user_data[len(udh) :]
    if encoding == "ucs2":
        if len(rest) % 2:
            raise SmsFormatError(f"UCS-2 text of {len(rest)} octets is not whole UTF-16 units")
        text = rest.decode("utf-16-be", errors="replace")
        return SmsPart(encoding, udh, udh + rest, DCS_UCS2, len(udh) + len(rest), text)
    if packed:
        if udl is None:
            raise ValueError("packed GSM 7-bit data needs udl, the septet count")
        header_septets = (len(udh) * 8 + fill_bits_after(len(udh))) // 7
        if udl < header_septets:
            raise SmsFormatError(f"user data length {udl} is shorter than the {header_septets}-septet header")
        septets = bytes(unpack_septets(rest, udl - header_septets, fill_bits_after(len(udh))))
    else:
        septets = bytes(rest)
    try:
        text = decode_gsm7(septets)
    except ValueError as exc:
        raise SmsFormatError(f"GSM 7-bit text: {exc}") from None
    return SmsPart(encoding, udh, udh + septets, DCS_GSM7, _udl(encoding, udh, septets), text)


def join_sms(parts: Sequence[SmsPart]) -> str:
    """The text of a concatenated message from all its parts, in any order.

    The parts are ordered by the sequence number of their concatenation element (8- or 16-bit
    reference); duplicates are ignored.  Consecutive parts of one encoding are decoded together,
    so an escape or surrogate pair that a sender split across parts still comes out whole.

    Raises
    ------
    SmsFormatError
        No parts, several parts without a concatenation element, parts of different messages
        (reference or total), a sequence number out of range, or a missing part.
    """
    if not parts:
        raise SmsFormatError("no parts to join")
    infos = [_concat_info(parse_udh(part.udh)[0]) if part.udh else None for part in parts]
    if len(parts) == 1 and infos[0] is None:
        return _decode_run([parts[0]])
    by_seq: dict[int, SmsPart] = {}
    key: tuple[int, int] | None = None
    for part, info in zip(parts, infos, strict=True):
        if info is None:
            raise SmsFormatError("a part of a concatenated message has no concatenation header")
        ref, total, seq = info
        if key is None:
            key = (ref, total)
        elif key != (ref, total):
            raise SmsFormatError(f"parts of different messages: reference/total {key} and {(ref, total)}")
        if not 1 <= seq <= total:
            raise SmsFormatError(f"sequence number {seq} is out of range 1..{total}")
        by_seq.setdefault(seq, part)
    assert key is not None
    missing = [seq for seq in range(1, key[1] + 1) if seq not in by_seq]
    if missing:
        raise SmsFormatError(f"parts {missing} of {key[1]} are missing")
    ordered = [by_seq[seq] for seq in range(1, key[1] + 1)]
    out: list[str] = []
    run: list[SmsPart] = []
    for part in ordered:
        if run and part.encoding != run[0].encoding:
            out.append(_decode_run(run))
            run = []
        run.append(part)
    out.append(_decode_run(run))
    return "".join(out)


def _decode_run(run: Sequence[SmsPart]) -> str:
    data = b"".join(part.body for part in run)
    if run[0].encoding == "ucs2":
        return data[: len(data) - len(data) % 2].decode("utf-16-be", errors="replace")
    try:
        return decode_gsm7(data)
    except ValueError as exc:
        raise SmsFormatError(f"GSM 7-bit text: {exc}") from None
