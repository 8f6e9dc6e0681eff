"""SIP acceptance tests: the server against SIPp, Kamailio and baresip on loopback.

What it does
------------
Covers registration through a real registrar (digest auth, refresh before
expiry, un-REGISTER on SIGTERM, no retry loop on a wrong password), inbound
calls answered by the voicemail flow and stored as messages (the message audio
compared by cross-correlation with what the peer sent after the greeting and
beep; the RFC 4733 digit reported), CANCEL, the server's own BYE at the call
time limit, 488 for an offer without G.711, 404 for an unknown number, and the
same call over TCP.

How it works
------------
Each test starts its peers and ``ums serve`` (``tests/peers``) with a config
written for it, drives the call from the peer side, then checks the peer's
traces, the server's ``event=...`` log lines and the stored messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.acceptance.conftest import require
from tests.peers import sipp
from tests.peers.audio import best_correlation, probe_signal, write_wav
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.messages import StoredMessage, wait_messages
from tests.peers.pcap import reference_audio
from tests.peers.ports import free_port, free_port_block
from tests.peers.ums import Account, UmsServer

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]

G711A_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
HOST = "127.0.0.1"
MIN_CORRELATION = 0.9
StartUms = Callable[..., UmsServer]


def check_message_audio(msg: StoredMessage, sent: np.ndarray, min_seconds: float) -> tuple[float, int]:
    """The stored message is the tail of what the caller sent (after the greeting and beep)."""
    pcm, rate = msg.audio()
    assert rate == 8000, f"recording rate {rate}"
    assert len(pcm) >= min_seconds * rate, f"recording is {len(pcm) / rate:.2f} s"
    # sent[n + lag] matches pcm[n]: the lag is where in the caller's audio the recording starts
    corr, lag = best_correlation(pcm, sent, max_lag=len(sent))
    assert corr >= MIN_CORRELATION, f"correlation {corr:.3f} at lag {lag}"
    assert 2.0 * rate <= lag <= 4.5 * rate, f"recording starts {lag / rate:.2f} s into the call"
    return corr, lag


# -- a. Kamailio as the PBX, baresip as the caller -----------------------------------------------------
def test_call_through_kamailio_from_baresip_is_recorded(
    run_dir: Path, kamailio: Kamailio, start_ums: StartUms
) -> None:
    require("baresip")
    account = Account(
        name="pbx",
        registrar=kamailio.uri,
        aor="sip:100@test.local",
        auth_user="100",
        password=kamailio.password,
        expires=300,
    )
    ums = start_ums(accounts=[account])
    ums.wait_event("sip.register.ok", timeout=10, account="pbx")
    kamailio.wait_registered("100", timeout=5)

    ref = probe_signal(8.0)  # greeting and beep take ~2.8 s; the rest is the message
    wav = write_wav(run_dir / "caller.wav", ref)
    with Baresip(run_dir, wav, aor=f"sip:bob@{HOST}:{kamailio.port}", password=kamailio.password) as phone:
        phone.wait_registered(10)
        phone.dial(f"sip:100@{HOST}:{kamailio.port}")
        phone.wait_event("CALL_ESTABLISHED", 10)
        phone.wait_event("CALL_CLOSED", 20)  # baresip hangs up when the WAV ends

    ended = ums.wait_event("call.ended", timeout=10)
    assert ended.get("reason") == "remote-bye"
    (msg,) = wait_messages(ums.config.data_dir, 1, timeout=10)
    assert (msg.record.mailbox, msg.record.kind, msg.record.state) == ("100", "voice", "new")
    assert msg.record.meta.get("end_reason") == "hangup"
    check_message_audio(msg, ref, min_seconds=4.5)


# -- b. registration against a SIPp registrar ------------------------------------------------------------
def test_register_refresh_and_unregister_on_sigterm(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    port = free_port()
    registrar = sipp.start(
        "reg_uas_auth",
        run_dir,
        "registrar",
        local_port=port,
        variables={"expires": 4, "user": "ums", "password": "s3cret"},
        timeout_s=60,
    )
    with registrar:
        account = Account(
            name="pbx",
            registrar=f"sip:{HOST}:{port}",
            aor=f"sip:ums@{HOST}",
            auth_user="ums",
            password="s3cret",
            expires=60,
        )
        ums = start_ums(accounts=[account])
        ok = ums.wait_event("sip.register.ok", timeout=10, account="pbx")
        assert ok.get("expires") == "4", ok.line  # the registrar granted 4 s of the 60 asked for
        # the refresh comes before the 4 s binding runs out
        registrar.wait_log("register-ok", count=2, timeout=6)
        ums.terminate()
        registrar.wait_log("unregister", timeout=8)
        assert ums.proc.wait(10) == 0
        assert not registrar.log_lines("register-auth-bad"), registrar.describe()

    msgs = registrar.messages()
    oks = [m for m in msgs if m.direction == "sent" and m.status == 200]
    regs = registrar.received("REGISTER")
    first_ok = oks[0].time
    refresh = next(m for m in regs if m.time > first_ok)
    assert (refresh.time - first_ok).total_seconds() < 4.0, "refresh came after the binding expired"
    assert len({m.header("Call-ID") for m in regs}) >= 1
    last = regs[-1]
    assert last.header("Expires") == "0" or "expires=0" in (last.header("Contact") or "").lower()


@pytest.mark.parametrize("final", ["401", "403"])
def test_register_wrong_password_does_not_loop(run_dir: Path, start_ums: StartUms, final: str) -> None:
    require("sipp")
    port = free_port()
    registrar = sipp.start(
        "reg_uas_wrongpw", run_dir, "registrar", local_port=port, variables={"final": final}, timeout_s=60
    )
    with registrar:
        account = Account(
            name="pbx",
            registrar=f"sip:{HOST}:{port}",
            aor=f"sip:ums@{HOST}",
            auth_user="ums",
            password="wrong",
            expires=60,
        )
        t0 = time.monotonic()
        ums = start_ums(accounts=[account])
        failed = ums.wait_event("sip.register.failed", timeout=6, account="pbx")
        assert failed.get("status") == final, failed.line
        assert float(failed["retry_in"]) > 0, failed.line
        # watch the wire for the rest of ~6 s: a client that loops on 401/403 shows up here
        time.sleep(max(0.0, 6.0 - (time.monotonic() - t0)))
        attempts = registrar.log_lines("register-attempt")
    assert 1 <= len(attempts) <= 3, "\n".join(attempts)


# -- c. SIPp UAC plays audio and a digit -----------------------------------------------------------------
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_pcap_call_is_recorded_with_digit(run_dir: Path, start_ums: StartUms, transport: str) -> None:
    require("sipp")
    ums = start_ums()
    uac = sipp.run(
        "uac_pcap",
        run_dir,
        "uac",
        remote=ums.address,
        local_port=free_port(),
        transport=transport,
        service="100",
        calls=1,
        media=(HOST, free_port_block(4)),
        timeout_s=30,
        wait_s=40,
    )
    assert uac.returncode == 0, uac.describe()

    ended = ums.wait_event("call.ended", timeout=10)
    assert ended.get("reason") == "remote-bye"
    dtmf = ums.wait_event("call.dtmf", timeout=2)
    assert dtmf.get("digit") == "1", dtmf.line
    assert ums.wait_event("call.answered", timeout=1).get("codec") == "PCMA"
    (msg,) = wait_messages(ums.config.data_dir, 1, timeout=10)
    assert msg.record.caller_number == "15550100"
    assert msg.record.meta.get("end_reason") == "hangup"
    check_message_audio(msg, reference_audio(G711A_PCAP, 8), min_seconds=3.5)


# -- d. call set-up outcomes ------------------------------------------------------------------------------
def test_cancel_before_answer_gets_487(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    ums = start_ums(ring_delay=2.5)
    uac = sipp.run(
        "uac_cancel",
        run_dir,
        "uac",
        remote=ums.address,
        local_port=free_port(),
        service="100",
        calls=1,
        timeout_s=10,
        wait_s=15,
    )
    assert uac.returncode == 0, uac.describe()
    got = [(m.status, m.method) for m in uac.received() if m.status]
    assert (487, "INVITE") in got, got
    ums.wait_event("call.ended", timeout=5, reason="cancelled")
    assert not ums.events("call.answered"), ums.log_tail()


def test_server_hangs_up_at_max_call_seconds(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    ums = start_ums(max_call_seconds=2)
    t0 = time.monotonic()
    uac = sipp.run(
        "uac_uas_bye",
        run_dir,
        "uac",
        remote=ums.address,
        local_port=free_port(),
        service="100",
        calls=1,
        timeout_s=15,
        wait_s=20,
    )
    took = time.monotonic() - t0
    assert uac.returncode == 0, uac.describe()
    assert uac.received("BYE"), uac.describe()
    assert took < 10, f"the BYE came after {took:.1f} s"
    ended = ums.wait_event("call.ended", timeout=5)
    assert ended.get("reason") == "local-bye", ended.line


def test_offer_without_g711_gets_488(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    ums = start_ums()
    uac = sipp.run(
        "uac_no_g711",
        run_dir,
        "uac",
        remote=ums.address,
        local_port=free_port(),
        service="100",
        calls=1,
        timeout_s=10,
        wait_s=15,
    )
    assert uac.returncode == 0, uac.describe()
    assert not ums.recordings()


def test_unknown_number_gets_404(run_dir: Path, start_ums: StartUms) -> None:
    require("sipp")
    ums = start_ums()
    uac = sipp.run(
        "uac_unknown",
        run_dir,
        "uac",
        remote=ums.address,
        local_port=free_port(),
        service="999",
        calls=1,
        timeout_s=10,
        wait_s=15,
    )
    assert uac.returncode == 0, uac.describe()
    assert not ums.events("call.answered")
