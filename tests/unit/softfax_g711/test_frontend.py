"""The modem front end decides between V.21 and an image modem, with signals from SpanDSP and from
our own transmitters."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line, spandsp
from ums.softfax_g711.frontend import (
    Ended,
    FastBits,
    FastModem,
    FrontEndItem,
    ModemFrontEnd,
    Started,
    TrainingFailed,
    V21Frame,
)
from ums.softfax_g711.hdlc import HdlcEncoder
from ums.softfax_g711.v17 import V17Tx
from ums.softfax_g711.v21 import FskTx
from ums.softfax_g711.v27ter import V27terTx
from ums.softfax_g711.v29 import V29Tx

needs_spandsp = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

Samples = npt.NDArray[np.int16]
DIS = b"\xff\x13\x80\x00\xee\xf8\x80\x80\x91\x80\x80\x80\x18"
TSI = b"\xff\x03\x43" + b"4321 XAF".rjust(20, b" ")
GAP = np.zeros(600, dtype=np.int16)  # 75 ms, T.30 §5 note 3


def _bits(n: int, seed: int = 1) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.uint8)


def _play(tx: V17Tx | V29Tx | V27terTx | FskTx) -> Samples:
    out = []
    while not tx.done:
        out.append(tx.generate(160))
    return np.concatenate(out)


def ours_v21(frames: list[bytes]) -> Samples:
    enc = HdlcEncoder()
    tx = FskTx(2, level_dbm0=-13.0)
    tx.send(enc.frames(frames, preamble_flags=38))
    tx.send(enc.flags(1))
    tx.finish()
    return _play(tx)


def ours_fast(modem: str, rate: int, bits: npt.NDArray[np.uint8], short_train: bool = False) -> Samples:
    tx: V17Tx | V29Tx | V27terTx
    if modem == "v17":
        tx = V17Tx(rate, level_dbm0=-13.0, short_train=short_train)
    elif modem == "v29":
        tx = V29Tx(rate, level_dbm0=-13.0)
    else:
        tx = V27terTx(rate, level_dbm0=-13.0)
    tx.send(bits)
    tx.finish()
    return _play(tx)


def span_v21(frames: list[bytes]) -> Samples:
    bits = spandsp.HdlcTx(frames, preamble_flags=32).bits()
    return spandsp.ModemTx("v21ch2", 300, bits, level_dbm0=-13.0).run()


def span_fast(modem: str, rate: int, bits: npt.NDArray[np.uint8], short_train: bool = False) -> Samples:
    return spandsp.ModemTx(modem, rate, bits, level_dbm0=-13.0, short_train=short_train).run()


def feed(fe: ModemFrontEnd, signal: Samples, block: int = 160) -> list[FrontEndItem]:
    items: list[FrontEndItem] = []
    for i in range(0, signal.size, block):
        items += fe.receive(signal[i : i + block]).items
    return items


def kinds(items: list[FrontEndItem]) -> list[str]:
    """Items as short names, runs of FastBits merged into one "bits"."""
    out: list[str] = []
    for it in items:
        if isinstance(it, FastBits):
            if not out or out[-1] != "bits":
                out.append("bits")
        elif isinstance(it, Started | Ended):
            out.append(f"{type(it).__name__.lower()}:{it.source}")
        elif isinstance(it, V21Frame):
            out.append("frame" if it.crc_ok else "bad-frame")
        elif isinstance(it, TrainingFailed):
            out.append("failed")
    return out


def fast_bits(items: list[FrontEndItem]) -> npt.NDArray[np.uint8]:
    parts = [it.bits for it in items if isinstance(it, FastBits)]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


FAST = [("v17", 14400), ("v17", 7200), ("v29", 9600), ("v29", 4800), ("v27ter", 4800), ("v27ter", 2400)]


@needs_spandsp
@pytest.mark.parametrize("mode", [None, ("v17", 14400), ("v29", 9600), ("v27ter", 4800)])
def test_v21_preamble_alone_starts_v21(mode: tuple[FastModem, int] | None) -> None:
    """A SpanDSP V.21 burst is V.21 whether or not an image modem is listened for too."""
    fe = ModemFrontEnd()
    if mode:
        fe.listen(*mode)
    items = feed(fe, np.concatenate([GAP, span_v21([TSI, DIS]), GAP]))
    assert kinds(items) == ["started:v21", "frame", "frame", "ended:v21"]
    assert [it.data for it in items if isinstance(it, V21Frame)] == [TSI, DIS]
    assert fe.active is None


@needs_spandsp
@pytest.mark.parametrize(("modem", "rate"), FAST)
def test_spandsp_training_starts_fast(modem: FastModem, rate: int) -> None:
    bits = _bits(3 * rate // 4)
    fe = ModemFrontEnd()
    fe.listen(modem, rate)
    items = feed(fe, np.concatenate([GAP, span_fast(modem, rate, bits), GAP]))
    assert kinds(items) == ["started:fast", "bits", "ended:fast"]
    got = fast_bits(items)
    assert got.size >= bits.size and np.array_equal(got[: bits.size], bits)


@pytest.mark.parametrize(("modem", "rate"), FAST)
def test_our_training_starts_fast(modem: FastModem, rate: int) -> None:
    bits = _bits(rate // 2, seed=2)
    fe = ModemFrontEnd()
    fe.listen(modem, rate)
    items = feed(fe, np.concatenate([GAP, ours_fast(modem, rate, bits), GAP]))
    assert kinds(items) == ["started:fast", "bits", "ended:fast"]
    assert np.array_equal(fast_bits(items)[: bits.size], bits)


@needs_spandsp
@pytest.mark.parametrize(("modem", "rate"), [("v17", 14400), ("v29", 9600), ("v27ter", 4800)])
def test_fast_between_v21_bursts(modem: FastModem, rate: int) -> None:
    """Command, image data, command again (a T.30 exchange as the receiver hears it), SpanDSP's
    signals through an A-law hop 7 dB down, fed in blocks of odd sizes."""
    bits = _bits(rate // 2, seed=3)
    signal = np.concatenate(
        [GAP, span_v21([DIS]), GAP, span_fast(modem, rate, bits), GAP, span_v21([TSI]), GAP]
    )
    signal = line.g711(signal * 10 ** (-7 / 20), "PCMA")
    fe = ModemFrontEnd()
    fe.listen(modem, rate)
    items = feed(fe, signal, block=237)
    assert kinds(items) == [
        "started:v21",
        "frame",
        "ended:v21",
        "started:fast",
        "bits",
        "ended:fast",
        "started:v21",
        "frame",
        "ended:v21",
    ]
    assert np.array_equal(fast_bits(items)[: bits.size], bits)


def test_v17_long_then_short_train_after_v21() -> None:
    """V.17 keeps its equaliser across bursts: a long train, a V.21 burst, then a short train."""
    first, second = _bits(4000, 4), _bits(6000, 5)
    fe = ModemFrontEnd()
    fe.listen("v17", 14400)
    items = feed(fe, np.concatenate([GAP, ours_fast("v17", 14400, first), GAP]))
    assert kinds(items) == ["started:fast", "bits", "ended:fast"]
    fe.listen("v17", 14400, short_train=True)
    signal = np.concatenate([GAP, ours_v21([TSI]), GAP, ours_fast("v17", 14400, second, True), GAP])
    items = feed(fe, signal)
    assert kinds(items) == ["started:v21", "frame", "ended:v21", "started:fast", "bits", "ended:fast"]
    assert np.array_equal(fast_bits(items)[: second.size], second)


def test_v21_only_ignores_image_modem() -> None:
    fe = ModemFrontEnd()
    fe.listen(None)
    assert kinds(feed(fe, np.concatenate([GAP, ours_fast("v29", 9600, _bits(9600)), GAP]))) == []
    assert kinds(feed(fe, np.concatenate([ours_v21([DIS]), GAP]))) == ["started:v21", "frame", "ended:v21"]


def test_same_items_whatever_the_block_size() -> None:
    bits = _bits(7200, 6)
    signal = np.concatenate([GAP, ours_v21([TSI, DIS]), GAP, ours_fast("v29", 7200, bits), GAP])
    results = []
    for block in (1000, 160, 37, signal.size):
        fe = ModemFrontEnd()
        fe.listen("v29", 7200)
        items = feed(fe, signal, block)
        results.append((kinds(items), [f.data for f in items if isinstance(f, V21Frame)], fast_bits(items)))
    for k, frames, got in results:
        assert (
            k
            == results[0][0]
            == ["started:v21", "frame", "frame", "ended:v21", "started:fast", "bits", "ended:fast"]
        )
        assert frames == [TSI, DIS]
        assert np.array_equal(got[: bits.size], bits)


def test_mode_set_during_a_v21_burst_waits_for_its_end() -> None:
    """T.30: DCS arrives on V.21 and the receiver asks for the image modem while the burst is still
    on; the TCF that follows 75 ms later must still be caught."""
    signal = np.concatenate(
        [GAP, ours_v21([TSI, DIS]), GAP, ours_fast("v27ter", 4800, np.zeros(7200, np.uint8))]
    )
    fe = ModemFrontEnd()
    fe.listen(None)
    items: list[FrontEndItem] = []
    for i in range(0, signal.size, 160):
        out = fe.receive(signal[i : i + 160])
        items += out.items
        if any(isinstance(it, V21Frame) and it.data == DIS for it in out.items):
            fe.listen("v27ter", 4800)
            assert fe.mode.modem is None and fe.active == "v21"
    items += feed(fe, GAP)
    assert kinds(items) == [
        "started:v21",
        "frame",
        "frame",
        "ended:v21",
        "started:fast",
        "bits",
        "ended:fast",
    ]
    tcf = fast_bits(items)
    assert tcf.size >= 7200 and not tcf[:7200].any()


@needs_spandsp
@pytest.mark.parametrize(
    ("listen", "modem", "rate"),
    [(("v29", 9600), "v17", 14400), (("v17", 14400), "v29", 9600), (("v27ter", 4800), "v29", 9600)],
)
def test_wrong_modem_is_a_failed_training(listen: tuple[FastModem, int], modem: str, rate: int) -> None:
    fe = ModemFrontEnd()
    fe.listen(*listen)
    items = feed(fe, np.concatenate([GAP, span_fast(modem, rate, _bits(rate)), GAP]))
    assert kinds(items)[0] == "failed"
    assert "started:fast" not in kinds(items)
    # once it is over, V.21 is heard again
    assert kinds(feed(fe, np.concatenate([span_v21([DIS]), GAP]))) == ["started:v21", "frame", "ended:v21"]


def test_long_failed_signal_is_reported_while_it_lasts() -> None:
    """A V.29 receiver faced with 4 s of V.27 ter: the failure is reported after FAILED_HOLD, then
    the end of the signal."""
    fe = ModemFrontEnd()
    fe.listen("v29", 9600)
    items = feed(fe, np.concatenate([GAP, ours_fast("v27ter", 4800, _bits(4800 * 4)), GAP]))
    failed = [it for it in items if isinstance(it, TrainingFailed)]
    assert kinds(items) == ["failed", "ended:fast"] and failed[0].ongoing


def test_reset_forgets_a_burst_in_progress() -> None:
    fe = ModemFrontEnd()
    fe.listen(None)
    burst = ours_v21([TSI])
    feed(fe, burst[: burst.size // 2])
    fe.reset()
    assert kinds(feed(fe, np.concatenate([GAP, ours_v21([DIS]), GAP]))) == [
        "started:v21",
        "frame",
        "ended:v21",
    ]


@pytest.mark.parametrize(("modem", "rate"), [("v29", 9600), ("v17", 14400), ("v27ter", 4800)])
def test_fillin_keeps_the_burst_going(modem: FastModem, rate: int) -> None:
    """20 ms lost in the middle of the data: the burst goes on (V.29 through its ``fillin``, the
    others by leaving the gap out), and the bits after the gap are right again."""
    bits = _bits(rate * 2, 7)
    signal = np.concatenate([GAP, ours_fast(modem, rate, bits), GAP])
    fe = ModemFrontEnd()
    fe.listen(modem, rate)
    cut = signal.size // 2 // 160 * 160
    items = feed(fe, signal[:cut])
    items += fe.fillin(160).items
    items += feed(fe, signal[cut + 160 :])
    assert kinds(items) == ["started:fast", "bits", "ended:fast"]
    assert fe.samples == signal.size
    got = fast_bits(items)
    tail = bits[-rate // 2 :]
    hits = [k for k in range(got.size - 64) if np.array_equal(got[k : k + 64], tail[:64])]
    assert hits and np.array_equal(got[hits[0] : hits[0] + tail.size], tail)


def test_fillin_between_v21_frames() -> None:
    """A packet lost inside a V.21 burst spoils one frame, not the rest of the burst."""
    frames = [TSI, DIS, TSI]
    signal = np.concatenate([GAP, ours_v21(frames), GAP])
    fe = ModemFrontEnd()
    fe.listen(None)
    cut = (GAP.size + (38 * 8 + 240) * 80 // 3) // 160 * 160  # inside the second frame
    items = feed(fe, signal[:cut]) + fe.fillin(160).items + feed(fe, signal[cut + 160 :])
    assert kinds(items) == ["started:v21", "frame", "bad-frame", "frame", "ended:v21"]


def test_listen_rejects_unknown_modem() -> None:
    with pytest.raises(ValueError, match="unknown image modem"):
        ModemFrontEnd().listen("v34", 28800)  # type: ignore[arg-type]
