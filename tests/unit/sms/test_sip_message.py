"""SMS over SIP MESSAGE: the pure parse/build/split functions and the transport on an in-memory UA."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.sip.test_ua import HOST_B, PEER, challenge_response, final_response, make_ua
from ums.config import Account
from ums.sip.digest import verify_authorization
from ums.sip.events import Addr, Event, RequestReceived, ResponseReceived
from ums.sip.message import Request, Response
from ums.sip.message import parse_message as parse_sip
from ums.sip.ua import UserAgent
from ums.sip.uri import NameAddr
from ums.sms.sip import (
    ACCEPT,
    MAX_REQUEST_BYTES,
    MessageRefused,
    SipMessageTransport,
    SipSmsSettings,
    build_message,
    build_messages,
    is_permanent,
    parse_message,
    split_text,
)
from ums.sms.transport import DeliveryReceipt, IncomingSms, OutgoingSms, SubmitResult

OURS = {"100": "100", "+4930100": "100", "200": "200"}
TRUNK = Addr("udp", "192.0.2.50", 5080)
PBX = Addr("udp", "pbx.example", 5070)
ACCOUNT = Account(
    name="pbx",
    registrar="sip:pbx.example:5070",
    aor="sip:alice@pbx.example",
    auth_user="alice",
    password="secret",
    register=False,
)


def numbers(user: str) -> str | None:
    return OURS.get(user)


def message_bytes(
    body: bytes,
    ctype: str | None = "text/plain;charset=UTF-8",
    *,
    uri: str = f"sip:100@{HOST_B}",
    to: str = f"<sip:100@{HOST_B}>",
    from_: str = "<sip:+15550123@192.0.2.9>;tag=pt",
    extra: tuple[str, ...] = (),
    branch: str = "z9hG4bKm1",
    call_id: str = "m1@192.0.2.9",
) -> bytes:
    lines = [
        f"MESSAGE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.9:5062;branch={branch}",
        "Max-Forwards: 70",
        f"From: {from_}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        "CSeq: 1 MESSAGE",
        *extra,
    ]
    if ctype is not None:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def message(body: bytes, ctype: str | None = "text/plain;charset=UTF-8", **kw: Any) -> Request:
    req = parse_sip(message_bytes(body, ctype, **kw))
    assert isinstance(req, Request)
    return req


def refused(req: Request) -> MessageRefused:
    with pytest.raises(MessageRefused) as info:
        parse_message(req, numbers)
    return info.value


# ====================================================================== inbound, pure


def test_plain_text_utf8() -> None:
    sms = parse_message(message("Grüße, 10 € 🙂".encode()), numbers)
    assert sms == IncomingSms(
        sender="+15550123", to="100", text="Grüße, 10 € 🙂", via="sip", ref="m1@192.0.2.9"
    )


@pytest.mark.parametrize(
    ("body", "ctype", "text"),
    [
        ("Grüße".encode(), "text/plain", "Grüße"),  # no charset: UTF-8
        (b"\xef\xbb\xbfhi", "text/plain", "hi"),  # a UTF-8 BOM goes
        (b"Gr\xfc\xdfe \x80", "text/plain", "Grüße €"),  # not UTF-8, unlabelled: Windows-1252
        (b"Gr\xfc\xdfe", "text/plain; charset=ISO-8859-1", "Grüße"),
        (b"Gr\xfc\xdfe", 'text/plain; charset="latin1"', "Grüße"),
        ("Grüße".encode(), "text/plain;charset=us-ascii", "Grüße"),  # mislabelled UTF-8
        (b"ok \xff", "text/plain;charset=utf-8", "ok \ufffd"),  # declared, broken: replaced
        ("hé".encode("utf-16"), "text/plain;charset=UTF-16", "hé"),
        ("Grüße".encode(), None, "Grüße"),  # no Content-Type: read as text/plain
        ("Grüße".encode(), "TEXT/PLAIN;CHARSET=UTF-8", "Grüße"),
    ],
)
def test_charsets(body: bytes, ctype: str | None, text: str) -> None:
    assert parse_message(message(body, ctype), numbers).text == text


@pytest.mark.parametrize("charset", ["x-klingon", "base64", "unicode_escape", "undefined"])
def test_unknown_or_unusable_charset_is_415(charset: str) -> None:
    exc = refused(message(b"hi", f"text/plain;charset={charset}"))
    assert exc.status == 415 and ("Accept", ACCEPT) in exc.headers


@pytest.mark.parametrize(
    "ctype",
    ["application/im-iscomposing+xml", "message/imdn+xml", "text/html", "multipart/mixed;boundary=x"],
)
def test_other_types_are_415_with_accept(ctype: str) -> None:
    exc = refused(message(b"<x/>", ctype))
    assert exc.status == 415
    assert exc.headers == (("Accept", "text/plain, message/cpim"),)


def test_content_encoding_is_415_with_accept_encoding() -> None:
    exc = refused(message(b"\x1f\x8b", "text/plain", extra=("Content-Encoding: gzip",)))
    assert exc.status == 415 and exc.headers == (("Accept-Encoding", "identity"),)


def cpim(content: bytes, inner: str = "text/plain;charset=utf-8", sep: str = "\r\n") -> bytes:
    outer = sep.join(
        ["From: <sip:+15550123@example.net>", "To: <sip:100@example.org>", "DateTime: 2024-05-01T10:00:00Z"]
    )
    mime = sep.join([f"Content-Type: {inner}", "Content-ID: <1234@example.net>"])
    return f"{outer}{sep}{sep}{mime}{sep}{sep}".encode() + content


@pytest.mark.parametrize("sep", ["\r\n", "\n"])
def test_cpim_wrapping_text_plain(sep: str) -> None:
    body = cpim("Grüße\r\n\r\nzweiter Absatz".encode(), sep=sep)
    sms = parse_message(message(body, "message/cpim"), numbers)
    assert sms.text == "Grüße\r\n\r\nzweiter Absatz"
    assert sms.sender == "+15550123"  # from SIP, not from the CPIM From


def test_cpim_latin1_and_without_message_headers() -> None:
    assert parse_message(
        message(cpim(b"Gr\xfc\xdfe", "text/plain;charset=iso-8859-1"), "Message/CPIM"), numbers
    ).text == ("Grüße")
    bare = b"Content-Type: text/plain\r\n\r\nhello"
    assert parse_message(message(bare, "message/cpim"), numbers).text == "hello"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (cpim(b"<html/>", "text/html"), 415),
        (cpim(b"aGk=", "text/plain").replace(b"Content-ID", b"Content-Transfer-Encoding: base64\r\nX"), 415),
        (b"From: <sip:a@b>\r\nTo: <sip:c@d>", 400),  # no blank line
        (b"From: <sip:a@b>\r\n\r\nContent-Type: text/plain", 400),  # no second blank line
        (b"garbage line\r\n\r\nContent-Type: text/plain\r\n\r\nhi", 400),
        (cpim(b""), 400),  # nothing inside
    ],
)
def test_broken_or_unusable_cpim(body: bytes, status: int) -> None:
    assert refused(message(body, "message/cpim")).status == status


def test_empty_body_is_400() -> None:
    exc = refused(message(b"", None))
    assert (exc.status, exc.reason) == (400, "Empty message body")


def test_body_too_large_is_413() -> None:
    req = message(b"x" * 2000)
    with pytest.raises(MessageRefused) as info:
        parse_message(req, numbers, max_bytes=1999)
    assert info.value.status == 413
    assert parse_message(req, numbers, max_bytes=2000).text == "x" * 2000


@pytest.mark.parametrize(
    ("uri", "to", "status_or_number"),
    [
        (f"sip:999@{HOST_B}", f"<sip:100@{HOST_B}>", 404),  # the Request-URI decides
        (f"sip:{HOST_B}", f"<sip:200@{HOST_B}>", "200"),  # no user in the Request-URI: To
        (f"sip:{HOST_B}", f"<sip:{HOST_B}>", 404),
        (f"sip:+4930100@{HOST_B};user=phone", f"<sip:{HOST_B}>", "100"),
        ("tel:+4930100", "<tel:+4930100>", "100"),
        (f"sip:+4930100;npdi@{HOST_B}", f"<sip:{HOST_B}>", "100"),  # telephone-subscriber params go
    ],
)
def test_recipient(uri: str, to: str, status_or_number: int | str) -> None:
    req = message(b"hi", uri=uri, to=to)
    if isinstance(status_or_number, int):
        exc = refused(req)
        assert (exc.status, exc.reason, exc.headers) == (404, "Not Found", ())
    else:
        assert parse_message(req, numbers).to == status_or_number


@pytest.mark.parametrize(
    ("from_", "extra", "sender"),
    [
        ("<sip:+15550123@192.0.2.9>;tag=a", (), "+15550123"),
        (
            '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=a',
            ("P-Asserted-Identity: <sip:+15550999@carrier>",),
            "+15550999",
        ),
        (
            "<sip:0301234@192.0.2.9>;tag=a",
            ('P-Asserted-Identity: "X" <tel:+49301234>, <sip:+49301234@c>',),
            "+49301234",
        ),
        ("<sip:0301234@192.0.2.9>;tag=a", ("P-Asserted-Identity: <<bad>>",), "0301234"),  # unusable PAI
        ("<sip:192.0.2.9>;tag=a", (), ""),  # nobody in particular
    ],
)
def test_sender(from_: str, extra: tuple[str, ...], sender: str) -> None:
    assert parse_message(message(b"hi", from_=from_, extra=extra), numbers).sender == sender


# ====================================================================== outbound, pure


def sms(text: str = "Hello", to: str = "+15550199", sender: str = "+4930100") -> OutgoingSms:
    return OutgoingSms(job_id="j1", sender=sender, to=to, text=text)


def test_build_message_headers() -> None:
    req = build_message(
        sms("Grüße"), "sip:+15550199@192.0.2.50:5080", f"sip:+4930100@{HOST_B}", random.Random(1)
    )
    assert req.method == "MESSAGE" and req.uri == "sip:+15550199@192.0.2.50:5080"
    assert req.headers.get("To") == "<sip:+15550199@192.0.2.50:5080>"
    from_na = NameAddr.parse(req.headers.get("From") or "")
    assert str(from_na.uri) == f"sip:+4930100@{HOST_B}" and from_na.tag
    assert req.headers.get("CSeq") == "1 MESSAGE"
    assert req.headers.get("Content-Type") == "text/plain;charset=UTF-8"
    assert req.call_id.endswith(f"@{HOST_B}")
    assert "Contact" not in req.headers and "Via" not in req.headers
    assert req.body == "Grüße".encode()
    again = build_message(
        sms("Grüße"), "sip:+15550199@192.0.2.50:5080", f"sip:+4930100@{HOST_B}", random.Random(1)
    )
    assert again.serialize() == req.serialize()
    with pytest.raises(ValueError):
        build_message(sms(), "http://example.com/", f"sip:x@{HOST_B}", random.Random(1))


def test_split_text_multibyte_at_character_boundaries() -> None:
    text = "é€🙂" * 100  # 2 + 3 + 4 bytes
    parts = split_text(text, 100)
    assert "".join(parts) == text and len(parts) > 1
    assert all(len(p.encode()) <= 100 for p in parts)
    assert [len(p.encode()) for p in parts[:-1]] == [99] * (len(parts) - 1)  # 11 whole triplets
    assert split_text("short", 100) == ["short"]
    assert split_text("", 100) == [""]
    assert split_text("abcd", 4) == ["abcd"]
    with pytest.raises(ValueError):
        split_text("x", 3)


def test_split_text_prefers_a_space_and_keeps_clusters() -> None:
    assert split_text("aaaa bbbb cccc", 12) == ["aaaa bbbb cc", "cc"]  # the space is too far back
    assert split_text("aaaaaaaaaa bbbb", 12) == ["aaaaaaaaaa ", "bbbb"]
    assert split_text("abcdefghijklmnop", 10) == ["abcdefghij", "klmnop"]  # no space: cut anyway
    # e + combining acute is not cut apart; neither is a ZWJ family or a skin tone
    assert split_text("aaaae\u0301bb", 5) == ["aaaa", "e\u0301bb"]
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert split_text("ab" + family, 19) == ["ab", family]
    assert split_text("abc\U0001f44d\U0001f3fd", 8) == ["abc", "\U0001f44d\U0001f3fd"]


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=4, max_value=80))
def test_split_text_properties(text: str, max_bytes: int) -> None:
    text = text.encode("utf-8", "replace").decode()
    parts = split_text(text, max_bytes)
    assert "".join(parts) == text
    assert all(len(p.encode()) <= max_bytes for p in parts)
    assert all(parts) or parts == [""]


def test_build_messages_splits_under_1300_bytes() -> None:
    text = ("Grüße aus Köln, das Wetter ist schön! 🙂 " * 60).strip()  # ~2.7 kB of UTF-8
    reqs = build_messages(
        sms(text), "sip:+15550199@192.0.2.50:5080", f"sip:+4930100@{HOST_B}", random.Random(2)
    )
    assert len(reqs) == 4
    assert b"".join(r.body for r in reqs).decode() == text
    assert len({r.call_id for r in reqs}) == 4
    for r in reqs:
        assert len(r.serialize()) + 90 <= MAX_REQUEST_BYTES
        assert r.headers.get("Content-Type") == "text/plain;charset=UTF-8"
    (one,) = build_messages(sms("short"), "sip:1@h", "sip:2@h", random.Random(2))
    assert one.body == b"short"
    with pytest.raises(ValueError):
        build_messages(sms(), "sip:1@" + "h" * 1200 + ".example", "sip:2@h", random.Random(2))


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        *((s, True) for s in (404, 484, 403, 488, 415, 606, 604, 603, 501, 513, 302, 400)),
        *((s, False) for s in (408, 480, 486, 500, 503, 504, 401, 407, 429, 600, 0)),
    ],
)
def test_permanent_or_temporary(status: int, permanent: bool) -> None:
    assert is_permanent(status) is permanent


# ====================================================================== the transport on an in-memory UA


class FakeSip:
    """The parts of SipService the transport uses: the UA, a clock and ``kick``."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self.clock = 0.0
        self.wire: list[tuple[bytes, Addr]] = []
        self.handler: Callable[[Event], bool] = lambda ev: False
        self.unhandled: list[Event] = []
        self._dispatching = False

    def now(self) -> float:
        return self.clock

    def kick(self) -> None:
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while True:
                out = self.ua.datagrams_to_send()
                self.wire += out
                events = self.ua.events()
                for ev in events:
                    if not self.handler(ev):
                        self.unhandled.append(ev)
                if not out and not events:
                    break
        finally:
            self._dispatching = False

    def receive(self, data: bytes, source: Addr = PEER) -> None:
        self.ua.receive(data, source, self.clock)
        self.kick()

    def advance(self, now: float) -> None:
        self.clock = now
        self.ua.advance(now)
        self.kick()

    def take(self) -> list[tuple[Request | Response, Addr]]:
        out = [(parse_sip(data), dest) for data, dest in self.wire]
        self.wire = []
        return out

    def requests(self) -> list[tuple[Request, Addr, int]]:
        """Requests sent since the last take, with their size on the wire."""
        out = [(m, d, len(data)) for data, d in self.wire if isinstance(m := parse_sip(data), Request)]
        self.wire = []
        return out

    def responses(self) -> list[Response]:
        return [m for m, _ in self.take() if isinstance(m, Response)]


