"""Fax reception acceptance tests: SpanDSP's fax machine calls ``ums serve``, the owner gets the pages.

What it does
------------
A test-side caller (:func:`tests.peers.faxcaller.call_fax`) dials the fax number ``200`` of a server
whose mailbox has ``service = "fax"`` and sends one page (a crop of ITU test chart 1 at standard
resolution, about 20 s at V.17) with SpanDSP's fax machine, in real time:

1. over G.711 A-law RTP (ECM), and over µ-law without ECM;
2. over T.38: the caller re-INVITEs to ``m=image`` one second after the answer, UDPTL redundancy;
3. over T.38 with the server sending the re-INVITE after CED (``[fax] t38_reinvite = "after_ced"``),
   delivered as TIFF (``fax_format = "tiff"``);
4. over T.38 with 10 % of the UDPTL datagrams lost each way and redundancy 3.

Each checks SpanDSP's phase E result (OK, one page sent), the server's log, and that the aiosmtpd sink
gets one e-mail for the owner with a PDF whose one page is the sent page, pel for pel.

How it works
------------
The caller is one asyncio loop (SIP UAC, RTP or UDPTL socket, SpanDSP); it hangs up half a second after
phase E.  The PDF page is read with pypdfium2: the image XObject of the page, decoded at its own pel
size (no rendering, so no resampling), black where the gray value is 0.  A TIFF attachment is read with
Pillow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import spandsp
from tests.peers.faxcaller import FaxCallResult, call_fax
from tests.peers.ports import free_port
from tests.peers.procs import PeerError
from tests.peers.smtpsink import Attachment, Mail, SmtpSink
from tests.peers.spandsp_fax import read_fax_tiff, write_fax_tiff
from tests.peers.ums import LogEvent, UmsConfig, UmsServer
from tests.unit.fax.pages import itu_page

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(150)]

OWNER = "fax@example.com"
NUMBER = "200"
CALLER = "+4930555"
Page = npt.NDArray[np.uint8]
FaxServer = Callable[..., UmsServer]


def source_page() -> Page:
    """400 rows of ITU chart 1 at standard resolution (every second fine row of rows 400-1199)."""
    return itu_page("itu1")[400:1200:2].copy()


@pytest.fixture(scope="module")
def page_tiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Page]:
    page = source_page()
    path = tmp_path_factory.mktemp("fax-src") / "page.tif"
    write_fax_tiff(path, [page], resolution="standard")
    return path, page


@pytest.fixture
def sink(run_dir: Path) -> Iterator[SmtpSink]:
    s = SmtpSink(run_dir, free_port())
    yield s
    s.stop()


@pytest.fixture
def fax_server(
    run_dir: Path, sink: SmtpSink, dump_logs_on_failure: None
) -> Iterator[Callable[..., UmsServer]]:
    """Factory: ``fax_server(fax={"t38_reinvite": "after_ced"}, fax_format="tiff")`` -> a started
    server with the fax mailbox ``200`` delivering to the sink; ``fax`` is the ``[fax]`` table."""
    started: list[UmsServer] = []

    def factory(fax: Mapping[str, Any] | None = None, fax_format: str = "pdf") -> UmsServer:
        if not spandsp.available():
            pytest.fail("libspandsp2 is not installed (see scripts/install-peers.sh)")
        sink.start()
        cfg = UmsConfig(
            data_dir=run_dir / "ums" / "data",
            mailboxes=((NUMBER, OWNER, "fax"),),
            mailbox_options={NUMBER: {"fax_format": fax_format}},
            mail={"smarthost": sink.address, "retry_first": 1, "retry_max": 2},
            fax=dict(fax or {}),
        )
        server = UmsServer(run_dir / "ums", cfg)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.stop()


# -- checks ------------------------------------------------------------------------------------------
def pdf_pages(data: bytes) -> list[Page]:
    """The image of each PDF page at its own pel size, 1 = black."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    pages: list[Page] = []
    doc = pdfium.PdfDocument(data)
    for page in doc:
        images = list(page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,)))
        assert len(images) == 1, f"{len(images)} images on a page"
        gray = images[0].get_bitmap(render=False).to_numpy()
        if gray.ndim == 3:
            gray = gray[..., 0]
        pages.append((gray < 128).astype(np.uint8))
    return pages


def attachment_pages(att: Attachment, tmp: Path) -> list[Page]:
    name = att.filename.lower()
    if name.endswith(".pdf") or att.content_type == "application/pdf":
        return pdf_pages(att.data)
    path = tmp / "received.tif"
    path.write_bytes(att.data)
    return read_fax_tiff(path)


def check_call(result: FaxCallResult, *, t38: bool) -> None:
    assert result.answered, result.describe()
    assert result.fax is not None and result.fax.ok, result.describe()
    assert result.fax.pages_tx == 1, result.describe()
    assert result.t38 is t38, result.describe()
    assert result.ended_by in ("local-bye", "remote-bye"), result.describe()


def check_log(ums: UmsServer, result: FaxCallResult, transport: str) -> LogEvent:
    """The server's own account of the call: one page received, on ``transport``, then delivered."""
    done = ums.wait_event("fax.call_done", timeout=15, call_id=result.call_id)
    assert str(done.get("success")).lower() in ("true", "1", "yes"), done.line
    assert done.get("pages") == "1", done.line
    assert done.get("transport") == transport, done.line
    assert len(ums.events("fax.page", call_id=result.call_id)) == 1, ums.log_tail(60)
    if done.get("id"):
        ums.wait_event("pipeline.delivered", timeout=30, id=done["id"])
    return done


