"""Our audio fax terminal against SpanDSP's audio fax machine: each sends to the other, with V.17,
V.29 and V.27 ter, with and without ECM, at standard and fine resolution, with ITU test charts, and
through G.711 A-law at -20 dBm0.  Every received page must be the sent page, pel for pel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import line, spandsp
from tests.peers import spandsp_fax as sf
from tests.unit.fax.pages import itu_page
from ums.fax.t30 import Finished, PageReceived, PageSent, T30Config, T30Engine
from ums.fax.t30_frames import Modem
from ums.render.page import FaxPage, Resolution
from ums.softfax_g711.terminal import AudioFaxTerminal

pytestmark = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

Page = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.int16]
MODEMS: dict[str, tuple[Modem, ...]] = {
    "v17": ("v17", "v29", "v27ter"),
    "v29": ("v29",),
    "v27ter": ("v27ter",),
}
RATES = {"v17": 14400, "v29": 9600, "v27ter": 4800}
#: SpanDSP's audio fax machine sends its modems at -14 dBm0 (its tones at -11 dBm0).
SPANDSP_LEVEL_DBM0 = -14.0


class OurFax:
    """Our terminal as a :class:`tests.peers.spandsp_fax.AudioFaxEndpoint`: received pages are
    stored (and confirmed) as soon as they are reported."""

    def __init__(self, engine: T30Engine, *, level_dbm0: float = -10.0) -> None:
        self.term = AudioFaxTerminal(engine, level_dbm0=level_dbm0)
        self.pages: list[Page] = []
        self.sent: list[PageSent] = []
        self.finished: list[Finished] = []

    @property
    def done(self) -> bool:
        return self.term.finished

    def rx(self, samples: npt.ArrayLike) -> None:
        self.term.receive(np.asarray(samples, dtype=np.int16))
        for r in self.term.take_reports():
            if isinstance(r, PageReceived):
                self.pages.append(r.pels)
                self.term.page_stored(r.page_no)
            elif isinstance(r, PageSent):
                self.sent.append(r)
            elif isinstance(r, Finished):
                self.finished.append(r)

    def tx(self, n: int) -> Samples:
        return self.term.transmit(n)


def ours(
    role: Literal["calling", "answering"],
    direction: Literal["transmit", "receive"],
    modem: str,
    ecm: bool,
    docs: Sequence[FaxPage] = (),
    *,
    level_dbm0: float = -10.0,
    **config: Any,
) -> OurFax:
    cfg = T30Config(ident="OURS 42", modems=MODEMS[modem], ecm=ecm, **config)
    return OurFax(T30Engine(cfg, role, direction, docs), level_dbm0=level_dbm0)


def alaw(gain_db: float) -> Callable[[Samples], Samples]:
    """An A-law hop with a gain."""

    def fn(x: Samples) -> Samples:
        return line.g711(x * 10 ** (gain_db / 20), "PCMA")

    return fn


def check_pages(got: list[Page], sent: list[Page]) -> None:
    assert len(got) == len(sent)
    for number, (g, want) in enumerate(zip(got, sent, strict=True), 1):
        assert g.shape == want.shape, f"page {number}"
        assert np.array_equal(g, want), f"page {number}: {int((g != want).sum())} pels differ"


def check(
    our: OurFax, span: sf.SpanFax, *, pages: int, modem: str, ecm: bool, rate: int | None = None
) -> None:
    res, sres = our.term.result, span.result
    assert res is not None and res.success, res
    assert sres.ok, sres.completion_text
    assert res.pages == pages and (sres.pages_rx or sres.pages_tx) == pages
    assert (res.modem, res.ecm, sres.ecm) == (modem, ecm, ecm)
    assert sres.bit_rate == (rate or RATES[modem])
    if rate is None:
        assert res.rate == sres.bit_rate
    assert res.remote_ident == "SPANDSP 7"
    assert sres.remote_ident == "OURS 42"
    assert len(our.finished) == 1


CASES = [
    # (modem, ecm, resolution, pages)
    ("v17", True, "fine", [("itu1", None)]),
    ("v17", False, "standard", [("itu2", None)]),
    ("v29", True, "standard", [("itu2", 1400)]),
    ("v29", False, "fine", [("itu1", 1200)]),
    ("v27ter", False, "standard", [("itu2", 1000)]),
    ("v27ter", True, "fine", [("itu1", 800)]),
]


def _load(spec: Sequence[tuple[str, int | None]]) -> list[Page]:
    return [itu_page(name)[:rows] for name, rows in spec]


def _id(case: tuple[str, bool, str, list[tuple[str, int | None]]]) -> str:
    modem, ecm, res, spec = case
    return f"{modem}-{'ecm' if ecm else 'noecm'}-{res}-{len(spec)}p"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_spandsp_sends_we_receive(
    tmp_path: Path, case: tuple[str, bool, Resolution, list[tuple[str, int | None]]]
) -> None:
    modem, ecm, resolution, spec = case
    sent = _load(spec)
    span = sf.SpanFax(
        True,
        transmit_tiff=sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution=resolution),
        ecm=ecm,
        modems=set(MODEMS[modem]),
        ident="SPANDSP 7",
    )
    our = ours("answering", "receive", modem, ecm)
    run = sf.run_audio_pair(span, our, max_seconds=300)
    assert run.completed
    check(our, span, pages=len(sent), modem=modem, ecm=ecm)
    check_pages(our.pages, sent)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_we_send_spandsp_receives(
    tmp_path: Path, case: tuple[str, bool, Resolution, list[tuple[str, int | None]]]
) -> None:
    modem, ecm, resolution, spec = case
    sent = _load(spec)
    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanFax(False, receive_tiff=rx_tiff, ecm=ecm, modems=set(MODEMS[modem]), ident="SPANDSP 7")
    our = ours("calling", "transmit", modem, ecm, [FaxPage.at(p, resolution) for p in sent])
    run = sf.run_audio_pair(our, span, max_seconds=300)
    assert run.completed
    check(our, span, pages=len(sent), modem=modem, ecm=ecm)
    assert [s.response for s in our.sent] == ["MCF"] * len(sent)
    check_pages(sf.read_fax_tiff(rx_tiff), sent)


SEVERAL = [("itu1", None), ("itu2", None), ("itu5", None)]


def test_several_pages_both_ways_mmr(tmp_path: Path) -> None:
    """Three full ITU charts each way, V.17 with ECM; SpanDSP offers MMR, so MMR is used."""
    sent = _load(SEVERAL)
    comps = {"mh", "mr", "mmr"}
    span = sf.SpanFax(
        True,
        transmit_tiff=sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="standard"),
        compressions=comps,
        ident="SPANDSP 7",
    )
    our = ours("answering", "receive", "v17", True)
    assert sf.run_audio_pair(span, our, max_seconds=300).completed
    check(our, span, pages=3, modem="v17", ecm=True)
    assert {p.encoding for p in span.result.pages} == {"mmr"}
    check_pages(our.pages, sent)

    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanFax(False, receive_tiff=rx_tiff, compressions=comps, ident="SPANDSP 7")
    our = ours("calling", "transmit", "v17", True, [FaxPage.at(p, "standard") for p in sent])
    assert sf.run_audio_pair(our, span, max_seconds=300).completed
    check(our, span, pages=3, modem="v17", ecm=True)
    assert {s.compression for s in our.sent} == {"mmr"}
    check_pages(sf.read_fax_tiff(rx_tiff), sent)


@pytest.mark.parametrize(("modem", "ecm"), [("v17", False), ("v29", True)])
def test_alaw_minus_20_dbm0_spandsp_sends(tmp_path: Path, modem: str, ecm: bool) -> None:
    """SpanDSP's signals reach us at -20 dBm0 through A-law; ours reach it the same way."""
    sent = _load([("itu1", 1600)])
    span = sf.SpanFax(
        True,
        transmit_tiff=sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="fine"),
        ecm=ecm,
        modems=set(MODEMS[modem]),
        ident="SPANDSP 7",
    )
    our = ours("answering", "receive", modem, ecm, level_dbm0=-20.0)
    line_fn = (alaw(-20.0 - SPANDSP_LEVEL_DBM0), alaw(0.0))
    assert sf.run_audio_pair(span, our, line=line_fn, max_seconds=300).completed
    check(our, span, pages=1, modem=modem, ecm=ecm)
    check_pages(our.pages, sent)


