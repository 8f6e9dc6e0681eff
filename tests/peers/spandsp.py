"""SpanDSP's fax modems, HDLC and connect tones through ctypes: the independent fax machine of our tests.

Debian's ``libspandsp2`` (scripts/install-peers.sh installs it).  Only tests and benchmarks use this;
the server never loads SpanDSP.  Every SpanDSP object is created by its own ``*_init(NULL, ...)`` and
released with ``*_free``, so no struct layouts are needed beyond ``fsk_spec_t``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "HdlcRx",
    "HdlcTx",
    "ModemRx",
    "ModemTx",
    "ToneRx",
    "ToneTx",
    "available",
    "library",
]

# SpanDSP async.h: status codes passed through put_bit/get_bit as negative values.
STATUS_NAMES = {
    -1: "carrier-down",
    -2: "carrier-up",
    -3: "training",
    -4: "trained",
    -5: "training-failed",
    -6: "framing-ok",
    -7: "end-of-data",
    -8: "abort",
    -9: "break",
    -10: "shutdown",
    -11: "octet-report",
    -12: "poor-signal",
    -13: "retrain",
}
END_OF_DATA = -7

# fsk.h preset_fsk_specs[] indices
FSK_SPECS = {"v21ch1": 0, "v21ch2": 1}
FSK_FRAME_MODE_SYNC = 1

# modem_connect_tones.h
TONES = {"cng": 1, "ced": 2, "ans": 2, "ans_pr": 3, "ansam": 4, "ansam_pr": 5, "preamble": 6}
TONE_NAMES = {0: "none", 1: "cng", 2: "ced", 3: "ans_pr", 4: "ansam", 5: "ansam_pr", 6: "preamble"}

PUT_BIT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)
GET_BIT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
FRAME_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_int, ctypes.c_int
)
UNDERFLOW = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
TONE_REPORT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int)


class FskSpec(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("freq_zero", ctypes.c_int),
        ("freq_one", ctypes.c_int),
        ("tx_level", ctypes.c_int),
        ("min_level", ctypes.c_int),
        ("baud_rate", ctypes.c_int),
    ]


_lib: ctypes.CDLL | None = None
_tried = False


def library() -> ctypes.CDLL:
    """The loaded library; raises OSError when it is not installed."""
    global _lib, _tried
    if _lib is None:
        _tried = True
        name = ctypes.util.find_library("spandsp") or "libspandsp.so.2"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            lib = ctypes.CDLL("libspandsp.so.2")
        _declare(lib)
        _lib = lib
    return _lib


def available() -> bool:
    try:
        library()
    except OSError:
        return False
    return True


def _declare(lib: ctypes.CDLL) -> None:
    vp, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    i16p = ctypes.POINTER(ctypes.c_int16)
    for m in ("v17", "v29", "v27ter"):
        getattr(lib, f"{m}_tx_init").argtypes = [vp, i, i, GET_BIT, vp]
        getattr(lib, f"{m}_tx_init").restype = vp
        getattr(lib, f"{m}_tx").argtypes = [vp, i16p, i]
        getattr(lib, f"{m}_tx_power").argtypes = [vp, f]
        getattr(lib, f"{m}_tx_free").argtypes = [vp]
        getattr(lib, f"{m}_rx_init").argtypes = [vp, i, PUT_BIT, vp]
        getattr(lib, f"{m}_rx_init").restype = vp
        getattr(lib, f"{m}_rx").argtypes = [vp, i16p, i]
        getattr(lib, f"{m}_rx_fillin").argtypes = [vp, i]
        getattr(lib, f"{m}_rx_signal_cutoff").argtypes = [vp, f]
        getattr(lib, f"{m}_rx_signal_power").argtypes = [vp]
        getattr(lib, f"{m}_rx_signal_power").restype = f
        getattr(lib, f"{m}_rx_carrier_frequency").argtypes = [vp]
        getattr(lib, f"{m}_rx_carrier_frequency").restype = f
        getattr(lib, f"{m}_rx_free").argtypes = [vp]
    lib.v17_tx_restart.argtypes = [vp, i, i, i]
    lib.v17_rx_restart.argtypes = [vp, i, i]
    lib.v29_tx_restart.argtypes = [vp, i, i]
    lib.v29_rx_restart.argtypes = [vp, i, i]
    lib.v27ter_tx_restart.argtypes = [vp, i, i]
    lib.v27ter_rx_restart.argtypes = [vp, i]
    lib.fsk_tx_init.argtypes = [vp, ctypes.POINTER(FskSpec), GET_BIT, vp]
    lib.fsk_tx_init.restype = vp
    lib.fsk_tx.argtypes = [vp, i16p, i]
    lib.fsk_tx_power.argtypes = [vp, f]
    lib.fsk_tx_free.argtypes = [vp]
    lib.fsk_rx_init.argtypes = [vp, ctypes.POINTER(FskSpec), i, PUT_BIT, vp]
    lib.fsk_rx_init.restype = vp
    lib.fsk_rx.argtypes = [vp, i16p, i]
    lib.fsk_rx_signal_cutoff.argtypes = [vp, f]
    lib.fsk_rx_free.argtypes = [vp]
    lib.hdlc_tx_init.argtypes = [vp, i, i, i, UNDERFLOW, vp]
    lib.hdlc_tx_init.restype = vp
    lib.hdlc_tx_frame.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
    lib.hdlc_tx_flags.argtypes = [vp, i]
    lib.hdlc_tx_get_bit.argtypes = [vp]
    lib.hdlc_tx_free.argtypes = [vp]
    lib.hdlc_rx_init.argtypes = [vp, i, i, i, FRAME_HANDLER, vp]
    lib.hdlc_rx_init.restype = vp
    lib.hdlc_rx_put_bit.argtypes = [vp, i]
    lib.hdlc_rx_free.argtypes = [vp]
    lib.modem_connect_tones_tx_init.argtypes = [vp, i]
    lib.modem_connect_tones_tx_init.restype = vp
    lib.modem_connect_tones_tx.argtypes = [vp, i16p, i]
    lib.modem_connect_tones_tx_free.argtypes = [vp]
    lib.modem_connect_tones_rx_init.argtypes = [vp, i, TONE_REPORT, vp]
    lib.modem_connect_tones_rx_init.restype = vp
    lib.modem_connect_tones_rx.argtypes = [vp, i16p, i]
    lib.modem_connect_tones_rx_get.argtypes = [vp]
    lib.modem_connect_tones_rx_free.argtypes = [vp]


def _i16(samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
    return np.ascontiguousarray(np.asarray(samples), dtype=np.int16)


def _ptr(a: npt.NDArray[np.int16]) -> Any:
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))


def _fsk_spec(modem: str) -> Any:
    specs = (FskSpec * 11).in_dll(library(), "preset_fsk_specs")
    return ctypes.pointer(specs[FSK_SPECS[modem]])


MODEMS = ("v21ch1", "v21ch2", "v27ter", "v29", "v17")


class ModemTx:
    """A SpanDSP transmitter sending ``bits`` (then its own trailer) at ``level_dbm0``.

    ``bits`` may be an array (sent once, then end of data) or a callable returning the next bit
    (or :data:`END_OF_DATA`).  For V.17, ``short_train`` restarts the transmitter with the short
    training sequence (the receiver must have trained on a long one first).
    """

    def __init__(
        self,
        modem: str,
        bit_rate: int,
        bits: npt.ArrayLike | Callable[[], int] | None = None,
        *,
        level_dbm0: float = -13.0,
        short_train: bool = False,
        tep: bool = False,
    ) -> None:
        if modem not in MODEMS:
            raise ValueError(f"unknown modem {modem!r}")
        self.lib = library()
        self.modem = modem
        self.bit_rate = bit_rate
        if callable(bits):
            self._next: Callable[[], int] = bits
        else:
            data = np.zeros(0, np.uint8) if bits is None else np.asarray(bits, dtype=np.uint8)
            it = iter(data.tolist())

            def nxt() -> int:
                return next(it, END_OF_DATA)

            self._next = nxt
        self.sent = 0
        self._get_bit = GET_BIT(self._on_get_bit)
        if modem.startswith("v21"):
            self.state = self.lib.fsk_tx_init(None, _fsk_spec(modem), self._get_bit, None)
            self.lib.fsk_tx_power(self.state, level_dbm0)
            self._tx = self.lib.fsk_tx
            self._free = self.lib.fsk_tx_free
        else:
            init = getattr(self.lib, f"{modem}_tx_init")
            self.state = init(None, bit_rate, int(tep), self._get_bit, None)
            getattr(self.lib, f"{modem}_tx_power")(self.state, level_dbm0)
            self._tx = getattr(self.lib, f"{modem}_tx")
            self._free = getattr(self.lib, f"{modem}_tx_free")
            if short_train:
                if modem != "v17":
                    raise ValueError("only V.17 has a short train")
                self.lib.v17_tx_restart(self.state, bit_rate, int(tep), 1)
        if not self.state:
            raise RuntimeError(f"{modem}_tx_init failed for {bit_rate}")
        self.finished = False

    def _on_get_bit(self, _user: Any) -> int:
        bit = self._next()
        if bit != END_OF_DATA:
            self.sent += 1
        return int(bit)

    def generate(self, n: int) -> npt.NDArray[np.int16]:
        """The next ``n`` samples (zeros once the transmitter has shut down)."""
        out = np.zeros(n, dtype=np.int16)
        if not self.finished:
            got = self._tx(self.state, _ptr(out), n)
            if got < n:
                self.finished = True
        return out

    def run(self, block: int = 160, max_seconds: float = 3600.0) -> npt.NDArray[np.int16]:
        """Every sample until the transmitter shuts down (training, data, trailer)."""
        chunks = []
        limit = int(max_seconds * 8000)
        total = 0
        while not self.finished and total < limit:
            out = np.zeros(block, dtype=np.int16)
            got = self._tx(self.state, _ptr(out), block)
            chunks.append(out[: max(got, 0)])
            total += block
            if got < block:
                self.finished = True
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state:
            self._free(state)
            self.state = None


class ModemRx:
    """A SpanDSP receiver; ``bits`` are the data bits it put out, ``events`` its status changes
    (``(name, bit_index)`` pairs in ``timeline``).

    ``cutoff_dbm0`` defaults to -48: with SpanDSP's own -45.5 (on at about -43 dBm0) a -43 dBm0
    signal through G.711 flickers across the threshold and the receiver drops carrier mid-burst.
    The Debian build (a 2011 snapshot) also cannot hold V.27ter symbol timing over bursts longer than
    about 4 s at +-100 ppm; keep V.27ter bursts short when testing a clock offset.
    """

    def __init__(
        self,
        modem: str,
        bit_rate: int,
        *,
        cutoff_dbm0: float | None = -48.0,
        short_train: bool = False,
        c_sink: bool = False,
    ) -> None:
        if modem not in MODEMS:
            raise ValueError(f"unknown modem {modem!r}")
        self.lib = library()
        self.modem = modem
        self._bits: list[int] = []
        self.timeline: list[tuple[str, int]] = []
        user: Any = None
        self._sink = None
        if c_sink:
            # For timing SpanDSP alone: bits go straight into a C HDLC receiver (same signature as
            # put_bit), so no Python runs per bit; ``bits`` stays empty.
            self._frame_cb = FRAME_HANDLER(lambda *_: None)
            self._sink = self.lib.hdlc_rx_init(None, 0, 0, 5, self._frame_cb, None)
            self._put_bit = ctypes.cast(self.lib.hdlc_rx_put_bit, PUT_BIT)
            user = self._sink
        else:
            self._put_bit = PUT_BIT(self._on_put_bit)
        if modem.startswith("v21"):
            self.state = self.lib.fsk_rx_init(
                None, _fsk_spec(modem), FSK_FRAME_MODE_SYNC, self._put_bit, user
            )
            if cutoff_dbm0 is not None:
                self.lib.fsk_rx_signal_cutoff(self.state, cutoff_dbm0)
            self._rx = self.lib.fsk_rx
            self._free = self.lib.fsk_rx_free
        else:
            self.state = getattr(self.lib, f"{modem}_rx_init")(None, bit_rate, self._put_bit, user)
            if cutoff_dbm0 is not None:
                getattr(self.lib, f"{modem}_rx_signal_cutoff")(self.state, cutoff_dbm0)
            self._rx = getattr(self.lib, f"{modem}_rx")
            self._free = getattr(self.lib, f"{modem}_rx_free")
        if not self.state:
            raise RuntimeError(f"{modem}_rx_init failed for {bit_rate}")
        self.bit_rate = bit_rate
        self.short_train = short_train

    def restart(self, bit_rate: int | None = None, *, short_train: bool = False) -> None:
        """Listen for a new burst; V.17 and V.29 can keep the trained equaliser (``short_train``)."""
        rate = self.bit_rate if bit_rate is None else bit_rate
        if self.modem == "v17":
            self.lib.v17_rx_restart(self.state, rate, int(short_train))
        elif self.modem == "v29":
            self.lib.v29_rx_restart(self.state, rate, int(short_train))
        elif self.modem == "v27ter":
            self.lib.v27ter_rx_restart(self.state, rate)
        else:
            raise ValueError("V.21 restarts by itself")
        self.bit_rate = rate

    def _on_put_bit(self, _user: Any, bit: int) -> None:
        if bit < 0:
            self.timeline.append((STATUS_NAMES.get(bit, str(bit)), len(self._bits)))
        else:
            self._bits.append(bit & 1)

    def receive(self, samples: npt.ArrayLike) -> None:
        a = _i16(samples)
        if a.size:
            self._rx(self.state, _ptr(a), int(a.size))

    def fillin(self, n: int) -> None:
        if not self.modem.startswith("v21"):
            getattr(self.lib, f"{self.modem}_rx_fillin")(self.state, n)

    @property
    def bits(self) -> npt.NDArray[np.uint8]:
        return np.array(self._bits, dtype=np.uint8)

    @property
    def events(self) -> list[str]:
        return [name for name, _ in self.timeline]

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state:
            self._free(state)
            self.state = None
        sink = getattr(self, "_sink", None)
        if sink:
            self.lib.hdlc_rx_free(sink)
            self._sink = None


class HdlcTx:
    """SpanDSP's HDLC framer: ``bits()`` gives preamble flags, the frames, and closing flags."""

    def __init__(
        self,
        frames: Sequence[bytes],
        *,
        crc32: bool = False,
        preamble_flags: int = 32,
        inter_frame_flags: int = 2,
    ) -> None:
        self.lib = library()
        self.frames = list(frames)
        self.crc32 = crc32
        self.preamble_flags = preamble_flags
        self._underflows = 0
        self._underflow = UNDERFLOW(self._on_underflow)
        self.state = self.lib.hdlc_tx_init(None, int(crc32), inter_frame_flags, 0, self._underflow, None)

    def _on_underflow(self, _user: Any) -> None:
        self._underflows += 1

    def bits(self, trailing_flags: int = 2) -> npt.NDArray[np.uint8]:
        out: list[int] = []
        get = self.lib.hdlc_tx_get_bit
        self.lib.hdlc_tx_flags(self.state, self.preamble_flags)
        # SpanDSP holds one frame at a time: load the next when the framer reports underflow.
        for frame in self.frames:
            self._underflows = 0
            limit = len(out) + 16 * (self.preamble_flags + len(frame) + 16) * 8
            while self._underflows == 0 and len(out) < limit:
                out.append(get(self.state) & 1)
            self.lib.hdlc_tx_frame(self.state, frame, len(frame))
        self._underflows = 0
        limit = len(out) + 16 * (max((len(f) for f in self.frames), default=0) + 16) * 8
        while self._underflows == 0 and len(out) < limit:
            out.append(get(self.state) & 1)
        for _ in range(8 * trailing_flags):
            out.append(get(self.state) & 1)
        return np.array(out, dtype=np.uint8)

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state:
            self.lib.hdlc_tx_free(state)
            self.state = None


