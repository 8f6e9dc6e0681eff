"""SMPP v3.4 PDUs and the pure rules of the SMPP transport (:mod:`ums.sms.smpp`).

What it does
------------
* :class:`Pdu` and :class:`PduFramer`: the 16-octet header (§3.2), a TCP byte stream cut into PDUs.
  :class:`ShortMessage` is the body of ``submit_sm`` (§4.4.1) and ``deliver_sm`` (§4.6.1),
  :class:`BindBody` the body of the binds (§4.1); :func:`encode_message_id` and
  :func:`decode_message_id` the bodies of the responses.
* :func:`status_name` and :func:`classify_status`: the command_status table of §5.1.3, each error
  permanent or temporary.
* :func:`build_submits`: one ``submit_sm`` body per part of a split text; :func:`udh_reference`
  the concatenation reference of a job (stable, so a retry reuses it).
* :func:`is_receipt`, :func:`parse_receipt` and :func:`receipt_from_deliver`: delivery receipts
  (esm_class 0x04; Appendix B text and the ``receipted_message_id`` / ``message_state`` TLVs).
* :func:`incoming_part` and :class:`MoReassembler`: texts from handsets, concatenated by UDH or
  SAR TLVs, put together; :class:`Backoff`: reconnect delays.

Why our own PDU layer: aiosmpplib 0.7.4 answers every ``deliver_sm`` ESME_ROK (a raising hook drops
the connection), acknowledges concatenated parts before the text is whole, and takes a str that it
encodes and splits itself (our encoded parts do not pass unchanged); smpplib 2.2.4 lets the handler
pick the status but is blocking and threaded (writes from two threads, a read timeout inside a PDU
loses its bytes, no submit window); smpp34's client answers ``deliver_sm`` itself.  The PDUs we
need (§4.1, 4.2, 4.3, 4.4, 4.6, 4.11) are a small codec.

How it works
------------
Pure: bytes, values and ``now`` in, values out; no sockets, no clock.  Data that does not follow
the specification raises :class:`SmppCodecError` (or :class:`ums.sms.gsm.SmsFormatError` for the
text) with a reason.  :class:`MoReassembler` holds an opaque *token* per part (what answering its
``deliver_sm`` needs) and says when to answer it: with the whole text, or after ``hold`` seconds.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from ums.sms.gsm import (
    IEI_CONCAT_8BIT,
    IEI_CONCAT_16BIT,
    SmsFormatError,
    SmsPart,
    build_udh,
    join_sms,
    parse_part,
    parse_udh,
)
from ums.sms.transport import DeliveryReceipt, OutgoingSms

__all__ = [
    "BIND_TRANSCEIVER",
    "DELIVER_SM",
    "ENQUIRE_LINK",
    "GENERIC_NACK",
    "STATUS_NAMES",
    "SUBMIT_SM",
    "UNBIND",
    "Assembled",
    "Backoff",
    "BindBody",
    "MoReassembler",
    "Pdu",
    "PduFramer",
    "ReassemblyError",
    "ReceiptFields",
    "ShortMessage",
    "SmppCodecError",
    "StatusClass",
    "build_submits",
    "classify_status",
    "decode_message_id",
    "encode_message_id",
    "incoming_part",
    "is_receipt",
    "our_number",
    "parse_receipt",
    "receipt_from_deliver",
    "status_name",
    "udh_reference",
]

# -- SMPP v3.4 §5.1.2 command ids ---------------------------------------------------------------------

RESP: Final = 0x80000000
GENERIC_NACK: Final = 0x80000000
BIND_RECEIVER: Final = 0x00000001
BIND_TRANSMITTER: Final = 0x00000002
SUBMIT_SM: Final = 0x00000004
DELIVER_SM: Final = 0x00000005
UNBIND: Final = 0x00000006
BIND_TRANSCEIVER: Final = 0x00000009
OUTBIND: Final = 0x0000000B
ENQUIRE_LINK: Final = 0x00000015
DATA_SM: Final = 0x00000103

COMMAND_NAMES: Final[dict[int, str]] = {
    GENERIC_NACK: "generic_nack",
    BIND_RECEIVER: "bind_receiver",
    BIND_TRANSMITTER: "bind_transmitter",
    0x00000003: "query_sm",
    SUBMIT_SM: "submit_sm",
    DELIVER_SM: "deliver_sm",
    UNBIND: "unbind",
    0x00000007: "replace_sm",
    0x00000008: "cancel_sm",
    BIND_TRANSCEIVER: "bind_transceiver",
    OUTBIND: "outbind",
    ENQUIRE_LINK: "enquire_link",
    0x00000021: "submit_multi",
    0x00000102: "alert_notification",
    DATA_SM: "data_sm",
}

# -- SMPP v3.4 §5.1.3 command_status ------------------------------------------------------------------

ESME_ROK: Final = 0x00000000
ESME_RINVCMDLEN: Final = 0x00000002
ESME_RINVCMDID: Final = 0x00000003
ESME_RSYSERR: Final = 0x00000008
ESME_RX_T_APPN: Final = 0x00000064
ESME_RX_P_APPN: Final = 0x00000065

#: SMPP v3.4 §5.1.3, every status defined there
STATUS_NAMES: Final[dict[int, str]] = {
    0x00: "ESME_ROK",
    0x01: "ESME_RINVMSGLEN",
    0x02: "ESME_RINVCMDLEN",
    0x03: "ESME_RINVCMDID",
    0x04: "ESME_RINVBNDSTS",
    0x05: "ESME_RALYBND",
    0x06: "ESME_RINVPRTFLG",
    0x07: "ESME_RINVREGDLVFLG",
    0x08: "ESME_RSYSERR",
    0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR",
    0x0C: "ESME_RINVMSGID",
    0x0D: "ESME_RBINDFAIL",
    0x0E: "ESME_RINVPASWD",
    0x0F: "ESME_RINVSYSID",
    0x11: "ESME_RCANCELFAIL",
    0x13: "ESME_RREPLACEFAIL",
    0x14: "ESME_RMSGQFUL",
    0x15: "ESME_RINVSERTYP",
    0x33: "ESME_RINVNUMDESTS",
    0x34: "ESME_RINVDLNAME",
    0x40: "ESME_RINVDESTFLAG",
    0x42: "ESME_RINVSUBREP",
    0x43: "ESME_RINVESMCLASS",
    0x44: "ESME_RCNTSUBDL",
    0x45: "ESME_RSUBMITFAIL",
    0x48: "ESME_RINVSRCTON",
    0x49: "ESME_RINVSRCNPI",
    0x50: "ESME_RINVDSTTON",
    0x51: "ESME_RINVDSTNPI",
    0x53: "ESME_RINVSYSTYP",
    0x54: "ESME_RINVREPFLAG",
    0x55: "ESME_RINVNUMMSGS",
    0x58: "ESME_RTHROTTLED",
    0x61: "ESME_RINVSCHED",
    0x62: "ESME_RINVEXPIRY",
    0x63: "ESME_RINVDFTMSGID",
    0x64: "ESME_RX_T_APPN",
    0x65: "ESME_RX_P_APPN",
    0x66: "ESME_RX_R_APPN",
    0x67: "ESME_RQUERYFAIL",
    0xC0: "ESME_RINVOPTPARSTREAM",
    0xC1: "ESME_ROPTPARNOTALLWD",
    0xC2: "ESME_RINVPARLEN",
    0xC3: "ESME_RMISSINGOPTPARAM",
    0xC4: "ESME_RINVOPTPARAMVAL",
    0xFE: "ESME_RDELIVERYFAILURE",
    0xFF: "ESME_RUNKNOWNERR",
}

#: statuses where the same submit may succeed later: the SMSC is busy, throttling, or failed inside
_TEMPORARY: Final = frozenset(
    {
        0x04,  # ESME_RINVBNDSTS: the bind went away under us; we rebind
        0x08,  # ESME_RSYSERR
        0x14,  # ESME_RMSGQFUL
        0x45,  # ESME_RSUBMITFAIL
        0x58,  # ESME_RTHROTTLED
        0x64,  # ESME_RX_T_APPN
        0xFE,  # ESME_RDELIVERYFAILURE
        0xFF,  # ESME_RUNKNOWNERR
    }
)


@dataclass(frozen=True)
class StatusClass:
    """How to treat an error status of a ``submit_sm_resp`` (or ``generic_nack``)."""

    status: int
    name: str
    permanent: bool


def status_name(status: int) -> str:
    """``ESME_RINVDSTADR`` for 0x0B; vendor and reserved codes as ``ESME_0x00000401``."""
    return STATUS_NAMES.get(status, f"ESME_0x{status:08X}")


def classify_status(status: int) -> StatusClass:
    """Permanent (sending the same PDU again cannot help) or temporary, per SMPP v3.4 §5.1.3.

    Temporary: system error, queue full, throttled, submit or delivery failure, temporary
    application error, unknown error, bind state; and every code §5.1.3 does not define
    (reserved 0x400..0x4FF is SMSC-vendor specific), since the retry policy bounds the attempts.
    Everything else §5.1.3 defines (bad address, length, class, TON/NPI, parameters, permanent
    application error, rejected) is permanent.
    """
    permanent = status in STATUS_NAMES and status not in _TEMPORARY and status != ESME_ROK
    return StatusClass(status, status_name(status), permanent)


# -- SMPP v3.4 §5.3.2 optional parameter tags ---------------------------------------------------------

TLV_RECEIPTED_MESSAGE_ID: Final = 0x001E
TLV_SAR_MSG_REF_NUM: Final = 0x020C
TLV_SAR_TOTAL_SEGMENTS: Final = 0x020E
TLV_SAR_SEGMENT_SEQNUM: Final = 0x020F
TLV_SC_INTERFACE_VERSION: Final = 0x0210
TLV_MESSAGE_PAYLOAD: Final = 0x0424
TLV_MESSAGE_STATE: Final = 0x0427
TLV_NETWORK_ERROR_CODE: Final = 0x0423

#: SMPP v3.4 §5.2.12: esm_class bit 6, the short message starts with a user data header
ESM_UDHI: Final = 0x40
#: SMPP v3.4 §5.2.12: esm_class bits 5..2, message type
ESM_TYPE_MASK: Final = 0x3C
ESM_TYPE_RECEIPT: Final = 0x04
ESM_TYPE_INTERMEDIATE: Final = 0x20
INTERFACE_VERSION: Final = 0x34

HEADER: Final = struct.Struct(">IIII")
#: a PDU with a 64 KiB message_payload TLV and its other fields fits
MAX_PDU: Final = 0x10000 + 1024


class SmppCodecError(ValueError):
    """A PDU that cannot be encoded or decoded; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Pdu:
    """One SMPP PDU: the 16-octet header of §3.2 and the raw body."""

    command_id: int
    status: int
    sequence: int
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESP)

    @property
    def name(self) -> str:
        base = COMMAND_NAMES.get(self.command_id & ~RESP if self.command_id != GENERIC_NACK else GENERIC_NACK)
        if base is None:
            return f"0x{self.command_id:08X}"
        return base + ("_resp" if self.is_response and self.command_id != GENERIC_NACK else "")

    def encode(self) -> bytes:
        length = HEADER.size + len(self.body)
        if length > MAX_PDU:
            raise SmppCodecError(f"{self.name} of {length} octets is too long")
        return HEADER.pack(length, self.command_id, self.status, self.sequence) + self.body

    def response(self, status: int = ESME_ROK, body: bytes = b"") -> Pdu:
        """The ``*_resp`` to this request (same sequence number)."""
        return Pdu(self.command_id | RESP, status, self.sequence, body)


