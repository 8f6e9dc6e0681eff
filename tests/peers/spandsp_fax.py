"""SpanDSP's complete fax machines (T.30 over audio, and T.38 terminals) through ctypes.

What it does
------------
:class:`SpanFax` is SpanDSP's audio fax terminal (``fax_init``): T.30 with V.21/V.27ter/V.29/V.17, fed
16-bit linear samples with :meth:`SpanFax.rx` and asked for samples with :meth:`SpanFax.tx`.
:class:`SpanT38` is its T.38 terminal (``t38_terminal_init``): it hands out the IFP packets it sends
(:meth:`SpanT38.take_packets`), takes IFP packets (:meth:`SpanT38.rx_packet`) and is paced by a
simulated clock (:meth:`SpanT38.advance`).  Both send a multi-page TIFF and/or receive into one, and
report the outcome in :attr:`~SpanFax.result` (phase E completion code, pages, bit rate, ECM, far-end
ident) once :attr:`~SpanFax.done`.

:func:`run_audio_pair` connects two audio fax endpoints block by block (through an optional line model),
:func:`run_t38_pair` passes IFP packets between two T.38 endpoints on a common simulated clock.  Either
endpoint may be any object with the same methods (:class:`AudioFaxEndpoint`, :class:`T38Endpoint`), so
the same harness later runs our own T.30 engine against SpanDSP.  :func:`write_fax_tiff` and
:func:`read_fax_tiff` write pages as a TIFF Class F file and read received files back to arrays.

How it works
------------
The Debian library is spandsp 0.0.6 built from the 2011-01-22 snapshot; the declarations here follow the
headers of that snapshot (``fax.h``, ``t30.h``, ``t30_api.h``, ``t30_logging.h``, ``t38_terminal.h``,
``t38_core.h``, ``logging.h``), which differ from today's.  Every SpanDSP object is allocated by its
own ``*_init(NULL, ...)``; the only struct read from Python is ``t30_stats_t`` (:class:`T30Stats`, 15
ints, checked against the machine code of ``t30_get_transfer_statistics`` in the installed library).
Statistics are snapshotted in the phase D handler (after each page) and at phase E, since SpanDSP
releases the T.4 context when the call ends.  Log messages have no user pointer in this version
(``void (*)(int level, const char *text)``), so each object gets its own ctypes closure.
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from tests.peers import spandsp
from ums.render.page import FaxPage, Resolution
from ums.render.tiff import TiffCompression, read_tiff, write_tiff

__all__ = [
    "AudioFaxEndpoint",
    "FaxResult",
    "IfpPacket",
    "PageStats",
    "PairRun",
    "SpanFax",
    "SpanT38",
    "T30Frame",
    "T30Stats",
    "T38Endpoint",
    "available",
    "completion_text",
    "read_fax_tiff",
    "run_audio_pair",
    "run_t38_pair",
    "write_fax_tiff",
]

Samples = npt.NDArray[np.int16]
SAMPLE_RATE: Final = 8000

# t30.h (2011-01-22): T30_SUPPORT_* bit fields.
MODEMS: Final = {"v27ter": 0x01, "v29": 0x02, "v17": 0x04}
T30_SUPPORT_IAF: Final = 0x10
COMPRESSIONS: Final = {"mh": 0x02, "mr": 0x04, "mmr": 0x08}
RESOLUTIONS: Final = {
    "standard": 0x01,
    "fine": 0x02,
    "superfine": 0x04,
    "r4": 0x10000,
    "r8": 0x20000,
    "r16": 0x40000,
    "300x300": 0x100000,
    "400x400": 0x200000,
    "600x600": 0x400000,
    "1200x1200": 0x800000,
    "300x600": 0x1000000,
    "400x800": 0x2000000,
    "600x1200": 0x4000000,
}
IMAGE_SIZES: Final = {
    "215mm": 0x01,
    "255mm": 0x02,
    "303mm": 0x04,
    "unlimited": 0x10000,
    "a4": 0x20000,
    "b4": 0x40000,
    "us-letter": 0x80000,
    "us-legal": 0x100000,
}
# t4_rx.h: T4_COMPRESSION_* (the coding SpanDSP writes received pages in, t30_set_rx_encoding).
RX_ENCODINGS: Final = {"mh": 1, "mr": 2, "mmr": 3}
ENCODING_NAMES: Final = {0: "none", 1: "mh", 2: "mr", 3: "mmr", 4: "t85", 5: "t85-l0", 6: "t43", 7: "t45"}
# t38_terminal.h: T38_TERMINAL_OPTION_*.
T38_OPTION_NO_PACING: Final = 0x01
T38_OPTION_REGULAR_INDICATORS: Final = 0x02
T38_OPTION_2S_REPEATING_INDICATORS: Final = 0x04
# logging.h
SPAN_LOG_SHOW_SEVERITY: Final = 0x0400
SPAN_LOG_SHOW_PROTOCOL: Final = 0x0800
SPAN_LOG_FLOW: Final = 5
SPAN_LOG_DEBUG: Final = 8
T30_ERR_OK: Final = 0
T30_ERR_CALLDROPPED: Final = 48

# t30.h callbacks
PHASE_B_D_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
PHASE_E_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
REAL_TIME_FRAME_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_uint8), ctypes.c_int
)
# t38_core.h: int (*)(t38_core_state_t *s, void *user_data, const uint8_t *buf, int len, int count)
T38_TX_PACKET_HANDLER = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_int, ctypes.c_int
)
# logging.h (2011): void (*)(int level, const char *text); void (*)(const char *text)
MESSAGE_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p)
ERROR_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


class T30Stats(ctypes.Structure):
    """``t30_stats_t`` of t30.h at the 2011-01-22 snapshot (15 ``int``, 60 bytes)."""

    _fields_ = [
        ("bit_rate", ctypes.c_int),
        ("error_correcting_mode", ctypes.c_int),
        ("pages_tx", ctypes.c_int),
        ("pages_rx", ctypes.c_int),
        ("pages_in_file", ctypes.c_int),
        ("x_resolution", ctypes.c_int),  # pels per metre
        ("y_resolution", ctypes.c_int),
        ("width", ctypes.c_int),
        ("length", ctypes.c_int),
        ("image_size", ctypes.c_int),  # bytes on the line
        ("encoding", ctypes.c_int),  # T4_COMPRESSION_*
        ("bad_rows", ctypes.c_int),
        ("longest_bad_row_run", ctypes.c_int),
        ("error_correcting_mode_retries", ctypes.c_int),
        ("current_status", ctypes.c_int),
    ]


_declared = False


def library() -> ctypes.CDLL:
    """The shared CDLL with the fax functions declared (once)."""
    global _declared
    lib = spandsp.library()
    if not _declared:
        _declare(lib)
        _declared = True
    return lib


def available() -> bool:
    return spandsp.available()


def _declare(lib: ctypes.CDLL) -> None:
    vp, i, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    i16p = ctypes.POINTER(ctypes.c_int16)
    u8p = ctypes.POINTER(ctypes.c_uint8)
    # fax.h
    lib.fax_init.argtypes = [vp, i]
    lib.fax_init.restype = vp
    lib.fax_free.argtypes = [vp]
    lib.fax_rx.argtypes = [vp, i16p, i]
    lib.fax_rx.restype = i
    lib.fax_tx.argtypes = [vp, i16p, i]
    lib.fax_tx.restype = i
    lib.fax_set_transmit_on_idle.argtypes = [vp, i]
    lib.fax_set_tep_mode.argtypes = [vp, i]
    lib.fax_get_t30_state.argtypes = [vp]
    lib.fax_get_t30_state.restype = vp
    lib.fax_get_logging_state.argtypes = [vp]
    lib.fax_get_logging_state.restype = vp
    # t38_terminal.h, t38_core.h
    lib.t38_terminal_init.argtypes = [vp, i, T38_TX_PACKET_HANDLER, vp]
    lib.t38_terminal_init.restype = vp
    lib.t38_terminal_free.argtypes = [vp]
    lib.t38_terminal_send_timeout.argtypes = [vp, i]
    lib.t38_terminal_send_timeout.restype = i
    lib.t38_terminal_set_config.argtypes = [vp, i]
    lib.t38_terminal_set_tep_mode.argtypes = [vp, i]
    lib.t38_terminal_set_fill_bit_removal.argtypes = [vp, i]
    lib.t38_terminal_get_t30_state.argtypes = [vp]
    lib.t38_terminal_get_t30_state.restype = vp
    lib.t38_terminal_get_t38_core_state.argtypes = [vp]
    lib.t38_terminal_get_t38_core_state.restype = vp
    lib.t38_terminal_get_logging_state.argtypes = [vp]
    lib.t38_terminal_get_logging_state.restype = vp
    lib.t38_core_rx_ifp_packet.argtypes = [vp, u8p, i, ctypes.c_uint16]
    lib.t38_core_rx_ifp_packet.restype = i
    lib.t38_core_get_logging_state.argtypes = [vp]
    lib.t38_core_get_logging_state.restype = vp
    lib.t38_set_fastest_image_data_rate.argtypes = [vp, i]
    # t30.h, t30_api.h, t30_logging.h
    lib.t30_set_tx_file.argtypes = [vp, cp, i, i]
    lib.t30_set_rx_file.argtypes = [vp, cp, i]
    lib.t30_set_tx_ident.argtypes = [vp, cp]
    lib.t30_set_tx_ident.restype = i
    lib.t30_get_rx_ident.argtypes = [vp]
    lib.t30_get_rx_ident.restype = cp
    lib.t30_set_ecm_capability.argtypes = [vp, i]
    lib.t30_set_ecm_capability.restype = i
    lib.t30_set_rx_encoding.argtypes = [vp, i]
    lib.t30_set_rx_encoding.restype = i
    for name in ("modems", "compressions", "resolutions", "image_sizes"):
        getattr(lib, f"t30_set_supported_{name}").argtypes = [vp, i]
        getattr(lib, f"t30_set_supported_{name}").restype = i
    lib.t30_set_minimum_scan_line_time.argtypes = [vp, i]
    lib.t30_set_minimum_scan_line_time.restype = i
    lib.t30_set_phase_b_handler.argtypes = [vp, PHASE_B_D_HANDLER, vp]
    lib.t30_set_phase_d_handler.argtypes = [vp, PHASE_B_D_HANDLER, vp]
    lib.t30_set_phase_e_handler.argtypes = [vp, PHASE_E_HANDLER, vp]
    lib.t30_set_real_time_frame_handler.argtypes = [vp, REAL_TIME_FRAME_HANDLER, vp]
    lib.t30_get_transfer_statistics.argtypes = [vp, ctypes.POINTER(T30Stats)]
    lib.t30_get_logging_state.argtypes = [vp]
    lib.t30_get_logging_state.restype = vp
    lib.t30_call_active.argtypes = [vp]
    lib.t30_call_active.restype = i
    lib.t30_terminate.argtypes = [vp]
    lib.t30_completion_code_to_str.argtypes = [i]
    lib.t30_completion_code_to_str.restype = cp
    lib.t30_frametype.argtypes = [ctypes.c_uint8]
    lib.t30_frametype.restype = cp
    # logging.h
    lib.span_log_set_level.argtypes = [vp, i]
    lib.span_log_set_message_handler.argtypes = [vp, MESSAGE_HANDLER]
    lib.span_log_set_error_handler.argtypes = [vp, ERROR_HANDLER]


def completion_text(code: int) -> str:
    """``t30_completion_code_to_str``: the phase E completion code as SpanDSP words it."""
    text = library().t30_completion_code_to_str(code)
    return text.decode("latin-1") if text else f"code {code}"


@dataclass(frozen=True)
class PageStats:
    """Transfer statistics after one page (phase D), from ``t30_get_transfer_statistics``."""

    pages_tx: int
    pages_rx: int
    bit_rate: int
    ecm: bool
    width: int
    length: int
    x_resolution: int  # pels per metre
    y_resolution: int
    encoding: str  # the coding on the line: "mh", "mr", "mmr"
    image_size: int  # bytes on the line
    bad_rows: int
    longest_bad_row_run: int
    ecm_retries: int

    @classmethod
    def from_struct(cls, st: T30Stats) -> PageStats:
        return cls(
            pages_tx=st.pages_tx,
            pages_rx=st.pages_rx,
            bit_rate=st.bit_rate,
            ecm=bool(st.error_correcting_mode),
            width=st.width,
            length=st.length,
            x_resolution=st.x_resolution,
            y_resolution=st.y_resolution,
            encoding=ENCODING_NAMES.get(st.encoding, str(st.encoding)),
            image_size=st.image_size,
            bad_rows=st.bad_rows,
            longest_bad_row_run=st.longest_bad_row_run,
            ecm_retries=st.error_correcting_mode_retries,
        )


@dataclass(frozen=True)
class FaxResult:
    """The outcome of a call: phase E completion code and what was transferred."""

    completion_code: int | None  # None while the call is still going
    completion_text: str
    pages_tx: int
    pages_rx: int
    bit_rate: int  # of the last image transfer
    ecm: bool
    remote_ident: str  # far end's TSI / CSI / CIG
    pages: tuple[PageStats, ...]  # one entry per phase D

    @property
    def ok(self) -> bool:
        return self.completion_code == T30_ERR_OK


@dataclass(frozen=True)
class T30Frame:
    """A T.30 HDLC frame seen by SpanDSP (address, control, FCF, info; no FCS).

    ``at_samples`` is that end's clock (samples received, or T.38 time) when SpanDSP reported the frame:
    a sent frame as it is queued, a received one when it has been decoded.  The 2011 snapshot reports
    a sent DTC twice.
    """

    at_samples: int
    sent: bool
    data: bytes

    @property
    def name(self) -> str:
        """SpanDSP's name of the frame type (``t30_frametype`` of the FCF)."""
        if len(self.data) < 3:
            return "?"
        text = library().t30_frametype(self.data[2])
        return text.decode("latin-1") if text else f"0x{self.data[2]:02x}"