class HdlcRx:
    """SpanDSP's HDLC deframer; ``frames`` collects ``(data, crc_ok)`` (bad frames reported too)."""

    def __init__(self, *, crc32: bool = False, framing_ok_threshold: int = 5) -> None:
        self.lib = library()
        self.frames: list[tuple[bytes, bool]] = []
        self.statuses: list[str] = []
        self._handler = FRAME_HANDLER(self._on_frame)
        self.state = self.lib.hdlc_rx_init(None, int(crc32), 1, framing_ok_threshold, self._handler, None)

    def _on_frame(self, _user: Any, pkt: Any, length: int, ok: int) -> None:
        if length < 0:
            self.statuses.append(STATUS_NAMES.get(length, str(length)))
            return
        self.frames.append((ctypes.string_at(pkt, length), bool(ok)))

    def put_bits(self, bits: npt.ArrayLike) -> None:
        put = self.lib.hdlc_rx_put_bit
        for b in np.asarray(bits, dtype=np.int64).tolist():
            put(self.state, b)

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state:
            self.lib.hdlc_rx_free(state)
            self.state = None


class ToneTx:
    """SpanDSP's connect-tone generator: "cng", "ced" (ANS), "ans_pr", "ansam", "ansam_pr"."""

    def __init__(self, tone: str) -> None:
        self.lib = library()
        self.state = self.lib.modem_connect_tones_tx_init(None, TONES[tone])

    def generate(self, n: int) -> npt.NDArray[np.int16]:
        out = np.zeros(n, dtype=np.int16)
        self.lib.modem_connect_tones_tx(self.state, _ptr(out), n)
        return out

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state:
            self.lib.modem_connect_tones_tx_free(state)
            self.state = None


