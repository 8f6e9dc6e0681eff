"""Call-rate benchmark: SIPp short calls against ``ums serve``.

What it does
------------
Starts the server (one mailbox, no registration), then for each rate runs
SIPp's ``uac_short.xml`` (INVITE with a G.711 offer, 200, ACK, BYE; no media)
for a few seconds with a concurrency limit, and records the successful and
failed calls (SIPp's ``-trace_stat`` counters) and the server's CPU time
(utime + stime from ``/proc/PID/stat``) spent during the step.  Prints a table
with CPU milliseconds per call and the highest rate that had no failed call.
``--profile`` runs the server under cProfile and prints the top functions.

How it works
------------
Uses the test peer helpers in ``tests/peers``.  Calls that get no answer time
out after ``--recv-timeout`` ms (SIPp ``-recv_timeout``) and count as failed.
Run from the repository root: ``.venv/bin/python bench/sip_cps.py``.
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.peers import sipp  # noqa: E402
from tests.peers.ports import free_port  # noqa: E402
from tests.peers.ums import UmsConfig, UmsServer  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat, after the command name)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    wall: float
    cpu: float
    retrans: int
    rc: int | None

    @property
    def completed(self) -> bool:
        return self.failed == 0 and self.successful == self.calls

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000.0 * self.cpu / self.successful if self.successful else float("nan")


def run_step(ums: UmsServer, run_dir: Path, rate: int, args: argparse.Namespace) -> Step:
    calls = max(1, int(rate * args.seconds))
    cpu0, t0 = cpu_seconds(ums.pid), time.monotonic()
    r = sipp.run(
        "uac_short",
        run_dir,
        f"uac_{rate}",
        remote=ums.address,
        local_port=free_port(),
        transport=args.transport,
        service="100",
        calls=calls,
        rate=rate,
        limit=args.limit,
        duration_ms=args.hold_ms,
        timeout_s=args.seconds + args.recv_timeout / 1000 + 20,
        trace_msg=False,
        trace_logs=False,
        trace_stat=True,
        extra=["-recv_timeout", str(args.recv_timeout)],
        wait_s=args.seconds + args.recv_timeout / 1000 + 40,
    )
    wall = time.monotonic() - t0
    time.sleep(0.5)  # let the server finish the last BYEs before reading its CPU time
    cpu = cpu_seconds(ums.pid) - cpu0
    st = r.stats()
    ok, failed = (st.successful, st.failed) if st else (0, calls)
    return Step(rate, calls, ok, failed, wall, cpu, st.retransmissions if st else 0, r.returncode)


def print_table(steps: list[Step]) -> None:
    print(
        f"{'rate/s':>7} {'calls':>6} {'ok':>6} {'failed':>6} {'wall s':>7} {'got/s':>7} "
        f"{'ums cpu s':>9} {'cpu ms/call':>11} {'retrans':>7}"
    )
    for s in steps:
        print(
            f"{s.rate:>7} {s.calls:>6} {s.successful:>6} {s.failed:>6} {s.wall:>7.2f} "
            f"{s.successful / s.wall if s.wall else 0:>7.1f} {s.cpu:>9.2f} {s.cpu_ms_per_call:>11.2f} "
            f"{s.retrans:>7}"
        )
    clean = [s.rate for s in steps if s.completed]
    print(f"highest rate with 0 failed calls: {max(clean) if clean else 'none'} calls/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="SIP calls-per-second benchmark against ums serve")
    ap.add_argument("--rates", default="50,100,200,400,600,800", help="comma-separated calls/s")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of calls per rate")
    ap.add_argument("--limit", type=int, default=200, help="SIPp -l: most calls open at once")
    ap.add_argument("--hold-ms", type=int, default=0, help="pause between ACK and BYE")
    ap.add_argument("--recv-timeout", type=int, default=5000, help="ms before an unanswered call fails")
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    ap.add_argument("--stop-after-failure", action="store_true", help="skip higher rates after a failure")
    ap.add_argument("--profile", action="store_true", help="run ums under cProfile, print the top 25")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    args = ap.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2

    run_dir = Path(tempfile.mkdtemp(prefix="ums-bench-cps-"))
    profile_out = run_dir / "ums.prof" if args.profile else None
    cfg = UmsConfig(
        data_dir=run_dir / "data",
        max_channels=max(1000, 2 * args.limit),
        rtp_ports=max(400, 4 * args.limit),
        log_level=args.log_level,
    )
    ums = UmsServer(run_dir / "ums", cfg, profile_out=profile_out).start()
    steps: list[Step] = []
    try:
        print(f"ums pid {ums.pid} on {ums.address} ({args.transport}); run dir {run_dir}", flush=True)
        for rate in (int(x) for x in args.rates.split(",") if x.strip()):
            step = run_step(ums, run_dir, rate, args)
            steps.append(step)
            print(
                f"  {rate}/s: ok={step.successful} failed={step.failed} cpu={step.cpu:.2f}s "
                f"({step.cpu_ms_per_call:.2f} ms/call) sipp rc={step.rc}",
                flush=True,
            )
            if not ums.proc.alive():
                print("ums exited\n" + ums.log_tail(), file=sys.stderr)
                break
            if args.stop_after_failure and not step.completed:
                break
    finally:
        rc = ums.stop(timeout=15)
    print()
    print_table(steps)
    if profile_out is not None:
        if profile_out.exists():
            out = io.StringIO()
            stats = pstats.Stats(str(profile_out), stream=out)
            stats.sort_stats("tottime").print_stats(25)
            print(f"\ncProfile of ums (exit {rc}), top 25 by own time:\n{out.getvalue()}")
        else:
            print(f"no profile written (ums exit {rc}); it must exit normally on SIGTERM", file=sys.stderr)
    if args.keep or profile_out is not None:
        print(f"run directory: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
