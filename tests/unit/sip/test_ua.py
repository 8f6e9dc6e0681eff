"""UserAgent in memory: two agents joined by lists, or one agent and hand-written peer messages."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from ums.config import Account
from ums.sip.digest import verify_authorization
from ums.sip.events import (
    Addr,
    CallAnswered,
    CallEnded,
    CallEstablished,
    CallFailed,
    CallProgress,
    DtmfInfo,
    Event,
    IncomingCall,
    ReInvite,
    RequestRejected,
)
from ums.sip.message import Request, Response, parse_message
from ums.sip.ua import UaSettings, UserAgent
from ums.sip.uri import NameAddr, Via

HOST_A = "10.0.0.1"
HOST_B = "10.0.0.2"
PEER = Addr("udp", "192.0.2.9", 5062)
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n"
HOLD = SDP + b"a=sendonly\r\n"


def make_ua(host: str, seed: int, accounts: tuple[Account, ...] = ()) -> UserAgent:
    settings = UaSettings(host=host, ports={"udp": 5060, "tcp": 5060}, accounts=accounts)
    return UserAgent(settings, random.Random(seed))


class UaPair:
    """Two user agents connected through lists, with a fake clock (h11's ConnectionPair idea)."""

    def __init__(self, transport: str = "udp") -> None:
        self.a = make_ua(HOST_A, 1)
        self.b = make_ua(HOST_B, 2)
        self.transport = transport
        self.now = 0.0
        self.wire: list[tuple[str, float, bytes]] = []
        self.drop: Callable[[str, bytes], bool] = lambda who, data: False
        self.ev: dict[str, list[Event]] = {"a": [], "b": []}

    def ua(self, who: str) -> UserAgent:
        return self.a if who == "a" else self.b

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for who, other, host in (("a", "b", HOST_A), ("b", "a", HOST_B)):
                self.ev[who] += self.ua(who).events()
                for data, dest in self.ua(who).datagrams_to_send():
                    moved = True
                    self.wire.append((who, self.now, data))
                    assert dest.host == (HOST_B if who == "a" else HOST_A)
                    if not self.drop(who, data):
                        self.ua(other).receive(data, Addr(dest.transport, host, 5060), self.now)
            for who in ("a", "b"):
                self.ev[who] += self.ua(who).events()

    def run(self, until: float) -> None:
        """Advance both agents deadline by deadline up to ``until``."""
        self.pump()
        while True:
            deadlines = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
            nxt = min(deadlines) if deadlines else None
            if nxt is None or nxt > until:
                break
            self.now = max(self.now, nxt)
            self.a.advance(self.now)
            self.b.advance(self.now)
            self.pump()
        self.now = until

    def take(self, who: str) -> list[Event]:
        out, self.ev[who] = self.ev[who], []
        return out

    def sent(self, who: str, first_line: str) -> list[float]:
        return [
            t for w, t, d in self.wire if w == who and d.split(b"\r\n", 1)[0].decode().startswith(first_line)
        ]


def establish(pair: UaPair) -> str:
    call_id = pair.a.invite(f"sip:100@{HOST_B}", SDP, pair.now)
    pair.pump()
    (incoming,) = pair.take("b")
    assert isinstance(incoming, IncomingCall) and incoming.call_id == call_id
    pair.b.ring(call_id)
    pair.b.answer(call_id, SDP, pair.now)
    pair.pump()
    return call_id


def test_call_flow_invite_ringing_answer_ack_bye() -> None:
    pair = UaPair()
    call_id = establish(pair)
    assert pair.take("a") == [
        CallProgress(call_id, 100, "Trying"),
        CallProgress(call_id, 180, "Ringing"),
        CallAnswered(call_id, SDP),
        CallEstablished(call_id),
    ]
    assert pair.take("b") == [CallEstablished(call_id)]
    assert pair.a.active_calls() == [call_id] == pair.b.active_calls()
    pair.now = 7.0
    pair.b.hangup(call_id, pair.now)
    pair.pump()
    assert pair.take("b") == [CallEnded(call_id, "local-bye")]
    assert pair.take("a") == [CallEnded(call_id, "remote-bye")]
    assert pair.a.active_calls() == [] == pair.b.active_calls()
    pair.run(60.0)
    assert pair.sent("a", "BYE") == [] and pair.sent("b", "BYE") == [7.0]
    assert pair.a.next_deadline() is None and pair.b.next_deadline() is None


def test_ringing_and_ok_carry_to_tag_and_contact_without_display_name() -> None:
    pair = UaPair()
    establish(pair)
    responses = [parse_message(d) for w, _, d in pair.wire if w == "b"]
    tags = {r.headers.get("To") for r in responses if isinstance(r, Response) and r.status > 100}
    assert len(tags) == 1 and ";tag=" in tags.pop()  # type: ignore[operator]
    trying = next(r for r in responses if isinstance(r, Response) and r.status == 100)
    assert ";tag=" not in (trying.headers.get("To") or "")
    ok = next(r for r in responses if isinstance(r, Response) and r.status == 200)
    assert ok.headers.get("Contact") == f"<sip:ums@{HOST_B}:5060>"


def test_cancel_before_answer_gives_487() -> None:
    pair = UaPair()
    call_id = pair.a.invite(f"sip:100@{HOST_B}", SDP, 0.0)
    pair.pump()
    pair.b.ring(call_id)
    pair.pump()
    pair.take("a")
    pair.take("b")
    pair.now = 2.0
    pair.a.hangup(call_id, pair.now)
    pair.pump()
    assert pair.take("b") == [CallEnded(call_id, "cancelled")]
    assert pair.take("a") == [CallEnded(call_id, "local-bye")]  # no CallFailed for the 487
    assert pair.sent("b", "SIP/2.0 487") == [2.0]
    assert pair.sent("a", "ACK") == [2.0]  # the transaction ACKs the 487
    assert pair.a.active_calls() == [] == pair.b.active_calls()


def test_cancel_waits_for_a_provisional_response() -> None:
    pair = UaPair()
    pair.drop = lambda who, data: who == "b"  # nothing comes back yet
    call_id = pair.a.invite(f"sip:100@{HOST_B}", SDP, 0.0)
    pair.pump()
    pair.a.hangup(call_id, 0.1)
    pair.pump()
    assert pair.sent("a", "CANCEL") == []
    pair.drop = lambda who, data: False
    pair.run(0.5)  # INVITE retransmitted, B's transaction answers it with its 100 again
    assert pair.sent("a", "CANCEL") == [0.5]
    assert CallEnded(call_id, "cancelled") in pair.take("b")


def test_200_retransmitted_until_ack() -> None:
    pair = UaPair()
    acks = []

    def drop_first_ack(who: str, data: bytes) -> bool:
        if data.startswith(b"ACK"):
            acks.append(data)
            return len(acks) == 1
        return False

    pair.drop = drop_first_ack
    call_id = establish(pair)
    assert CallEstablished(call_id) not in pair.take("b")
    pair.run(10.0)
    assert pair.sent("b", "SIP/2.0 200") == [0.0, 0.5]  # the retransmission draws a second ACK
    assert pair.take("b") == [CallEstablished(call_id)]
    assert len(acks) == 2 and acks[0] == acks[1]


def test_ack_timeout_ends_call_with_bye() -> None:
    pair = UaPair()
    pair.drop = lambda who, data: data.startswith(b"ACK")
    call_id = establish(pair)
    pair.run(40.0)
    assert pair.sent("b", "SIP/2.0 200") == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert pair.sent("b", "BYE") == [32.0]
    assert pair.take("b") == [CallEnded(call_id, "ack-timeout")]
    assert CallEnded(call_id, "remote-bye") in pair.take("a")


def test_tcp_200_not_retransmitted_but_ack_timeout_still_applies() -> None:
    ua = make_ua(HOST_B, 3)
    src = Addr("tcp", "192.0.2.9", 40001)
    ua.receive(peer_request("INVITE", body=SDP, transport="TCP"), src, 0.0)
    (incoming,) = ua.events()
    assert isinstance(incoming, IncomingCall)
    ua.answer(incoming.call_id, SDP, 0.0)
    out = ua.datagrams_to_send()
    assert all(dest == src for _, dest in out)  # responses go back on the connection
    ok = parse(out[-1][0])
    assert isinstance(ok, Response) and ok.headers.get("Contact") == f"<sip:ums@{HOST_B}:5060;transport=tcp>"
    ua.advance(31.0)
    assert ua.datagrams_to_send() == []
    ua.advance(32.0)
    ((bye, dest),) = ua.datagrams_to_send()
    assert bye.startswith(b"BYE ") and dest == src
    assert ua.events() == [CallEnded(incoming.call_id, "ack-timeout")]


def test_hangup_before_ack_sends_bye_after_ack() -> None:
    ua = make_ua(HOST_B, 3)
    ua.receive(peer_request("INVITE", body=SDP), PEER, 0.0)
    call_id = ua.events()[0].call_id  # type: ignore[attr-defined]
    ua.answer(call_id, SDP, 0.0)
    ok = parse(ua.datagrams_to_send()[-1][0])
    ua.hangup(call_id, 0.1)
    assert ua.events() == [CallEnded(call_id, "local-bye")]
    assert ua.datagrams_to_send() == []
    ua.receive(peer_ack(ok), PEER, 0.2)
    ((bye, dest),) = ua.datagrams_to_send()
    assert bye.startswith(b"BYE sip:alice@192.0.2.9:5062 ") and dest == Addr("udp", "192.0.2.9", 5062)
    assert ua.events() == []


def test_hangup_unanswered_incoming_call_sends_480() -> None:
    ua = make_ua(HOST_B, 3)
    ua.receive(peer_request("INVITE", body=SDP), PEER, 0.0)
    call_id = ua.events()[0].call_id  # type: ignore[attr-defined]
    ua.datagrams_to_send()
    ua.hangup(call_id, 1.0)
    ((resp, _),) = ua.datagrams_to_send()
    assert resp.startswith(b"SIP/2.0 480 ")
    assert ua.events() == [CallEnded(call_id, "local-bye")]


def test_reject_sends_final_and_absorbs_ack() -> None:
    ua = make_ua(HOST_B, 3)
    ua.receive(peer_request("INVITE", body=SDP), PEER, 0.0)
    call_id = ua.events()[0].call_id  # type: ignore[attr-defined]
    ua.datagrams_to_send()
    ua.reject(call_id, 486, "Busy Here", 0.0, headers=[("Retry-After", "60")])
    ((data, _),) = ua.datagrams_to_send()
    busy = parse(data)
    assert isinstance(busy, Response) and busy.status == 486 and busy.headers.get("Retry-After") == "60"
    ua.advance(0.5)
    assert ua.datagrams_to_send()[0][0] == data  # Timer G
    ua.receive(peer_ack(busy, branch="z9hG4bKpeer1"), PEER, 0.6)  # non-2xx ACK: the INVITE's branch
    ua.advance(10.0)
    assert ua.datagrams_to_send() == []
    assert ua.events() == []
    assert ua.active_calls() == []


def test_invite_retransmission_after_200_resends_200() -> None:
    ua = make_ua(HOST_B, 3)
    invite = peer_request("INVITE", body=SDP)
    ua.receive(invite, PEER, 0.0)
    call_id = ua.events()[0].call_id  # type: ignore[attr-defined]
    ua.answer(call_id, SDP, 0.0)
    ok = ua.datagrams_to_send()[-1][0]
    ua.receive(invite, PEER, 0.2)
    assert ua.datagrams_to_send() == [(ok, PEER)]
    assert ua.events() == []


# ---------------------------------------------------------------- hand-written peer messages
def peer_request(
    method: str,
    *,
    branch: str = "z9hG4bKpeer1",
    call_id: str = "call1@192.0.2.9",
    cseq: int = 1,
    to_tag: str | None = None,
    body: bytes = b"",
    ctype: str = "application/sdp",
    headers: str = "",
    via: str | None = None,
    transport: str = "UDP",
    uri: str = f"sip:100@{HOST_B}",
) -> bytes:
    to = f"<sip:100@{HOST_B}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via or f'SIP/2.0/{transport} 192.0.2.9:5062;branch={branch}'}",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@192.0.2.9>;tag=peertag',
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@192.0.2.9:5062>",
    ]
    if headers:
        lines += headers.strip("\r\n").split("\r\n")
    if body:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse(data: bytes) -> Request | Response:
    return parse_message(data)


