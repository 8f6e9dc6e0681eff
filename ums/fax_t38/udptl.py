"""UDPTL (T.38 Annex A ``UDPTLPacket``): sequence numbers and error recovery.

What it does
------------
:class:`UdptlEncoder` wraps each IFP packet in a datagram with the next sequence number and the
chosen error recovery: copies of the previous IFP packets (``secondary-ifp-packets``, the
"redundancy" scheme) or parity FEC (``fec-info``), or nothing.  :class:`UdptlDecoder` takes
datagrams in any order, with losses and duplicates, and hands back the IFP packets in sequence
order, rebuilding lost ones from either kind of recovery data (peers may mix both).  Malformed
datagrams raise :class:`UdptlError` (a ``ValueError``) and leave the decoder unchanged.

How it works
------------
The datagram is ALIGNED PER (X.691)::

    UDPTLPacket ::= SEQUENCE {
        seq-number          INTEGER (0..65535),               -- 2 octets
        primary-ifp-packet  IFPPacket (open type),            -- length determinant + octets
        error-recovery      CHOICE {                          -- 1 bit, padded to an octet
            secondary-ifp-packets  SEQUENCE OF open type,     -- count, then packets
            fec-info SEQUENCE {
                fec-npackets INTEGER,                         -- unconstrained: length + octets
                fec-data     SEQUENCE OF OCTET STRING } } }   -- count, then parity blocks

Secondary packets are listed newest first: entry ``i`` of datagram ``n`` is IFP ``n - 1 - i``.
Parity FEC: datagram ``n`` with ``fec-npackets = S`` and ``E`` parity blocks carries, in block
``m`` (0 <= m < E), the XOR of the ``S`` IFP packets ``n + m - E*j`` (j = 1..S), each padded
with zeros to the longest.  The ``E`` blocks interleave, so together they cover the ``S*E``
packets before ``n``; a block repairs one missing packet of its group.  A repaired packet has
the length of the longest packet of its group (trailing zero octets, which
:func:`ums.fax_t38.ifp.decode_ifp` ignores).  This is the layout SpanDSP and Asterisk use.

Sequence numbers wrap from 65535 to 0; inside the decoder they are extended to unbounded
integers.  A datagram more than :data:`MAX_SEQUENCE_JUMP` away from the expected number means
the far end restarted its numbering: the decoder starts again from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

__all__ = [
    "MAX_SEQUENCE_JUMP",
    "FecInfo",
    "ReceivedIfp",
    "Recovery",
    "UdptlDecoder",
    "UdptlEncoder",
    "UdptlError",
    "UdptlPacket",
    "build_udptl",
    "parse_udptl",
]

#: a jump of more than this many sequence numbers (either way) is a restart of the numbering
MAX_SEQUENCE_JUMP = 2000
#: a datagram with more recovery entries than this is not from a sane peer
MAX_ENTRIES = 32
#: largest ``fec-npackets`` accepted
MAX_FEC_SPAN = 64
#: a first datagram numbered at most this is taken as the start of the stream (seq 0)
_START_WINDOW = 16
_MAX_OPEN_TYPE = 16383  # largest length without X.691 §10.9 fragmentation


class UdptlError(ValueError):
    """A datagram that is not a well-formed UDPTL packet."""


@dataclass(frozen=True)
class FecInfo:
    """``fec-info``: ``span`` (``fec-npackets``) and the parity blocks."""

    span: int
    data: tuple[bytes, ...]


@dataclass(frozen=True)
class UdptlPacket:
    """One UDPTL datagram; ``fec`` set means parity FEC, else ``secondary`` (newest first)."""

    seq: int
    primary: bytes
    secondary: tuple[bytes, ...] = ()
    fec: FecInfo | None = None


# ------------------------------------------------------------------------------- wire format
def _put_length(out: bytearray, n: int) -> None:
    """Length determinant, X.691 §10.9 (no fragmentation)."""
    if n < 0x80:
        out.append(n)
    elif n <= _MAX_OPEN_TYPE:
        out += (0x8000 | n).to_bytes(2, "big")
    else:
        raise UdptlError(f"{n} octets need fragmentation")


def _put_octets(out: bytearray, data: bytes) -> None:
    if not data:
        raise UdptlError("empty packet")
    _put_length(out, len(data))
    out += data


def build_udptl(packet: UdptlPacket) -> bytes:
    """Encode ``packet``; raises :class:`UdptlError` for values the format cannot carry."""
    if not 0 <= packet.seq <= 0xFFFF:
        raise UdptlError(f"sequence number {packet.seq} out of range")
    out = bytearray(packet.seq.to_bytes(2, "big"))
    _put_octets(out, packet.primary)
    if packet.fec is None:
        out.append(0x00)  # secondary-ifp-packets, padding
        _put_length(out, len(packet.secondary))
        for item in packet.secondary:
            _put_octets(out, item)
    else:
        out.append(0x80)  # fec-info, padding
        span = packet.fec.span
        if span < 0:
            raise UdptlError(f"negative FEC span {span}")
        value = span.to_bytes((span.bit_length() + 8) // 8, "big")  # two's complement, minimal
        _put_length(out, len(value))
        out += value
        _put_length(out, len(packet.fec.data))
        for item in packet.fec.data:
            _put_octets(out, item)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def octet(self) -> int:
        if self.pos >= len(self.data):
            raise UdptlError("UDPTL packet truncated")
        self.pos += 1
        return self.data[self.pos - 1]

    def length(self) -> int:
        first = self.octet()
        if first < 0x80:
            return first
        if first < 0xC0:
            return ((first & 0x3F) << 8) | self.octet()
        raise UdptlError("fragmented length in UDPTL packet")

    def octets(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise UdptlError("UDPTL packet truncated")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def packet(self) -> bytes:
        n = self.length()
        if n == 0:
            raise UdptlError("empty IFP packet in UDPTL packet")
        return self.octets(n)

    def entries(self) -> int:
        n = self.length()
        if n > MAX_ENTRIES:
            raise UdptlError(f"{n} error recovery entries")
        return n


def parse_udptl(datagram: bytes) -> UdptlPacket:
    """Decode one datagram; raises :class:`UdptlError` (and only that) if it is malformed."""
    r = _Reader(bytes(datagram))
    seq = int.from_bytes(r.octets(2), "big")
    primary = r.packet()
    choice = r.octet()
    if choice & 0x7F:
        raise UdptlError("non-zero padding bits")
    packet: UdptlPacket
    if choice == 0:
        count = r.entries()
        packet = UdptlPacket(seq, primary, tuple(r.packet() for _ in range(count)))
    else:
        size = r.length()
        if not 1 <= size <= 2:
            raise UdptlError(f"FEC span of {size} octets")
        span = int.from_bytes(r.octets(size), "big", signed=True)
        if not 0 <= span <= MAX_FEC_SPAN:
            raise UdptlError(f"FEC span {span}")
        count = r.entries()
        packet = UdptlPacket(seq, primary, fec=FecInfo(span, tuple(r.packet() for _ in range(count))))
    if r.pos != len(r.data):
        raise UdptlError("trailing octets after UDPTL packet")
    return packet


def _xor(blocks: Sequence[bytes]) -> bytes:
    """XOR of ``blocks``, each zero-padded to the longest."""
    size = max((len(b) for b in blocks), default=0)
    acc = 0
    for b in blocks:
        acc ^= int.from_bytes(b.ljust(size, b"\0"), "big")
    return acc.to_bytes(size, "big")


# ------------------------------------------------------------------------------------ encoder
class UdptlEncoder:
    """Builds the datagrams for a stream of IFP packets.

    ``ec`` selects the recovery data: ``"redundancy"`` adds the ``depth`` previous IFP packets,
    ``"fec"`` adds ``fec_entries`` parity blocks over ``fec_span`` packets each, ``"none"``
    adds nothing.  While the stream is young only the history there is gets used.  With
    ``max_datagram`` (the far end's ``T38FaxMaxDatagram``) recovery data is cut down to fit; a
    primary packet that does not fit on its own raises ``ValueError``.
    """

    def __init__(
        self,
        ec: Literal["redundancy", "fec", "none"] = "redundancy",
        *,
        depth: int = 3,
        fec_span: int = 3,
        fec_entries: int = 3,
        max_datagram: int | None = None,
        first_seq: int = 0,
    ) -> None:
        if ec not in ("redundancy", "fec", "none"):
            raise ValueError(f"unknown error correction {ec!r}")
        if not 0 <= depth <= MAX_ENTRIES:
            raise ValueError(f"redundancy depth {depth} not in 0..{MAX_ENTRIES}")
        if not 1 <= fec_span <= MAX_FEC_SPAN or not 0 <= fec_entries <= MAX_ENTRIES:
            raise ValueError(f"bad FEC span/entries {fec_span}/{fec_entries}")
        if not 0 <= first_seq <= 0xFFFF:
            raise ValueError(f"sequence number {first_seq} out of range")
        self.ec = ec
        self.depth = depth
        self.fec_span = fec_span
        self.fec_entries = fec_entries
        self.max_datagram = max_datagram
        self._seq = first_seq
        self._history: list[bytes] = []  # newest last
        self._keep = depth if ec == "redundancy" else fec_span * fec_entries if ec == "fec" else 0

    @property
    def seq(self) -> int:
        """The sequence number the next datagram will carry."""
        return self._seq

    def packet(self, ifp: bytes) -> bytes:
        """The datagram carrying ``ifp`` (non-empty), with the next sequence number."""
        ifp = bytes(ifp)
        if not ifp:
            raise ValueError("empty IFP packet")
        if len(ifp) > _MAX_OPEN_TYPE:
            raise ValueError(f"IFP packet of {len(ifp)} octets is too long")
        datagram = self._build(ifp)
        self._history.append(ifp)
        del self._history[: -self._keep or len(self._history)]
        self._seq = (self._seq + 1) & 0xFFFF
        return datagram

    def _fits(self, datagram: bytes) -> bool:
        return self.max_datagram is None or len(datagram) <= self.max_datagram

    def _build(self, ifp: bytes) -> bytes:
        history = self._history
        if self.ec == "fec":
            span = self.fec_span
            for entries in range(min(self.fec_entries, len(history) // span), -1, -1):
                # block m: packets n + m - E*j, j = 1..S; history[-k] is packet n - k
                blocks = tuple(
                    _xor([history[-(entries * j - m)] for j in range(1, span + 1)]) for m in range(entries)
                )
                datagram = build_udptl(UdptlPacket(self._seq, ifp, fec=FecInfo(span, blocks)))
                if self._fits(datagram):
                    return datagram
        else:
            depth = min(self.depth, len(history)) if self.ec == "redundancy" else 0
            for count in range(depth, -1, -1):
                secondary = tuple(history[-1 - i] for i in range(count))
                datagram = build_udptl(UdptlPacket(self._seq, ifp, secondary))
                if self._fits(datagram):
                    return datagram
        raise ValueError(f"IFP packet of {len(ifp)} octets does not fit in {self.max_datagram}")


# ------------------------------------------------------------------------------------ decoder
class Recovery(StrEnum):
    """Where a delivered IFP packet came from."""

    PRIMARY = "primary"
    REDUNDANCY = "redundancy"
    FEC = "fec"


@dataclass(frozen=True)
class ReceivedIfp:
    """An IFP packet handed on by :class:`UdptlDecoder`, with its sequence number."""

    seq: int
    ifp: bytes
    source: Recovery


class UdptlDecoder:
    """Turns received datagrams back into the IFP packet stream, in sequence order.

    With ``hold=0`` (SpanDSP's behaviour) a packet that is still missing when a later one
    arrives, and cannot be rebuilt from it, is given up at once.  ``hold=k`` waits until ``k``
    more packets have arrived before giving up, so that reordered or repaired packets are
    still delivered in order; :meth:`flush` gives up on everything still missing (call it when
    the stream goes quiet).  Packets that arrive after their turn are dropped.  ``history`` is
    how many delivered packets are kept for parity FEC repair.

    Counters: ``lost`` (given up), ``recovered`` (rebuilt and delivered), ``duplicates``,
    ``late`` (arrived after their turn), ``restarts`` (sequence numbering restarted).
    """

    def __init__(self, *, hold: int = 0, history: int = 256) -> None:
        if hold < 0 or history < 1:
            raise ValueError("hold must be >= 0 and history >= 1")
        self.hold = hold
        self.history = history
        self._next: int | None = None  # extended number of the next packet to deliver
        self._top = -1  # highest extended number received
        self._known: dict[int, tuple[bytes, Recovery]] = {}
        self._fec: dict[int, FecInfo] = {}
        self.lost = 0
        self.recovered = 0
        self.duplicates = 0
        self.late = 0
        self.restarts = 0

    def datagram(self, data: bytes) -> list[bytes]:
        """IFP packets that are now due, oldest first; raises :class:`UdptlError`."""
        return [item.ifp for item in self.receive(data)]

    def receive(self, data: bytes) -> list[ReceivedIfp]:
        """Like :meth:`datagram`, with sequence numbers and where each packet came from."""
        packet = parse_udptl(data)
        if self._next is None:
            self._start(packet.seq)
        assert self._next is not None
        ext = self._extend(packet.seq)
        if ext < self._next - MAX_SEQUENCE_JUMP or ext > self._next + MAX_SEQUENCE_JUMP:
            self.restarts += 1
            self._start(packet.seq, restart=True)
            ext = packet.seq
        if ext < self._next:
            if ext in self._known:
                self.duplicates += 1
            else:
                self.late += 1
            return []
        self._store(ext, packet)
        self._repair()
        return self._deliver(force=False)

    def flush(self) -> list[ReceivedIfp]:
        """Give up on missing packets and deliver everything received so far."""
        return self._deliver(force=True)

    # ------------------------------------------------------------------------------ internals
    def _start(self, seq: int, restart: bool = False) -> None:
        self._known.clear()
        self._fec.clear()
        self._next = 0 if seq <= _START_WINDOW and not restart else seq
        self._top = self._next - 1

    def _extend(self, seq: int) -> int:
        assert self._next is not None
        delta = (seq - self._next) & 0xFFFF
        return self._next + (delta if delta < 0x8000 else delta - 0x10000)

    def _store(self, ext: int, packet: UdptlPacket) -> None:
        assert self._next is not None
        old = self._known.get(ext)
        if old is not None and old[1] is Recovery.PRIMARY:
            self.duplicates += 1
        # the primary replaces a rebuilt copy (which may carry FEC zero padding)
        self._known[ext] = (packet.primary, Recovery.PRIMARY)
        self._top = max(self._top, ext)
        floor = self._next - self.history
        for i, item in enumerate(packet.secondary):
            seq = ext - 1 - i
            if seq >= floor and seq not in self._known:
                self._known[seq] = (item, Recovery.REDUNDANCY)
        if packet.fec is not None and packet.fec.span and packet.fec.data:
            self._fec[ext] = packet.fec

    def _repair(self) -> None:
        """Rebuild missing packets from the stored parity blocks, as long as that helps."""
        assert self._next is not None
        floor = self._next - self.history
        progress = True
        while progress and self._fec:
            progress = False
            for n, fec in list(self._fec.items()):
                entries = len(fec.data)
                done = True
                for m, block in enumerate(fec.data):
                    group = [n + m - entries * j for j in range(1, fec.span + 1)]
                    missing = [s for s in group if s not in self._known]
                    if not missing:
                        continue
                    if len(missing) == 1 and missing[0] >= floor:
                        others = [self._known[s][0] for s in group if s != missing[0]]
                        self._known[missing[0]] = (_xor([block, *others]), Recovery.FEC)
                        progress = True
                    else:
                        done = False
                if done:
                    del self._fec[n]

    def _deliver(self, force: bool) -> list[ReceivedIfp]:
        assert self._next is not None
        out: list[ReceivedIfp] = []
        while self._next <= self._top:
            item = self._known.get(self._next)
            if item is not None:
                if item[1] is not Recovery.PRIMARY:
                    self.recovered += 1
                out.append(ReceivedIfp(self._next & 0xFFFF, item[0], item[1]))
            elif force or self._top - self._next > self.hold:
                self.lost += 1
            else:
                break
            self._next += 1
        # forget what can no longer help: delivered packets beyond the history, parity blocks
        # whose groups are all in the past
        floor = self._next - self.history
        for seq in [s for s in self._known if s < floor]:
            del self._known[seq]
        for n in [n for n in self._fec if n <= self._next]:
            del self._fec[n]
        return out
