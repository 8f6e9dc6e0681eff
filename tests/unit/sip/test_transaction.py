"""RFC 3261 §17 transaction machines: timer schedules, absorption, ACK building, matching."""

from __future__ import annotations

import pytest

from ums.sip.events import Addr
from ums.sip.message import Request, Response, parse_message
from ums.sip.timers import TimerSettings
from ums.sip.transaction import (
    INVITE_CLIENT_TRANSITIONS,
    INVITE_SERVER_TRANSITIONS,
    NON_INVITE_CLIENT_TRANSITIONS,
    NON_INVITE_SERVER_TRANSITIONS,
    ClientTransaction,
    ServerTransaction,
    TransactionError,
    TxState,
    cancelled_key,
    server_key,
)

UDP = Addr("udp", "192.0.2.1", 5060)
TCP = Addr("tcp", "192.0.2.1", 5060)
T = TimerSettings()


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", via_host: str = "192.0.2.9") -> Request:
    data = (
        f"{method} sip:100@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host}:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:a@192.0.2.9>;tag=ft\r\n"
        "To: <sip:100@192.0.2.1>\r\n"
        "Call-ID: cid1\r\n"
        f"CSeq: 7 {method}\r\n"
        "Route: <sip:proxy.example;lr>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, to_tag: str | None = "tt") -> Response:
    lines = [f"SIP/2.0 {status} Whatever"]
    lines += [f"Via: {v}" for v in req.vias]
    to = req.headers.get("To") or ""
    lines += [
        f"From: {req.headers.get('From')}",
        f"To: {to};tag={to_tag}" if to_tag else f"To: {to}",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.headers.get('CSeq')}",
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Response)
    return msg


def send_times(tx: ClientTransaction | ServerTransaction, until: float, step: float = 0.25) -> list[float]:
    """Advance in small steps; the times at which something was sent (after the first send)."""
    tx.take_output()
    times: list[float] = []
    now = 0.0
    while now <= until and not tx.terminated:
        now = round(now + step, 6)
        tx.advance(now)
        times += [now] * len(tx.take_output())
    return times


def test_invite_client_udp_retransmits_doubling_and_times_out_at_64_t1() -> None:
    tx = ClientTransaction(request(), UDP, 0.0, T)
    assert tx.state is TxState.CALLING
    assert len(tx.take_output()) == 1
    times = send_times(tx, 40.0)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.terminated


def test_invite_client_timeout_reported_once_with_a_late_advance() -> None:
    tx = ClientTransaction(request(), UDP, 0.0, T)
    tx.take_output()
    assert tx.advance(31.9) is False
    assert len(tx.take_output()) == 6  # every missed retransmission catches up in order
    assert tx.advance(32.0) is True
    assert tx.terminated
    assert tx.next_deadline() is None


def test_invite_client_tcp_does_not_retransmit() -> None:
    tx = ClientTransaction(request(), TCP, 0.0, T)
    tx.take_output()
    assert tx.next_deadline() == 32.0
    assert send_times(tx, 40.0) == []
    assert tx.terminated


def test_invite_client_provisional_stops_retransmission() -> None:
    req = request()
    tx = ClientTransaction(req, UDP, 0.0, T)
    assert tx.receive(response(req, 180), 0.2) is True
    assert tx.state is TxState.PROCEEDING
    assert tx.next_deadline() is None


def test_invite_client_non2xx_builds_ack_and_resends_it() -> None:
    req = request()
    tx = ClientTransaction(req, UDP, 0.0, T)
    tx.take_output()
    final = response(req, 486)
    assert tx.receive(final, 1.0) is True
    assert tx.state is TxState.COMPLETED
    ((ack_bytes, dest),) = tx.take_output()
    assert dest == UDP
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request)
    assert ack.method == "ACK" and ack.uri == req.uri
    assert ack.vias == req.vias[:1]
    assert ack.headers.get("To") == "<sip:100@192.0.2.1>;tag=tt"
    assert ack.headers.get("CSeq") == "7 ACK"
    assert ack.headers.get("Route") == "<sip:proxy.example;lr>"
    # the retransmitted final is absorbed, the ACK goes out again
    assert tx.receive(final, 1.5) is False
    assert [b for b, _ in tx.take_output()] == [ack_bytes]
    assert tx.next_deadline() == 33.0  # Timer D: 32 s
    tx.advance(33.0)
    assert tx.terminated


def test_invite_client_2xx_terminates() -> None:
    req = request()
    tx = ClientTransaction(req, UDP, 0.0, T)
    assert tx.receive(response(req, 200), 0.1) is True
    assert tx.terminated
    assert tx.take_output()[1:] == []  # no ACK from the transaction for a 2xx


def test_non_invite_client_udp_schedule() -> None:
    tx = ClientTransaction(request("OPTIONS"), UDP, 0.0, T)
    assert tx.state is TxState.TRYING
    times = send_times(tx, 40.0)
    # Timer E: T1 doubling, capped at T2 = 4 s
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.terminated


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    req = request("BYE")
    tx = ClientTransaction(req, UDP, 0.0, T)
    tx.take_output()
    tx.advance(0.5)
    assert tx.receive(response(req, 100, None), 0.6)
    tx.take_output()
    sent = []
    for now in (1.4, 1.5, 5.4, 5.5, 9.5):
        tx.advance(now)
        sent += [now] * len(tx.take_output())
    assert sent == [1.5, 5.5, 9.5]


