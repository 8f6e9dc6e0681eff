"""E-mail to fax benchmark: end of DATA to the INVITE leaving, and PDF pages rendered per second.

What it does
------------
*Latency.*  Starts ``ums serve`` with the e-mail to fax gateway (``[mail] listen`` and the
``[fax_gateway]`` trunk on free loopback ports) and a UDP socket in this process as the trunk: it
records when each INVITE arrives (``time.monotonic``) and answers ``486 Busy Here``, so no call is set
up (the server ACKs it; ``busy_interval`` is a day, so no job is dialled again during the run).  Mails
go in with :mod:`smtplib` from ``--threads`` connections, each a short text and a one-page PDF (two
fax pages) to its own number, first ``--mails`` at a steady ``--rate`` per second, then ``--burst``
all at once.  For each mail: t0 = the client sending the body with the final ``.`` of DATA, t1 =
the ``250`` coming back, t_invite = the INVITE for its number (Request-URI user part) arriving at the
trunk.  Prints p50/p90/p99/max of t1 - t0 (SMTP acceptance: the jobs are on disk) and t_invite - t0
(acceptance, rendering and dialling) per phase, the server's CPU per mail, and from the server's
log the time from the job written to its pages rendered and from there to dialling.  Two warm-up
mails before the phases are not counted (the first render imports PDFium and reportlab).  Goal:
p99 < 1 s.

*Rendering.*  A 20-page business PDF (reportlab: letterhead, grey box, address, item table with
rules, paragraphs) rendered by :func:`ums.render.documents.render_document` at fine and standard
resolution, and the same plus what the gateway writes for a job (G4 TIFF of all pages and the page 1
preview); best of ``--repeat``.  The anchor, measured in the same run: ``pdftoppm`` (poppler) to
204 x 196 (98) dpi 1-bit and grey bitmaps, else Ghostscript's ``tiffg4`` device.  Prints pages/s of
ours and of the anchor and the ratio (our time / anchor time).  Goal: >= 20 pages/s.

How it works
------------
t0 is taken inside :meth:`smtplib.SMTP.send` when the data ends with ``CRLF . CRLF`` (smtplib sends
the body and the dot in one call after the ``354``).  Mails of the steady phase are due at
``i / rate`` seconds; a sender thread that is still waiting for a ``250`` sends its next mail late, so
the rate actually sent is printed too.  The server's CPU is utime + stime from ``/proc/PID/stat``;
the stages come from the ``fax_gateway.job_created``, ``rendered`` and ``dialling`` log events.
Run from the repository root: ``.venv/bin/python bench/mail_to_fax.py``.
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import os
import platform
import queue
import random
import secrets
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.peers.ports import free_port  # noqa: E402
from tests.peers.procs import PeerError, wait_until  # noqa: E402
from tests.peers.ums import UmsConfig, UmsServer  # noqa: E402

SENDER = "bench@example.com"
DOMAIN = "fax.example.com"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: compact SIP header names (RFC 3261 §7.3.3) this trunk needs
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_note() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = f"{os.cpu_count()} CPUs" + (f" ({model})" if model else "")
    return f"{cpu}, load average {load}, Python {platform.python_version()}, {now}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- the trunk ------------------------------------------------------------------------------------


def parse_request(data: bytes) -> tuple[str, str, list[tuple[str, str]]] | None:
    """Method, Request-URI and headers (lower-case full names, in order) of a SIP request."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0":
        return None  # a response, or not SIP
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded line
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers.append((_COMPACT.get(key, key), value.strip()))
    return parts[0], parts[1], headers


