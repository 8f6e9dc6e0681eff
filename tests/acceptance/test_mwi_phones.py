"""Message-waiting lamps on real phones: baresip through Kamailio, and reading the mail in IMAP.

What it does
------------
1. A real phone's lamp: Kamailio is the PBX, ums registers to it as its voicemail server
   (``vm``, digest auth), and baresip with its ``mwi`` module registers as ``100`` and
   subscribes to ``message-summary`` for its own AOR.  Kamailio hands that SUBSCRIBE to ums
   (Record-Route, Request-URI kept), so the NOTIFYs go back through the PBX.  A voicemail for
   100 makes baresip print ``Messages-Waiting: yes`` and ``Voice-Message: 1/0``; ``ums mailbox
   mark-read`` turns it to ``no`` and ``0/1``.
2. Reading the mail turns the lamp off: the voicemail is delivered by SMTP to a sink, the test
   puts exactly those bytes into bob's INBOX on a private Dovecot (the mail server's local
   delivery), and a SIPp subscriber sees ``yes``/``1/0``; setting ``\\Seen`` with imaplib (the
   owner reading it in a mail client) brings ``no``/``0/1`` within the configured interval;
   stopping Dovecot afterwards brings no NOTIFY at all.

How it works
------------
The voicemails are left by SIPp plus the RTP peer of the voicemail tests.  baresip prints each
NOTIFY body on stdout (``----- MWI for <aor> -----`` and the body lines), read back with
:meth:`tests.peers.baresip.Baresip.wait_mwi`; the SIPp subscriber logs one ``notify n=..
waiting=.. voice=..`` line per NOTIFY.  Every wait is bounded; "nothing happens" is checked by
polling for the unwanted event over a fixed window and failing as soon as it shows up.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.acceptance.conftest import require
from tests.acceptance.test_mwi import notify_fields, subscriber
from tests.acceptance.test_voicemail import RATE, SPEECH, leave_message
from tests.peers.audio import write_wav
from tests.peers.baresip import Baresip, MwiReport
from tests.peers.dovecot import Dovecot
from tests.peers.kamailio import Kamailio
from tests.peers.ports import free_port
from tests.peers.smtpsink import SmtpSink
from tests.peers.ums import Account, UmsServer

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

StartUms = Callable[..., UmsServer]
HOST = "127.0.0.1"
DOMAIN = "test.local"
#: the user ums registers as at the PBX (Kamailio routes message-summary SUBSCRIBEs to it)
VM_USER = "vm"
#: how long Kamailio holds back a REGISTER answer: baresip's mwi start-up race (kamailio.cfg.in)
REGISTER_DELAY = 0.2
#: [mwi] poll_interval: how soon the server sees a mark-read made by the CLI process
MWI = {"poll_interval": 0.5}
#: the IMAP poll (and IDLE re-issue) interval configured for the mailbox
IMAP_INTERVAL = 1
#: a window in which nothing may happen
QUIET_S = 3.0


def assert_quiet(what: str, happened: Callable[[], bool], seconds: float) -> None:
    """Poll ``happened`` for ``seconds``; fail as soon as it is true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not happened(), what
        time.sleep(0.05)
    assert not happened(), what


def is_state(waiting: str, voice: str) -> Callable[[MwiReport], bool]:
    return lambda r: (r.waiting, r.voice) == (waiting, voice)


# -- 1. baresip's lamp through Kamailio -------------------------------------------------------------
@pytest.fixture
def pbx(run_dir: Path, dump_logs_on_failure: None) -> Iterator[Kamailio]:
    require("kamailio")
    kam = Kamailio(run_dir, mwi_user=VM_USER, register_delay=REGISTER_DELAY).start()
    yield kam
    kam.stop()


