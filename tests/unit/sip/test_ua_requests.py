"""Generic request plumbing of the UserAgent: accept_methods / RequestReceived / respond and
send_request / ResponseReceived / RequestFailed, with two UAs in memory or hand-written peers."""

from __future__ import annotations

import pytest

from tests.unit.sip.test_ua import (
    ACCOUNT,
    HOST_A,
    HOST_B,
    PEER,
    UaPair,
    challenge_response,
    final_response,
    make_ua,
    parse,
    peer_request,
    requests_out,
    responses,
)
from ums.sip.dialog import Dialog, out_of_dialog_request
from ums.sip.digest import verify_authorization
from ums.sip.events import (
    Addr,
    RequestFailed,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
)
from ums.sip.message import Request, Response
from ums.sip.ua import APP_ANSWER_TIMEOUT, UserAgent
from ums.sip.uri import NameAddr, SipUri


def subscribe_request(expires: int = 600) -> Request:
    return out_of_dialog_request(
        "SUBSCRIBE",
        SipUri.parse(f"sip:100@{HOST_B}"),
        from_=NameAddr(SipUri.parse(f"sip:phone@{HOST_A}")),
        from_tag="subtag",
        call_id="sub1@a",
        headers=[
            ("Event", "message-summary"),
            ("Expires", str(expires)),
            ("Accept", "application/simple-message-summary"),
            ("Contact", f"<sip:phone@{HOST_A}:5060>"),
        ],
    )


def test_subscribe_200_then_notify_in_the_new_dialog() -> None:
    pair = UaPair()
    pair.b.accept_methods({"SUBSCRIBE"}, allow_events=["message-summary"])
    pair.a.accept_methods({"NOTIFY"})
    out_handle = pair.a.send_request(subscribe_request(), None, pair.now)
    pair.pump()
    (received,) = pair.take("b")
    assert isinstance(received, RequestReceived)
    assert received.request.method == "SUBSCRIBE" and received.source.host == HOST_A
    assert pair.sent("b", "SIP/2.0") == []  # nothing until the application answers
    tag = pair.b.respond(received.handle, 200, "OK", pair.now, headers=[("Expires", "600")])
    assert tag is not None
    dialog = Dialog.as_uas(received.request, tag, received.source, local_cseq=1)
    notify = dialog.create_request(
        "NOTIFY",
        headers=[
            ("Event", "message-summary"),
            ("Subscription-State", "active;expires=600"),
            ("Contact", pair.b.local_contact()),
        ],
        body=b"Messages-Waiting: no\r\n",
        content_type="application/simple-message-summary",
    )
    notify_handle = pair.b.send_request(notify, dialog.next_hop(), pair.now)
    pair.pump()
    ok_event, notify_event = pair.take("a")
    assert isinstance(ok_event, ResponseReceived) and ok_event.handle == out_handle
    ok = ok_event.response
    assert ok.status == 200 and NameAddr.parse(ok.headers.get("To") or "").tag == tag
    assert ok.headers.get("Contact") == f"<sip:ums@{HOST_B}:5060>"
    assert ok.headers.get("Expires") == "600"
    assert isinstance(notify_event, RequestReceived)
    got = notify_event.request
    assert got.method == "NOTIFY" and got.uri == f"sip:phone@{HOST_A}:5060"
    assert NameAddr.parse(got.headers.get("From") or "").tag == tag
    assert NameAddr.parse(got.headers.get("To") or "").tag == "subtag"
    assert got.headers.get("CSeq") == "2 NOTIFY"
    assert got.body == b"Messages-Waiting: no\r\n"
    assert got.headers.get("Max-Forwards") == "70" and "User-Agent" in got.headers
    assert got.headers.get("Contact") == f"<sip:ums@{HOST_B}:5060>"
    assert pair.a.respond(notify_event.handle, 200, "OK", pair.now) == "subtag"  # existing To tag
    pair.pump()
    (done,) = pair.take("b")
    assert isinstance(done, ResponseReceived) and done.handle == notify_handle
    assert done.response.status == 200
    pair.run(60.0)
    assert pair.take("a") == [] and pair.take("b") == []
    assert pair.a.next_deadline() is None and pair.b.next_deadline() is None


