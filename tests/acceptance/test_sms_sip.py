"""SMS over SIP MESSAGE, acceptance: SIPp as the phone and as the trunk, aiosmtpd as the smarthost.

What it does
------------
One ``ums serve`` with ``[sms] transport = "sip"``:

* SIPp sends a MESSAGE (UTF-8, umlauts) from ``+4915112345678`` to mailbox 100: SIPp gets 200 and
  alice gets one e-mail with the text and the sender's directory name;
* a MESSAGE to a number we do not serve gets 404 and makes no mail;
* a mail from bob to ``+4915199999999@sms.example.com`` leaves as a MESSAGE to the trunk (a SIPp UAS):
  Request-URI user ``+4915199999999``, ``text/plain`` with the mail's text, without the quoted
  history and the signature; bob gets a report that the text was sent.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.acceptance.conftest import require
from tests.peers import sipp
from tests.peers.ports import free_port
from tests.peers.procs import wait_until
from tests.peers.smtpsink import Mail, SmtpSink
from tests.peers.ums import UmsConfig, UmsServer

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

MOBILE = "+4915112345678"
TARGET = "+4915199999999"


@dataclass
class Setup:
    server: UmsServer
    sink: SmtpSink
    smtp_port: int
    trunk_port: int
    run_dir: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require("sipp")
    run_dir = tmp_path_factory.mktemp("sms-sip")
    sink = SmtpSink(run_dir, free_port()).start()
    smtp_port, trunk_port = free_port(), free_port()
    cfg = UmsConfig(
        data_dir=run_dir / "data",
        mail={"smarthost": sink.address, "listen": f"127.0.0.1:{smtp_port}", "retry_first": 1},
        directory_entries={MOBILE: "Jane Doe"},
        fax_gateway={"senders": ["@example.com"]},
        sms={
            "enabled": True,
            "transport": "sip",
            "domains": ["sms.example.com"],
            "sender": "+49301234500",
            "trunk": f"sip:127.0.0.1:{trunk_port}",
        },
    )
    server = UmsServer(run_dir, cfg).start()
    server.proc.module_scoped = True
    assert sink.proc is not None
    sink.proc.module_scoped = True
    try:
        yield Setup(server, sink, smtp_port, trunk_port, run_dir)
    finally:
        server.stop(20)
        sink.stop()


def _sms_mails(sink: SmtpSink) -> list[Mail]:
    return [m for m in sink.messages() if m.header("X-UMS-Kind") == "sms"]


def _send_message(setup: Setup, name: str, number: str, text: str) -> sipp.SippRun:
    """SIPp sends one MESSAGE from MOBILE to ``number`` and waits for the answer."""
    return sipp.run(
        "sms_uac_message",
        setup.run_dir,
        name,
        remote=setup.server.config.address,
        local_port=free_port(),
        service=number,
        calls=1,
        variables={"from": MOBILE, "text": text},
        timeout_s=20,
        wait_s=30,
    )


def test_message_to_a_mailbox_number_is_mailed_to_the_owner(setup: Setup) -> None:
    text = "Grüße aus München: bitte Vertrag faxen."
    run = _send_message(setup, "phone", "100", text)
    assert run.returncode == 0, run.describe()
    assert run.log_lines("answer 200"), run.describe()
    wait_until(lambda: len(_sms_mails(setup.sink)) >= 1, 30, what="the SMS mail")
    (mail,) = _sms_mails(setup.sink)
    assert mail.envelope_to == ("alice@example.com",), mail.envelope_to
    assert "Jane Doe" in mail.subject, mail.subject
    assert text in mail.body_text(), mail.body_text()
    listing = setup.server.cli("mailbox", "list", "100")
    assert listing.returncode == 0, listing.stderr
    (row,) = [ln for ln in listing.stdout.splitlines() if " sms " in ln]
    assert f"{len(text)}ch" in row and MOBILE in row, row
    assert "mailbox 100: 1 new, 0 old" in listing.stdout, listing.stdout


def test_message_to_an_unknown_number_gets_404_and_no_mail(setup: Setup) -> None:
    before = len(_sms_mails(setup.sink))
    run = _send_message(setup, "stranger", "999", "hello?")
    assert run.log_lines("answer 404"), run.describe()
    assert len(_sms_mails(setup.sink)) == before


def test_mail_to_the_sms_address_leaves_as_a_message_to_the_trunk(setup: Setup) -> None:
    uas = sipp.start(
        "sms_uas_message",
        setup.run_dir,
        "trunk",
        local_port=setup.trunk_port,
        calls=1,
        timeout_s=60,
    )
    with uas:
        msg = EmailMessage()
        msg["From"] = "bob@example.com"
        msg["To"] = f"{TARGET}@sms.example.com"
        msg["Subject"] = "pickup"
        msg["Message-ID"] = "<pickup.1@example.com>"
        msg.set_content(
            "Your parcel is ready at gate 4.\n\n"
            "-- \nBob Example\nExample Corp\n\n"
            "On Mon, 23 Nov 2026, Carol wrote:\n> where is it?\n"
        )
        with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=30) as s:
            s.send_message(msg)
        (line,) = uas.wait_log("message to=", timeout=30)
        assert f"to={TARGET}" in line and "text/plain" in line, line
        (body,) = uas.log_lines("body=")
        assert body.strip().endswith("body=Your parcel is ready at gate 4."), body
        assert uas.wait(20) == 0, uas.describe()

    def report() -> list[Mail]:
        return [m for m in setup.sink.messages() if m.header("X-UMS-SMS-Result")]

    wait_until(lambda: bool(report()), 30, what="the SMS report")
    (rep,) = report()
    assert rep.header("X-UMS-SMS-Result") == "sent", rep.subject
    assert rep.envelope_to == ("bob@example.com",), rep.envelope_to
    assert rep.header("In-Reply-To") == "<pickup.1@example.com>"