def to_tag_of(msg: Request | Response) -> str:
    tag = NameAddr.parse(msg.headers.get("To") or "").tag
    assert tag is not None
    return tag


def peer_ack(ok: Request | Response, branch: str = "z9hG4bKack1", cseq: int = 1) -> bytes:
    return peer_request("ACK", branch=branch, to_tag=to_tag_of(ok), cseq=cseq)


def answered_call(ua: UserAgent) -> tuple[str, str]:
    """An established incoming call from the peer; returns (call_id, our tag)."""
    ua.receive(peer_request("INVITE", body=SDP), PEER, 0.0)
    call_id = ua.events()[0].call_id  # type: ignore[attr-defined]
    ua.answer(call_id, SDP, 0.0)
    ok = parse(ua.datagrams_to_send()[-1][0])
    ua.receive(peer_ack(ok), PEER, 0.01)
    assert ua.events() == [CallEstablished(call_id)]
    return call_id, to_tag_of(ok)


def responses(ua: UserAgent) -> list[Response]:
    out = []
    for data, _ in ua.datagrams_to_send():
        msg = parse(data)
        if isinstance(msg, Response):
            out.append(msg)
    return out


def test_reinvite_hold_and_unhold() -> None:
    ua = make_ua(HOST_B, 4)
    call_id, tag = answered_call(ua)
    for n, (offer, answer) in enumerate([(HOLD, b"v=0 recvonly\r\n"), (SDP, b"v=0 sendrecv\r\n")]):
        cseq = 2 + n
        ua.receive(
            peer_request("INVITE", branch=f"z9hG4bKre{n}", cseq=cseq, to_tag=tag, body=offer), PEER, 1.0
        )
        assert ua.events() == [ReInvite(call_id, offer)]
        assert [r.status for r in responses(ua)] == [100]
        ua.answer_reinvite(call_id, answer, 1.1)
        (ok,) = responses(ua)
        assert ok.status == 200 and ok.body == answer and to_tag_of(ok) == tag
        ua.advance(1.6)
        assert [r.status for r in responses(ua)] == [200]  # retransmitted until the ACK
        ua.receive(peer_ack(ok, branch=f"z9hG4bKreack{n}", cseq=cseq), PEER, 1.7)
        ua.advance(5.0)
        assert responses(ua) == []
        assert ua.events() == []
    assert ua.active_calls() == [call_id]


