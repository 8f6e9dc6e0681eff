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

The calls run at the same time, each on a server and a sink of its own (a module-scoped fixture,
one thread per call); each test then checks its own call's result, the server's log and the mail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import spandsp
from tests.peers.faxcaller import FaxCallResult, call_fax
from tests.peers.ports import free_port
from tests.peers.procs import PeerError, tail
from tests.peers.smtpsink import Attachment, Mail, SmtpSink
from tests.peers.spandsp_fax import read_fax_tiff, write_fax_tiff
from tests.peers.ums import LogEvent, UmsConfig, UmsServer
from tests.unit.fax.pages import itu_page

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(150)]

OWNER = "fax@example.com"
NUMBER = "200"
CALLER = "+4930555"
Page = npt.NDArray[np.uint8]


def source_page() -> Page:
    """400 rows of ITU chart 1 at standard resolution (every second fine row of rows 400-1199)."""
    return itu_page("itu1")[400:1200:2].copy()


@pytest.fixture(scope="module")
def page_tiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Page]:
    page = source_page()
    path = tmp_path_factory.mktemp("fax-src") / "page.tif"
    write_fax_tiff(path, [page], resolution="standard")
    return path, page


@dataclass(frozen=True)
class Scenario:
    """One call on a server of its own: the ``[fax]`` table, extra mailbox keys and the call."""

    call: Callable[[UmsServer], FaxCallResult]
    fax: Mapping[str, Any] = field(default_factory=dict)
    mailbox: Mapping[str, Any] | None = None


