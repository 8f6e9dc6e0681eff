"""Message-waiting acceptance tests: SIPp phones subscribed to, or targeted by, ``message-summary``.

What it does
------------
A SIPp subscriber (``mwi_subscribe.xml``) gets the initial NOTIFY with ``Messages-Waiting: no``,
then ``yes`` and ``Voice-Message: 1/0`` after a voicemail call, then ``no`` and ``0/1`` after
``ums mailbox mark-read``; a subscriber that answers a NOTIFY with 481 gets no more.  A SIPp UAS
configured as a mailbox's ``notify`` URI (``mwi_uas_notify.xml``) gets unsolicited NOTIFYs with
the same counts; one that answers 489 is not retried in a loop.

How it works
------------
The scenarios log one line per NOTIFY (``notify n=.. waiting=.. voice=.. state=..``); the full
messages are in SIPp's message trace.  Messages are left with the voicemail test's caller (SIPp +
RTP peer), delivered to the Maildir under the data directory (no smarthost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.conftest import require
from tests.acceptance.test_voicemail import RATE, SPEECH, leave_message
from tests.peers import sipp
from tests.peers.ports import free_port
from tests.peers.ums import UmsServer

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]

StartUms = Callable[..., UmsServer]
MWI = {"poll_interval": 0.5}


def notify_fields(line: str) -> dict[str, str]:
    """``notify n=2.000000 waiting=yes voice=1/0 state=active`` -> its fields (n as an integer)."""
    out = dict(part.split("=", 1) for part in line.split() if "=" in part)
    if "n" in out:
        out["n"] = str(int(float(out["n"])))
    return out


def subscriber(
    run_dir: Path, ums: UmsServer, *, count: int, reject_at: int = 0, name: str = "phone"
) -> sipp.SippRun:
    return sipp.start(
        "mwi_subscribe",
        run_dir,
        name,
        remote=ums.address,
        local_port=free_port(),
        service="100",
        calls=1,
        variables={"count": count, "reject_at": reject_at, "expires": 600},
        timeout_s=60,
    )


def notify_target(run_dir: Path, code: int, name: str = "target") -> tuple[sipp.SippRun, str]:
    port = free_port()
    run = sipp.start(
        "mwi_uas_notify", run_dir, name, local_port=port, variables={"code": code}, timeout_s=None
    )
    return run, f"sip:phone100@127.0.0.1:{port}"


def test_subscriber_sees_new_then_read(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    ums = start_ums(mwi=MWI)
    phone = subscriber(run_dir, ums, count=3)
    with phone:
        first = notify_fields(phone.wait_log("notify n=1", timeout=5)[0])
        assert (first["waiting"], first["voice"]) == ("no", "0/0"), first
        assert first["state"] == "active", first

        leave_message(run_dir, ums, SPEECH[: 3 * RATE])
        ev = ums.wait_event("voicemail.recorded", timeout=10)
        second = notify_fields(phone.wait_log("notify n=2", timeout=5)[0])
        assert (second["waiting"], second["voice"]) == ("yes", "1/0"), second
        ums.wait_event("mwi.notify", timeout=5, mailbox="100", new="1", old="0")

        done = ums.cli("mailbox", "mark-read", "100", ev["id"])
        assert done.returncode == 0, done.stdout + done.stderr
        third = notify_fields(phone.wait_log("notify n=3", timeout=MWI["poll_interval"] + 5)[0])
        assert (third["waiting"], third["voice"]) == ("no", "0/1"), third
        assert phone.wait(10) == 0, phone.describe()

    notifies = phone.received("NOTIFY")
    assert len(notifies) == 3, [m.first_line for m in notifies]
    for m in notifies:
        assert (m.header("Event") or "").startswith("message-summary"), m.text
        assert (m.header("Content-Type") or "").startswith("application/simple-message-summary"), m.text
        assert "Message-Account:" in m.text, m.text
    assert "Voice-Message: 1/0" in notifies[1].text


def test_subscriber_answering_481_gets_no_more_notifies(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    ums = start_ums(mwi=MWI)
    phone = subscriber(run_dir, ums, count=2, reject_at=1)
    with phone:
        phone.wait_log("rejected n=1", timeout=5)
        leave_message(run_dir, ums, SPEECH[: 3 * RATE])
        ums.wait_event("voicemail.recorded", timeout=10)
        ums.wait_event("mwi.notify", timeout=5, mailbox="100", new="1")
        time.sleep(2.0)  # a NOTIFY for the new count would be here by now
        assert len(phone.log_lines("notify n=")) == 1, phone.log_lines()


def test_unsolicited_notify_to_configured_uri(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    target, uri = notify_target(run_dir, 200)
    with target:
        ums = start_ums(mwi=MWI, mailbox_options={"100": {"notify": [uri]}})
        first = notify_fields(target.wait_log("notify ", timeout=5)[0])
        assert (first["waiting"], first["voice"], first["event"]) == ("no", "0/0", "message-summary"), first
        leave_message(run_dir, ums, SPEECH[: 3 * RATE])
        ums.wait_event("voicemail.recorded", timeout=10)
        lines = target.wait_log("voice=1/0", timeout=5)
        assert notify_fields(lines[0])["waiting"] == "yes", lines
    notifies = target.received("NOTIFY")
    assert notifies[-1].first_line.startswith("NOTIFY sip:phone100@"), notifies[-1].first_line
    assert len({m.header("Call-ID") for m in notifies}) == len(notifies)  # each one a new request


def test_unsolicited_notify_refused_with_489_is_not_retried(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    target, uri = notify_target(run_dir, 489)
    with target:
        ums = start_ums(mwi=MWI, mailbox_options={"100": {"notify": [uri]}})
        target.wait_log("notify ", timeout=5)
        time.sleep(3.0)  # a client looping on 489 shows up here
        assert len(target.log_lines("notify ")) == 1, target.log_lines()
        refused = [ev for ev in ums.events() if ev.get("status") == "489"]
        assert refused, ums.log_tail()
        # a later change may try once more, but not in a loop
        leave_message(run_dir, ums, SPEECH[: 3 * RATE])
        ums.wait_event("voicemail.recorded", timeout=10)
        time.sleep(3.0)
        assert len(target.log_lines("notify ")) <= 2, target.log_lines()