def test_non_invite_client_completed_absorbs_then_timer_k() -> None:
    req = request("BYE")
    tx = ClientTransaction(req, UDP, 0.0, T)
    assert tx.receive(response(req, 200), 0.1) is True
    assert tx.state is TxState.COMPLETED
    assert tx.receive(response(req, 200), 0.2) is False
    assert tx.next_deadline() == pytest.approx(5.1)
    tx.advance(5.1)
    assert tx.terminated


def test_non_invite_client_tcp_terminates_on_final() -> None:
    req = request("BYE")
    tx = ClientTransaction(req, TCP, 0.0, T)
    assert tx.next_deadline() == 32.0
    assert tx.receive(response(req, 200), 0.1) is True
    assert tx.terminated


def test_invite_server_2xx_terminates_and_retransmission_resends_provisional() -> None:
    req = request()
    tx = ServerTransaction(req, UDP, 0.0, T)
    assert tx.state is TxState.PROCEEDING
    tx.respond(response(req, 100, None), 0.0)
    first = tx.take_output()
    tx.receive(req, 0.5)
    assert tx.take_output() == first
    tx.respond(response(req, 200), 1.0)
    assert tx.terminated


def test_invite_server_non2xx_retransmits_until_ack_then_timer_i() -> None:
    req = request()
    tx = ServerTransaction(req, UDP, 0.0, T)
    tx.respond(response(req, 486), 0.0)
    assert len(tx.take_output()) == 1
    times = []
    for now in [x / 4 for x in range(1, 47)]:
        tx.advance(now)
        times += [now] * len(tx.take_output())
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5]  # Timer G: min(2*T, T2)
    ack = request("ACK")
    tx.receive(ack, 11.6)
    assert tx.state is TxState.CONFIRMED
    assert tx.next_deadline() == pytest.approx(16.6)  # Timer I = T4
    tx.advance(16.6)
    assert tx.terminated


def test_invite_server_timer_h_reports_missing_ack() -> None:
    req = request()
    tx = ServerTransaction(req, UDP, 0.0, T)
    tx.respond(response(req, 603), 0.0)
    assert tx.advance(31.9) is False
    assert tx.advance(32.0) is True
    assert tx.terminated


def test_invite_server_tcp_no_retransmission_and_ack_terminates() -> None:
    req = request()
    tx = ServerTransaction(req, TCP, 0.0, T)
    tx.respond(response(req, 486), 0.0)
    tx.take_output()
    assert tx.next_deadline() == 32.0
    tx.advance(20.0)
    assert tx.take_output() == []
    tx.receive(request("ACK"), 20.0)
    assert tx.terminated


def test_non_invite_server_absorbs_and_timer_j() -> None:
    req = request("OPTIONS")
    tx = ServerTransaction(req, UDP, 0.0, T)
    tx.receive(req, 0.1)
    assert tx.take_output() == []  # Trying: absorbed
    tx.respond(response(req, 200), 0.2)
    sent = tx.take_output()
    tx.receive(req, 0.3)
    assert tx.take_output() == sent
    assert tx.next_deadline() == pytest.approx(32.2)
    tx.advance(32.2)
    assert tx.terminated
    tcp = ServerTransaction(req, TCP, 0.0, T)
    tcp.respond(response(req, 200), 0.0)
    assert tcp.terminated


def test_server_refuses_response_after_final() -> None:
    req = request("OPTIONS")
    tx = ServerTransaction(req, UDP, 0.0, T)
    tx.respond(response(req, 200), 0.0)
    with pytest.raises(TransactionError):
        tx.respond(response(req, 500), 0.0)


def test_custom_timers() -> None:
    fast = TimerSettings(t1=0.1, t2=0.4, t4=1.0)
    tx = ClientTransaction(request(), UDP, 0.0, fast)
    assert tx.next_deadline() == pytest.approx(0.1)
    with pytest.raises(ValueError):
        TimerSettings(t1=5.0, t2=4.0)


def test_server_key_matching_rules() -> None:
    inv = request("INVITE", branch="z9hG4bK1")
    assert server_key(request("ACK", branch="z9hG4bK1")) == server_key(inv)
    cancel = server_key(request("CANCEL", branch="z9hG4bK1"))
    assert cancel != server_key(inv)
    assert cancelled_key(cancel) == server_key(inv)
    assert server_key(request("INVITE", branch="z9hG4bK1", via_host="192.0.2.10")) != server_key(inv)
    assert server_key(request("INVITE", branch="z9hG4bK2")) != server_key(inv)
    # RFC 2543 peer (no magic cookie): matched on the request's identity
    old = server_key(request("INVITE", branch="1234"))
    assert old[0] == "server2543"
    assert server_key(request("ACK", branch="1234")) == old


@pytest.mark.parametrize(
    "table",
    [
        INVITE_CLIENT_TRANSITIONS,
        NON_INVITE_CLIENT_TRANSITIONS,
        INVITE_SERVER_TRANSITIONS,
        NON_INVITE_SERVER_TRANSITIONS,
    ],
)
def test_tables_never_leave_terminated(table: dict[tuple[TxState, object], tuple[object, TxState]]) -> None:
    assert all(state is not TxState.TERMINATED for state, _ in table)