def test_message_out_of_dialog_and_error_answer() -> None:
    pair = UaPair()
    pair.b.accept_methods({"MESSAGE"})
    msg = out_of_dialog_request(
        "MESSAGE",
        SipUri.parse(f"sip:100@{HOST_B}"),
        from_=NameAddr(SipUri.parse(f"sip:+4989123@{HOST_A}")),
        from_tag="m1",
        call_id="msg1@a",
        body=b"hello",
        content_type="text/plain",
    )
    handle = pair.a.send_request(msg, None, pair.now)
    pair.pump()
    (received,) = pair.take("b")
    assert isinstance(received, RequestReceived)
    assert received.request.body == b"hello"
    assert received.request.headers.get("Content-Type") == "text/plain"
    pair.b.respond(received.handle, 202, "Accepted", pair.now)
    pair.pump()
    (answer,) = pair.take("a")
    assert isinstance(answer, ResponseReceived) and answer.handle == handle
    assert answer.response.status == 202 and "Contact" not in answer.response.headers
    assert NameAddr.parse(answer.response.headers.get("To") or "").tag  # §8.2.6.2: To tag added

    msg2 = out_of_dialog_request(
        "MESSAGE",
        SipUri.parse(f"sip:999@{HOST_B}"),
        from_=NameAddr(SipUri.parse(f"sip:+4989123@{HOST_A}")),
        from_tag="m2",
        call_id="msg2@a",
        body=b"x",
        content_type="text/plain",
    )
    handle2 = pair.a.send_request(msg2, None, pair.now)
    pair.pump()
    (received2,) = pair.take("b")
    assert isinstance(received2, RequestReceived)
    pair.b.respond(received2.handle, 404, "Not Found", pair.now)
    pair.b.respond(received2.handle, 200, "OK", pair.now)  # closed handle: ignored
    pair.pump()
    (answer2,) = pair.take("a")
    assert isinstance(answer2, ResponseReceived) and answer2.handle == handle2
    assert answer2.response.status == 404


def test_request_retransmission_is_absorbed_and_response_repeated() -> None:
    ua = make_ua(HOST_B, 7)
    ua.accept_methods({"MESSAGE"})
    data = peer_request("MESSAGE", body=b"hi", ctype="text/plain")
    ua.receive(data, PEER, 0.0)
    (received,) = ua.events()
    assert isinstance(received, RequestReceived)
    ua.receive(data, PEER, 0.5)  # retransmission before the answer: absorbed
    assert ua.events() == [] and ua.datagrams_to_send() == []
    ua.respond(received.handle, 200, "OK", 0.6)
    (first,) = responses(ua)
    ua.receive(data, PEER, 1.5)  # retransmission after the answer: same response again
    (again,) = responses(ua)
    assert first.serialize() == again.serialize()
    assert ua.events() == []


def test_unanswered_request_gets_500_after_timeout() -> None:
    ua = make_ua(HOST_B, 7)
    ua.accept_methods({"SUBSCRIBE"})
    ua.receive(peer_request("SUBSCRIBE", headers="Event: message-summary"), PEER, 1.0)
    (received,) = ua.events()
    assert isinstance(received, RequestReceived)
    assert ua.next_deadline() == 1.0 + APP_ANSWER_TIMEOUT
    ua.advance(1.0 + APP_ANSWER_TIMEOUT - 0.01)
    assert responses(ua) == []
    ua.advance(1.0 + APP_ANSWER_TIMEOUT)
    (resp,) = responses(ua)
    assert resp.status == 500
    assert ua.respond(received.handle, 200, "OK", 10.0) is None  # too late


def test_respond_with_body_and_own_contact() -> None:
    ua = make_ua(HOST_B, 7)
    ua.accept_methods({"SUBSCRIBE"})
    ua.receive(peer_request("SUBSCRIBE", headers="Event: message-summary"), PEER, 0.0)
    (received,) = ua.events()
    assert isinstance(received, RequestReceived)
    with pytest.raises(ValueError):
        ua.respond(received.handle, 200, "OK", 0.0, body=b"x")  # no content type
    with pytest.raises(ValueError):
        ua.respond(received.handle, 99, "?", 0.0)
    tag = ua.respond(
        received.handle,
        200,
        "OK",
        0.0,
        headers=[("Contact", "<sip:vm@10.0.0.2:5060>")],
        body=b"x",
        content_type="text/plain",
        to_tag="mytag",
    )
    assert tag == "mytag"
    (resp,) = responses(ua)
    assert resp.headers.get_all_values("Contact") == ["<sip:vm@10.0.0.2:5060>"]
    assert resp.headers.get("Content-Type") == "text/plain" and resp.body == b"x"
    assert NameAddr.parse(resp.headers.get("To") or "").tag == "mytag"