def _mask(names: Iterable[str], table: dict[str, int], what: str) -> int:
    mask = 0
    for name in names:
        if name not in table:
            raise ValueError(f"unknown {what} {name!r}; known: {sorted(table)}")
        mask |= table[name]
    return mask


class T30Peer:
    """What the audio and the T.38 terminal share: T.30 set-up, handlers, result, logging."""

    lib: ctypes.CDLL
    t30: Any
    calling: bool
    samples: int

    def _setup_t30(
        self,
        *,
        transmit_tiff: Path | None,
        receive_tiff: Path | None,
        ecm: bool,
        modems: Iterable[str] | None,
        ident: str,
        compressions: Iterable[str] | None,
        resolutions: Iterable[str] | None,
        image_sizes: Iterable[str] | None,
        rx_encoding: str | None,
        extra_modem_bits: int = 0,
    ) -> None:
        lib, t30 = self.lib, self.t30
        self.frames: list[T30Frame] = []
        self.phase_b: list[int] = []
        self.page_stats: list[PageStats] = []
        self.completion_code: int | None = None
        self._final: T30Stats | None = None
        self._remote_ident = ""
        if transmit_tiff is not None:
            lib.t30_set_tx_file(t30, str(transmit_tiff).encode(), -1, -1)
        if receive_tiff is not None:
            lib.t30_set_rx_file(t30, str(receive_tiff).encode(), -1)
        if len(ident.encode("latin-1")) > 20:
            raise ValueError("a T.30 ident has at most 20 characters")
        if lib.t30_set_tx_ident(t30, ident.encode("latin-1")) != 0:
            raise ValueError(f"ident {ident!r} refused")
        lib.t30_set_ecm_capability(t30, int(ecm))
        if modems is not None:
            lib.t30_set_supported_modems(t30, _mask(modems, MODEMS, "modem") | extra_modem_bits)
        if compressions is not None:
            lib.t30_set_supported_compressions(t30, _mask(compressions, COMPRESSIONS, "compression"))
        if resolutions is not None:
            lib.t30_set_supported_resolutions(t30, _mask(resolutions, RESOLUTIONS, "resolution"))
        if image_sizes is not None:
            lib.t30_set_supported_image_sizes(t30, _mask(image_sizes, IMAGE_SIZES, "image size"))
        if rx_encoding is not None:
            lib.t30_set_rx_encoding(t30, RX_ENCODINGS[rx_encoding])
        # The ctypes closures must live as long as the SpanDSP object.
        self._phase_b = PHASE_B_D_HANDLER(self._on_phase_b)
        self._phase_d = PHASE_B_D_HANDLER(self._on_phase_d)
        self._phase_e = PHASE_E_HANDLER(self._on_phase_e)
        self._frame = REAL_TIME_FRAME_HANDLER(self._on_frame)
        lib.t30_set_phase_b_handler(t30, self._phase_b, None)
        lib.t30_set_phase_d_handler(t30, self._phase_d, None)
        lib.t30_set_phase_e_handler(t30, self._phase_e, None)
        lib.t30_set_real_time_frame_handler(t30, self._frame, None)

    def _setup_logging(self, states: Sequence[Any], level: int | None) -> None:
        self.log: list[tuple[int, str]] = []
        if level is None:
            return
        self._msg = MESSAGE_HANDLER(self._on_log)
        self._err = ERROR_HANDLER(self._on_log_error)
        for state in states:
            if state:
                self.lib.span_log_set_message_handler(state, self._msg)
                self.lib.span_log_set_error_handler(state, self._err)
                self.lib.span_log_set_level(state, level | SPAN_LOG_SHOW_PROTOCOL | SPAN_LOG_SHOW_SEVERITY)

    def _on_log(self, _level: int, text: bytes | None) -> None:
        self.log.append((self.samples, (text or b"").decode("latin-1").rstrip("\n")))

    def _on_log_error(self, text: bytes | None) -> None:
        self._on_log(1, text)

    def _stats(self) -> T30Stats:
        st = T30Stats()
        self.lib.t30_get_transfer_statistics(self.t30, ctypes.byref(st))
        return st

    def _on_phase_b(self, _t30: Any, _user: Any, result: int) -> int:
        self.phase_b.append(result)
        return T30_ERR_OK

    def _on_phase_d(self, _t30: Any, _user: Any, _result: int) -> int:
        self.page_stats.append(PageStats.from_struct(self._stats()))
        self._remote_ident = self._read_remote_ident()
        return T30_ERR_OK

    def _on_phase_e(self, _t30: Any, _user: Any, code: int) -> None:
        self._final = self._stats()
        self._remote_ident = self._read_remote_ident() or self._remote_ident
        self.completion_code = code

    def _on_frame(self, _t30: Any, _user: Any, direction: int, msg: Any, length: int) -> None:
        data = ctypes.string_at(msg, length) if length > 0 else b""
        self.frames.append(T30Frame(self.samples, not direction, data))

    def _read_remote_ident(self) -> str:
        text = self.lib.t30_get_rx_ident(self.t30)
        return text.decode("latin-1").strip() if text else ""

    @property
    def done(self) -> bool:
        """True once phase E has been reported (the TIFFs are closed by then)."""
        return self.completion_code is not None

    @property
    def result(self) -> FaxResult:
        st = self._final if self._final is not None else self._stats()
        code = self.completion_code
        return FaxResult(
            completion_code=code,
            completion_text=completion_text(code) if code is not None else "in progress",
            pages_tx=st.pages_tx,
            pages_rx=st.pages_rx,
            bit_rate=st.bit_rate,
            ecm=bool(st.error_correcting_mode),
            remote_ident=self._remote_ident or (self._read_remote_ident() if self.t30 else ""),
            pages=tuple(self.page_stats),
        )

    def terminate(self) -> None:
        """End the call now (``t30_terminate``): closes the files and reports phase E."""
        if self.t30 and not self.done:
            self.lib.t30_terminate(self.t30)


