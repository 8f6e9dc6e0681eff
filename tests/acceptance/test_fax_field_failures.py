"""Fax reception when the calling side misbehaves the way fax machines and gateways do in the field.

What it does
------------
SpanDSP's fax machine (:func:`tests.peers.faxcaller.call_fax`) sends one short page (a crop of ITU
chart 1, about 20 s at V.17) to the fax number ``200`` of ``ums serve``, in real time, and stages one
failure per test:

1. our re-INVITE to T.38 (``[fax] t38_reinvite = "after_ced"``) is answered 488: the fax goes on
   over G.711 and the page arrives pel for pel;
2. a session-refresh re-INVITE (the same SDP) from the caller in the middle of the page on a T.38
   call: answered 200, nothing changes, the page arrives;
3. the caller never hangs up after DCN, and either keeps sending RTP (silence) or goes quiet: the
   server hangs up itself within a few seconds of the end of T.30 (``fax.t30_finished`` ->
   ``call.ended reason=local-bye``; ``[fax] hangup_delay`` is 2 s);
4. the caller hangs up in phase C of page 2 of a 2-page fax, after page 1 was confirmed (MCF): the
   channel is freed and page 1 is mailed as an incomplete fax, with the reason.

That success is reported only after the MCF of the last page is a T.30 engine matter, covered by the
unit tests in ``tests/unit/fax/test_t30.py``.

How it works
------------
Times are compared across processes on the wall clock: the caller's ``timeline`` (``time.time()``)
against the timestamps of the server's log lines (local time, millisecond resolution).  Pages are
read back from the PDF attachment at their own pel size (see ``test_fax_receive``).  The calls run
at the same time, each on a server and a sink of its own (``test_fax_receive.start_runs``); each
test then checks its own call's result, the server's log and the mail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.acceptance.test_fax_receive import (
    CALLER,
    NUMBER,
    OWNER,
    Page,
    Run,
    Scenario,
    attachment_pages,
    show_logs_on_failure,
    source_page,
    start_runs,
)
from tests.peers.faxcaller import FaxCallResult, call_fax
from tests.peers.procs import PeerError
from tests.peers.smtpsink import Mail, SmtpSink
from tests.peers.spandsp_fax import write_fax_tiff
from tests.peers.ums import LogEvent, UmsServer
from tests.unit.fax.pages import itu_page

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(150)]

HANGUP_DELAY = 2.0  # the server's default [fax] hangup_delay


@pytest.fixture(scope="module")
def one_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Page]:
    page = source_page()
    path = tmp_path_factory.mktemp("fax-src") / "page.tif"
    write_fax_tiff(path, [page], resolution="standard")
    return path, page


@pytest.fixture(scope="module")
def two_pages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Page]]:
    pages = [source_page(), itu_page("itu1")[1200:2000:2].copy()]
    path = tmp_path_factory.mktemp("fax-src2") / "pages.tif"
    write_fax_tiff(path, pages, resolution="standard")
    return path, pages


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    one_page: tuple[Path, Page],
    two_pages: tuple[Path, list[Page]],
) -> Iterator[dict[str, Run]]:
    """All calls of this module at once, one server each; keyed by the test that checks it."""

    def caller(tiff: Path, **kwargs: Any) -> Callable[[UmsServer], FaxCallResult]:
        return lambda ums: call_fax(ums.address, NUMBER, tiff, caller=CALLER, **kwargs)

    one, two = one_page[0], two_pages[0]
    no_bye = "test_caller_never_hangs_up_after_dcn_server_sends_bye"
    scenarios = {
        "test_t38_reinvite_refused_with_488_fax_goes_on_over_g711": Scenario(
            caller(one, t38="none", t38_answer=488, max_seconds=75), fax={"t38_reinvite": "after_ced"}
        ),
        "test_session_refresh_reinvite_mid_page_on_t38_changes_nothing": Scenario(
            caller(
                one,
                t38="caller",
                reinvite_after=1.0,
                refresh_after=2.0,  # 2 s after CFR: the page takes about 5 s at 14400 bit/s
                max_seconds=75,
                fallback=False,
            )
        ),
        f"{no_bye}[media]": Scenario(caller(one, t38="none", after_dcn="media", max_seconds=60)),
        f"{no_bye}[silence]": Scenario(caller(one, t38="none", after_dcn="silence", max_seconds=60)),
        "test_bye_during_page_two_frees_the_channel_and_mails_page_one": Scenario(
            caller(
                two,
                t38="none",
                hangup_after_page=1,
                hangup_delay=1.5,  # after MCF for page 1 (+ the time to send PPS-MPS): inside page 2
                max_seconds=75,
            )
        ),
    }
    yield from start_runs(tmp_path_factory.mktemp("fax-field"), scenarios)


@pytest.fixture
def scenario(request: pytest.FixtureRequest, runs: dict[str, Run]) -> Iterator[Run]:
    """This test's run (by test name); its logs are printed if the test fails."""
    run = runs[request.node.name]
    yield run
    show_logs_on_failure(request, run)