def test_baresip_lamp_through_kamailio(run_dir: Path, pbx: Kamailio, start_ums: StartUms) -> None:
    require("baresip", "sipp")
    account = Account(
        name="pbx",
        registrar=pbx.uri,
        aor=f"sip:{VM_USER}@{DOMAIN}",
        auth_user=VM_USER,
        password=pbx.password,
        expires=300,
    )
    ums = start_ums(accounts=[account], mwi=MWI)
    ums.wait_event("sip.register.ok", timeout=10, account="pbx")
    pbx.wait_registered(VM_USER, timeout=5)

    wav = write_wav(run_dir / "silence.wav", np.zeros(RATE, dtype=np.int16))
    phone = Baresip(run_dir, wav, aor=f"sip:100@{DOMAIN}", password=pbx.password, outbound=pbx.uri, mwi=True)
    with phone:
        phone.wait_registered(10)
        pbx.wait_registered("100", timeout=5)
        # the initial NOTIFY of the subscription: nothing waiting yet
        first = phone.wait_mwi(lambda r: True, timeout=10, what="the initial MWI NOTIFY")
        assert (first.waiting, first.voice) == ("no", "0/0"), first
        assert first.aor == f"sip:100@{DOMAIN}", first
        assert (first.fields.get("Message-Account") or "").startswith("sip:100@"), first
        sub = ums.wait_event("mwi.subscription.new", timeout=5, mailbox="100")
        assert sub.get("source") == f"udp:{HOST}:{pbx.port}", sub.line  # handed over by the PBX
        relayed = [ln for ln in pbx.log().splitlines() if "KAM mwi SUBSCRIBE" in ln]
        assert relayed and f"sip:100@{DOMAIN}" in relayed[0], pbx.log()[-2000:]
        seen = len(phone.mwi_reports())

        leave_message(run_dir, ums, SPEECH[: 3 * RATE])
        rec = ums.wait_event("voicemail.recorded", timeout=10)
        lit = phone.wait_mwi(
            is_state("yes", "1/0"), timeout=10, after=seen, what="Messages-Waiting: yes, 1/0"
        )
        assert lit.aor == first.aor
        seen = len(phone.mwi_reports())

        done = ums.cli("mailbox", "mark-read", "100", rec["id"])
        assert done.returncode == 0, done.stdout + done.stderr
        phone.wait_mwi(
            is_state("no", "0/1"),
            timeout=MWI["poll_interval"] + 5,
            after=seen,
            what="Messages-Waiting: no, 0/1",
        )

        # every NOTIFY came back through the PBX (the Record-Route of the SUBSCRIBE) ...
        in_dialog = re.findall(r"KAM in-dialog NOTIFY sip:\S+ from 127\.0\.0\.1:(\d+)", pbx.log())
        assert len(in_dialog) >= 3 and set(in_dialog) == {str(ums.port)}, in_dialog
        # ... and baresip subscribed once (plus refreshes), not in a loop
        subscribes = [ln for ln in pbx.log().splitlines() if "KAM mwi SUBSCRIBE" in ln]
        assert len(subscribes) <= 2, f"{len(subscribes)} initial SUBSCRIBEs"
    # the mailbox states the phone showed, in order, without a bogus one in between
    states = [(r.waiting, r.voice) for r in phone.mwi_reports()]
    assert states[0] == ("no", "0/0") and ("yes", "1/0") in states and states[-1] == ("no", "0/1"), states
    assert set(states) <= {("no", "0/0"), ("yes", "1/0"), ("no", "0/1")}, states


# -- 2. reading the mail in IMAP turns the lamp off ------------------------------------------------
@pytest.fixture
def dovecot(run_dir: Path, dump_logs_on_failure: None) -> Iterator[Dovecot]:
    require("dovecot")
    with Dovecot(run_dir) as server:
        yield server


@pytest.fixture
def sink(run_dir: Path) -> Iterator[SmtpSink]:
    s = SmtpSink(run_dir, free_port()).start()
    yield s
    s.stop()


def test_reading_the_mail_in_imap_turns_the_lamp_off(
    run_dir: Path, start_ums: StartUms, dovecot: Dovecot, sink: SmtpSink
) -> None:
    require("sipp")
    owner = f"{dovecot.user}@example.com"
    # dotted keys: the mailbox's [mailboxes.imap] table, written inline by the config writer
    imap = {
        "imap.host": dovecot.host,
        "imap.port": dovecot.port,
        "imap.tls": "none",
        "imap.user": dovecot.user,
        "imap.password": dovecot.password,
        "imap.poll_interval": IMAP_INTERVAL,
    }
    ums = start_ums(
        mailboxes=(("100", owner, "voice"),),
        mailbox_options={"100": imap},
        mail={"smarthost": sink.address, "retry_first": 1, "retry_max": 2},
        mwi=MWI,
    )
    ums.wait_event("imap.connected", timeout=10, mailbox="100")
    phone = subscriber(run_dir, ums, count=10)
    with phone:
        first = notify_fields(phone.wait_log("notify n=1", timeout=5)[0])
        assert (first["waiting"], first["voice"]) == ("no", "0/0"), first

        leave_message(run_dir, ums, SPEECH[: 3 * RATE])
        rec = ums.wait_event("voicemail.recorded", timeout=10)
        (mail,) = sink.wait_messages(1, timeout=15)
        assert owner in mail.envelope_to, mail.envelope_to
        assert mail.header("X-UMS-Message-Id") == rec["id"], mail.header("X-UMS-Message-Id")
        # the mail server's local delivery: the very bytes the smarthost accepted
        dovecot.mail_user().append(mail.path.read_bytes())

        second = notify_fields(phone.wait_log("notify n=2", timeout=5)[0])
        assert (second["waiting"], second["voice"]) == ("yes", "1/0"), second
        # an unread copy in the INBOX keeps the lamp on (IDLE reports the APPEND at once)
        assert_quiet(
            "a NOTIFY before the mail was read",
            lambda: bool(phone.log_lines("notify n=3")),
            IMAP_INTERVAL + 0.5,
        )

        dovecot.mail_user().set_seen(rec["id"])  # the owner reads it in Outlook
        third = notify_fields(phone.wait_log("notify n=3", timeout=IMAP_INTERVAL + 2)[0])
        assert (third["waiting"], third["voice"]) == ("no", "0/1"), third
        ums.wait_event("imap.state", timeout=1, mailbox="100", id=rec["id"], state="read")

        # an IMAP outage must not produce a NOTIFY
        failures = len(ums.events("imap.failed", mailbox="100"))
        dovecot.stop()
        ums.wait_event("imap.failed", timeout=5, count=failures + 1, mailbox="100")
        assert_quiet("a NOTIFY during the IMAP outage", lambda: bool(phone.log_lines("notify n=4")), QUIET_S)
    assert not ums.events("imap.state", mailbox="100", state="new"), ums.log_tail()
