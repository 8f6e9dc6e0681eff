"""E-mail to fax acceptance tests: smtplib mails ``ums serve``, SpanDSP receives the fax.

What it does
------------
A test-side SIP answerer (:class:`tests.peers.faxanswer.AnswererThread`) stands in for the PBX trunk
and the remote fax machines: SpanDSP's fax machine answers, over G.711 or T.38, as each dialled
number's plan says.  Mails go to the server's gateway on ``[mail] listen`` with :mod:`smtplib`; the
reports to the senders reach the aiosmtpd sink (the smarthost).  One server takes these at once:

* a text body and a one-page PDF to ``+4930111111@fax.example.com`` (G.711) and to
  ``+4930222222@fax.example.com`` (the answerer switches to T.38): SpanDSP's received pages equal the
  pages :func:`ums.outbound.document.compose_document` makes of the same mail, pel for pel, and the
  sender gets one success report with the page count;
* ``+4930333333``: busy on the first call, a fax on the second;
* ``+4930444444``: never answers; after the last call the sender gets one failure report;
* an unknown sender gets ``550`` and makes no call; a premium-rate number is refused with a report.

A second server is killed (``kill -9``) right after ``250`` for a fax due a few seconds later, then
started again: the fax is sent once.
"""

from __future__ import annotations

import io
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest

from tests.peers import spandsp
from tests.peers.faxanswer import AnsweredCall, AnswererThread, AnswerPlan
from tests.peers.ports import free_port
from tests.peers.procs import PeerTimeout, wait_until
from tests.peers.smtpsink import Mail, SmtpSink
from tests.peers.ums import UmsConfig, UmsServer
from ums.outbound.document import compose_document

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(240)]

SENDER = "bob@example.com"
DOMAIN = "fax.example.com"
G711 = "+4930111111"
T38 = "+4930222222"
BUSY_ONCE = "+4930333333"
NO_ANSWER = "+4930444444"
PREMIUM = "+4990012345678"
RESTART = "+4930555555"
AUTHENTICATED = "+4930666666"
PARTNER = "carol@partner.example.org"


def _dialled(e164: str) -> str:
    """What the server dials for a German number (national format)."""
    return "0" + e164[3:]


def _pdf() -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.setFont("Helvetica-Bold", 28)
    c.drawString(72, 760, "Order 4711")
    c.setFont("Helvetica", 14)
    for i in range(12):
        c.drawString(72, 700 - 24 * i, f"Line {i + 1}: 3 x widget, part no. {1000 + 7 * i}")
    c.rect(60, 380, 470, 350)
    c.showPage()
    c.save()
    return buf.getvalue()