class ToneRx:
    """SpanDSP's connect-tone detector; ``receive`` returns ``(tone_name, sample_index)`` detections."""

    def __init__(self, tone: str) -> None:
        self.lib = library()
        self._found: list[str] = []
        self._report = TONE_REPORT(self._on_tone)
        self.state = self.lib.modem_connect_tones_rx_init(None, TONES[tone], self._report, None)
        self.position = 0
        self.detections: list[tuple[str, int]] = []

    def _on_tone(self, _user: Any, code: int, _level: int, _delay: int) -> None:
        self._found.append(TONE_NAMES.get(code, str(code)))

    def receive(self, samples: npt.ArrayLike, block: int = 160) -> list[tuple[str, int]]:
        a = _i16(samples)
        new: list[tuple[str, int]] = []
        for start in range(0, a.size, block):
            chunk = np.ascontiguousarray(a[start : start + block])
            self.lib.modem_connect_tones_rx(self.state, _ptr(chunk), int(chunk.size))
            for name in self._found:
                if name != "none":
                    new.append((name, self.position + start + chunk.size))
            self._found.clear()
        self.position += a.size
        self.detections.extend(new)
        return new

    def __del__(self) -> None:
        state = getattr(self, "state", None)
        if state:
            self.lib.modem_connect_tones_rx_free(state)
            self.state = None
