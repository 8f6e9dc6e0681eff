"""The UDPTL I/O shell: one UDP socket per T.38 call leg, datagrams in and out, one timer.

What it does
------------
:class:`UdptlEndpoint` binds a UDP port (from a port pool or a range), hands every received
datagram to a sans-I/O *driver* (:class:`UdptlDriver`: ``datagram(data, now)``, ``poll(now)``,
``next_deadline()``, each returning the datagrams to send, e.g. a
:class:`~ums.fax_t38.terminal.UdptlLink` or the call's fax leg) and sends what comes back to the
remote address from the SDP.  It arms one event-loop timer for ``next_deadline()`` and re-arms it
after every step, so the driver's packet pacing and T.30 timers run without a polling loop.
:meth:`UdptlEndpoint.send` sends datagrams the driver produced on its own (after a page was
stored) and re-arms the timer.

Like the RTP endpoint it latches the remote address to the source of the first datagram
(symmetric UDP, for peers behind NAT).  A signalled change wins over the latch: when
:meth:`UdptlEndpoint.set_remote` names a new address (a re-INVITE moved the stream), we send there
at once, drop what still comes from the old source and latch again on the first datagram from
anywhere else.  ``close()`` cancels the timer, closes the socket and gives
the port back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ums.log import kv

__all__ = ["PortSource", "UdptlDriver", "UdptlEndpoint", "UdptlStats"]

log = logging.getLogger("ums.fax_t38")

Address = tuple[str, int]


class UdptlDriver(Protocol):
    def datagram(self, data: bytes, now: float) -> list[bytes]: ...

    def poll(self, now: float) -> list[bytes]: ...

    def next_deadline(self) -> float | None: ...


class PortSource(Protocol):
    """A pool of local ports (``ums.media.service.PortPool`` fits)."""

    @property
    def size(self) -> int: ...

    def acquire(self) -> int | None: ...

    def release(self, port: int) -> None: ...


@dataclass
class UdptlStats:
    received: int = 0
    sent: int = 0
    send_errors: int = 0
    foreign: int = 0

    def log_fields(self) -> dict[str, int | float]:
        return {
            "udptl_rx": self.received,
            "udptl_tx": self.sent,
            "udptl_tx_errors": self.send_errors,
            "udptl_foreign": self.foreign,
        }


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: UdptlEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._endpoint.receive_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug(kv("udptl.socket_error", error=exc))


class UdptlEndpoint:
    """One T.38 stream: ``open()``, ``set_remote()`` from the SDP, ``attach(driver)``, ``close()``.

    Datagrams that arrive before a driver is attached are dropped (counted as ``foreign``).
    """

    def __init__(
        self,
        local_host: str = "0.0.0.0",
        *,
        port_pool: PortSource | None = None,
        port_min: int = 20000,
        port_max: int = 29999,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.local_host = local_host
        self.port_pool = port_pool
        self.port_min = port_min
        self.port_max = port_max
        self.local_port = 0
        self.stats = UdptlStats()
        self.driver: UdptlDriver | None = None
        self._clock = clock
        self._rng = rng or random.Random()
        self._sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._sdp_remote: Address | None = None
        self._latched: Address | None = None
        self._abandoned: Address | None = None  # the source latched before a signalled move
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # -- socket ---------------------------------------------------------------------------------
    async def open(self) -> int:
        """Bind a port; returns it."""
        if self.port_pool is not None:
            for _ in range(self.port_pool.size):
                port = self.port_pool.acquire()
                if port is None:
                    break
                if await self._bind(port):
                    return port
                self.port_pool.release(port)
        else:
            first = self.port_min + (self.port_min & 1)
            evens = list(range(first, self.port_max + 1, 2))
            offset = self._rng.randrange(len(evens)) if evens else 0
            for i in range(len(evens)):
                if await self._bind(evens[(offset + i) % len(evens)]):
                    return self.local_port
        raise OSError(errno.EADDRINUSE, f"no free UDPTL port in {self.port_min}-{self.port_max}")

    async def _bind(self, port: int) -> bool:
        family = socket.AF_INET6 if ":" in self.local_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.local_host, port))
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            return False
        try:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Protocol(self), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._transport = transport
        self.local_port = port
        return True

    def set_remote(self, host: str, port: int) -> None:
        """Where to send (SDP ``c=`` and ``m=image``); port 0 or 0.0.0.0: nowhere.

        A new address after an earlier one (a re-INVITE moved the stream) drops the latched source:
        we send to the new address, ignore the old source and latch on the next datagram from
        elsewhere.  The same address again, or nowhere, keeps the latch."""
        new = None if port == 0 or host in ("0.0.0.0", "::", "") else (host, port)
        if new is not None and self._sdp_remote is not None and new != self._sdp_remote:
            if self._latched is not None and self._latched != new:
                self._abandoned = self._latched
                log.info(kv("udptl.moved", port=self.local_port, remote=f"{new[0]}:{new[1]}"))
            self._latched = None
        self._sdp_remote = new

    @property
    def remote(self) -> Address | None:
        return self._latched or self._sdp_remote

    # -- driver ---------------------------------------------------------------------------------
    def attach(self, driver: UdptlDriver, initial: Sequence[bytes] = ()) -> None:
        """Start driving ``driver``; ``initial`` are datagrams it already produced."""
        self.driver = driver
        self.send(list(initial))

    def send(self, datagrams: list[bytes]) -> None:
        """Send datagrams now and re-arm the timer."""
        dest = self.remote
        if self._closed:
            return
        if dest is not None and self._sock is not None:
            for d in datagrams:
                try:
                    self._sock.sendto(d, dest)
                    self.stats.sent += 1
                except OSError as exc:
                    self.stats.send_errors += 1
                    log.debug(kv("udptl.send_failed", error=exc))
        self._arm()

    def receive_datagram(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        if self.driver is None:
            self.stats.foreign += 1
            return
        if self._latched is None and addr != self._abandoned:
            self._latched = addr
        elif addr != self._latched:
            self.stats.foreign += 1
            return
        self.stats.received += 1
        self.send(self.driver.datagram(data, self.now()))

    def _arm(self) -> None:
        if self.driver is None or self._closed:
            return
        deadline = self.driver.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - self.now())
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.driver is None or self._closed:
            return
        self.send(self.driver.poll(self.now()))

    async def close(self) -> UdptlStats:
        """Stop the timer, close the socket, give the port back."""
        if not self._closed:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._transport is not None:
                self._transport.close()
            if self.port_pool is not None and self.local_port:
                self.port_pool.release(self.local_port)
            log.debug(kv("udptl.closed", port=self.local_port, **self.stats.log_fields()))
        return self.stats