# -- helpers -----------------------------------------------------------------------------------------
def stamp(event: LogEvent) -> float:
    """Wall-clock time of a server log line (``2026-11-26 11:40:03,832 INFO ...``, local time)."""
    return datetime.strptime(event.line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def one_mail(ums: UmsServer, sink: SmtpSink) -> Mail:
    try:
        (mail,) = sink.wait_messages(1, timeout=30)
    except PeerError as exc:
        raise AssertionError(f"{exc}\n{ums.log_tail(60)}") from None
    assert OWNER in ",".join(mail.envelope_to) + (mail.header("To") or ""), mail.envelope_to
    assert mail.header("X-UMS-Kind") == "fax", mail.header("X-UMS-Kind")
    return mail


def mailed_pages(mail: Mail, tmp: Path) -> list[Page]:
    docs = [a for a in mail.attachments() if a.filename.lower().endswith(".pdf")]
    assert len(docs) == 1, [(a.filename, a.content_type) for a in mail.attachments()]
    return attachment_pages(docs[0], tmp)


def assert_same(got: Page, sent: Page) -> None:
    assert got.shape == sent.shape, f"page {got.shape}, sent {sent.shape}"
    assert np.array_equal(got, sent), f"{int((got != sent).sum())} pels differ"


def check_delivered(ums: UmsServer, sink: SmtpSink, result: FaxCallResult, page: Page, tmp: Path) -> None:
    """One page received completely on the server's side, one mail with that page, pel for pel."""
    done = ums.wait_event("fax.call_done", timeout=15, call_id=result.call_id)
    assert done.get("success") == "True" and done.get("pages") == "1", done.line
    mail = one_mail(ums, sink)
    assert "(incomplete)" not in mail.subject, mail.subject
    (got,) = mailed_pages(mail, tmp)
    assert_same(got, page)
    time.sleep(1.0)  # a second copy would come within the retry interval
    assert len(sink.paths()) == 1


# -- 1. our re-INVITE to T.38 answered 488 -------------------------------------------------------------
def test_t38_reinvite_refused_with_488_fax_goes_on_over_g711(
    run_dir: Path, scenario: Run, one_page: tuple[Path, Page]
) -> None:
    _, page = one_page
    ums, sink, result = scenario.outcome()
    ums.wait_event("call.ended", timeout=10, call_id=result.call_id)
    assert result.server_reinvites == 1 and result.at("t38-refused") is not None, result.describe()
    assert result.fax is not None and result.fax.ok and result.fax.pages_tx == 1, result.describe()
    assert not result.t38 and result.fax.bit_rate == 14400, result.describe()
    refused = ums.wait_event("fax.t38_refused", timeout=5, call_id=result.call_id)
    assert str(refused.get("reason")).startswith("488"), refused.line
    done = ums.wait_event("fax.call_done", timeout=15, call_id=result.call_id)
    assert done.get("transport") == "g711", done.line
    assert not ums.events("fax.started", call_id=result.call_id, transport="t38"), ums.log_tail(60)
    check_delivered(ums, sink, result, page, run_dir)


# -- 2. session refresh in the middle of a page on T.38 -------------------------------------------------
def test_session_refresh_reinvite_mid_page_on_t38_changes_nothing(
    run_dir: Path, scenario: Run, one_page: tuple[Path, Page]
) -> None:
    _, page = one_page
    ums, sink, result = scenario.outcome()
    ums.wait_event("call.ended", timeout=10, call_id=result.call_id)
    assert result.t38 and result.t38_switch == "caller", result.describe()
    assert result.refresh_status == 200, result.describe()
    assert result.fax is not None and result.fax.ok and result.fax.pages_tx == 1, result.describe()
    refresh = ums.wait_event("call.reinvite", timeout=5, call_id=result.call_id, change="none")
    negotiated = ums.wait_event("fax.negotiated", timeout=5, call_id=result.call_id, transport="t38")
    first_page = ums.wait_event("fax.page", timeout=5, call_id=result.call_id, page="1")
    assert stamp(negotiated) < stamp(refresh) < stamp(first_page), (negotiated.line, refresh.line)
    # one switch to T.38 and one T.38 session: the refresh did not restart anything
    assert len(ums.events("call.reinvite", call_id=result.call_id, change="t38")) == 1, ums.log_tail(60)
    assert len(ums.events("fax.started", call_id=result.call_id, transport="t38")) == 1, ums.log_tail(60)
    done = ums.wait_event("fax.call_done", timeout=15, call_id=result.call_id)
    assert done.get("transport") == "t38", done.line
    check_delivered(ums, sink, result, page, run_dir)


# -- 3. no BYE after DCN ---------------------------------------------------------------------------------
@pytest.mark.parametrize("after_dcn", ["media", "silence"])
def test_caller_never_hangs_up_after_dcn_server_sends_bye(
    run_dir: Path, scenario: Run, one_page: tuple[Path, Page], after_dcn: str
) -> None:
    _, page = one_page
    ums, sink, result = scenario.outcome()
    assert result.fax is not None and result.fax.ok and result.fax.pages_tx == 1, result.describe()
    assert result.ended_by == "remote-bye", result.describe()
    finished = ums.wait_event("fax.t30_finished", timeout=5, call_id=result.call_id)
    ended = ums.wait_event("call.ended", timeout=5, call_id=result.call_id)
    assert ended.get("reason") == "local-bye", ended.line
    delay = stamp(ended) - stamp(finished)
    assert HANGUP_DELAY - 0.2 <= delay <= HANGUP_DELAY + 3.0, f"BYE {delay:.2f} s after T.30 finished"
    phase_e, bye = result.at("phase-e"), result.at("bye-received")
    assert phase_e is not None and bye is not None and bye - phase_e < HANGUP_DELAY + 4.0, result.timeline
    check_delivered(ums, sink, result, page, run_dir)


# -- 4. BYE in phase C of page 2 ------------------------------------------------------------------------
def test_bye_during_page_two_frees_the_channel_and_mails_page_one(
    run_dir: Path, scenario: Run, two_pages: tuple[Path, list[Page]]
) -> None:
    _, pages = two_pages
    ums, sink, result = scenario.outcome()
    assert result.ended_by == "local-bye" and result.at("page 1") is not None, result.describe()
    assert result.fax is not None and result.fax.pages_tx == 1, result.describe()
    assert result.at("phase-e") is None, result.timeline  # still in phase C when we hung up
    ended = ums.wait_event("call.ended", timeout=10, call_id=result.call_id)
    assert ended.get("reason") == "remote-bye", ended.line
    bye = result.at("bye-sent")
    assert bye is not None and stamp(ended) - bye < 2.0, (ended.line, result.timeline)
    assert len(ums.events("fax.page", call_id=result.call_id)) == 1, ums.log_tail(60)
    done = ums.wait_event("fax.call_done", timeout=15, call_id=result.call_id)
    assert done.get("success") == "False" and done.get("pages") == "1", done.line
    mail = one_mail(ums, sink)
    assert "(incomplete)" in mail.subject, mail.subject
    body = mail.body_text()
    assert "incomplete" in body and "not received completely" in body, body
    (got,) = mailed_pages(mail, run_dir)
    assert_same(got, pages[0])