def world(
    settings: SipSmsSettings | None = None, accounts: tuple[Account, ...] = ()
) -> tuple[FakeSip, SipMessageTransport]:
    sip = FakeSip(make_ua(HOST_B, 5, accounts))
    transport = SipMessageTransport(
        sip, settings or SipSmsSettings(trunk="sip:192.0.2.50:5080"), numbers, rng=random.Random(7)
    )
    sip.handler = transport.on_sip_event
    return sip, transport


async def no_receipt(receipt: DeliveryReceipt) -> None:
    raise AssertionError("no receipts over SIP")


async def settle(cond: Callable[[], bool] = lambda: False, rounds: int = 50) -> None:
    """Let other tasks run until ``cond`` holds (or a fixed number of loop turns)."""
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def test_message_in_is_answered_only_after_the_callback() -> None:
    async def scenario() -> None:
        sip, transport = world()
        stored: list[IncomingSms] = []
        gate = asyncio.Event()

        async def on_incoming(sms: IncomingSms) -> None:
            stored.append(sms)
            await gate.wait()

        await transport.start(on_incoming, no_receipt)
        sip.receive(message_bytes("Hallo 🙂".encode()))
        await settle(lambda: bool(stored))
        assert stored == [IncomingSms("+15550123", "100", "Hallo 🙂", "sip", "m1@192.0.2.9")]
        await settle()
        assert sip.responses() == []  # nothing before the text is durable
        sip.receive(message_bytes("Hallo 🙂".encode()))  # a retransmission is absorbed
        assert sip.responses() == [] and len(stored) == 1
        gate.set()
        await transport.drain()
        (ok,) = sip.responses()
        assert (ok.status, ok.reason, ok.call_id) == (200, "OK", "m1@192.0.2.9")
        assert NameAddr.parse(ok.headers.get("To") or "").tag
        sip.receive(message_bytes("Hallo 🙂".encode()))  # retransmitted again: the 200 again
        assert [r.status for r in sip.responses()] == [200] and len(stored) == 1
        assert sip.unhandled == []

    run(scenario)


