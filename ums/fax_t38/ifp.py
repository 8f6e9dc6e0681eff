"""T.38 Internet Facsimile Protocol (IFP) packets, ALIGNED PER (X.691) per T.38 Annex A.

What it does
------------
:func:`encode_ifp` turns an :class:`Indicator` or :class:`Data` packet into the bytes carried as
``primary-ifp-packet`` of a UDPTL datagram; :func:`decode_ifp` does the reverse and raises
:class:`IfpError` (a ``ValueError``) for anything that is not a well-formed packet, never another
exception.  ``version`` is the negotiated ``T38FaxVersion``: version 0 uses the 1998 ASN.1, whose
``field-type`` has no extension marker; versions 1 and later use the 2002 ASN.1 with it.

How it works
------------
The module (T.38 Annex A) is::

    IFPPacket ::= SEQUENCE { type-of-msg Type-of-msg, data-field Data-Field OPTIONAL }
    Type-of-msg ::= CHOICE { t30-indicator ENUMERATED {16 values, ..., 7 more},
                             t30-data ENUMERATED {9 values, ..., 6 more} }
    Data-Field ::= SEQUENCE OF SEQUENCE {
        field-type ENUMERATED {8 values, ..., 4 more},     -- no "..." in the 1998 text
        field-data OCTET STRING (SIZE (1..65535)) OPTIONAL }

so the first octet is ``[data-field present][choice][ext][4-bit index][pad]``; an extension
value is the ext bit, a 0 bit and a 6-bit index (X.691 §13, §10.6).  The field count is a
length determinant (X.691 §10.9, octet aligned); each field is a presence bit, the field type
(3 bits, or ext bit + 3 bits, or ext bit + 7 bits), then, if present, an aligned 16-bit
``length - 1`` and the octets.  A field without data is *not* padded: the next field starts
in the same octet (4 bits per field in version 0, 5 bits in later versions).

SpanDSP's encoder (and, for version 1+, its decoder) starts every field on a fresh octet
instead.  The two layouts agree whenever data-less fields only come last (the usual
``[hdlc-data, hdlc-fcs-OK]``, ``[hdlc-fcs-OK-sig-end]`` and ``[t4-non-ecm-sig-end]`` packets),
so a sender should keep it that way.  :func:`encode_ifp` writes X.691 unless
``octet_fields=True``; :func:`decode_ifp` reads both: when they can differ it tries both and
keeps the plausible reading (X.691 on a tie).  Padding bits must be zero.  Trailing zero octets
after a complete packet are ignored, because a packet rebuilt from UDPTL parity FEC is
zero-padded to the longest packet of its group.  The V.34 field types (``cm-message`` ...) follow
X.691; SpanDSP places their 6-bit index one bit later, so those are not interchangeable with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

__all__ = [
    "Data",
    "Field",
    "FieldType",
    "IfpError",
    "IfpPacket",
    "Indicator",
    "T30Data",
    "T30Indicator",
    "decode_ifp",
    "encode_ifp",
]


class IfpError(ValueError):
    """An IFP packet that cannot be decoded, or a packet that cannot be encoded."""


class T30Indicator(StrEnum):
    """``t30-indicator`` (T.38 Annex A), in ASN.1 order; the last 7 are extensions."""

    NO_SIGNAL = "no-signal"
    CNG = "cng"
    CED = "ced"
    V21_PREAMBLE = "v21-preamble"
    V27_2400_TRAINING = "v27-2400-training"
    V27_4800_TRAINING = "v27-4800-training"
    V29_7200_TRAINING = "v29-7200-training"
    V29_9600_TRAINING = "v29-9600-training"
    V17_7200_SHORT_TRAINING = "v17-7200-short-training"
    V17_7200_LONG_TRAINING = "v17-7200-long-training"
    V17_9600_SHORT_TRAINING = "v17-9600-short-training"
    V17_9600_LONG_TRAINING = "v17-9600-long-training"
    V17_12000_SHORT_TRAINING = "v17-12000-short-training"
    V17_12000_LONG_TRAINING = "v17-12000-long-training"
    V17_14400_SHORT_TRAINING = "v17-14400-short-training"
    V17_14400_LONG_TRAINING = "v17-14400-long-training"
    V8_ANSAM = "v8-ansam"
    V8_SIGNAL = "v8-signal"
    V34_CNTL_CHANNEL_1200 = "v34-cntl-channel-1200"
    V34_PRI_CHANNEL = "v34-pri-channel"
    V34_CC_RETRAIN = "v34-CC-retrain"
    V33_12000_TRAINING = "v33-12000-training"
    V33_14400_TRAINING = "v33-14400-training"


class T30Data(StrEnum):
    """``t30-data`` (T.38 Annex A), in ASN.1 order; the last 6 are extensions."""

    V21 = "v21"
    V27_2400 = "v27-2400"
    V27_4800 = "v27-4800"
    V29_7200 = "v29-7200"
    V29_9600 = "v29-9600"
    V17_7200 = "v17-7200"
    V17_9600 = "v17-9600"
    V17_12000 = "v17-12000"
    V17_14400 = "v17-14400"
    V8 = "v8"
    V34_PRI_RATE = "v34-pri-rate"
    V34_CC_1200 = "v34-CC-1200"
    V34_PRI_CH = "v34-pri-ch"
    V33_12000 = "v33-12000"
    V33_14400 = "v33-14400"


class FieldType(StrEnum):
    """``field-type`` (T.38 Annex A), in ASN.1 order; the last 4 are extensions (v1+)."""

    HDLC_DATA = "hdlc-data"
    HDLC_SIG_END = "hdlc-sig-end"
    HDLC_FCS_OK = "hdlc-fcs-OK"
    HDLC_FCS_BAD = "hdlc-fcs-BAD"
    HDLC_FCS_OK_SIG_END = "hdlc-fcs-OK-sig-end"
    HDLC_FCS_BAD_SIG_END = "hdlc-fcs-BAD-sig-end"
    T4_NON_ECM_DATA = "t4-non-ecm-data"
    T4_NON_ECM_SIG_END = "t4-non-ecm-sig-end"
    CM_MESSAGE = "cm-message"
    JM_MESSAGE = "jm-message"
    CI_MESSAGE = "ci-message"
    V34RATE = "v34rate"


_INDICATORS = tuple(T30Indicator)
_DATA_TYPES = tuple(T30Data)
_FIELD_TYPES = tuple(FieldType)
#: number of root (pre-"...") values of each enumeration (T.38 Annex A)
_ROOT_INDICATORS = 16
_ROOT_DATA_TYPES = 9
_ROOT_FIELD_TYPES = 8
_INDEX_INDICATOR = {v: i for i, v in enumerate(_INDICATORS)}
_INDEX_DATA_TYPE = {v: i for i, v in enumerate(_DATA_TYPES)}
_INDEX_FIELD_TYPE = {v: i for i, v in enumerate(_FIELD_TYPES)}
_MAX_FIELD_DATA = 65535  # field-data OCTET STRING (SIZE (1..65535))
_MAX_FIELDS = 16383  # largest count without X.691 §10.9 fragmentation


class Field(NamedTuple):
    """One element of ``data-field``; ``data`` empty means ``field-data`` absent."""

    type: FieldType
    data: bytes = b""


@dataclass(frozen=True)
class Indicator:
    """A ``t30-indicator`` packet."""

    kind: T30Indicator

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", T30Indicator(self.kind))
        except ValueError:
            raise IfpError(f"unknown T.30 indicator {self.kind!r}") from None


@dataclass(frozen=True, init=False)
class Data:
    """A ``t30-data`` packet with its ``data-field`` elements (may be empty)."""

    data_type: T30Data
    fields: tuple[Field, ...]

    def __init__(
        self, data_type: T30Data | str, fields: Iterable[tuple[FieldType | str, bytes]] = ()
    ) -> None:
        try:
            dt = T30Data(data_type)
        except ValueError:
            raise IfpError(f"unknown T.30 data type {data_type!r}") from None
        out: list[Field] = []
        for item in fields:
            ftype, fdata = item
            try:
                out.append(Field(FieldType(ftype), bytes(fdata)))
            except ValueError:
                raise IfpError(f"unknown field type {ftype!r}") from None
        object.__setattr__(self, "data_type", dt)
        object.__setattr__(self, "fields", tuple(out))


IfpPacket = Indicator | Data


# --------------------------------------------------------------------------- bit I/O (X.691 §10)
class _BitWriter:
    """Bits MSB first; octet-aligned parts are appended with :meth:`octets`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._acc = 0
        self._nbits = 0

    def bits(self, value: int, n: int) -> None:
        self._acc = (self._acc << n) | (value & ((1 << n) - 1))
        self._nbits += n
        while self._nbits >= 8:
            self._nbits -= 8
            self._buf.append((self._acc >> self._nbits) & 0xFF)
        self._acc &= (1 << self._nbits) - 1

    def align(self) -> None:
        if self._nbits:
            self.bits(0, 8 - self._nbits)

    def octets(self, data: bytes) -> None:
        self.align()
        self._buf += data

    def getvalue(self) -> bytes:
        self.align()
        return bytes(self._buf)


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0  # in bits
        self._end = 8 * len(data)

    def bits(self, n: int) -> int:
        if self._pos + n > self._end:
            raise IfpError("IFP packet truncated")
        value = 0
        for _ in range(n):
            byte = self._data[self._pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def align(self) -> None:
        """Skip to the next octet; the padding bits must be zero."""
        if self._pos & 7 and self.bits(8 - (self._pos & 7)):
            raise IfpError("non-zero padding bits")

    def octets(self, n: int) -> bytes:
        self.align()
        start = self._pos >> 3
        if start + n > len(self._data):
            raise IfpError("IFP field data truncated")
        self._pos += 8 * n
        return self._data[start : start + n]

    def rest(self) -> bytes:
        self.align()
        return self._data[self._pos >> 3 :]


# ------------------------------------------------------------------------------------ encoding
def _put_enum(w: _BitWriter, index: int, root: int, root_bits: int, extensible: bool) -> None:
    """An ENUMERATED value: X.691 §13 (root value, or extension as a normally small number, §10.6)."""
    if index < root:
        if extensible:
            w.bits(0, 1)
        w.bits(index, root_bits)
    else:
        w.bits(1, 1)
        w.bits(0, 1)  # normally small non-negative whole number, n < 64 (X.691 §10.6)
        w.bits(index - root, 6)


def _put_length(w: _BitWriter, n: int) -> None:
    """An unconstrained length determinant (X.691 §10.9), octet aligned."""
    w.align()
    if n < 0x80:
        w.bits(n, 8)
    else:
        w.bits(0x8000 | n, 16)


def encode_ifp(packet: IfpPacket, version: int, *, octet_fields: bool = False) -> bytes:
    """Encode ``packet`` for T.38 ``version`` (0 = 1998 ASN.1, >= 1 = 2002 ASN.1).

    ``octet_fields=True`` starts every data field on a new octet (SpanDSP's layout; it differs
    from X.691 only for a data-less field that is not the last one).  Raises :class:`IfpError`
    for a value the version cannot carry (extension values in version 0, empty or over-long
    field data are not an error: empty data means "no field-data").
    """
    if version < 0:
        raise IfpError(f"bad T.38 version {version}")
    w = _BitWriter()
    if isinstance(packet, Indicator):
        index = _INDEX_INDICATOR[packet.kind]
        if version == 0 and index >= _ROOT_INDICATORS:
            raise IfpError(f"indicator {packet.kind} needs T.38 version 1 or later")
        w.bits(0, 1)  # data-field absent
        w.bits(0, 1)  # t30-indicator
        _put_enum(w, index, _ROOT_INDICATORS, 4, True)
        return w.getvalue()
    if not isinstance(packet, Data):
        raise IfpError(f"not an IFP packet: {type(packet).__name__}")
    index = _INDEX_DATA_TYPE[packet.data_type]
    if version == 0 and index >= _ROOT_DATA_TYPES:
        raise IfpError(f"data type {packet.data_type} needs T.38 version 1 or later")
    if len(packet.fields) > _MAX_FIELDS:
        raise IfpError(f"too many data fields ({len(packet.fields)})")
    w.bits(1 if packet.fields else 0, 1)
    w.bits(1, 1)  # t30-data
    _put_enum(w, index, _ROOT_DATA_TYPES, 4, True)
    if not packet.fields:
        return w.getvalue()
    _put_length(w, len(packet.fields))
    for ftype, fdata in packet.fields:
        if octet_fields:
            w.align()
        findex = _INDEX_FIELD_TYPE[ftype]
        if len(fdata) > _MAX_FIELD_DATA:
            raise IfpError(f"field data too long ({len(fdata)} octets)")
        w.bits(1 if fdata else 0, 1)
        if version == 0:
            if findex >= _ROOT_FIELD_TYPES:
                raise IfpError(f"field type {ftype} needs T.38 version 1 or later")
            w.bits(findex, 3)
        else:
            _put_enum(w, findex, _ROOT_FIELD_TYPES, 3, True)
        if fdata:
            w.align()
            w.bits(len(fdata) - 1, 16)  # constrained length, range 65535 (X.691 §10.9)
            w.octets(fdata)
    return w.getvalue()


# ------------------------------------------------------------------------------------ decoding
def _get_enum(r: _BitReader, root_bits: int, values: tuple[str, ...], root: int, what: str) -> int:
    if r.bits(1) == 0:
        index = r.bits(root_bits)
        if index >= root:
            raise IfpError(f"unknown {what} {index}")
        return index
    if r.bits(1):
        raise IfpError(f"unknown {what} extension (large index)")
    index = root + r.bits(6)
    if index >= len(values):
        raise IfpError(f"unknown {what} extension {index - root}")
    return index


def _get_count(r: _BitReader) -> int:
    r.align()
    first = r.bits(8)
    if first < 0x80:
        return first
    if first < 0xC0:
        return ((first & 0x3F) << 8) | r.bits(8)
    raise IfpError("fragmented data-field count")


def _decode(data: bytes, version: int, octet_fields: bool) -> tuple[IfpPacket, int]:
    """The packet, and how many (zero) octets follow it."""
    r = _BitReader(data)
    present = r.bits(1)
    packet: IfpPacket
    if r.bits(1) == 0:
        if present:
            raise IfpError("indicator packet with a data field")
        index = _get_enum(r, 4, _INDICATORS, _ROOT_INDICATORS, "indicator")
        if version == 0 and index >= _ROOT_INDICATORS:
            raise IfpError(f"indicator {_INDICATORS[index]} in a T.38 version 0 packet")
        packet = Indicator(_INDICATORS[index])
    else:
        index = _get_enum(r, 4, _DATA_TYPES, _ROOT_DATA_TYPES, "data type")
        if version == 0 and index >= _ROOT_DATA_TYPES:
            raise IfpError(f"data type {_DATA_TYPES[index]} in a T.38 version 0 packet")
        fields: list[Field] = []
        if present:
            count = _get_count(r)
            for _ in range(count):
                if octet_fields:
                    r.align()
                has_data = r.bits(1)
                if version == 0:
                    findex = r.bits(3)
                else:
                    findex = _get_enum(r, 3, _FIELD_TYPES, _ROOT_FIELD_TYPES, "field type")
                fdata = b""
                if has_data:
                    r.align()
                    fdata = r.octets(r.bits(16) + 1)
                fields.append(Field(_FIELD_TYPES[findex], fdata))
        packet = Data(_DATA_TYPES[index], fields)
    rest = r.rest()
    if any(rest):
        raise IfpError("trailing octets after IFP packet")
    return packet, len(rest)


def _implausible(packet: IfpPacket) -> int:
    """How many fields no sender would write: data-less data fields, V.34-only field types."""
    if not isinstance(packet, Data):
        return 0
    return sum(
        1
        for ftype, fdata in packet.fields
        if (not fdata and ftype in (FieldType.HDLC_DATA, FieldType.T4_NON_ECM_DATA))
        or _INDEX_FIELD_TYPE[ftype] >= _ROOT_FIELD_TYPES
    )


def decode_ifp(data: bytes, version: int) -> IfpPacket:
    """Decode one IFP packet received from a T.38 ``version`` peer; raises :class:`IfpError`.

    Both field layouts (see module notes) are tried when they can differ, that is when a
    data-less field is followed by another one.  If both decode, the one with fewer implausible
    fields (data-less ``hdlc-data``/``t4-non-ecm-data``, V.34 field types) wins, X.691 on a tie.
    """
    if version < 0:
        raise IfpError(f"bad T.38 version {version}")
    data = bytes(data)
    if not data:
        raise IfpError("empty IFP packet")
    try:
        strict: tuple[IfpPacket, int] | None = _decode(data, version, False)
        error: IfpError | None = None
    except IfpError as exc:
        strict, error = None, exc
    if strict is not None:
        packet = strict[0]
        if not isinstance(packet, Data) or all(f.data for f in packet.fields[:-1]):
            return packet  # every field started on an octet boundary anyway
    elif (data[0] & 0xC0) != 0xC0:
        assert error is not None
        raise error  # no data field: the octet layout is the same
    try:
        octet: tuple[IfpPacket, int] | None = _decode(data, version, True)
    except IfpError:
        octet = None
    candidates = [c for c in (strict, octet) if c is not None]
    if not candidates:
        assert error is not None
        raise error
    return min(candidates, key=lambda c: _implausible(c[0]))[0]