def test_second_reinvite_while_pending_gets_491() -> None:
    ua = make_ua(HOST_B, 4)
    _call_id, tag = answered_call(ua)
    ua.receive(peer_request("INVITE", branch="z9hG4bKre1", cseq=2, to_tag=tag, body=HOLD), PEER, 1.0)
    ua.events()
    ua.datagrams_to_send()
    ua.receive(peer_request("INVITE", branch="z9hG4bKre2", cseq=3, to_tag=tag, body=SDP), PEER, 1.1)
    assert [r.status for r in responses(ua)] == [491]


def test_unanswered_reinvite_gets_500_after_timeout() -> None:
    ua = make_ua(HOST_B, 4)
    call_id, tag = answered_call(ua)
    ua.receive(peer_request("INVITE", branch="z9hG4bKre1", cseq=2, to_tag=tag, body=HOLD), PEER, 1.0)
    responses(ua)
    ua.advance(8.9)
    assert responses(ua) == []
    ua.advance(9.0)
    assert [r.status for r in responses(ua)] == [500]
    assert ua.active_calls() == [call_id]


def test_bye_from_peer_and_its_retransmission() -> None:
    ua = make_ua(HOST_B, 4)
    call_id, tag = answered_call(ua)
    bye = peer_request("BYE", branch="z9hG4bKbye", cseq=2, to_tag=tag)
    ua.receive(bye, PEER, 2.0)
    assert [r.status for r in responses(ua)] == [200]
    assert ua.events() == [CallEnded(call_id, "remote-bye")]
    ua.receive(bye, PEER, 2.5)
    assert [r.status for r in responses(ua)] == [200]  # answered again by the transaction
    assert ua.events() == []


