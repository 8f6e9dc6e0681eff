"""ITU-T T.30 HDLC frames: facsimile control fields, DIS/DTC/DCS bit fields, identities, ECM frames.

What it does
------------
Builds and parses the frames the T.30 engine exchanges, as the bytes between the HDLC flags without
the FCS (which the transport adds and checks):

* :class:`Frame` — address ``0xFF``, control ``0x03`` (``0x13`` on the final frame of a burst),
  facsimile control field (FCF, :class:`Fcf`) and facsimile information field (FIF), T.30 §5.3.6;
* :class:`Dis` (DIS and DTC, the capabilities) and :class:`Dcs` (the chosen mode) — the bits of
  T.30 Table 2 used for group 3 black-and-white fax: modems and rates (V.27 ter, V.29, V.17), fine /
  superfine / 300 x 300 resolution, MR / MMR coding, scan-line widths and lengths, minimum scan-line
  time, ECM and the 64-octet frame size, subaddressing; everything else is kept as raw bits;
* CSI / TSI / CIG / SUB / PWD / SEP / SID identities: 20 characters, last character first
  (T.30 §5.3.6.2);
* post-message commands and responses, ECM frames of T.4 Annex A (FCD, RCP) and T.30 Annex A
  (PPS, PPR with its 256-bit frame map, CTC, CTR, EOR, ERR, RR, RNR);
* :data:`FALLBACK` — the modem fall-back ladder V.17 14400 ... V.27 ter 2400.

Non-standard frames (NSF/NSC/NSS) parse as opaque bytes.

How it works
------------
T.30 numbers the bits of a FIF from 1 in transmission order; HDLC sends each octet least
significant bit first, so bit ``n`` is bit ``(n - 1) % 8`` of octet ``(n - 1) // 8``.  The FCF
values below are the octet values in that convention (T.30 writes them first bit first, e.g. DIS
"0000 0001" = ``0x80``).  Most FCFs carry the X bit (T.30 §5.3.6) in their first bit: 1 when sent by
the station that received a valid DIS; the initial-identification and "command to send" FCFs
(DIS, CSI, NSF, DTC, CIG, NSC, PWD, SEP, ...) use that bit to tell them apart instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Literal

__all__ = [
    "ADDRESS",
    "CONTROL",
    "CONTROL_FINAL",
    "FALLBACK",
    "PPR_MAP_OCTETS",
    "Compression",
    "Dcs",
    "Dis",
    "Fcf",
    "Frame",
    "FrameError",
    "Modem",
    "Resolution",
    "ctc_fif",
    "decode_ident",
    "describe",
    "encode_ident",
    "fallback_index",
    "fcf_octet",
    "parse_ctc",
    "parse_fcf",
    "parse_pps",
    "ppr_frames",
    "ppr_map",
    "pps_fif",
    "widths_for",
]

Modem = Literal["v27ter", "v29", "v17"]
Resolution = Literal["standard", "fine", "superfine", "300"]
Compression = Literal["mh", "mr", "mmr"]

ADDRESS: Final = 0xFF
"""T.30 §5.3: the address field is all ones."""
CONTROL: Final = 0x03
"""T.30 §5.3: control field 1100 0000 (sent first bit first), not the last frame of a burst."""
CONTROL_FINAL: Final = 0x13
"""T.30 §5.3: control field 1100 1000, the final frame of a burst."""
IDENT_LEN: Final = 20
"""T.30 §5.3.6.2: identities are 20 characters."""
PPR_MAP_OCTETS: Final = 32
"""T.30 Annex A: the PPR frame map has one bit per frame, 256 frames."""


class FrameError(ValueError):
    """A frame that is too short, has a bad address/control field or an unknown FCF."""


class Fcf(IntEnum):
    """Facsimile control fields (T.30 §5.3.6, T.4 Annex A), X bit clear."""

    # Initial identification, from the called terminal (no X bit).
    DIS = 0x80
    CSI = 0x40
    NSF = 0x20
    # Command to send, from a terminal wishing to receive (no X bit).
    DTC = 0x81
    CIG = 0x41
    NSC = 0x21
    PWD = 0xC1
    SEP = 0xA1
    PSA = 0x61
    CIA = 0xE1
    ISP = 0x11
    # Command to receive.
    DCS = 0x82
    TSI = 0x42
    NSS = 0x22
    SUB = 0xC2
    SID = 0xA2
    CTC = 0x12
    TSA = 0x62
    IRA = 0xE2
    # Pre-message responses.
    CFR = 0x84
    FTT = 0x44
    CTR = 0xC4
    CSA = 0x24
    # Post-message commands.
    EOM = 0x8E
    MPS = 0x4E
    EOP = 0x2E
    PRI_EOM = 0x9E
    PRI_MPS = 0x5E
    PRI_EOP = 0x3E
    EOS = 0x1E
    PPS = 0xBE
    EOR = 0xCE
    RR = 0x6E
    # Post-message responses.
    MCF = 0x8C
    RTP = 0xCC
    RTN = 0x4C
    PIP = 0xAC
    PIN = 0x2C
    PPR = 0xBC
    RNR = 0xEC
    ERR = 0x1C
    FDM = 0xFC
    # Other line control.
    DCN = 0xFA
    CRP = 0x1A
    FNV = 0xCA
    TNR = 0xEA
    TR = 0x6A
    PID = 0x6C
    # T.4 Annex A frames sent with the image modem.
    FCD = 0x06
    RCP = 0x86
    # Second FCF of PPS/EOR inside a block.
    NULL = 0x00


#: FCFs whose first bit is part of the code, not the X bit.
_NO_X_BIT: Final = frozenset(
    {
        Fcf.DIS,
        Fcf.CSI,
        Fcf.NSF,
        Fcf.DTC,
        Fcf.CIG,
        Fcf.NSC,
        Fcf.PWD,
        Fcf.SEP,
        Fcf.PSA,
        Fcf.CIA,
        Fcf.ISP,
        Fcf.FCD,
        Fcf.RCP,
        Fcf.NULL,
    }
)
_BY_VALUE: Final = {int(f): f for f in Fcf}

#: FCFs whose FIF is a 20-character identity.
IDENT_FCFS: Final = frozenset({Fcf.CSI, Fcf.TSI, Fcf.CIG, Fcf.SUB, Fcf.PWD, Fcf.SEP, Fcf.SID, Fcf.PSA})


def parse_fcf(value: int) -> tuple[Fcf, bool]:
    """The FCF and X bit of one octet; raises :class:`FrameError` for an unknown value."""
    if value in _BY_VALUE and _BY_VALUE[value] in _NO_X_BIT:
        return _BY_VALUE[value], False
    base = _BY_VALUE.get(value & 0xFE)
    if base is None or base in _NO_X_BIT:
        raise FrameError(f"unknown FCF 0x{value:02x}")
    return base, bool(value & 1)


def fcf_octet(fcf: Fcf, x: bool) -> int:
    """The FCF octet to send, with the X bit where the FCF has one."""
    return int(fcf) | (1 if x and fcf not in _NO_X_BIT else 0)


@dataclass(frozen=True)
class Frame:
    """One T.30 (or T.4 Annex A) HDLC frame without flags and FCS."""

    fcf: Fcf
    fif: bytes = b""
    final: bool = True
    x: bool = False

    def to_bytes(self) -> bytes:
        control = CONTROL_FINAL if self.final else CONTROL
        return bytes((ADDRESS, control, fcf_octet(self.fcf, self.x))) + self.fif

    @classmethod
    def parse(cls, data: bytes) -> Frame:
        """Parse the octets between the flags (FCS already removed)."""
        if len(data) < 3:
            raise FrameError(f"frame of {len(data)} octets is too short")
        if data[0] != ADDRESS:
            raise FrameError(f"bad address field 0x{data[0]:02x}")
        if data[1] not in (CONTROL, CONTROL_FINAL):
            raise FrameError(f"bad control field 0x{data[1]:02x}")
        fcf, x = parse_fcf(data[2])
        return cls(fcf, bytes(data[3:]), data[1] == CONTROL_FINAL, x)

    @property
    def fcf2(self) -> Fcf | None:
        """PPS/EOR: the post-message command in the first FIF octet (NULL inside a page)."""
        if self.fcf not in (Fcf.PPS, Fcf.EOR) or not self.fif:
            return None
        try:
            return parse_fcf(self.fif[0])[0]
        except FrameError:
            return None


# -- identities --------------------------------------------------------------------------------------


def encode_ident(text: str) -> bytes:
    """T.30 §5.3.6.2: 20 IA5 characters, the last character of the identity sent first.

    Characters beyond 20 are dropped; the rest is padded with spaces.
    """
    raw = text.encode("ascii", errors="replace")[:IDENT_LEN]
    return raw[::-1] + b" " * (IDENT_LEN - len(raw))


def decode_ident(fif: bytes) -> str:
    """Inverse of :func:`encode_ident`, surrounding spaces removed; non-ASCII octets become '?'."""
    text = bytes(fif[:IDENT_LEN])[::-1].decode("ascii", errors="replace").replace("\ufffd", "?")
    return text.strip()


# -- bit fields ---------------------------------------------------------------------------------------


def _bit(fif: bytes, n: int) -> bool:
    """T.30 bit ``n`` (1-based, transmission order) of a FIF; absent octets read as zero."""
    i = (n - 1) >> 3
    return i < len(fif) and bool(fif[i] >> ((n - 1) & 7) & 1)


def _field(fif: bytes, first: int, count: int) -> int:
    """Bits ``first .. first+count-1``, the first one as the least significant bit of the value."""
    return sum(1 << k for k in range(count) if _bit(fif, first + k))


def _pack_bits(bits: set[int], min_octets: int = 3) -> bytes:
    """A FIF with ``bits`` set and the extension bits (24, 32, 40, ...) chaining the octets used."""
    octets = max(min_octets, max(((b - 1) >> 3) + 1 for b in bits) if bits else 0)
    out = bytearray(octets)
    for b in bits:
        out[(b - 1) >> 3] |= 1 << ((b - 1) & 7)
    for i in range(2, octets - 1):  # octet i ends with bit 8(i+1): extend field
        out[i] |= 0x80
    return bytes(out)


def _set_field(bits: set[int], first: int, count: int, value: int) -> None:
    for k in range(count):
        if value >> k & 1:
            bits.add(first + k)


# Bits of T.30 Table 2 used here.
B_T38: Final = 3
B_V8: Final = 6
B_ECM_64_PREFERRED: Final = 7
B_READY_TO_TRANSMIT: Final = 9
B_RECEIVE: Final = 10
B_MODEM: Final = 11  # 11..14
B_FINE: Final = 15  # R8 x 7.7 lines/mm and/or 200 x 200
B_MR: Final = 16
B_WIDTH: Final = 17  # 17..18
B_LENGTH: Final = 19  # 19..20
B_SCAN: Final = 21  # 21..23
B_UNCOMPRESSED: Final = 26
B_ECM: Final = 27
B_FRAME_64: Final = 28  # DCS only
B_MMR: Final = 31
B_FNV: Final = 33
B_SUPERFINE: Final = 41  # R8 x 15.4 lines/mm
B_300: Final = 42  # 300 x 300 pels/25.4 mm
B_400: Final = 43  # R16 x 15.4 lines/mm and/or 400 x 400
B_INCH: Final = 44
B_METRIC: Final = 45
B_SCAN_HALVES: Final = 46
B_SELECTIVE_POLLING: Final = 47
B_SUBADDRESS: Final = 49
B_PASSWORD: Final = 50

#: DCS data signalling rate, bits 11..14 read as a number with bit 11 the least significant.
#: T.30 Table 2: 0000 V.27 ter 2400, 0100 V.27 ter 4800, 1000 V.29 9600, 1100 V.29 7200,
#: 0001 V.17 14400, 0101 V.17 12000, 1001 V.17 9600, 1101 V.17 7200 (bits 11, 12, 13, 14).
DCS_MODEM_CODES: Final[dict[tuple[Modem, int], int]] = {
    ("v27ter", 2400): 0b0000,
    ("v27ter", 4800): 0b0010,
    ("v29", 9600): 0b0001,
    ("v29", 7200): 0b0011,
    ("v17", 14400): 0b1000,
    ("v17", 12000): 0b1010,
    ("v17", 9600): 0b1001,
    ("v17", 7200): 0b1011,
}
_DCS_MODEMS: Final = {v: k for k, v in DCS_MODEM_CODES.items()}

#: DIS/DTC modem capability, bits 11..14 (bit 11 least significant): T.30 Table 2 "0000 V.27 ter
#: fall-back mode", "0100 V.27 ter", "1000 V.29", "1100 V.27 ter and V.29", "1101 V.27 ter, V.29 and
#: V.17".
DIS_MODEM_CODES: Final[dict[frozenset[str], int]] = {
    frozenset(): 0b0000,
    frozenset({"v27ter"}): 0b0010,
    frozenset({"v29"}): 0b0001,
    frozenset({"v27ter", "v29"}): 0b0011,
    frozenset({"v27ter", "v29", "v17"}): 0b1011,
}

#: The fall-back ladder: V.17 14400 -> 12000 -> 9600 -> V.29 9600 -> V.17 7200 -> V.29 7200 ->
#: V.27 ter 4800 -> 2400.
FALLBACK: Final[tuple[tuple[Modem, int], ...]] = (
    ("v17", 14400),
    ("v17", 12000),
    ("v17", 9600),
    ("v29", 9600),
    ("v17", 7200),
    ("v29", 7200),
    ("v27ter", 4800),
    ("v27ter", 2400),
)


def fallback_index(modem: str, rate: int) -> int:
    """Position of (modem, rate) in :data:`FALLBACK`; raises ValueError if it is not there."""
    for i, (m, r) in enumerate(FALLBACK):
        if (m, r) == (modem, rate):
            return i
    raise ValueError(f"{modem} at {rate} bit/s is not in the fall-back ladder")


#: DIS minimum scan-line time, bits 21..23 (bit 21 least significant) -> (ms at 3.85 lines/mm,
#: whether T7.7 = T3.85 / 2).  T.30 Table 2: 000 20 ms, 100 5 ms, 010 10 ms, 001 40 ms, 110 20 ms
#: with halving, 101 40 ms with halving, 011 10 ms with halving, 111 0 ms (bits 21, 22, 23).
DIS_SCAN_CODES: Final[dict[int, tuple[int, bool]]] = {
    0b000: (20, False),
    0b001: (5, False),
    0b010: (10, False),
    0b011: (20, True),
    0b100: (40, False),
    0b101: (40, True),
    0b110: (10, True),
    0b111: (0, False),
}
#: DCS minimum scan-line time, bits 21..23: 000 20 ms, 100 5 ms, 010 10 ms, 001 40 ms, 111 0 ms.
DCS_SCAN_CODES: Final[dict[int, int]] = {0b000: 20, 0b001: 5, 0b010: 10, 0b100: 40, 0b111: 0}
_DCS_SCAN_BY_MS: Final = {v: k for k, v in DCS_SCAN_CODES.items()}

#: Scan-line widths per width code (bits 17..18: 0 = 215 mm, 1 = 255 mm, 2 = 303 mm), T.4 §2.2.
WIDTHS_R8: Final = (1728, 2048, 2432)
WIDTHS_300: Final = (2592, 3072, 3648)
LENGTHS: Final = ("a4", "b4", "unlimited")


def widths_for(resolution: Resolution) -> tuple[int, int, int]:
    """Pels per scan line for the three width codes at a resolution."""
    return WIDTHS_300 if resolution == "300" else WIDTHS_R8


@dataclass(frozen=True)
class Dis:
    """DIS or DTC capabilities (T.30 Table 2).

    ``modems`` holds the modem families from bits 11-14; an empty set is the V.27 ter fall-back
    mode (2400 bit/s only).  ``max_width`` is the width code (0 = 215 mm, 1 = 255 mm, 2 = 303 mm);
    ``max_length`` 0 = A4, 1 = B4, 2 = unlimited.  ``raw`` is the FIF it was parsed from (or built).
    """

    modems: frozenset[str] = frozenset({"v27ter", "v29", "v17"})
    ready_to_receive: bool = True
    ready_to_transmit: bool = False
    fine: bool = True
    superfine: bool = False
    r300: bool = False
    r400: bool = False
    mr: bool = True
    mmr: bool = False
    ecm: bool = False
    ecm_64_preferred: bool = False
    uncompressed: bool = False
    max_width: int = 0
    max_length: int = 2
    min_scan_ms: int = 0
    scan_halved_fine: bool = False
    scan_halves_higher: bool = False
    metric_preferred: bool = True
    inch_preferred: bool = False
    t38: bool = False
    v8: bool = False
    fnv: bool = False
    selective_polling: bool = False
    subaddressing: bool = False
    password: bool = False
    raw: bytes = field(default=b"", compare=False)

    def to_fif(self) -> bytes:
        bits: set[int] = set()
        code = DIS_MODEM_CODES.get(frozenset(self.modems))
        if code is None:
            raise ValueError(f"no DIS code for modem set {sorted(self.modems)}")
        _set_field(bits, B_MODEM, 4, code)
        scan = [k for k, v in DIS_SCAN_CODES.items() if v == (self.min_scan_ms, self.scan_halved_fine)]
        if not scan:
            raise ValueError(f"no DIS code for minimum scan time {self.min_scan_ms} ms")
        _set_field(bits, B_SCAN, 3, scan[0])
        if self.max_width not in (0, 1, 2):
            raise ValueError("max_width must be 0, 1 or 2")
        _set_field(bits, B_WIDTH, 2, (0, 1, 2)[self.max_width])
        if self.max_length not in (0, 1, 2):
            raise ValueError("max_length must be 0, 1 or 2")
        _set_field(bits, B_LENGTH, 2, (0, 1, 2)[self.max_length])
        flags = {
            B_T38: self.t38,
            B_V8: self.v8,
            B_ECM_64_PREFERRED: self.ecm_64_preferred,
            B_READY_TO_TRANSMIT: self.ready_to_transmit,
            B_RECEIVE: self.ready_to_receive,
            B_FINE: self.fine,
            B_MR: self.mr,
            B_UNCOMPRESSED: self.uncompressed,
            B_ECM: self.ecm,
            B_MMR: self.mmr,
            B_FNV: self.fnv,
            B_SUPERFINE: self.superfine,
            B_300: self.r300,
            B_400: self.r400,
            B_INCH: self.inch_preferred,
            B_METRIC: self.metric_preferred,
            B_SCAN_HALVES: self.scan_halves_higher,
            B_SELECTIVE_POLLING: self.selective_polling,
            B_SUBADDRESS: self.subaddressing,
            B_PASSWORD: self.password,
        }
        bits.update(b for b, on in flags.items() if on)
        return _pack_bits(bits)

    @classmethod
    def parse(cls, fif: bytes) -> Dis:
        if len(fif) < 2:
            raise FrameError("DIS/DTC needs at least two FIF octets")
        code = _field(fif, B_MODEM, 4)
        modems: frozenset[str]
        if code & 0b1000 and code & 0b0011 == 0b0011:
            modems = frozenset({"v27ter", "v29", "v17"})
        elif code & 0b0011 == 0b0011:
            modems = frozenset({"v27ter", "v29"})
        elif code & 0b0001:
            modems = frozenset({"v29"})
        elif code & 0b0010:
            modems = frozenset({"v27ter"})
        else:
            modems = frozenset()
        width = _field(fif, B_WIDTH, 2)
        length = _field(fif, B_LENGTH, 2)
        scan_ms, halved = DIS_SCAN_CODES[_field(fif, B_SCAN, 3)]
        return cls(
            modems=modems,
            ready_to_receive=_bit(fif, B_RECEIVE),
            ready_to_transmit=_bit(fif, B_READY_TO_TRANSMIT),
            fine=_bit(fif, B_FINE),
            superfine=_bit(fif, B_SUPERFINE),
            r300=_bit(fif, B_300),
            r400=_bit(fif, B_400),
            mr=_bit(fif, B_MR),
            mmr=_bit(fif, B_MMR),
            ecm=_bit(fif, B_ECM),
            ecm_64_preferred=_bit(fif, B_ECM_64_PREFERRED),
            uncompressed=_bit(fif, B_UNCOMPRESSED),
            max_width={0: 0, 1: 1, 2: 2, 3: 0}[width],  # 11 is invalid: assume 215 mm only
            max_length={0: 0, 1: 1, 2: 2, 3: 0}[length],
            min_scan_ms=scan_ms,
            scan_halved_fine=halved,
            scan_halves_higher=_bit(fif, B_SCAN_HALVES),
            metric_preferred=_bit(fif, B_METRIC),
            inch_preferred=_bit(fif, B_INCH),
            t38=_bit(fif, B_T38),
            v8=_bit(fif, B_V8),
            fnv=_bit(fif, B_FNV),
            selective_polling=_bit(fif, B_SELECTIVE_POLLING),
            subaddressing=_bit(fif, B_SUBADDRESS),
            password=_bit(fif, B_PASSWORD),
            raw=bytes(fif),
        )

    def supports(self, modem: str, rate: int) -> bool:
        """Whether a (modem, rate) of :data:`FALLBACK` is allowed by bits 11-14."""
        if not self.modems:
            return (modem, rate) == ("v27ter", 2400)
        return modem in self.modems

    def supports_resolution(self, resolution: Resolution) -> bool:
        return {
            "standard": True,
            "fine": self.fine,
            "superfine": self.superfine,
            "300": self.r300,
        }[resolution]

    def min_scan_for(self, resolution: Resolution) -> int:
        """Minimum scan-line time (ms) a transmitter must respect at ``resolution``, rounded up to a
        DCS value (T.30 Table 2 notes on bits 21-23 and 46)."""
        ms = float(self.min_scan_ms)
        if resolution in ("fine", "superfine", "300") and self.scan_halved_fine:
            ms /= 2
        if resolution == "superfine" and self.scan_halves_higher:
            ms /= 2
        return min(v for v in (0, 5, 10, 20, 40) if v >= ms)


@dataclass(frozen=True)
class Dcs:
    """DCS: the mode chosen by the transmitter (T.30 Table 2)."""

    modem: Modem = "v17"
    rate: int = 14400
    resolution: Resolution = "standard"
    compression: Compression = "mh"
    width_code: int = 0
    length: int = 0
    min_scan_ms: int = 0
    ecm: bool = False
    frame_size: int = 256
    receive: bool = True
    subaddress: bool = False
    raw: bytes = field(default=b"", compare=False)

    @property
    def width(self) -> int:
        """Pels per scan line."""
        return widths_for(self.resolution)[self.width_code]

    def to_fif(self) -> bytes:
        bits: set[int] = set()
        code = DCS_MODEM_CODES.get((self.modem, self.rate))
        if code is None:
            raise ValueError(f"no DCS code for {self.modem} at {self.rate} bit/s")
        _set_field(bits, B_MODEM, 4, code)
        if self.min_scan_ms not in _DCS_SCAN_BY_MS:
            raise ValueError(f"no DCS code for minimum scan time {self.min_scan_ms} ms")
        _set_field(bits, B_SCAN, 3, _DCS_SCAN_BY_MS[self.min_scan_ms])
        if self.width_code not in (0, 1, 2) or self.length not in (0, 1, 2):
            raise ValueError("width and length codes must be 0, 1 or 2")
        _set_field(bits, B_WIDTH, 2, self.width_code)
        _set_field(bits, B_LENGTH, 2, self.length)
        if self.compression == "mmr" and not self.ecm:
            raise ValueError("T.6 coding needs ECM (T.30 Table 2 note on bit 31)")
        if self.frame_size not in (64, 256):
            raise ValueError("ECM frame size must be 64 or 256")
        flags = {
            B_RECEIVE: self.receive,
            B_FINE: self.resolution == "fine",
            B_MR: self.compression == "mr",
            B_ECM: self.ecm,
            B_FRAME_64: self.ecm and self.frame_size == 64,
            B_MMR: self.compression == "mmr",
            B_SUPERFINE: self.resolution == "superfine",
            B_300: self.resolution == "300",
            B_INCH: self.resolution == "300",
            B_SUBADDRESS: self.subaddress,
        }
        bits.update(b for b, on in flags.items() if on)
        return _pack_bits(bits)

    @classmethod
    def parse(cls, fif: bytes) -> Dcs:
        if len(fif) < 3:
            raise FrameError("DCS needs at least three FIF octets")
        mode = _DCS_MODEMS.get(_field(fif, B_MODEM, 4))
        if mode is None:
            raise FrameError(f"invalid DCS data signalling rate code {_field(fif, B_MODEM, 4):04b}")
        scan = DCS_SCAN_CODES.get(_field(fif, B_SCAN, 3))
        if scan is None:
            raise FrameError("invalid DCS minimum scan-line time")
        ecm = _bit(fif, B_ECM)
        resolution: Resolution = "standard"
        if _bit(fif, B_300):
            resolution = "300"
        elif _bit(fif, B_SUPERFINE):
            resolution = "superfine"
        elif _bit(fif, B_FINE):
            resolution = "fine"
        compression: Compression = "mh"
        if ecm and _bit(fif, B_MMR):
            compression = "mmr"
        elif _bit(fif, B_MR):
            compression = "mr"
        width = _field(fif, B_WIDTH, 2)
        if width == 3:
            raise FrameError("invalid DCS width code 11")
        length = _field(fif, B_LENGTH, 2)
        return cls(
            modem=mode[0],
            rate=mode[1],
            resolution=resolution,
            compression=compression,
            width_code=width,
            length=length if length < 3 else 0,
            min_scan_ms=scan,
            ecm=ecm,
            frame_size=64 if ecm and _bit(fif, B_FRAME_64) else 256,
            receive=_bit(fif, B_RECEIVE),
            subaddress=_bit(fif, B_SUBADDRESS),
            raw=bytes(fif),
        )


# -- ECM: CTC rate, PPR map ----------------------------------------------------------------------------


def ctc_fif(modem: Modem, rate: int) -> bytes:
    """CTC FIF (T.30 Annex A): DCS octets 1 and 2, the new rate in bits 11-14."""
    return bytes((0, DCS_MODEM_CODES[(modem, rate)] << 2))


def parse_ctc(fif: bytes) -> tuple[Modem, int]:
    if len(fif) < 2:
        raise FrameError("CTC needs two FIF octets")
    mode = _DCS_MODEMS.get(_field(fif, B_MODEM, 4))
    if mode is None:
        raise FrameError("invalid rate in CTC")
    return mode


def ppr_map(frames: list[int] | set[int]) -> bytes:
    """PPR FIF: 256 bits, bit ``n`` (octet n // 8, bit n % 8 in transmission order) = frame n bad."""
    out = bytearray(PPR_MAP_OCTETS)
    for n in frames:
        if not 0 <= n < 256:
            raise ValueError("ECM frame numbers are 0..255")
        out[n >> 3] |= 1 << (n & 7)
    return bytes(out)


def ppr_frames(fif: bytes) -> list[int]:
    """Frame numbers asked for again by a PPR FIF."""
    return [n for n in range(min(len(fif), PPR_MAP_OCTETS) * 8) if fif[n >> 3] >> (n & 7) & 1]


def pps_fif(fcf2: Fcf, x: bool, page: int, block: int, frames: int) -> bytes:
    """PPS FIF: post-message command (or NULL), page counter, block counter, frames - 1."""
    return bytes(
        (fcf_octet(fcf2, x) if fcf2 != Fcf.NULL else 0, page & 0xFF, block & 0xFF, (frames - 1) & 0xFF)
    )


def parse_pps(fif: bytes) -> tuple[Fcf, int, int, int]:
    """(post-message command or NULL, page counter, block counter, number of frames)."""
    if len(fif) < 4:
        raise FrameError("PPS needs four FIF octets")
    return parse_fcf(fif[0])[0], fif[1], fif[2], fif[3] + 1


def describe(data: bytes) -> str:
    """A one-line account of a frame for logs, e.g. ``DCS v17 14400 fine mr ecm/256 scan 0 ms``."""
    try:
        frame = Frame.parse(data)
    except FrameError as exc:
        return f"invalid frame ({exc}): {data.hex()}"
    name = frame.fcf.name
    try:
        if frame.fcf in (Fcf.DIS, Fcf.DTC):
            d = Dis.parse(frame.fif)
            modems = "+".join(sorted(d.modems)) or "v27ter-2400"
            res = ",".join(r for r in ("fine", "superfine", "300") if d.supports_resolution(r))
            codes = ",".join(c for c, on in (("mr", d.mr), ("mmr", d.mmr)) if on)
            flags = " ".join(
                f
                for f, on in (("ecm", d.ecm), ("rx", d.ready_to_receive), ("poll", d.ready_to_transmit))
                if on
            )
            return f"{name} {modems} res[{res}] codes[{codes}] {flags} scan {d.min_scan_ms} ms"
        if frame.fcf is Fcf.DCS:
            c = Dcs.parse(frame.fif)
            ecm = f" ecm/{c.frame_size}" if c.ecm else ""
            mode = f"{c.modem} {c.rate} {c.resolution} {c.compression}{ecm}"
            return f"{name} {mode} width {c.width} scan {c.min_scan_ms} ms"
        if frame.fcf in IDENT_FCFS:
            return f"{name} '{decode_ident(frame.fif)}'"
        if frame.fcf is Fcf.PPS:
            post, page, block, count = parse_pps(frame.fif)
            return f"PPS-{post.name} page {page} block {block} frames {count}"
        if frame.fcf is Fcf.PPR:
            return f"PPR frames {ppr_frames(frame.fif)}"
        if frame.fcf is Fcf.CTC:
            modem, rate = parse_ctc(frame.fif)
            return f"CTC {modem} {rate}"
        if frame.fcf is Fcf.EOR:
            return f"EOR-{frame.fcf2.name if frame.fcf2 else '?'}"
        if frame.fcf is Fcf.FCD:
            return f"FCD {frame.fif[0] if frame.fif else '?'} ({max(len(frame.fif) - 1, 0)} octets)"
    except FrameError as exc:
        return f"{name} (bad FIF: {exc})"
    return name
