"""Registration through the UserAgent against a hand-written registrar (digest checked)."""

from __future__ import annotations

import random
from dataclasses import replace

from ums.config import Account
from ums.sip.digest import parse_credentials, verify_authorization
from ums.sip.events import Addr, RegistrationChanged
from ums.sip.message import Request, parse_message
from ums.sip.registration import BACKOFF_MAX, refresh_delay
from ums.sip.ua import UaSettings, UserAgent

REGISTRAR = Addr("udp", "192.0.2.5", 5060)
ACCOUNT = Account(
    name="pbx",
    registrar="sip:192.0.2.5",
    aor="sip:100@pbx.example",
    auth_user="100",
    password="secret",
    expires=600,
)


def make_ua(*accounts: Account) -> UserAgent:
    settings = UaSettings(host="10.0.0.1", ports={"udp": 5060, "tcp": 5070}, accounts=accounts or (ACCOUNT,))
    return UserAgent(settings, random.Random(7))


def registers(ua: UserAgent) -> list[tuple[Request, Addr]]:
    out = []
    for data, dest in ua.datagrams_to_send():
        msg = parse_message(data)
        assert isinstance(msg, Request) and msg.method == "REGISTER"
        out.append((msg, dest))
    return out


def one_register(ua: UserAgent) -> Request:
    ((req, dest),) = registers(ua)
    assert dest == REGISTRAR
    return req


def reply(req: Request, status: int, reason: str, *headers: str) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in req.vias]
    lines += [
        f"From: {req.headers.get('From')}",
        f"To: {req.headers.get('To')};tag=reg",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.headers.get('CSeq')}",
        *headers,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def challenge(req: Request, nonce: str, stale: bool = False) -> bytes:
    value = f'Digest realm="pbx.example", nonce="{nonce}", algorithm=MD5, qop="auth"'
    return reply(req, 401, "Unauthorized", f"WWW-Authenticate: {value}" + (", stale=true" if stale else ""))


def authorized(req: Request, password: str = "secret") -> bool:
    value = req.headers.get("Authorization")
    return value is not None and verify_authorization(
        value, method="REGISTER", password=password, realm="pbx.example"
    )


def ok(req: Request, *headers: str) -> bytes:
    contact = req.headers.get("Contact") or ""
    return reply(req, 200, "OK", *(headers or (f"Contact: {contact};expires=3600",)))


def register_with_challenge(ua: UserAgent, now: float = 0.0) -> Request:
    req = one_register(ua)
    ua.receive(challenge(req, "n1"), REGISTRAR, now)
    req2 = one_register(ua)
    assert authorized(req2)
    ua.receive(ok(req2), REGISTRAR, now)
    return req2


def test_initial_register_request() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    assert not ua.registrations_idle()
    req = one_register(ua)
    assert req.uri == "sip:192.0.2.5"
    assert req.headers.get("To") == "<sip:100@pbx.example>"
    assert req.headers.get("From", "").startswith("<sip:100@pbx.example>;tag=")
    assert req.headers.get("Contact") == "<sip:100@10.0.0.1:5060>"
    assert req.headers.get("Expires") == "600"
    assert req.headers.get("CSeq") == "1 REGISTER"
    assert "Authorization" not in req.headers


def test_challenge_success_and_refresh_timing() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    req2 = register_with_challenge(ua)
    assert req2.headers.get("CSeq") == "2 REGISTER"
    assert ua.events() == [RegistrationChanged("pbx", "registered", 200, "OK", 3600, None)]
    assert ua.registrations_idle()
    assert ua.registration("pbx").next_deadline() == refresh_delay(3600) == 3510.0
    ua.advance(3509.0)
    assert registers(ua) == []
    ua.advance(3510.0)
    req3 = one_register(ua)
    assert req3.call_id == req2.call_id and req3.headers.get("CSeq") == "3 REGISTER"
    cred = parse_credentials(req3.headers.get("Authorization") or "")
    assert cred.nonce == "n1" and cred.nc == "00000002"  # pre-emptive, nc counts on
    assert cred.cnonce != parse_credentials(req2.headers.get("Authorization") or "").cnonce
    ua.receive(ok(req3, "Expires: 60"), REGISTRAR, 3510.1)
    assert ua.events() == [RegistrationChanged("pbx", "registered", 200, "OK", 60, None)]
    assert ua.registration("pbx").next_deadline() == 3510.1 + 30.0  # short lifetimes refresh half-way


def test_granted_expires_falls_back_to_requested() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    req = one_register(ua)
    ua.receive(reply(req, 200, "OK", "Contact: <sip:someone-else@192.0.2.77>;expires=10"), REGISTRAR, 1.0)
    (ev,) = ua.events()
    assert isinstance(ev, RegistrationChanged) and ev.expires == 600
    assert ua.registration("pbx").next_deadline() == 1.0 + 510.0


def test_403_backs_off_exponentially_up_to_the_cap() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    now = 0.0
    delays = []
    for _ in range(9):
        req = one_register(ua)
        ua.receive(reply(req, 403, "Forbidden"), REGISTRAR, now)
        (ev,) = ua.events()
        assert isinstance(ev, RegistrationChanged) and ev.state == "failed" and ev.status == 403
        assert ev.retry_in is not None
        delays.append(ev.retry_in)
        now += ev.retry_in
        assert ua.registration("pbx").next_deadline() == now
        ua.advance(now)
    assert delays == [30, 60, 120, 240, 480, 960, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]