@pytest.mark.parametrize(("modem", "ecm"), [("v29", True), ("v27ter", False), ("v17", True)])
def test_alaw_minus_20_dbm0_we_send(tmp_path: Path, modem: str, ecm: bool) -> None:
    """V.17 here ends at 12000 bit/s: SpanDSP 0.0.6 rejects our V.17 short train at -20 dBm0 (its
    A/B phase decision), PPR four times, then CTC to 12000 with a long train works."""
    sent = _load([("itu2", 1000)])
    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanFax(False, receive_tiff=rx_tiff, ecm=ecm, modems=set(MODEMS[modem]), ident="SPANDSP 7")
    our = ours("calling", "transmit", modem, ecm, [FaxPage.at(p, "standard") for p in sent], level_dbm0=-20.0)
    line_fn = (alaw(0.0), alaw(-20.0 - SPANDSP_LEVEL_DBM0))
    assert sf.run_audio_pair(our, span, line=line_fn, max_seconds=300).completed
    res = our.term.result
    assert res is not None
    # (after CTC the engine's result keeps the DCS rate: compare SpanDSP's figure only)
    check(our, span, pages=1, modem=modem, ecm=ecm, rate=span.result.bit_rate if modem == "v17" else None)
    assert span.result.bit_rate in ((14400, 12000) if modem == "v17" else (RATES[modem],))
    check_pages(sf.read_fax_tiff(rx_tiff), sent)


