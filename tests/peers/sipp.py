"""Running SIPp scenarios and reading what they traced.

What it does
------------
:func:`sipp_command` builds a SIPp command line from keyword arguments (calls,
rate, limit, transport, traces, ``-set`` variables, media address, digest
credentials).  :func:`start` runs it in the background as a :class:`SippRun`
(a UAS waiting for the server, a registrar); :func:`run` runs it to the end.
A :class:`SippRun` knows its trace files and parses them: the ``-trace_msg``
message log into :class:`TracedMessage` items, the ``<log>`` action lines, and
the ``-trace_stat`` CSV (or the final screen) into :class:`SippStats`.

How it works
------------
SIPp runs with its working directory set to the run directory, so every file
it writes (including ``*_rtt.csv``, which has no name option) lands there.
Scenario files live next to this module in ``scenarios/``; pcap paths inside
them are absolute (``/usr/share/sip-tester``).
"""

from __future__ import annotations

import csv
import itertools
import re
import shutil
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.peers.procs import PeerError, Proc, wait_until

__all__ = [
    "SCENARIOS",
    "SIPP",
    "SippRun",
    "SippStats",
    "TracedMessage",
    "parse_message_trace",
    "parse_screen_stats",
    "parse_stat_csv",
    "run",
    "scenario",
    "sipp_command",
    "start",
]

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
_seq = itertools.count(1)


def scenario(name: str) -> Path:
    """Absolute path of ``scenarios/<name>`` (``.xml`` added when missing)."""
    p = SCENARIOS / (name if name.endswith(".xml") else name + ".xml")
    if not p.exists():
        raise FileNotFoundError(p)
    return p


