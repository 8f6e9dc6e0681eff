"""A timestamp-ordered playout buffer that turns RTP audio packets into contiguous int16 PCM.

What it does
------------
``JitterBuffer.push(packet, now)`` takes the audio packets of one call in arrival order;
``pop_ready(now)`` returns ``Frame`` objects in timestamp order whose samples, concatenated, form a
gap-free signal: reordered packets are put back in place, duplicates are dropped, packets that
arrive after their place was played out are dropped and counted as late, and lost packets are
replaced by a fill-in hook ``fill(n_samples) -> np.ndarray[int16]`` (zeros by default) in frames
marked ``lost``, so a consumer that must not take them for received audio (a fax modem) can tell.
``flush()`` returns everything still held, so the end of a call is never cut off.

Only the audio payload type goes in; RFC 4733 telephone-events are routed elsewhere by the caller.

How it works
------------
Packets are decoded on arrival and kept in a dict keyed by their *extended* timestamp (the 32-bit
RTP timestamp unwrapped around the playout position, so timestamp and sequence wraps do not
matter). A playout position ``play`` (the timestamp of the next sample to release) moves forward
only.

The buffer is depth-driven, slaved to the sender's clock rather than to ours: ``pop_ready``
releases everything that starts more than ``target_ms`` before the newest received sample, so up to
``target_ms`` of reordering is absorbed and clock drift between the two ends cannot make the
buffer grow or starve. A hole is filled only once audio *after* it has been released, so a packet
arriving late but inside the target window still lands in place. When nothing has arrived for
``target_ms`` (``now`` passed in), the held audio is released in full, so a paused sender does not
keep the last packets back. Until the first sample of a stream is released, a packet older than
the first one received moves the start back (the first packets may arrive out of order too).

A new SSRC, or a timestamp jump of more than ``max_ms`` forward or backward (a restarted stream),
resynchronises: the audio held for the old stream is queued for release first, then playout
restarts at the new packet without filling the jump.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import g711
from .rtp import RtpPacket, ts_diff

__all__ = ["Frame", "JitterBuffer", "zeros_fill"]

Pcm = npt.NDArray[np.int16]
FillFn = Callable[[int], Pcm]
DecodeFn = Callable[[bytes], Pcm]

_TS_MASK = 0xFFFFFFFF


def zeros_fill(n_samples: int) -> Pcm:
    """Default fill-in: digital silence."""
    return np.zeros(n_samples, dtype=np.int16)


@dataclass(frozen=True, slots=True)
class Frame:
    """A run of samples released by the buffer.

    ``timestamp`` is the RTP timestamp of the first sample; ``lost`` marks samples produced by the
    fill-in hook instead of received audio.
    """

    timestamp: int
    pcm: Pcm
    lost: bool = False


class JitterBuffer:
    """Reorders audio packets by timestamp and releases contiguous PCM (see module notes).

    Parameters
    ----------
    frame_samples : size of the fill-in frames for lost audio (160 = 20 ms at 8 kHz).
    decode : payload -> int16 PCM. Default: G.711 chosen by the static payload type (0 PCMU,
        8 PCMA); packets of other payload types are dropped.
    payload_type : if given, packets of any other payload type are dropped.
    fill : ``fill(n_samples) -> int16 array`` for lost audio, default zeros.
    target_ms : audio held back to absorb reordering and jitter.
    max_ms : largest timestamp jump still treated as a gap (filled); larger jumps resynchronise.
    rate : RTP clock rate.
    """

    def __init__(
        self,
        frame_samples: int = 160,
        *,
        decode: DecodeFn | None = None,
        payload_type: int | None = None,
        fill: FillFn | None = None,
        target_ms: int = 60,
        max_ms: int = 1000,
        rate: int = 8000,
    ) -> None:
        if frame_samples <= 0 or target_ms < 0 or max_ms <= target_ms:
            raise ValueError("need frame_samples > 0 and 0 <= target_ms < max_ms")
        self.frame_samples = frame_samples
        self.rate = rate
        self.payload_type = payload_type
        self._decode = decode
        self._fill = fill if fill is not None else zeros_fill
        self.target_samples = target_ms * rate // 1000
        self.max_samples = max_ms * rate // 1000
        self._target_s = target_ms / 1000.0
        self._ssrc: int | None = None
        self._play = 0  # extended timestamp of the next sample to release
        self._newest_end = 0  # extended timestamp just after the newest received sample
        self._packets: dict[int, Pcm] = {}
        self._recent: deque[int] = deque(maxlen=128)  # sequence numbers accepted, for duplicates
        self._ready: list[Frame] = []
        self._last_arrival: float | None = None
        self._started = False  # whether anything of the current stream has been released
        # counters
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.dropped = 0  # other payload types, undecodable or empty payloads
        self.resyncs = 0
        self.streams = 0  # streams started: the first packet, then each resynchronisation
        self.filled_samples = 0
        self.released_samples = 0

    # -- input -------------------------------------------------------------------------------

    def push(self, packet: RtpPacket, now: float | None = None) -> None:
        """Add one received packet (``now``: arrival time in seconds, optional)."""
        pcm = self._decode_packet(packet)
        if pcm is None or len(pcm) == 0:
            self.dropped += 1
            return
        self.push_audio(packet.ssrc, packet.sequence, packet.timestamp, pcm, now)

    def push_audio(
        self, ssrc: int, sequence: int, timestamp: int, pcm: Pcm, now: float | None = None
    ) -> None:
        """Add the decoded audio of one packet of the buffer's payload type, given by its header
        fields (the per-packet path of a caller that has decoded it already; no payload type check)."""
        if len(pcm) == 0:
            self.dropped += 1
            return
        if self._ssrc is None:
            self._start(ssrc, timestamp)
        elif ssrc != self._ssrc:
            self._resync(ssrc, timestamp)
        else:
            ext = self._extend(timestamp)
            if sequence in self._recent or ext in self._packets:
                self.duplicates += 1
                return
            if ext < self._play and not self._started and self._play - ext <= self.max_samples:
                self._play = ext  # nothing released yet: the stream starts earlier than first seen
            elif ext < self._play:
                if self._play - ext <= self.max_samples:
                    self.late += 1
                    return
                self._resync(ssrc, timestamp)  # jumped far back: the sender restarted its timestamps
            elif ext - max(self._newest_end, self._play) > self.max_samples:
                self._resync(ssrc, timestamp)
        ext = self._extend(timestamp)
        self._packets[ext] = pcm
        self._recent.append(sequence)
        end = ext + len(pcm)
        if end > self._newest_end:
            self._newest_end = end
        self.received += 1
        if now is not None:
            self._last_arrival = now

    def _decode_packet(self, packet: RtpPacket) -> Pcm | None:
        if self.payload_type is not None and packet.payload_type != self.payload_type:
            return None
        if self._decode is not None:
            return self._decode(packet.payload)
        codec = g711.codec_for_payload_type(packet.payload_type)
        return None if codec is None else g711.decode(codec, packet.payload)

    def _extend(self, timestamp: int) -> int:
        return self._play + ts_diff(timestamp, self._play & _TS_MASK)

    def _start(self, ssrc: int, timestamp: int) -> None:
        self.streams += 1
        self._ssrc = ssrc
        self._play = timestamp
        self._newest_end = timestamp
        self._started = False
        self._packets = {}
        self._recent.clear()

    def _resync(self, ssrc: int, timestamp: int) -> None:
        self._ready.extend(self._release(self._newest_end))
        self.resyncs += 1
        self._start(ssrc, timestamp)

    # -- output ------------------------------------------------------------------------------

    def pop_ready(self, now: float | None = None) -> list[Frame]:
        """Frames due for playout, in timestamp order (possibly none)."""
        out, self._ready = self._ready, []
        if self._ssrc is None:
            return out
        upto = self._newest_end - self.target_samples
        if now is not None and self._last_arrival is not None and now - self._last_arrival >= self._target_s:
            upto = self._newest_end  # the sender paused: release what is held
        if upto > self._play:
            out.extend(self._release(upto))
        return out

    def flush(self) -> list[Frame]:
        """Everything still held, in order, with holes filled (end of call)."""
        out, self._ready = self._ready, []
        if self._ssrc is not None:
            out.extend(self._release(self._newest_end))
        return out

    def _release(self, upto: int) -> list[Frame]:
        """Release whole packets starting before ``upto``; fill holes up to ``upto``."""
        out: list[Frame] = []
        for start in sorted(self._packets):
            if start >= upto:
                break
            pcm = self._packets.pop(start)
            if start > self._play:
                out.extend(self._filled(start - self._play))
            elif start < self._play:  # overlaps audio already released: keep the new part
                pcm = pcm[self._play - start :]
                if len(pcm) == 0:
                    continue
            out.append(Frame(self._play & _TS_MASK, pcm))
            self._started = True
            self._play += len(pcm)
            self.released_samples += len(pcm)
        if upto > self._play:
            out.extend(self._filled(upto - self._play))
        return out

    def _filled(self, n_samples: int) -> list[Frame]:
        out: list[Frame] = []
        while n_samples > 0:
            n = min(n_samples, self.frame_samples)
            pcm = np.asarray(self._fill(n), dtype=np.int16).reshape(-1)
            if len(pcm) != n:
                pcm = np.resize(pcm, n) if len(pcm) else np.zeros(n, dtype=np.int16)
            out.append(Frame(self._play & _TS_MASK, pcm, lost=True))
            self._started = True
            self._play += n
            self.filled_samples += n
            self.released_samples += n
            n_samples -= n
        return out

    # -- introspection -----------------------------------------------------------------------

    @property
    def depth_samples(self) -> int:
        """Samples held between the playout position and the newest received sample."""
        return max(0, self._newest_end - self._play) if self._ssrc is not None else 0

    @property
    def depth_ms(self) -> float:
        return 1000.0 * self.depth_samples / self.rate