def test_in_dialog_subscribe_refresh_is_delivered_and_gets_contact() -> None:
    ua = make_ua(HOST_B, 7)
    ua.accept_methods({"SUBSCRIBE"})
    ua.receive(peer_request("SUBSCRIBE", to_tag="ourtag", cseq=2), PEER, 0.0)
    (received,) = ua.events()
    assert isinstance(received, RequestReceived)
    assert ua.respond(received.handle, 200, "OK", 0.0) == "ourtag"
    (resp,) = responses(ua)
    assert resp.headers.get("Contact") == f"<sip:ums@{HOST_B}:5060>"
    assert NameAddr.parse(resp.headers.get("To") or "").tag == "ourtag"


def test_default_behaviour_without_accept_methods() -> None:
    ua = make_ua(HOST_B, 8)
    for n, (method, status) in enumerate(
        [("SUBSCRIBE", 405), ("NOTIFY", 405), ("MESSAGE", 405), ("PUBLISH", 405), ("FOO", 501)]
    ):
        ua.receive(peer_request(method, branch=f"z9hG4bKd{n}"), PEER, 0.0)
        (resp,) = responses(ua)
        assert resp.status == status
        assert resp.headers.get_all_values("Allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO"]
        assert [type(e) for e in ua.events()] == [RequestRejected]
    ua.accept_methods({"MESSAGE"})
    ua.accept_methods(())  # back to the default
    ua.receive(peer_request("MESSAGE", branch="z9hG4bKd9"), PEER, 0.0)
    assert [r.status for r in responses(ua)] == [405]


def test_accepted_methods_show_in_allow_and_options() -> None:
    ua = make_ua(HOST_B, 8)
    with pytest.raises(ValueError):
        ua.accept_methods({"BYE"})
    ua.accept_methods({"subscribe", "MESSAGE"}, allow_events=["message-summary"])
    ua.receive(peer_request("OPTIONS"), PEER, 0.0)
    (resp,) = responses(ua)
    assert resp.headers.get_all_values("Allow")[-2:] == ["MESSAGE", "SUBSCRIBE"]
    assert resp.headers.get("Allow-Events") == "message-summary"
    ua.receive(peer_request("NOTIFY", branch="z9hG4bKn"), PEER, 0.0)
    (resp,) = responses(ua)
    assert resp.status == 405 and "SUBSCRIBE" in resp.headers.get_all_values("Allow")


def test_accepted_request_with_max_forwards_zero_or_require_is_rejected() -> None:
    ua = make_ua(HOST_B, 8)
    ua.accept_methods({"MESSAGE"})
    data = peer_request("MESSAGE").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    ua.receive(data, PEER, 0.0)
    assert [r.status for r in responses(ua)] == [483]
    assert [type(e) for e in ua.events()] == [RequestRejected]
    ua.receive(peer_request("MESSAGE", branch="z9hG4bKreq", headers="Require: foo"), PEER, 0.0)
    (resp,) = responses(ua)
    assert resp.status == 420 and resp.headers.get("Unsupported") == "foo"
    assert [type(e) for e in ua.events()] == [RequestRejected]


def notify_to_pbx(ua: UserAgent) -> Request:
    return out_of_dialog_request(
        "NOTIFY",
        SipUri.parse("sip:100@pbx.example:5070"),
        from_=NameAddr(SipUri.parse("sip:vm@pbx.example")),
        from_tag="nt",
        call_id="n1@b",
        headers=[("Event", "message-summary"), ("Subscription-State", "active")],
        body=b"Messages-Waiting: yes\r\n",
        content_type="application/simple-message-summary",
    )


def test_send_request_answers_digest_challenge() -> None:
    ua = make_ua(HOST_A, 9, (ACCOUNT,))
    pbx = Addr("udp", "pbx.example", 5070)
    handle = ua.send_request(notify_to_pbx(ua), None, 0.0, account="pbx")
    ((first, dest),) = requests_out(ua)
    assert dest == pbx and first.headers.get("CSeq") == "1 NOTIFY"
    ua.receive(challenge_response(first, 401, "n1"), pbx, 0.1)
    assert ua.events() == []
    ((second, _),) = requests_out(ua)  # non-INVITE: no ACK
    assert second.headers.get("CSeq") == "2 NOTIFY"
    assert second.vias[0] != first.vias[0]
    auth = second.headers.get("Authorization") or ""
    assert verify_authorization(auth, method="NOTIFY", password="secret", realm="pbx.example")
    assert second.body == first.body
    ua.receive(final_response(second, 200, "OK"), pbx, 0.2)
    (ev,) = ua.events()
    assert isinstance(ev, ResponseReceived) and ev.handle == handle and ev.response.status == 200