def test_callback_failure_answers_500_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        sip, transport = world()

        async def on_incoming(sms: IncomingSms) -> None:
            raise OSError("disk full")

        await transport.start(on_incoming, no_receipt)
        sip.receive(message_bytes(b"zebra crossing"))
        await transport.drain()
        (resp,) = sip.responses()
        assert (resp.status, resp.headers.get("Retry-After")) == (500, "10")

    run(scenario)
    assert "event=sms.sip_in_failed" in caplog.text and "zebra" not in caplog.text


def test_refused_messages_are_answered_at_once() -> None:
    async def scenario() -> None:
        sip, transport = world()
        calls: list[IncomingSms] = []

        async def on_incoming(sms: IncomingSms) -> None:
            calls.append(sms)

        await transport.start(on_incoming, no_receipt)
        sip.receive(message_bytes(b"hi", uri=f"sip:555@{HOST_B}"))
        sip.receive(
            message_bytes(b"<x/>", "application/im-iscomposing+xml", branch="z9hG4bKm2", call_id="m2")
        )
        sip.receive(message_bytes(b"", None, branch="z9hG4bKm3", call_id="m3"))
        not_found, unsupported, empty = sip.responses()
        assert (not_found.status, not_found.reason) == (404, "Not Found")
        assert unsupported.status == 415 and unsupported.headers.get_raw("Accept") == ACCEPT
        assert (empty.status, empty.reason) == (400, "Empty message body")
        await settle()
        assert calls == []

    run(scenario)


