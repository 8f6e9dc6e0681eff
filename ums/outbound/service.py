"""E-mail to fax: the shell that takes gateway mail, renders it, dials, retries and reports.

What it does
------------
:class:`FaxGatewayService` joins the pure pieces of ``ums.outbound`` to the disk, the SMTP listener,
the dialer and the mail delivery:

* As the :class:`~ums.mailgate.smtp_in.GatewayHandler` of :class:`~ums.mailgate.smtp_in.SmtpGateway`:
  ``MAIL FROM`` is checked by :class:`~ums.outbound.addresses.SenderPolicy` (``550 5.7.1`` with its
  reason); each ``RCPT TO`` must be a gateway address (else ``550 5.1.1 no such fax address``) with a
  number :func:`~ums.outbound.numbers.normalize` accepts (else ``550`` with its reason); at the end of
  ``DATA`` the ``X-Fax-*`` headers are read (``554 5.6.0`` with the header and what it expects) and one
  job per recipient is written with :meth:`FaxJobStore.create <ums.store.fax_jobs.FaxJobStore.create>`
  (durable) before ``250`` goes out.
* A number on the deny list (premium rate, satellite, ...) is *accepted* at ``RCPT``: the job is
  created already ``FAILED`` with the deny reason, and the sender gets the failure report at once.
  The report reaches the person who wrote the mail (an SMTP refusal would only reach them as a
  bounce from their own mail server, if at all) and says which rule refused the number.
* After ``250``, in a worker thread, the mail becomes fax pages
  (:func:`~ums.outbound.document.compose_document`): ``pages.tif`` (TIFF Class F, G4) and
  ``page1.png`` (the preview for the reports) in the job directory, the page count in the job.  A
  mail that cannot be faxed (:class:`~ums.outbound.document.BadDocument`) fails the job with a
  failure report naming the reason.
* The runner (an asyncio task) hands due jobs to the injected :data:`Dialer`, resuming at the first
  page not yet confirmed, feeds the :class:`~ums.outbound.jobs.Attempt` to the
  :class:`~ums.outbound.jobs.Scheduler`, saves the job and sends reports: ``notify = "final"`` one
  success or failure report, ``"each"`` also one per failed try that will be retried, ``"none"`` no
  report at all (not even for a denied number).  ``X-Fax-Retries`` sets the most calls of the job
  (``max_dials``, like ``sendfax -T``).  A finished job is archived (``_archive/<id>``) and
  archived jobs older than ``keep_days`` are deleted once a day.
* Jobs made by ``ums fax send`` (another process) and cancel requests (``ums fax cancel``: a file
  named ``cancel`` in the job directory, see :func:`request_cancel`) are picked up by a scan of the
  job directory every ``scan_interval`` seconds (2 s by default) or at once after :meth:`rescan`
  (the server calls it on SIGHUP).

How it works
------------
Nothing is acknowledged before it is on disk: ``250`` after ``create``; a job is saved ``ACTIVE``
before its call is placed, so a crash during a call counts the dial and the job runs once more after
the restart (:meth:`Scheduler.restore <ums.outbound.jobs.Scheduler.restore>`).  A job whose pages
were not rendered yet when the process died (``options["rendered"]`` false) is rendered again at
start-up from its ``mail.eml``.  Finished jobs found at start-up get their report (unless
``options["reported"]``) and are archived.  Reports have deterministic Message-IDs, so a report sent
twice after a crash lands in a Maildir once.

Blocking work (fsync, rendering, TIFF and PDF writing, SMTP) runs in threads; the scheduler and the
jobs in it are touched only on the event loop (``accept`` runs in aiosmtpd's worker thread, writes
the new jobs to disk and hands them to the loop; a job is rendered in a thread before it enters the
scheduler).  The jobs live in ``<data_dir>/outbound/fax`` (:func:`store_root`).  A call is
cancelled (``ums fax cancel`` of a job in a call) by cancelling the dialer's task: the dialer hangs
up.  On shutdown the dialer tasks are cancelled too, but the jobs stay ``ACTIVE`` on disk and are
dialled again after the restart.

Reports go out with :func:`mail_sender`: to the smarthost when one is configured, else (and when the
smarthost refuses or is down) into the sender's Maildir under the data directory, like the other
mail of the server.  Time comes from the injected ``clock`` (``time.time`` by default).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Final, cast

from ums.config import Config, MailSettings
from ums.log import kv
from ums.mailgate.fax_reports import FaxAttempt, FaxReport, ReportKind, compose_fax_report
from ums.mailgate.maildir import deliver_maildir
from ums.mailgate.mime import ComposeSettings
from ums.mailgate.smtp_in import Reject
from ums.mailgate.smtp_out import DeliveryError, SmtpSettings, deliver_smtp
from ums.outbound.addresses import (
    BadOption,
    FaxOptions,
    GatewayAddressing,
    Notify,
    SenderPolicy,
    bare_address,
    header_text,
    parse_options,
    parse_recipient,
)
from ums.outbound.document import BadDocument, FaxDocument, Renderer, compose_document
from ums.outbound.gateway import MailGateway, TaskRunner, create_jobs, gateway_addressing
from ums.outbound.jobs import Action, Attempt, Cause, Decision, Job, JobState, RetryPolicy, Scheduler
from ums.outbound.numbers import DenyList, DialPlan, deny_rules, dial_string
from ums.outbound.policy import configured, deny_list, dial_plan, sender_policy
from ums.render.cover import CoverInfo
from ums.render.documents import render_document
from ums.render.page import FaxPage, Resolution, thumbnail_png
from ums.render.pdf import write_pdf
from ums.render.tiff import read_tiff, write_tiff
from ums.store.fax_jobs import FaxJobStore, FaxJobStoreError, new_job_id

__all__ = [
    "CANCEL_FILE",
    "PAGES_FILE",
    "THUMBNAIL_FILE",
    "DialJob",
    "Dialer",
    "FaxGatewayService",
    "GatewaySettings",
    "ReportSender",
    "compose_job_document",
    "create_job",
    "deny_rules",
    "job_store",
    "mail_sender",
    "render_job",
    "request_cancel",
    "store_root",
]

log = logging.getLogger("ums.outbound")

#: the rendered pages of a job (TIFF Class F, G4), the preview of page 1, a cancel request
PAGES_FILE: Final = "pages.tif"
THUMBNAIL_FILE: Final = "page1.png"
CANCEL_FILE: Final = "cancel"

_CAUSE_TEXT: Final = {
    Cause.OK: "sent",
    Cause.BUSY: "busy",
    Cause.NO_ANSWER: "no answer",
    Cause.NOT_FAX: "no fax machine",
    Cause.LINE_ERROR: "line error",
    Cause.REJECTED: "rejected",
    Cause.CONGESTION: "no line free",
    Cause.CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class DialJob:
    """One call to place: what the :data:`Dialer` gets (``ums.server`` turns it into a call request)."""

    job_id: str
    #: E.164 number ("+4930123456"), for logs
    number: str
    #: digits for the Request-URI user part (``dial_string``)
    dial: str
    #: "sip:<dial>@host:port" when the call goes to the trunk; "" when it goes through ``account``
    target: str
    #: SIP account name; "" = the trunk
    account: str
    #: every page of the document (cover included)
    pages: tuple[FaxPage, ...]
    #: first page to send (1-based): a retry resumes after the pages already confirmed
    first_page: int
    #: our fax identity (T.30 TSI)
    ident: str
    #: seconds to ring before giving up
    ring_timeout: float


#: places one call and returns how it ended; cancelling the awaitable hangs up
Dialer = Callable[[DialJob], Awaitable[Attempt]]
#: hands one composed mail to ``to`` (blocking; runs in a worker thread)
ReportSender = Callable[[str, bytes], None]


def _compose_settings(mail: MailSettings) -> ComposeSettings:
    return ComposeSettings(
        from_addr=mail.sender,
        from_name=mail.from_name,
        reply_to=mail.reply_to,
        admin=mail.admin,
        timezone=mail.timezone,
    )


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the service needs, built and checked (see :meth:`from_config`)."""

    addressing: GatewayAddressing
    senders: SenderPolicy
    plan: DialPlan
    deny: DenyList
    policy: RetryPolicy
    compose: ComposeSettings
    trunk: str = "sip:127.0.0.1:5080"
    account: str = ""
    max_concurrent: int = 1
    resolution: Resolution = "fine"
    cover: bool = False
    cover_logo: str = ""
    notify: Notify = "final"
    attach_document: bool = False
    max_pages: int = 200
    keep_days: float = 30.0
    ident: str = ""
    ring_timeout: float = 60.0
    scan_interval: float = 2.0

    @classmethod
    def from_config(cls, config: Config) -> GatewaySettings:
        """The settings of ``[fax_gateway]``; ``ValueError`` names the key of a bad value."""
        g = config.fax_gateway
        return cls(
            addressing=gateway_addressing(config, "fax_gateway", "fax", g),
            senders=sender_policy(config),
            plan=dial_plan(config),
            deny=deny_list(config),
            policy=configured(
                config,
                "fax_gateway",
                lambda: RetryPolicy(
                    busy_interval=g.busy_interval,
                    no_answer_interval=g.no_answer_interval,
                    not_fax_interval=g.not_fax_interval,
                    not_fax_max=g.not_fax_max,
                    line_error_interval=g.line_error_interval,
                    congestion_interval=g.congestion_interval,
                    congestion_max=g.congestion_max,
                    max_tries=g.max_tries,
                    max_dials=g.max_dials,
                ),
            ),
            compose=configured(config, "mail", lambda: _compose_settings(config.mail)),
            trunk=g.trunk,
            account=g.account,
            max_concurrent=g.max_concurrent,
            resolution=g.resolution,
            cover=g.cover,
            cover_logo=g.cover_logo,
            notify=g.notify,
            attach_document=g.attach_document,
            max_pages=g.max_pages,
            keep_days=g.keep_days,
            ident=g.ident or config.fax.ident,
            ring_timeout=g.ring_timeout,
            scan_interval=g.scan_interval,
        )

    def target(self, dial: str) -> str:
        """The Request-URI for ``dial`` on the trunk; "" when calls go through an account."""
        if self.account:
            return ""
        return f"sip:{dial}@{self.trunk.removeprefix('sip:')}"