class SpanFax(T30Peer):
    """SpanDSP's audio fax terminal: T.30 over V.21 / V.27ter / V.29 / V.17 at 8 kHz.

    ``calling`` selects the calling party (sends CNG, waits for DIS).  Send a TIFF with
    ``transmit_tiff``, receive into ``receive_tiff`` (written when the call ends).  ``modems``,
    ``compressions`` (``"mh"``, ``"mr"``, ``"mmr"``), ``resolutions`` and ``image_sizes`` restrict what
    is offered (SpanDSP's defaults when None).  ``log_level`` (e.g. ``SPAN_LOG_FLOW``) collects
    SpanDSP's own log lines in :attr:`log` as ``(sample, text)``.  Output is padded with silence when
    the transmitter is idle, so :meth:`tx` always returns ``n`` samples.
    """

    def __init__(
        self,
        calling: bool,
        *,
        transmit_tiff: Path | None = None,
        receive_tiff: Path | None = None,
        ecm: bool = True,
        modems: Iterable[str] | None = ("v27ter", "v29", "v17"),
        ident: str = "",
        compressions: Iterable[str] | None = None,
        resolutions: Iterable[str] | None = None,
        image_sizes: Iterable[str] | None = None,
        rx_encoding: str | None = None,
        tep: bool = False,
        log_level: int | None = None,
    ) -> None:
        self.lib = library()
        self.calling = calling
        self.samples = 0
        self.t30 = None
        self.state = self.lib.fax_init(None, int(calling))
        if not self.state:
            raise RuntimeError("fax_init failed")
        self.t30 = self.lib.fax_get_t30_state(self.state)
        self.lib.fax_set_transmit_on_idle(self.state, 1)
        self.lib.fax_set_tep_mode(self.state, int(tep))
        self._setup_logging(
            [self.lib.fax_get_logging_state(self.state), self.lib.t30_get_logging_state(self.t30)], log_level
        )
        self._setup_t30(
            transmit_tiff=transmit_tiff,
            receive_tiff=receive_tiff,
            ecm=ecm,
            modems=modems,
            ident=ident,
            compressions=compressions,
            resolutions=resolutions,
            image_sizes=image_sizes,
            rx_encoding=rx_encoding,
        )

    def rx(self, samples: npt.ArrayLike) -> None:
        """Feed received samples (int16; the array is copied, SpanDSP alters its buffer)."""
        a = np.array(samples, dtype=np.int16, copy=True, order="C")
        if a.size:
            self.lib.fax_rx(self.state, a.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), int(a.size))
            self.samples += int(a.size)

    def tx(self, n: int) -> Samples:
        """The next ``n`` samples to send (silence when idle)."""
        out = np.zeros(n, dtype=np.int16)
        got = self.lib.fax_tx(self.state, out.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), n)
        if got < n:
            out[max(got, 0) :] = 0
        return out

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state:
            self.lib.fax_free(state)
            self.state = None
            self.t30 = None


