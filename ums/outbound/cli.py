"""Operator commands for outgoing faxes: ``ums fax send``, ``ums fax queue``, ``ums fax cancel``.

What it does
------------
``ums fax send --config FILE --to NUMBER [--from ADDR] [--cover ...] FILE...`` renders the files
into fax pages here (so a file that cannot be faxed is reported at once) and writes a job into the
server's job directory (``<data_dir>/outbound/fax``); the running server picks it up within
``[fax_gateway] scan_interval`` seconds (2 s), or at once on ``kill -HUP``.  The report goes to
``--from`` (default: ``[mail] admin``, else ``[mail] from``).

``ums fax queue --config FILE [--all]`` lists the jobs: id, number, state, tries (calls placed /
allowed), next try, pages (confirmed / total); ``--all`` adds the archived (finished) ones.

``ums fax cancel --config FILE ID`` asks the server to cancel a job; the server applies it at its
next scan (a call in progress is hung up) and sends the report.

How it works
------------
``send`` builds a MIME mail holding the files as attachments, the same input an e-mail to the
gateway is, and renders it with the same code (:func:`ums.outbound.service.compose_job_document`);
the mail is kept in the job directory as its source.  The job is written with
:class:`~ums.store.fax_jobs.FaxJobStore` and becomes visible to the server only once its pages are
on disk (``options["rendered"]``).  ``queue`` and ``cancel`` only read job files and add a
``cancel`` file; they never change a job the server is working on.  Exit status: 0 done, 1 the job
could not be made (bad file, denied number), 2 bad usage or unknown job.
"""

from __future__ import annotations

import argparse
import mimetypes
import random
import sys
import time
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Final

from ums.config import Config, ConfigError, load_config
from ums.outbound.jobs import Job
from ums.store.fax_jobs import FaxJobStore, FaxJobStoreError, new_job_id

# ums.outbound.service (rendering, mail) is imported by the commands that need it, so that
# building the ``ums`` parser stays fast.

__all__ = ["COMMANDS", "add_parsers", "check_config", "run"]

#: the ``ums fax`` sub-commands this module runs
COMMANDS: Final = ("send", "queue", "cancel")


def add_parsers(sub: Any) -> None:
    """Add ``send``, ``queue`` and ``cancel`` to the ``ums fax`` sub-command parsers."""
    send = sub.add_parser("send", help="fax files to a number (a job for the running server)")
    _common(send)
    send.add_argument("--to", required=True, metavar="NUMBER", help="fax number, e.g. +49 30 1234567")
    send.add_argument("--from", dest="sender", default="", metavar="ADDR", help="where the report goes")
    send.add_argument("--cover", action="store_true", default=None, help="put a cover page in front")
    send.add_argument("--no-cover", dest="cover", action="store_false", help="no cover page")
    send.add_argument("--comment", default="", help="cover page comment")
    send.add_argument("--subject", default="", help="subject (cover page and report)")
    send.add_argument("--attention", default="", help="cover page: for whom")
    res = send.add_mutually_exclusive_group()
    for name in ("standard", "fine", "superfine"):
        res.add_argument(f"--{name}", dest="resolution", action="store_const", const=name)
    send.add_argument("--retries", type=int, default=None, help="most calls (1 to 20)")
    send.add_argument("--notify", choices=("final", "each", "none"), default=None)
    send.add_argument("files", nargs="+", metavar="FILE", help="PDF, image, text, HTML or Office files")

    queue = sub.add_parser("queue", help="list outgoing fax jobs")
    _common(queue)
    queue.add_argument("--all", action="store_true", help="also the finished (archived) jobs")

    cancel = sub.add_parser("cancel", help="cancel an outgoing fax job")
    _common(cancel)
    cancel.add_argument("job_id", metavar="ID")


def check_config(cfg: Config) -> None:
    """Check the ``[fax_gateway]`` rules the way the server builds them; raises ConfigError."""
    from ums.outbound.service import GatewaySettings

    try:
        GatewaySettings.from_config(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="TOML configuration file")
    parser.add_argument("--data-dir", help="data directory (overrides server.data_dir)")


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    return cfg.with_data_dir(Path(args.data_dir)) if args.data_dir else cfg


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr)


def _mail(args: argparse.Namespace, sender: str, number: str, domain: str) -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = number
    if args.subject:
        msg["Subject"] = args.subject
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid("fax-send", domain=domain)
    msg["X-Fax-Source"] = "ums fax send"
    msg.set_content("")
    for name in args.files:
        path = Path(name)
        data = path.read_bytes()
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg.as_bytes()