# -- files and jobs (blocking helpers, shared with ``ums fax send``) ----------------------------------


def store_root(config: Config) -> Path:
    """Where the outbound fax jobs live: ``<data_dir>/outbound/fax``."""
    return config.server.data_dir / "outbound" / "fax"


def job_store(config: Config) -> FaxJobStore[Job]:
    return FaxJobStore(store_root(config), Job.from_json)


def request_cancel(store: FaxJobStore[Job], job_id: str, now: float) -> Job:
    """Ask the running server to cancel a job (writes ``cancel`` into its directory).

    Raises :class:`~ums.store.fax_jobs.FaxJobStoreError` when there is no such waiting job.
    """
    job = store.load(job_id)
    if job.is_final:
        raise FaxJobStoreError(f"job {job_id} is already {job.state.value}")
    store.put_file(job_id, CANCEL_FILE, f"{now!r}\n".encode("ascii"))
    return job


def render_job(store: FaxJobStore[Job], job: Job, doc: FaxDocument) -> Job:
    """Write the pages of ``doc`` into the job's directory, then mark the job rendered (saved)."""
    store.put_file(job.id, PAGES_FILE, write_tiff(doc.pages))
    store.put_file(job.id, THUMBNAIL_FILE, thumbnail_png(doc.pages[0]))
    job.pages = doc.page_count
    job.options["rendered"] = True
    if not job.options.get("subject") and doc.subject:
        job.options["subject"] = doc.subject
    store.save(job)
    return job


