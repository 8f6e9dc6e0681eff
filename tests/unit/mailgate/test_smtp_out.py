"""SMTP delivery against an aiosmtpd sink: success, sink down, permanent and temporary refusals."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ums.mailgate.mime import ComposeSettings, compose_voicemail
from ums.mailgate.smtp_out import DeliveryError, SmtpSettings, deliver_smtp
from ums.store.models import new_record

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")


class Sink:
    """Records what arrives; answers RCPT and DATA with the codes a test sets."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.rcpt_reply = ""
        self.data_reply = "250 2.0.0 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.rcpt_reply and address.startswith("bad"):
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply.startswith("250"):
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return self.data_reply


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = free_port()
    controller = aiosmtpd_controller.Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def voicemail() -> tuple[bytes, str]:
    r = new_record(
        now=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        rng=random.Random(1),
        domain="ums.example.com",
        mailbox="100",
        owner="alice@example.com",
        kind="voice",
        caller_number="+49891234567",
        caller_name="Jane Doe",
        duration=7.0,
    )
    # a body line starting with "." exercises dot-stuffing (RFC 5321 §4.5.2)
    audio = b"." + bytes(range(256)) * 40
    data = compose_voicemail(r, audio, "v.wav", "audio/wav", ComposeSettings(from_addr="vm@ums.example.com"))
    return data, r.message_id


def test_message_arrives_unchanged(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    data, mid = voicemail()
    refused = deliver_smtp(
        SmtpSettings("127.0.0.1", port, timeout=5), "vm@ums.example.com", ["alice@example.com"], data
    )
    assert refused == {}
    assert len(handler.received) == 1
    sender, rcpts, content = handler.received[0]
    assert (sender, rcpts) == ("vm@ums.example.com", ["alice@example.com"])
    assert content == data
    assert f"Message-ID: {mid}\r\n".encode() in content


def test_partial_refusal_is_reported(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    handler.rcpt_reply = "550 5.1.1 no such user"
    data, _ = voicemail()
    refused = deliver_smtp(
        SmtpSettings("127.0.0.1", port, timeout=5), "vm@x", ["alice@example.com", "bad@x"], data
    )
    assert refused == {"bad@x": (550, "5.1.1 no such user")}
    assert len(handler.received) == 1


def test_sink_down_is_temporary() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(DeliveryError) as info:
        deliver_smtp(SmtpSettings("127.0.0.1", port, timeout=5), "vm@x", ["alice@example.com"], b"x\r\n")
    assert info.value.permanent is False and info.value.code is None


def test_sink_back_after_outage_gets_the_message() -> None:
    handler = Sink()
    port = free_port()
    data, _ = voicemail()
    settings = SmtpSettings("127.0.0.1", port, timeout=5)
    with pytest.raises(DeliveryError):
        deliver_smtp(settings, "vm@x", ["alice@example.com"], data)
    controller = aiosmtpd_controller.Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        deliver_smtp(settings, "vm@x", ["alice@example.com"], data)
    finally:
        controller.stop()
    assert [c for _, _, c in handler.received] == [data]


def test_rcpt_550_is_permanent(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    handler.rcpt_reply = "550 5.1.1 no such user"
    with pytest.raises(DeliveryError) as info:
        deliver_smtp(SmtpSettings("127.0.0.1", port, timeout=5), "vm@x", ["bad@example.com"], b"x\r\n")
    assert (info.value.permanent, info.value.code) == (True, 550)
    assert "no such user" in info.value.text


def test_rcpt_450_is_temporary(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    handler.rcpt_reply = "450 4.2.1 mailbox busy"
    with pytest.raises(DeliveryError) as info:
        deliver_smtp(SmtpSettings("127.0.0.1", port, timeout=5), "vm@x", ["bad@example.com"], b"x\r\n")
    assert (info.value.permanent, info.value.code) == (False, 450)


@pytest.mark.parametrize(
    ("reply", "permanent"), [("554 5.6.0 content rejected", True), ("451 4.3.0 later", False)]
)
def test_data_reply_decides(sink: tuple[Sink, int], reply: str, permanent: bool) -> None:
    handler, port = sink
    handler.data_reply = reply
    with pytest.raises(DeliveryError) as info:
        deliver_smtp(SmtpSettings("127.0.0.1", port, timeout=5), "vm@x", ["alice@example.com"], b"x\r\n")
    assert (info.value.permanent, info.value.code) == (permanent, int(reply[:3]))
    assert handler.received == []


def test_starttls_required_but_not_offered_is_temporary(sink: tuple[Sink, int]) -> None:
    _, port = sink
    with pytest.raises(DeliveryError) as info:
        deliver_smtp(SmtpSettings("127.0.0.1", port, starttls=True, timeout=5), "vm@x", ["a@x"], b"x\r\n")
    assert info.value.permanent is False and "STARTTLS" in info.value.text


def test_auth() -> None:
    handler = Sink()
    port = free_port()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        ok = auth_data.login == b"ums" and auth_data.password == b"secret"
        return aiosmtpd_smtp.AuthResult(success=ok, handled=False)

    controller = aiosmtpd_controller.Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"],  # smtplib and aiosmtpd disagree on LOGIN with an initial response
    )
    controller.start()
    try:
        data, _ = voicemail()
        good = SmtpSettings("127.0.0.1", port, username="ums", password="secret", timeout=5)
        deliver_smtp(good, "vm@x", ["alice@example.com"], data)
        bad = SmtpSettings("127.0.0.1", port, username="ums", password="wrong", timeout=5)
        with pytest.raises(DeliveryError) as info:
            deliver_smtp(bad, "vm@x", ["alice@example.com"], data)
    finally:
        controller.stop()
    assert len(handler.received) == 1
    assert info.value.permanent is False and info.value.code == 535


def test_no_recipients() -> None:
    with pytest.raises(ValueError):
        deliver_smtp(SmtpSettings("127.0.0.1"), "vm@x", [], b"x\r\n")
