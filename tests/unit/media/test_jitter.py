"""JitterBuffer: ordering, duplicates, loss fill-in, late packets, wraps, resync, flush."""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from ums.media import g711
from ums.media.jitter import Frame, JitterBuffer
from ums.media.rtp import RtpPacket

N = 160  # 20 ms at 8 kHz


def make_stream(
    n_packets: int,
    *,
    seq0: int = 1000,
    ts0: int = 50_000,
    ssrc: int = 0x1234,
    seed: int = 1,
    codec: str = "PCMA",
) -> tuple[list[RtpPacket], npt.NDArray[np.int16]]:
    """Packets carrying a random signal, and the signal as the receiver should decode it."""
    rng = np.random.default_rng(seed)
    pcm = (rng.standard_normal(n_packets * N) * 3000).astype(np.int16)
    payload = g711.encode(codec, pcm)
    decoded = g711.decode(codec, payload)
    pt = g711.payload_type_for(codec)
    packets = [
        RtpPacket(
            pt, (seq0 + i) & 0xFFFF, (ts0 + i * N) & 0xFFFFFFFF, ssrc, i == 0, payload[i * N : (i + 1) * N]
        )
        for i in range(n_packets)
    ]
    return packets, decoded


def run(jb: JitterBuffer, packets: list[RtpPacket]) -> list[Frame]:
    out: list[Frame] = []
    for i, p in enumerate(packets):
        jb.push(p, now=0.02 * i)
        out += jb.pop_ready(now=0.02 * i)
    return out + jb.flush()


def pcm_of(frames: list[Frame]) -> npt.NDArray[np.int16]:
    return np.concatenate([f.pcm for f in frames]) if frames else np.zeros(0, dtype=np.int16)


def test_in_order_stream_comes_out_unchanged() -> None:
    packets, decoded = make_stream(50)
    frames = run(JitterBuffer(), packets)
    np.testing.assert_array_equal(pcm_of(frames), decoded)
    assert not any(f.lost for f in frames)
    assert frames[0].timestamp == 50_000


def test_holds_back_only_the_target_depth() -> None:
    packets, _ = make_stream(20)
    jb = JitterBuffer(target_ms=60)
    released = 0
    for p in packets:
        jb.push(p)
        released += sum(len(f.pcm) for f in jb.pop_ready())
    assert 20 * N - released <= 60 * 8 + N
    assert jb.depth_samples == 20 * N - released


def test_lossless_reordered_stream_equals_input() -> None:
    packets, decoded = make_stream(300, seed=2)
    rng = random.Random(3)
    shuffled = list(packets)
    for start in range(0, len(shuffled) - 3, 3):  # displace packets by up to 2 places (40 ms)
        window = shuffled[start : start + 3]
        rng.shuffle(window)
        shuffled[start : start + 3] = window
    jb = JitterBuffer(target_ms=60)
    frames = run(jb, shuffled)
    np.testing.assert_array_equal(pcm_of(frames), decoded)
    assert jb.late == 0 and jb.filled_samples == 0


def test_duplicates_are_dropped() -> None:
    packets, decoded = make_stream(30)
    doubled = [p for p in packets for _ in range(2)]
    jb = JitterBuffer()
    np.testing.assert_array_equal(pcm_of(run(jb, doubled)), decoded)
    assert jb.duplicates == 30


def test_loss_is_filled_through_the_hook() -> None:
    packets, decoded = make_stream(40)
    lost = {5, 6, 20}
    calls: list[int] = []

    def fill(n: int) -> npt.NDArray[np.int16]:
        calls.append(n)
        return np.full(n, 7, dtype=np.int16)

    jb = JitterBuffer(fill=fill)
    frames = run(jb, [p for i, p in enumerate(packets) if i not in lost])
    out = pcm_of(frames)
    assert len(out) == len(decoded)
    expected = decoded.copy()
    for i in lost:
        expected[i * N : (i + 1) * N] = 7
    np.testing.assert_array_equal(out, expected)
    assert calls == [N, N, N]
    assert [f.lost for f in frames].count(True) == 3
    assert jb.filled_samples == 3 * N


def test_default_fill_is_silence() -> None:
    packets, decoded = make_stream(10)
    out = pcm_of(run(JitterBuffer(), packets[:4] + packets[5:]))
    assert not out[4 * N : 5 * N].any()
    np.testing.assert_array_equal(out[5 * N :], decoded[5 * N :])


def test_late_packets_are_dropped_and_counted() -> None:
    packets, _ = make_stream(30)
    order = packets[:3] + packets[4:20] + [packets[3]] + packets[20:]  # 3 arrives 320 ms late
    jb = JitterBuffer(target_ms=60)
    frames = run(jb, order)
    assert jb.late == 1
    assert len(pcm_of(frames)) == 30 * N
    assert [f.lost for f in frames].count(True) == 1