def create_job(
    settings: GatewaySettings,
    *,
    job_id: str,
    number: str,
    sender: str,
    now: float,
    options: FaxOptions,
    subject: str = "",
    message_id: str = "",
    attention: str | None = None,
    from_header: str = "",
) -> Job:
    """A new job (not yet on disk) for ``number`` (E.164); FAILED at once when the number is denied."""
    not_before = now
    if options.send_at is not None:
        not_before = max(now, options.send_at.timestamp())
    opts: dict[str, Any] = {
        "notify": options.notify or settings.notify,
        "resolution": options.resolution or settings.resolution,
        "cover": settings.cover if options.cover is None else options.cover,
        "attach_document": (
            settings.attach_document if options.attach_document is None else options.attach_document
        ),
        "subject": subject,
        "message_id": message_id,
        "from": from_header,
        "rendered": False,
    }
    if options.cover_comment:
        opts["cover_comment"] = options.cover_comment
    if attention:
        opts["attention"] = attention
    if options.retries is not None:
        opts["max_dials"] = options.retries  # X-Fax-Retries counts calls, like sendfax -T
    job = Job(
        id=job_id,
        number=number,
        dial=dial_string(number, settings.plan),
        sender=sender,
        pages=1,  # the real count is written when the pages are rendered
        created=now,
        account=settings.account,
        not_before=not_before,
        options=opts,
    )
    denied = settings.deny.check(number)
    if denied is not None:
        job.state = JobState.FAILED
        job.final_reason = denied
        job.finished = now
        job.options["denied"] = True
    return job