class PduFramer:
    """Cuts a TCP byte stream into PDUs (§3.2: command_length counts the whole PDU)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Pdu]:
        """The PDUs completed by ``data``; raises :class:`SmppCodecError` for an impossible length.

        After an error the stream cannot be trusted any more: close the connection.
        """
        self._buffer += data
        out: list[Pdu] = []
        while len(self._buffer) >= HEADER.size:
            length, command_id, status, sequence = HEADER.unpack_from(self._buffer)
            if not HEADER.size <= length <= MAX_PDU:
                raise SmppCodecError(f"command_length {length} is out of range {HEADER.size}..{MAX_PDU}")
            if len(self._buffer) < length:
                break
            out.append(Pdu(command_id, status, sequence, bytes(self._buffer[HEADER.size : length])))
            del self._buffer[:length]
        return out


# -- field codecs (§3.1: Integer, C-Octet String, Octet String; optional parameters as tag, length, value) --


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def int8(self, name: str) -> int:
        if self.pos >= len(self.data):
            raise SmppCodecError(f"{self.what}: the body ends before {name}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def cstring(self, name: str, max_len: int) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise SmppCodecError(f"{self.what}: {name} has no terminating NUL")
        if end - self.pos >= max_len:
            raise SmppCodecError(f"{self.what}: {name} is longer than {max_len - 1} octets")
        value = self.data[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return value

    def octets(self, name: str, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise SmppCodecError(f"{self.what}: {name} of {count} octets overruns the body")
        value = self.data[self.pos : self.pos + count]
        self.pos += count
        return value

    def tlvs(self) -> tuple[tuple[int, bytes], ...]:
        out: list[tuple[int, bytes]] = []
        while self.pos < len(self.data):
            if self.pos + 4 > len(self.data):
                raise SmppCodecError(f"{self.what}: optional parameter header overruns the body")
            tag, length = struct.unpack_from(">HH", self.data, self.pos)
            self.pos += 4
            out.append((tag, self.octets(f"optional parameter 0x{tag:04X}", length)))
        return tuple(out)


def _cstring(value: str, name: str, max_len: int) -> bytes:
    data = value.encode("latin-1", errors="replace")
    if b"\x00" in data or len(data) >= max_len:
        raise SmppCodecError(f"{name} {value!r} does not fit ({max_len - 1} octets at most, no NUL)")
    return data + b"\x00"


def _tlv_bytes(tlvs: Iterable[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for tag, value in tlvs:
        if not 0 <= tag <= 0xFFFF or len(value) > 0xFFFF:
            raise SmppCodecError(f"optional parameter 0x{tag:04X} with {len(value)} octets does not fit")
        out += struct.pack(">HH", tag, len(value)) + value
    return bytes(out)


@dataclass(frozen=True)
class BindBody:
    """The body of bind_transmitter/receiver/transceiver (§4.1.1, §4.1.3, §4.1.5)."""

    system_id: str
    password: str
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def encode(self) -> bytes:
        return (
            _cstring(self.system_id, "system_id", 16)
            + _cstring(self.password, "password", 9)
            + _cstring(self.system_type, "system_type", 13)
            + bytes((self.interface_version, self.addr_ton, self.addr_npi))
            + _cstring(self.address_range, "address_range", 41)
        )

    @classmethod
    def decode(cls, body: bytes) -> BindBody:
        r = _Reader(body, "bind")
        return cls(
            r.cstring("system_id", 16),
            r.cstring("password", 9),
            r.cstring("system_type", 13),
            r.int8("interface_version"),
            r.int8("addr_ton"),
            r.int8("addr_npi"),
            r.cstring("address_range", 41),
        )


def encode_message_id(message_id: str) -> bytes:
    """The body of submit_sm_resp (§4.4.2) / deliver_sm_resp (§4.6.2, always empty) / bind_*_resp."""
    return _cstring(message_id, "message_id", 66)


def decode_message_id(body: bytes) -> str:
    """The C-Octet String at the start of a ``*_resp`` body; ``""`` for an empty body (error responses)."""
    if not body:
        return ""
    end = body.find(b"\x00")
    return body[: end if end >= 0 else len(body)].decode("latin-1")


@dataclass(frozen=True)
class ShortMessage:
    """The body of ``submit_sm`` (§4.4.1) and ``deliver_sm`` (§4.6.1): they share one layout."""

    source_addr: str
    destination_addr: str
    short_message: bytes = b""
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def tlv(self, tag: int) -> bytes | None:
        """The value of the first optional parameter ``tag``, or None."""
        for t, value in self.tlvs:
            if t == tag:
                return value
        return None

    @property
    def payload(self) -> bytes:
        """``short_message``, or the ``message_payload`` TLV (§5.3.2.32) when short_message is empty."""
        if self.short_message:
            return self.short_message
        return self.tlv(TLV_MESSAGE_PAYLOAD) or b""

    def encode(self) -> bytes:
        for name in ("source_addr_ton", "source_addr_npi", "dest_addr_ton", "dest_addr_npi", "esm_class"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise SmppCodecError(f"{name} {getattr(self, name)} is out of range 0..255")
        if len(self.short_message) > 254:
            raise SmppCodecError(f"short_message of {len(self.short_message)} octets is longer than 254")
        return (
            _cstring(self.service_type, "service_type", 6)
            + bytes((self.source_addr_ton, self.source_addr_npi))
            + _cstring(self.source_addr, "source_addr", 21)
            + bytes((self.dest_addr_ton, self.dest_addr_npi))
            + _cstring(self.destination_addr, "destination_addr", 21)
            + bytes((self.esm_class, self.protocol_id, self.priority_flag))
            + _cstring(self.schedule_delivery_time, "schedule_delivery_time", 17)
            + _cstring(self.validity_period, "validity_period", 17)
            + bytes(
                (
                    self.registered_delivery,
                    self.replace_if_present_flag,
                    self.data_coding,
                    self.sm_default_msg_id,
                    len(self.short_message),
                )
            )
            + self.short_message
            + _tlv_bytes(self.tlvs)
        )

    @classmethod
    def decode(cls, body: bytes, what: str = "short message") -> ShortMessage:
        """Raises :class:`SmppCodecError` for a body that does not follow §4.4.1."""
        r = _Reader(body, what)
        service_type = r.cstring("service_type", 6)
        source_ton, source_npi = r.int8("source_addr_ton"), r.int8("source_addr_npi")
        # §4.4.1 limits the addresses to 21 octets; deliver_sm from some SMSCs carries longer ones
        source = r.cstring("source_addr", 65)
        dest_ton, dest_npi = r.int8("dest_addr_ton"), r.int8("dest_addr_npi")
        destination = r.cstring("destination_addr", 65)
        esm_class, protocol_id, priority = r.int8("esm_class"), r.int8("protocol_id"), r.int8("priority_flag")
        schedule = r.cstring("schedule_delivery_time", 17)
        validity = r.cstring("validity_period", 17)
        registered, replace = r.int8("registered_delivery"), r.int8("replace_if_present_flag")
        data_coding, default_id = r.int8("data_coding"), r.int8("sm_default_msg_id")
        short_message = r.octets("short_message", r.int8("sm_length"))
        return cls(
            source,
            destination,
            short_message,
            service_type,
            source_ton,
            source_npi,
            dest_ton,
            dest_npi,
            esm_class,
            protocol_id,
            priority,
            schedule,
            validity,
            registered,
            replace,
            data_coding,
            default_id,
            r.tlvs(),
        )


# -- pure policy: backoff, submit PDUs, receipts, incoming parts -------------------------------------------


class Backoff:
    """Exponential reconnect delays: ``minimum``, doubling up to ``maximum``; ``reset`` after a bind."""

    def __init__(self, minimum: float, maximum: float) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"backoff needs 0 < minimum <= maximum, not {minimum}, {maximum}")
        self.minimum = minimum
        self.maximum = maximum
        self._next = minimum

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.minimum


def udh_reference(job_id: str) -> int:
    """The 8-bit concatenation reference of a job: stable, so a re-submit reuses it (TS 23.040 §9.2.3.24.1).

    A handset that got some parts of the first attempt then completes the text with the second.
    """
    return zlib.crc32(job_id.encode("utf-8")) & 0xFF


def _address(number: str) -> str:
    """An SMPP address from our notation: E.164 ``+4930...`` becomes digits (the TON says international)."""
    return number[1:] if number.startswith("+") else number


def our_number(addr: str, ton: int) -> str:
    """Our notation of an SMPP address: international digits (TON 1) get a ``+``."""
    if ton == 1 and addr.isdigit():
        return "+" + addr
    return addr


def build_submits(
    sms: OutgoingSms,
    parts: Iterable[SmsPart],
    *,
    source_ton: int,
    source_npi: int,
    dest_ton: int,
    dest_npi: int,
    registered_delivery: bool,
) -> list[ShortMessage]:
    """One ``submit_sm`` body per part: binary short_message, UDHI for a header, data_coding of the part."""
    return [
        ShortMessage(
            source_addr=_address(sms.sender),
            destination_addr=_address(sms.to),
            short_message=part.payload,
            source_addr_ton=source_ton,
            source_addr_npi=source_npi,
            dest_addr_ton=dest_ton,
            dest_addr_npi=dest_npi,
            esm_class=ESM_UDHI if part.udhi else 0,
            registered_delivery=1 if registered_delivery else 0,
            data_coding=part.data_coding,
        )
        for part in parts
    ]


@dataclass(frozen=True)
class ReceiptFields:
    """The fields of an SMPP v3.4 Appendix B delivery receipt text (all as received, ``""`` when absent)."""

    id: str
    sub: str = ""
    dlvrd: str = ""
    submit_date: str = ""
    done_date: str = ""
    stat: str = ""
    err: str = ""
    text: str = ""


_RECEIPT_FIELD: Final = re.compile(
    r"\b(id|sub|dlvrd|submit date|done date|stat|err)\s*:\s*(\S*)", re.IGNORECASE
)
_RECEIPT_TEXT: Final = re.compile(r"\btext\s*:", re.IGNORECASE)

#: SMPP v3.4 §5.2.28 message_state values, as the Appendix B status words
MESSAGE_STATES: Final[dict[int, str]] = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}


def parse_receipt(text: str) -> ReceiptFields | None:
    """The fields of ``id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…`` (Appendix B).

    Keys are matched without regard to case and in any order; ``text:`` takes the rest of the line.
    Returns None when there is no ``id``.
    """
    match = _RECEIPT_TEXT.search(text)
    head, rest = (text[: match.start()], text[match.end() :]) if match else (text, "")
    found: dict[str, str] = {}
    for key, value in _RECEIPT_FIELD.findall(head):
        found.setdefault(key.lower().replace(" ", "_"), value)
    if not found.get("id"):
        return None
    return ReceiptFields(
        id=found["id"],
        sub=found.get("sub", ""),
        dlvrd=found.get("dlvrd", ""),
        submit_date=found.get("submit_date", ""),
        done_date=found.get("done_date", ""),
        stat=found.get("stat", "").upper(),
        err=found.get("err", ""),
        text=rest.strip(),
    )


def is_receipt(sm: ShortMessage) -> bool:
    """esm_class message type: SMSC delivery receipt (0x04) or intermediate notification (0x20)."""
    return (sm.esm_class & ESM_TYPE_MASK) in (ESM_TYPE_RECEIPT, ESM_TYPE_INTERMEDIATE)


def receipt_from_deliver(sm: ShortMessage) -> DeliveryReceipt | None:
    """The :class:`DeliveryReceipt` of a receipt ``deliver_sm``; None when it says which message nowhere.

    The ``receipted_message_id`` (§5.3.2.12) and ``message_state`` (§5.3.2.35) TLVs win over the
    text: some SMSCs write the id into the text in another format (decimal for a hex id).
    """
    fields = parse_receipt(sm.payload.decode("latin-1"))
    tlv_id = sm.tlv(TLV_RECEIPTED_MESSAGE_ID)
    message_id = tlv_id.rstrip(b"\x00").decode("latin-1") if tlv_id else (fields.id if fields else "")
    if not message_id:
        return None
    state = sm.tlv(TLV_MESSAGE_STATE)
    status = MESSAGE_STATES.get(state[0], "") if state and len(state) == 1 else ""
    if not status:
        status = fields.stat if fields and fields.stat else "UNKNOWN"
    error = fields.err if fields else ""
    if not error or error.strip("0") == "":
        network = sm.tlv(TLV_NETWORK_ERROR_CODE)
        if network and len(network) == 3 and network[1:] != b"\x00\x00":
            error = f"{network[0]}:{int.from_bytes(network[1:], 'big')}"
    return DeliveryReceipt(message_id=message_id, delivered=status == "DELIVRD", status=status, error=error)


def _sar_udh(sm: ShortMessage) -> bytes | None:
    """A 16-bit concatenation header built from the SAR TLVs (§5.3.2.22-24), None without them."""
    ref, total, seq = (
        sm.tlv(t) for t in (TLV_SAR_MSG_REF_NUM, TLV_SAR_TOTAL_SEGMENTS, TLV_SAR_SEGMENT_SEQNUM)
    )
    if ref is None or total is None or seq is None or len(ref) != 2 or len(total) != 1 or len(seq) != 1:
        return None
    return build_udh([(IEI_CONCAT_16BIT, ref + total + seq)])


def incoming_part(sm: ShortMessage) -> tuple[SmsPart, tuple[int, int, int] | None]:
    """A handset's ``deliver_sm`` as a part and its (reference, total, sequence), None when not concatenated.

    Concatenation comes from the UDH (esm_class UDHI) or from the SAR TLVs.  Raises
    :class:`ums.sms.gsm.SmsFormatError` for data that is not text or a broken header.
    """
    data = sm.payload
    udhi = bool(sm.esm_class & ESM_UDHI)
    if not udhi:
        sar = _sar_udh(sm)
        if sar is not None:
            data, udhi = sar + data, True
    part = parse_part(data, sm.data_coding, udhi=udhi)
    info: tuple[int, int, int] | None = None
    if part.udh:
        for iei, value in parse_udh(part.udh)[0]:
            if iei == IEI_CONCAT_8BIT and len(value) == 3:
                info = (value[0], value[1], value[2])
            elif iei == IEI_CONCAT_16BIT and len(value) == 4:
                info = (int.from_bytes(value[:2], "big"), value[2], value[3])
    if info is not None and (info[1] < 2 or not 1 <= info[2] <= info[1]):
        if info[1] == 1 and info[2] == 1:
            info = None  # a "concatenated" text of one part
        else:
            raise SmsFormatError(f"concatenation part {info[2]} of {info[1]} is out of range")
    return part, info


# -- reassembly of concatenated texts from handsets ---------------------------------------------------------

T = TypeVar("T")
Key = tuple[str, str, int, int]


@dataclass
class _Held(Generic[T]):
    token: T
    seq: int
    deadline: float


@dataclass
class _Pending(Generic[T]):
    first_seen: float
    parts: dict[int, SmsPart] = field(default_factory=dict)
    #: sequence numbers of parts the SMSC got an answer for (on the hold timer)
    answered: set[int] = field(default_factory=set)
    held: list[_Held[T]] = field(default_factory=list)


@dataclass(frozen=True)
class Assembled(Generic[T]):
    """A complete concatenated text: hand it on, then answer ``tokens`` (none of them is answered yet)."""

    key: Key
    text: str
    tokens: tuple[T, ...]
    #: parts answered on the hold timer; :meth:`MoReassembler.restore` keeps them if handing on fails
    answered_parts: tuple[tuple[int, SmsPart], ...] = ()


class ReassemblyError(SmsFormatError):
    """The parts of a text are complete but do not make one (mixed codings that cannot be joined...).

    The text is dropped; ``tokens`` are the parts still waiting for an answer.
    """

    def __init__(self, reason: str, tokens: tuple[object, ...]) -> None:
        super().__init__(reason)
        self.tokens = tokens


class MoReassembler(Generic[T]):
    """Collects the parts of concatenated texts from handsets (TS 23.040 §9.2.3.24.1 and .8).

    Each part comes with a ``token``: what answering its ``deliver_sm`` needs.  A token is held,
    unanswered, until its text is complete (:meth:`add` returns it in :class:`Assembled`) or
    ``hold`` seconds passed (:meth:`due`: answer it then; the part stays here).  An incomplete text
    is dropped ``expiry`` seconds after its first part (:meth:`expired`).  Texts are keyed by
    (sender, recipient, reference, total); a part that comes twice is kept once and both tokens
    are answered.  Pure: ``now`` is passed in.
    """

    def __init__(self, hold: float, expiry: float) -> None:
        self.hold = hold
        self.expiry = expiry
        self._pending: dict[Key, _Pending[T]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self, sender: str, to: str, info: tuple[int, int, int], part: SmsPart, token: T, now: float
    ) -> Assembled[T] | None:
        """Add one part (``info`` = reference, total, sequence); the text when this part completes it.

        Raises :class:`ReassemblyError` when the complete parts do not make a text.
        """
        ref, total, seq = info
        key = (sender, to, ref, total)
        pending = self._pending.setdefault(key, _Pending(first_seen=now))
        pending.parts.setdefault(seq, part)
        pending.held.append(_Held(token, seq, now + self.hold))
        if len(pending.parts) < total:
            return None
        del self._pending[key]
        tokens = tuple(h.token for h in pending.held)
        try:
            text = join_sms([pending.parts[s] for s in sorted(pending.parts)])
        except SmsFormatError as exc:
            raise ReassemblyError(exc.reason, tokens) from None
        answered = tuple((s, pending.parts[s]) for s in sorted(pending.answered))
        return Assembled(key, text, tokens, answered)

    def due(self, now: float) -> list[T]:
        """Tokens whose hold time is over: answer them now; their parts stay until the text is complete."""
        out: list[T] = []
        for pending in self._pending.values():
            for held in pending.held:
                if held.deadline <= now:
                    out.append(held.token)
                    pending.answered.add(held.seq)
            pending.held = [h for h in pending.held if h.deadline > now]
        return out

    def expired(self, now: float) -> list[tuple[Key, list[T]]]:
        """Incomplete texts older than ``expiry``, dropped; each key with its tokens still held."""
        out: list[tuple[Key, list[T]]] = []
        for key, pending in list(self._pending.items()):
            if pending.first_seen + self.expiry <= now:
                del self._pending[key]
                out.append((key, [h.token for h in pending.held]))
        return out

    def restore(self, assembled: Assembled[T], now: float) -> None:
        """Handing the text on failed: keep the parts already answered, the SMSC sends the others again."""
        if not assembled.answered_parts:
            return
        pending = self._pending.setdefault(assembled.key, _Pending(first_seen=now))
        for seq, part in assembled.answered_parts:
            pending.parts.setdefault(seq, part)
            pending.answered.add(seq)

    def forget(self, predicate: Callable[[T], bool]) -> list[T]:
        """Drop held tokens that can no longer be answered (their connection is gone); parts stay."""
        dropped: list[T] = []
        for pending in self._pending.values():
            dropped += [h.token for h in pending.held if predicate(h.token)]
            pending.held = [h for h in pending.held if not predicate(h.token)]
        return dropped

    def next_deadline(self) -> float | None:
        """The earliest hold or expiry time; None when nothing is pending."""
        times = [p.first_seen + self.expiry for p in self._pending.values()]
        times += [h.deadline for p in self._pending.values() for h in p.held]
        return min(times) if times else None
