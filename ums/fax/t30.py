"""ITU-T T.30 procedures for group 3 facsimile: one sans-I/O engine for the audio and T.38 transports.

What it does
------------
:class:`T30Engine` runs one fax call in either role (calling / answering) and either direction
(transmit / receive, including polling: a calling receiver or an answering transmitter), with or
without error correction mode (T.30 Annex A):

* phase B: DIS / DTC / DCS negotiation, TCF check with CFR or FTT (also for a TCF that never comes,
  in time for the transmitter to step down) and the fall-back ladder;
* phase C: non-ECM pages (T.4 data with fill for the minimum scan-line time) or ECM partial pages of
  64/256-octet frames;
* phase D: MPS / EOM / EOP, copy-quality check on receive (MCF / RTP / RTN, rows of data the
  transport reports lost counted bad), PPS / PPR with retransmission of the bad frames, CTC / CTR
  with a step down after four PPRs, EOR / ERR, RR / RNR;
* phase E: DCN, and a :class:`FaxResult`.

It does no I/O and reads no clock.  The transport calls :meth:`T30Engine.start`, then
:meth:`~T30Engine.handle` with each :data:`Event` and :meth:`~T30Engine.poll` at
:meth:`~T30Engine.next_deadline`, each time passing the current time in seconds, and carries out the
returned :data:`Command` list in order.  ``docs/t30.md`` describes the contract.

How it works
------------
A :class:`State` (named after the nodes of the T.30 flow charts, Figure 5-2 and Annex A) selects the
handler for each event.  Commands that expect a response (DCS, post-page commands, PPS, CTC, EOR,
RR, DTC) are remembered and repeated on timer T4, on CRP or on a garbled response, up to
``command_tries`` times.  A receiver answers a repeated command with its last response.  Timers
start when the transport reports that the transmission before them is complete
(:class:`SendComplete`).  A received page is handed out as :class:`PageReceived` and its MCF (or RTP,
ERR) is only sent after the transport answers :class:`PageStored`; in ECM the receiver sends RNR
while it waits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ums.fax import t4
from ums.fax.t30_ecm import BlockAssembler, fcd_frame, rcp_frames, split_blocks
from ums.fax.t30_frames import (
    FALLBACK,
    Compression,
    Dcs,
    Dis,
    Fcf,
    Frame,
    FrameError,
    Modem,
    Resolution,
    ctc_fif,
    decode_ident,
    encode_ident,
    fcf_octet,
    parse_ctc,
    parse_pps,
    ppr_frames,
    ppr_map,
    pps_fif,
    widths_for,
)

__all__ = [
    "CarrierDown",
    "CarrierUp",
    "Command",
    "Event",
    "FastTrained",
    "FaxResult",
    "Finished",
    "Hangup",
    "HdlcFrame",
    "Negotiated",
    "PageData",
    "PageDataLost",
    "PageReceived",
    "PageSent",
    "PageStored",
    "Receive",
    "SendComplete",
    "SendEcmFrames",
    "SendHdlc",
    "SendPage",
    "SendTcf",
    "SendTone",
    "Silence",
    "SourcePage",
    "State",
    "T30Config",
    "T30Engine",
    "TcfResult",
    "ToneDetected",
    "longest_zero_run",
]

Role = Literal["calling", "answering"]
Direction = Literal["transmit", "receive"]
Carrier = Literal["v21", "fast"]
PageArray = npt.NDArray[np.uint8]

# -- T.30 timers (seconds) ------------------------------------------------------------------------------

T1: Final = 35.0
"""T.30 timer T1, 35 +- 5 s: time to identify the far end in phase B."""
T2: Final = 6.0
"""T.30 timer T2, 6 +- 1 s: a receiver waiting for a command or for the image."""
T3: Final = 10.0
"""T.30 timer T3, 10 +- 5 s: operator intervention after PIP/PIN (no operator here: unused)."""
T4: Final = 3.0
"""T.30 timer T4, 3 s +- 15 %: a transmitter waiting for a response to a command."""
T5: Final = 60.0
"""T.30 timer T5, 60 +- 5 s: ECM, a transmitter repeating RR while the receiver answers RNR."""
MAX_V21_BURST: Final = 10.0
"""Longest V.21 burst waited for before T4 runs again (1 s of flags and a few frames of at most 3 s)."""
GAP_MS: Final = 75
"""T.30 §5 notes 3 and 4: 75 +- 20 ms between a V.21 signal and a high-speed one, either way."""
TCF_MS: Final = 1500
"""T.30 TCF: 1.5 s +- 10 % of zeros with the image modem."""
CED_MS: Final = 3000
"""T.30 CED: 2100 Hz for 2.6 to 4.0 s."""
TCF_MAX: Final = TCF_MS * 1.1 / 1000
"""Longest TCF a receiver has to wait for (1.5 s + 10 %)."""
TCF_MIN: Final = TCF_MS * 0.9 / 1000
"""Shortest TCF: an image-modem signal that ends sooner after DCS is not a whole TCF."""
LONG_TRAIN: Final[dict[Modem, float]] = {"v17": 1.4, "v29": 0.26, "v27ter": 1.15}
"""Long training sequence in seconds, rounded up: V.17 Table 4 (~1393 ms), V.29 Table 4 (~253 ms),
V.27 ter 2400 bit/s with the optional echo-protection tone (~943 + 205 ms)."""

#: Pels per inch (across, down) of each resolution, as TIFF Class F writes them (204 dpi for 8 pels/mm,
#: 98 / 196 / 392 lines per inch for 3.85 / 7.7 / 15.4 lines/mm).
DPI: Final[dict[Resolution, tuple[float, float]]] = {
    "standard": (204.0, 98.0),
    "fine": (204.0, 196.0),
    "superfine": (204.0, 392.0),
    "300": (300.0, 300.0),
}
#: T.4 §4.2.1: MR codes every K-th line one-dimensionally.
MR_K: Final[dict[Resolution, int]] = {"standard": 2, "fine": 4, "superfine": 8, "300": 4}
_LOWER: Final[dict[Resolution, Resolution]] = {"superfine": "fine", "fine": "standard"}


# -- configuration --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class T30Config:
    """Local capabilities and procedure limits.

    Attributes
    ----------
    ident : str
        Our identity, sent as CSI / TSI / CIG (20 characters at most: digits, "+" and space).
    sub_address : str
        Transmit: SUB sent with DCS when the far end accepts subaddresses ("" = none).
    modems : tuple of str
        Modems we may use: a combination T.30 Table 2 can advertise ({v27ter}, {v29}, {v27ter, v29},
        {v27ter, v29, v17}).
    max_rate : int
        Highest signalling rate to start with (bit/s).
    ecm : bool
        Error correction mode offered / used when the far end has it.
    ecm_frame_size : {256, 64}
        Octets per ECM frame when transmitting.
    compressions : tuple of {"mh", "mr", "mmr"}
        Codings offered / used (MH always works; MMR needs ECM).
    resolutions : tuple of {"standard", "fine", "superfine", "300"}
        Resolutions we can receive (standard is always accepted).
    max_width : int
        Widest scan line we can receive: 0 = 215 mm (A4), 1 = 255 mm (B4), 2 = 303 mm (A3).
    min_scan_ms : int
        Receive: minimum scan-line time we ask for (0, 5, 10, 20 or 40 ms).
    t1, t2, t4, t5 : float
        T.30 timers in seconds.
    command_tries : int
        Times a command is sent before giving up (T.30: three).
    ppr_limit : int
        ECM: PPRs for one block before CTC or EOR (T.30 Annex A: four).
    ctc_step_down : bool
        ECM: CTC asks for the next lower rate (T.30 Annex A lets the transmitter choose); False keeps
        the rate, for receivers that do not follow a rate change in CTC.
    ctc_limit : int
        ECM: CTCs for one block before EOR.
    page_retries : int
        Times a page is sent again after RTN / PIN.
    tcf_min_seconds : float
        Receive: TCF passes when its longest run of zeros lasts this long.
    tcf_margin : float
        Receive: seconds past the latest end of a TCF (gap, long training and 1.65 s after DCS) before
        a TCF that never came, or failed, is answered with FTT; once more if a signal is still on then.
        It must leave the FTT time to start before the transmitter's T4 (3 s after its TCF).
    copy_quality_good, copy_quality_poor : float
        Receive, non-ECM: fraction of bad rows below which a page gets MCF, or RTP; RTN above.
    store_wait : float
        Receive, ECM: seconds to wait for :class:`PageStored` before answering RNR.
    """

    ident: str = ""
    sub_address: str = ""
    modems: tuple[Modem, ...] = ("v17", "v29", "v27ter")
    max_rate: int = 14400
    ecm: bool = True
    ecm_frame_size: int = 256
    compressions: tuple[Compression, ...] = ("mmr", "mr", "mh")
    resolutions: tuple[Resolution, ...] = ("standard", "fine", "superfine", "300")
    max_width: int = 2
    min_scan_ms: int = 0
    t1: float = T1
    t2: float = T2
    t4: float = T4
    t5: float = T5
    command_tries: int = 3
    ppr_limit: int = 4
    ctc_step_down: bool = True
    ctc_limit: int = 3
    page_retries: int = 2
    tcf_min_seconds: float = 1.0
    tcf_margin: float = 1.0
    copy_quality_good: float = 0.05
    copy_quality_poor: float = 0.15
    store_wait: float = 1.5
    ced_ms: int = CED_MS
    gap_ms: int = GAP_MS
    tcf_ms: int = TCF_MS

    def __post_init__(self) -> None:
        if "v17" in self.modems and set(self.modems) != {"v17", "v29", "v27ter"}:
            raise ValueError("V.17 can only be offered together with V.29 and V.27 ter (T.30 Table 2)")
        if not set(self.modems) <= {"v17", "v29", "v27ter"}:
            raise ValueError(f"unknown modem in {self.modems}")
        if self.ecm_frame_size not in (64, 256):
            raise ValueError("ecm_frame_size must be 64 or 256")
        if self.min_scan_ms not in (0, 5, 10, 20, 40):
            raise ValueError("min_scan_ms must be 0, 5, 10, 20 or 40")
        if self.max_width not in (0, 1, 2):
            raise ValueError("max_width must be 0, 1 or 2")
        if self.command_tries < 1 or self.ppr_limit < 1 or self.page_retries < 0:
            raise ValueError("command_tries and ppr_limit must be >= 1, page_retries >= 0")
        if self.tcf_margin < 0:
            raise ValueError("tcf_margin must be >= 0")
        if not 0 <= self.copy_quality_good <= self.copy_quality_poor <= 1:
            raise ValueError("need 0 <= copy_quality_good <= copy_quality_poor <= 1")


class SourcePage(Protocol):
    """A page to send: ``ums.render.page.FaxPage`` fits."""

    @property
    def pels(self) -> PageArray: ...

    @property
    def xdpi(self) -> float: ...

    @property
    def ydpi(self) -> float: ...


# -- events (transport -> engine) ---------------------------------------------------------------------


@dataclass(frozen=True)
class HdlcFrame:
    """A received HDLC frame without flags and FCS; ``crc_ok`` is the FCS check.

    V.21 control frames, and in ECM the FCD / RCP frames from the image modem.
    """

    data: bytes
    crc_ok: bool = True


@dataclass(frozen=True)
class CarrierUp:
    """A carrier (V.21 flags, or the image modem) appeared."""

    kind: Carrier


@dataclass(frozen=True)
class CarrierDown:
    """A carrier ended: the end of a V.21 burst, of TCF, of a page or of an ECM block."""

    kind: Carrier


@dataclass(frozen=True)
class FastTrained:
    """The image-modem receiver finished training (``ok``) or failed to."""

    ok: bool


@dataclass(frozen=True)
class TcfResult:
    """TCF received: the longest run of zero bits (see :func:`longest_zero_run`).

    Report it before the :class:`CarrierDown` ("fast") that ends the TCF.
    """

    longest_zero_run: int


@dataclass(frozen=True)
class PageData:
    """Non-ECM image data after training, descrambled, line order (first bit in the LSB).

    ``end`` marks the end of the page (T.38 ``t4-non-ecm-sig-end``); a :class:`CarrierDown`
    ("fast") ends it as well.
    """

    data: bytes
    end: bool = False


@dataclass(frozen=True)
class PageDataLost:
    """Non-ECM image data of the page being received was lost here (e.g. T.38 packets that never came).

    ``octets`` is how much was lost when the transport knows or can estimate it (None: unknown).  Lost
    data removes rows rather than damaging them, so the T.4 decoder cannot see it; the engine counts
    the rows it estimates lost (at least one per report) as bad rows in the copy-quality check.
    """

    octets: int | None = None


@dataclass(frozen=True)
class SendComplete:
    """Everything the engine asked to transmit so far has been sent."""


@dataclass(frozen=True)
class ToneDetected:
    """CNG or CED heard (informational)."""

    tone: Literal["cng", "ced"]


@dataclass(frozen=True)
class PageStored:
    """The page of a :class:`PageReceived` is durable; the engine may now confirm it."""

    page_no: int


@dataclass(frozen=True)
class Hangup:
    """The call is gone (BYE, on-hook, media lost)."""


Event = (
    HdlcFrame
    | CarrierUp
    | CarrierDown
    | FastTrained
    | TcfResult
    | PageData
    | PageDataLost
    | SendComplete
    | ToneDetected
    | PageStored
    | Hangup
)


# -- commands (engine -> transport) -------------------------------------------------------------------


@dataclass(frozen=True)
class SendTone:
    """Send CNG (``duration_ms`` None: the 0.5 s on / 3 s off cadence until the next transmit command)
    or CED (2100 Hz for ``duration_ms``)."""

    tone: Literal["cng", "ced"]
    duration_ms: int | None = None


@dataclass(frozen=True)
class Silence:
    """Send nothing for ``ms`` milliseconds (the 75 ms gaps of T.30 §5 notes 3 and 4)."""

    ms: int


@dataclass(frozen=True)
class SendHdlc:
    """Send frames on V.21 channel 2 (T.30 §5.3: 1 s of flags first, FCS added by the transport),
    then drop the carrier."""

    frames: tuple[bytes, ...]


@dataclass(frozen=True)
class SendTcf:
    """Send the training check: image-modem training (long), then ``duration_ms`` of zeros."""

    modem: Modem
    rate: int
    duration_ms: int = TCF_MS


@dataclass(frozen=True)
class SendPage:
    """Send one non-ECM page: training (short for V.17 after TCF at this rate), then ``data``."""

    modem: Modem
    rate: int
    data: bytes
    short_train: bool


@dataclass(frozen=True)
class SendEcmFrames:
    """Send HDLC frames with the image modem (ECM phase C): FCD frames, then RCP."""

    modem: Modem
    rate: int
    frames: tuple[bytes, ...]
    short_train: bool


@dataclass(frozen=True)
class Receive:
    """Listen for V.21 only, or for the image modem and V.21 together (``kind`` "fast")."""

    kind: Carrier
    modem: Modem | None = None
    rate: int | None = None
    short_train: bool = False


@dataclass(frozen=True)
class Negotiated:
    """The mode in use after a successful training check (CFR)."""

    modem: Modem
    rate: int
    ecm: bool
    frame_size: int
    resolution: Resolution
    compression: Compression
    width: int
    min_scan_ms: int
    remote_ident: str
    remote_sub: str


@dataclass(frozen=True, eq=False)
class PageReceived:
    """A received page; store it, then send :class:`PageStored` with ``page_no``."""

    page_no: int
    pels: PageArray
    xdpi: float
    ydpi: float
    resolution: Resolution
    compression: Compression
    ecm: bool
    bad_rows: int
    longest_bad_run: int
    quality: Literal["perfect", "good", "poor", "ecm", "ecm-errors"]


@dataclass(frozen=True)
class PageSent:
    """A page the far end confirmed (``response`` MCF, RTP, PIP or ERR)."""

    page_no: int
    rows: int
    resolution: Resolution
    compression: Compression
    ecm: bool
    octets: int
    response: str


@dataclass(frozen=True)
class FaxResult:
    """How the call ended.

    ``success`` is true for a transmitter only after the confirmation of the last page, for a
    receiver only once the EOP page is confirmed and the call ends.  ``pages`` counts confirmed
    pages.  ``code`` is a short machine-readable reason ("ok", "hangup", "t1", ...).
    """

    success: bool
    code: str
    reason: str
    pages: int
    role: Role
    direction: Direction
    modem: Modem | None = None
    rate: int | None = None
    ecm: bool = False
    resolution: Resolution | None = None
    compression: Compression | None = None
    remote_ident: str = ""
    bad_rows: int = 0


@dataclass(frozen=True)
class Finished:
    """T.30 is over: hang up the call and report ``result``."""

    result: FaxResult


Command = (
    SendTone
    | Silence
    | SendHdlc
    | SendTcf
    | SendPage
    | SendEcmFrames
    | Receive
    | Negotiated
    | PageReceived
    | PageSent
    | Finished
)
_SENDS: Final = (SendHdlc, SendTcf, SendPage, SendEcmFrames, Silence)


class State(Enum):
    """Engine states, after the nodes of the T.30 flow charts (Figure 5-2, Annex A)."""

    IDLE = "idle"
    T = "T"  # phase B, calling: waiting for DIS
    R = "R"  # phase B, answering: DIS sent, waiting for a command
    R_DTC = "R_DTC"  # phase B, calling receiver: DTC sent, waiting for DCS
    D = "D"  # transmitter: DCS + TCF sent, waiting for CFR / FTT
    II_Q = "II_Q"  # transmitter, non-ECM: page + MPS/EOM/EOP sent, waiting for the response
    IV_PPS = "IV_PPS"  # transmitter, ECM: block + PPS sent, waiting for the response
    IV_RR = "IV_RR"  # transmitter, ECM: RR sent after RNR
    IV_CTC = "IV_CTC"  # transmitter, ECM: CTC sent, waiting for CTR
    IV_EOR = "IV_EOR"  # transmitter, ECM: EOR sent, waiting for ERR
    F_TCF = "F_TCF"  # receiver: DCS received, checking TCF
    F_DOC_NON_ECM = "F_DOC_NON_ECM"  # receiver: waiting for / receiving a non-ECM page
    F_POST_DOC_NON_ECM = "F_POST_DOC_NON_ECM"  # receiver: page ended, waiting for MPS/EOM/EOP
    F_DOC_ECM = "F_DOC_ECM"  # receiver: waiting for / receiving ECM frames
    F_POST_DOC_ECM = "F_POST_DOC_ECM"  # receiver: block ended, waiting for PPS
    F_STORE = "F_STORE"  # receiver: page handed out, waiting for PageStored
    F_COMMAND = "F_COMMAND"  # receiver: after FTT / RTN / RTP, waiting for a command
    F_POST_EOP = "F_POST_EOP"  # receiver: EOP confirmed, waiting for DCN
    F_POST_EOM = "F_POST_EOM"  # receiver: EOM confirmed, phase B after T2
    E = "E"  # phase E: DCN being sent
    CALL_FINISHED = "finished"


_TX_WAIT: Final = frozenset({State.D, State.II_Q, State.IV_PPS, State.IV_RR, State.IV_CTC, State.IV_EOR})
_POST_PAGE: Final = {
    Fcf.MPS: Fcf.MPS,
    Fcf.EOM: Fcf.EOM,
    Fcf.EOP: Fcf.EOP,
    Fcf.PRI_MPS: Fcf.MPS,
    Fcf.PRI_EOM: Fcf.EOM,
    Fcf.PRI_EOP: Fcf.EOP,
}


def longest_zero_run(data: bytes) -> int:
    """Longest run of zero bits in ``data``, line order (first bit in the LSB), for :class:`TcfResult`."""
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    if not len(bits):
        return 0
    edges = np.flatnonzero(np.diff(np.concatenate(([1], bits, [1])).astype(np.int8)))
    runs = edges[1::2] - edges[::2]
    return int(runs.max()) if len(runs) else 0


def _strip_before_eol(data: bytes) -> int | None:
    """Bit index (line order) where the first EOL's 11 zeros begin, None if there is none yet."""
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    ones = np.flatnonzero(bits)
    if not len(ones):
        return None
    gaps = np.diff(np.concatenate(([-1], ones))) - 1
    hit = np.flatnonzero(gaps >= 11)
    return int(ones[hit[0]]) - 11 if len(hit) else None