def _now_text(now: float, compose: ComposeSettings) -> str:
    return datetime.fromtimestamp(now, UTC).astimezone(compose.zone).strftime("%Y-%m-%d %H:%M")


def compose_job_document(
    settings: GatewaySettings, job: Job, mail: bytes, now: float, render: Renderer = render_document
) -> FaxDocument:
    """The fax pages of a job's mail with the job's options (cover page, resolution); raises BadDocument."""
    opts = job.options
    cover: CoverInfo | None = None
    if opts.get("cover"):
        attention = str(opts.get("attention") or "")
        cover = CoverInfo(
            sender=str(opts.get("from") or job.sender),
            recipient=attention or job.number,
            date=_now_text(now, settings.compose),
            pages=0,
            comment=str(opts.get("cover_comment") or ""),
            recipient_fax=job.number if attention else "",
        )
    return compose_document(
        mail,
        resolution=str(opts.get("resolution") or settings.resolution),
        cover=cover,
        render=render,
        max_pages=settings.max_pages,
        logo=Path(settings.cover_logo) if settings.cover_logo else None,
    )


def mail_sender(smtp: SmtpSettings | None, envelope_from: str, maildir_root: Path) -> ReportSender:
    """Deliver reports like the server's other mail: smarthost, else (or when it fails) the Maildir."""

    def send(to: str, data: bytes) -> None:
        if smtp is not None:
            try:
                if not deliver_smtp(smtp, envelope_from, [to], data):
                    return
            except DeliveryError as exc:
                log.error(kv("fax_gateway.report_smtp_failed", to=to, reason=str(exc), fallback="maildir"))
        deliver_maildir(maildir_root, to, data)

    return send


# -- the service ---------------------------------------------------------------------------------------