def test_start_keeps_other_methods_and_stop_removes_message() -> None:
    async def scenario() -> None:
        sip, transport = world()
        sip.ua.accept_methods({"SUBSCRIBE"}, allow_events=["message-summary"])

        async def on_incoming(sms: IncomingSms) -> None:
            pass

        await transport.start(on_incoming, no_receipt)
        assert sip.ua.local.accepted == {"SUBSCRIBE", "MESSAGE"}
        assert sip.ua.local.allow_events == ("message-summary",)
        await transport.stop()
        assert sip.ua.local.accepted == {"SUBSCRIBE"}
        sip.receive(message_bytes(b"hi"))
        (resp,) = sip.responses()
        assert resp.status == 405  # the user agent's own answer now
        result = await transport.submit(sms())
        assert not result.accepted and not result.permanent

    run(scenario)


def test_stop_cancels_a_text_still_being_stored_with_503() -> None:
    async def scenario() -> None:
        sip, transport = world()

        async def on_incoming(sms: IncomingSms) -> None:
            await asyncio.Event().wait()  # never durable

        await transport.start(on_incoming, no_receipt)
        sip.receive(message_bytes(b"hi"))
        await settle()
        await transport.stop(grace=0)
        (resp,) = sip.responses()
        assert (resp.status, resp.headers.get("Retry-After")) == (503, "10")

    run(scenario)