def test_send_request_wrong_password_reports_the_challenge() -> None:
    ua = make_ua(HOST_A, 9, (ACCOUNT,))
    pbx = Addr("udp", "pbx.example", 5070)
    handle = ua.send_request(notify_to_pbx(ua), None, 0.0, account="pbx")
    ((first, _),) = requests_out(ua)
    ua.receive(challenge_response(first, 401, "n1"), pbx, 0.1)
    ((second, _),) = requests_out(ua)
    ua.receive(challenge_response(second, 401, "n1"), pbx, 0.2)
    assert requests_out(ua) == []
    (ev,) = ua.events()
    assert isinstance(ev, ResponseReceived) and ev.handle == handle and ev.response.status == 401


def test_challenge_without_account_is_passed_up() -> None:
    ua = make_ua(HOST_A, 9)
    handle = ua.send_request(notify_to_pbx(ua), None, 0.0)
    ((first, _),) = requests_out(ua)
    ua.receive(challenge_response(first, 407, "n1"), Addr("udp", "pbx.example", 5070), 0.1)
    (ev,) = ua.events()
    assert isinstance(ev, ResponseReceived) and ev.handle == handle and ev.response.status == 407


def test_send_request_timeout_gives_request_failed() -> None:
    ua = make_ua(HOST_A, 9)
    handle = ua.send_request(notify_to_pbx(ua), Addr("udp", "192.0.2.50", 5060), 0.0)
    ua.datagrams_to_send()
    ua.advance(31.9)
    sent = ua.datagrams_to_send()
    assert len(sent) == 10  # Timer E: 0.5, 1.5, 3.5, 7.5, then every T2 = 4 s up to 31.5
    assert all(dest == Addr("udp", "192.0.2.50", 5060) for _, dest in sent)
    assert ua.events() == []
    ua.advance(32.0)
    assert ua.events() == [RequestFailed(handle, 408, "Request Timeout")]
    assert ua.next_deadline() is None


def test_send_request_destination_rules_and_errors() -> None:
    ua = make_ua(HOST_A, 9, (ACCOUNT,))
    req = notify_to_pbx(ua)
    req.headers.add("Route", "<sip:proxy.example:5080;lr>")
    ua.send_request(req, None, 0.0)
    ((_, dest),) = ua.datagrams_to_send()
    assert dest == Addr("udp", "proxy.example", 5080)
    tcp = out_of_dialog_request(
        "MESSAGE",
        SipUri.parse("sip:100@192.0.2.7;transport=tcp"),
        from_=NameAddr(SipUri.parse("sip:vm@x")),
        from_tag="t",
        call_id="c@x",
    )
    ua.send_request(tcp, None, 0.0)
    ((data, dest),) = ua.datagrams_to_send()
    assert dest == Addr("tcp", "192.0.2.7", 5060)
    sent = parse(data)
    assert sent.vias[0].startswith("SIP/2.0/TCP ")
    ua.advance(100.0)  # reliable transport: no retransmission, just Timer F
    assert [dest.transport for _, dest in ua.datagrams_to_send()] == ["udp"] * 10  # the UDP one only
    with pytest.raises(ValueError):
        ua.send_request(notify_to_pbx(ua), None, 0.0, account="nosuch")
    invite = notify_to_pbx(ua)
    invite.method = "INVITE"
    with pytest.raises(ValueError):
        ua.send_request(invite, None, 0.0)
    bad = notify_to_pbx(ua)
    bad.headers.remove("Call-ID")
    with pytest.raises(ValueError):
        ua.send_request(bad, None, 0.0)
    with pytest.raises(ValueError):
        out_of_dialog_request(
            "MESSAGE",
            SipUri.parse("sip:a@b"),
            from_=NameAddr(SipUri.parse("sip:c@d")),
            from_tag="t",
            call_id="c",
            body=b"x",
        )


def test_provisional_response_is_not_reported() -> None:
    ua = make_ua(HOST_A, 9)
    handle = ua.send_request(notify_to_pbx(ua), Addr("udp", "192.0.2.50", 5060), 0.0)
    ((req, _),) = requests_out(ua)
    trying = final_response(req, 200, "OK").replace(b"SIP/2.0 200 OK", b"SIP/2.0 100 Trying")
    ua.receive(trying, Addr("udp", "192.0.2.50", 5060), 0.1)
    assert ua.events() == []
    ua.receive(final_response(req, 489, "Bad Event"), Addr("udp", "192.0.2.50", 5060), 0.2)
    (ev,) = ua.events()
    assert isinstance(ev, ResponseReceived) and ev.handle == handle
    assert isinstance(ev.response, Response) and ev.response.status == 489