def check_mail(ums: UmsServer, sink: SmtpSink, page: Page, tmp: Path) -> Mail:
    try:
        (mail,) = sink.wait_messages(1, timeout=30)
    except PeerError as exc:
        raise AssertionError(f"{exc}\n{ums.log_tail(60)}") from None
    assert OWNER in ",".join(mail.envelope_to) + (mail.header("To") or ""), mail.envelope_to
    assert mail.header("X-UMS-Kind") == "fax", mail.header("X-UMS-Kind")
    docs = [a for a in mail.attachments() if a.filename.lower().endswith((".pdf", ".tif", ".tiff"))]
    assert len(docs) == 1, [(a.filename, a.content_type) for a in mail.attachments()]
    pages = attachment_pages(docs[0], tmp)
    assert len(pages) == 1, f"{len(pages)} pages"
    got = pages[0]
    assert got.shape == page.shape, f"page {got.shape}, sent {page.shape}"
    assert np.array_equal(got, page), f"{int((got != page).sum())} pels differ"
    time.sleep(1.0)  # a second copy would come within the retry interval
    assert len(sink.paths()) == 1
    return mail


# -- 1. G.711 ----------------------------------------------------------------------------------------
def test_g711_fax_arrives_as_pdf(
    run_dir: Path, fax_server: FaxServer, sink: SmtpSink, page_tiff: tuple[Path, Page]
) -> None:
    tiff, page = page_tiff
    ums = fax_server()
    result = call_fax(ums.address, NUMBER, tiff, caller=CALLER, codec="PCMA", t38="none", max_seconds=75)
    ums.wait_event("call.ended", timeout=10)
    check_call(result, t38=False)
    assert result.fax is not None and result.fax.bit_rate == 14400, result.describe()
    check_log(ums, result, "g711")
    check_mail(ums, sink, page, run_dir)


def test_g711_pcmu_without_ecm(
    run_dir: Path, fax_server: FaxServer, sink: SmtpSink, page_tiff: tuple[Path, Page]
) -> None:
    """Without ECM nothing is retransmitted: a pel-exact page needs an error-free V.17 receiver."""
    tiff, page = page_tiff
    ums = fax_server()
    result = call_fax(ums.address, NUMBER, tiff, caller=CALLER, codec="PCMU", ecm=False, max_seconds=75)
    ums.wait_event("call.ended", timeout=10)
    check_call(result, t38=False)
    assert result.fax is not None and not result.fax.ecm and result.fax.bit_rate == 14400, result.describe()
    check_log(ums, result, "g711")
    check_mail(ums, sink, page, run_dir)


# -- 2. T.38 -----------------------------------------------------------------------------------------
def test_t38_caller_reinvite(
    run_dir: Path, fax_server: FaxServer, sink: SmtpSink, page_tiff: tuple[Path, Page]
) -> None:
    tiff, page = page_tiff
    ums = fax_server()
    result = call_fax(
        ums.address,
        NUMBER,
        tiff,
        caller=CALLER,
        t38="caller",
        reinvite_after=1.0,
        max_seconds=75,
        fallback=False,
    )
    ums.wait_event("call.ended", timeout=10)
    assert result.t38_switch == "caller", result.describe()
    check_call(result, t38=True)
    ums.wait_event("call.reinvite", timeout=5, call_id=result.call_id, change="t38")
    check_log(ums, result, "t38")
    check_mail(ums, sink, page, run_dir)


def test_t38_server_reinvite(
    run_dir: Path, fax_server: FaxServer, sink: SmtpSink, page_tiff: tuple[Path, Page]
) -> None:
    tiff, page = page_tiff
    ums = fax_server(fax={"t38_reinvite": "after_ced"}, fax_format="tiff")
    result = call_fax(ums.address, NUMBER, tiff, caller=CALLER, t38="server", max_seconds=75)
    ums.wait_event("call.ended", timeout=10)
    assert result.server_reinvites >= 1 and result.t38_switch == "server", result.describe()
    check_call(result, t38=True)
    ums.wait_event("fax.t38_accepted", timeout=5, call_id=result.call_id)
    check_log(ums, result, "t38")
    check_mail(ums, sink, page, run_dir)


# -- 3. T.38 with loss -------------------------------------------------------------------------------
def test_t38_ten_percent_loss_redundancy_3(
    run_dir: Path, fax_server: FaxServer, sink: SmtpSink, page_tiff: tuple[Path, Page]
) -> None:
    tiff, page = page_tiff
    ums = fax_server()
    result = call_fax(
        ums.address,
        NUMBER,
        tiff,
        caller=CALLER,
        t38="caller",
        loss=0.1,
        redundancy=3,
        seed=11,
        max_seconds=90,
    )
    ums.wait_event("call.ended", timeout=10)
    check_call(result, t38=True)
    stats = result.stats
    assert stats.udptl_dropped_tx > 0 and stats.udptl_dropped_rx > 0, result.describe()
    check_log(ums, result, "t38")
    check_mail(ums, sink, page, run_dir)
