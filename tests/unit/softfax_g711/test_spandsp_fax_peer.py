"""The SpanDSP fax machine peer works on its own: SpanDSP faxes to SpanDSP over audio and over T.38.

Every case sends ITU test charts (T.4 Annex test documents, from ``testdata/itu-fax``) or seeded
synthetic pages, and checks the phase E result of both ends and that the received pages are the sent
pages, pel for pel.  The calls run in simulated time, a few hundred times faster than real time.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line, spandsp
from tests.peers import spandsp_fax as sf
from tests.unit.fax.pages import FAX_WIDTH, itu_page

pytestmark = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

Page = npt.NDArray[np.uint8]
RATES = {"v17": 14400, "v27ter": 4800}


def _synthetic_page(rows: int = 400, seed: int = 7) -> Page:
    rng = np.random.default_rng(seed)
    blocks = rng.random((rows // 8, FAX_WIDTH // 16)) < 0.3
    page = np.repeat(np.repeat(blocks, 8, axis=0), 16, axis=1).astype(np.uint8)
    page[::37, :] = 1  # a few all-black rows
    page[:, 0] = 1  # and pels at both margins
    page[1::5, FAX_WIDTH - 1] = 1
    return page


def _documents() -> dict[int, list[Page]]:
    return {1: [itu_page("itu1")], 3: [itu_page("itu2"), _synthetic_page(), itu_page("itu5")]}


def _assert_pages_equal(received: list[Page], sent: list[Page]) -> None:
    assert len(received) == len(sent)
    for number, (got, want) in enumerate(zip(received, sent, strict=True), 1):
        assert got.shape == want.shape, f"page {number}"
        assert np.array_equal(got, want), f"page {number}: {int((got != want).sum())} pels differ"


def _assert_call(
    sender: sf.SpanFax | sf.SpanT38,
    receiver: sf.SpanFax | sf.SpanT38,
    rx_tiff: Path,
    sent: list[Page],
    *,
    ecm: bool,
    bit_rate: int,
) -> None:
    tx, rx = sender.result, receiver.result
    assert tx.ok, tx.completion_text
    assert rx.ok, rx.completion_text
    assert tx.completion_text == "OK"
    assert (tx.pages_tx, rx.pages_rx) == (len(sent), len(sent))
    assert tx.bit_rate == rx.bit_rate == bit_rate
    assert tx.ecm is rx.ecm is ecm
    assert tx.remote_ident == "ANSWERER"
    assert rx.remote_ident == "CALLER 123"
    assert [p.length for p in rx.pages] == [p.shape[0] for p in sent]
    assert all(p.width == FAX_WIDTH and p.bad_rows == 0 for p in rx.pages)
    _assert_pages_equal(sf.read_fax_tiff(rx_tiff), sent)


def test_t30_stats_layout() -> None:
    """``t30_stats_t`` of the 2011 snapshot: 15 ints, in header order."""
    assert ctypes.sizeof(sf.T30Stats) == 60
    names = [f[0] for f in sf.T30Stats._fields_]
    assert names[:4] == ["bit_rate", "error_correcting_mode", "pages_tx", "pages_rx"]
    assert sf.T30Stats.current_status.offset == 56
    assert sf.T30Stats.error_correcting_mode_retries.offset == 52


def test_tiff_helpers_round_trip(tmp_path: Path) -> None:
    pages = [_synthetic_page(64, seed) for seed in (1, 2)]
    for compression in ("g3", "g3-2d", "g4"):
        path = sf.write_fax_tiff(tmp_path / f"{compression}.tif", pages, compression=compression)
        _assert_pages_equal(sf.read_fax_tiff(path), pages)


@pytest.mark.parametrize("ecm", [True, False], ids=["ecm", "no-ecm"])
@pytest.mark.parametrize("modem", ["v17", "v27ter"])
@pytest.mark.parametrize("count", [1, 3])
def test_audio_fax_to_audio_fax(tmp_path: Path, count: int, modem: str, ecm: bool) -> None:
    sent = _documents()[count]
    src = sf.write_fax_tiff(tmp_path / "tx.tif", sent)
    rx_tiff = tmp_path / "rx.tif"
    caller = sf.SpanFax(True, transmit_tiff=src, ecm=ecm, modems={modem}, ident="CALLER 123")
    answerer = sf.SpanFax(False, receive_tiff=rx_tiff, ecm=ecm, modems={modem}, ident="ANSWERER")
    run = sf.run_audio_pair(caller, answerer, max_seconds=400)
    assert run.completed
    assert run.a_to_b == run.b_to_a == run.samples
    _assert_call(caller, answerer, rx_tiff, sent, ecm=ecm, bit_rate=RATES[modem])
    names = [f.name for f in caller.frames if f.sent]
    assert names[:2] == ["TSI", "DCS"] and names[-1] == "DCN"
    assert ("PPS" in names) is ecm and ("EOP" in names) is not ecm


def test_audio_fax_through_g711_and_answerer_sending(tmp_path: Path) -> None:
    """The caller polls the answering machine's document (DIS, DTC, DCS) through an A-law line about
    7 dB down, and MMR is chosen under ECM."""
    sent = [_synthetic_page(300, 11), _synthetic_page(120, 12)]
    src = sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="standard")
    rx_tiff = tmp_path / "rx.tif"

    def pcma(block: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        return line.g711(block * 10 ** (-7 / 20), "PCMA")

    caller = sf.SpanFax(True, receive_tiff=rx_tiff, compressions={"mh", "mr", "mmr"})
    answerer = sf.SpanFax(False, transmit_tiff=src, compressions={"mh", "mr", "mmr"})
    run = sf.run_audio_pair(caller, answerer, line=(pcma, pcma), max_seconds=200)
    assert run.completed
    assert caller.result.ok and answerer.result.ok, (caller.result, answerer.result)
    assert caller.result.pages_rx == answerer.result.pages_tx == 2
    assert {p.encoding for p in caller.result.pages} == {"mmr"}
    assert all(p.y_resolution == 3850 and p.x_resolution == 8031 for p in caller.result.pages)
    _assert_pages_equal(sf.read_fax_tiff(rx_tiff), sent)


@pytest.mark.parametrize("ecm", [True, False], ids=["ecm", "no-ecm"])
@pytest.mark.parametrize("modem", ["v17", "v27ter"])
@pytest.mark.parametrize("count", [1, 3])
def test_t38_terminal_to_t38_terminal(tmp_path: Path, count: int, modem: str, ecm: bool) -> None:
    sent = _documents()[count]
    src = sf.write_fax_tiff(tmp_path / "tx.tif", sent)
    rx_tiff = tmp_path / "rx.tif"
    caller = sf.SpanT38(True, transmit_tiff=src, ecm=ecm, modems={modem}, ident="CALLER 123")
    answerer = sf.SpanT38(False, receive_tiff=rx_tiff, ecm=ecm, modems={modem}, ident="ANSWERER")
    # UDPTL-style repetition of indicators and end-of-data packets, 40 ms one-way delay
    run = sf.run_t38_pair(caller, answerer, max_seconds=400, latency=320, repeats=count == 3)
    assert run.completed
    _assert_call(caller, answerer, rx_tiff, sent, ecm=ecm, bit_rate=RATES[modem])
    seqs = [p.seq_no for p in caller.sent]
    assert seqs == list(range(len(seqs)))
    assert {p.count for p in caller.sent} == {1, 3}  # data once, indicators and data ends three times


def test_t38_ecm_recovers_lost_image_packets(tmp_path: Path) -> None:
    sent = [itu_page("itu2")[:800]]
    src = sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="standard")
    rx_tiff = tmp_path / "rx.tif"
    rng = np.random.default_rng(2)
    dropped: list[int] = []

    def lose_image_data(packets: list[sf.IfpPacket]) -> list[sf.IfpPacket]:
        kept = []
        for p in packets:
            if len(p.data) > 20 and rng.random() < 0.02:
                dropped.append(p.seq_no)
            else:
                kept.append(p)
        return kept

    caller = sf.SpanT38(True, transmit_tiff=src)
    answerer = sf.SpanT38(False, receive_tiff=rx_tiff)
    run = sf.run_t38_pair(caller, answerer, link=(lose_image_data, lambda p: p), max_seconds=200)
    assert run.completed and dropped
    assert caller.result.ok and answerer.result.ok
    assert caller.result.pages[0].ecm_retries > 0
    assert "PPR" in [f.name for f in caller.frames if not f.sent]
    _assert_pages_equal(sf.read_fax_tiff(rx_tiff), sent)


def test_result_while_running_logging_and_failure(tmp_path: Path) -> None:
    """Nothing answers on a dead line: the caller gives up after T0 with a non-OK completion code."""
    src = sf.write_fax_tiff(tmp_path / "tx.tif", [_synthetic_page(40)])
    caller = sf.SpanFax(True, transmit_tiff=src, log_level=sf.SPAN_LOG_FLOW)
    assert not caller.done
    assert caller.result.completion_code is None and caller.result.completion_text == "in progress"
    answerer = sf.SpanFax(False, receive_tiff=tmp_path / "rx.tif")

    def dead(block: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        return np.zeros_like(block)

    run = sf.run_audio_pair(caller, answerer, line=dead, max_seconds=120)
    assert run.completed
    assert caller.result.completion_code == 2  # T30_ERR_T0_EXPIRED
    assert caller.result.completion_text == sf.completion_text(2)
    assert not caller.result.ok and not answerer.result.ok
    assert caller.result.pages_tx == 0
    assert any("T.30" in text for _, text in caller.log)
    assert all(at <= run.samples for at, _ in caller.log)
