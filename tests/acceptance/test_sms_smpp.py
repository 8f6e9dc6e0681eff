"""SMS over SMPP, acceptance: ``ums serve`` bound to the SMSC simulator (its own process).

What it does
------------
One server with ``[sms] transport = "smpp"`` against :class:`tests.peers.smsc.SmscProcess` (smpp34's
server), aiosmtpd as the smarthost:

* a mail with a 300-character text with an emoji to ``+4915112345678@sms.example.com`` reaches the
  SMSC as concatenated UCS-2 parts (data_coding 8, UDHI) that rejoin to the text taken from the mail;
  the SMSC's delivery receipts make one "delivered" report to the sender;
* a text from a handset (``deliver_sm``, two concatenated parts) to 100 is mailed to alice;
* the SMSC is killed, a mail arrives while it is down, the SMSC comes back: ums binds again and the
  text is submitted once and reported delivered;
* a text is submitted, the SMSC is killed before its receipt and restarted; the receipt the new
  SMSC sends (UNDELIV) still finds the text, and the sender gets a "not delivered" report.
  Nothing is lost.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest

from tests.peers.ports import free_port
from tests.peers.procs import wait_until
from tests.peers.smtpsink import Mail, SmtpSink
from tests.peers.ums import UmsConfig, UmsServer
from ums.sms.gsm import join_sms, parse_part
from ums.sms.text import sms_text_from_mail

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

smsc_peer = pytest.importorskip("tests.peers.smsc", reason="smpp34 is not installed (pip install -e .[test])")


@dataclass
class Setup:
    server: UmsServer
    smsc: smsc_peer.SmscProcess
    sink: SmtpSink
    smtp_port: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    run_dir = tmp_path_factory.mktemp("sms-smpp")
    smsc = smsc_peer.SmscProcess(free_port(), run_dir / "smsc").start()
    sink = SmtpSink(run_dir, free_port()).start()
    smtp_port = free_port()
    cfg = UmsConfig(
        data_dir=run_dir / "data",
        mail={"smarthost": sink.address, "listen": f"127.0.0.1:{smtp_port}", "retry_first": 1},
        fax_gateway={"senders": ["@example.com"]},
        sms={
            "enabled": True,
            "transport": "smpp",
            "domains": ["sms.example.com"],
            "sender": "+49301234500",
            "retry_intervals": [1.0],
            "smpp": {
                "host": "127.0.0.1",
                "port": smsc.port,
                "system_id": "ums",
                "password": "secret",
                "reconnect_min": 0.2,
                "reconnect_max": 1.0,
                "enquire_link": 2.0,
                "submit_timeout": 3.0,
            },
        },
    )
    server = UmsServer(run_dir, cfg).start()
    server.proc.module_scoped = True
    assert smsc.proc is not None
    smsc.proc.module_scoped = True
    assert sink.proc is not None
    sink.proc.module_scoped = True
    try:
        wait_until(lambda: bool(smsc.events("bound")), 20, what="the bind")
        yield Setup(server, smsc, sink, smtp_port)
    finally:
        server.stop(20)
        smsc.stop()
        sink.stop()


def _mail(to: str, body: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "bob@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '.')}@example.com>"
    msg.set_content(body)
    return msg


def _send(setup: Setup, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", setup.smtp_port, timeout=30) as s:
        s.send_message(msg)


def _reports(setup: Setup, subject: str) -> list[Mail]:
    return [
        m
        for m in setup.sink.messages()
        if m.header("X-UMS-SMS-Result")
        and m.header("In-Reply-To") == f"<{subject.replace(' ', '.')}@example.com>"
    ]


def _rejoined(submits: list[dict[str, object]]) -> str:
    parts = [
        parse_part(
            bytes.fromhex(str(s["short_message"])),
            int(str(s["data_coding"])),
            udhi=bool(int(str(s["esm_class"])) & 0x40),
        )
        for s in submits
    ]
    return join_sms(parts)


def test_long_text_with_emoji_is_submitted_in_ucs2_parts_and_reported_delivered(setup: Setup) -> None:
    text = ("Dear customer, your order 4711 has shipped and will arrive on Friday between 9 and 12. " * 4)[
        :299
    ] + "📦"
    assert len(text) == 300
    msg = _mail("+4915112345678@sms.example.com", text + "\n", "shipping note")
    _send(setup, msg)
    wanted = sms_text_from_mail(msg.as_bytes())
    wait_until(lambda: bool(_reports(setup, "shipping note")), 60, what="the delivered report")
    submits = [s for s in setup.smsc.submits() if str(s["destination"]).endswith("4915112345678")]
    assert len(submits) >= 2, submits
    assert {int(str(s["data_coding"])) for s in submits} == {8}
    assert all(int(str(s["esm_class"])) & 0x40 for s in submits)
    assert _rejoined(submits) == wanted
    (report,) = _reports(setup, "shipping note")
    assert report.header("X-UMS-SMS-Result") == "delivered", report.subject
    assert report.envelope_to == ("bob@example.com",)


def test_text_from_a_handset_is_mailed_to_the_mailbox_owner(setup: Setup) -> None:
    text = "Running late, see you at 10. " * 7  # 203 characters: two GSM parts
    statuses = setup.smsc.send_mo("4915199999999", "100", text)
    assert statuses and all(s == 0 for s in statuses), statuses

    def mails() -> list[Mail]:
        return [m for m in setup.sink.messages() if m.header("X-UMS-Kind") == "sms"]

    wait_until(lambda: bool(mails()), 30, what="the SMS mail")
    (mail,) = mails()
    assert mail.envelope_to == ("alice@example.com",)
    assert text.strip() in " ".join(mail.body_text().split()) or text.strip() in mail.body_text()


def test_smsc_restart_loses_nothing(setup: Setup) -> None:
    setup.smsc.kill()
    msg = _mail("+4915177777777@sms.example.com", "Meeting moved to 3 pm.\n", "moved meeting")
    _send(setup, msg)  # taken while the SMSC is down: durable, queued
    setup.smsc.restart(kill=False)
    assert setup.smsc.proc is not None
    setup.smsc.proc.module_scoped = True
    wait_until(lambda: bool(_reports(setup, "moved meeting")), 60, what="the report after the restart")
    submits = [s for s in setup.smsc.submits() if str(s["destination"]).endswith("4915177777777")]
    assert len(submits) == 1, submits
    (report,) = _reports(setup, "moved meeting")
    assert report.header("X-UMS-SMS-Result") == "delivered", report.subject


def test_receipt_after_an_smsc_restart_still_finds_its_text(setup: Setup) -> None:
    setup.smsc.set_options(receipts=False)
    _send(setup, _mail("+4915166666666@sms.example.com", "Invoice 12 is paid.\n", "paid invoice"))

    def submitted() -> list[dict[str, object]]:
        return [s for s in setup.smsc.submits() if str(s["destination"]).endswith("4915166666666")]

    wait_until(lambda: bool(submitted()), 30, what="the submit")
    (submit,) = submitted()
    setup.smsc.restart()  # kill -9: the receipt is still owed
    assert setup.smsc.proc is not None
    setup.smsc.proc.module_scoped = True
    now = setup.smsc.incarnation
    wait_until(lambda: bool(setup.smsc.events("bound", now)), 30, what="the bind after the restart")
    assert not _reports(setup, "paid invoice")
    assert setup.smsc.send_receipt(str(submit["message_id"]), "UNDELIV", err="001") == 0
    wait_until(lambda: bool(_reports(setup, "paid invoice")), 30, what="the report")
    (report,) = _reports(setup, "paid invoice")
    assert report.header("X-UMS-SMS-Result") == "failed", report.subject
    body = report.message.get_body(("plain",))
    assert body is not None and "UNDELIV" in body.get_content(), body
