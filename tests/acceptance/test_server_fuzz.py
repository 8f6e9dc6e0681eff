"""Hostile input at a running server: it keeps answering and never dies.

The in-memory fuzz tests (tests/unit/sip/test_fuzz_*.py) push 100 000 mutated
messages each through the parser and the user agent; this one sends mutated
datagrams and TCP streams to the real process over loopback, checking after
each batch that a valid OPTIONS is still answered.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from tests.peers.ums import UmsServer
from tests.unit.sip.fuzzcorpus import mutated_messages

pytestmark = pytest.mark.acceptance

BATCHES = 10
PER_BATCH = 1_000


def _options(port: int, branch: str) -> bytes:
    # rport (RFC 3581): answer to the source port, whatever the sent-by says
    return (
        f"OPTIONS sip:100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:100@127.0.0.1>\r\n"
        f"Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _udp_options_answered(sock: socket.socket, port: int, branch: str) -> bytes:
    """Send OPTIONS until a 200 for it arrives (UDP may drop under the flood); the reply."""
    want = f"probe-{branch}".encode()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        sock.sendto(_options(port, branch), ("127.0.0.1", port))
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                break
            if want in data and data.startswith(b"SIP/2.0 200"):
                return data
    raise AssertionError(f"no 200 to OPTIONS {branch}")


def test_mutated_datagrams_and_streams(start_ums: Callable[..., UmsServer]) -> None:
    ums = start_ums()
    port = ums.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        _flood(sock, port, ums)
    _tcp_garbage_then_options(port)
    assert ums.proc.alive()
    assert "Traceback" not in ums.log(), ums.log_tail()
    assert not ums.events("sip.internal_error")


def _flood(sock: socket.socket, port: int, ums: UmsServer) -> None:
    sent = 0
    messages = mutated_messages(4242, BATCHES * PER_BATCH)
    for batch in range(BATCHES):
        for _ in range(PER_BATCH):
            sock.sendto(next(messages)[:65000], ("127.0.0.1", port))
            sent += 1
            if sent % 50 == 0:  # drain replies so our own socket buffer never fills
                try:
                    while sock.recvfrom(65535):
                        pass
                except TimeoutError:
                    pass
        _udp_options_answered(sock, port, f"u{batch}")
        assert ums.proc.alive(), ums.log_tail()


def _tcp_garbage_then_options(port: int) -> None:
    """Garbage streams on several connections, then a clean connection still works."""
    for i, data in enumerate(mutated_messages(777, 200)):
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as conn:
            conn.sendall(data)
            if i % 20 == 0:
                conn.sendall(b"\x00\xff" * 5000)
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as conn:
        conn.sendall(_options(port, "tcp1").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        conn.settimeout(5.0)
        reply = conn.recv(65535)
    assert reply.startswith(b"SIP/2.0 200"), reply[:200]