def test_other_events_are_not_ours() -> None:
    _sip, transport = world()
    sub = parse_sip(message_bytes(b"").replace(b"MESSAGE", b"SUBSCRIBE"))
    assert isinstance(sub, Request)
    assert not transport.on_sip_event(RequestReceived("in-1", sub, PEER))
    assert not transport.on_sip_event(ResponseReceived("out-9", Response(status=200)))


async def submitted(
    sip: FakeSip, transport: SipMessageTransport, out: OutgoingSms
) -> tuple[asyncio.Task[SubmitResult], list[tuple[Request, Addr, int]]]:
    task = asyncio.create_task(transport.submit(out))
    sent: list[tuple[Request, Addr, int]] = []

    def got() -> bool:
        sent.extend(sip.requests())
        return bool(sent) or task.done()

    await settle(got)
    return task, sent


def test_submit_accepted_on_200() -> None:
    async def scenario() -> None:
        sip, transport = world()
        task, [(req, dest, _)] = await submitted(sip, transport, sms("Grüße 🙂"))
        assert dest == TRUNK
        assert req.uri == "sip:+15550199@192.0.2.50:5080"
        assert req.body == "Grüße 🙂".encode()
        assert req.headers.get("Content-Type") == "text/plain;charset=UTF-8"
        assert (req.headers.get("From") or "").startswith(f"<sip:+4930100@{HOST_B}>;tag=")
        sip.receive(final_response(req, 200, "OK"), TRUNK)
        assert await task == SubmitResult(True, message_ids=(req.call_id,), parts=1)
        assert sip.unhandled == []

    run(scenario)