def _send(args: argparse.Namespace, cfg: Config) -> int:
    from ums.outbound.addresses import FaxOptions
    from ums.outbound.document import BadDocument
    from ums.outbound.numbers import BadNumber, normalize
    from ums.outbound.service import GatewaySettings, compose_job_document, create_job, job_store, render_job

    try:
        settings = GatewaySettings.from_config(cfg)
    except ValueError as exc:
        _error(str(exc))
        return 2
    try:
        number = normalize(args.to, settings.plan)
    except BadNumber as exc:
        _error(f"{args.to}: {exc.reason}")
        return 1
    denied = settings.deny.check(number)
    if denied is not None:
        _error(denied)
        return 1
    if args.retries is not None and not 1 <= args.retries <= 20:
        _error("--retries must be 1 to 20")
        return 2
    sender = args.sender or cfg.mail.admin or cfg.mail.sender
    if "@" not in sender:
        _error(f"--from must be an e-mail address, got {sender!r}")
        return 2
    try:
        data = _mail(args, sender, number, settings.compose.domain)
    except OSError as exc:
        _error(str(exc))
        return 1
    now = time.time()
    store: FaxJobStore[Job] = job_store(cfg)
    options = FaxOptions(
        cover=args.cover,
        resolution=args.resolution,
        retries=args.retries,
        notify=args.notify,
        cover_comment=args.comment.replace("\\n", "\n") or None,
    )
    job = create_job(
        settings,
        job_id=new_job_id(now, random.Random()),
        number=number,
        sender=sender,
        now=now,
        options=options,
        subject=args.subject,
        attention=args.attention or None,
        from_header=sender,
    )
    try:
        doc = compose_job_document(settings, job, data, now)
    except BadDocument as exc:
        _error(exc.reason)
        return 1
    store.create(job, data)
    render_job(store, job, doc)
    pages = f"{job.pages} page{'' if job.pages == 1 else 's'}"
    print(f"job {job.id}: {pages} to {number} (dial {job.dial}), queued; report to {sender}")
    return 0


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M")


def _row(job: Job, max_dials: int) -> str:
    waiting = job.state.value in ("queued", "sleeping")
    next_try = _when(job.not_before) if waiting else "-"
    limit = int(job.options.get("max_dials", max_dials))
    pages = f"{job.pages_done}/{job.pages}" if job.options.get("rendered") else "-"
    return (
        f"{job.id}  {job.number:<16} {job.state.value:<9} {job.dials:>2}/{limit:<2}  "
        f"{next_try:<16}  {pages:>7}  {job.final_reason}".rstrip()
    )


def _queue(args: argparse.Namespace, cfg: Config) -> int:
    from ums.outbound.service import job_store

    store: FaxJobStore[Job] = job_store(cfg)
    max_dials = cfg.fax_gateway.max_dials
    jobs: list[Job] = []
    if store.root.is_dir():
        for d in sorted(store.root.iterdir()):
            if d.name.startswith(("_", ".")) or not store.exists(d.name):
                continue
            try:
                jobs.append(store.load(d.name))
            except (OSError, ValueError) as exc:
                _error(f"{d.name}: {exc}")
        if args.all:
            for job_id in store.archived():
                try:
                    jobs.append(store.load_archived(job_id))
                except (OSError, ValueError) as exc:
                    _error(f"{job_id}: {exc}")
    print(f"{'ID':<28}  {'NUMBER':<16} {'STATE':<9} TRIES  {'NEXT TRY':<16}  {'PAGES':>7}")
    for job in sorted(jobs, key=lambda j: j.id):
        print(_row(job, max_dials))
    return 0


def _cancel(args: argparse.Namespace, cfg: Config) -> int:
    from ums.outbound.service import job_store, request_cancel

    store: FaxJobStore[Job] = job_store(cfg)
    job_id: str = args.job_id
    try:
        if not store.exists(job_id):
            if job_id in store.archived():
                job = store.load_archived(job_id)
                _error(f"job {job_id} is already {job.state.value}")
                return 1
            _error(f"no job {job_id}")
            return 2
        request_cancel(store, job_id, time.time())
    except FaxJobStoreError as exc:
        _error(str(exc))
        return 1
    print(f"job {job_id}: cancel requested; the server applies it within a few seconds")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``ums fax send|queue|cancel``; returns the exit status."""
    cfg = _load(args)
    if args.fax_command == "send":
        return _send(args, cfg)
    if args.fax_command == "queue":
        return _queue(args, cfg)
    if args.fax_command == "cancel":
        return _cancel(args, cfg)
    return 2  # pragma: no cover - argparse enforces the choices