@dataclass(frozen=True)
class IfpPacket:
    """One T.38 IFP packet (T.38 §7) as the terminal sent it: ``count`` is how many times it asked
    for it to be transmitted (UDPTL repetition of indicators and end-of-data packets)."""

    seq_no: int
    data: bytes
    count: int = 1
    at_samples: int = 0


class SpanT38(T30Peer):
    """SpanDSP's T.38 terminal: T.30 carried as IFP packets, paced by a simulated clock.

    :meth:`advance` moves its clock on by ``samples`` (``t38_terminal_send_timeout``, which also runs
    the T.30 timers) and is when it sends; :meth:`take_packets` returns what it sent since the last
    call; :meth:`rx_packet` gives it one IFP packet with its sequence number.  ``pacing=False`` is
    SpanDSP's TCP mode (no indicator packets, data as fast as it is asked for).
    """

    def __init__(
        self,
        calling: bool,
        *,
        transmit_tiff: Path | None = None,
        receive_tiff: Path | None = None,
        ecm: bool = True,
        modems: Iterable[str] | None = None,
        ident: str = "",
        compressions: Iterable[str] | None = None,
        resolutions: Iterable[str] | None = None,
        image_sizes: Iterable[str] | None = None,
        rx_encoding: str | None = None,
        fastest_rate: int = 14400,
        pacing: bool = True,
        tep: bool = False,
        log_level: int | None = None,
    ) -> None:
        self.lib = library()
        self.calling = calling
        self.samples = 0
        self.t30 = None
        self.tx_seq_no = 0
        self.sent: list[IfpPacket] = []
        self._outbox: list[IfpPacket] = []
        self._tx_handler = T38_TX_PACKET_HANDLER(self._on_tx_packet)
        self.state = self.lib.t38_terminal_init(None, int(calling), self._tx_handler, None)
        if not self.state:
            raise RuntimeError("t38_terminal_init failed")
        self.t30 = self.lib.t38_terminal_get_t30_state(self.state)
        self.core = self.lib.t38_terminal_get_t38_core_state(self.state)
        if not pacing:
            self.lib.t38_terminal_set_config(self.state, T38_OPTION_NO_PACING)
        self.lib.t38_terminal_set_tep_mode(self.state, int(tep))
        self.lib.t38_set_fastest_image_data_rate(self.core, fastest_rate)
        self._setup_logging(
            [
                self.lib.t38_terminal_get_logging_state(self.state),
                self.lib.t38_core_get_logging_state(self.core),
                self.lib.t30_get_logging_state(self.t30),
            ],
            log_level,
        )
        self._setup_t30(
            transmit_tiff=transmit_tiff,
            receive_tiff=receive_tiff,
            ecm=ecm,
            modems=modems,
            ident=ident,
            compressions=compressions,
            resolutions=resolutions,
            image_sizes=image_sizes,
            rx_encoding=rx_encoding,
            extra_modem_bits=T30_SUPPORT_IAF,
        )

    def _on_tx_packet(self, _core: Any, _user: Any, buf: Any, length: int, count: int) -> int:
        # t38_core numbers every packet it hands over (tx_seq_no + 1 after each call).
        pkt = IfpPacket(self.tx_seq_no, ctypes.string_at(buf, length), count, self.samples)
        self.tx_seq_no = (self.tx_seq_no + 1) & 0xFFFF
        self._outbox.append(pkt)
        self.sent.append(pkt)
        return 0

    def advance(self, samples: int) -> None:
        """Let ``samples`` of time pass (T.30 timers, paced transmission)."""
        self.samples += samples
        self.lib.t38_terminal_send_timeout(self.state, samples)

    def take_packets(self) -> list[IfpPacket]:
        out, self._outbox = self._outbox, []
        return out

    def rx_packet(self, data: bytes, seq_no: int) -> None:
        """Give the terminal one received IFP packet (``t38_core_rx_ifp_packet``)."""
        buf = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data.ljust(1, b"\0"))
        self.lib.t38_core_rx_ifp_packet(self.core, buf, len(data), seq_no & 0xFFFF)

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state:
            self.lib.t38_terminal_free(state)
            self.state = None
            self.t30 = None


