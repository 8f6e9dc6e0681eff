"""The quick start, exactly as README shows it: ``examples/ums.toml`` on 127.0.0.1:5060.

A call to 100 ends up as an e-mail in alice's Maildir under the data directory, and a
SUBSCRIBE to ``sip:100@127.0.0.1:5060`` for ``message-summary`` shows the count.  A G.711 fax
(SpanDSP's fax machine, :func:`tests.peers.faxcaller.call_fax`, one short page in real time) sent to
the fax number 200, and one sent to the combined number 300 (voicemail answers, the caller's CNG
switches the call to fax), each land in alice's Maildir as a PDF whose page is the sent page, pel
for pel.  A mail from ``bob@example.com`` to ``+4930123456@fax.example.com`` through the SMTP
gateway on 127.0.0.1:2525 is faxed to the trunk at 127.0.0.1:5080 (SpanDSP answering,
:class:`tests.peers.faxanswer.AnswererThread`), and the success report lands in bob's Maildir.  A SIP
MESSAGE to 100 lands in alice's Maildir, and a mail to ``01511234567@sms.example.com`` reaches the
trunk (a SIPp UAS on 5080) as a MESSAGE to ``+491511234567``, with a "sent" report to bob.  The
configuration file is used unchanged (only ``--data-dir`` points into the test's folder), so these
tests need the quick-start ports 5060 (UDP/TCP), 2525 and 5080 free.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest

from tests.acceptance.conftest import require
from tests.acceptance.test_fax_receive import pdf_pages, source_page
from tests.acceptance.test_mwi import notify_fields
from tests.peers import sipp, spandsp
from tests.peers.faxanswer import AnswererThread, AnswerPlan
from tests.peers.faxcaller import call_fax
from tests.peers.ports import free_port, free_port_block
from tests.peers.procs import Proc, wait_until
from tests.peers.spandsp_fax import write_fax_tiff
from tests.peers.ums import REPO, python_executable

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

EXAMPLE = REPO / "examples" / "ums.toml"
ADDRESS = "127.0.0.1:5060"


def _serve(run_dir: Path, data: Path) -> Proc:
    """``ums serve`` with the example configuration, unchanged but for the data directory."""
    argv = [python_executable(), "-m", "ums", "serve", "--config", str(EXAMPLE), "--data-dir", str(data)]
    return Proc(argv, run_dir, "ums", cwd=REPO).start()


def test_quick_start_voicemail_reaches_the_maildir_and_the_lamp(run_dir: Path) -> None:
    require("sipp")
    data = run_dir / "var"
    server = _serve(run_dir, data)
    try:
        server.wait_udp_sip("127.0.0.1", 5060, 20)
        phone = sipp.start(
            "mwi_subscribe",
            run_dir,
            "phone",
            remote=ADDRESS,
            local_port=free_port(),
            service="100",
            calls=1,
            variables={"count": 2, "reject_at": 0, "expires": 600},
            timeout_s=60,
        )
        with phone:
            first = notify_fields(phone.wait_log("notify n=1", timeout=5)[0])
            assert (first["waiting"], first["voice"]) == ("no", "0/0"), first
            caller = sipp.run(
                "uac_pcap",
                run_dir,
                "caller",
                remote=ADDRESS,
                local_port=free_port(),
                service="100",
                calls=1,
                media=("127.0.0.1", free_port_block(4)),
                timeout_s=30,
                wait_s=40,
            )
            assert caller.returncode == 0, caller.describe()
            second = notify_fields(phone.wait_log("notify n=2", timeout=10)[0])
            assert (second["waiting"], second["voice"]) == ("yes", "1/0"), second

        maildir = data / "maildir" / "alice@example.com" / "Maildir" / "new"
        wait_until(lambda: maildir.is_dir() and any(maildir.iterdir()), 20, what="mail in alice's Maildir")
        (mail,) = list(maildir.iterdir())
        text = mail.read_bytes().decode("ascii", errors="replace")
        assert "Subject: Voicemail from " in text and "X-UMS-Kind: voice" in text
        assert "audio/wav" in text or "audio/x-wav" in text
    finally:
        assert server.stop(20) == 0, server.stderr_path.read_text()[-3000:]


@pytest.mark.timeout(200)
def test_quick_start_faxes_to_200_and_300_reach_the_maildir_as_pdf(run_dir: Path) -> None:
    if not spandsp.available():
        pytest.fail("libspandsp2 is not installed (see scripts/install-peers.sh)")
    page = source_page()
    tiff = run_dir / "page.tif"
    write_fax_tiff(tiff, [page], resolution="standard")
    data = run_dir / "var"
    server = _serve(run_dir, data)
    maildir = data / "maildir" / "alice@example.com" / "Maildir" / "new"

    def mails() -> list[Path]:
        return sorted(maildir.iterdir(), key=lambda p: p.stat().st_mtime) if maildir.is_dir() else []

    def wait_mail(n: int) -> Path:
        """The newest message once there are ``n``."""
        wait_until(lambda: len(mails()) >= n, 30, what=f"fax {n} in alice's Maildir")
        return mails()[-1]

    try:
        server.wait_udp_sip("127.0.0.1", 5060, 20)
        for count, number in enumerate(("200", "300"), start=1):
            result = call_fax(ADDRESS, number, tiff, codec="PCMA", t38="none", max_seconds=80)
            assert result.fax is not None and result.fax.ok, f"to {number}: {result.describe()}"
            assert result.fax.pages_tx == 1, f"to {number}: {result.describe()}"
            msg = email.message_from_bytes(wait_mail(count).read_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            assert msg["X-UMS-Kind"] == "fax", (number, msg["Subject"])
            assert str(msg["Subject"]).startswith("Fax from ") and "(incomplete)" not in msg["Subject"]
            pdfs = [a for a in msg.iter_attachments() if a.get_content_type() == "application/pdf"]
            assert len(pdfs) == 1, (number, [a.get_content_type() for a in msg.iter_attachments()])
            assert not [a for a in msg.iter_attachments() if "tif" in a.get_content_type()], number
            (got,) = pdf_pages(bytes(pdfs[0].get_payload(decode=True)))
            assert got.shape == page.shape and np.array_equal(got, page), f"to {number}: page differs"
        log = server.stderr_path.read_text(errors="replace")
        assert "event=fax.cng_detected" in log, log[-3000:]  # 300: voicemail answered, CNG switched
        assert len(mails()) == 2, [p.name for p in mails()]  # no voice message for the call to 300
    finally:
        assert server.stop(20) == 0, server.stderr_path.read_text()[-3000:]


def test_quick_start_mail_to_fax_reaches_the_trunk_and_reports_to_the_sender(run_dir: Path) -> None:
    if not spandsp.available():
        pytest.fail("libspandsp2 is not installed (see scripts/install-peers.sh)")
    data = run_dir / "var"
    reports = data / "maildir" / "bob@example.com" / "Maildir" / "new"
    with AnswererThread(port=5080, default=AnswerPlan(t38="never")) as line:
        server = _serve(run_dir, data)
        try:
            server.wait_tcp("127.0.0.1", 2525, 20)
            msg = EmailMessage()
            msg["From"] = "bob@example.com"
            msg["To"] = "+4930123456@fax.example.com"
            msg["Subject"] = "Quick start fax"
            msg.set_content("A one-page fax from the quick start.\n")
            with smtplib.SMTP("127.0.0.1", 2525, timeout=30) as smtp:
                smtp.send_message(msg)
            (call,) = line.wait_calls(1, 90)
            assert call.ok, call.describe()
            assert call.user == "030123456" and len(call.pages) == 1, call.describe()
            wait_until(lambda: reports.is_dir() and any(reports.iterdir()), 30, what="the report")
            (path,) = list(reports.iterdir())
            report = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert report["X-UMS-Fax-Result"] == "success", report["Subject"]
            assert "sent: 1 page" in str(report["Subject"]), report["Subject"]
        finally:
            assert server.stop(20) == 0, server.stderr_path.read_text()[-3000:]


def test_quick_start_sms_both_ways(run_dir: Path) -> None:
    require("sipp")
    data = run_dir / "var"
    server = _serve(run_dir, data)
    try:
        server.wait_udp_sip("127.0.0.1", 5060, 20)
        server.wait_tcp("127.0.0.1", 2525, 20)
        phone = sipp.run(
            "sms_uac_message",
            run_dir,
            "phone",
            remote=ADDRESS,
            local_port=free_port(),
            service="100",
            calls=1,
            variables={"from": "+4915112345678", "text": "Call me back, please."},
            timeout_s=20,
            wait_s=30,
        )
        assert phone.log_lines("answer 200"), phone.describe()
        inbox = data / "maildir" / "alice@example.com" / "Maildir" / "new"
        wait_until(lambda: inbox.is_dir() and any(inbox.iterdir()), 20, what="the SMS in alice's Maildir")
        (path,) = list(inbox.iterdir())
        mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert mail["X-UMS-Kind"] == "sms" and "+49 151" in str(mail["Subject"]), mail["Subject"]

        with sipp.start("sms_uas_message", run_dir, "trunk", local_port=5080, calls=1, timeout_s=40) as trunk:
            msg = EmailMessage()
            msg["From"] = "bob@example.com"
            msg["To"] = "01511234567@sms.example.com"
            msg["Subject"] = "Quick start SMS"
            msg.set_content("On my way.\n")
            with smtplib.SMTP("127.0.0.1", 2525, timeout=30) as smtp:
                smtp.send_message(msg)
            (line,) = trunk.wait_log("message to=", timeout=30)
            assert "to=+491511234567" in line and "from=+49301234500" in line, line
            assert trunk.log_lines("body=On my way."), trunk.describe()
            assert trunk.wait(20) == 0, trunk.describe()
        reports = data / "maildir" / "bob@example.com" / "Maildir" / "new"
        wait_until(lambda: reports.is_dir() and any(reports.iterdir()), 30, what="the SMS report")
        (rpath,) = list(reports.iterdir())
        report = email.message_from_bytes(rpath.read_bytes(), policy=email.policy.default)
        assert report["X-UMS-SMS-Result"] == "sent", report["Subject"]
    finally:
        assert server.stop(20) == 0, server.stderr_path.read_text()[-3000:]
