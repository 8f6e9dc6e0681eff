"""``redis-server`` on a free loopback port, for the pipeline's scale-out mode.

What it does
------------
:class:`RedisServer` starts ``redis-server`` in the foreground without persistence
(``--save '' --appendonly no``), waits until it answers ``PING`` and stops it with SIGTERM;
``url(db)`` is the broker URL for the configuration (``redis://127.0.0.1:PORT/0``).

How it works
------------
A supervised subprocess (:class:`tests.peers.procs.Proc`); readiness is a raw RESP ``PING``
over a socket, so the test needs no Redis client library.  Debian package: ``redis-server``.
"""

from __future__ import annotations

import shutil
import signal
import socket
from pathlib import Path

from tests.peers.ports import free_port
from tests.peers.procs import PeerError, Proc, wait_until

__all__ = ["REDIS_SERVER", "RedisServer", "ping"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def ping(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """True when a Redis server on host:port answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, run_dir: Path, port: int | None = None, name: str = "redis") -> None:
        self.run_dir = Path(run_dir) / name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        argv = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.run_dir),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.proc = Proc(argv, self.run_dir, name, cwd=self.run_dir, stop_signal=signal.SIGTERM)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc.start()

        def ready() -> bool:
            if not self.proc.alive():
                raise PeerError(f"redis-server exited\n{self.proc.log_tail()}")
            return ping(self.port)

        try:
            wait_until(ready, timeout, 0.02, f"redis-server to answer PING on {self.port}")
        except PeerError:
            self.proc.stop(2.0)
            raise
        return self

    def stop(self) -> None:
        self.proc.stop(5.0)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