def uri_user(uri: str) -> str:
    """User part of a SIP URI (``sip:0301234567@host:port`` -> ``0301234567``)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0].split(";", 1)[0] if "@" in rest else ""


def busy_response(headers: list[tuple[str, str]], tag: str) -> bytes:
    """``486 Busy Here`` to a request (RFC 3261 §8.2.6: Vias, From, To with a tag, Call-ID, CSeq)."""
    first = dict(reversed(headers))  # first occurrence of each name
    to = first.get("to", "")
    if ";tag=" not in to.lower():
        to += f";tag={tag}"
    lines = ["SIP/2.0 486 Busy Here", *(f"Via: {v}" for n, v in headers if n == "via")]
    lines += [f"From: {first.get('from', '')}", f"To: {to}", f"Call-ID: {first.get('call-id', '')}"]
    lines += [f"CSeq: {first.get('cseq', '')}", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class BusyTrunk:
    """The PBX trunk: notes when each INVITE arrives (by Request-URI user) and answers 486."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        #: Request-URI user -> time.monotonic() of its first INVITE
        self.arrivals: dict[str, float] = {}
        self.invites = 0
        self.retransmissions = 0
        self.acks = 0
        self._tags: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trunk", daemon=True)

    def start(self) -> BusyTrunk:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            request = parse_request(data)
            if request is None:
                continue
            method, uri, headers = request
            if method == "ACK":
                self.acks += 1
                continue
            if method != "INVITE":
                continue
            call_id = next((v for n, v in headers if n == "call-id"), "")
            if call_id in self._tags:
                self.retransmissions += 1
            else:
                self.invites += 1
                self._tags[call_id] = secrets.token_hex(4)
                self.arrivals.setdefault(uri_user(uri), now)
            self.sock.sendto(busy_response(headers, self._tags[call_id]), addr)


# -- mails ----------------------------------------------------------------------------------------


def order_pdf() -> bytes:
    """The one-page PDF of every latency mail: an order with a few lines and a frame."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.setFont("Helvetica-Bold", 24)
    c.drawString(72, 760, "Purchase order 4711")
    c.setFont("Helvetica", 12)
    for i in range(14):
        c.drawString(
            72, 710 - 22 * i, f"Pos. {i + 1}: 3 x widget, part no. {1000 + 7 * i}, EUR {12.5 * (i + 1):.2f}"
        )
    c.rect(60, 380, 470, 360)
    c.showPage()
    c.save()
    return buf.getvalue()


def business_pdf(pages: int, seed: int = 1) -> bytes:
    """A ``pages``-page business document: letterhead, grey box, address, item table, text, footer."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    rng = random.Random(seed)
    words = (
        "delivery invoice order payment terms within days net account please our your the of and to "
        "for with goods service contract reference number date amount total quantity price"
    ).split()
    width, height = A4
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for page in range(1, pages + 1):
        c.setFont("Helvetica-Bold", 18)
        c.drawString(56, height - 64, "Example Trading GmbH")
        c.setFont("Helvetica", 8)
        c.drawString(56, height - 78, "Hauptstrasse 1 - 10115 Berlin - Tel +49 30 123456 - Fax +49 30 123457")
        c.setLineWidth(1.2)
        c.line(56, height - 86, width - 56, height - 86)
        c.setFillGray(0.85)
        c.rect(width - 236, height - 190, 180, 84, stroke=0, fill=1)
        c.setFillGray(0.0)
        c.setFont("Helvetica-Bold", 11)
        c.drawString(width - 226, height - 124, f"Invoice 2026-{1000 + page}")
        c.setFont("Helvetica", 9)
        c.drawString(width - 226, height - 140, "Date: 26.11.2026")
        c.drawString(width - 226, height - 154, f"Customer no. {40000 + rng.randrange(9999)}")
        c.drawString(width - 226, height - 168, f"Page {page} of {pages}")
        c.setFont("Helvetica", 10)
        for i, line in enumerate(("Customer Ltd", "Purchasing", "Marktplatz 7", "80331 Muenchen")):
            c.drawString(56, height - 124 - 14 * i, line)
        top = height - 230
        c.setFont("Helvetica-Bold", 9)
        for x, title in (
            (56, "Pos."),
            (92, "Description"),
            (340, "Qty"),
            (390, "Unit price"),
            (470, "Amount"),
        ):
            c.drawString(x, top, title)
        c.setLineWidth(0.5)
        c.line(56, top - 4, width - 56, top - 4)
        c.setFont("Helvetica", 9)
        y = top - 18
        for pos in range(1, 19):
            qty, price = rng.randrange(1, 50), rng.randrange(100, 99999) / 100
            c.drawString(56, y, str(pos + 18 * (page - 1)))
            c.drawString(92, y, " ".join(rng.choice(words) for _ in range(4)).capitalize())
            c.drawRightString(365, y, str(qty))
            c.drawRightString(445, y, f"{price:.2f}")
            c.drawRightString(width - 60, y, f"{qty * price:.2f}")
            c.line(56, y - 4, width - 56, y - 4)
            y -= 16
        c.setFont("Helvetica", 10)
        y -= 14
        for _ in range(12):
            c.drawString(56, y, " ".join(rng.choice(words) for _ in range(13)).capitalize() + ".")
            y -= 13
        c.line(56, 60, width - 56, 60)
        c.setFont("Helvetica", 7)
        c.drawString(56, 48, "Bank: Example Bank - IBAN DE00 1234 5678 9012 3456 78 - VAT DE123456789")
        c.showPage()
    c.save()
    return buf.getvalue()