# ---------------------------------------------------------------------------------------------------
# Harness


class AudioFaxEndpoint(Protocol):
    """A fax machine on an 8 kHz audio line."""

    @property
    def done(self) -> bool: ...

    def rx(self, samples: npt.ArrayLike) -> None: ...

    def tx(self, n: int) -> Samples: ...


class T38Endpoint(Protocol):
    """A fax machine speaking T.38 IFP packets on a simulated clock."""

    @property
    def done(self) -> bool: ...

    def advance(self, samples: int) -> None: ...

    def take_packets(self) -> list[IfpPacket]: ...

    def rx_packet(self, data: bytes, seq_no: int) -> None: ...


LineFn = Callable[[Samples], npt.ArrayLike]
LinkFn = Callable[[list[IfpPacket]], list[IfpPacket]]


@dataclass
class PairRun:
    """How a pair run ended: simulated samples, and whether both ends reported phase E."""

    samples: int
    completed: bool
    a_to_b: int = 0  # samples or packets passed
    b_to_a: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


def run_audio_pair(
    a: AudioFaxEndpoint,
    b: AudioFaxEndpoint,
    *,
    block: int = 160,
    max_seconds: float = 600.0,
    line: LineFn | tuple[LineFn, LineFn] | None = None,
    tail_seconds: float = 0.0,
) -> PairRun:
    """Connect two audio fax endpoints through ``line`` until both are done.

    Each step both transmit ``block`` samples, which pass through ``line`` (one callable for both
    directions, or ``(a_to_b, b_to_a)``; it may change the block length) and are received by the other
    end in the same step.  Stops ``tail_seconds`` after both are done, or after ``max_seconds``
    (then the unfinished ends are terminated, which closes their files).
    """
    ab: LineFn | None
    ba: LineFn | None
    if isinstance(line, tuple):
        ab, ba = line
    else:
        ab = ba = line
    limit = int(max_seconds * SAMPLE_RATE)
    tail = int(tail_seconds * SAMPLE_RATE)
    t = 0
    finished_at: int | None = None
    run = PairRun(0, False)
    while t < limit:
        sa = a.tx(block)
        sb = b.tx(block)
        to_b = np.asarray(ab(sa) if ab is not None else sa)
        to_a = np.asarray(ba(sb) if ba is not None else sb)
        b.rx(to_b)
        a.rx(to_a)
        run.a_to_b += int(to_b.size)
        run.b_to_a += int(to_a.size)
        t += block
        if finished_at is None and a.done and b.done:
            finished_at = t
        if finished_at is not None and t - finished_at >= tail:
            break
    run.samples = t
    run.completed = a.done and b.done
    for end in (a, b):
        if not end.done and isinstance(end, T30Peer):
            end.terminate()
    return run