def test_sequence_and_timestamp_wrap() -> None:
    packets, decoded = make_stream(40, seq0=65520, ts0=0xFFFFFFFF - 10 * N + 1)
    rng = random.Random(5)
    order = list(packets)
    for i in range(0, 38, 2):
        if rng.random() < 0.5:
            order[i], order[i + 1] = order[i + 1], order[i]
    frames = run(JitterBuffer(), order)
    np.testing.assert_array_equal(pcm_of(frames), decoded)
    assert frames[-1].timestamp == (0xFFFFFFFF - 10 * N + 1 + 39 * N) & 0xFFFFFFFF


def test_ssrc_change_resyncs_without_losing_the_old_tail() -> None:
    a, pcm_a = make_stream(10, ssrc=1, seed=1)
    b, pcm_b = make_stream(10, ssrc=2, seed=2, ts0=9_999_999, seq0=7)
    jb = JitterBuffer()
    frames = run(jb, a + b)
    np.testing.assert_array_equal(pcm_of(frames), np.concatenate([pcm_a, pcm_b]))
    assert jb.resyncs == 1 and jb.filled_samples == 0


def test_large_timestamp_jump_resyncs_small_gap_is_filled() -> None:
    a, pcm_a = make_stream(10, ts0=0)
    near, pcm_near = make_stream(5, ts0=10 * N + 400, seq0=1010, seed=3)  # 50 ms gap: filled
    far, pcm_far = make_stream(5, ts0=10 * N + 400 + 5 * N + 80_000, seq0=1015, seed=4)  # 10 s: resync
    jb = JitterBuffer(max_ms=1000)
    out = pcm_of(run(jb, a + near + far))
    expected = np.concatenate([pcm_a, np.zeros(400, dtype=np.int16), pcm_near, pcm_far])
    np.testing.assert_array_equal(out, expected)
    assert jb.resyncs == 1 and jb.filled_samples == 400


def test_flush_delivers_the_tail_and_pause_releases_held_audio() -> None:
    packets, decoded = make_stream(12)
    jb = JitterBuffer(target_ms=60)
    got: list[Frame] = []
    for i, p in enumerate(packets):
        jb.push(p, now=0.02 * i)
        got += jb.pop_ready(now=0.02 * i)
    assert len(pcm_of(got)) < len(decoded)
    # nothing arrives for longer than the target: the held audio comes out without a flush
    got += jb.pop_ready(now=0.02 * 11 + 0.061)
    np.testing.assert_array_equal(pcm_of(got), decoded)
    assert jb.flush() == []
    # and flush alone also delivers everything
    jb2 = JitterBuffer()
    for p in packets:
        jb2.push(p)
    early = jb2.pop_ready()
    np.testing.assert_array_equal(pcm_of(early + jb2.flush()), decoded)


def test_other_payload_types_are_dropped() -> None:
    packets, decoded = make_stream(5)
    event = RtpPacket(101, 2000, 50_000 + 160, 0x1234, False, b"\x01\x0a\x00\xa0")
    jb = JitterBuffer(payload_type=8)
    out = pcm_of(run(jb, [*packets[:2], event, *packets[2:]]))
    np.testing.assert_array_equal(out, decoded)
    assert jb.dropped == 1
    with pytest.raises(ValueError):
        JitterBuffer(target_ms=100, max_ms=50)


def test_variable_packet_sizes_30ms() -> None:
    rng = np.random.default_rng(9)
    pcm = (rng.standard_normal(240 * 20) * 2000).astype(np.int16)
    payload = g711.encode("PCMU", pcm)
    packets = [RtpPacket(0, i, 240 * i, 5, False, payload[240 * i : 240 * (i + 1)]) for i in range(20)]
    packets[4], packets[5] = packets[5], packets[4]
    out = pcm_of(run(JitterBuffer(), packets))
    np.testing.assert_array_equal(out, g711.decode("PCMU", payload))


def test_push_audio_equals_push_and_counts_stream_starts() -> None:
    a, pcm_a = make_stream(12, ssrc=1, seed=5)
    b, pcm_b = make_stream(6, ssrc=2, seed=6, ts0=123, seq0=9)
    order = [*a[:4], a[5], a[4], *a[6:], *b]
    by_packet, by_fields = JitterBuffer(), JitterBuffer()
    decode = g711.decoder("PCMA")
    out_p: list[Frame] = []
    out_f: list[Frame] = []
    for i, p in enumerate(order):
        by_packet.push(p, now=0.02 * i)
        by_fields.push_audio(p.ssrc, p.sequence, p.timestamp, decode(p.payload), now=0.02 * i)
        out_p += by_packet.pop_ready(0.02 * i)
        out_f += by_fields.pop_ready(0.02 * i)
    out_p += by_packet.flush()
    out_f += by_fields.flush()
    np.testing.assert_array_equal(pcm_of(out_f), np.concatenate([pcm_a, pcm_b]))
    np.testing.assert_array_equal(pcm_of(out_f), pcm_of(out_p))
    assert [f.timestamp for f in out_f] == [f.timestamp for f in out_p]
    assert by_fields.streams == by_packet.streams == 2 and by_fields.resyncs == 1