def make_mail(number: str, pdf: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Bench <{SENDER}>"
    msg["To"] = f"{number}@{DOMAIN}"
    msg["Subject"] = f"Order for {number}"
    msg["Message-ID"] = f"<{number.lstrip('+')}.{time.time_ns()}@example.com>"
    msg.set_content("Hello,\n\nplease find our purchase order attached.\n\nRegards\nBench\n")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="order.pdf")
    return msg.as_bytes(policy=policy.SMTP)


class TimedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` noting when the end of DATA (body + ``CRLF . CRLF``) is sent."""

    dot_sent = math.nan

    def send(self, s: Any) -> None:
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.dot_sent = time.monotonic()
        super().send(s)


@dataclass
class Sent:
    number: str
    #: dialled Request-URI user part
    dial: str
    due: float
    t0: float = math.nan
    t1: float = math.nan
    t_invite: float = math.nan
    error: str = ""


def dialled(e164: str) -> str:
    """What the server dials for a German number with the default dial plan (national format)."""
    return "0" + e164[3:]


def send_all(port: int, mails: list[tuple[Sent, bytes]], threads: int) -> tuple[float, float]:
    """Send ``mails`` from ``threads`` SMTP connections, each not before its ``due`` second after
    the start; returns the start and the end (monotonic) of sending."""
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(mails)):
        todo.put(i)
    start = time.monotonic() + 0.1

    def worker() -> None:
        smtp: TimedSMTP | None = None
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                break
            sent, body = mails[i]
            delay = start + sent.due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                if smtp is None:
                    smtp = TimedSMTP("127.0.0.1", port, timeout=60)
                    smtp.ehlo("bench.example.com")
                code, text = smtp.mail(SENDER)
                if code == 250:
                    code, text = smtp.rcpt(f"{sent.number}@{DOMAIN}")
                if code != 250:
                    sent.error = f"{code} {text.decode(errors='replace')}"
                    smtp.rset()
                    continue
                smtp.dot_sent = math.nan
                before = time.monotonic()
                code, text = smtp.data(body)
                sent.t1 = time.monotonic()
                sent.t0 = smtp.dot_sent if not math.isnan(smtp.dot_sent) else before
                if code != 250:
                    sent.error = f"{code} {text.decode(errors='replace')}"
            except (OSError, smtplib.SMTPException) as exc:
                sent.error = repr(exc)
                smtp = None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass

    pool = [threading.Thread(target=worker, name=f"smtp-{n}") for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return start, time.monotonic()


@dataclass
class Phase:
    name: str
    sent: list[Sent]
    offered: float  # mails per second asked for (inf: burst)
    send_seconds: float
    cpu: float
    #: from the server log: job written -> pages rendered, rendered -> dialling (seconds)
    to_rendered: list[float] = field(default_factory=list)
    to_dialling: list[float] = field(default_factory=list)

    @property
    def accepted(self) -> list[Sent]:
        return [s for s in self.sent if not s.error]

    @property
    def smtp_times(self) -> list[float]:
        return [s.t1 - s.t0 for s in self.accepted]

    @property
    def invite_times(self) -> list[float]:
        return [s.t_invite - s.t0 for s in self.accepted if not math.isnan(s.t_invite)]


def run_phase(
    name: str,
    ums: UmsServer,
    trunk: BusyTrunk,
    port: int,
    numbers: list[str],
    rate: float,
    args: argparse.Namespace,
) -> Phase:
    pdf = order_pdf()
    mails: list[tuple[Sent, bytes]] = []
    for i, number in enumerate(numbers):
        due = i / rate if math.isfinite(rate) else 0.0
        mails.append((Sent(number, dialled(number), due), make_mail(number, pdf)))
    cpu0 = cpu_seconds(ums.pid)
    start, end = send_all(port, mails, args.threads)
    sent = [s for s, _ in mails]
    wanted = {s.dial for s in sent if not s.error}
    try:
        wait_until(
            lambda: wanted <= trunk.arrivals.keys(), args.timeout, 0.05, f"INVITEs of the {name} phase"
        )
    except PeerError as exc:
        print(f"  {exc}: {len(wanted - trunk.arrivals.keys())} missing", file=sys.stderr)
    cpu = cpu_seconds(ums.pid) - cpu0
    for s in sent:
        s.t_invite = trunk.arrivals.get(s.dial, math.nan)
    return Phase(name, sent, rate, end - start, cpu)


def _log_time(line: str) -> float:
    """Seconds of a log line's ``YYYY-MM-DD HH:MM:SS,mmm`` time stamp (for differences only)."""
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.replace(tzinfo=UTC).timestamp()


def server_stages(ums: UmsServer, phases: list[Phase]) -> None:
    """Fill in each phase's job -> rendered -> dialling times from the server's log events."""
    created: dict[str, tuple[str, float]] = {}
    rendered: dict[str, float] = {}
    dialling: dict[str, float] = {}
    for ev in ums.events():
        job = ev.get("job")
        if job is None:
            continue
        try:
            t = _log_time(ev.line)
        except ValueError:
            continue
        if ev.name == "fax_gateway.job_created":
            created[job] = (ev.get("number") or "", t)
        elif ev.name == "fax_gateway.rendered":
            rendered[job] = t
        elif ev.name == "fax_gateway.dialling":
            dialling.setdefault(job, t)
    for ph in phases:
        numbers = {s.number for s in ph.sent}
        for job, (number, t) in created.items():
            if number in numbers and job in rendered:
                ph.to_rendered.append(rendered[job] - t)
                if job in dialling:
                    ph.to_dialling.append(dialling[job] - rendered[job])


def smtp_up(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as s:
            return s.noop()[0] == 250
    except OSError:
        return False


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f}"


def print_phases(phases: list[Phase]) -> None:
    head = (
        "phase          mails  250  INVITE  sent/s | SMTP 250 ms: p50   p90   p99   max "
        "| INVITE ms: p50   p90   p99   max | server CPU ms/mail"
    )
    print(head)
    for ph in phases:
        a, b = ph.smtp_times, ph.invite_times
        accepted = len(ph.accepted)
        rate = (accepted / ph.send_seconds) if ph.send_seconds > 0 else math.nan
        cols = [
            f"{ph.name:<14}",
            f"{len(ph.sent):>5}",
            f"{accepted:>4}",
            f"{len(b):>7}",
            f"{rate:>7.1f}",
            "|",
        ]
        cols += [" " * 11, *(f"{ms(percentile(a, q)):>5}" for q in (50, 90, 99, 100)), "|"]
        cols += [" " * 9, *(f"{ms(percentile(b, q)):>5}" for q in (50, 90, 99, 100)), "|"]
        cols += [f"{ph.cpu * 1000 / max(1, accepted):>10.0f}"]
        print(" ".join(cols))
        stages = [
            f"{label} p50 {ms(percentile(v, 50))} p99 {ms(percentile(v, 99))} ms"
            for label, v in (
                ("job on disk -> rendered", ph.to_rendered),
                ("rendered -> dialling", ph.to_dialling),
            )
        ]
        print(f"    server log: {', '.join(stages)}")
        errors = [s.error for s in ph.sent if s.error]
        if errors:
            print(f"    {len(errors)} refused or failed, first: {errors[0]}")


def latency(args: argparse.Namespace, run_dir: Path) -> list[Phase]:
    trunk = BusyTrunk().start()
    smtp_port = free_port()
    total = args.mails + args.burst
    cfg = UmsConfig(
        data_dir=run_dir / "data",
        transports=("udp",),
        max_channels=max(100, 2 * total),
        rtp_ports=200,
        log_level=args.log_level,
        mail={"listen": f"127.0.0.1:{smtp_port}", "smarthost": ""},
        fax_gateway={
            "enabled": True,
            "domains": [DOMAIN],
            "senders": ["@example.com"],
            "trunk": f"sip:127.0.0.1:{trunk.port}",
            "max_concurrent": max(50, total),
            "resolution": args.resolution,
            "busy_interval": 86400.0,
            "notify": "none",
        },
    )
    ums = UmsServer(run_dir / "ums", cfg).start()
    phases: list[Phase] = []
    try:
        wait_until(lambda: smtp_up(smtp_port), 20, 0.1, "the SMTP gateway")
        print(f"ums pid {ums.pid}, SMTP 127.0.0.1:{smtp_port}, trunk 127.0.0.1:{trunk.port}", flush=True)
        # the first render imports PDFium, reportlab and numpy code: two mails not counted
        run_phase("warm-up", ums, trunk, smtp_port, ["+49301000000", "+49301000001"], math.inf, args)
        steady = [f"+4930{2000000 + i}" for i in range(args.mails)]
        burst = [f"+4930{3000000 + i}" for i in range(args.burst)]
        if steady:
            phases.append(
                run_phase(f"steady {args.rate:g}/s", ums, trunk, smtp_port, steady, args.rate, args)
            )
        if burst:
            time.sleep(1.0)
            phases.append(run_phase("burst", ums, trunk, smtp_port, burst, math.inf, args))
        server_stages(ums, phases)
        print(f"trunk: {trunk.invites} INVITEs, {trunk.retransmissions} retransmitted, {trunk.acks} ACKs")
        if not ums.proc.alive():
            print("ums exited\n" + ums.log_tail(), file=sys.stderr)
    finally:
        ums.stop(timeout=20)
        trunk.close()
    return phases


# -- rendering ------------------------------------------------------------------------------------


def best_of(repeat: int, work: Callable[[], object]) -> float:
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t)
    return best


def run_quiet(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def anchor_command(pdf: Path, out: Path, resolution: str, mode: str) -> tuple[str, list[str]] | None:
    """(name, argv) of the installed anchor renderer for ``resolution`` (``mode``: mono or gray)."""
    ydpi = {"fine": 196, "standard": 98}[resolution]
    if shutil.which("pdftoppm"):
        return f"pdftoppm -{mode}", [
            "pdftoppm",
            f"-{mode}",
            "-rx",
            "204",
            "-ry",
            str(ydpi),
            str(pdf),
            str(out / "p"),
        ]
    if shutil.which("gs") and mode == "mono":
        argv = ["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=tiffg4", f"-r204x{ydpi}"]
        return "gs tiffg4", [*argv, f"-sOutputFile={out}/p%03d.tif", str(pdf)]
    return None


def rendering(args: argparse.Namespace, run_dir: Path) -> None:
    from ums.outbound.document import compose_document
    from ums.render.documents import render_document
    from ums.render.page import Resolution, thumbnail_png
    from ums.render.tiff import write_tiff

    pdf = business_pdf(args.pages)
    pdf_path = run_dir / "doc.pdf"
    pdf_path.write_bytes(pdf)
    n = args.pages
    print(f"{n}-page PDF ({len(pdf) // 1024} KB, reportlab), best of {args.repeat}", end="; ")
    print("ratio = our time / anchor time")
    head = "resolution  ours pages/s  with G4 TIFF + preview  anchor                pages/s  ratio"
    print(head)
    resolutions: tuple[Resolution, ...] = ("fine", "standard")
    for resolution in resolutions:
        pages: list[Any] = []

        def render(res: Resolution = resolution, pages: list[Any] = pages) -> None:
            pages[:] = render_document(
                pdf, filename="doc.pdf", content_type="application/pdf", resolution=res
            )

        def job(res: Resolution = resolution) -> None:
            done = render_document(pdf, filename="doc.pdf", content_type="application/pdf", resolution=res)
            write_tiff(done)
            thumbnail_png(done[0])

        ours = best_of(args.repeat, render)
        assert len(pages) == n, len(pages)
        with_tiff = best_of(args.repeat, job)
        anchors: list[tuple[str, float]] = []
        for mode in ("mono", "gray"):
            out = run_dir / f"anchor-{resolution}-{mode}"
            out.mkdir()
            cmd = anchor_command(pdf_path, out, resolution, mode)
            if cmd is None:
                continue
            name, argv = cmd
            anchors.append((name, best_of(args.repeat, functools.partial(run_quiet, argv))))
            shutil.rmtree(out, ignore_errors=True)
        row = f"{resolution:<10}  {n / ours:>12.1f}  {n / with_tiff:>22.1f}"
        if not anchors:
            print(f"{row}  no anchor installed (pdftoppm or gs)")
        for k, (name, t) in enumerate(anchors):
            lead = row if k == 0 else " " * len(row)
            print(f"{lead}  {name:<20}  {n / t:>7.1f}  {ours / t:>4.1f}x")
    mail = make_mail("+49302000000", order_pdf())
    one = best_of(
        args.repeat, lambda: _one_job(compose_document, write_tiff, thumbnail_png, mail, args.resolution)
    )
    print(f"one latency mail (text + 1-page PDF, {args.resolution}): compose + G4 TIFF + preview", end=" ")
    print(f"{one * 1000:.0f} ms")


def _one_job(compose: Any, write_tiff: Any, thumbnail_png: Any, mail: bytes, resolution: str) -> None:
    doc = compose(mail, resolution=resolution)
    write_tiff(doc.pages)
    thumbnail_png(doc.pages[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="e-mail to fax benchmark: DATA -> INVITE latency, pages/s")
    ap.add_argument("--mails", type=int, default=200, help="mails of the steady phase")
    ap.add_argument("--rate", type=float, default=5.0, help="mails per second of the steady phase")
    ap.add_argument("--burst", type=int, default=50, help="mails sent at once after the steady phase")
    ap.add_argument("--threads", type=int, default=4, help="SMTP client connections")
    ap.add_argument(
        "--resolution", choices=("standard", "fine"), default="fine", help="[fax_gateway] resolution"
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a phase's INVITEs")
    ap.add_argument("--pages", type=int, default=20, help="pages of the rendering PDF")
    ap.add_argument("--repeat", type=int, default=3, help="rendering passes (best is taken)")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    ap.add_argument("--no-latency", action="store_true", help="rendering only")
    ap.add_argument("--no-render", action="store_true", help="latency only")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    args = ap.parse_args(argv)

    run_dir = Path(tempfile.mkdtemp(prefix="ums-bench-mail2fax-"))
    print(f"e-mail to fax benchmark; {machine_note()}", flush=True)
    try:
        if not args.no_latency:
            print(
                f"\nend of DATA -> INVITE: text + 1-page PDF per mail ({args.resolution}, 2 fax pages), "
                f"{args.threads} SMTP connections, trunk answers 486"
            )
            phases = latency(args, run_dir)
            print_phases(phases)
            lost = sum(len(ph.accepted) - len(ph.invite_times) for ph in phases)
            for ph in phases:
                p99 = percentile(ph.invite_times, 99)
                verdict = "met" if p99 < 1.0 and len(ph.invite_times) == len(ph.accepted) else "NOT met"
                print(f"goal p99 end of DATA -> INVITE < 1 s, {ph.name}: {verdict} ({ms(p99)} ms)")
            if lost:
                print(f"{lost} accepted mails without an INVITE")
        if not args.no_render:
            print(f"\nrendering; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            rendering(args, run_dir)
    finally:
        if args.keep:
            print(f"run directory: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
