"""A UDP RTP receiver that keeps what it gets, for checking what a peer sent.

What it does
------------
:class:`RtpSink` binds a loopback port, collects RTP packets on a thread until
stopped, and decodes them: :meth:`RtpSink.audio` (G.711 by payload type) and
:meth:`RtpSink.digits` (RFC 4733).

How it works
------------
A blocking socket with a short timeout in a daemon thread; packets are parsed
with :class:`tests.peers.pcap.RtpPacket` and decoded with the test's own
G.711 tables.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import numpy as np

from tests.peers.pcap import STATIC_PT, RtpPacket, decode_stream, event_digits, parse_events

__all__ = ["RtpSink"]


class RtpSink:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.packets: list[RtpPacket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtp-sink-{port}", daemon=True)

    def start(self) -> RtpSink:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            p = RtpPacket.parse(data, time.monotonic())
            if p is not None:
                self.packets.append(p)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def __enter__(self) -> RtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def counts(self) -> dict[int, int]:
        return dict(Counter(p.payload_type for p in self.packets))

    def audio(self, payload_type: int | None = None) -> np.ndarray:
        """Decoded audio of ``payload_type`` (default: the most frequent G.711 type received)."""
        counts = self.counts()
        if payload_type is None:
            g711 = [pt for pt in counts if pt in STATIC_PT]
            if not g711:
                return np.zeros(0, dtype=np.int16)
            payload_type = max(g711, key=lambda pt: counts[pt])
        chosen = [p for p in self.packets if p.payload_type == payload_type]
        return decode_stream(chosen, STATIC_PT[payload_type])

    def digits(self, payload_type: int = 101) -> str:
        return event_digits(parse_events([p for p in self.packets if p.payload_type == payload_type]))