def test_503_retry_after_is_honoured_and_success_resets_backoff() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    req = one_register(ua)
    ua.receive(reply(req, 503, "Service Unavailable", "Retry-After: 120 (maintenance)"), REGISTRAR, 0.0)
    assert ua.events() == [RegistrationChanged("pbx", "failed", 503, "Service Unavailable", 0, 120.0)]
    ua.advance(120.0)
    req = one_register(ua)
    ua.receive(ok(req, "Expires: 100"), REGISTRAR, 120.0)
    ua.events()
    ua.advance(170.0)
    req = one_register(ua)
    ua.receive(reply(req, 500, "Oops"), REGISTRAR, 170.0)
    (ev,) = ua.events()
    assert isinstance(ev, RegistrationChanged) and ev.retry_in == 30.0


def test_wrong_password_fails_at_once_and_backs_off() -> None:
    ua = make_ua(replace(ACCOUNT, password="wrong"))
    ua.start_registrations(0.0)
    req = one_register(ua)
    ua.receive(challenge(req, "n1"), REGISTRAR, 0.0)
    req2 = one_register(ua)
    assert not authorized(req2)
    ua.receive(challenge(req2, "n2"), REGISTRAR, 0.1)  # a fresh nonce, but not stale: password wrong
    assert registers(ua) == []
    (ev,) = ua.events()
    assert isinstance(ev, RegistrationChanged) and ev.state == "failed" and ev.status == 401
    assert ev.retry_in == 30.0
    assert ua.registrations_idle()
    # same nonce again is the classic case
    ua.advance(30.1)
    req3 = one_register(ua)
    ua.receive(challenge(req3, "n3"), REGISTRAR, 30.2)
    req4 = one_register(ua)
    ua.receive(challenge(req4, "n3"), REGISTRAR, 30.3)
    assert registers(ua) == []
    (ev,) = ua.events()
    assert isinstance(ev, RegistrationChanged) and ev.state == "failed" and ev.retry_in == 60.0


def test_stale_nonce_is_retried_without_failure() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    req = one_register(ua)
    ua.receive(challenge(req, "n1"), REGISTRAR, 0.0)
    req2 = one_register(ua)
    ua.receive(challenge(req2, "n2", stale=True), REGISTRAR, 0.1)
    req3 = one_register(ua)
    cred = parse_credentials(req3.headers.get("Authorization") or "")
    assert cred.nonce == "n2" and cred.nc == "00000001"
    assert authorized(req3)
    ua.receive(ok(req3), REGISTRAR, 0.2)
    assert ua.events() == [RegistrationChanged("pbx", "registered", 200, "OK", 3600, None)]


def test_423_retries_with_min_expires() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    req = one_register(ua)
    ua.receive(reply(req, 423, "Interval Too Brief", "Min-Expires: 1800"), REGISTRAR, 0.0)
    req2 = one_register(ua)
    assert req2.headers.get("Expires") == "1800"
    ua.receive(ok(req2, "Expires: 1800"), REGISTRAR, 0.1)
    assert ua.events() == [RegistrationChanged("pbx", "registered", 200, "OK", 1800, None)]
    assert ua.registration("pbx").next_deadline() == 0.1 + 1710.0


def test_no_response_times_out_and_retries() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    one_register(ua)
    ua.advance(31.9)
    assert len(registers(ua)) == 10  # Timer E: 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5
    ua.advance(32.0)
    assert ua.events() == [RegistrationChanged("pbx", "failed", 408, "Request Timeout", 0, 30.0)]
    ua.advance(62.0)
    assert len(registers(ua)) == 1


def test_unregister_sends_expires_zero_with_credentials() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    register_with_challenge(ua)
    ua.events()
    ua.unregister_all(10.0)
    req = one_register(ua)
    assert req.headers.get("Expires") == "0"
    assert req.headers.get("Contact") == "<sip:100@10.0.0.1:5060>"
    assert authorized(req)
    assert not ua.registrations_idle()
    ua.receive(ok(req, "Expires: 0"), REGISTRAR, 10.1)
    assert ua.events() == [RegistrationChanged("pbx", "unregistered", 200, "OK", 0, None)]
    assert ua.registrations_idle()
    assert ua.registration("pbx").next_deadline() is None


def test_unregister_of_a_failed_account_sends_nothing() -> None:
    ua = make_ua()
    ua.start_registrations(0.0)
    req = one_register(ua)
    ua.receive(reply(req, 403, "Forbidden"), REGISTRAR, 0.0)
    ua.events()
    ua.unregister_all(1.0)
    assert registers(ua) == []
    assert ua.registrations_idle() and ua.registration("pbx").next_deadline() is None


def test_outbound_proxy_tcp_and_several_accounts() -> None:
    tcp = replace(ACCOUNT, name="tcp", transport="tcp", proxy="sip:192.0.2.6:5080", aor="sip:200@pbx.example")
    off = replace(ACCOUNT, name="outbound-only", register=False)
    ua = make_ua(ACCOUNT, tcp, off)
    ua.start_registrations(0.0)
    sent = registers(ua)
    assert [dest for _, dest in sent] == [REGISTRAR, Addr("tcp", "192.0.2.6", 5080)]
    req_tcp = sent[1][0]
    assert req_tcp.uri == "sip:192.0.2.5"  # the Request-URI stays the registrar
    assert req_tcp.headers.get("Contact") == "<sip:200@10.0.0.1:5070;transport=tcp>"
    assert req_tcp.vias[0].startswith("SIP/2.0/TCP 10.0.0.1:5070;")
    assert sent[0][0].call_id != req_tcp.call_id
    ua.receive(ok(req_tcp), Addr("tcp", "192.0.2.6", 5080), 0.1)
    assert [e.account for e in ua.events() if isinstance(e, RegistrationChanged)] == ["tcp"]
    ua.advance(31.9)  # TCP: no retransmission; UDP account retransmits
    assert {dest.transport for _, dest in registers(ua)} == {"udp"}