def test_polling_both_ways(tmp_path: Path) -> None:
    """We poll SpanDSP's document (our DTC), then SpanDSP polls ours."""
    sent = _load([("itu2", 600)])
    span = sf.SpanFax(
        False,
        transmit_tiff=sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="fine"),
        ident="SPANDSP 7",
    )
    our = ours("calling", "receive", "v17", True)
    assert sf.run_audio_pair(our, span, max_seconds=200).completed
    check(our, span, pages=1, modem="v17", ecm=True)
    check_pages(our.pages, sent)

    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanFax(True, receive_tiff=rx_tiff, ident="SPANDSP 7")
    our = ours("answering", "transmit", "v17", True, [FaxPage.at(p, "fine") for p in sent])
    assert sf.run_audio_pair(span, our, max_seconds=200).completed
    check(our, span, pages=1, modem="v17", ecm=True)
    check_pages(sf.read_fax_tiff(rx_tiff), sent)


TEN = [(f"itu{i}", None) for i in range(1, 9)] + [("test1", None), ("test2", None)]


def test_ten_pages_each_way(tmp_path: Path) -> None:
    """Ten ITU charts (itu1-8, test1-2) each way at standard resolution, V.17 with ECM and MMR."""
    sent = [p[::2] for p in _load(TEN)]
    comps = {"mh", "mr", "mmr"}
    span = sf.SpanFax(
        True,
        transmit_tiff=sf.write_fax_tiff(tmp_path / "tx.tif", sent, resolution="standard"),
        compressions=comps,
        ident="SPANDSP 7",
    )
    our = ours("answering", "receive", "v17", True)
    assert sf.run_audio_pair(span, our, max_seconds=900).completed
    check(our, span, pages=10, modem="v17", ecm=True)
    check_pages(our.pages, sent)

    rx_tiff = tmp_path / "rx.tif"
    span = sf.SpanFax(False, receive_tiff=rx_tiff, compressions=comps, ident="SPANDSP 7")
    our = ours("calling", "transmit", "v17", True, [FaxPage.at(p, "standard") for p in sent])
    assert sf.run_audio_pair(our, span, max_seconds=900).completed
    check(our, span, pages=10, modem="v17", ecm=True)
    assert [s.response for s in our.sent] == ["MCF"] * 10
    check_pages(sf.read_fax_tiff(rx_tiff), sent)