def _mail(
    to: str,
    sender: str = SENDER,
    *,
    body: str = "Please find our order attached.\n",
    pdf: bool = True,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"Order for {to.split('@')[0]}"
    msg["Message-ID"] = f"<{to.split('@')[0].lstrip('+')}.{time.time_ns()}@example.com>"
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    if pdf:
        msg.add_attachment(_pdf(), maintype="application", subtype="pdf", filename="order.pdf")
    return msg


def _send(port: int, msg: EmailMessage, sender: str = SENDER) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.send_message(msg, from_addr=sender, to_addrs=[str(msg["To"])])


def _reports(sink: SmtpSink, number: str) -> list[Mail]:
    digits = number.lstrip("+")
    return [
        m
        for m in sink.messages()
        if m.header("X-UMS-Kind") == "fax-report"
        and (digits in m.subject.replace(" ", "") or digits in m.body_text().replace(" ", ""))
    ]


def _server(
    run_dir: Path, sink: SmtpSink, trunk_port: int, smtp_port: int, data_dir: Path | None = None
) -> UmsServer:
    cfg = UmsConfig(
        data_dir=data_dir or run_dir / "data",
        mail={
            "smarthost": sink.address,
            "listen": f"127.0.0.1:{smtp_port}",
            "retry_first": 1,
            "users": {PARTNER: "partner-secret"},
        },
        fax={"ident": "+49 89 4711"},
        fax_gateway={
            "enabled": True,
            "domains": [DOMAIN],
            "senders": ["@example.com"],
            "allow_authenticated": True,
            "trunk": f"sip:127.0.0.1:{trunk_port}",
            "max_concurrent": 6,
            "resolution": "standard",
            "busy_interval": 1.0,
            "no_answer_interval": 1.0,
            "max_dials": 3,
            "ring_timeout": 3.0,
        },
    )
    return UmsServer(run_dir, cfg)


@dataclass
class Gateway:
    server: UmsServer
    line: AnswererThread
    sink: SmtpSink
    smtp_port: int
    mails: dict[str, EmailMessage]
    refused: smtplib.SMTPException | None


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    if not spandsp.available():
        pytest.fail("libspandsp2 is not installed (see scripts/install-peers.sh)")
    run_dir = tmp_path_factory.mktemp("mail-to-fax")
    plans = {
        _dialled(G711): [AnswerPlan(t38="never")],
        _dialled(T38): [AnswerPlan(t38="reinvite")],
        _dialled(BUSY_ONCE): [AnswerPlan(action="busy"), AnswerPlan(t38="never")],
        _dialled(NO_ANSWER): [AnswerPlan(action="no_answer")] * 5,
        _dialled(AUTHENTICATED): [AnswerPlan(t38="never")],
    }
    sink = SmtpSink(run_dir, free_port()).start()
    line = AnswererThread(number_plans=plans, default=AnswerPlan(action="reject", code=404)).__enter__()
    smtp_port = free_port()
    server = _server(run_dir, sink, line.port, smtp_port).start()
    server.proc.module_scoped = True
    assert sink.proc is not None
    sink.proc.module_scoped = True
    try:
        wait_until(lambda: _smtp_up(smtp_port), 20, what="the SMTP gateway")
        mails = {n: _mail(f"{n}@{DOMAIN}") for n in (G711, T38, BUSY_ONCE, NO_ANSWER, PREMIUM)}
        for m in mails.values():
            _send(smtp_port, m)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
            smtp.login(PARTNER, "partner-secret")  # loopback: AUTH without STARTTLS
            smtp.send_message(_mail(f"{AUTHENTICATED}@{DOMAIN}", PARTNER, pdf=False), from_addr=PARTNER)
        refused: smtplib.SMTPException | None = None
        try:
            _send(smtp_port, _mail(f"{G711}@{DOMAIN}", "eve@elsewhere.org"), "eve@elsewhere.org")
        except smtplib.SMTPException as exc:
            refused = exc
        yield Gateway(server, line, sink, smtp_port, mails, refused)
    finally:
        server.stop(20)
        line.close()
        sink.stop()


def _smtp_up(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as s:
            return s.noop()[0] == 250
    except OSError:
        return False


def _calls_to(gw: Gateway, number: str, finished: int = 0) -> list[AnsweredCall]:
    """The calls to ``number``, once at least ``finished`` of them are over on the answerer's side."""

    def calls() -> list[AnsweredCall]:
        return [c for c in gw.line.calls if c.user == _dialled(number)]

    if finished:
        wait_until(lambda: sum(c.finished for c in calls()) >= finished, 20, what=f"calls to {number}")
    return calls()


def _wait_report(gw: Gateway, number: str, timeout: float = 120.0) -> Mail:
    try:
        wait_until(lambda: bool(_reports(gw.sink, number)), timeout, what=f"the report for {number}")
    except PeerTimeout as exc:
        calls = "\n".join(c.describe() for c in gw.line.calls)
        subjects = [m.subject for m in gw.sink.messages()]
        raise AssertionError(f"{exc}\ncalls:\n{calls}\nmails: {subjects}\n{gw.server.log_tail(60)}") from None
    return _reports(gw.sink, number)[0]


def _check_pages(gw: Gateway, number: str, call: AnsweredCall) -> int:
    doc = compose_document(gw.mails[number].as_bytes(), resolution="standard")
    assert len(call.pages) == len(doc.pages) == 2, (len(call.pages), len(doc.pages))
    for i, (got, want) in enumerate(zip(call.pages, doc.pages, strict=True), 1):
        pels = np.asarray(want.pels, dtype=np.uint8)
        assert got.shape == pels.shape, f"page {i}: {got.shape} != {pels.shape}"
        assert np.array_equal(got, pels), f"page {i}: {int((got != pels).sum())} pels differ"
    return len(doc.pages)


@pytest.mark.parametrize(("number", "transport"), [(G711, "g711"), (T38, "t38")])
def test_mail_with_text_and_pdf_is_faxed_pel_for_pel_and_reported(
    gateway: Gateway, number: str, transport: str
) -> None:
    report = _wait_report(gateway, number)
    (call,) = _calls_to(gateway, number, finished=1)
    assert call.ok, call.describe()
    assert call.transport == transport, call.describe()
    pages = _check_pages(gateway, number, call)
    assert report.envelope_to == (SENDER,)
    assert report.header("X-UMS-Fax-Result") == "success", report.subject
    assert f"sent: {pages} pages" in report.subject, report.subject
    assert len(_reports(gateway.sink, number)) == 1


def test_busy_first_then_sent_on_the_second_call(gateway: Gateway) -> None:
    report = _wait_report(gateway, BUSY_ONCE)
    calls = _calls_to(gateway, BUSY_ONCE, finished=2)
    assert [c.status for c in calls] == [486, 200], [c.describe() for c in calls]
    assert calls[1].ok, calls[1].describe()
    _check_pages(gateway, BUSY_ONCE, calls[1])
    assert report.header("X-UMS-Fax-Result") == "success", report.subject
    assert len(_reports(gateway.sink, BUSY_ONCE)) == 1


def test_no_answer_on_every_call_gives_one_failure_report(gateway: Gateway) -> None:
    report = _wait_report(gateway, NO_ANSWER)
    calls = _calls_to(gateway, NO_ANSWER, finished=3)
    assert len(calls) == 3, [c.describe() for c in calls]  # max_dials
    assert all(c.fax is None for c in calls)
    assert report.header("X-UMS-Fax-Result") == "failure", report.subject
    assert "no answer" in report.subject.lower() or "no answer" in report.body_text().lower()
    time.sleep(2.0)  # nothing more comes
    assert len(_reports(gateway.sink, NO_ANSWER)) == 1 and len(_calls_to(gateway, NO_ANSWER)) == 3


def test_unknown_sender_is_refused_with_550_and_nothing_is_dialled(gateway: Gateway) -> None:
    exc = gateway.refused
    assert isinstance(exc, smtplib.SMTPSenderRefused | smtplib.SMTPRecipientsRefused), repr(exc)
    code = (
        exc.smtp_code
        if isinstance(exc, smtplib.SMTPSenderRefused)
        else next(iter(exc.recipients.values()))[0]
    )
    assert code == 550, repr(exc)
    _wait_report(gateway, G711)
    assert len(_calls_to(gateway, G711)) == 1  # only bob's mail was dialled


def test_premium_rate_number_is_refused_with_a_report(gateway: Gateway) -> None:
    report = _wait_report(gateway, PREMIUM, timeout=30)
    assert report.header("X-UMS-Fax-Result") == "failure", report.subject
    assert "premium" in report.body_text().lower(), report.body_text()
    assert not _calls_to(gateway, PREMIUM)


def test_kill_after_250_then_restart_sends_the_fax_once(tmp_path: Path) -> None:
    if not spandsp.available():
        pytest.fail("libspandsp2 is not installed (see scripts/install-peers.sh)")
    sink = SmtpSink(tmp_path, free_port()).start()
    plans = {_dialled(RESTART): [AnswerPlan(t38="never")] * 3}
    with AnswererThread(number_plans=plans, default=AnswerPlan(action="reject", code=404)) as line:
        smtp_port = free_port()
        data = tmp_path / "data"
        server = _server(tmp_path / "a", sink, line.port, smtp_port, data).start()
        try:
            wait_until(lambda: _smtp_up(smtp_port), 20, what="the SMTP gateway")
            due = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(time.time() + 4))
            msg = _mail(
                f"{RESTART}@{DOMAIN}", body="Restart test.\n", pdf=False, headers={"X-Fax-Send-At": due}
            )
            _send(smtp_port, msg)  # 250 received
            server.kill()
            assert not line.calls
            server = _server(tmp_path / "b", sink, line.port, smtp_port, data).start()
            calls = line.wait_calls(1, 90)
            assert calls[0].ok, calls[0].describe()
            wait_until(lambda: bool(_reports(sink, RESTART)), 30, what="the report")
            time.sleep(3.0)
            assert len(line.calls) == 1, [c.describe() for c in line.calls]
            assert len(_reports(sink, RESTART)) == 1
        finally:
            server.stop(20)
            sink.stop()


def test_a_sender_outside_the_list_may_send_after_smtp_auth(gateway: Gateway) -> None:
    report = _wait_report(gateway, AUTHENTICATED)
    (call,) = _calls_to(gateway, AUTHENTICATED, finished=1)
    assert call.ok and len(call.pages) == 1, call.describe()
    assert report.envelope_to == (PARTNER,)
    assert report.header("X-UMS-Fax-Result") == "success", report.subject