def test_submit_from_user_setting() -> None:
    async def scenario() -> None:
        sip, transport = world(SipSmsSettings(trunk="sip:192.0.2.50:5080", from_user="sms-gw"))
        task, [(req, _, _)] = await submitted(sip, transport, sms(sender=""))
        assert (req.headers.get("From") or "").startswith(f"<sip:sms-gw@{HOST_B}>;tag=")
        sip.receive(final_response(req, 202, "Accepted"), TRUNK)
        assert (await task).accepted

    run(scenario)


@pytest.mark.parametrize(
    ("status", "reason", "permanent"),
    [
        (404, "Not Found", True),
        (488, "Not Acceptable Here", True),
        (486, "Busy Here", False),
        (503, "Service Unavailable", False),
    ],
)
def test_submit_refused(status: int, reason: str, permanent: bool) -> None:
    async def scenario() -> None:
        sip, transport = world()
        task, [(req, _, _)] = await submitted(sip, transport, sms())
        sip.receive(final_response(req, status, reason), TRUNK)
        result = await task
        assert result == SubmitResult(False, permanent=permanent, reason=f"SIP {status} {reason}")

    run(scenario)


def test_submit_without_answer_is_temporary() -> None:
    async def scenario() -> None:
        sip, transport = world()
        task, [(req, _, _)] = await submitted(sip, transport, sms())
        sip.advance(31.9)
        assert not task.done()
        assert {r.call_id for r, _, _ in sip.requests()} == {req.call_id}  # retransmissions
        sip.advance(32.0)  # Timer F
        result = await task
        assert result == SubmitResult(False, permanent=False, reason="SIP 408 Request Timeout")

    run(scenario)


def test_submit_own_timeout_and_late_answer() -> None:
    async def scenario() -> None:
        sip, transport = world(SipSmsSettings(trunk="sip:192.0.2.50:5080", timeout=0.01))
        task, [(req, _, _)] = await submitted(sip, transport, sms())
        result = await task
        assert not result.accepted and not result.permanent and result.reason.startswith("no answer within")
        sip.receive(final_response(req, 200, "OK"), TRUNK)  # too late, but taken quietly
        assert sip.unhandled == []

    run(scenario)


def test_stop_fails_waiting_submits_as_temporary() -> None:
    async def scenario() -> None:
        sip, transport = world()
        task, _ = await submitted(sip, transport, sms())
        await transport.stop()
        result = await task
        assert result == SubmitResult(False, permanent=False, reason="SIP transport stopped")

    run(scenario)


def test_bad_number_is_permanent_without_sending() -> None:
    async def scenario() -> None:
        sip, transport = world()
        assert (await transport.submit(sms(to=""))).permanent
        assert (await transport.submit(sms(text=""))).permanent
        assert sip.requests() == []

    run(scenario)


LONG = " ".join(f"Wort{i} über Äcker 🙂" for i in range(150))  # 3789 bytes of UTF-8