@dataclass(frozen=True)
class TracedMessage:
    """One entry of SIPp's ``-trace_msg`` log."""

    time: datetime
    direction: str  # "received" | "sent" | "unexpected"
    transport: str  # "UDP" | "TCP"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        """Request method, or the CSeq method of a response."""
        if self.is_request:
            return self.first_line.split(" ", 1)[0]
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else ""

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        parts = self.first_line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive; compact forms not expanded)."""
        head = self.text.split("\n\n", 1)[0]
        for line in head.split("\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None

    def headers(self, name: str) -> list[str]:
        head = self.text.split("\n\n", 1)[0]
        out = []
        for line in head.split("\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                out.append(value.strip())
        return out


_ENTRY = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$", re.M)
_KIND = re.compile(r"^(UDP|TCP) message (received|sent)|^Unexpected (UDP|TCP) message received", re.M)


def parse_message_trace(text: str) -> list[TracedMessage]:
    """Split a ``-trace_msg`` log into messages (CRLF folded to LF)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[TracedMessage] = []
    marks = list(_ENTRY.finditer(text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[m.end() : end].lstrip("\n")
        kind = _KIND.match(body)
        if not kind:
            continue
        if kind.group(3):
            direction, transport = "unexpected", kind.group(3)
        else:
            direction, transport = kind.group(2), kind.group(1)
        msg = body.split("\n", 1)[1].lstrip("\n") if "\n" in body else ""
        out.append(
            TracedMessage(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f"), direction, transport, msg)
        )
    return out


@dataclass(frozen=True)
class SippStats:
    """Cumulative call counters of one SIPp run."""

    successful: int
    failed: int
    created: int = 0
    retransmissions: int = 0
    columns: Mapping[str, str] = field(default_factory=dict)


def parse_stat_csv(path: Path) -> SippStats | None:
    """Last row of a ``-trace_stat`` CSV (semicolon separated); None if empty."""
    try:
        rows = [r for r in csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";") if r]
    except OSError:
        return None
    if len(rows) < 2:
        return None
    cols = dict(zip(rows[0], rows[-1], strict=False))

    def num(name: str) -> int:
        try:
            return int(float(cols.get(name, "0") or 0))
        except ValueError:
            return 0

    return SippStats(
        successful=num("SuccessfulCall(C)"),
        failed=num("FailedCall(C)"),
        created=num("TotalCallCreated"),
        retransmissions=num("Retransmissions(C)"),
        columns=cols,
    )


_SCREEN = re.compile(r"^\s*(Successful call|Failed call)\s*\|\s*\d+\s*\|\s*(\d+)", re.M)


def parse_screen_stats(text: str) -> SippStats | None:
    """The cumulative ``Successful call`` / ``Failed call`` counters of SIPp's last screen."""
    found: dict[str, int] = {}
    for m in _SCREEN.finditer(text):
        found[m.group(1)] = int(m.group(2))  # later screens overwrite earlier ones
    if not found:
        return None
    return SippStats(successful=found.get("Successful call", 0), failed=found.get("Failed call", 0))


def sipp_command(
    scenario_file: str | Path,
    *,
    remote: str | None = None,
    local_ip: str = "127.0.0.1",
    local_port: int | None = None,
    transport: str = "udp",
    service: str | None = None,
    calls: int | None = None,
    rate: float | None = None,
    rate_period_ms: int | None = None,
    limit: int | None = None,
    duration_ms: int | None = None,
    timeout_s: float | None = 30.0,
    auth: tuple[str, str] | None = None,
    variables: Mapping[str, str | int | float] | None = None,
    media: tuple[str, int] | None = None,
    run_dir: Path | None = None,
    trace_msg: bool = True,
    trace_logs: bool = True,
    trace_err: bool = True,
    trace_stat: bool = False,
    stat_freq_s: int = 1,
    trace_rtt: bool = False,
    max_recv_loops: int | None = None,
    extra: Iterable[str] = (),
    name: str = "sipp",
) -> list[str]:
    """A SIPp argv.  Trace files are named ``<name>.msg.log`` / ``.logs.log`` / ``.err.log`` /
    ``.stat.csv`` inside ``run_dir`` (default: relative to SIPp's working directory)."""
    sf = Path(scenario_file)
    if not sf.is_absolute() and not sf.exists():
        sf = scenario(str(scenario_file))
    d = Path(run_dir) if run_dir else Path(".")
    argv: list[str] = [SIPP]
    if remote:
        argv.append(remote)
    argv += ["-sf", str(sf), "-i", local_ip, "-nostdin"]
    if local_port is not None:
        argv += ["-p", str(local_port)]
    if transport == "tcp":
        argv += ["-t", "t1"]
    elif transport != "udp":
        raise ValueError(f"transport must be udp or tcp, got {transport!r}")
    if service is not None:
        argv += ["-s", service]
    if calls is not None:
        argv += ["-m", str(calls)]
    if rate is not None:
        argv += ["-r", f"{rate:g}"]
    if rate_period_ms is not None:
        argv += ["-rp", f"{rate_period_ms}ms"]
    if limit is not None:
        argv += ["-l", str(limit)]
    if duration_ms is not None:
        argv += ["-d", str(duration_ms)]
    if timeout_s is not None:
        argv += ["-timeout", f"{timeout_s:g}s", "-timeout_error"]
    if auth is not None:
        argv += ["-au", auth[0], "-ap", auth[1]]
    for key, value in (variables or {}).items():
        argv += ["-set", key, str(value)]
    if media is not None:
        argv += ["-mi", media[0], "-mp", str(media[1])]
    if trace_msg:
        argv += ["-trace_msg", "-message_file", str(d / f"{name}.msg.log")]
    if trace_logs:
        argv += ["-trace_logs", "-log_file", str(d / f"{name}.logs.log")]
    if trace_err:
        argv += ["-trace_err", "-error_file", str(d / f"{name}.err.log")]
    if trace_stat:
        argv += ["-trace_stat", "-stf", str(d / f"{name}.stat.csv"), "-fd", str(stat_freq_s)]
    if trace_rtt:
        argv += ["-trace_rtt", "-rtt_freq", "1"]
    if max_recv_loops is not None:
        argv += ["-max_recv_loops", str(max_recv_loops)]
    argv += list(extra)
    return argv


class SippRun:
    """A SIPp process with its trace files (all in ``run_dir``)."""

    def __init__(self, argv: list[str], run_dir: Path, name: str) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self.proc = Proc(argv, self.run_dir, name, cwd=self.run_dir, stop_signal=signal.SIGTERM)
        self.messages_path = self.run_dir / f"{name}.msg.log"
        self.logs_path = self.run_dir / f"{name}.logs.log"
        self.errors_path = self.run_dir / f"{name}.err.log"
        self.stat_path = self.run_dir / f"{name}.stat.csv"

    @property
    def stdout_path(self) -> Path:
        return self.proc.stdout_path

    @property
    def rtt_paths(self) -> list[Path]:
        return sorted(self.run_dir.glob("*_rtt.csv"))

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def start(self) -> SippRun:
        self.proc.start()
        return self

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 3.0) -> int | None:
        return self.proc.stop(timeout)

    def __enter__(self) -> SippRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- traces -----------------------------------------------------------------------------------
    def messages(self) -> list[TracedMessage]:
        try:
            return parse_message_trace(self.messages_path.read_text(errors="replace"))
        except OSError:
            return []

    def received(self, method: str | None = None) -> list[TracedMessage]:
        """Messages SIPp received (expected or not); requests only when ``method`` is given."""
        out = [m for m in self.messages() if m.direction in ("received", "unexpected")]
        if method is not None:
            out = [m for m in out if m.is_request and m.method == method]
        return out

    def sent(self) -> list[TracedMessage]:
        return [m for m in self.messages() if m.direction == "sent"]

    def log_lines(self, contains: str = "") -> list[str]:
        """Lines written by the scenario's ``<log>`` actions."""
        try:
            lines = self.logs_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [ln for ln in lines if contains in ln]

    def wait_log(self, contains: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Wait until ``count`` ``<log>`` lines contain ``contains``; return them."""

        def probe() -> bool:
            if len(self.log_lines(contains)) >= count:
                return True
            if not self.proc.alive():
                raise PeerError(f"{self.name} exited\n{self.describe()}")
            return False

        wait_until(probe, timeout, 0.05, f"{count} x {contains!r} in {self.logs_path.name}")
        return self.log_lines(contains)

    def errors(self) -> str:
        try:
            return self.errors_path.read_text(errors="replace")
        except OSError:
            return ""

    def stats(self) -> SippStats | None:
        """Cumulative counters: the ``-trace_stat`` CSV when present, else the last screen."""
        st = parse_stat_csv(self.stat_path) if self.stat_path.exists() else None
        if st is None:
            try:
                st = parse_screen_stats(self.stdout_path.read_text(errors="replace"))
            except OSError:
                st = None
        return st

    def describe(self, lines: int = 40) -> str:
        """Return code, errors and the output tail, for assertion messages."""
        parts = [f"{self.name}: rc={self.returncode} argv={' '.join(self.proc.argv)}"]
        err = self.errors().strip()
        if err:
            parts.append("errors:\n" + "\n".join(err.splitlines()[-lines:]))
        parts.append(self.proc.log_tail(lines))
        return "\n".join(parts)


def start(scenario_name: str | Path, run_dir: Path, name: str | None = None, **kwargs: object) -> SippRun:
    """Start SIPp in the background; kwargs as for :func:`sipp_command`."""
    nm = name or f"sipp{next(_seq)}"
    argv = sipp_command(scenario_name, run_dir=Path(run_dir), name=nm, **kwargs)  # type: ignore[arg-type]
    return SippRun(argv, Path(run_dir), nm).start()


def run(
    scenario_name: str | Path, run_dir: Path, name: str | None = None, wait_s: float = 60.0, **kwargs: object
) -> SippRun:
    """Run SIPp to the end (at most ``wait_s`` seconds, then it is killed and PeerTimeout raised)."""
    r = start(scenario_name, run_dir, name, **kwargs)
    try:
        r.wait(wait_s)
    except PeerError:
        r.stop()
        raise
    return r
