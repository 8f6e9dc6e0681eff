"""RtpEndpoint: pacing schedule (fake clock), receive routing and latching, live loopback exchange."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import numpy as np
import numpy.typing as npt
import pytest

from ums.media import g711
from ums.media.dtmf import dtmf_packets
from ums.media.rtp import RtpPacket
from ums.media.service import MediaClock, PortPool, RtpEndpoint, RtpSettings, TxSchedule

PEER = ("192.0.2.10", 30000)


# -- schedule math (fake clock) ----------------------------------------------------------------


def test_schedule_does_not_drift_with_late_wakeups() -> None:
    start, interval = 1000.0, 0.02
    sched = TxSchedule(start, interval, max_late_ticks=3)
    rng = random.Random(99)
    now = start
    ran = 0
    while now < start + 600.0:  # ten minutes of 20 ms ticks
        run, skipped = sched.due(now)
        assert skipped == 0
        ran += run
        # the loop wakes up 0-15 ms after the requested time
        now = sched.next_time + rng.uniform(0.0, 0.015)
    assert ran == sched.tick == 30_000
    assert sched.next_time == pytest.approx(start + 30_000 * interval, abs=1e-9)


def test_schedule_catches_up_small_delays_and_skips_large_ones() -> None:
    sched = TxSchedule(0.0, 0.02, max_late_ticks=3)
    assert sched.due(-0.001) == (0, 0)
    assert sched.due(0.0) == (1, 0)
    assert sched.due(0.01) == (0, 0)
    assert sched.due(0.061) == (3, 0)  # ticks 1, 2, 3 due: sent back to back
    assert sched.next_time == pytest.approx(0.08)
    assert sched.due(0.301) == (1, 11)  # 12 ticks overdue: send the latest, skip 11
    assert sched.skipped == 11
    assert sched.next_time == pytest.approx(0.32)
    assert sched.next_time > 0.301


# -- receive path without sockets ----------------------------------------------------------------


def audio_packets(
    n: int, ssrc: int = 77, seq0: int = 10, ts0: int = 0
) -> tuple[list[bytes], npt.NDArray[np.int16]]:
    rng = np.random.default_rng(ssrc)
    pcm = (rng.standard_normal(160 * n) * 2000).astype(np.int16)
    payload = g711.encode("PCMA", pcm)
    pkts = [
        RtpPacket(8, seq0 + i, ts0 + 160 * i, ssrc, i == 0, payload[160 * i : 160 * (i + 1)]).serialize()
        for i in range(n)
    ]
    return pkts, g711.decode("PCMA", payload)


def test_receive_routes_audio_digits_and_ignores_rtcp_and_junk() -> None:
    audio: list[npt.NDArray[np.int16]] = []
    digits: list[str] = []
    clock = [0.0]
    ep = RtpEndpoint(
        RtpSettings(codec="PCMA"), on_audio=audio.append, on_digit=digits.append, clock=lambda: clock[0]
    )
    pkts, expected = audio_packets(10)
    events = [p.serialize() for p in dtmf_packets("4", ssrc=77, sequence=20, timestamp=1600)]
    rr = struct.pack("!BBHI", 0x81, 201, 7, 77) + bytes(24)
    for i, data in enumerate([*pkts[:5], rr, b"\x00junk", *events, *pkts[5:]]):
        clock[0] = 0.02 * i
        ep.receive_datagram(data, PEER)
    assert digits == ["4"]
    asyncio.run(ep.close())  # flushes the jitter buffer
    np.testing.assert_array_equal(np.concatenate(audio), expected)
    st = ep.stats
    assert (st.rtcp_in, st.malformed, st.digits_in, st.packets_in) == (1, 1, 1, 17)
    assert ep.remote == PEER  # latched


def test_symmetric_rtp_latches_to_first_source() -> None:
    ep = RtpEndpoint(RtpSettings(codec="PCMA"), clock=lambda: 0.0)
    ep.set_remote("198.51.100.1", 4000)  # what the SDP said
    assert ep.remote == ("198.51.100.1", 4000)
    pkts, _ = audio_packets(6)
    nat = ("203.0.113.5", 61000)
    ep.receive_datagram(pkts[0], nat)
    assert ep.remote == nat
    intruder, _ = audio_packets(1, ssrc=999)
    ep.receive_datagram(intruder[0], ("203.0.113.99", 5000))
    assert ep.remote == nat and ep.stats.foreign == 1
    ep.receive_datagram(pkts[1], ("203.0.113.5", 61002))  # same SSRC, new NAT binding
    assert ep.remote == ("203.0.113.5", 61002)
    unknown_pt = RtpPacket(18, 1, 0, 77, False, b"\x00" * 10).serialize()
    ep.receive_datagram(unknown_pt, nat)
    assert ep.stats.foreign == 2
    ep.set_remote("0.0.0.0", 4000)  # hold: but the latched address still wins
    assert ep.remote == ("203.0.113.5", 61002)


def test_move_remote_drops_the_latch_and_ignores_the_old_source() -> None:
    ep = RtpEndpoint(RtpSettings(codec="PCMA"), clock=lambda: 0.0)
    ep.set_remote("198.51.100.1", 4000)
    pkts, _ = audio_packets(8)
    old = ("203.0.113.5", 61000)
    ep.receive_datagram(pkts[0], old)
    assert ep.remote == old
    ep.move_remote("198.51.100.1", 4000)  # the same address: the latch stays
    assert ep.remote == old
    ep.move_remote("198.51.100.7", 5000)  # a re-INVITE moved the stream
    assert ep.remote == ("198.51.100.7", 5000)
    ep.receive_datagram(pkts[1], old)  # still in flight from the old source: not taken
    assert ep.remote == ("198.51.100.7", 5000) and ep.stats.foreign == 1
    new = ("203.0.113.7", 62000)
    moved, _ = audio_packets(2, ssrc=4242)
    ep.receive_datagram(moved[0], new)  # the new stream latches (a new SSRC is fine)
    assert ep.remote == new
    ep.receive_datagram(pkts[2], old)
    assert ep.remote == new and ep.stats.foreign == 2


# -- live loopback -------------------------------------------------------------------------------


def test_two_endpoints_exchange_one_second_of_audio() -> None:
    rng = np.random.default_rng(2024)
    t = np.arange(8000) / 8000
    sent = (6000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 1230 * t + 1)).astype(np.int16)
    sent = sent + (rng.standard_normal(8000) * 500).astype(np.int16)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pos = 0
        sent_all = loop.create_future()
        got_digit = loop.create_future()
        a_heard = loop.create_future()
        received: list[npt.NDArray[np.int16]] = []
        digits: list[str] = []

        def source(n: int) -> npt.NDArray[np.int16] | None:
            nonlocal pos
            if pos >= len(sent):
                if not sent_all.done():
                    sent_all.set_result(None)
                return None
            block: npt.NDArray[np.int16] = sent[pos : pos + n]
            pos += n
            return block

        def on_digit(d: str) -> None:
            digits.append(d)
            if not got_digit.done():
                got_digit.set_result(None)

        def a_audio(pcm: npt.NDArray[np.int16]) -> None:
            if not a_heard.done():
                a_heard.set_result(None)

        settings = RtpSettings(codec="PCMU", local_host="127.0.0.1", port_min=41000, port_max=41999)
        a = RtpEndpoint(settings, source=source, on_audio=a_audio, rng=random.Random(1))
        b = RtpEndpoint(settings, on_audio=received.append, on_digit=on_digit, rng=random.Random(2))
        port_a = await a.open()
        port_b = await b.open()
        assert port_a % 2 == 0 and port_b % 2 == 0 and port_a != port_b
        a.set_remote("127.0.0.1", port_b)  # b has no SDP address: it latches onto a
        await asyncio.wait_for(sent_all, 10)
        a.send_digit("7")
        await asyncio.wait_for(got_digit, 5)
        await asyncio.wait_for(a_heard, 5)  # b answered to the latched address
        assert b.remote == ("127.0.0.1", port_a)
        sa = await a.close()
        for _ in range(20):  # let b read what is still queued on its socket
            await asyncio.sleep(0)
        sb = await b.close()

        assert digits == ["7"]
        assert sa.packets_out >= 51 and sa.digits_out == 1
        assert sb.packets_in == sa.packets_out
        assert sb.lost == 0 and sb.late == 0 and sb.duplicates == 0
        assert sa.packets_in > 0
        rx = np.concatenate(received)
        assert len(rx) >= len(sent)
        ref = sent.astype(float)
        corr = np.corrcoef(rx[: len(sent)].astype(float), ref)[0, 1]
        assert corr >= 0.99
        np.testing.assert_array_equal(rx[: len(sent)], g711.decode("PCMU", g711.encode("PCMU", sent)))

    asyncio.run(main())


def test_inband_digits_without_telephone_event() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        digits: list[str] = []

        def on_digit(d: str) -> None:
            digits.append(d)
            if len(digits) == 2 and not got.done():
                got.set_result(None)

        settings = RtpSettings(
            codec="PCMA", telephone_event_pt=None, local_host="127.0.0.1", port_min=42000, port_max=42999
        )
        a = RtpEndpoint(settings, rng=random.Random(3))
        b = RtpEndpoint(settings, on_digit=on_digit, rng=random.Random(4))
        await a.open()
        port_b = await b.open()
        a.set_remote("127.0.0.1", port_b)
        a.send_digit("3")
        a.send_digit("#")
        await asyncio.wait_for(got, 5)
        await a.close()
        await b.close()
        assert digits == ["3", "#"]

    asyncio.run(main())


def test_bind_skips_ports_in_use() -> None:
    async def main() -> None:
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            blocker.bind(("127.0.0.1", 43000))
            ep = RtpEndpoint(
                RtpSettings(local_host="127.0.0.1", port_min=43000, port_max=43003), rng=random.Random(0)
            )
            assert await ep.open() == 43002
            other = RtpEndpoint(RtpSettings(local_host="127.0.0.1", port_min=43000, port_max=43003))
            with pytest.raises(OSError):
                await other.open()
            await ep.close()
        finally:
            blocker.close()

    asyncio.run(main())


def test_port_pool_hands_out_each_even_port_once_and_takes_them_back() -> None:
    pool = PortPool(41001, 41020, random.Random(3))
    got = [pool.acquire() for _ in range(pool.size)]
    assert sorted(p for p in got if p is not None) == list(range(41002, 41021, 2))
    assert pool.acquire() is None
    pool.release(41010)
    assert pool.acquire() == 41010
    with pytest.raises(ValueError):
        PortPool(41001, 41001)


def test_shared_clock_and_pool_carry_audio_and_return_ports() -> None:
    sent = (8000 * np.sin(2 * np.pi * 700 * np.arange(4000) / 8000)).astype(np.int16)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = MediaClock(interval=0.01)
        pool = PortPool(42000, 42009, random.Random(5))
        pos = 0
        done = loop.create_future()
        received: list[npt.NDArray[np.int16]] = []

        def source(n: int) -> npt.NDArray[np.int16] | None:
            nonlocal pos
            if pos >= len(sent):
                if not done.done():
                    done.set_result(None)
                return None
            block: npt.NDArray[np.int16] = sent[pos : pos + n]
            pos += n
            return block

        settings = RtpSettings(codec="PCMA", local_host="127.0.0.1", port_min=42000, port_max=42009)
        a = RtpEndpoint(settings, source=source, media_clock=clock, port_pool=pool)
        b = RtpEndpoint(settings, on_audio=received.append, media_clock=clock, port_pool=pool)
        port_a, port_b = await a.open(), await b.open()
        assert len(clock) == 2 and len(pool) == pool.size - 2
        a.set_remote("127.0.0.1", port_b)
        await asyncio.wait_for(done, 10)
        sa = await a.close()
        for _ in range(20):
            await asyncio.sleep(0)
        sb = await b.close()
        await clock.close()
        assert len(clock) == 0 and len(pool) == pool.size
        assert {port_a, port_b} <= set(range(42000, 42010, 2))
        assert sb.packets_in == sa.packets_out and sb.lost == 0
        rx = np.concatenate(received)[: len(sent)]
        np.testing.assert_array_equal(rx, g711.decode("PCMA", g711.encode("PCMA", sent)))

    asyncio.run(main())


def test_pool_skips_a_port_held_by_someone_else() -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
            blocker.bind(("127.0.0.1", 42100))
            pool = PortPool(42100, 42103, random.Random(0))
            while pool.acquire() is not None:
                pass
            pool.release(42100)  # the taken port is first in line
            pool.release(42102)
            settings = RtpSettings(local_host="127.0.0.1", port_min=42100, port_max=42103)
            ep = RtpEndpoint(settings, port_pool=pool)
            assert await ep.open() == 42102
            assert pool.acquire() == 42100  # went to the back, still available later
            await ep.close()

    asyncio.run(main())


# -- delivery in blocks, digits in order, the tail at close --------------------------------------


def test_audio_is_delivered_in_blocks_on_the_ticks_and_before_each_digit() -> None:
    got: list[tuple[str, int]] = []
    clock = [0.0]
    ep = RtpEndpoint(
        RtpSettings(codec="PCMA", deliver_ms=100),
        on_audio=lambda pcm: got.append(("audio", len(pcm))),
        on_digit=lambda d: got.append(("digit", ord(d))),
        clock=lambda: clock[0],
    )
    ep._schedule = TxSchedule(0.0, 0.02, 3)  # ticks without a socket (nothing is sent: no remote)
    pkts, expected = audio_packets(40)
    for i in range(30):
        clock[0] = 0.02 * i
        ep.receive_datagram(pkts[i], PEER)
        ep.on_clock(clock[0])
    # one block per 100 ms (5 ticks), each what the jitter buffer had released by then
    blocks = [n for kind, n in got if kind == "audio"]
    assert len(blocks) == 6 and set(blocks[1:]) == {800}
    events = [p.serialize() for p in dtmf_packets("5", ssrc=77, sequence=40, timestamp=30 * 160)]
    for i, data in enumerate(events):
        clock[0] = 0.6 + 0.001 * i
        ep.receive_datagram(data, PEER)
    # the digit came after the audio received before it (the jitter buffer's depth aside)
    assert got[-1] == ("digit", ord("5")) and got[-2][0] == "audio"
    held = sum(n for kind, n in got if kind == "audio")
    assert held == 30 * 160 - ep.settings.jitter_target_ms * 8
    for i in range(30, 40):
        ep.receive_datagram(pkts[i], PEER)
    asyncio.run(ep.close())
    assert sum(n for kind, n in got if kind == "audio") == len(expected)
    assert ep.stream_starts == 1


def test_lost_packets_are_reported_to_on_audio_lost_instead_of_on_audio() -> None:
    plain: list[int] = []
    got: list[tuple[npt.NDArray[np.int16], list[tuple[int, int]]]] = []
    clock = [0.0]
    ep = RtpEndpoint(
        RtpSettings(codec="PCMA", deliver_ms=100),
        on_audio=lambda pcm: plain.append(len(pcm)),
        clock=lambda: clock[0],
    )
    ep.on_audio_lost = lambda pcm, lost: got.append((pcm, lost))
    ep._schedule = TxSchedule(0.0, 0.02, 3)  # ticks without a socket
    pkts, expected = audio_packets(30)
    missing = {7, 12, 13}
    for i in range(30):
        clock[0] = 0.02 * i
        if i not in missing:
            ep.receive_datagram(pkts[i], PEER)
        ep.on_clock(clock[0])
    asyncio.run(ep.close())
    assert not plain  # on_audio_lost takes its place
    pcm = np.concatenate([p for p, _ in got])
    assert len(pcm) == len(expected)
    lost_at: list[tuple[int, int]] = []
    offset = 0
    for block, lost in got:
        lost_at += [(offset + start, n) for start, n in lost]
        offset += len(block)
    # one 20 ms frame per missing packet, where it was missing; zeros in the block
    assert lost_at == [(160 * i, 160) for i in sorted(missing)]
    for i in range(30):
        frame = pcm[160 * i : 160 * (i + 1)]
        if i in missing:
            assert not np.any(frame)
        else:
            np.testing.assert_array_equal(frame, expected[160 * i : 160 * (i + 1)])
    assert ep.stats.filled_ms == 60.0


def test_close_reads_what_the_socket_still_holds() -> None:
    async def main() -> None:
        audio: list[npt.NDArray[np.int16]] = []
        ep = RtpEndpoint(
            RtpSettings(codec="PCMA", local_host="127.0.0.1", port_min=31000, port_max=31999),
            on_audio=audio.append,
        )
        port = await ep.open()
        pkts, expected = audio_packets(25)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for data in pkts:
                tx.sendto(data, ("127.0.0.1", port))
            # closed before the event loop read them (it may read one or two while close() waits
            # for the send task): close() still gets them all
            stats = await ep.close()
        assert stats.backlog >= 20 and stats.packets_in == 25
        np.testing.assert_array_equal(np.concatenate(audio), expected)

    asyncio.run(main())