def test_info_dtmf_relay_and_dtmf() -> None:
    ua = make_ua(HOST_B, 4)
    call_id, tag = answered_call(ua)
    ua.receive(
        peer_request(
            "INFO",
            branch="z9hG4bKi1",
            cseq=2,
            to_tag=tag,
            body=b"Signal=5\r\nDuration=160\r\n",
            ctype="application/dtmf-relay",
        ),
        PEER,
        1.0,
    )
    ua.receive(
        peer_request("INFO", branch="z9hG4bKi2", cseq=3, to_tag=tag, body=b"11", ctype="application/dtmf"),
        PEER,
        1.1,
    )
    assert [r.status for r in responses(ua)] == [200, 200]
    assert ua.events() == [DtmfInfo(call_id, "5"), DtmfInfo(call_id, "#")]


def test_out_of_order_cseq_gets_500() -> None:
    ua = make_ua(HOST_B, 4)
    _call_id, tag = answered_call(ua)
    ua.receive(peer_request("INFO", branch="z9hG4bKi1", cseq=5, to_tag=tag), PEER, 1.0)
    ua.receive(peer_request("INFO", branch="z9hG4bKi2", cseq=4, to_tag=tag), PEER, 1.1)
    assert [r.status for r in responses(ua)] == [200, 500]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (peer_request("BYE", to_tag="nosuch"), 481),
        (peer_request("BYE"), 481),
        (peer_request("INFO", to_tag="nosuch"), 481),
        (peer_request("CANCEL"), 481),
        (peer_request("FOO"), 501),
        (peer_request("SUBSCRIBE"), 405),
        (peer_request("OPTIONS", headers="Max-Forwards: 0").replace(b"Max-Forwards: 70\r\n", b""), 483),
        (peer_request("INVITE", headers="Require: 100rel", body=SDP), 420),
    ],
)
def test_protocol_rejections(data: bytes, status: int) -> None:
    ua = make_ua(HOST_B, 5)
    ua.receive(data, PEER, 0.0)
    (resp,) = responses(ua)
    assert resp.status == status
    assert ";tag=" in (resp.headers.get("To") or "")
    if status in (405, 501):
        assert "INVITE" in (resp.headers.get("Allow") or "")
    (ev,) = ua.events()
    assert isinstance(ev, RequestRejected) and ev.source == PEER