@dataclass
class Run:
    """What a scenario left: its server (still running), its sink, the caller's result or error."""

    dir: Path
    server: UmsServer
    sink: SmtpSink
    result: FaxCallResult | None = None
    error: BaseException | None = None

    def outcome(self) -> tuple[UmsServer, SmtpSink, FaxCallResult]:
        """The server, the sink and the caller's result; the call's own exception if it failed."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.server, self.sink, self.result


def start_runs(base: Path, scenarios: Mapping[str, Scenario]) -> Iterator[dict[str, Run]]:
    """Start a sink and a server per scenario and place all the calls at once (one thread each).

    For a module-scoped fixture: yields the runs by name once every call is over, with the servers
    and sinks still running (``module_scoped``: the tests wait on their logs and mail), and stops
    them afterwards.  A failing call is kept in its :class:`Run` and raised by its own test.
    """
    if not spandsp.available():
        pytest.fail("libspandsp2 is not installed (see scripts/install-peers.sh)")
    runs: dict[str, Run] = {}
    for i, (name, sc) in enumerate(scenarios.items(), 1):
        run_dir = base / f"call{i}"
        sink = SmtpSink(run_dir, free_port())
        cfg = UmsConfig(
            data_dir=run_dir / "ums" / "data",
            mailboxes=((NUMBER, OWNER, "fax"),),
            mailbox_options={NUMBER: dict(sc.mailbox)} if sc.mailbox is not None else {},
            mail={"smarthost": sink.address, "retry_first": 1, "retry_max": 2},
            fax=dict(sc.fax),
        )
        runs[name] = Run(run_dir, UmsServer(run_dir / "ums", cfg), sink)

    def place(run: Run, sc: Scenario) -> FaxCallResult:
        run.sink.start()
        assert run.sink.proc is not None
        run.sink.proc.module_scoped = True
        run.server.proc.module_scoped = True  # before start: the flag only matters once it runs
        run.server.start()
        return sc.call(run.server)

    try:
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            futures = {name: pool.submit(place, runs[name], sc) for name, sc in scenarios.items()}
            for name, fut in futures.items():
                exc = fut.exception()
                if exc is None:
                    runs[name].result = fut.result()
                else:
                    runs[name].error = exc
        yield runs
    finally:

        def stop(run: Run) -> None:
            run.server.stop()
            run.sink.stop()

        with ThreadPoolExecutor(max_workers=len(runs) or 1) as pool:  # each takes a few seconds
            list(pool.map(stop, runs.values()))


def show_logs_on_failure(request: pytest.FixtureRequest, run: Run) -> None:
    """After a failed test: the tails of its scenario's server and peer logs."""
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for path in sorted(run.dir.rglob("*")):
            if path.is_file() and path.suffix in (".err", ".out", ".log") and path.stat().st_size:
                print(f"===== {path.relative_to(run.dir)} =====\n{tail(path, 60)}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, page_tiff: tuple[Path, Page]) -> Iterator[dict[str, Run]]:
    """All calls of this module at once, one server each; keyed by the test that checks it."""
    tiff, _ = page_tiff

    def caller(**kwargs: Any) -> Callable[[UmsServer], FaxCallResult]:
        return lambda ums: call_fax(ums.address, NUMBER, tiff, caller=CALLER, **kwargs)

    pdf = {"fax_format": "pdf"}
    scenarios = {
        "test_g711_fax_arrives_as_pdf": Scenario(
            caller(codec="PCMA", t38="none", max_seconds=75), mailbox=pdf
        ),
        "test_g711_pcmu_without_ecm": Scenario(caller(codec="PCMU", ecm=False, max_seconds=75), mailbox=pdf),
        "test_t38_caller_reinvite": Scenario(
            caller(t38="caller", reinvite_after=1.0, max_seconds=75, fallback=False), mailbox=pdf
        ),
        "test_t38_server_reinvite": Scenario(
            caller(t38="server", max_seconds=75),
            fax={"t38_reinvite": "after_ced"},
            mailbox={"fax_format": "tiff"},
        ),
        "test_t38_ten_percent_loss_redundancy_3": Scenario(
            caller(t38="caller", loss=0.1, redundancy=3, seed=11, max_seconds=90), mailbox=pdf
        ),
    }
    yield from start_runs(tmp_path_factory.mktemp("fax-receive"), scenarios)


@pytest.fixture
def scenario(request: pytest.FixtureRequest, runs: dict[str, Run]) -> Iterator[Run]:
    """This test's run (by test name); its logs are printed if the test fails."""
    run = runs[request.node.name]
    yield run
    show_logs_on_failure(request, run)


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
def test_g711_fax_arrives_as_pdf(run_dir: Path, scenario: Run, page_tiff: tuple[Path, Page]) -> None:
    _, page = page_tiff
    ums, sink, result = scenario.outcome()
    ums.wait_event("call.ended", timeout=10)
    check_call(result, t38=False)
    assert result.fax is not None and result.fax.bit_rate == 14400, result.describe()
    check_log(ums, result, "g711")
    check_mail(ums, sink, page, run_dir)


def test_g711_pcmu_without_ecm(run_dir: Path, scenario: Run, page_tiff: tuple[Path, Page]) -> None:
    """Without ECM nothing is retransmitted: a pel-exact page needs an error-free V.17 receiver."""
    _, page = page_tiff
    ums, sink, result = scenario.outcome()
    ums.wait_event("call.ended", timeout=10)
    check_call(result, t38=False)
    assert result.fax is not None and not result.fax.ecm and result.fax.bit_rate == 14400, result.describe()
    check_log(ums, result, "g711")
    check_mail(ums, sink, page, run_dir)


# -- 2. T.38 -----------------------------------------------------------------------------------------
def test_t38_caller_reinvite(run_dir: Path, scenario: Run, page_tiff: tuple[Path, Page]) -> None:
    _, page = page_tiff
    ums, sink, result = scenario.outcome()
    ums.wait_event("call.ended", timeout=10)
    assert result.t38_switch == "caller", result.describe()
    check_call(result, t38=True)
    ums.wait_event("call.reinvite", timeout=5, call_id=result.call_id, change="t38")
    check_log(ums, result, "t38")
    check_mail(ums, sink, page, run_dir)


def test_t38_server_reinvite(run_dir: Path, scenario: Run, page_tiff: tuple[Path, Page]) -> None:
    _, page = page_tiff
    ums, sink, result = scenario.outcome()
    ums.wait_event("call.ended", timeout=10)
    assert result.server_reinvites >= 1 and result.t38_switch == "server", result.describe()
    check_call(result, t38=True)
    ums.wait_event("fax.t38_accepted", timeout=5, call_id=result.call_id)
    check_log(ums, result, "t38")
    check_mail(ums, sink, page, run_dir)


# -- 3. T.38 with loss -------------------------------------------------------------------------------
def test_t38_ten_percent_loss_redundancy_3(
    run_dir: Path, scenario: Run, page_tiff: tuple[Path, Page]
) -> None:
    _, page = page_tiff
    ums, sink, result = scenario.outcome()
    ums.wait_event("call.ended", timeout=10)
    check_call(result, t38=True)
    stats = result.stats
    assert stats.udptl_dropped_tx > 0 and stats.udptl_dropped_rx > 0, result.describe()
    check_log(ums, result, "t38")
    check_mail(ums, sink, page, run_dir)
