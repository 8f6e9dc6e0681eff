"""SMPP v3.4: the PDU codec, status classes, receipts, incoming parts and their reassembly, and the
transport against a scripted in-process SMSC (window, timeouts, enquire_link, unbind, answers only
after the callback)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ums.sms.gsm import IEI_CONCAT_16BIT, SmsFormatError, SmsPart, build_udh, join_sms, parse_part, split_sms
from ums.sms.smpp import SmppSettings, SmppTransport
from ums.sms.smpp_pdu import (
    BIND_TRANSCEIVER,
    DELIVER_SM,
    ENQUIRE_LINK,
    GENERIC_NACK,
    SUBMIT_SM,
    UNBIND,
    Backoff,
    BindBody,
    MoReassembler,
    Pdu,
    PduFramer,
    ReassemblyError,
    ShortMessage,
    SmppCodecError,
    build_submits,
    classify_status,
    decode_message_id,
    encode_message_id,
    incoming_part,
    is_receipt,
    parse_receipt,
    receipt_from_deliver,
    status_name,
    udh_reference,
)
from ums.sms.transport import DeliveryReceipt, IncomingSms, OutgoingSms

RESP = 0x80000000

# -- PDU codec -----------------------------------------------------------------------------------------


def test_pdu_header_is_big_endian_length_id_status_sequence() -> None:
    pdu = Pdu(ENQUIRE_LINK, 0, 7)
    assert pdu.encode() == bytes.fromhex("00000010000000150000000000000007")
    assert pdu.response().encode() == bytes.fromhex("00000010800000150000000000000007")
    assert Pdu(SUBMIT_SM | RESP, 0x0B, 1).name == "submit_sm_resp"
    assert Pdu(GENERIC_NACK, 3, 1).name == "generic_nack"
    assert Pdu(0x1234, 0, 1).name == "0x00001234"


def test_framer_takes_the_stream_byte_by_byte() -> None:
    pdus = [Pdu(ENQUIRE_LINK, 0, 1), Pdu(SUBMIT_SM | RESP, 0, 2, encode_message_id("abc")), Pdu(UNBIND, 0, 3)]
    stream = b"".join(p.encode() for p in pdus)
    framer = PduFramer()
    out: list[Pdu] = []
    for index in range(len(stream)):
        out += framer.feed(stream[index : index + 1])
    assert out == pdus
    assert PduFramer().feed(stream) == pdus


@pytest.mark.parametrize("length", [0, 15, 0x7FFFFFFF])
def test_framer_refuses_an_impossible_length(length: int) -> None:
    with pytest.raises(SmppCodecError, match="command_length"):
        PduFramer().feed(struct.pack(">IIII", length, ENQUIRE_LINK, 0, 1))


def test_bind_body_round_trip_and_limits() -> None:
    body = BindBody("esme1", "secret", "VMA")
    data = body.encode()
    assert data == b"esme1\0secret\0VMA\0\x34\x00\x00\0"
    assert BindBody.decode(data) == body
    with pytest.raises(SmppCodecError, match="password"):
        BindBody("esme1", "toolongpw").encode()
    with pytest.raises(SmppCodecError, match="system_id"):
        BindBody("x" * 16, "pw").encode()


SAMPLE = ShortMessage(
    source_addr="15550199",
    destination_addr="15550100",
    short_message=b"\x05\x00\x03\x2a\x02\x01\x00H\x00i",
    source_addr_ton=1,
    source_addr_npi=1,
    dest_addr_ton=1,
    dest_addr_npi=1,
    esm_class=0x40,
    registered_delivery=1,
    data_coding=8,
    tlvs=((0x020C, b"\x00\x01"),),
)


def test_short_message_layout_follows_section_4_4_1() -> None:
    data = SAMPLE.encode()
    expected = (
        b"\0"  # service_type
        + b"\x01\x01" + b"15550199\0"
        + b"\x01\x01" + b"15550100\0"
        + b"\x40\x00\x00"  # esm_class, protocol_id, priority_flag
        + b"\0\0"  # schedule_delivery_time, validity_period
        + b"\x01\x00\x08\x00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
        + b"\x0a" + SAMPLE.short_message
        + b"\x02\x0c\x00\x02\x00\x01"
    )  # fmt: skip
    assert data == expected
    assert ShortMessage.decode(data) == SAMPLE


def test_short_message_agrees_with_smpp34_codec() -> None:
    smpp34 = pytest.importorskip("smpp34", reason="smpp34 (test dependency) is not installed")
    pdu = Pdu(SUBMIT_SM, 0, 9, SAMPLE.encode()).encode()
    theirs = smpp34.decode(pdu)
    assert (theirs.source_addr, theirs.destination_addr) == ("15550199", "15550100")
    assert (theirs.esm_class, theirs.data_coding, theirs.registered_delivery) == (0x40, 8, 1)
    assert theirs.short_message == SAMPLE.short_message
    assert [(t.tag, t.value) for t in theirs.tlvs] == list(SAMPLE.tlvs)
    back = smpp34.DeliverSm(
        "15550100", "15550199", b"hello", source_addr_ton=1, esm_class=0x04, data_coding=0, sequence_number=5
    ).encode()
    frames = PduFramer().feed(back)
    assert [(f.command_id, f.sequence) for f in frames] == [(DELIVER_SM, 5)]
    sm = ShortMessage.decode(frames[0].body)
    assert (sm.source_addr, sm.destination_addr, sm.short_message, sm.esm_class) == (
        "15550100",
        "15550199",
        b"hello",
        0x04,
    )


def test_short_message_limits() -> None:
    with pytest.raises(SmppCodecError, match="254"):
        ShortMessage("1", "2", b"x" * 255).encode()
    with pytest.raises(SmppCodecError, match="destination_addr"):
        ShortMessage("1", "2" * 21).encode()


def test_every_truncation_of_a_body_is_a_codec_error() -> None:
    data = SAMPLE.encode()
    mandatory = len(data) - 6  # the one TLV is 6 octets
    for cut in range(len(data)):
        if cut == mandatory:
            assert ShortMessage.decode(data[:cut]).tlvs == ()
            continue
        with pytest.raises(SmppCodecError) as caught:
            ShortMessage.decode(data[:cut])
        assert caught.value.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bodies_never_crash_the_decoder(data: bytes) -> None:
    try:
        ShortMessage.decode(data)
    except SmppCodecError:
        pass


def test_message_payload_tlv_stands_in_for_an_empty_short_message() -> None:
    sm = ShortMessage("1", "2", b"", tlvs=((0x0424, b"long text"),))
    assert sm.payload == b"long text"
    assert ShortMessage.decode(sm.encode()).payload == b"long text"


def test_message_id_bodies() -> None:
    assert encode_message_id("") == b"\0"
    assert decode_message_id(b"1-2\0") == "1-2"
    assert decode_message_id(b"") == ""
    assert decode_message_id(b"abc") == "abc"


# -- status classes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "name", "permanent"),
    [
        (0x0B, "ESME_RINVDSTADR", True),
        (0x0A, "ESME_RINVSRCADR", True),
        (0x01, "ESME_RINVMSGLEN", True),
        (0x65, "ESME_RX_P_APPN", True),
        (0x66, "ESME_RX_R_APPN", True),
        (0x58, "ESME_RTHROTTLED", False),
        (0x14, "ESME_RMSGQFUL", False),
        (0x08, "ESME_RSYSERR", False),
        (0x64, "ESME_RX_T_APPN", False),
        (0x45, "ESME_RSUBMITFAIL", False),
        (0xFF, "ESME_RUNKNOWNERR", False),
        (0x0401, "ESME_0x00000401", False),
    ],
)
def test_classify_status(status: int, name: str, permanent: bool) -> None:
    cls = classify_status(status)
    assert (cls.name, cls.permanent) == (name, permanent)
    assert status_name(status) == name


# -- submit PDUs -------------------------------------------------------------------------------------------


def test_udh_reference_is_stable_per_job() -> None:
    assert udh_reference("job-1") == udh_reference("job-1")
    assert 0 <= udh_reference("job-1") <= 255
    assert len({udh_reference(f"job-{n}") for n in range(50)}) > 40


def test_build_submits_for_a_concatenated_ucs2_text() -> None:
    text = "Grüße 👋 " * 30
    parts = split_sms(text, udh_reference("j1"))
    sms = OutgoingSms("j1", "+15550199", "+15550100", text)
    bodies = build_submits(
        sms, parts, source_ton=1, source_npi=1, dest_ton=1, dest_npi=1, registered_delivery=True
    )
    assert len(bodies) == len(parts) > 1
    assert {(b.esm_class, b.data_coding, b.registered_delivery) for b in bodies} == {(0x40, 8, 1)}
    assert {(b.source_addr, b.destination_addr) for b in bodies} == {("15550199", "15550100")}
    back = [parse_part(b.short_message, b.data_coding, udhi=True) for b in bodies]
    assert join_sms(back) == text


def test_build_submits_for_one_gsm7_part_without_receipt() -> None:
    sms = OutgoingSms("j2", "ACME", "15550100", "Fax received: 3 pages")
    (body,) = build_submits(
        sms,
        split_sms(sms.text, 1),
        source_ton=5,
        source_npi=0,
        dest_ton=1,
        dest_npi=1,
        registered_delivery=False,
    )
    assert (body.esm_class, body.data_coding, body.registered_delivery) == (0, 0, 0)
    assert (body.source_addr, body.source_addr_ton) == ("ACME", 5)
    assert body.short_message == b"Fax received: 3 pages"


# -- receipts ----------------------------------------------------------------------------------------------

APPENDIX_B = (
    "id:0123456789 sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD err:000 "
    "Text:Hello wor"
)


def test_parse_receipt_appendix_b() -> None:
    fields = parse_receipt(APPENDIX_B)
    assert fields is not None
    assert (fields.id, fields.sub, fields.dlvrd) == ("0123456789", "001", "001")
    assert (fields.submit_date, fields.done_date) == ("2601011200", "2601011201")
    assert (fields.stat, fields.err, fields.text) == ("DELIVRD", "000", "Hello wor")


def test_parse_receipt_is_lenient_about_case_order_and_missing_fields() -> None:
    fields = parse_receipt("STAT:undeliv ID:abc-1 err:0b1 text:id:fake stat:DELIVRD")
    assert fields is not None
    assert (fields.id, fields.stat, fields.err, fields.text) == (
        "abc-1",
        "UNDELIV",
        "0b1",
        "id:fake stat:DELIVRD",
    )
    assert parse_receipt("stat:DELIVRD err:000") is None
    assert parse_receipt("") is None


def test_receipt_from_text_only() -> None:
    sm = ShortMessage("15550100", "15550199", APPENDIX_B.encode(), esm_class=0x04)
    assert is_receipt(sm)
    assert receipt_from_deliver(sm) == DeliveryReceipt("0123456789", True, "DELIVRD", "000")


def test_receipt_tlvs_win_over_the_text() -> None:
    text = b"id:291 sub:001 dlvrd:000 submit date:2601011200 done date:2601011201 stat:DELIVRD err:000 text:"
    tlvs = ((0x001E, b"123\0"), (0x0427, b"\x05"), (0x0423, b"\x03\x00\x22"))
    sm = ShortMessage("1", "2", text.replace(b"err:000", b"err:"), esm_class=0x04, tlvs=tlvs)
    assert receipt_from_deliver(sm) == DeliveryReceipt("123", False, "UNDELIV", "3:34")


def test_receipt_without_any_id_is_none() -> None:
    assert receipt_from_deliver(ShortMessage("1", "2", b"stat:DELIVRD", esm_class=0x04)) is None


def test_a_handset_text_is_not_a_receipt() -> None:
    assert not is_receipt(ShortMessage("1", "2", b"id:1 stat:DELIVRD", esm_class=0x00))
    assert not is_receipt(ShortMessage("1", "2", b"x", esm_class=0x40))
    assert is_receipt(ShortMessage("1", "2", b"x", esm_class=0x20))


# -- incoming parts -------------------------------------------------------------------------------------


def test_incoming_single_gsm7_and_ucs2() -> None:
    part, info = incoming_part(ShortMessage("1", "2", b"Hello", data_coding=0))
    assert (part.text, info) == ("Hello", None)
    part, info = incoming_part(ShortMessage("1", "2", "Grüße 👋".encode("utf-16-be"), data_coding=8))
    assert (part.text, info) == ("Grüße 👋", None)


def test_incoming_udh_8_and_16_bit_references() -> None:
    sm = ShortMessage("1", "2", b"\x05\x00\x03\x2a\x03\x02abc", esm_class=0x40)
    part, info = incoming_part(sm)
    assert (part.text, info) == ("abc", (0x2A, 3, 2))
    sm = ShortMessage("1", "2", b"\x06\x08\x04\x01\x02\x02\x01abc", esm_class=0x40)
    assert incoming_part(sm)[1] == (0x0102, 2, 1)


def test_incoming_sar_tlvs_are_concatenation_too() -> None:
    tlvs = ((0x020C, b"\x01\x02"), (0x020E, b"\x02"), (0x020F, b"\x02"))
    part, info = incoming_part(ShortMessage("1", "2", b"def", tlvs=tlvs))
    assert (part.text, info) == ("def", (0x0102, 2, 2))


def test_incoming_one_part_of_one_is_a_plain_text() -> None:
    assert incoming_part(ShortMessage("1", "2", b"\x05\x00\x03\x07\x01\x01hi", esm_class=0x40))[1] is None


@pytest.mark.parametrize(
    ("payload", "esm_class", "data_coding"),
    [
        (b"\x05\x00\x03\x07\x02\x03hi", 0x40, 0),  # sequence 3 of 2
        (b"\x09\x00\x03", 0x40, 0),  # header longer than the data
        (b"\x00\x48\x00", 0, 8),  # odd UCS-2
        (b"\x80", 0, 0),  # septet above 127
        (b"\x01\x02", 0, 0x04),  # 8-bit data
    ],
)
def test_incoming_broken_parts_are_format_errors(payload: bytes, esm_class: int, data_coding: int) -> None:
    with pytest.raises(SmsFormatError):
        incoming_part(ShortMessage("1", "2", payload, esm_class=esm_class, data_coding=data_coding))


# -- reassembly ---------------------------------------------------------------------------------------------

LONG = "Please call me back about the fax from this morning, the third page was unreadable. " * 4


def _parts(text: str = LONG, ref: int = 9) -> list[tuple[tuple[int, int, int], SmsPart]]:
    out = []
    for part in split_sms(text, ref):
        sm = ShortMessage("15550100", "15550199", part.payload, esm_class=0x40, data_coding=part.data_coding)
        got, info = incoming_part(sm)
        assert info is not None
        out.append((info, got))
    return out


def test_reassembly_in_any_order_answers_every_token_after_completion() -> None:
    parts = _parts()
    assert len(parts) == 3
    mo: MoReassembler[str] = MoReassembler(hold=5.0, expiry=60.0)
    order = [2, 0, 1]
    results = [mo.add("a", "b", parts[i][0], parts[i][1], f"t{i}", now=float(n)) for n, i in enumerate(order)]
    assert results[:2] == [None, None]
    done = results[2]
    assert done is not None
    assert done.text == LONG
    assert done.tokens == ("t2", "t0", "t1")
    assert done.answered_parts == ()
    assert len(mo) == 0


def test_reassembly_duplicates_are_kept_once_and_both_answered() -> None:
    (i1, p1), (i2, p2), (i3, p3) = _parts()
    mo: MoReassembler[int] = MoReassembler(5.0, 60.0)
    assert mo.add("a", "b", i1, p1, 1, 0.0) is None
    assert mo.add("a", "b", i1, p1, 2, 0.1) is None
    assert mo.add("a", "b", i2, p2, 3, 0.2) is None
    done = mo.add("a", "b", i3, p3, 4, 0.3)
    assert done is not None and done.text == LONG and done.tokens == (1, 2, 3, 4)


def test_reassembly_keys_on_sender_and_reference() -> None:
    (i1, p1), (i2, p2), _ = _parts()
    mo: MoReassembler[int] = MoReassembler(5.0, 60.0)
    mo.add("a", "b", i1, p1, 1, 0.0)
    mo.add("other", "b", i2, p2, 2, 0.0)
    assert len(mo) == 2


def test_hold_time_answers_parts_early_and_keeps_them() -> None:
    (i1, p1), (i2, p2), (i3, p3) = _parts()
    mo: MoReassembler[int] = MoReassembler(hold=2.0, expiry=60.0)
    mo.add("a", "b", i1, p1, 1, now=0.0)
    mo.add("a", "b", i2, p2, 2, now=1.0)
    assert mo.next_deadline() == 2.0
    assert mo.due(1.9) == []
    assert mo.due(2.0) == [1]
    assert mo.next_deadline() == 3.0
    done = mo.add("a", "b", i3, p3, 3, now=2.5)
    assert done is not None and done.text == LONG
    assert done.tokens == (2, 3)
    assert [seq for seq, _ in done.answered_parts] == [1]


def test_restore_after_a_failed_hand_on_keeps_only_answered_parts() -> None:
    (i1, p1), (i2, p2), (i3, p3) = _parts()
    mo: MoReassembler[int] = MoReassembler(hold=1.0, expiry=60.0)
    mo.add("a", "b", i1, p1, 1, now=0.0)
    assert mo.due(1.0) == [1]
    mo.add("a", "b", i2, p2, 2, now=1.5)
    done = mo.add("a", "b", i3, p3, 3, now=1.6)
    assert done is not None
    mo.restore(done, now=1.7)  # the callback failed: 2 and 3 get an error answer, 1 was answered
    assert len(mo) == 1
    assert mo.add("a", "b", i2, p2, 4, now=5.0) is None
    again = mo.add("a", "b", i3, p3, 5, now=5.1)
    assert again is not None and again.text == LONG and again.tokens == (4, 5)


def test_incomplete_texts_expire() -> None:
    (i1, p1), _, _ = _parts()
    mo: MoReassembler[int] = MoReassembler(hold=100.0, expiry=10.0)
    mo.add("a", "b", i1, p1, 1, now=0.0)
    assert mo.next_deadline() == 10.0
    assert mo.expired(9.0) == []
    assert mo.expired(10.0) == [(("a", "b", 9, 3), [1])]
    assert len(mo) == 0 and mo.next_deadline() is None


def test_forget_drops_tokens_of_a_lost_connection_but_keeps_parts() -> None:
    (i1, p1), (i2, p2), (i3, p3) = _parts()
    mo: MoReassembler[tuple[str, int]] = MoReassembler(5.0, 60.0)
    mo.add("a", "b", i1, p1, ("old", 1), 0.0)
    assert mo.forget(lambda t: t[0] == "old") == [("old", 1)]
    mo.add("a", "b", i2, p2, ("new", 2), 1.0)
    done = mo.add("a", "b", i3, p3, ("new", 3), 1.0)
    assert done is not None and done.text == LONG and done.tokens == (("new", 2), ("new", 3))


def test_parts_that_do_not_join_are_an_error_with_their_tokens() -> None:
    udh1 = build_udh([(IEI_CONCAT_16BIT, b"\x00\x01\x02\x01")])
    udh2 = build_udh([(IEI_CONCAT_16BIT, b"\x00\x01\x02\x02")])
    p1 = parse_part(udh1 + b"ab", 0, udhi=True)
    p2 = parse_part(udh2 + b"cd", 0, udhi=True)
    broken = type(p2)(p2.encoding, b"", p2.payload[len(udh2) :], p2.data_coding, 2, p2.text)  # header lost
    mo: MoReassembler[int] = MoReassembler(5.0, 60.0)
    mo.add("a", "b", (1, 2, 1), p1, 1, 0.0)
    with pytest.raises(ReassemblyError) as caught:
        mo.add("a", "b", (1, 2, 2), broken, 2, 0.0)
    assert caught.value.tokens == (1, 2)


# -- backoff and settings ------------------------------------------------------------------------------------


def test_backoff_doubles_to_the_maximum_and_resets() -> None:
    backoff = Backoff(1.0, 10.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 0}, "port"),
        ({"system_id": "x" * 16}, "system_id"),
        ({"password": "123456789"}, "password"),
        ({"window": 0}, "window"),
        ({"reconnect_min": 5.0, "reconnect_max": 1.0}, "reconnect"),
        ({"submit_timeout": 0.0}, "submit_timeout"),
        ({"source_ton": 256}, "source_ton"),
    ],
)
def test_settings_are_checked(changes: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"host": "127.0.0.1", "port": 2775, "system_id": "esme", "password": "pw"}
    with pytest.raises(ValueError, match=message):
        SmppSettings(**{**base, **changes})


# -- the transport against a scripted SMSC on loopback -------------------------------------------------------


@dataclass
class FakeSmsc:
    """Answers binds and submits as told; records what it got; can push deliver_sm."""

    bind_status: int = 0
    submit_status: Callable[[ShortMessage], int] = lambda sm: 0
    submit_delay: float = 0.0
    answer_enquire_link: bool = True
    answer_unbind: bool = True
    received: list[Pdu] = field(default_factory=list)
    outstanding: int = 0
    most_outstanding: int = 0
    binds: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    responses: dict[int, asyncio.Future[Pdu]] = field(default_factory=dict)
    sequence: int = 1000
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def drop(self) -> None:
        for writer in self.writers:
            writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        framer = PduFramer()
        try:
            while data := await reader.read(65536):
                for pdu in framer.feed(data):
                    self.received.append(pdu)
                    await self.handle(pdu, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(self, pdu: Pdu, writer: asyncio.StreamWriter) -> None:
        if pdu.command_id == BIND_TRANSCEIVER:
            self.binds += 1
            writer.write(pdu.response(self.bind_status, encode_message_id("FAKE")).encode())
        elif pdu.command_id == SUBMIT_SM:
            task = asyncio.get_running_loop().create_task(self.answer_submit(pdu, writer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif pdu.command_id == ENQUIRE_LINK and self.answer_enquire_link:
            writer.write(pdu.response().encode())
        elif pdu.command_id == UNBIND and self.answer_unbind:
            writer.write(pdu.response().encode())
        elif pdu.is_response and pdu.sequence in self.responses:
            self.responses.pop(pdu.sequence).set_result(pdu)

    async def answer_submit(self, pdu: Pdu, writer: asyncio.StreamWriter) -> None:
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        await asyncio.sleep(self.submit_delay)
        self.outstanding -= 1
        status = self.submit_status(ShortMessage.decode(pdu.body))
        body = encode_message_id(f"id{pdu.sequence}") if status == 0 else b""
        writer.write(pdu.response(status, body).encode())

    async def deliver(self, sm: ShortMessage, timeout: float = 5.0) -> int:
        """Send a deliver_sm on the newest connection; its deliver_sm_resp status."""
        self.sequence += 1
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self.responses[self.sequence] = future
        self.writers[-1].write(Pdu(DELIVER_SM, 0, self.sequence, sm.encode()).encode())
        return (await asyncio.wait_for(future, timeout)).status

    def requests(self, command_id: int) -> list[Pdu]:
        return [p for p in self.received if p.command_id == command_id]


Scenario = Callable[[FakeSmsc, SmppTransport, list[object]], Awaitable[None]]


def run_with_smsc(scenario: Scenario, smsc: FakeSmsc | None = None, **overrides: Any) -> list[object]:
    got: list[object] = []

    async def main() -> None:
        fake = smsc or FakeSmsc()
        port = await fake.start()
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "system_id": "esme",
            "password": "pw",
            "submit_timeout": 1.0,
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
            **overrides,
        }
        transport = SmppTransport(SmppSettings(**options))

        async def on_incoming(sms: IncomingSms) -> None:
            got.append(sms)

        async def on_receipt(receipt: DeliveryReceipt) -> None:
            got.append(receipt)

        await transport.start(on_incoming, on_receipt)
        try:
            if not fake.bind_status:
                assert await transport.wait_bound(2.0)
            await scenario(fake, transport, got)
        finally:
            await transport.stop()
            await fake.close()

    asyncio.run(main())
    return got


def test_bind_transceiver_carries_the_settings() -> None:
    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        (bind,) = fake.requests(BIND_TRANSCEIVER)
        assert BindBody.decode(bind.body) == BindBody("esme", "pw", "VMA")

    run_with_smsc(scenario, system_type="VMA")


def test_submit_window_limits_outstanding_requests() -> None:
    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        text = "x" * 153 * 7  # 7 GSM 7-bit parts
        result = await transport.submit(OutgoingSms("w1", "+15550199", "+15550100", text))
        assert result.accepted and result.parts == 7 and len(result.message_ids) == 7
        assert fake.most_outstanding == 3
        sent = [ShortMessage.decode(p.body) for p in fake.requests(SUBMIT_SM)]
        assert [s.short_message[5] for s in sent] == list(range(1, 8))  # in part order
        assert {s.short_message[3] for s in sent} == {udh_reference("w1")}

    run_with_smsc(scenario, FakeSmsc(submit_delay=0.05), window=3)


def test_refusals_are_classified_with_the_status_name() -> None:
    def status(sm: ShortMessage) -> int:
        return {"15550000": 0x0B, "15550001": 0x58}.get(sm.destination_addr, 0)

    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        bad = await transport.submit(OutgoingSms("r1", "", "+15550000", "hi"))
        assert (bad.accepted, bad.permanent) == (False, True)
        assert "ESME_RINVDSTADR" in bad.reason
        busy = await transport.submit(OutgoingSms("r2", "", "+15550001", "hi"))
        assert (busy.accepted, busy.permanent) == (False, False)
        assert "ESME_RTHROTTLED" in busy.reason
        too_long = await transport.submit(OutgoingSms("r3", "", "+15550100", "x" * 40000))
        assert (too_long.accepted, too_long.permanent) == (False, True)
        assert "too long" in too_long.reason

    run_with_smsc(scenario, FakeSmsc(submit_status=status))


def test_a_missing_submit_sm_resp_is_a_temporary_refusal() -> None:
    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        result = await transport.submit(OutgoingSms("t1", "", "+15550100", "hi"))
        assert (result.accepted, result.permanent) == (False, False)
        assert "no submit_sm_resp within 0.3 s" in result.reason

    run_with_smsc(scenario, FakeSmsc(submit_delay=1.0), submit_timeout=0.3)


def test_no_enquire_link_resp_means_reconnect() -> None:
    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        for _ in range(100):
            if fake.binds >= 2:
                break
            await asyncio.sleep(0.02)
        assert fake.binds >= 2
        assert fake.requests(ENQUIRE_LINK)

    run_with_smsc(scenario, FakeSmsc(answer_enquire_link=False), enquire_link=0.1, submit_timeout=0.2)


def test_bind_refused_retries_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ums.sms")

    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        for _ in range(100):
            if fake.binds >= 3:
                break
            await asyncio.sleep(0.02)
        assert fake.binds >= 3 and not transport.ready()
        result = await transport.submit(OutgoingSms("b1", "", "+15550100", "hi"))
        assert (result.accepted, result.permanent) == (False, False)
        assert "not bound" in result.reason

    run_with_smsc(scenario, FakeSmsc(bind_status=0x0E), submit_timeout=0.2)
    states = [r.getMessage() for r in caplog.records if "sms.smpp.state" in r.getMessage()]
    assert any('reason="bind refused: ESME_RINVPASWD (0x0000000E)"' in s for s in states), states
    waits = [s.rsplit("retry_in=", 1)[1] for s in states if "state=waiting" in s]
    assert waits[:3] == ["0.05", "0.1", "0.2"], states


def test_smsc_unbind_and_drop_lead_to_a_new_bind() -> None:
    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        fake.sequence += 1
        fake.writers[-1].write(Pdu(UNBIND, 0, fake.sequence).encode())
        for _ in range(100):
            if fake.binds >= 2 and transport.bound:
                break
            await asyncio.sleep(0.02)
        assert fake.binds == 2
        fake.drop()
        for _ in range(100):
            if fake.binds >= 3 and transport.bound:
                break
            await asyncio.sleep(0.02)
        assert fake.binds == 3
        result = await transport.submit(OutgoingSms("u1", "", "+15550100", "after"))
        assert result.accepted

    run_with_smsc(scenario)


def test_deliver_sm_resp_waits_for_the_callback_and_reports_failure() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        async def slow(sms: IncomingSms) -> None:
            calls.append(sms.text)
            if sms.text == "boom":
                raise OSError("disk full")
            await release.wait()

        transport._on_incoming = slow  # the scenario swaps in its own callback
        answer = asyncio.ensure_future(fake.deliver(ShortMessage("15550100", "15550199", b"slow")))
        await asyncio.sleep(0.2)
        assert not answer.done() and calls == ["slow"]
        release.set()
        assert await answer == 0
        assert await fake.deliver(ShortMessage("15550100", "15550199", b"boom")) == 0x64
        assert await fake.deliver(ShortMessage("1", "2", b"\x01", data_coding=4)) == 0x65  # not text
        assert calls == ["slow", "boom"]

    run_with_smsc(scenario)


def test_incoming_text_receipt_and_concatenation_over_the_wire() -> None:
    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        sm = ShortMessage("15550100", "15550199", b"Hi", source_addr_ton=1, dest_addr_ton=1)
        assert await fake.deliver(sm) == 0
        receipt = ShortMessage("15550100", "15550199", APPENDIX_B.encode(), esm_class=0x04)
        assert await fake.deliver(receipt) == 0
        parts = [
            ShortMessage(
                "15550100",
                "15550199",
                p.payload,
                source_addr_ton=1,
                esm_class=0x40,
                data_coding=p.data_coding,
            )
            for p in split_sms(LONG, 77)
        ]
        statuses = await asyncio.gather(*(fake.deliver(p) for p in reversed(parts)))
        assert statuses == [0, 0, 0]

    got = run_with_smsc(scenario)
    assert isinstance(got[0], IncomingSms)
    assert got[0] == IncomingSms("+15550100", "+15550199", "Hi", "smpp", got[0].ref)
    assert got[1] == DeliveryReceipt("0123456789", True, "DELIVRD", "000")
    assert isinstance(got[2], IncomingSms) and got[2].text == LONG and got[2].sender == "+15550100"
    assert len(got) == 3


def test_stop_unbinds() -> None:
    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        assert transport.ready()
        await transport.stop()
        assert len(fake.requests(UNBIND)) == 1
        assert not transport.bound and not transport.ready()

    run_with_smsc(scenario)


def test_stop_does_not_hang_when_the_smsc_ignores_unbind() -> None:
    async def scenario(fake: FakeSmsc, transport: SmppTransport, got: list[object]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await transport.stop()
        assert loop.time() - started < 3.0

    run_with_smsc(scenario, FakeSmsc(answer_unbind=False))
