"""The UDPTL endpoint on loopback: datagrams to and from a driver, its timer, latching, close."""

from __future__ import annotations

import asyncio
import socket

from ums.fax_t38.service import UdptlEndpoint
from ums.media.service import PortPool


class EchoDriver:
    """Answers every datagram with ``b"re:" + data``; a deadline fires ``poll`` once."""

    def __init__(self, deadline: float | None = None) -> None:
        self.received: list[bytes] = []
        self.polls: list[float] = []
        self.deadline = deadline

    def datagram(self, data: bytes, now: float) -> list[bytes]:
        self.received.append(data)
        return [b"re:" + data]

    def poll(self, now: float) -> list[bytes]:
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self.polls.append(now)
            return [b"tick"]
        return []

    def next_deadline(self) -> float | None:
        return self.deadline


async def _recv(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), timeout)


def _peer() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def test_datagrams_timer_latching_and_close() -> None:
    async def main() -> None:
        pool = PortPool(41000, 41019)
        ep = UdptlEndpoint("127.0.0.1", port_pool=pool)
        port = await ep.open()
        assert port % 2 == 0 and 41000 <= port <= 41019
        assert len(pool) == pool.size - 1
        peer, stranger = _peer(), _peer()
        # the SDP names another port; the first datagram latches the real source
        ep.set_remote("127.0.0.1", 9)
        driver = EchoDriver(deadline=ep.now() + 0.1)
        ep.attach(driver, [b"hello"])  # nowhere useful yet: port 9
        peer.sendto(b"one", ("127.0.0.1", port))
        data, _ = await _recv(peer)
        assert data == b"re:one"
        # the timer fires poll at the deadline, and its datagram goes to the latched peer
        data, _ = await _recv(peer)
        assert data == b"tick" and len(driver.polls) == 1
        # datagrams from a different source are not ours
        stranger.sendto(b"spoof", ("127.0.0.1", port))
        peer.sendto(b"two", ("127.0.0.1", port))
        data, _ = await _recv(peer)
        assert data == b"re:two"
        assert driver.received == [b"one", b"two"] and ep.stats.foreign == 1
        # a send of the driver's own (a page stored later)
        ep.send([b"late"])
        data, _ = await _recv(peer)
        assert data == b"late"
        stats = await ep.close()
        assert stats.received == 2 and stats.sent >= 4
        assert len(pool) == pool.size
        peer.close()
        stranger.close()

    asyncio.run(main())


def test_a_signalled_new_address_wins_over_the_latched_one() -> None:
    async def main() -> None:
        ep = UdptlEndpoint("127.0.0.1", port_min=41200, port_max=41219)
        port = await ep.open()
        old, new = _peer(), _peer()
        ep.set_remote("127.0.0.1", old.getsockname()[1])
        driver = EchoDriver()
        ep.attach(driver)
        old.sendto(b"one", ("127.0.0.1", port))
        data, _ = await _recv(old)
        assert data == b"re:one" and ep.remote == old.getsockname()
        # the same address again (new attributes) keeps the latch
        ep.set_remote("127.0.0.1", old.getsockname()[1])
        assert ep.remote == old.getsockname()
        # a re-INVITE moves the stream: we send to the new address at once
        ep.set_remote("127.0.0.1", new.getsockname()[1])
        assert ep.remote == new.getsockname()
        ep.send([b"moved"])
        data, _ = await _recv(new)
        assert data == b"moved"
        # what the old source still sends is dropped; the new one is taken (and latched)
        old.sendto(b"stale", ("127.0.0.1", port))
        await asyncio.sleep(0.05)
        new.sendto(b"two", ("127.0.0.1", port))
        data, _ = await _recv(new)
        assert data == b"re:two"
        assert driver.received == [b"one", b"two"] and ep.stats.foreign == 1
        old.sendto(b"stale again", ("127.0.0.1", port))
        new.sendto(b"three", ("127.0.0.1", port))
        data, _ = await _recv(new)
        assert data == b"re:three" and ep.stats.foreign == 2
        await ep.close()
        old.close()
        new.close()

    asyncio.run(main())


def test_datagrams_before_a_driver_are_dropped() -> None:
    async def main() -> None:
        ep = UdptlEndpoint("127.0.0.1", port_min=41100, port_max=41119)
        port = await ep.open()
        peer = _peer()
        peer.sendto(b"early", ("127.0.0.1", port))
        await asyncio.sleep(0.05)
        assert ep.stats.foreign == 1 and ep.stats.received == 0
        await ep.close()
        peer.close()

    asyncio.run(main())
