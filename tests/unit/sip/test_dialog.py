"""RFC 3261 §12 dialogs: creation on both sides, route sets, loose/strict routing, CSeq."""

from __future__ import annotations

from ums.sip.dialog import Dialog, uri_to_addr
from ums.sip.events import Addr
from ums.sip.message import Request, Response, parse_message
from ums.sip.uri import SipUri

INVITE = (
    b"INVITE sip:100@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1\r\n"
    b"Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n"
    b'From: "Alice" <sip:alice@192.0.2.9>;tag=remote1\r\n'
    b"To: <sip:100@192.0.2.1>\r\n"
    b"Call-ID: c1@192.0.2.9\r\n"
    b"CSeq: 10 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.9:5070>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"Record-Route: <sip:p2.example;lr>\r\n"
    b"Record-Route: <sip:p1.example;lr>\r\n"
    b"From: <sip:ums@192.0.2.1>;tag=ours\r\n"
    b"To: <sip:100@192.0.2.9>;tag=theirs\r\n"
    b"Call-ID: c2@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:100@192.0.2.9:5080;transport=tcp>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OUR_INVITE = (
    b"INVITE sip:100@192.0.2.9 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:ums@192.0.2.1>;tag=ours\r\n"
    b"To: <sip:100@192.0.2.9>\r\n"
    b"Call-ID: c2@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:ums@192.0.2.1>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
SRC = Addr("udp", "192.0.2.9", 5060)


def req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def resp(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


def test_uas_dialog_keeps_record_route_order() -> None:
    d = Dialog.as_uas(req(INVITE), "local1", SRC, local_cseq=100)
    assert d.id == ("c1@192.0.2.9", "local1", "remote1")
    assert [r.uri.host for r in d.route_set] == ["p1.example", "p2.example"]
    assert str(d.remote_target) == "sip:alice@192.0.2.9:5070"
    assert d.remote_cseq == 10
    bye = d.create_request("BYE")
    assert bye.uri == "sip:alice@192.0.2.9:5070"
    assert bye.headers.get_all_values("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert bye.headers.get("CSeq") == "101 BYE"
    assert bye.headers.get("From") == "<sip:100@192.0.2.1>;tag=local1"
    assert bye.headers.get("To") == '"Alice" <sip:alice@192.0.2.9>;tag=remote1'
    assert d.next_hop() == Addr("udp", "p1.example", 5060)


def test_uac_dialog_reverses_record_route_and_uses_contact_transport() -> None:
    d = Dialog.as_uac(req(OUR_INVITE), resp(OK), Addr("udp", "192.0.2.9", 5060))
    assert d.id == ("c2@192.0.2.1", "ours", "theirs")
    assert [r.uri.host for r in d.route_set] == ["p1.example", "p2.example"]
    ack = d.create_request("ACK", cseq=1)
    assert ack.headers.get("CSeq") == "1 ACK"
    assert d.local_cseq == 1
    assert d.create_request("BYE").headers.get("CSeq") == "2 BYE"
    d.route_set = []
    assert d.next_hop() == Addr("tcp", "192.0.2.9", 5080)


def test_strict_router_goes_into_request_uri() -> None:
    d = Dialog.as_uas(req(INVITE.replace(b"<sip:p1.example;lr>", b"<sip:p1.example>")), "l", SRC)
    bye = d.create_request("BYE")
    assert bye.uri == "sip:p1.example"
    assert bye.headers.get_all_values("Route") == ["<sip:p2.example;lr>", "<sip:alice@192.0.2.9:5070>"]
    assert d.next_hop() == Addr("udp", "p1.example", 5060)


def test_no_route_set_targets_contact_and_tcp_flow_is_reused() -> None:
    data = INVITE.replace(b"Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n", b"")
    flow = Addr("tcp", "192.0.2.9", 40123)
    d = Dialog.as_uas(req(data), "l", flow)
    bye = d.create_request("BYE")
    assert "Route" not in bye.headers
    assert d.next_hop() == flow


def test_remote_cseq_order_and_target_refresh() -> None:
    d = Dialog.as_uas(req(INVITE), "l", SRC)
    later = req(INVITE.replace(b"CSeq: 10 INVITE", b"CSeq: 11 INVITE").replace(b":5070>", b":5099>"))
    assert d.accept_remote_cseq(later)
    d.refresh_target(later)
    assert d.remote_target.port == 5099
    assert not d.accept_remote_cseq(req(INVITE))  # 10 < 11: out of order -> 500


def test_uri_to_addr() -> None:
    assert uri_to_addr(SipUri.parse("sip:a@h")) == Addr("udp", "h", 5060)
    assert uri_to_addr(SipUri.parse("sip:a@h:5080;transport=TCP")) == Addr("tcp", "h", 5080)
    assert uri_to_addr(SipUri.parse("sip:a@h;transport=sctp"), "tcp") == Addr("tcp", "h", 5060)