async def answer_parts(
    sip: FakeSip,
    task: asyncio.Task[SubmitResult],
    first: list[tuple[Request, Addr, int]],
    answer: Callable[[int], int],
) -> list[tuple[Request, Addr, int]]:
    """Answer each part as it comes (``answer(i)`` = status for part i); returns every part sent."""
    sent = list(first)
    answered = 0

    def more() -> bool:
        sent.extend(sip.requests())
        return len(sent) > answered or task.done()

    while answered < len(sent):
        req, dest, _ = sent[answered]
        status = answer(answered)
        sip.receive(final_response(req, status, "OK" if status == 200 else "Busy Here"), dest)
        answered += 1
        await settle(more)
    return sent


def test_long_text_goes_as_several_messages_in_order() -> None:
    async def scenario() -> None:
        sip, transport = world()
        task, first = await submitted(sip, transport, sms(LONG))
        assert len(first) == 1  # the next part waits for the answer to this one
        sent = await answer_parts(sip, task, first, lambda i: 200)
        result = await task
        assert result.accepted and result.parts == len(sent) == 5
        assert result.message_ids == tuple(r.call_id for r, _, _ in sent)
        assert all(size <= MAX_REQUEST_BYTES for _, _, size in sent)
        assert b"".join(r.body for r, _, _ in sent).decode() == LONG

    run(scenario)


def test_a_refused_part_ends_the_submit() -> None:
    async def scenario() -> None:
        sip, transport = world()
        task, first = await submitted(sip, transport, sms(LONG))
        sent = await answer_parts(sip, task, first, lambda i: 200 if i == 0 else 486)
        result = await task
        assert len(sent) == 2
        assert result == SubmitResult(
            False,
            message_ids=(sent[0][0].call_id,),
            permanent=False,
            reason="SIP 486 Busy Here (part 2 of 5; 1 delivered)",
            parts=5,
        )

    run(scenario)


def test_account_with_digest_challenge() -> None:
    async def scenario() -> None:
        sip, transport = world(SipSmsSettings(account="pbx"), (ACCOUNT,))
        task, first = await submitted(sip, transport, sms(LONG))
        ((req, dest, _),) = first
        assert dest == PBX and req.uri == "sip:+15550199@pbx.example:5070"
        assert (req.headers.get("From") or "").startswith("<sip:alice@pbx.example>;tag=")
        assert "Authorization" not in req.headers
        nonce = "a" * 64  # long nonces exist (FreeSWITCH, Kamailio); the part must still fit
        sip.receive(challenge_response(req, 401, nonce), PBX)
        ((again, dest2, size),) = sip.requests()
        assert dest2 == PBX and again.call_id == req.call_id and again.headers.get("CSeq") == "2 MESSAGE"
        assert size <= MAX_REQUEST_BYTES
        auth = again.headers.get("Authorization") or ""
        assert verify_authorization(auth, method="MESSAGE", password="secret", realm="pbx.example")
        sent = await answer_parts(sip, task, [(again, dest2, size)], lambda i: 200)
        result = await task
        assert result.accepted and result.parts == len(sent) > 1
        assert all(s <= MAX_REQUEST_BYTES for _, _, s in sent)

    run(scenario)


def test_unknown_account_or_bad_trunk_is_a_config_error() -> None:
    sip = FakeSip(make_ua(HOST_B, 5))
    with pytest.raises(ValueError, match="unknown SIP account"):
        SipMessageTransport(sip, SipSmsSettings(account="nope"), numbers)
    with pytest.raises(ValueError, match="bad SIP URI"):
        SipMessageTransport(sip, SipSmsSettings(trunk="mailto:x"), numbers)


def test_log_lines_carry_no_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="ums.sms")

    async def scenario() -> None:
        sip, transport = world()

        async def on_incoming(sms: IncomingSms) -> None:
            pass

        await transport.start(on_incoming, no_receipt)
        sip.receive(message_bytes(b"secret words"))
        await transport.drain()
        task, [(req, _, _)] = await submitted(sip, transport, sms("other secret"))
        sip.receive(final_response(req, 200, "OK"), TRUNK)
        await task

    run(scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "ums.sms"]
    assert any(line.startswith("event=sms.sip_in ") and "length=12" in line for line in lines)
    assert any(line.startswith("event=sms.sip_out ") and "parts=1" in line for line in lines)
    assert not any("secret" in line for line in lines)