def _source_resolution(page: SourcePage) -> Resolution:
    if abs(page.xdpi - 300) < 30 and abs(page.ydpi - 300) < 30:
        return "300"
    if page.ydpi < 147:
        return "standard"
    return "fine" if page.ydpi < 294 else "superfine"


@dataclass
class _TxPage:
    """A page prepared for the far end's capabilities."""

    pels: PageArray
    resolution: Resolution
    width_code: int

    def mode(self) -> tuple[Resolution, int]:
        return self.resolution, self.width_code


@dataclass
class _Pending:
    """A receiver response held back until the page is stored."""

    page_no: int
    response: Fcf
    post: Fcf
    ecm: bool
    bad_rows: int
    stored: bool = False
    rnr_sent: bool = False


class T30Engine:
    """One T.30 call; see the module docstring and ``docs/t30.md``.

    Parameters
    ----------
    config : T30Config
    role : {"calling", "answering"}
        The calling terminal sends CNG and waits for DIS; the answering one sends CED and DIS.
    direction : {"transmit", "receive"}
        Whether this terminal sends the document (a calling receiver polls with DTC; an answering
        transmitter offers its document in DIS).
    documents : iterable of SourcePage
        Transmit: the pages, consumed one ahead of the page being sent.
    """

    def __init__(
        self,
        config: T30Config | None = None,
        role: Role = "calling",
        direction: Direction = "transmit",
        documents: Iterable[SourcePage] = (),
    ) -> None:
        if role not in ("calling", "answering") or direction not in ("transmit", "receive"):
            raise ValueError("role must be calling/answering and direction transmit/receive")
        self.config = config or T30Config()
        self.role: Role = role
        self.direction: Direction = direction
        self.state = State.IDLE
        self.result: FaxResult | None = None
        self._docs: Iterator[SourcePage] = iter(documents)
        self._out: list[Command] = []
        self._now = 0.0
        self._timers: dict[str, float] = {}
        self._pending_timers: dict[str, float] = {}
        self._contact = False  # a valid frame came from the far end
        self._last_valid = 0.0  # when the last valid control frame arrived
        self._fast_active = False  # an image-modem signal started since the last Receive
        self._tx_busy = False
        self._x = False  # T.30 §5.3.6 (X bit): we received a valid DIS
        self._remote_ident = ""
        self._remote_sub = ""
        self._remote_dis: Dis | None = None
        self._dcs: Dcs | None = None
        self._trained: tuple[str, int] | None = None
        self._rx_mode: Receive = Receive("v21")
        # V.21 burst bookkeeping
        self._bad_in_burst = False
        self._handled_in_burst = False
        self._t4_suspended = False
        # transmitter: command repetition
        self._cmd: list[Command] = []
        self._cmd_repeat: list[Command] = []
        self._cmd_name = ""
        self._tries = 0
        # transmitter: pages
        self._rate_index: int | None = None
        self._src: list[SourcePage | None] = []  # [current, next] source pages, None = no more
        self._cur: _TxPage | None = None
        self._post: Fcf = Fcf.EOP
        self._page_retries = 0
        self._pages_done = 0
        self._tx_data = b""
        self._tx_compression: Compression = "mh"
        self._tx_ecm = False
        self._blocks: list[list[bytes]] = []
        self._block_index = 0
        self._burst: list[int] = []
        self._ppr_count = 0
        self._ctc_count = 0  # CTCs sent for the current block
        self._ctc_from: tuple[Modem, int] | None = None  # the mode before the last CTC
        self._rr_context: Fcf = Fcf.PPS
        # receiver
        self._last_response: tuple[Frame, list[Command], State] | None = None
        self._last_command: tuple[Fcf, bytes] | None = None
        self._data_since_response = False
        self._decoder: t4.Decoder | None = None
        self._pre_eol: bytearray | None = bytearray()
        self._page_result: t4.DecodeResult | None = None
        self._page_started = False
        self._block = BlockAssembler()
        self._ecm_page = bytearray()
        self._ecm_acked: tuple[int, int] | None = None
        self._block_ids: tuple[int, int] = (0, 0)  # (page, block) counters of the last PPS
        self._pending: _Pending | None = None
        self._rx_page_no = 0
        self._bad_rows_total = 0
        self._dis_phase_b = False  # answering: DIS repeats on T4 until T1
        self._tcf_done = False
        self._tcf_data = bytearray()
        self._tcf_since = 0.0  # when the DCS before the TCF arrived
        self._tcf_extended = False
        self._page_octets = 0  # non-ECM image octets received for the current page
        self._page_losses: list[int | None] = []  # PageDataLost reports for the current page

    # -- public API -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state is State.CALL_FINISHED

    def start(self, now: float) -> list[Command]:
        """Begin phase A/B: CNG and wait for DIS (calling), or CED and DIS (answering)."""
        if self.state is not State.IDLE:
            raise RuntimeError("start() called twice")
        self._begin(now)
        self._timers["t1"] = now + self.config.t1
        if self.role == "calling":
            self._set_rx(Receive("v21"))
            self._emit(SendTone("cng"))
            self.state = State.T
        else:
            self._send_dis(first=True)
        return self._end()

    def handle(self, event: Event, now: float) -> list[Command]:
        """Feed one transport event; returns the commands to carry out, in order."""
        self._begin(now)
        if self.state is State.CALL_FINISHED:
            return self._end()
        if isinstance(event, HdlcFrame):
            self._on_hdlc(event)
        elif isinstance(event, CarrierUp):
            self._on_carrier_up(event.kind)
        elif isinstance(event, CarrierDown):
            self._on_carrier_down(event.kind)
        elif isinstance(event, FastTrained):
            self._on_trained(event.ok)
        elif isinstance(event, TcfResult):
            self._on_tcf(event.longest_zero_run)
        elif isinstance(event, PageData):
            self._on_page_data(event.data, event.end)
        elif isinstance(event, PageDataLost):
            self._on_page_data_lost(event.octets)
        elif isinstance(event, SendComplete):
            self._on_send_complete()
        elif isinstance(event, PageStored):
            self._on_page_stored(event.page_no)
        elif isinstance(event, Hangup):
            self._on_hangup()
        # ToneDetected: informational only
        return self._end()

    def poll(self, now: float) -> list[Command]:
        """Run the timers due at ``now``."""
        self._begin(now)
        while self.state is not State.CALL_FINISHED:
            due = [(t, name) for name, t in self._timers.items() if t <= now]
            if not due:
                break
            _, name = min(due)
            del self._timers[name]
            self._on_timer(name)
        return self._end()

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must be called next (None: no timer running)."""
        if self.state is State.CALL_FINISHED or not self._timers:
            return None
        return min(self._timers.values())

    def abort(self, now: float, reason: str = "aborted locally") -> list[Command]:
        """End the call: send DCN and finish with a failure."""
        self._begin(now)
        if self.state not in (State.CALL_FINISHED, State.E):
            self._fail("aborted", reason)
        return self._end()

    # -- plumbing ---------------------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        self._now = now
        self._out = []

    def _end(self) -> list[Command]:
        out, self._out = self._out, []
        return out

    def _emit(self, *cmds: Command) -> None:
        for c in cmds:
            if isinstance(c, _SENDS) or (isinstance(c, SendTone) and c.duration_ms is not None):
                self._tx_busy = True
            if isinstance(c, Receive):
                self._rx_mode = c
                self._fast_active = False  # a new image-modem signal is awaited
        self._out.extend(cmds)

    def _set_rx(self, mode: Receive) -> None:
        self._emit(mode)

    def _arm(self, name: str, seconds: float) -> None:
        """Start a timer when the transmission in progress is complete (now if none is)."""
        self._timers.pop(name, None)
        if self._tx_busy:
            self._pending_timers[name] = seconds
        else:
            self._timers[name] = self._now + seconds

    def _stop(self, *names: str) -> None:
        for n in names:
            self._timers.pop(n, None)
            self._pending_timers.pop(n, None)

    def _frame(self, fcf: Fcf, fif: bytes = b"") -> Frame:
        return Frame(fcf, fif, True, self._x)

    def _hdlc(self, frames: list[Frame]) -> SendHdlc:
        last = len(frames) - 1
        return SendHdlc(
            tuple(dataclasses.replace(f, final=i == last).to_bytes() for i, f in enumerate(frames))
        )

    def _gap(self) -> Silence:
        return Silence(self.config.gap_ms)

    def _short_train(self, modem: str, rate: int) -> bool:
        """V.17 trains short once TCF (or a long-trained burst) at this rate succeeded."""
        return modem == "v17" and self._trained == (modem, rate)

    def _hangup_reason(self) -> str:
        """Why the call ended, in words for the report (the state name goes in brackets for the log)."""
        page = self._pages_done + 1
        if self.state in (State.IDLE, State.T, State.R, State.R_DTC, State.D, State.F_TCF):
            what = "the line was dropped before any page was sent"
            if self._pages_done:
                what = f"the line was dropped before page {page} was sent"
        elif self.direction == "receive":
            what = f"the sender hung up during page {page}"
        else:
            what = f"the receiver hung up during page {page}"
        return f"{what} ({self.state.value})"

    def _result(self, success: bool, code: str, reason: str) -> FaxResult:
        d = self._dcs
        return FaxResult(
            success=success,
            code=code,
            reason=reason,
            pages=self._pages_done,
            role=self.role,
            direction=self.direction,
            modem=d.modem if d else None,
            rate=d.rate if d else None,
            ecm=d.ecm if d else False,
            resolution=d.resolution if d else None,
            compression=d.compression if d else None,
            remote_ident=self._remote_ident,
            bad_rows=self._bad_rows_total,
        )

    def _finish(self, result: FaxResult) -> None:
        self.result = result
        self.state = State.CALL_FINISHED
        self._timers.clear()
        self._pending_timers.clear()
        self._emit(Finished(result))

    def _disconnect(self, result: FaxResult) -> None:
        """Phase E: send DCN, finish when it is out."""
        self.result = result
        self._timers.clear()
        self._pending_timers.clear()
        self._emit(self._gap(), self._hdlc([self._frame(Fcf.DCN)]))
        self.state = State.E

    def _fail(self, code: str, reason: str, send_dcn: bool = True) -> None:
        result = self._result(False, code, reason)
        if send_dcn:
            self._disconnect(result)
        else:
            self._finish(result)

    # -- transmitter command / response -------------------------------------------------------------

    def _command(self, cmds: list[Command], name: str, repeat: list[Command] | None = None) -> None:
        """Send a command that expects a response; repeat it on T4 / CRP up to ``command_tries``."""
        self._cmd = cmds
        self._cmd_repeat = cmds if repeat is None else repeat
        self._cmd_name = name
        self._tries = 1
        self._t4_suspended = False
        self._emit(*cmds)
        self._arm("t4", self.config.t4)

    def _repeat_command(self, why: str) -> None:
        if self._tries >= self.config.command_tries:
            self._fail(
                "no_response", f"no valid response to {self._cmd_name} after {self._tries} tries ({why})"
            )
            return
        self._tries += 1
        self._t4_suspended = False
        self._emit(*self._cmd_repeat)
        self._arm("t4", self.config.t4)

    # -- receiver responses -------------------------------------------------------------------------

    def _respond(self, frame: Frame, after: list[Command], state: State, timer: float | None = None) -> None:
        """Send a response, then ``after`` (a Receive); remember it for repeated commands."""
        self._last_response = (frame, after, state)
        self._data_since_response = False
        self._emit(self._gap(), self._hdlc([frame]), *after)
        self.state = state
        if timer is not None:
            self._arm("t2", timer)

    def _repeat_response(self) -> None:
        if self._last_response is None:
            return
        frame, after, state = self._last_response
        self._emit(self._gap(), self._hdlc([frame]), *after)
        self.state = state
        self._arm("t2", self.config.t2)

    # -- events -----------------------------------------------------------------------------------

    def _on_send_complete(self) -> None:
        self._tx_busy = False
        for name, seconds in self._pending_timers.items():
            self._timers[name] = self._now + seconds
        self._pending_timers.clear()
        if self.state is State.E and self.result is not None:
            self._finish(self.result)

    def _on_hangup(self) -> None:
        if self.state is State.E and self.result is not None:
            self._finish(self.result)
        elif self.state is State.F_POST_EOP:
            self._finish(self._result(True, "ok", "call ended after the last page was confirmed"))
        else:
            self._finish(self._result(False, "hangup", self._hangup_reason()))

    def _on_carrier_up(self, kind: Carrier) -> None:
        if kind == "v21":
            self._bad_in_burst = False
            self._handled_in_burst = False
            if "t4" in self._timers and (self.state in _TX_WAIT or self.state in (State.R, State.R_DTC)):
                # T4 waits while the far end's flags are heard; a burst that never ends still times out.
                self._timers["t4"] = self._now + self.config.t4 + MAX_V21_BURST
                self._t4_suspended = True
        elif kind == "fast":
            self._data_since_response = True
            self._fast_active = True
            if self.state is State.F_DOC_NON_ECM:
                self._page_started = True
                self._stop("t2")
            elif self.state is State.F_DOC_ECM:
                self._stop("t2")

    def _on_carrier_down(self, kind: Carrier) -> None:
        if kind == "v21":
            garbled = self._bad_in_burst and not self._handled_in_burst
            suspended = self._t4_suspended and not self._handled_in_burst
            self._bad_in_burst = False
            self._handled_in_burst = False
            self._t4_suspended = False
            if garbled and self._receiver_waiting():
                self._send_crp()  # T.30 §5.3.6 (CRP): ask for the command again
                if suspended:
                    self._arm("t4", self.config.t4)
            elif suspended:
                if garbled and self.state in _TX_WAIT:
                    self._repeat_command("garbled response")
                else:
                    self._arm("t4", self.config.t4)
            return
        if not self._fast_active:
            return  # the end of a signal that started before the current receive mode (e.g. TCF)
        self._fast_active = False
        if self.state is State.F_TCF and not self._tcf_done:
            if self._tcf_data or self._now - self._tcf_since >= TCF_MIN:
                self._tcf_missing()
            # else: too short for a TCF (a click before it, a false start): wait for the TCF timer
        elif self.state is State.F_DOC_NON_ECM and (self._page_started or self._decoder is not None):
            self._end_nonecm_page()
        elif self.state is State.F_DOC_ECM:
            self.state = State.F_POST_DOC_ECM
            self._set_rx(Receive("v21"))
            self._arm("t2", self.config.t2)

    def _receiver_waiting(self) -> bool:
        return self.state in (
            State.R,
            State.F_COMMAND,
            State.F_POST_DOC_NON_ECM,
            State.F_POST_DOC_ECM,
            State.F_DOC_NON_ECM,
            State.F_DOC_ECM,
            State.F_POST_EOP,
            State.F_POST_EOM,
            State.F_TCF,
        ) and not (self.state is State.R and self.direction == "transmit")

    def _send_crp(self) -> None:
        mode = self._rx_mode
        self._emit(self._gap(), self._hdlc([self._frame(Fcf.CRP)]), mode)

    def _on_timer(self, name: str) -> None:
        st = self.state
        if name == "t1":
            if st in (State.T, State.R):
                self._fail(
                    "t1", "T1 expired: no valid signal from the far end in phase B", send_dcn=self._contact
                )
            return
        if name == "t5":
            if st in (State.IV_RR,):
                self._fail("t5", "T5 expired: the receiver stayed not ready")
            return
        if name == "store":
            if st is State.F_STORE and self._pending is not None and not self._pending.rnr_sent:
                self._send_rnr()
            return
        if name == "tcf":
            if st is State.F_TCF and not self._tcf_done:
                if self._fast_active and not self._tcf_extended:
                    # An image-modem signal is still on: give it one more margin to end.
                    self._tcf_extended = True
                    self._timers["tcf"] = self._now + self.config.tcf_margin
                else:
                    self._tcf_missing()
            return
        if name == "t4":
            if st in _TX_WAIT or st is State.R_DTC:
                self._repeat_command("T4 expired")
            elif st is State.R and self._dis_phase_b:
                self._send_dis(first=False)
            return
        if name == "t2":
            if st is State.F_POST_EOP:
                self._finish(self._result(True, "ok", "no DCN after the last page was confirmed"))
            elif st is State.F_POST_EOM:
                self._timers["t1"] = self._now + self.config.t1
                self._send_dis(first=False)
            elif st is State.F_TCF and not self._tcf_done:
                self._tcf_missing()
            elif st is State.F_STORE:
                self._fail("store", "the received page was not stored in time")
            elif st in (
                State.F_DOC_NON_ECM,
                State.F_DOC_ECM,
                State.F_POST_DOC_NON_ECM,
                State.F_POST_DOC_ECM,
                State.F_COMMAND,
            ):
                # The transmitter may still be repeating its command: keep listening until T1 has
                # passed without a valid frame (T.30 Figure 5-2: the receiver returns to its wait).
                if self._now - self._last_valid < self.config.t1:
                    self._timers["t2"] = self._now + self.config.t2
                else:
                    self._fail("t2", f"nothing valid from the far end for T1 (state {st.value})")

    # -- HDLC frames --------------------------------------------------------------------------------

    def _on_hdlc(self, ev: HdlcFrame) -> None:
        if self.state is State.E:
            return  # disconnecting
        if not ev.crc_ok:
            if self.state is not State.F_DOC_ECM:
                self._bad_in_burst = True
            return
        try:
            frame = Frame.parse(ev.data)
        except FrameError:
            if self.state is not State.F_DOC_ECM:
                self._bad_in_burst = True
            return
        if frame.fcf in (Fcf.FCD, Fcf.RCP):
            self._on_ecm_frame(frame)
            return
        if frame.fcf in (Fcf.CSI, Fcf.TSI, Fcf.CIG):
            self._remote_ident = decode_ident(frame.fif)
            return
        if frame.fcf is Fcf.SUB:
            self._remote_sub = decode_ident(frame.fif)
            return
        if frame.fcf in (Fcf.NSF, Fcf.NSC, Fcf.NSS, Fcf.PWD, Fcf.SEP, Fcf.SID, Fcf.PSA, Fcf.CIA, Fcf.TSA):
            return  # non-standard and optional frames: ignored
        self._handled_in_burst = True
        self._t4_suspended = False
        self._contact = True
        self._last_valid = self._now
        if frame.fcf is Fcf.DCN:
            self._on_dcn()
        elif self.state is State.T:
            self._in_t(frame)
        elif self.direction == "transmit":
            self._tx_frame(frame)
        else:
            self._rx_frame(frame)

    def _on_dcn(self) -> None:
        if self.state is State.F_POST_EOP:
            self._finish(self._result(True, "ok", "received"))
        elif self.state is State.E:
            return
        else:
            self._finish(
                self._result(False, "dcn", f"far end disconnected (DCN) in state {self.state.value}")
            )

    def _in_t(self, frame: Frame) -> None:
        """Calling terminal (or a transmitter after EOM) waiting for DIS / DTC."""
        if frame.fcf not in (Fcf.DIS, Fcf.DTC):
            return
        try:
            dis = Dis.parse(frame.fif)
        except FrameError:
            self._bad_in_burst = True
            self._handled_in_burst = False
            return
        self._stop("t1")
        if frame.fcf is Fcf.DIS:
            self._x = True
        if self.direction == "transmit":
            self._tx_capabilities(dis)
        elif not dis.ready_to_transmit:
            self._fail("nothing_to_poll", "the far end has no document to poll")
        else:
            frames = [self._frame(Fcf.CIG, encode_ident(self.config.ident))] if self.config.ident else []
            frames.append(self._frame(Fcf.DTC, self._local_dis().to_fif()))
            self.state = State.R_DTC
            self._command([self._gap(), self._hdlc(frames), Receive("v21")], "DTC")

    # -- transmitter ------------------------------------------------------------------------------

    def _tx_frame(self, frame: Frame) -> None:
        st, f = self.state, frame.fcf
        if st is State.R:
            if f is Fcf.DTC:
                self._stop("t1", "t4")
                self._dis_phase_b = False
                try:
                    self._tx_capabilities(Dis.parse(frame.fif))
                except FrameError:
                    self._fail("invalid_frame", "invalid DTC")
            elif f is Fcf.DCS:
                self._fail("not_receiving", "the far end wants to send; this terminal only transmits")
            return
        if f is Fcf.CRP and st in _TX_WAIT:
            self._repeat_command("CRP")
            return
        if st is State.D:
            if f is Fcf.CFR:
                self._stop("t4")
                self._trained = self._mode()
                self._emit_negotiated()
                self._send_page()
            elif f is Fcf.FTT:
                self._stop("t4")
                if not self._step_down():
                    self._fail("ftt", "training failed at the lowest rate (FTT)")
                    return
                self._send_dcs()
            elif f in (Fcf.DIS, Fcf.DTC):
                self._repeat_command("DIS received again")
        elif st is State.II_Q:
            self._tx_post_page_response(f)
        elif st in (State.IV_PPS, State.IV_RR):
            self._tx_ecm_response(frame)
        elif st is State.IV_CTC:
            if f is Fcf.CTR:
                self._stop("t4")
                self._ppr_count = 0
                if self._ctc_from != self._mode():
                    self._emit_negotiated()  # the rate changed with CTC
                self._send_burst(self._burst)
        elif st is State.IV_EOR:
            if f is Fcf.ERR:
                self._stop("t4", "t5")
                self._block_done("ERR")
            elif f is Fcf.RNR:
                self._rr_context = Fcf.EOR
                self._send_rr()

    def _mode(self) -> tuple[Modem, int]:
        assert self._rate_index is not None
        return FALLBACK[self._rate_index]

    def _tx_capabilities(self, dis: Dis) -> None:
        self._remote_dis = dis
        if not dis.ready_to_receive:
            self._fail("not_receiving", "the far end cannot receive (DIS bit 10 clear)")
            return
        allowed = [
            i
            for i, (modem, rate) in enumerate(FALLBACK)
            if modem in self.config.modems and rate <= self.config.max_rate and dis.supports(modem, rate)
        ]
        if not allowed:
            self._fail("incompatible", "no modem in common")
            return
        if self._rate_index is None or self._rate_index not in allowed:
            self._rate_index = allowed[0]
        if not self._src:
            self._src = [self._next_source(), None]
            self._src[1] = self._next_source()
        if self._src[0] is None:
            self._fail("no_pages", "nothing to send")
            return
        if not self._prepare_page():
            return
        self._send_dcs()

    def _next_source(self) -> SourcePage | None:
        return next(self._docs, None)

    def _convert(self, page: SourcePage) -> _TxPage | None:
        """The page as the far end can take it: resolution reduced, width padded; None if impossible."""
        dis = self._remote_dis
        assert dis is not None
        pels = np.asarray(page.pels)
        pels = pels if pels.dtype == np.uint8 and pels.max(initial=0) <= 1 else (pels != 0).astype(np.uint8)
        res = _source_resolution(page)
        while not dis.supports_resolution(res):
            if res not in _LOWER:
                return None
            pels = pels[::2]
            res = _LOWER[res]
        widths = widths_for(res)
        fits = [code for code, w in enumerate(widths) if w >= pels.shape[1]]
        if not fits or fits[0] > dis.max_width:
            return None
        code = fits[0]
        if pels.shape[1] < widths[code]:
            padded = np.zeros((pels.shape[0], widths[code]), np.uint8)
            padded[:, : pels.shape[1]] = pels
            pels = padded
        return _TxPage(pels, res, code)

    def _prepare_page(self) -> bool:
        """Convert the current page for the far end and choose the coding; False if impossible."""
        src = self._src[0]
        assert src is not None and self._remote_dis is not None
        page = self._convert(src)
        if page is None:
            self._fail("incompatible", "the far end cannot take the page's resolution or width")
            return False
        self._cur = page
        dis = self._remote_dis
        self._tx_ecm = self.config.ecm and dis.ecm
        comps = self.config.compressions
        if self._tx_ecm and dis.mmr and "mmr" in comps:
            self._tx_compression = "mmr"
        elif dis.mr and "mr" in comps:
            self._tx_compression = "mr"
        else:
            self._tx_compression = "mh"
        self._post = self._post_command()
        return True

    def _post_command(self) -> Fcf:
        nxt = self._src[1]
        if nxt is None:
            return Fcf.EOP
        assert self._cur is not None
        conv = self._convert(nxt)
        if conv is None or conv.mode() != self._cur.mode():
            return Fcf.EOM
        return Fcf.MPS

    def _build_dcs(self) -> Dcs:
        assert self._cur is not None and self._remote_dis is not None
        modem, rate = self._mode()
        return Dcs(
            modem=modem,
            rate=rate,
            resolution=self._cur.resolution,
            compression=self._tx_compression,
            width_code=self._cur.width_code,
            length=2 if self._remote_dis.max_length == 2 else 0,
            min_scan_ms=0 if self._tx_ecm else self._remote_dis.min_scan_for(self._cur.resolution),
            ecm=self._tx_ecm,
            frame_size=self.config.ecm_frame_size,
            receive=True,
            subaddress=bool(self.config.sub_address) and self._remote_dis.subaddressing,
        )

    def _send_dcs(self) -> None:
        dcs = self._build_dcs()
        self._dcs = dcs
        frames = []
        if self.config.ident:
            frames.append(self._frame(Fcf.TSI, encode_ident(self.config.ident)))
        if dcs.subaddress:
            frames.append(self._frame(Fcf.SUB, encode_ident(self.config.sub_address)))
        frames.append(self._frame(Fcf.DCS, dcs.to_fif()))
        self.state = State.D
        self._trained = None
        cmds: list[Command] = [
            self._gap(),
            self._hdlc(frames),
            self._gap(),
            SendTcf(dcs.modem, dcs.rate, self.config.tcf_ms),
            Receive("v21"),
        ]
        self._command(cmds, "DCS")

    def _step_down(self) -> bool:
        """One step down the fall-back ladder (FTT, RTN, CTC); the mode in use follows."""
        assert self._rate_index is not None and self._remote_dis is not None
        for i in range(self._rate_index + 1, len(FALLBACK)):
            modem, rate = FALLBACK[i]
            if modem in self.config.modems and self._remote_dis.supports(modem, rate):
                self._rate_index = i
                if self._dcs is not None:
                    self._dcs = dataclasses.replace(self._dcs, modem=modem, rate=rate)
                return True
        return False

    def _emit_negotiated(self) -> None:
        d = self._dcs
        assert d is not None
        self._emit(
            Negotiated(
                d.modem,
                d.rate,
                d.ecm,
                d.frame_size,
                d.resolution,
                d.compression,
                d.width,
                d.min_scan_ms,
                self._remote_ident,
                self._remote_sub,
            )
        )

    def _send_page(self) -> None:
        """Phase C for the current page (after CFR, or after MCF to MPS)."""
        assert self._cur is not None and self._dcs is not None
        modem, rate = self._mode()
        if self._tx_ecm:
            self._tx_data = t4.encode(
                self._cur.pels, compression=self._tx_compression, k=MR_K[self._cur.resolution]
            )
            self._blocks = split_blocks(self._tx_data, self.config.ecm_frame_size)
            self._block_index = 0
            self._ppr_count = 0
            self._ctc_count = 0
            self._send_burst(list(range(len(self._blocks[0]))))
            return
        min_bits = rate * self._dcs.min_scan_ms // 1000
        self._tx_data = t4.encode(
            self._cur.pels,
            compression=self._tx_compression,
            k=MR_K[self._cur.resolution],
            min_row_bits=min_bits,
        )
        post = self._hdlc([self._frame(self._post)])
        self.state = State.II_Q
        self._command(
            [
                self._gap(),
                SendPage(modem, rate, self._tx_data, self._short_train(modem, rate)),
                self._gap(),
                post,
                Receive("v21"),
            ],
            self._post.name,
            repeat=[self._gap(), post, Receive("v21")],
        )

    def _send_burst(self, numbers: list[int]) -> None:
        """ECM phase C: the frames ``numbers`` of the current block, RCP, then PPS."""
        modem, rate = self._mode()
        block = self._blocks[self._block_index]
        self._burst = numbers
        frames = tuple(fcd_frame(n, block[n]) for n in numbers) + tuple(rcp_frames())
        last_block = self._block_index == len(self._blocks) - 1
        fcf2 = self._post if last_block else Fcf.NULL
        pps = self._hdlc(
            [self._frame(Fcf.PPS, pps_fif(fcf2, self._x, self._pages_done, self._block_index, len(numbers)))]
        )
        short = self._short_train(modem, rate)
        self._trained = (modem, rate)
        self.state = State.IV_PPS
        self._command(
            [self._gap(), SendEcmFrames(modem, rate, frames, short), self._gap(), pps, Receive("v21")],
            f"PPS-{fcf2.name}",
            repeat=[self._gap(), pps, Receive("v21")],
        )

    def _send_rr(self) -> None:
        if "t5" not in self._timers:
            self._timers["t5"] = self._now + self.config.t5
        self.state = State.IV_RR
        self._command([self._gap(), self._hdlc([self._frame(Fcf.RR)]), Receive("v21")], "RR")

    def _tx_ecm_response(self, frame: Frame) -> None:
        f = frame.fcf
        if f is Fcf.MCF or (f is Fcf.ERR and self._rr_context is Fcf.EOR):
            self._stop("t4", "t5")
            self._block_done(f.name)
        elif f is Fcf.PPR:
            self._stop("t4", "t5")
            block = self._blocks[self._block_index]
            wanted = [n for n in ppr_frames(frame.fif) if n < len(block)]
            if not wanted:
                self._block_done("MCF")
                return
            self._ppr_count += 1
            self._burst = wanted
            self._ctc_from = self._mode()
            if self._ppr_count < self.config.ppr_limit:
                self._send_burst(wanted)
            elif self._ctc_count < self.config.ctc_limit and (
                not self.config.ctc_step_down or self._step_down()
            ):
                self._ctc_count += 1
                modem, rate = self._mode()
                self._trained = None
                self.state = State.IV_CTC
                self._command(
                    [self._gap(), self._hdlc([self._frame(Fcf.CTC, ctc_fif(modem, rate))]), Receive("v21")],
                    "CTC",
                )
            else:
                last_block = self._block_index == len(self._blocks) - 1
                fcf2 = self._post if last_block else Fcf.NULL
                fif = bytes((fcf_octet(fcf2, self._x),))
                self._rr_context = Fcf.EOR
                self.state = State.IV_EOR
                self._command([self._gap(), self._hdlc([self._frame(Fcf.EOR, fif)]), Receive("v21")], "EOR")
        elif f is Fcf.RNR:
            self._stop("t4")
            self._send_rr()

    def _block_done(self, response: str) -> None:
        self._ppr_count = 0
        self._ctc_count = 0
        self._rr_context = Fcf.PPS
        if self._block_index + 1 < len(self._blocks):
            self._block_index += 1
            self._send_burst(list(range(len(self._blocks[self._block_index]))))
            return
        self._page_confirmed(response)

    def _tx_post_page_response(self, f: Fcf) -> None:
        if f in (Fcf.MCF, Fcf.PIP, Fcf.RTP):
            self._stop("t4")
            self._page_confirmed(f.name)
        elif f in (Fcf.RTN, Fcf.PIN):
            self._stop("t4")
            self._page_retries += 1
            if self._page_retries > self.config.page_retries:
                self._fail(
                    "rtn", f"page {self._pages_done + 1} rejected ({f.name}) {self._page_retries} times"
                )
                return
            self._step_down()
            self._send_dcs()

    def _page_confirmed(self, response: str) -> None:
        assert self._cur is not None
        self._pages_done += 1
        self._page_retries = 0
        self._emit(
            PageSent(
                self._pages_done,
                int(self._cur.pels.shape[0]),
                self._cur.resolution,
                self._tx_compression,
                self._tx_ecm,
                len(self._tx_data),
                response,
            )
        )
        post = self._post
        self._src = [self._src[1], self._next_source() if self._src[1] is not None else None]
        if post is Fcf.EOP or self._src[0] is None:
            self._disconnect(self._result(True, "ok", "all pages sent and confirmed"))
            return
        if not self._prepare_page():
            return
        if post is Fcf.EOM:
            self.state = State.T
            self._set_rx(Receive("v21"))
            self._arm("t1", self.config.t1)
        elif response == "RTP":
            self._send_dcs()
        else:
            self._dcs = self._build_dcs()
            self._send_page()

    # -- receiver -----------------------------------------------------------------------------------

    def _local_dis(self) -> Dis:
        cfg = self.config
        receive = self.direction == "receive"
        return Dis(
            modems=frozenset(cfg.modems),
            ready_to_receive=receive,
            ready_to_transmit=not receive,
            fine="fine" in cfg.resolutions,
            superfine="superfine" in cfg.resolutions,
            r300="300" in cfg.resolutions,
            mr="mr" in cfg.compressions,
            mmr="mmr" in cfg.compressions and cfg.ecm,
            ecm=cfg.ecm,
            max_width=cfg.max_width,
            max_length=2,
            min_scan_ms=cfg.min_scan_ms,
            subaddressing=True,
        )

    def _send_dis(self, first: bool) -> None:
        """Answering terminal (or a receiver after EOM): [CED,] CSI + DIS, repeated on T4 until T1."""
        frames = [self._frame(Fcf.CSI, encode_ident(self.config.ident))] if self.config.ident else []
        frames.append(Frame(Fcf.DIS, self._local_dis().to_fif()))
        if first:
            self._emit(SendTone("ced", self.config.ced_ms), self._gap())
        self._emit(self._hdlc(frames), Receive("v21"))
        self.state = State.R
        self._dis_phase_b = True
        self._x = False
        self._arm("t4", self.config.t4)

    def _rx_frame(self, frame: Frame) -> None:
        f = frame.fcf
        if f is Fcf.DCS:
            self._rx_dcs(frame)
            return
        if self.state is State.R_DTC:
            if f is Fcf.DIS:
                self._repeat_command("DIS received again")
            elif f is Fcf.CRP:
                self._repeat_command("CRP")
            return
        if self.state is State.F_STORE:
            # The page is being stored: ECM answers RNR (and the confirmation once stored) to the
            # transmitter's repeats and RR; non-ECM has no way to say so and stays silent.
            p = self._pending
            assert p is not None
            if p.ecm and (f in (Fcf.PPS, Fcf.EOR, Fcf.RR) or (f is Fcf.CRP and p.rnr_sent)):
                if p.stored:
                    self._confirm_page()
                else:
                    self._send_rnr()
            return
        if f is Fcf.CRP:
            self._repeat_response()
            return
        key = (f, frame.fif)
        if f is Fcf.RR:
            # RR asks again for the response to the last PPS / EOR / CTC (T.30 Annex A).
            if self._last_command is not None and self._last_command[0] in (Fcf.PPS, Fcf.EOR, Fcf.CTC):
                self._repeat_response()
            return
        if key == self._last_command and not self._data_since_response and self._last_response is not None:
            self._repeat_response()
            return
        if f in _POST_PAGE:
            self._last_command = key
            self._rx_post_page(_POST_PAGE[f])
        elif f is Fcf.PPS:
            self._last_command = key
            self._rx_pps(frame)
        elif f is Fcf.EOR:
            self._last_command = key
            self._rx_eor(frame)
        elif f is Fcf.CTC:
            self._last_command = key
            self._rx_ctc(frame)

    def _rx_dcs(self, frame: Frame) -> None:
        if self.direction == "transmit":
            self._fail("not_receiving", "the far end wants to send; this terminal only transmits")
            return
        try:
            dcs = Dcs.parse(frame.fif)
        except FrameError as exc:
            self._fail("invalid_dcs", f"invalid DCS: {exc}")
            return
        cfg = self.config
        problem = None
        if dcs.modem not in cfg.modems:
            problem = f"modem {dcs.modem} not offered"
        elif dcs.resolution != "standard" and dcs.resolution not in cfg.resolutions:
            problem = f"resolution {dcs.resolution} not offered"
        elif dcs.compression != "mh" and dcs.compression not in cfg.compressions:
            problem = f"coding {dcs.compression} not offered"
        elif dcs.ecm and not cfg.ecm:
            problem = "ECM not offered"
        elif dcs.width_code > cfg.max_width:
            problem = "scan line too wide"
        if problem:
            self._fail("invalid_dcs", f"DCS asks for a mode not offered: {problem}")
            return
        self._stop("t1", "t4", "t2")
        self._dis_phase_b = False
        self._dcs = dcs
        self._tcf_done = False
        self._tcf_data = bytearray()
        self._trained = None
        self._last_command = None
        self.state = State.F_TCF
        self._set_rx(Receive("fast", dcs.modem, dcs.rate, False))
        self._arm("t2", self.config.t2)
        # T.30 Figure 5-2: TCF follows DCS after 75 ms.  If none is judged by the time it must be over,
        # answer FTT, early enough for the transmitter to hear it before its T4 (3 s after the TCF)
        # repeats DCS; T2 would be too late, and every TCF lost would end in no_response.
        self._tcf_since = self._now
        self._tcf_extended = False
        latest_end = (GAP_MS + 20) / 1000 + LONG_TRAIN[dcs.modem] + TCF_MAX
        self._timers["tcf"] = self._now + latest_end + self.config.tcf_margin

    def _on_trained(self, ok: bool) -> None:
        self._fast_active = True
        # In F_TCF a failed training is answered (FTT) when the signal ends or the TCF timer runs out:
        # the transmitter is still sending its TCF and would not hear an FTT now.
        if self.state is State.F_DOC_NON_ECM:
            self._page_started = True
            self._stop("t2")
        elif self.state is State.F_DOC_ECM:
            self._stop("t2")

    def _on_tcf(self, zero_run: int) -> None:
        if self.state is not State.F_TCF or self._tcf_done:
            return
        self._tcf_done = True
        assert self._dcs is not None
        if zero_run >= self._dcs.rate * self.config.tcf_min_seconds:
            self._send_cfr()
        else:
            self._send_ftt()

    def _tcf_missing(self) -> None:
        """No TcfResult: judge TCF handed over as data, or answer FTT (nothing usable arrived)."""
        if self._tcf_data:
            self._on_tcf(longest_zero_run(bytes(self._tcf_data)))
        else:
            self._tcf_done = True
            self._send_ftt()

    def _send_ftt(self) -> None:
        self._stop("tcf")
        self._respond(self._frame(Fcf.FTT), [Receive("v21")], State.F_COMMAND, self.config.t2)

    def _doc_receive(self) -> Receive:
        assert self._dcs is not None
        d = self._dcs
        return Receive("fast", d.modem, d.rate, self._short_train(d.modem, d.rate))

    def _send_cfr(self) -> None:
        assert self._dcs is not None
        self._stop("tcf")
        self._trained = (self._dcs.modem, self._dcs.rate)
        self._emit_negotiated()
        self._reset_page()
        state = State.F_DOC_ECM if self._dcs.ecm else State.F_DOC_NON_ECM
        self._respond(self._frame(Fcf.CFR), [self._doc_receive()], state, self.config.t2)

    def _reset_page(self) -> None:
        self._decoder = None
        self._pre_eol = bytearray()
        self._page_result = None
        self._page_started = False
        self._block.reset()
        self._ecm_page = bytearray()
        self._page_octets = 0
        self._page_losses = []

    def _on_page_data(self, data: bytes, end: bool) -> None:
        if self.state is State.F_TCF and not self._tcf_done:
            # TCF handed over as data (e.g. T.38 t4-non-ecm-data): judged at its end.
            self._fast_active = True
            self._tcf_data += data
            if end:
                self._on_tcf(longest_zero_run(bytes(self._tcf_data)))
            return
        if self.state is not State.F_DOC_NON_ECM:
            return
        self._page_started = True
        self._data_since_response = True
        self._fast_active = True
        self._stop("t2")
        self._page_octets += len(data)
        assert self._dcs is not None
        if self._decoder is None:
            self._decoder = t4.Decoder(self._dcs.width, self._dcs.compression)
        if self._pre_eol is None:
            self._decoder.feed(data)
        elif data:
            self._pre_eol += data
            start = _strip_before_eol(bytes(self._pre_eol))
            if start is not None:  # drop what precedes the first EOL (T.4 §4.1.2)
                buf = bytearray(self._pre_eol[start >> 3 :])
                buf[0] &= (0xFF << (start & 7)) & 0xFF
                self._pre_eol = None
                self._decoder.feed(bytes(buf))
        if end:
            self._end_nonecm_page()

    def _on_page_data_lost(self, octets: int | None) -> None:
        if self.state is State.F_TCF and not self._tcf_done:
            # TCF handed over as data: a gap breaks the run of zeros (the channel is not good enough).
            self._fast_active = True
            self._tcf_data += b"\x01"
            return
        if self.state is State.F_POST_DOC_NON_ECM:
            self._page_losses.append(octets)  # noticed after the page's end: still this page's data
            return
        if self.state is not State.F_DOC_NON_ECM:
            return  # ECM finds lost frames by their numbers
        self._page_started = True
        self._data_since_response = True
        self._fast_active = True
        self._stop("t2")
        self._page_losses.append(octets)

    def _lost_rows(self, decoded_rows: int) -> tuple[int, int]:
        """Rows estimated lost with the page's missing data, and the most lost at one place.

        The octets of each loss at the page's average octets per row (of what arrived), at least one
        row per loss: the rows around a gap are spliced into one row the decoder may even accept.
        """
        per_octet = decoded_rows / self._page_octets if self._page_octets and decoded_rows else 0.0
        rows = [max(1, round(o * per_octet)) if o else 1 for o in self._page_losses]
        return sum(rows), max(rows, default=0)

    def _end_nonecm_page(self) -> None:
        if self._decoder is not None:
            self._page_result = self._decoder.finish()
            self._decoder = None
        self.state = State.F_POST_DOC_NON_ECM
        self._set_rx(Receive("v21"))
        self._arm("t2", self.config.t2)

    def _rx_post_page(self, post: Fcf) -> None:
        """Non-ECM MPS / EOM / EOP: copy-quality check, then hand the page out or answer RTN."""
        assert self._dcs is not None
        if self._dcs.ecm:
            return
        if self.state is State.F_DOC_NON_ECM and self._decoder is not None:
            self._page_result = self._decoder.finish()
            self._decoder = None
        res = self._page_result
        self._page_result = None
        self._page_started = False
        lost, most_lost = self._lost_rows(res.rows if res is not None else 0)
        self._page_octets = 0
        self._page_losses = []
        quality: Literal["perfect", "good", "poor", "bad"] = "bad"
        bad = longest = 0
        if res is not None and res.rows > 0:
            # Rows lost on the way count as bad rows of a page that had them too.
            bad = res.bad_rows + lost
            longest = max(res.longest_bad_run, most_lost)
            frac = bad / (res.rows + lost)
            if bad == 0:
                quality = "perfect"
            elif frac < self.config.copy_quality_good:
                quality = "good"
            elif frac < self.config.copy_quality_poor:
                quality = "poor"
        if res is None or quality == "bad":
            self._respond(self._frame(Fcf.RTN), [Receive("v21")], State.F_COMMAND, self.config.t2)
            return
        response = Fcf.RTP if quality == "poor" else Fcf.MCF
        self._deliver(res.page, bad, longest, quality, response, post, ecm=False)

    def _deliver(
        self,
        pels: PageArray,
        bad_rows: int,
        longest: int,
        quality: Literal["perfect", "good", "poor", "ecm", "ecm-errors"],
        response: Fcf,
        post: Fcf,
        ecm: bool,
    ) -> None:
        assert self._dcs is not None
        d = self._dcs
        self._rx_page_no += 1
        xdpi, ydpi = DPI[d.resolution]
        self._emit(
            PageReceived(
                self._rx_page_no,
                pels,
                xdpi,
                ydpi,
                d.resolution,
                d.compression,
                ecm,
                bad_rows,
                longest,
                quality,
            )
        )
        self._pending = _Pending(self._rx_page_no, response, post, ecm, bad_rows)
        self.state = State.F_STORE
        self._stop("t2")
        self._arm("t2", self.config.t5 + self.config.t2)  # longer than a transmitter keeps polling
        if ecm:
            self._timers["store"] = self._now + self.config.store_wait

    def _send_rnr(self) -> None:
        """ECM: not ready yet (the page is being stored); the transmitter polls with RR."""
        assert self._pending is not None
        self._pending.rnr_sent = True
        self._stop("store")
        self._emit(self._gap(), self._hdlc([self._frame(Fcf.RNR)]), Receive("v21"))

    def _on_page_stored(self, page_no: int) -> None:
        p = self._pending
        if self.state is not State.F_STORE or p is None or p.page_no != page_no:
            return
        p.stored = True
        self._stop("store")
        if not p.rnr_sent:  # after RNR the confirmation waits for the next RR
            self._confirm_page()

    def _confirm_page(self) -> None:
        p = self._pending
        assert p is not None
        self._pending = None
        self._stop("store", "t2")
        self._pages_done += 1
        self._bad_rows_total += p.bad_rows
        self._after_page(p.response, p.post)

    def _after_page(self, response: Fcf, post: Fcf) -> None:
        """Send the confirmation of a page and set up for what follows ``post``."""
        assert self._dcs is not None
        self._reset_page()
        frame = self._frame(response)
        if post is Fcf.EOP:
            self._respond(frame, [Receive("v21")], State.F_POST_EOP, self.config.t2)
        elif post is Fcf.EOM:
            self._respond(frame, [Receive("v21")], State.F_POST_EOM, self.config.t2)
        elif response is Fcf.RTP:
            self._respond(frame, [Receive("v21")], State.F_COMMAND, self.config.t2)
        else:
            state = State.F_DOC_ECM if self._dcs.ecm else State.F_DOC_NON_ECM
            self._respond(frame, [self._doc_receive()], state, self.config.t2)

    # -- receiver, ECM ----------------------------------------------------------------------------------

    def _on_ecm_frame(self, frame: Frame) -> None:
        if self.state not in (State.F_DOC_ECM, State.F_POST_DOC_ECM):
            return
        self._data_since_response = True
        self._fast_active = True
        self._stop("t2")
        if frame.fcf is Fcf.FCD:
            self._block.add(frame.fif)
        else:
            self._block.rcp_seen = True

    def _rx_pps(self, frame: Frame) -> None:
        assert self._dcs is not None
        if not self._dcs.ecm:
            return
        try:
            post, page, block, count = parse_pps(frame.fif)
        except FrameError:
            return
        if self._ecm_acked == (page, block) and self._last_response is not None:
            self._repeat_response()
            return
        self._block_ids = (page, block)
        # A PPS after a retransmission may count only the frames sent again: keep the largest.
        if self._block.count is None or count > self._block.count:
            self._block.count = count
        missing = self._block.missing()
        if missing:
            self._respond(
                self._frame(Fcf.PPR, ppr_map(missing)), [self._doc_receive()], State.F_DOC_ECM, self.config.t2
            )
            return
        self._block_complete(page, block, post, Fcf.MCF)

    def _block_complete(self, page: int, block: int, post: Fcf, response: Fcf) -> None:
        assert self._dcs is not None
        self._ecm_page += self._block.data(self._dcs.frame_size)
        self._block.reset()
        self._ecm_acked = (page, block)
        if post is Fcf.NULL:
            self._respond(self._frame(response), [self._doc_receive()], State.F_DOC_ECM, self.config.t2)
            return
        post = _POST_PAGE.get(post, Fcf.EOP)
        res = t4.decode(bytes(self._ecm_page), width=self._dcs.width, compression=self._dcs.compression)
        self._ecm_page = bytearray()
        quality: Literal["ecm", "ecm-errors"] = "ecm" if response is Fcf.MCF else "ecm-errors"
        self._deliver(res.page, res.bad_rows, res.longest_bad_run, quality, response, post, ecm=True)

    def _rx_eor(self, frame: Frame) -> None:
        assert self._dcs is not None
        if not self._dcs.ecm:
            return
        post = frame.fcf2 or Fcf.NULL
        self._block_complete(*self._block_ids, post, Fcf.ERR)

    def _rx_ctc(self, frame: Frame) -> None:
        assert self._dcs is not None
        try:
            modem, rate = parse_ctc(frame.fif)
        except FrameError:
            modem, rate = self._dcs.modem, self._dcs.rate  # no usable rate: keep the current one
        if modem not in self.config.modems:
            self._fail("invalid_dcs", f"CTC asks for {modem}, not offered")
            return
        changed = (modem, rate) != (self._dcs.modem, self._dcs.rate)
        self._dcs = dataclasses.replace(self._dcs, modem=modem, rate=rate)
        if changed:
            self._emit_negotiated()
        self._trained = None
        self._respond(
            self._frame(Fcf.CTR), [Receive("fast", modem, rate, False)], State.F_DOC_ECM, self.config.t2
        )
        self._trained = (modem, rate)
