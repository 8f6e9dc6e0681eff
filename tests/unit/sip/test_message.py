"""The SIP message parser, serializer and TCP framer (RFC 3261 §7, §18.3), with the corpus in
testdata/sip checked against what RFC 4475 (SIP torture tests) says about each kind of message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.sip.fuzzcorpus import corpus, load
from ums.sip.message import (
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    canonical_name,
    parse_message,
    split_header_values,
)
from ums.sip.sdp import SessionDescription
from ums.sip.uri import NameAddr, SipUri, Via


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


OPTIONS = _crlf(
    "OPTIONS sip:ums@192.0.2.5 SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\n"
    "From: <sip:pbx@192.0.2.10>;tag=a1\n"
    "To: <sip:ums@192.0.2.5>\n"
    "Call-ID: opt-1@192.0.2.10\n"
    "CSeq: 1 OPTIONS\n"
    "Content-Length: 0\n"
    "\n"
)


def _with_headers(lines: str, body: str = "", start: str = "OPTIONS sip:ums@192.0.2.5 SIP/2.0") -> bytes:
    return _crlf(f"{start}\n{lines}\n") + _crlf(body)


# --- header handling ------------------------------------------------------------------------------


def test_basic_request() -> None:
    msg = parse_message(OPTIONS)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri, msg.version) == ("OPTIONS", "sip:ums@192.0.2.5", "SIP/2.0")
    assert msg.call_id == "opt-1@192.0.2.10"
    assert msg.cseq == (1, "OPTIONS")
    assert msg.vias == ["SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1"]
    assert msg.body == b""


def test_basic_response() -> None:
    msg = parse_message(load("response_180"))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.cseq == (102, "INVITE")


def test_compact_forms_are_expanded() -> None:
    msg = parse_message(load("invite_compact"))
    names = [n for n, _ in msg.headers]
    assert names[:5] == ["Via", "Via", "From", "To", "Call-ID"]
    assert {"Contact", "Supported", "Content-Type", "Content-Length"} <= set(names)
    assert msg.headers.get("v") == msg.headers.get("Via")
    assert msg.headers.get("Content-Type") == "application/sdp"
    assert len(msg.body) == int(msg.headers.get("l") or "")
    assert canonical_name("i") == "Call-ID" and canonical_name("WWW-AUTHENTICATE") == "WWW-Authenticate"
    assert canonical_name("x-asterisk-hangupcause") == "X-Asterisk-Hangupcause"


def test_names_are_case_insensitive() -> None:
    msg = parse_message(
        _with_headers(
            "via: SIP/2.0/UDP h;branch=z9hG4bK1\nFROM: <sip:a@b>;tag=1\ntO: <sip:c@d>\n"
            "CALL-id: x\ncSeQ: 1 OPTIONS\nmax-FORWARDS: 70\n"
        )
    )
    assert msg.headers.get("Max-Forwards") == "70"
    assert "call-id" in msg.headers and "CALL-ID" in msg.headers and "Call-Id" in msg.headers
    assert [n for n, _ in msg.headers][:3] == ["Via", "From", "To"]


def test_multi_value_and_repeated_headers() -> None:
    msg = parse_message(load("response_200_invite"))
    # one line with two values plus a second line: three hops, in order
    assert msg.headers.get_all_values("Record-Route") == [
        "<sip:192.0.2.1;lr;ftag=64c1e1b2>",
        "<sip:10.0.0.1;transport=tcp;lr>",
        "<sip:[2001:db8::1]:5060;lr>",
    ]
    assert len(msg.headers.get_lines("Record-Route")) == 2
    compact = parse_message(load("invite_compact"))
    assert [Via.parse(v).host for v in compact.vias] == ["198.51.100.7", "198.51.100.1"]


def test_quoted_commas_do_not_split() -> None:
    assert split_header_values('"Bell, Alexander" <sip:a@b>;tag=1, <sip:c@d>') == [
        '"Bell, Alexander" <sip:a@b>;tag=1',
        "<sip:c@d>",
    ]
    assert split_header_values('"a \\", b" <sip:x@y>') == ['"a \\", b" <sip:x@y>']
    assert split_header_values("<sip:a@b;x=1,2>") == ["<sip:a@b;x=1,2>"]
    assert split_header_values(" , a ,, b , ") == ["a", "b"]
    msg = parse_message(load("response_401"))
    # auth headers are never split on commas
    challenges = msg.headers.get_all_values("WWW-Authenticate")
    assert len(challenges) == 2 and "qop=" in challenges[0]
    assert (
        parse_message(load("badaspec")).headers.get("From")
        == '"Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423'
    )


def test_header_folding() -> None:
    msg = parse_message(load("wsinv"))
    assert msg.headers.get("To") == "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    assert msg.cseq == (9, "INVITE")
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert [Via.parse(v).branch for v in msg.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert NameAddr.parse(msg.headers.get("From") or "").tag == "98asjd8"
    contact = NameAddr.parse(msg.headers.get("Contact") or "")
    assert contact.display == 'Quoted string ""' and contact.param("q") == "0.33"


def test_headers_api() -> None:
    h = Headers.of([("Via", "a"), ("To", "t"), ("Via", "b, c")])
    assert h.get_all_values("via") == ["a", "b", "c"]
    h.prepend("Via", "z")
    assert h.get_all_values("Via") == ["z", "a", "b", "c"]
    assert h.remove_first_value("Via") == "z"
    h.set("Via", "only")
    assert h.get_lines("Via") == ["only"] and len(h) == 2
    h.remove("to")
    assert "To" not in h and h.get("To") is None


# --- errors ---------------------------------------------------------------------------------------


def _raises(data: bytes, status: int = 400) -> SipParseError:
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    assert err.value.status_hint == status, err.value.reason
    return err.value


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header(missing: str) -> None:
    lines = [ln for ln in OPTIONS.decode().split("\r\n") if not ln.startswith(f"{missing}:")]
    err = _raises("\r\n".join(lines).encode())
    assert missing in err.reason


def test_bad_version_is_505() -> None:
    _raises(OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505)
    _raises(load("badvers"), 505)
    _raises(b"SIP/1.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", 505)


def test_size_limits() -> None:
    big = OPTIONS.replace(
        b"Content-Length: 0", b"X-Pad: " + b"a" * MAX_MESSAGE_SIZE + b"\r\nContent-Length: 0"
    )
    _raises(big, 413)
    many = OPTIONS.replace(b"Content-Length: 0", b"X-H: 1\r\n" * 300 + b"Content-Length: 0")
    assert "too many headers" in _raises(many).reason


@pytest.mark.parametrize(
    "value",
    ["-1", "1.5", "0x10", "", "²", "١", "99999999999999999999", "1" * 5000, "5 5"],
)
def test_bad_content_length(value: str) -> None:
    _raises(OPTIONS.replace(b"Content-Length: 0", f"Content-Length: {value}".encode()))


def test_content_length_bounds_the_body_on_udp() -> None:
    msg = parse_message(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 4") + b"abcdEXTRA")
    assert msg.body == b"abcd"  # RFC 3261 §18.3: octets after the body are discarded
    _raises(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 40") + b"short")
    # no Content-Length on UDP: the body runs to the end of the datagram
    no_cl = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    assert parse_message(no_cl + b"hello").body == b"hello"


@pytest.mark.parametrize(
    "start",
    [
        "OPTIONS  sip:a@b SIP/2.0",
        "OPTIONS sip:a@b  SIP/2.0",
        "OPTIONS <sip:a@b> SIP/2.0",
        "OPTIONS a@b SIP/2.0",
        "OPTIONS sip:a@b; lr SIP/2.0",
        "OPTIONS sip:a@b",
        "OPT IONS sip:a@b SIP/2.0",
        "SIP/2.0 20 OK",
        "SIP/2.0 099 Too Low",
        "SIP/2.0 700 Too High",
        "SIP/2.0 ٢٠٠ OK",
        "HTTP/1.1 200 OK",
    ],
)
def test_bad_start_lines(start: str) -> None:
    _raises(OPTIONS.replace(b"OPTIONS sip:ums@192.0.2.5 SIP/2.0", start.encode()))


@pytest.mark.parametrize(
    ("bad", "good"),
    [
        (b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"),
        (b"CSeq: 1 OPTIONS", b"CSeq: OPTIONS"),
        (b"CSeq: 1 OPTIONS", b"CSeq: 2147483648 OPTIONS"),
        (b"CSeq: 1 OPTIONS", b"CSeq: \xd9\xa1 OPTIONS"),
        (b"Call-ID: opt-1@192.0.2.10", b"Call-ID: a\x00b"),
        (b"Call-ID: opt-1@192.0.2.10", b"Call-ID: a\rb"),
        (b"Call-ID: opt-1@192.0.2.10", b"Call ID: x"),
        (b"Call-ID: opt-1@192.0.2.10", b"Call-ID: x\r\nCall-ID: y"),
        (b"To: <sip:ums@192.0.2.5>", b"To: <sip:a@b>, <sip:c@d>"),
        (b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1", b"Via: ,"),
        (
            b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1",
            b"Via: ,\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2",
        ),
        (b"Content-Length: 0", b"Content-Length: 0\r\nl: 0"),
        (b"Content-Length: 0", b"no colon here"),
    ],
)
def test_bad_headers(bad: bytes, good: bytes) -> None:
    _raises(OPTIONS.replace(bad, good))


def test_empty_and_keepalive_only() -> None:
    _raises(b"")
    _raises(b"\r\n\r\n")


# --- round trip -----------------------------------------------------------------------------------


def test_serialize_round_trip() -> None:
    for name in ("invite_sdp", "response_200_invite", "register_auth", "notify_mwi", "message_sms", "wsinv"):
        msg = parse_message(load(name))
        wire = msg.serialize()
        again = parse_message(wire)
        assert again.serialize() == wire, name
        assert [h for h in again.headers if h[0] != "Content-Length"] == [
            h for h in msg.headers if h[0] != "Content-Length"
        ]
        assert again.body == msg.body


def test_serialize_canonical_message_is_byte_exact() -> None:
    # header names are written in canonical form, so only messages that use it come back unchanged
    for name in ("options", "ack", "cancel", "response_180", "response_401"):
        data = load(name)
        assert parse_message(data).serialize() == data, name
    assert b"Remote-Party-Id: " in parse_message(load("invite_sdp")).serialize()


def test_lf_only_message_parses_like_crlf() -> None:
    crlf = parse_message(load("invite_sdp"))
    head, _, body = load("invite_sdp").replace(b"\r\n", b"\n").partition(b"\n\n")
    head = head.replace(f"Content-Length: {len(crlf.body)}".encode(), f"Content-Length: {len(body)}".encode())
    lf = parse_message(head + b"\n\n" + body)
    assert list(lf.headers)[:-1] == list(crlf.headers)[:-1]
    assert lf.body == crlf.body.replace(b"\r\n", b"\n")


def test_serialize_writes_content_length() -> None:
    msg = parse_message(OPTIONS)
    msg.body = b"hello"
    assert msg.serialize().endswith(b"Content-Length: 5\r\n\r\nhello")


# --- TCP framing (h11's tr(): whole, byte at a time, and with several messages per chunk) -----


def _frame_whole(data: bytes) -> list[bytes]:
    return StreamFramer().feed(data)


def _frame_bytewise(data: bytes) -> list[bytes]:
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    return out


def _frame_chunks_of_7(data: bytes) -> list[bytes]:
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(0, len(data), 7):
        out += framer.feed(data[i : i + 7])
    return out


_FEEDERS: list[Callable[[bytes], list[bytes]]] = [_frame_whole, _frame_bytewise, _frame_chunks_of_7]


def tr(stream: bytes, expected: list[bytes]) -> None:
    for feed in _FEEDERS:
        assert feed(stream) == expected, feed.__name__
    # trailing partial data stays buffered and does not disturb what came before
    assert _frame_whole(stream + expected[0][:30]) == expected


def test_framer_single_message() -> None:
    data = load("invite_sdp")
    tr(data, [data])
    assert parse_message(_frame_bytewise(data)[0]).body == parse_message(data).body


def test_framer_content_length_not_last_header() -> None:
    data = load("unreason")  # Content-Length sits in the middle of the head
    tr(data, [data])


def test_framer_several_messages_in_one_chunk() -> None:
    msgs = [load("invite_sdp"), load("options"), load("invite_compact"), load("message_sms"), load("ack")]
    # keep-alive CRLFs between messages (RFC 5626 §3.5.1) are dropped
    stream = b"\r\n\r\n" + msgs[0] + msgs[1] + b"\r\n" + b"".join(msgs[2:])
    tr(stream, msgs)
    for m in msgs:
        parse_message(m)


def test_framer_compact_content_length_and_lf_only() -> None:
    data = load("lwsdisp")  # "l: 0"
    tr(data, [data])
    lf = load("options").replace(b"\r\n", b"\n")
    tr(lf + lf, [lf, lf])


def test_framer_waits_for_the_body() -> None:
    data = load("clerr")  # Content-Length: 9999 -- on TCP the rest simply has not arrived yet
    framer = StreamFramer()
    assert framer.feed(data) == []
    assert framer.feed(b"x" * (9999 - (len(data) - data.index(b"\r\n\r\n") - 4))) != []


def test_framer_errors() -> None:
    with pytest.raises(SipParseError) as err:
        StreamFramer().feed(OPTIONS.replace(b"Content-Length: 0\r\n", b""))
    assert err.value.status_hint == 400
    with pytest.raises(SipParseError) as err:
        StreamFramer().feed(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 70000"))
    assert err.value.status_hint == 413
    with pytest.raises(SipParseError) as err:
        StreamFramer().feed(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: " + b"9" * 5000))
    assert err.value.status_hint == 413
    framer = StreamFramer(max_size=1000)
    with pytest.raises(SipParseError) as err:
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 1200)
    assert err.value.status_hint == 413


# --- the corpus against RFC 4475 ------------------------------------------------------------------

# Every file in testdata/sip: "ok" = parses and every header value we look at parses;
# ("message", status) = parse_message refuses it; ("header", name) = the message parses
# but the named header's value must be refused by its own parser.
EXPECTED: dict[str, object] = {
    # ordinary traffic from PBXs, carriers and phones
    "ack": "ok",
    "bye": "ok",
    "cancel": "ok",
    "info_dtmf": "ok",
    "invite_compact": "ok",
    "invite_diversion": "ok",
    "invite_ipv6": "ok",
    "invite_sdp": "ok",
    "message_sms": "ok",
    "notify_mwi": "ok",
    "options": "ok",
    "register_auth": "ok",
    "reinvite_hold": "ok",
    "reinvite_t38": "ok",
    "response_180": "ok",
    "response_200_invite": "ok",
    "response_401": "ok",
    # RFC 4475 §3.1.1: valid messages
    "wsinv": "ok",
    "intmeth": "ok",
    "esc01": "ok",
    "escnull": "ok",
    "esc02": "ok",
    "lwsdisp": "ok",
    "longreq": "ok",
    "dblreq": "ok",
    "semiuri": "ok",
    "transports": "ok",
    "mpart01": "ok",
    "unreason": "ok",
    "noreason": "ok",
    "zeromf": "ok",
    "inv2543": "ok",  # RFC 4475 §3.4.1: RFC 2543 syntax is still parseable
    "unkscm": ("header", "Request-URI", 416),  # §3.1.2.16: valid message, 416 for the URI
    "novelsc": ("header", "Request-URI", 416),
    # RFC 4475 §3.1.2: invalid messages
    "badvers": ("message", 505),  # §3.1.2.19
    "clerr": ("message", 400),  # §3.1.2.8: Content-Length larger than the datagram
    "ncl": ("message", 400),  # §3.1.2.3: negative Content-Length
    "scalar02": ("message", 400),  # §3.1.2.4: CSeq beyond 2**31
    "ltgtruri": ("message", 400),  # §3.1.2.10: <> around the Request-URI
    "lwsruri": ("message", 400),  # §3.1.2.11: LWS inside the Request-URI
    "lwsstart": ("message", 400),  # §3.1.2.12: several SP in the Request-Line
    "mismatch01": ("message", 400),  # §3.1.2.21: CSeq method differs
    "bigcode": ("message", 400),  # §3.1.2.23: status code out of range
    "insuf": ("message", 400),  # §3.1.2.2: missing From, To, Call-ID
    "multi01": ("message", 400),  # §3.1.2.14: several To / Call-ID / CSeq
    "mcl01": ("message", 400),  # §3.1.2.13: two Content-Length values
    "baddn": ("message", 400),  # §3.1.2.18: unquoted display name with a comma
    "nulhdr": ("message", 400),
    "badinv01": ("header", "Via", 400),  # §3.1.2.1: empty parameters and list elements
    "quotbal": ("header", "To", 400),  # §3.1.2.7: unterminated quoted string
    "regbadct": ("header", "Contact", 400),  # §3.1.2.9: '?' in an addr-spec without <>
    "badaspec": ("header", "To", 400),  # §3.1.2.17: whitespace inside <>
    "badvia": ("header", "Via", 400),
}

_NAME_ADDR = ("From", "To", "Contact", "Route", "Record-Route", "Diversion", "P-Asserted-Identity")


def _check_headers(msg: Request | Response) -> None:
    """Parse every structured header; raises SipParseError from the first bad one."""
    if isinstance(msg, Request):
        SipUri.parse(msg.uri)
    for v in msg.vias:
        Via.parse(v)
    for name in _NAME_ADDR:
        for v in msg.headers.get_all_values(name):
            NameAddr.parse(v)


def test_corpus_is_fully_described() -> None:
    assert set(corpus()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message(name: str) -> None:
    data = load(name)
    expected = EXPECTED[name]
    if expected == "ok":
        msg = parse_message(data)
        _check_headers(msg)
        if msg.headers.get("Content-Type") == "application/sdp":
            SessionDescription.parse(msg.body)
        assert parse_message(msg.serialize()).serialize() == msg.serialize()
        return
    assert isinstance(expected, tuple)
    if expected[0] == "message":
        _raises(data, expected[1])
        return
    _, header, status = expected
    msg = parse_message(data)
    with pytest.raises(SipParseError) as err:
        if header == "Request-URI":
            assert isinstance(msg, Request)
            SipUri.parse(msg.uri)
        elif header == "Via":
            for v in msg.vias:
                Via.parse(v)
        else:
            for v in msg.headers.get_all_values(header):
                NameAddr.parse(v)
    assert err.value.status_hint == status


def test_torture_details() -> None:
    intmeth = parse_message(load("intmeth"))
    assert isinstance(intmeth, Request)
    assert intmeth.method == "!INTERESTING-METHOD0123456789_*+`.%INDEED'~"
    ruri = SipUri.parse(intmeth.uri)
    assert ruri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert ruri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    to = NameAddr.parse(intmeth.headers.get("To") or "")
    assert to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert NameAddr.parse(str(to)) == to
    frm = NameAddr.parse(intmeth.headers.get("From") or "")
    assert frm.display == "token1~` token2'+_ token3*%!.-" and frm.tag == "_token~1'+`*%!-."

    esc01 = parse_message(load("esc01"))
    assert isinstance(esc01, Request)
    assert SipUri.parse(esc01.uri).user == "sips:user@example.com"
    assert NameAddr.parse(esc01.headers.get("To") or "").uri.user == "user"
    assert NameAddr.parse(esc01.headers.get("From") or "").uri.user == "I have spaces"
    contact = NameAddr.parse(esc01.headers.get("Contact") or "")
    assert contact.uri.user == "caller" and contact.uri.params == (
        ("%6C%72", ""),
        ("n%61me", "v%61lue%25%34%31"),
    )

    esc02 = parse_message(load("esc02"))
    assert isinstance(esc02, Request) and esc02.method == "RE%47IST%45R"
    assert len(esc02.headers.get_all_values("Contact")) == 2  # "C%6Fntact" is another header

    dbl = parse_message(load("dblreq"))
    assert isinstance(dbl, Request) and dbl.method == "REGISTER" and dbl.body == b""

    longreq = parse_message(load("longreq"))
    assert len(longreq.vias) == 41
    assert len(NameAddr.parse(longreq.headers.get("From") or "").tag or "") > 150

    semi = parse_message(load("semiuri"))
    assert isinstance(semi, Request)
    assert SipUri.parse(semi.uri).user == "user;par=u@example.net"

    assert [Via.parse(v).transport for v in parse_message(load("transports")).vias] == [
        "UDP",
        "SCTP",
        "TLS",
        "UNKNOWN",
        "TCP",
    ]
    noreason = parse_message(load("noreason"))
    assert isinstance(noreason, Response) and (noreason.status, noreason.reason) == (100, "")
    unreason = parse_message(load("unreason"))
    assert isinstance(unreason, Response) and unreason.reason.endswith("простое")
    escnull = parse_message(load("escnull"))
    assert [NameAddr.parse(c).uri.user for c in escnull.headers.get_all_values("Contact")] == [
        "\x00",
        "\x00\x00",
    ]


def test_torture_messages_on_a_stream() -> None:
    valid = [load(n) for n, e in sorted(EXPECTED.items()) if e == "ok" and n not in ("dblreq",)]
    stream = b"".join(valid)
    assert _frame_chunks_of_7(stream) == valid
