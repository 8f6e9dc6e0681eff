"""asyncio shell around the sans-I/O :class:`~ums.sip.ua.UserAgent`: UDP and TCP sockets, timers.

What it does
------------
:class:`SipService` listens on the configured UDP and TCP addresses, feeds every
datagram or framed TCP message to the user agent with the loop's monotonic time,
sends what the user agent wants sent, schedules one timer for the user agent's
next deadline, and hands the user agent's events to the application callback.

How it works
------------
After anything that may have changed the user agent (a packet, a timer, an
application call such as ``answer``) :meth:`SipService.kick` drains outgoing
datagrams and events.  Events are dispatched outside the drain loop, so an
application handler may call the user agent again (and ``kick``) without
recursion trouble.  TCP connections are keyed by the peer address, the same
:class:`~ums.sip.ua.Addr` the user agent sees as the source; a message to a TCP
address we have no connection for opens one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import cast

from ums.config import Listen
from ums.log import kv
from ums.sip.events import Event
from ums.sip.message import SipParseError, StreamFramer
from ums.sip.ua import Addr, UserAgent

__all__ = ["SipService"]

log = logging.getLogger("ums.sip")

EventHandler = Callable[[Event], None]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: SipService) -> None:
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport does not subclass asyncio.DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.service._on_data(data, Addr("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug(kv("sip.udp_error", error=exc))


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, service: SipService) -> None:
        self.service = service
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Addr | None = None
        self.connected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Addr("tcp", str(host), int(port))
        self.service._tcp[self.peer] = self
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            log.warning(kv("sip.tcp_framing_error", source=f"{self.peer.host}:{self.peer.port}", reason=exc))
            self.transport.close()
            return
        for msg in messages:
            self.service._on_data(msg, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.service._tcp.get(self.peer) is self:
            del self.service._tcp[self.peer]
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed"))

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class SipService:
    """Owns the SIP sockets and drives one :class:`UserAgent`."""

    def __init__(self, ua: UserAgent, listen: Sequence[Listen], on_event: EventHandler) -> None:
        self.ua = ua
        self.listen = tuple(listen)
        self.on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._udp: dict[tuple[str, int], _UdpProtocol] = {}
        self._tcp: dict[Addr, _TcpProtocol] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._dispatching = False
        self._pending_connects: set[asyncio.Task[None]] = set()
        self._closed = False

    def now(self) -> float:
        return self._loop.time()

    async def start(self) -> None:
        for ls in self.listen:
            if ls.transport == "udp":
                _transport, proto = await self._loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(ls.host, ls.port)
                )
                self._udp[(ls.host, ls.port)] = proto
            else:
                server = await self._loop.create_server(lambda: _TcpProtocol(self), ls.host, ls.port)
                self._servers.append(server)
            log.info(kv("sip.listen", transport=ls.transport, host=ls.host, port=ls.port))

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for proto in self._udp.values():
            if proto.transport is not None:
                proto.transport.close()
        for conn in list(self._tcp.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        for task in list(self._pending_connects):
            task.cancel()

    # -- data in -------------------------------------------------------------------------------
    def _on_data(self, data: bytes, source: Addr) -> None:
        try:
            self.ua.receive(data, source, self.now())
        except Exception:  # the core promises not to raise; a bug there must not kill the server
            log.exception(kv("sip.internal_error", source=f"{source.host}:{source.port}"))
        self.kick()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.ua.advance(self.now())
        except Exception:
            log.exception(kv("sip.internal_error", where="advance"))
        self.kick()

    # -- data out, events, timer ----------------------------------------------------------------
    def kick(self) -> None:
        """Send what the user agent produced, dispatch its events, re-arm the timer."""
        if self._closed:
            return
        if self._dispatching:
            return  # the outer loop will come round again
        self._dispatching = True
        try:
            while True:
                out = self.ua.datagrams_to_send()
                for data, dest in out:
                    self._send(data, dest)
                events = self.ua.events()
                for ev in events:
                    try:
                        self.on_event(ev)
                    except Exception:
                        log.exception(kv("app.internal_error", sip_event=type(ev).__name__))
                if not out and not events:
                    break
        finally:
            self._dispatching = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.ua.next_deadline()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = None
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(max(deadline, self.now()), self._on_timer)

    def _send(self, data: bytes, dest: Addr) -> None:
        if dest.transport == "udp":
            proto = self._udp_for(dest)
            if proto is None or proto.transport is None:
                log.warning(kv("sip.send_failed", dest=f"{dest.host}:{dest.port}", reason="no UDP socket"))
                return
            proto.transport.sendto(data, (dest.host, dest.port))
            return
        conn = self._tcp.get(dest)
        if conn is not None:
            conn.send(data)
            return
        task = self._loop.create_task(self._connect_and_send(data, dest))
        self._pending_connects.add(task)
        task.add_done_callback(self._pending_connects.discard)

    def _udp_for(self, dest: Addr) -> _UdpProtocol | None:
        if not self._udp:
            return None
        # one socket per listen address; prefer one whose address family matches the destination
        want_v6 = ":" in dest.host
        for (host, _port), proto in self._udp.items():
            if (":" in host) == want_v6:
                return proto
        return next(iter(self._udp.values()))

    async def _connect_and_send(self, data: bytes, dest: Addr) -> None:
        try:
            _transport, proto = await asyncio.wait_for(
                self._loop.create_connection(lambda: _TcpProtocol(self), dest.host, dest.port), 5.0
            )
        except (OSError, TimeoutError) as exc:
            log.warning(kv("sip.connect_failed", dest=f"{dest.host}:{dest.port}", reason=exc))
            return
        # the connection is keyed by the address we dialled so later messages to it reuse it
        if proto.peer is not None and proto.peer != dest:
            self._tcp.pop(proto.peer, None)
            proto.peer = dest
        self._tcp[dest] = proto
        proto.send(data)
