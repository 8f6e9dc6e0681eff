"""Check the peer toolkit against the peers themselves, without the server.

What it does
------------
``python -m tests.peers.selfcheck`` runs every scenario and helper against a
stand-in: SIPp UACs against SIPp UASs (``selfcheck_uas_*.xml``) with an RTP
sink checking the audio and the digit, the registrar scenarios against a SIPp
client that registers, refreshes and unregisters, the same client through
Kamailio, calls through Kamailio (Record-Route), and baresip registered to
Kamailio calling a SIPp UAS.  One line per check; exit status 1 if any failed.
Not collected by pytest (no ``test_`` names).

How it works
------------
Each check gets its own directory under a temporary root (kept with
``--keep``), free ports, and bounded waits.  Options: ``--only SUBSTRING``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tests.peers import sipp
from tests.peers.audio import best_correlation, probe_signal, write_wav
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.pcap import event_digits, reference_audio, telephone_events
from tests.peers.ports import free_port, free_port_block
from tests.peers.rtpsink import RtpSink

G711A_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
DTMF1_PCAP = Path("/usr/share/sip-tester/dtmf_2833_1.pcap")
HOST = "127.0.0.1"


class CheckFailed(AssertionError):
    pass


def expect(cond: bool, what: str, run: sipp.SippRun | None = None) -> None:
    if not cond:
        raise CheckFailed(what + ("\n" + run.describe() if run else ""))


# -- SIPp against SIPp ------------------------------------------------------------------------------
def check_registrar(d: Path, transport: str) -> str:
    port = free_port()
    uas = sipp.start(
        "reg_uas_auth",
        d,
        "registrar",
        local_port=port,
        transport=transport,
        variables={"expires": 4, "user": "ums", "password": "secret"},
        timeout_s=30,
    )
    try:
        uac = sipp.run(
            "selfcheck_reg_uac",
            d,
            "client",
            remote=f"{HOST}:{port}",
            local_port=free_port(),
            transport=transport,
            service="ums",
            auth=("ums", "secret"),
            duration_ms=1500,
            calls=1,
            timeout_s=15,
            wait_s=20,
        )
        expect(uac.returncode == 0, "client failed", uac)
        lines = uas.wait_log("unregister", timeout=5)
    finally:
        uas.stop()
    ok = uas.log_lines("register-ok")
    challenges = uas.log_lines("register-challenge")
    regs = uas.received("REGISTER")
    expect(len(ok) == 2, f"expected 2 register-ok, got {ok}", uas)
    expect(len(challenges) == 3 and not uas.log_lines("auth-bad"), "challenges/auth", uas)
    expect(len(regs) == 6, f"registrar saw {len(regs)} REGISTERs", uas)
    expect(regs[-1].header("Expires") == "0", "last REGISTER has Expires: 0", uas)
    refresh_gap = (regs[2].time - regs[1].time).total_seconds()
    return (
        f"{len(regs)} REGISTERs, {len(challenges)} challenges, granted expires=4 twice, "
        f"refresh after {refresh_gap:.2f} s, '{lines[0].split(' ', 1)[1][:40]}...'"
    )


def check_registrar_wrong_password(d: Path) -> str:
    out = []
    for final in ("403", "401"):
        port = free_port()
        uas = sipp.start(
            "reg_uas_wrongpw", d, f"registrar{final}", local_port=port, variables={"final": final}
        )
        try:
            uac = sipp.run(
                "selfcheck_reg_uac",
                d,
                f"client{final}",
                remote=f"{HOST}:{port}",
                local_port=free_port(),
                service="ums",
                auth=("ums", "wrong"),
                duration_ms=100,
                calls=1,
                timeout_s=3,
                wait_s=10,
            )
            uas.wait_log("register-attempt", count=2, timeout=3)
        finally:
            uas.stop()
        attempts = uas.log_lines("register-attempt")
        expect(uac.returncode != 0, "client should fail", uac)
        expect(len(attempts) == 2, f"attempts {attempts}", uas)
        statuses = [m.status for m in uas.sent() if m.method == "REGISTER"]
        expect(statuses == [401, int(final)], f"statuses {statuses}", uas)
        out.append(f"final={final}: {len(attempts)} attempts, sent {statuses}")
    return "; ".join(out)


def check_pcap_call(d: Path, transport: str) -> str:
    ref = reference_audio(G711A_PCAP, 8)
    uas_port, rtp_port = free_port(), free_port_block(2)
    with RtpSink(rtp_port) as sink:
        uas = sipp.start(
            "selfcheck_uas_answer",
            d,
            "uas",
            local_port=uas_port,
            transport=transport,
            variables={"rtp_port": rtp_port},
            calls=1,
            timeout_s=30,
        )
        try:
            uac = sipp.run(
                "uac_pcap",
                d,
                "uac",
                remote=f"{HOST}:{uas_port}",
                local_port=free_port(),
                transport=transport,
                service="100",
                calls=1,
                media=(HOST, free_port_block(4)),
                timeout_s=25,
                wait_s=30,
            )
            uas.wait(5)
        finally:
            uas.stop()
        time.sleep(0.2)
    expect(uac.returncode == 0 and uas.returncode == 0, "call failed", uac)
    rec = sink.audio(8)
    corr, lag = best_correlation(ref, rec, 8000)
    digits = sink.digits()
    expect(corr >= 0.99, f"correlation {corr:.4f}")
    expect(digits == "1", f"digits {digits!r}")
    st = uac.stats()
    return (
        f"uac rc=0 stats={st.successful if st else '?'} ok; sink {sink.counts()}, {len(rec) / 8000:.2f} s, "
        f"corr={corr:.4f} lag={lag}, digits={digits!r} (pcap: {event_digits(telephone_events(DTMF1_PCAP))!r})"
    )


def check_cancel(d: Path, transport: str, order: str) -> str:
    port = free_port()
    uas = sipp.start(
        "selfcheck_uas_cancel",
        d,
        "uas",
        local_port=port,
        transport=transport,
        variables={"order": order},
        calls=1,
        timeout_s=15,
    )
    try:
        uac = sipp.run(
            "uac_cancel",
            d,
            "uac",
            remote=f"{HOST}:{port}",
            local_port=free_port(),
            transport=transport,
            service="100",
            calls=1,
            timeout_s=10,
            wait_s=15,
        )
        uas.wait(5)
    finally:
        uas.stop()
    expect(uac.returncode == 0 and uas.returncode == 0, "cancel failed", uac)
    got = [(m.status, m.method) for m in uac.received() if m.status]
    # a 200 for the CANCEL that arrives after the 487 comes after the call's end and is not traced
    need = [(487, "INVITE")] + ([(200, "CANCEL")] if order == "200first" else [])
    expect(all(x in got for x in need), f"responses {got}", uac)
    return f"responses traced by the UAC: {got}"


def check_uas_bye(d: Path, transport: str) -> str:
    port = free_port()
    uas = sipp.start(
        "selfcheck_uas_bye",
        d,
        "uas",
        local_port=port,
        transport=transport,
        variables={"rtp_port": free_port_block(2)},
        calls=1,
        timeout_s=15,
    )
    try:
        uac = sipp.run(
            "uac_uas_bye",
            d,
            "uac",
            remote=f"{HOST}:{port}",
            local_port=free_port(),
            transport=transport,
            service="100",
            calls=1,
            timeout_s=10,
            wait_s=15,
        )
        uas.wait(5)
    finally:
        uas.stop()
    expect(uac.returncode == 0 and uas.returncode == 0, "uas-bye failed", uac)
    byes = uac.received("BYE")
    expect(len(byes) >= 1, "no BYE received", uac)
    return f"UAC received {byes[0].first_line!r} and answered 200"


def check_reject(d: Path, scenario: str, code: str) -> str:
    port = free_port()
    uas = sipp.start(
        "selfcheck_uas_reject", d, "uas", local_port=port, variables={"code": code}, calls=1, timeout_s=10
    )
    try:
        uac = sipp.run(
            scenario,
            d,
            "uac",
            remote=f"{HOST}:{port}",
            local_port=free_port(),
            service="999" if code == "404" else "100",
            calls=1,
            timeout_s=10,
            wait_s=15,
        )
        uas.wait(5)
    finally:
        uas.stop()
    expect(uac.returncode == 0 and uas.returncode == 0, f"{scenario} failed", uac)
    acks = uas.received("ACK")
    expect(len(acks) == 1, "no ACK", uas)
    return f"got {code}, ACK sent ({acks[0].first_line})"


def check_short_rate(d: Path) -> str:
    port = free_port()
    uas = sipp.start(
        "selfcheck_uas_answer",
        d,
        "uas",
        local_port=port,
        variables={"rtp_port": free_port_block(2)},
        timeout_s=30,
        trace_msg=False,
    )
    try:
        t0 = time.monotonic()
        uac = sipp.run(
            "uac_short",
            d,
            "uac",
            remote=f"{HOST}:{port}",
            local_port=free_port(),
            service="100",
            calls=200,
            rate=100,
            limit=50,
            timeout_s=20,
            wait_s=25,
            trace_msg=False,
            trace_stat=True,
            trace_rtt=True,
        )
        took = time.monotonic() - t0
    finally:
        uas.stop()
    st = uac.stats()
    expect(uac.returncode == 0 and st is not None and st.successful == 200 and st.failed == 0, f"{st}", uac)
    assert st is not None
    return f"200 calls at 100/s in {took:.1f} s: successful={st.successful} failed={st.failed}"


# -- through Kamailio -------------------------------------------------------------------------------
def check_kamailio_register(d: Path) -> str:
    out = []
    with Kamailio(d) as kam:
        for transport in ("udp", "tcp"):
            uac = sipp.run(
                "selfcheck_reg_uac",
                d,
                f"client_{transport}",
                remote=f"{HOST}:{kam.port}",
                local_port=free_port(),
                transport=transport,
                service="ums",
                auth=("ums", kam.password),
                duration_ms=500,
                calls=1,
                timeout_s=10,
                wait_s=15,
            )
            expect(uac.returncode == 0, f"register via kamailio over {transport}", uac)
            out.append(f"{transport}: register+refresh+unregister ok")
        bad = sipp.run(
            "selfcheck_reg_uac",
            d,
            "client_bad",
            remote=f"{HOST}:{kam.port}",
            local_port=free_port(),
            service="ums",
            auth=("ums", "wrong"),
            duration_ms=100,
            calls=1,
            timeout_s=3,
            wait_s=10,
        )
        statuses = [m.status for m in bad.received() if m.status]
        expect(bad.returncode != 0 and statuses[:2] == [401, 401], f"wrong password: {statuses}", bad)
        out.append(f"wrong password -> {statuses[:2]}")
        out.append(f"{len(kam.registrations('ums'))} 'KAM registered' lines")
    return "; ".join(out)


def _register_uas(d: Path, kam: Kamailio, user: str, port: int) -> None:
    reg = sipp.run(
        "selfcheck_reg_only",
        d,
        f"reg_{user}_{port}",
        remote=f"{HOST}:{kam.port}",
        local_port=port,
        service=user,
        auth=(user, kam.password),
        calls=1,
        timeout_s=5,
        wait_s=10,
    )
    expect(reg.returncode == 0, "UAS registration via kamailio", reg)


def check_kamailio_calls(d: Path) -> str:
    out = []
    ref = reference_audio(G711A_PCAP, 8)
    with Kamailio(d) as kam:
        # pcap call: SIPp UAC -> Kamailio -> SIPp UAS (registered as 100), audio to an RTP sink
        uas_port, rtp_port = free_port(), free_port_block(2)
        _register_uas(d, kam, "100", uas_port)
        with RtpSink(rtp_port) as sink:
            uas = sipp.start(
                "selfcheck_uas_answer",
                d,
                "uas_pcap",
                local_port=uas_port,
                variables={"rtp_port": rtp_port},
                calls=1,
                timeout_s=30,
            )
            try:
                uac = sipp.run(
                    "uac_pcap",
                    d,
                    "uac_pcap",
                    remote=f"{HOST}:{kam.port}",
                    local_port=free_port(),
                    service="100",
                    calls=1,
                    media=(HOST, free_port_block(4)),
                    timeout_s=25,
                    wait_s=30,
                )
                uas.wait(5)
            finally:
                uas.stop()
            time.sleep(0.2)
        expect(uac.returncode == 0 and uas.returncode == 0, "pcap call via kamailio", uac)
        rr = [m.header("Record-Route") for m in uac.received() if m.status == 200 and m.method == "INVITE"]
        routed = [m.header("Route") for m in uac.sent() if m.is_request and m.method in ("ACK", "BYE")]
        expect(bool(rr and rr[0]) and all(routed), f"Record-Route {rr} / Route {routed}", uac)
        corr, lag = best_correlation(ref, sink.audio(8), 8000)
        expect(corr >= 0.99 and sink.digits() == "1", f"corr {corr:.4f} digits {sink.digits()!r}")
        out.append(f"pcap via proxy: corr={corr:.4f} lag={lag} digit={sink.digits()!r}, Route={routed[0]}")

        # far-end BYE through the proxy
        uas_port = free_port()
        _register_uas(d, kam, "200", uas_port)
        uas = sipp.start(
            "selfcheck_uas_bye",
            d,
            "uas_bye",
            local_port=uas_port,
            variables={"rtp_port": free_port_block(2)},
            calls=1,
            timeout_s=15,
        )
        try:
            uac = sipp.run(
                "uac_uas_bye",
                d,
                "uac_bye",
                remote=f"{HOST}:{kam.port}",
                local_port=free_port(),
                service="200",
                calls=1,
                timeout_s=10,
                wait_s=15,
            )
            uas.wait(5)
        finally:
            uas.stop()
        expect(uac.returncode == 0 and uas.returncode == 0, "far-end BYE via kamailio", uac)
        out.append("far-end BYE via proxy ok")

        # unknown user -> Kamailio's 404
        uac = sipp.run(
            "uac_unknown",
            d,
            "uac_404",
            remote=f"{HOST}:{kam.port}",
            local_port=free_port(),
            service="999",
            calls=1,
            timeout_s=5,
            wait_s=10,
        )
        expect(uac.returncode == 0, "404 via kamailio", uac)
        out.append("unknown user -> 404 ok")
    return "; ".join(out)


def check_baresip(d: Path) -> str:
    wav = write_wav(d / "caller.wav", probe_signal(3.0))
    ref = probe_signal(3.0)
    with Kamailio(d) as kam:
        uas_port, rtp_port = free_port(), free_port_block(2)
        _register_uas(d, kam, "100", uas_port)
        with RtpSink(rtp_port) as sink:
            uas = sipp.start(
                "selfcheck_uas_answer",
                d,
                "uas",
                local_port=uas_port,
                variables={"rtp_port": rtp_port},
                calls=1,
                timeout_s=30,
            )
            try:
                with Baresip(d, wav, aor=f"sip:bob@{HOST}:{kam.port}", password=kam.password) as phone:
                    t0 = time.monotonic()
                    phone.wait_registered(10)
                    t_reg = time.monotonic() - t0
                    phone.dial(f"sip:100@{HOST}:{kam.port}")
                    phone.wait_event("CALL_ESTABLISHED", 10)
                    closed = phone.wait_event("CALL_CLOSED", 15)
                    kinds = [e.get("type") for e in phone.events()]
                uas.wait(5)
            finally:
                uas.stop()
            time.sleep(0.2)
    expect(uas.returncode == 0, "SIPp UAS did not complete the call", uas)
    rec = sink.audio()
    corr, lag = best_correlation(ref, rec, 8000)
    expect(corr >= 0.9, f"correlation {corr:.4f} ({sink.counts()})")
    return (
        f"registered in {t_reg:.2f} s; events {kinds}; closed: {closed.get('param')!r}; "
        f"sink {sink.counts()} {len(rec) / 8000:.2f} s corr={corr:.4f} lag={lag}"
    )


CHECKS: list[tuple[str, Callable[[Path], str]]] = [
    ("registrar refresh+unregister udp", lambda d: check_registrar(d, "udp")),
    ("registrar refresh+unregister tcp", lambda d: check_registrar(d, "tcp")),
    ("registrar wrong password", check_registrar_wrong_password),
    ("uac_pcap udp", lambda d: check_pcap_call(d, "udp")),
    ("uac_pcap tcp", lambda d: check_pcap_call(d, "tcp")),
    ("uac_cancel udp (200 then 487)", lambda d: check_cancel(d, "udp", "200first")),
    ("uac_cancel tcp (487 then 200)", lambda d: check_cancel(d, "tcp", "487first")),
    ("uac_uas_bye udp", lambda d: check_uas_bye(d, "udp")),
    ("uac_uas_bye tcp", lambda d: check_uas_bye(d, "tcp")),
    ("uac_no_g711 -> 488", lambda d: check_reject(d, "uac_no_g711", "488")),
    ("uac_unknown -> 404", lambda d: check_reject(d, "uac_unknown", "404")),
    ("uac_short 200 calls at 100/s", check_short_rate),
    ("kamailio register", check_kamailio_register),
    ("kamailio calls (Record-Route)", check_kamailio_calls),
    ("baresip -> kamailio -> sipp", check_baresip),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.peers.selfcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="run checks whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    args = ap.parse_args(argv)
    missing = [exe for exe in ("sipp", "kamailio", "baresip") if shutil.which(exe) is None]
    if missing:
        print(f"missing peers: {', '.join(missing)}")
        return 2
    root = Path(tempfile.mkdtemp(prefix="ums-peers-selfcheck-"))
    failures = 0
    t_all = time.monotonic()
    for i, (name, fn) in enumerate(CHECKS):
        if args.only and not any(s in name for s in args.only):
            continue
        d = root / f"{i:02d}-{name.split()[0]}"
        d.mkdir(parents=True)
        t0 = time.monotonic()
        try:
            detail = fn(d)
            status = "PASS"
        except Exception as exc:
            failures += 1
            status = "FAIL"
            detail = "".join(traceback.format_exception_only(exc)).strip()
            if not isinstance(exc, CheckFailed):
                detail += "\n" + traceback.format_exc(limit=4)
        print(f"{status} {name:38s} {time.monotonic() - t0:5.1f} s  {detail}", flush=True)
    print(f"{'FAILED' if failures else 'OK'}: {failures} failed, {time.monotonic() - t_all:.1f} s total")
    if args.keep or failures:
        print(f"run directories: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