def test_options_out_of_dialog() -> None:
    ua = make_ua(HOST_B, 5)
    ua.receive(peer_request("OPTIONS"), PEER, 0.0)
    (resp,) = responses(ua)
    assert resp.status == 200
    assert resp.headers.get_all_values("Allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO"]
    assert "application/sdp" in (resp.headers.get_raw("Accept") or "")
    assert "text/plain" not in (resp.headers.get_raw("Accept") or "")
    assert "Supported" in resp.headers
    assert ua.events() == []


def test_options_accept_lists_text_once_message_is_accepted() -> None:
    ua = make_ua(HOST_B, 5)
    ua.accept_methods({"MESSAGE"})
    ua.receive(peer_request("OPTIONS"), PEER, 0.0)
    (resp,) = responses(ua)
    assert "MESSAGE" in resp.headers.get_all_values("Allow")
    assert "text/plain, message/cpim" in (resp.headers.get_raw("Accept") or "")


def test_malformed_request_gets_400_with_reason() -> None:
    ua = make_ua(HOST_B, 5)
    data = peer_request("OPTIONS").replace(b"Content-Length: 0", b"Content-Length: abc")
    ua.receive(data, PEER, 0.0)
    (resp,) = responses(ua)
    assert resp.status == 400 and "Content-Length" in resp.reason
    assert "\r" not in resp.reason and len(resp.reason) <= 100
    (ev,) = ua.events()
    assert isinstance(ev, RequestRejected)
    # without a Call-ID there is nothing to answer with
    ua.receive(data.replace(b"Call-ID: call1@192.0.2.9\r\n", b""), PEER, 0.0)
    assert ua.datagrams_to_send() == []
    # a bad response is dropped silently (apart from the log event)
    ua.receive(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", PEER, 0.0)
    assert ua.datagrams_to_send() == []


def test_responses_follow_received_and_rport() -> None:
    ua = make_ua(HOST_B, 5)
    src = Addr("udp", "198.51.100.7", 33333)
    ua.receive(peer_request("OPTIONS"), src, 0.0)
    ((data, dest),) = ua.datagrams_to_send()
    assert dest == Addr("udp", "198.51.100.7", 5062)  # received host, sent-by port
    assert Via.parse(parse(data).vias[0]).param("received") == "198.51.100.7"
    via = "SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bKr2;rport"
    ua.receive(peer_request("OPTIONS", via=via), src, 0.0)
    ((data, dest),) = ua.datagrams_to_send()
    assert dest == src  # RFC 3581: back to the source port
    assert Via.parse(parse(data).vias[0]).param("rport") == "33333"


def test_record_route_copied_into_dialog_creating_responses() -> None:
    ua = make_ua(HOST_B, 5)
    rr = "Record-Route: <sip:p1.example;lr>\r\nRecord-Route: <sip:p2.example;lr>"
    ua.receive(peer_request("INVITE", body=SDP, headers=rr), PEER, 0.0)
    call_id = ua.events()[0].call_id  # type: ignore[attr-defined]
    ua.ring(call_id)
    ua.answer(call_id, SDP, 0.0)
    trying, ringing, ok = responses(ua)
    assert "Record-Route" not in trying.headers
    for r in (ringing, ok):
        assert r.headers.get_all_values("Record-Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    ua.receive(peer_ack(ok), PEER, 0.1)
    ua.hangup(call_id, 1.0)
    ((bye, dest),) = ua.datagrams_to_send()
    assert dest == Addr("udp", "p1.example", 5060)
    assert b"Route: <sip:p1.example;lr>" in bye


# ---------------------------------------------------------------- UAC with digest challenges
ACCOUNT = Account(
    name="pbx",
    registrar="sip:pbx.example:5070",
    aor="sip:alice@pbx.example",
    auth_user="alice",
    password="secret",
    register=False,
)


def challenge_response(req: Request, status: int, nonce: str, stale: bool = False) -> bytes:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    extra = ", stale=true" if stale else ""
    lines = [f"SIP/2.0 {status} {'Unauthorized' if status == 401 else 'Proxy Authentication Required'}"]
    lines += [f"Via: {v}" for v in req.vias]
    lines += [
        f"From: {req.headers.get('From')}",
        f"To: {req.headers.get('To')};tag=srv",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.headers.get('CSeq')}",
        f'{header}: Digest realm="pbx.example", nonce="{nonce}", algorithm=MD5, qop="auth"{extra}',
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def final_response(req: Request, status: int, reason: str, body: bytes = b"") -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in req.vias]
    lines += [
        f"From: {req.headers.get('From')}",
        f"To: {req.headers.get('To')};tag=srv",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.headers.get('CSeq')}",
        "Contact: <sip:bob@pbx.example:5070>",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def requests_out(ua: UserAgent) -> list[tuple[Request, Addr]]:
    out = []
    for data, dest in ua.datagrams_to_send():
        msg = parse(data)
        if isinstance(msg, Request):
            out.append((msg, dest))
    return out


def test_uac_answers_407_then_401_and_gets_answered() -> None:
    ua = make_ua(HOST_A, 6, (ACCOUNT,))
    pbx = Addr("udp", "pbx.example", 5070)
    call_id = ua.invite("200", SDP, 0.0, account="pbx")
    ((inv1, dest),) = requests_out(ua)
    assert dest == pbx and inv1.uri == "sip:200@pbx.example:5070"
    assert inv1.headers.get("From", "").startswith("<sip:alice@pbx.example>;tag=")
    ua.receive(challenge_response(inv1, 407, "n1"), pbx, 0.1)
    (ack, _), (inv2, _) = requests_out(ua)
    assert ack.method == "ACK"
    assert inv2.headers.get("CSeq") == "2 INVITE" and inv2.call_id == call_id
    proxy_auth = inv2.headers.get("Proxy-Authorization") or ""
    assert verify_authorization(proxy_auth, method="INVITE", password="secret", realm="pbx.example")
    ua.receive(challenge_response(inv2, 401, "n2"), pbx, 0.2)
    _ack, (inv3, _) = requests_out(ua)
    assert inv3.headers.get("CSeq") == "3 INVITE"
    auth = inv3.headers.get("Authorization") or ""
    assert verify_authorization(auth, method="INVITE", password="secret", realm="pbx.example")
    assert "nc=00000002" in (inv3.headers.get("Proxy-Authorization") or "")  # same nonce: nc counts
    assert ua.events() == []
    ua.receive(final_response(inv3, 200, "OK", SDP), pbx, 0.3)
    ((ack2, _),) = requests_out(ua)
    assert ack2.method == "ACK" and ack2.headers.get("CSeq") == "3 ACK"
    assert ack2.uri == "sip:bob@pbx.example:5070"
    assert "Authorization" in ack2.headers
    assert ua.events() == [CallAnswered(call_id, SDP), CallEstablished(call_id)]


def test_uac_wrong_password_fails_instead_of_looping() -> None:
    ua = make_ua(HOST_A, 6, (ACCOUNT,))
    pbx = Addr("udp", "pbx.example", 5070)
    call_id = ua.invite("sip:200@pbx.example:5070", SDP, 0.0, account="pbx")
    ((inv1, _),) = requests_out(ua)
    ua.receive(challenge_response(inv1, 401, "n1"), pbx, 0.1)
    _ack, (inv2, _) = requests_out(ua)
    ua.receive(challenge_response(inv2, 401, "n1"), pbx, 0.2)
    ((ack, _),) = requests_out(ua)
    assert ack.method == "ACK"
    assert ua.events() == [CallFailed(call_id, 401, "Unauthorized")]
    assert ua.active_calls() == []


def test_uac_timeout_and_rejection() -> None:
    ua = make_ua(HOST_A, 6)
    call_id = ua.invite("sip:200@192.0.2.50", SDP, 0.0)
    ((_inv, dest),) = requests_out(ua)
    assert dest == Addr("udp", "192.0.2.50", 5060)
    ua.advance(32.0)
    assert len(ua.datagrams_to_send()) == 6  # retransmissions at 0.5 .. 31.5
    assert ua.events() == [CallFailed(call_id, 408, "Request Timeout")]
    call2 = ua.invite("sip:200@192.0.2.50", SDP, 40.0)
    ((inv2, _),) = requests_out(ua)
    ua.receive(final_response(inv2, 486, "Busy Here"), Addr("udp", "192.0.2.50", 5060), 40.1)
    assert ua.events() == [CallFailed(call2, 486, "Busy Here")]
    with pytest.raises(ValueError):
        ua.invite("200", SDP, 41.0)  # no host and no account


def test_same_seed_same_bytes() -> None:
    def run() -> list[bytes]:
        pair = UaPair()
        establish(pair)
        return [d for _, _, d in pair.wire]

    assert run() == run()
