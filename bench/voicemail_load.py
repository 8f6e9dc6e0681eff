"""Voicemail load benchmark: K concurrent SIPp callers with media, recordings checked, mails timed.

What it does
------------
For each K (default 50, 100, 200, 400) starts ``ums serve`` (one voice mailbox, SMTP to an aiosmtpd
sink in its own process, embedded pipeline) and has SIPp (``tests/peers/scenarios/vm_load_uac.xml``)
place K calls at ``--cps`` calls per second with at most K open at once.  Each call plays, from
the ACK on, ``--lead-ms`` of silence (while the greeting and the beep play) and then the stored
speech (``testdata/audio``, looped to ``--hold`` seconds), as one pcap of 20 ms PCMA packets
through ``play_pcap_audio``; it hangs up 100 ms after the playback ends.  (``--pre-ms`` delays the
playback instead: a caller that sends no RTP during the greeting.)  Then it waits for the
e-mails and checks every recording:

* complete: one e-mail per call, its WAV as long as the audio that reached ums after the beep,
  i.e. ``lag + hold`` within 100 ms, where ``lag`` is where the speech starts in the
  recording (cross-correlation of its first 2 s);
* correct: correlation >= 0.9 against the played speech, for a sample of ``--sample`` calls.

Prints one row per K: calls ok/failed (SIPp), mails, recordings complete and correct, ums CPU per
call (server and its worker processes, utime + stime), and p50/p99/max from the caller's BYE
(SIPp's message trace) to the sink accepting the e-mail; and the largest K where everything was
complete and correct.  ``--quick`` is a short run (K = 10, 20 with 12 s calls).

How it works
------------
Uses the helpers in ``tests/peers``.  Calls are matched to mails through the server log:
``voicemail.recorded`` names the call's Call-ID and the message id, and the Message-ID of the mail
carries that id; the sink records the acceptance time of each message.  Run from the repository
root: ``.venv/bin/python bench/voicemail_load.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.peers import sipp  # noqa: E402
from tests.peers.audio import best_correlation  # noqa: E402
from tests.peers.ports import free_port, free_port_block  # noqa: E402
from tests.peers.procs import PeerError, wait_until  # noqa: E402
from tests.peers.rtppeer import speech, write_rtp_pcap  # noqa: E402
from tests.peers.smtpsink import Mail, SmtpSink  # noqa: E402
from tests.peers.ums import UmsConfig, UmsServer  # noqa: E402

RATE = 8000
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOLERANCE = 0.1  # s
MIN_CORRELATION = 0.9


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (``/proc/net/snmp``): InDatagrams, RcvbufErrors, ..."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Udp:")]
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}


def cpu_own(pid: int) -> float:
    """utime + stime of ``pid`` alone (all its threads)."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` alone: time in Python and libraries vs. in the kernel."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_tree(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, plus what it has reaped (cutime/cstime)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            text = (d / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(d.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(d.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        f = stats.get(p)
        if f is None:
            continue
        total += (int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if p == pid else 0)) / CLK_TCK
        todo += children.get(p, [])
    return total


@dataclass
class Step:
    k: int
    ok: int = 0
    failed: int = 0
    mails: int = 0
    complete: int = 0
    correct: int = 0
    sampled: int = 0
    cpu: float = 0.0  # ums server and its workers
    cpu_server: float = 0.0  # the server process alone
    cpu_server_sys: float = 0.0  # of which in the kernel (stime)
    cpu_sipp: float = 0.0
    call_seconds: float = 0.0  # media seconds per call (lead + hold)
    rtp_in: int = 0  # RTP packets ums received (sum over the calls' rtp.closed lines)
    rtp_expected: int = 0  # what SIPp's pcap holds, times the calls
    rtp_lost: int = 0
    rtp_backlog: int = 0  # packets still in ums's sockets at the hang-up (read at close)
    skipped_ticks: int = 0  # send ticks ums skipped because its event loop was late
    rcvbuf_errors: int = 0  # UDP datagrams the kernel dropped for a full socket buffer (whole host)
    latencies: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.ok == self.k
            and self.mails == self.k
            and self.complete == self.k
            and self.correct == self.sampled
        )

    @property
    def ms_per_call_second(self) -> float:
        return 1000 * self.cpu / max(1e-9, self.k * self.call_seconds)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


def wav_of(mail: Mail) -> np.ndarray | None:
    for att in mail.attachments():
        if att.filename.lower().endswith(".wav"):
            with wave.open(io.BytesIO(att.data), "rb") as w:
                return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    return None


def scenario_for(run_dir: Path, pre_ms: int, hold_ms: int) -> Path:
    text = sipp.scenario("vm_load_uac").read_text()
    text = text.replace('<pause milliseconds="3000" />', f'<pause milliseconds="{pre_ms}" />')
    text = text.replace('<pause milliseconds="30100" />', f'<pause milliseconds="{hold_ms + 100}" />')
    out = run_dir / "vm_load_uac.xml"
    out.write_text(text)
    return out


def run_step(k: int, run_dir: Path, ref: np.ndarray, args: argparse.Namespace) -> Step:
    step = Step(k)
    d = run_dir / f"k{k}"
    d.mkdir(parents=True)
    lead = np.zeros(round(args.lead_ms * RATE / 1000), dtype=np.int16)
    write_rtp_pcap(d / "vm_speech.pcap", np.concatenate([lead, ref]))
    scen = scenario_for(d, args.pre_ms, args.lead_ms + int(args.hold * 1000))
    sink = SmtpSink(d, free_port()).start()
    cfg = UmsConfig(
        data_dir=d / "data",
        rtp_ports=max(200, 2 * k + 50),
        max_channels=k + 10,
        mail={"smarthost": sink.address, "retry_first": 1, "retry_max": 5},
        pipeline={"workers": args.workers},
        log_level="info",
    )
    profile_out = d / "ums.prof" if args.profile else None
    ums = UmsServer(d / "ums", cfg, profile_out=profile_out).start()
    step.call_seconds = (args.lead_ms + 1000 * args.hold) / 1000
    try:
        cpu0, own0, udp0 = cpu_tree(ums.pid), cpu_split(ums.pid), udp_counters()
        run = sipp.start(
            scen,
            d,
            "load",
            remote=ums.address,
            local_port=free_port(),
            service="100",
            calls=k,
            rate=args.cps,
            limit=k,
            media=("127.0.0.1", free_port_block(4)),
            timeout_s=args.hold + 120,
            trace_stat=True,
            extra=["-recv_timeout", "10000"],
        )
        sipp_pid = run.proc.popen.pid if run.proc.popen is not None else 0
        sipp_cpu = 0.0
        deadline = time.monotonic() + args.hold + 150
        while run.proc.popen is not None and run.proc.popen.poll() is None:
            sipp_cpu = max(sipp_cpu, cpu_own(sipp_pid))  # read while it runs: it is gone afterwards
            if time.monotonic() > deadline:
                step.problems.append("sipp: did not finish in time")
                run.stop()
                break
            time.sleep(0.5)
        try:
            run.wait(10)
        except PeerError as exc:
            step.problems.append(f"sipp: {exc}"[:300])
            run.stop()
        step.cpu_sipp = sipp_cpu
        step.rcvbuf_errors = udp_counters()["RcvbufErrors"] - udp0["RcvbufErrors"]
        st = run.stats()
        step.ok, step.failed = (st.successful, st.failed) if st else (0, k)
        try:
            wait_until(lambda: len(sink.paths()) >= step.ok, args.mail_timeout, 0.2, "the e-mails")
        except PeerError as exc:
            step.problems.append(str(exc))
        step.cpu = cpu_tree(ums.pid) - cpu0
        own1 = cpu_split(ums.pid)
        step.cpu_server = own1[0] + own1[1] - own0[0] - own0[1]
        step.cpu_server_sys = own1[1] - own0[1]
    finally:
        ums.stop(timeout=30)
        sink.stop()
    if profile_out is not None:
        print_profile(profile_out, k)
    packets_per_call = round(step.call_seconds * 1000 / 20)
    step.rtp_expected = packets_per_call * step.ok
    for ev in ums.events("rtp.closed"):
        step.rtp_in += int(ev.get("rtp_in", "0") or 0)
        step.rtp_lost += max(0, int(ev.get("lost", "0") or 0))
        step.rtp_backlog += int(ev.get("backlog", "0") or 0)
        step.skipped_ticks += int(ev.get("skipped_ticks", "0") or 0)

    # call_id -> BYE time (wall clock) from SIPp's trace; call_id -> message id from the ums log
    bye_at: dict[str, float] = {}
    for m in run.sent():
        if m.is_request and m.method == "BYE":
            bye_at.setdefault(m.header("Call-ID") or "", m.time.timestamp())
    call_of = {ev.get("id", ""): ev.get("call_id", "") for ev in ums.events("voicemail.recorded")}
    hold_samples = round(args.hold * RATE)  # the trailing 100 ms without RTP is not audio
    mails = sink.messages()
    step.mails = len(mails)
    rng = np.random.default_rng(1)
    sample = (
        set(rng.choice(len(mails), size=min(args.sample, len(mails)), replace=False).tolist())
        if mails
        else set()
    )
    for i, mail in enumerate(mails):
        mid = mail.message_id.strip("<>").split("@", 1)[0]
        call_id = call_of.get(mid, "")
        if call_id in bye_at:
            step.latencies.append(mail.accepted - bye_at[call_id])
        pcm = wav_of(mail)
        if pcm is None:
            step.problems.append(f"{mail.path.name}: no WAV")
            continue
        # where the speech starts in the recording: first 2 s of the reference
        _, lag = best_correlation(ref[: 2 * RATE], pcm[: 4 * RATE], max_lag=3 * RATE, min_overlap=0.9)
        expected = lag + hold_samples
        if abs(len(pcm) - expected) <= TOLERANCE * RATE:
            step.complete += 1
        elif len(step.problems) < 10:
            step.problems.append(
                f"{mail.path.name}: {len(pcm) / RATE:.3f} s, expected {expected / RATE:.3f} s"
            )
        if i in sample:
            step.sampled += 1
            corr, _ = best_correlation(ref, pcm, max_lag=3 * RATE)
            if corr >= MIN_CORRELATION:
                step.correct += 1
            elif len(step.problems) < 10:
                step.problems.append(f"{mail.path.name}: correlation {corr:.3f}")
    return step


def print_profile(path: Path, k: int, top: int = 30) -> None:
    if not path.exists():
        print(f"      no profile written for K={k} (ums must exit normally on SIGTERM)", flush=True)
        return
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(top)
    print(f"cProfile of the ums server at K={k} ({path}), top {top} by own time:", flush=True)
    print(out.getvalue(), flush=True)


def print_row(s: Step) -> None:
    cpu_ms = 1000 * s.cpu / max(1, s.k)  # per call placed: a failed call costs as well
    print(
        f"{s.k:>5} {s.ok:>5} {s.failed:>6} {s.mails:>6} {s.complete:>9} {s.correct:>4}/{s.sampled:<4}"
        f" {cpu_ms:>9.0f} {s.ms_per_call_second:>7.1f} {s.pct(50):>8.2f} {s.pct(99):>8.2f}"
        f" {max(s.latencies, default=float('nan')):>8.2f}  {'ok' if s.passed else 'FAIL'}",
        flush=True,
    )
    print(
        f"      ums server {s.cpu_server:.1f} s cpu ({s.cpu_server_sys:.1f} s in the kernel),"
        f" with workers {s.cpu:.1f} s; SIPp {s.cpu_sipp:.1f} s cpu;"
        f" RTP at ums {s.rtp_in}/{s.rtp_expected} packets"
        f" ({100 * s.rtp_in / max(1, s.rtp_expected):.0f} %), lost {s.rtp_lost},"
        f" still queued at hang-up {s.rtp_backlog}; ums send ticks skipped {s.skipped_ticks};"
        f" kernel UDP RcvbufErrors {s.rcvbuf_errors}",
        flush=True,
    )
    for p in s.problems[:5]:
        print(f"      {p}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="voicemail load benchmark against ums serve")
    ap.add_argument("--k", default="50,100,200,400", help="comma-separated numbers of concurrent calls")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds of speech per call")
    ap.add_argument("--lead-ms", type=int, default=3000, help="ms of silence sent before the speech")
    ap.add_argument("--pre-ms", type=int, default=0, help="ms from ACK to the start of the playback")
    ap.add_argument("--cps", type=float, default=50.0, help="call set-up rate")
    ap.add_argument("--workers", type=int, default=1, help="[pipeline] workers")
    ap.add_argument("--sample", type=int, default=20, help="calls checked by full correlation")
    ap.add_argument("--mail-timeout", type=float, default=None, help="s to wait for the e-mails")
    ap.add_argument("--stop-after-failure", action="store_true")
    ap.add_argument("--quick", action="store_true", help="K = 10, 20 with 12 s calls")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument(
        "--profile", action="store_true", help="run ums under cProfile, print the top 30 (keeps the run dir)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.k, args.hold = "10,20", 12.0
    if args.mail_timeout is None:
        args.mail_timeout = 60.0 if args.quick else 120.0
    if shutil.which("sipp") is None:
        print("sipp is not installed (scripts/install-peers.sh)", file=sys.stderr)
        return 2
    ks = [int(x) for x in args.k.split(",") if x.strip()]
    one = speech()
    ref = np.tile(one, int(np.ceil(args.hold * RATE / len(one))))[: round(args.hold * RATE)]
    run_dir = Path(tempfile.mkdtemp(prefix="ums-vmload-"))
    print(
        f"run directory {run_dir}; {args.hold:g} s of speech per call, {args.cps:g} calls/s set-up",
        flush=True,
    )
    print(
        "    K    ok failed  mails  complete correct  cpu_ms/call ms/call_s   p50_s    p99_s    max_s",
        flush=True,
    )
    best = 0
    steps = []
    try:
        for k in ks:
            t0 = time.monotonic()
            s = run_step(k, run_dir, ref, args)
            steps.append(s)
            print_row(s)
            print(f"      step took {time.monotonic() - t0:.0f} s", flush=True)
            if s.passed:
                best = max(best, k)
            elif args.stop_after_failure:
                break
    finally:
        if not args.keep and not args.profile:
            shutil.rmtree(run_dir, ignore_errors=True)
    print(f"largest K with every recording complete and correct: {best or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