class FaxGatewayService(MailGateway):
    """The e-mail to fax gateway: SMTP handler, renderer, call runner and reporter.

    ``start()`` once on the running loop (it reads the job directory and starts the runner),
    ``stop()`` once.  ``tick()`` and ``drain()`` run the runner's steps one at a time (tests).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        store: FaxJobStore[Job],
        dialer: Dialer,
        send_report: ReportSender,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        render: Renderer = render_document,
        authenticate: Callable[[str, str], bool] | None = None,
    ) -> None:
        super().__init__(settings, kind="fax", authenticate=authenticate)
        self.settings = settings
        self.store = store
        self.scheduler = Scheduler(
            settings.policy,
            limits={settings.account: settings.max_concurrent},
            default_limit=settings.max_concurrent,
        )
        self._dialer = dialer
        self._send_report = send_report
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._render = render
        self._runner = TaskRunner(log, "fax_gateway", clock)
        #: jobs this process handles (waiting, rendering, in a call, being reported), by id
        self._known: set[str] = set()
        self._rendering: set[str] = set()
        self._cancel_pending: set[str] = set()
        self._cancel_applied: set[str] = set()
        #: the dialer task of each job in a call
        self._calls: dict[str, asyncio.Task[Attempt]] = {}
        self._last_scan = float("-inf")
        self._scan_now = False

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self, *, run: bool = True) -> None:
        """Read the job directory (restart recovery), then start the runner (``run=False``: don't)."""
        self._runner.attach()
        jobs = await asyncio.to_thread(self.store.load_all)
        now = self._clock()
        ready = [j for j in jobs if j.is_final or j.options.get("rendered")]
        unrendered = [j for j in jobs if not (j.is_final or j.options.get("rendered"))]
        result = self.scheduler.restore(ready, now)
        self._known.update(j.id for j in jobs)
        for job in result.requeued:
            await asyncio.to_thread(self.store.save, job)
        for job in result.finished:
            self._runner.spawn(self._finish(job))
        for job in unrendered:
            self._spawn_render(job)
        log.info(
            kv(
                "fax_gateway.started",
                jobs=len(jobs),
                requeued=len(result.requeued),
                finished=len(result.finished),
                to_render=len(unrendered),
            )
        )
        self._scan_now = True
        if run:
            self._runner.start(
                self.tick,
                idle=lambda: self.settings.scan_interval,
                next_wakeup=self.scheduler.next_wakeup,
                name="fax-gateway",
            )

    async def stop(self) -> None:
        """Stop the runner; calls in progress are hung up and dialled again after a restart."""
        await self._runner.stop()
        log.info(kv("fax_gateway.stopped", calls=len(self._calls)))

    def rescan(self) -> None:
        """Look for new jobs and cancel requests in the job directory now (SIGHUP)."""
        self._scan_now = True
        self._runner.wake()

    async def tick(self) -> None:
        """One step of the runner: scan the directory if due, prune if due, start the due calls."""
        now = self._clock()
        if self._scan_now or now - self._last_scan >= self.settings.scan_interval:
            self._scan_now = False
            self._last_scan = now
            await self._scan(now)
        await self._runner.prune(self.store, now, self.settings.keep_days)
        for job in self.scheduler.due(self._clock()):
            self._runner.spawn(self._call(job))

    async def drain(self) -> None:
        """Wait until no rendering, call or report is in progress."""
        await self._runner.drain()

    # -- SMTP (GatewayHandler; the sender and recipient policy is MailGateway's) ------------------

    def accept(self, mail_from: str, rcpts: list[str], data: bytes, auth_user: str | None, peer: str) -> None:
        """One job per recipient, durable before return (runs in aiosmtpd's worker thread)."""
        headers = BytesHeaderParser(policy=policy.default).parsebytes(data)
        try:
            options = parse_options(headers)
        except BadOption as exc:
            raise Reject(554, str(exc)) from None
        now = self._clock()
        sender = bare_address(mail_from)
        targets = [self._recipient(rcpt) for rcpt in rcpts]  # all checked before anything is written
        jobs = [
            create_job(
                self.settings,
                job_id=new_job_id(now, self._rng),
                number=number,
                sender=sender,
                now=now,
                options=options,
                subject=header_text(headers, "Subject"),
                message_id=header_text(headers, "Message-ID"),
                attention=found.attention or _to_name(data, found.address, self.settings.addressing),
                from_header=header_text(headers, "From"),
            )
            for found, number in targets
        ]
        create_jobs(self.store, jobs, data)
        for job in jobs:
            log.info(
                kv(
                    "fax_gateway.job_created",
                    job=job.id,
                    number=job.number,
                    sender=sender,
                    peer=peer,
                    state=job.state.value,
                    reason=job.final_reason or None,
                )
            )
        self._runner.from_thread(lambda: self._take_new(jobs))

    # -- new jobs --------------------------------------------------------------------------------

    def _take_new(self, jobs: list[Job]) -> None:
        """Jobs just written by ``accept`` (on the loop)."""
        for job in jobs:
            self._known.add(job.id)
            if job.is_final:
                self._runner.spawn(self._finish(job))
            else:
                self._spawn_render(job)

    def _spawn_render(self, job: Job) -> None:
        self._known.add(job.id)
        self._rendering.add(job.id)
        self._runner.spawn(self._render_and_queue(job))

    async def _render_and_queue(self, job: Job) -> None:
        try:
            job = await asyncio.to_thread(self._render_blocking, job)
        finally:
            self._rendering.discard(job.id)
        if job.is_final:
            await self._finish(job)
            return
        now = self._clock()
        self.scheduler.add(job, now)
        if job.id in self._cancel_pending:
            self._cancel_pending.discard(job.id)
            await self._apply_cancel(job.id, now)
        self._runner.wake()

    def _render_blocking(self, job: Job) -> Job:
        now = self._clock()
        try:
            mail = self.store.read_mail(job.id)
            doc = compose_job_document(self.settings, job, mail, now, self._render)
            job = render_job(self.store, job, doc)
            log.info(kv("fax_gateway.rendered", job=job.id, pages=job.pages))
            return job
        except BadDocument as exc:
            reason = exc.reason
            log.info(kv("fax_gateway.bad_document", job=job.id, reason=reason))
        except Exception as exc:
            log.exception(kv("fax_gateway.render_failed", job=job.id, error=repr(exc)))
            reason = "the document could not be converted to fax pages (server error)"
        job.state = JobState.FAILED
        job.final_reason = reason
        job.finished = now
        self.store.save(job)
        return job

    async def _scan(self, now: float) -> None:
        new, cancels = await asyncio.to_thread(self._scan_blocking)
        for job in new:
            if job.id in self._known:
                continue
            self._known.add(job.id)
            if job.is_final:
                self._runner.spawn(self._finish(job))
            else:
                self.scheduler.add(job, now)
                log.info(kv("fax_gateway.job_found", job=job.id, number=job.number))
        for job_id in cancels:
            await self._apply_cancel(job_id, now)

    def _scan_blocking(self) -> tuple[list[Job], list[str]]:
        """New rendered jobs (made by ``ums fax send``) and cancel requests not yet applied."""
        new: list[Job] = []
        cancels: list[str] = []
        try:
            entries = sorted(self.store.root.iterdir())
        except OSError as exc:
            log.error(kv("fax_gateway.scan_failed", error=str(exc)))
            return new, cancels
        for d in entries:
            name = d.name
            if name.startswith(("_", ".")) or not d.is_dir():
                continue
            try:
                if name not in self._known:
                    if self.store.exists(name):
                        job = self.store.load(name)
                        if job.options.get("rendered") or job.is_final:
                            new.append(job)
                        else:
                            continue  # `ums fax send` still writing it
                if name not in self._cancel_applied and (d / CANCEL_FILE).is_file():
                    cancels.append(name)
            except (OSError, ValueError) as exc:
                log.error(kv("fax_gateway.scan_skipped", job=name, error=str(exc)))
        return new, cancels

    # -- cancel ----------------------------------------------------------------------------------

    async def _apply_cancel(self, job_id: str, now: float) -> None:
        if job_id in self._cancel_applied:
            return
        if job_id in self._rendering:
            self._cancel_pending.add(job_id)
            return
        if job_id not in self.scheduler:
            return  # finished meanwhile (or not ours yet: the next scan finds it)
        self._cancel_applied.add(job_id)
        decision = self.scheduler.cancel(job_id, now)
        log.info(kv("fax_gateway.cancel", job=job_id, action=decision.action.value))
        if decision.action is Action.STOPPING:
            call = self._calls.get(job_id)
            if call is not None:
                call.cancel()  # the dialer hangs up; _call gets CANCELLED
            return
        await self._after(decision)

    # -- calls -----------------------------------------------------------------------------------

    async def _call(self, job: Job) -> None:
        start = self._clock()
        try:
            await asyncio.to_thread(self.store.save, job)  # ACTIVE, the dial counted: before the call
            pages = await asyncio.to_thread(self._pages, job.id)
        except Exception as exc:
            log.exception(kv("fax_gateway.call_setup_failed", job=job.id))
            attempt = Attempt(start, self._clock(), Cause.CONGESTION, reason=f"server error: {exc}")
        else:
            attempt = await self._dial(job, pages, start)
        decision = self.scheduler.finished(job.id, attempt, self._clock())
        log.info(
            kv(
                "fax_gateway.call_ended",
                job=job.id,
                cause=attempt.cause.value,
                pages_sent=attempt.pages_sent,
                action=decision.action.value,
                reason=decision.reason,
            )
        )
        await self._after(decision)

    async def _dial(self, job: Job, pages: tuple[FaxPage, ...], start: float) -> Attempt:
        if job.cancel_requested:
            return Attempt(start, start, Cause.CANCELLED, reason="cancelled before the call")
        request = DialJob(
            job_id=job.id,
            number=job.number,
            dial=job.dial,
            target=self.settings.target(job.dial),
            account=job.account,
            pages=pages,
            first_page=job.next_page,
            ident=self.settings.ident,
            ring_timeout=self.settings.ring_timeout,
        )
        log.info(kv("fax_gateway.dialling", job=job.id, dial=job.dial, first_page=job.next_page))
        call = asyncio.ensure_future(self._dialer(request))
        self._calls[job.id] = call
        try:
            return await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # shutdown: the job stays ACTIVE on disk and runs again after the restart
            return Attempt(start, self._clock(), Cause.CANCELLED, reason="cancelled during the call")
        except Exception as exc:
            log.exception(kv("fax_gateway.dialer_failed", job=job.id))
            return Attempt(start, self._clock(), Cause.CONGESTION, reason=f"server error: {exc}")
        finally:
            self._calls.pop(job.id, None)

    def _pages(self, job_id: str) -> tuple[FaxPage, ...]:
        return tuple(read_tiff(self.store.read_file(job_id, PAGES_FILE)))

    async def _after(self, decision: Decision) -> None:
        """Save the decided job, report, archive a finished one."""
        job = decision.job
        await asyncio.to_thread(self.store.save, job)
        if decision.is_final:
            await self._finish(job)
        elif decision.action is Action.RETRY and self._notify(job) == "each":
            await asyncio.to_thread(self._report, job, "attempt", decision.at)

    def _notify(self, job: Job) -> Notify:
        value = job.options.get("notify", self.settings.notify)
        return cast(Notify, value) if value in ("final", "each", "none") else self.settings.notify

    async def _finish(self, job: Job) -> None:
        """Report a finished job (once), then archive it."""
        try:
            if not job.options.get("reported") and self._notify(job) != "none":
                kind: ReportKind = "success" if job.state is JobState.DONE else "failure"
                await asyncio.to_thread(self._report, job, kind, None)
                job.options["reported"] = True
            await asyncio.to_thread(self.store.save, job)
            await asyncio.to_thread(self.store.archive, job.id, self._clock())
        finally:
            self._known.discard(job.id)
            self._cancel_applied.discard(job.id)
        log.info(kv("fax_gateway.finished", job=job.id, state=job.state.value, reason=job.final_reason))

    # -- reports ---------------------------------------------------------------------------------

    def _report(self, job: Job, kind: ReportKind, next_try: float | None) -> None:
        """Compose and send one report (blocking); failures are logged, never raised."""
        try:
            data = self._compose_report(job, kind, next_try)
            self._send_report(job.sender, data)
            log.info(kv("fax_gateway.report_sent", job=job.id, kind=kind, to=job.sender))
        except Exception as exc:
            log.exception(
                kv("fax_gateway.report_lost", job=job.id, kind=kind, to=job.sender, error=repr(exc))
            )

    def _compose_report(self, job: Job, kind: ReportKind, next_try: float | None) -> bytes:
        opts = job.options
        rendered = bool(opts.get("rendered"))
        thumbnail: bytes | None = None
        pdf: bytes | None = None
        if rendered:
            try:
                thumbnail = self.store.read_file(job.id, THUMBNAIL_FILE)
                if kind != "attempt" and opts.get("attach_document"):
                    pdf = write_pdf(self._pages(job.id), title=str(opts.get("subject") or "") or None)
            except (OSError, ValueError) as exc:
                log.error(kv("fax_gateway.report_pages_missing", job=job.id, error=str(exc)))
        last = job.attempts[-1] if job.attempts else None
        answered = last is not None and last.cause in (Cause.OK, Cause.LINE_ERROR)
        reason = job.final_reason
        if kind == "attempt" and last is not None:
            reason = _CAUSE_TEXT[last.cause] + (f": {last.reason}" if last.reason else "")
        report = FaxReport(
            kind=kind,
            job_id=job.id,
            sender=job.sender,
            destination=job.number,
            date=_dt(self._clock()),
            original_subject=str(opts.get("subject") or ""),
            original_message_id=str(opts.get("message_id") or ""),
            pages_sent=job.pages_done if rendered else 0,
            pages_total=job.pages if rendered else 0,
            duration=(last.end - last.start) if last is not None and answered else None,
            rate=(last.rate or None) if last is not None else None,
            resolution=str(opts.get("resolution") or ""),
            remote_csid=last.remote_csid if last is not None else "",
            tries=job.dials,
            max_tries=int(opts.get("max_dials", self.settings.policy.max_dials)),
            reason="" if kind == "success" else reason,
            attempts=tuple(FaxAttempt(_dt(a.start), _attempt_text(a), a.pages_sent) for a in job.attempts),
            next_try=_dt(next_try) if next_try is not None else None,
            thumbnail_png=thumbnail,
            document_pdf=pdf,
        )
        return compose_fax_report(report, self.settings.compose)


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _attempt_text(a: Attempt) -> str:
    text = _CAUSE_TEXT[a.cause]
    return f"{text}: {a.reason}" if a.reason and a.cause is not Cause.OK else text


#: one ``display-name <addr-spec>`` entry of an address list header (the name may be quoted)
_NAME_ADDR: Final = re.compile(r'((?:"[^"]*"|[^,<>"])*)<([^<>]*)>')


def _to_name(data: bytes, address: str, addressing: GatewayAddressing) -> str | None:
    """The name the To/Cc headers give ``address`` (Outlook: the contact's name), if any."""
    # compat32 keeps the header text as written (policy.default would re-quote the local part)
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(data)
    try:
        values = [str(v) for v in (*headers.get_all("To", []), *headers.get_all("Cc", []))]
    except (ValueError, IndexError):
        return None
    for value in values:
        for m in _NAME_ADDR.finditer(value):
            if m.group(2).strip().casefold() != address.strip().casefold():
                continue
            found = parse_recipient(m.group(0).strip(), addressing)
            if found is not None and found.attention:
                return found.attention.encode("utf-8", "replace").decode("utf-8")
    return None
