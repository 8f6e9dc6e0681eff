"""Supervised subprocesses for test peers.

What it does
------------
:class:`Proc` starts a command with stdout and stderr going to files in a run
directory, can wait for it to become ready (a UDP SIP OPTIONS that gets any
answer, a TCP connect, a line in its log) and stops it with SIGTERM, then
SIGKILL after a timeout.  The process is always reaped.  ``Proc`` is a context
manager; :func:`running` lists live ones so a test run can stop leftovers.

How it works
------------
Plain :mod:`subprocess` with polling loops; every wait has a deadline and
raises :class:`PeerTimeout` (with the log tail) when it passes.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "PeerError",
    "PeerTimeout",
    "Proc",
    "options_ping",
    "running",
    "stop_all",
    "tail",
    "wait_tcp",
    "wait_udp_sip",
    "wait_until",
]

_live: dict[int, Proc] = {}


class PeerError(RuntimeError):
    """A peer failed to start or behaved unexpectedly."""


class PeerTimeout(PeerError):
    """A bounded wait ran out."""


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "") -> None:
    """Poll ``predicate`` until it is true; raise :class:`PeerTimeout` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise PeerTimeout(f"timed out after {timeout:.1f} s waiting for {what or predicate!r}")
        time.sleep(interval)


def options_ping(host: str, port: int, timeout: float = 0.3) -> str | None:
    """Send one SIP OPTIONS over UDP; return the status line of any answer, else None."""
    tag = uuid.uuid4().hex[:10]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{tag};rport\r\n"
            f"From: <sip:probe@127.0.0.1:{lport}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: probe-{tag}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), (host, port))
        data, _ = s.recvfrom(65535)
    except OSError:
        return None
    finally:
        s.close()
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def wait_udp_sip(host: str, port: int, timeout: float = 10.0) -> str:
    """Wait until a SIP peer answers OPTIONS on UDP; return the status line."""
    answer: list[str] = []

    def probe() -> bool:
        line = options_ping(host, port)
        if line:
            answer.append(line)
        return bool(line)

    wait_until(probe, timeout, 0.05, f"a SIP answer on udp:{host}:{port}")
    return answer[0]


def wait_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until a TCP connect to host:port succeeds."""

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.3):
                return True
        except OSError:
            return False

    wait_until(probe, timeout, 0.05, f"tcp:{host}:{port} to accept")


class Proc:
    """One supervised subprocess; output in ``<log_dir>/<name>.out`` and ``.err``."""

    def __init__(
        self,
        argv: Sequence[str],
        log_dir: Path,
        name: str,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / f"{name}.out"
        self.stderr_path = self.log_dir / f"{name}.err"
        self.cwd = cwd
        self.env = dict(os.environ if env is None else env)
        self.stop_signal = stop_signal
        self.popen: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        #: kept running between the tests of a module (a module-scoped fixture stops it)
        self.module_scoped = False

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> Proc:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.cwd, env=self.env
            )
        _live[self.popen.pid] = self
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise PeerError(f"{self.name} was not started")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; raise :class:`PeerTimeout` if it does not."""
        if self.popen is None:
            raise PeerError(f"{self.name} was not started")
        try:
            self.returncode = self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise PeerTimeout(f"{self.name} still running after {timeout:.1f} s\n{self.log_tail()}") from exc
        _live.pop(self.popen.pid, None)
        return self.returncode

    def signal(self, sig: int) -> None:
        if self.alive() and self.popen is not None:
            os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 5.0, sig: int | None = None) -> int | None:
        """Send ``sig`` (default: the stop signal), wait ``timeout`` s, then SIGKILL; always reaps."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, self.stop_signal if sig is None else sig)
                self.returncode = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.returncode = self.popen.wait(10)
            except ProcessLookupError:
                self.returncode = self.popen.wait(10)
        else:
            self.returncode = self.popen.returncode
        _live.pop(self.popen.pid, None)
        return self.returncode

    def kill(self) -> int | None:
        return self.stop(timeout=0.0, sig=signal.SIGKILL) if self.popen else None

    # -- readiness --------------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise PeerError(f"{self.name} exited with {self.popen.returncode}\n{self.log_tail()}")

    def wait_udp_sip(self, host: str, port: int, timeout: float = 10.0) -> str:
        answer: list[str] = []

        def probe() -> bool:
            self._check_alive()
            line = options_ping(host, port)
            if line:
                answer.append(line)
            return bool(line)

        wait_until(probe, timeout, 0.05, f"{self.name} to answer OPTIONS on udp:{host}:{port}")
        return answer[0]

    def wait_tcp(self, host: str, port: int, timeout: float = 10.0) -> None:
        def probe() -> bool:
            self._check_alive()
            try:
                with socket.create_connection((host, port), timeout=0.3):
                    return True
            except OSError:
                return False

        wait_until(probe, timeout, 0.05, f"{self.name} to accept tcp:{host}:{port}")

    def wait_log(self, pattern: str, timeout: float = 10.0, stream: str = "err") -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in the process' stderr (or ``stream='out'``)."""
        path = self.stderr_path if stream == "err" else self.stdout_path
        rx = re.compile(pattern, re.M)
        found: list[re.Match[str]] = []

        def probe() -> bool:
            m = rx.search(path.read_text(errors="replace")) if path.exists() else None
            if m:
                found.append(m)
                return True
            self._check_alive()
            return False

        wait_until(probe, timeout, 0.05, f"{pattern!r} in {path.name}")
        return found[0]

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for p in (self.stdout_path, self.stderr_path):
            t = tail(p, lines)
            if t:
                parts.append(f"--- {p} ---\n{t}")
        return "\n".join(parts)

    # -- context manager --------------------------------------------------------------------------
    def __enter__(self) -> Proc:
        if self.popen is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        pid = self.popen.pid if self.popen else None
        return f"Proc({self.name!r}, pid={pid})"


def running() -> list[Proc]:
    """Processes started through :class:`Proc` and not yet reaped."""
    return list(_live.values())


def stop_all(timeout: float = 5.0) -> None:
    """Stop every process started through :class:`Proc` that is still around."""
    for p in running():
        p.stop(timeout)