def run_t38_pair(
    a: T38Endpoint,
    b: T38Endpoint,
    *,
    step: int = 80,
    max_seconds: float = 600.0,
    latency: int = 0,
    repeats: bool = False,
    link: LinkFn | tuple[LinkFn, LinkFn] | None = None,
    tail_seconds: float = 0.0,
) -> PairRun:
    """Pass IFP packets between two T.38 endpoints on a common simulated clock.

    Every ``step`` samples both clocks advance, then the packets each end sent are delivered to the
    other after ``latency`` samples (rounded up to whole steps).  ``repeats`` delivers each packet as
    many times as its sender asked (UDPTL repetition), otherwise once.  ``link`` (one callable, or
    ``(a_to_b, b_to_a)``) may drop, reorder or corrupt the packets of each step.  SpanDSP sends at most
    one paced chunk (30 ms) per clock step, so a ``step`` above 240 samples stretches the call.
    """
    ab: LinkFn | None
    ba: LinkFn | None
    if isinstance(link, tuple):
        ab, ba = link
    else:
        ab = ba = link
    limit = int(max_seconds * SAMPLE_RATE)
    tail = int(tail_seconds * SAMPLE_RATE)
    pipes: tuple[deque[tuple[int, IfpPacket]], deque[tuple[int, IfpPacket]]] = (deque(), deque())
    t = 0
    finished_at: int | None = None
    run = PairRun(0, False)
    while t < limit:
        a.advance(step)
        b.advance(step)
        t += step
        for src, pipe, fn in ((a, pipes[0], ab), (b, pipes[1], ba)):
            pkts = src.take_packets()
            if fn is not None:
                pkts = fn(pkts)
            for p in pkts:
                pipe.append((t + latency, p))
        for dst, pipe, name in ((b, pipes[0], "a_to_b"), (a, pipes[1], "b_to_a")):
            while pipe and pipe[0][0] <= t:
                _, p = pipe.popleft()
                for _ in range(max(p.count, 1) if repeats else 1):
                    dst.rx_packet(p.data, p.seq_no)
                setattr(run, name, getattr(run, name) + 1)
        if finished_at is None and a.done and b.done:
            finished_at = t
        if finished_at is not None and t - finished_at >= tail:
            break
    run.samples = t
    run.completed = a.done and b.done
    for end in (a, b):
        if not end.done and isinstance(end, T30Peer):
            end.terminate()
    return run


# ---------------------------------------------------------------------------------------------------
# TIFF files


def write_fax_tiff(
    path: Path,
    pages: Sequence[npt.ArrayLike],
    *,
    resolution: Resolution = "fine",
    compression: TiffCompression = "g3",
) -> Path:
    """Write ``pages`` (``H x W`` arrays, 1 = black) as a multi-page TIFF Class F file.

    ``resolution`` is "standard", "fine" or "superfine" (204 dpi across); ``compression`` is the
    TIFF coding: "g3" (T.4 MH), "g3-2d" (MR) or "g4" (T.6).  SpanDSP re-codes the pages for the line.
    """
    fax_pages = [FaxPage.at(np.asarray(p), resolution) for p in pages]
    path.write_bytes(write_tiff(fax_pages, compression=compression))
    return path


def read_fax_tiff(path: Path) -> list[npt.NDArray[np.uint8]]:
    """The pages of a received TIFF as ``H x W`` uint8 arrays (1 = black), through Pillow/libtiff."""
    return [page.pels for page in read_tiff(path.read_bytes())]
