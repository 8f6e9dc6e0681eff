"""Free loopback ports for test peers.

What it does
------------
``free_port()`` returns a port number on 127.0.0.1 that is free for both UDP and
TCP at the time of the call; ``free_port_block(n)`` returns the first of ``n``
consecutive such ports (RTP ranges, SIPp media ports).

How it works
------------
Bind-and-release: the kernel picks an ephemeral TCP port, the same number is
then bound for UDP (and the following ports for a block); all sockets are
closed before returning.  Ports already handed out by this process are not
returned again, so two peers started in a row never get the same one.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port", "free_port_block", "port_is_free"]

HOST = "127.0.0.1"
_given: set[int] = set()
_rng = random.Random()


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when ``port`` can be bound on ``host`` for both UDP and TCP right now."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_port(host: str = HOST) -> int:
    """A port free for UDP and TCP on ``host`` (not handed out before by this process)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        finally:
            s.close()
        if port not in _given and port_is_free(port, host):
            _given.add(port)
            return port
    raise RuntimeError("no free port found")


def free_port_block(count: int, host: str = HOST, lo: int = 20000, hi: int = 40000) -> int:
    """First port of ``count`` consecutive ports free for UDP and TCP; even, so RTP/RTCP pairs align."""
    for _ in range(500):
        base = _rng.randrange(lo, hi - count) & ~1
        span = range(base, base + count)
        if any(p in _given for p in span):
            continue
        if all(port_is_free(p, host) for p in span):
            _given.update(span)
            return base
    raise RuntimeError(f"no block of {count} free ports found")
