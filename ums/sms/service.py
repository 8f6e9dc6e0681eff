"""The SMS service: texts in to the mailbox owner's mail, mail out as texts, with reports.

What it does
------------
:class:`SmsService` sits between one :class:`~ums.sms.transport.SmsTransport` (SIP MESSAGE or
SMPP, ``[sms] transport``) and the rest of the server:

* **In.**  A text for one of our numbers becomes a ``kind = "sms"`` record in the message index
  (the text in its ``meta``); the index commit is durable (SQLite ``synchronous=FULL``) before
  the transport answers the far end.  The server's ``announce`` hands the record to the delivery
  pipeline, which mails it to the owner with the sender's directory name.  ``did_prefixes``
  map full numbers (``+4989123456100``) to mailbox numbers (``100``).
* **Out.**  As an SMTP gateway handler (``claims`` / ``check_*`` / ``accept``, see
  :class:`~ums.mailgate.smtp_in.GatewayRouter`) it takes mail to ``NUMBER@sms.example.com``
  (and the other address forms of :func:`~ums.outbound.addresses.parse_recipient`) from the
  senders ``[fax_gateway]`` allows, refuses numbers of the deny list with a report, takes the text
  from the mail body (:func:`~ums.sms.text.sms_text_from_mail`: no quoted history, no signature)
  and writes one job per recipient (``<data_dir>/outbound/sms``) before SMTP says 250.  A runner
  submits due jobs through the transport, retries temporary failures, matches delivery receipts,
  and mails the sender one report when the job ends (delivered, sent, or failed).

How it works
------------
Job decisions are made by the pure :class:`~ums.sms.jobs.SmsScheduler`; job files by
:class:`~ums.store.fax_jobs.FaxJobStore`.  Blocking work (index, job files, report mail) runs
in worker threads.  At start the jobs on disk are restored: a job that was being submitted when
the process died is submitted again (a duplicate text is possible, a lost one is not).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

from ums.config import Config, Mailbox
from ums.log import kv
from ums.mailgate.mime import ComposeSettings
from ums.mailgate.sms_reports import compose_sms_report
from ums.mailgate.smtp_in import Reject
from ums.outbound.addresses import GatewayAddressing, SenderPolicy, bare_address, header_text
from ums.outbound.gateway import MailGateway, TaskRunner, create_jobs, gateway_addressing
from ums.outbound.numbers import DenyList, DialPlan, dial_string
from ums.outbound.policy import configured, deny_list, dial_plan, sender_policy
from ums.sms.jobs import SmsDecision, SmsJob, SmsRetryPolicy, SmsScheduler, SmsState, sms_report
from ums.sms.text import EmptySms, sms_text_from_mail
from ums.sms.transport import DeliveryReceipt, IncomingSms, OutgoingSms, SmsTransport, SubmitResult
from ums.store.fax_jobs import FaxJobStore, new_job_id
from ums.store.index import MessageIndex
from ums.store.models import MessageRecord, new_record

__all__ = ["SmsService", "SmsSettings", "sms_job_store"]

log = logging.getLogger("ums.sms")

ReportSender = Callable[[str, bytes], None]


@dataclass(frozen=True)
class SmsSettings:
    """Everything the service needs, built and checked (see :meth:`from_config`)."""

    addressing: GatewayAddressing
    senders: SenderPolicy
    plan: DialPlan
    deny: DenyList
    policy: SmsRetryPolicy
    compose: ComposeSettings
    #: our number shown to the recipient
    sender: str = ""
    max_chars: int = 1000
    max_concurrent: int = 4
    keep_days: float = 30.0
    did_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config, compose: ComposeSettings) -> SmsSettings:
        """``[sms]`` with the sender policy, deny list and dial plan of ``[fax_gateway]``."""
        s = config.sms
        return cls(
            addressing=gateway_addressing(config, "sms", "sms", s),
            senders=sender_policy(config),
            plan=dial_plan(config, dial_format="e164", outside_line=False),
            deny=deny_list(config),
            policy=configured(
                config,
                "sms",
                lambda: SmsRetryPolicy(intervals=s.retry_intervals, max_tries=s.max_tries, expire=s.expire),
            ),
            compose=compose,
            sender=s.sender,
            max_chars=s.max_chars,
            max_concurrent=s.max_concurrent,
            keep_days=s.keep_days,
            did_prefixes=s.did_prefixes,
        )


def sms_job_store(config: Config) -> FaxJobStore[SmsJob]:
    """Where the outbound SMS jobs live: ``<data_dir>/outbound/sms``."""
    return FaxJobStore(Path(config.server.data_dir) / "outbound" / "sms", SmsJob.from_json)


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


class SmsService(MailGateway):
    """SMS in and out.  ``start()`` once on the running loop, ``stop()`` once."""

    name = "sms"

    def __init__(
        self,
        settings: SmsSettings,
        store: FaxJobStore[SmsJob],
        transport: SmsTransport,
        send_report: ReportSender,
        *,
        index: MessageIndex,
        mailboxes: tuple[Mailbox, ...],
        domain: str,
        announce: Callable[[MessageRecord], None],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        authenticate: Callable[[str, str], bool] | None = None,
    ) -> None:
        super().__init__(settings, kind="SMS", authenticate=authenticate)
        self.settings = settings
        self.store = store
        self.transport = transport
        self.scheduler = SmsScheduler(settings.policy, max_concurrent=settings.max_concurrent)
        #: the transport reports delivery (SMPP); over SIP a 2xx is the end ("sent")
        self.receipts = transport.name == "smpp"
        self.index = index
        self.mailboxes = {mb.number: mb for mb in mailboxes}
        self.domain = domain
        self._announce = announce
        self._send_report = send_report
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._runner = TaskRunner(log, "sms", clock)

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self, *, run: bool = True) -> None:
        """Restore the jobs on disk, start the transport and (``run``) the runner."""
        self._runner.attach()
        jobs = await asyncio.to_thread(self.store.load_all)
        now = self._clock()
        restored = self.scheduler.restore(jobs, now)
        for job in restored.requeued:
            await asyncio.to_thread(self.store.save, job)
        for job in restored.finished:
            self._runner.spawn(self._finish(job))
        await self.transport.start(self.on_incoming, self.on_receipt)
        log.info(kv("sms.started", transport=self.transport.name, jobs=len(jobs)))
        if run:
            self._runner.start(self.tick, idle=self._idle, next_wakeup=self.scheduler.next_wakeup, name="sms")

    async def stop(self) -> None:
        await self._runner.stop()
        await self.transport.stop()
        log.info(kv("sms.stopped"))

    def _idle(self) -> float:
        """How long the runner sleeps with nothing due: a transport that is down is retried soon."""
        return 60.0 if self.transport.ready() else 1.0

    async def tick(self) -> None:
        """One step: receipt timeouts, pruning, and the submits that are due."""
        now = self._clock()
        for decision in self.scheduler.advance(now):
            await self._after(decision)
        await self._runner.prune(self.store, now, self.settings.keep_days)
        if not self.transport.ready():  # an SMSC that is down does not use up the tries
            return
        for job in self.scheduler.due(self._clock()):
            await asyncio.to_thread(self.store.save, job)
            self._runner.spawn(self._submit(job))

    async def drain(self) -> None:
        await self._runner.drain()

    def _take_new(self, jobs: list[SmsJob]) -> None:
        now = self._clock()
        for job in jobs:
            if job.is_final:
                self._runner.spawn(self._finish(job))
            else:
                self.scheduler.add(job, now)
        self._runner.wake()

    # -- numbers ---------------------------------------------------------------------------------

    def mailbox_number(self, number: str) -> str | None:
        """Our mailbox number for a number the far end wrote (exact, or after a DID prefix)."""
        text = number.strip()
        if text in self.mailboxes:
            return text
        digits = _digits(text)
        if digits in self.mailboxes:
            return digits
        for prefix in self.settings.did_prefixes:
            p = _digits(prefix)
            if p and digits.startswith(p) and digits[len(p) :] in self.mailboxes:
                return digits[len(p) :]
        return None

    # -- SMTP (RoutedHandler; the sender and recipient policy is MailGateway's) ------------------

    def accept(self, mail_from: str, rcpts: list[str], data: bytes, auth_user: str | None, peer: str) -> None:
        """One job per recipient, durable before return (runs in aiosmtpd's worker thread)."""
        headers = BytesHeaderParser(policy=policy.default).parsebytes(data)
        try:
            text = sms_text_from_mail(data, max_chars=self.settings.max_chars)
        except EmptySms as exc:
            raise Reject(554, str(exc)) from None
        now = self._clock()
        sender = bare_address(mail_from)
        targets = [self._recipient(rcpt) for rcpt in rcpts]
        jobs: list[SmsJob] = []
        for found, number in targets:
            refused = self.settings.deny.check(number)
            job = SmsJob(
                id=new_job_id(now, self._rng),
                created=now,
                mail_from=sender,
                number=found.number_text,
                dest=dial_string(number, self.settings.plan),
                text=text,
                sender=self.settings.sender,
                subject=header_text(headers, "Subject"),
                message_id=header_text(headers, "Message-ID"),
                transport=self.transport.name,
            )
            if refused is not None:
                job = replace(job, state=SmsState.FAILED, reason=refused, finished=now)
            jobs.append(job)
        create_jobs(self.store, jobs, data)
        for job, (_, number) in zip(jobs, targets, strict=True):
            log.info(
                kv(
                    "sms.job_created",
                    job=job.id,
                    number=number,
                    sender=sender,
                    peer=peer,
                    chars=len(text),
                    state=job.state.value,
                    reason=job.reason or None,
                )
            )
        self._runner.from_thread(lambda: self._take_new(jobs))

    # -- out -------------------------------------------------------------------------------------

    async def _submit(self, job: SmsJob) -> None:
        sms = OutgoingSms(job_id=job.id, sender=job.sender, to=job.dest, text=job.text)
        try:
            result = await self.transport.submit(sms)
        except Exception as exc:  # a transport bug must not lose the job
            log.exception(kv("sms.submit_error", job=job.id))
            result = SubmitResult(False, reason=f"server error: {exc!r}")
        log.info(
            kv(
                "sms.submitted",
                job=job.id,
                accepted=result.accepted,
                permanent=result.permanent or None,
                parts=result.parts,
                ids=",".join(result.message_ids) or None,
                reason=result.reason or None,
            )
        )
        decision = self.scheduler.submitted(job.id, result, self._clock(), receipts=self.receipts)
        await self._after(decision)

    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        decision = self.scheduler.receipt(receipt, self._clock())
        log.info(
            kv(
                "sms.receipt",
                id=receipt.message_id,
                status=receipt.status,
                job=decision.job.id if decision else None,
            )
        )
        if decision is not None:
            await self._after(decision)

    async def _after(self, decision: SmsDecision) -> None:
        job = decision.job
        await asyncio.to_thread(self.store.save, job)
        if job.is_final:
            await self._finish(job)
        self._runner.wake()

    async def _finish(self, job: SmsJob) -> None:
        """Report a finished job (once; a cancelled one gets none), then archive it."""
        if not job.reported and job.report_kind is not None:
            await asyncio.to_thread(self._report, job)
            job = job.mark_reported()
        await asyncio.to_thread(self.store.save, job)
        await asyncio.to_thread(self.store.archive, job.id, self._clock())
        log.info(kv("sms.finished", job=job.id, state=job.state.value, reason=job.reason or None))

    def _report(self, job: SmsJob) -> None:
        """Compose and send the report (blocking); failures are logged, never raised."""
        try:
            data = compose_sms_report(sms_report(job, self._clock()), self.settings.compose)
            self._send_report(job.mail_from, data)
            log.info(kv("sms.report_sent", job=job.id, kind=job.report_kind, to=job.mail_from))
        except Exception as exc:
            log.exception(
                kv("sms.report_lost", job=job.id, kind=job.report_kind, to=job.mail_from, error=repr(exc))
            )

    # -- in --------------------------------------------------------------------------------------

    async def on_incoming(self, sms: IncomingSms) -> None:
        """Store a text for its mailbox (durable on return), then hand it to delivery."""
        number = self.mailbox_number(sms.to)
        mailbox = self.mailboxes.get(number) if number is not None else None
        if mailbox is None:
            log.warning(kv("sms.no_mailbox", to=sms.to, sender=sms.sender, via=sms.via))
            raise LookupError(f"no mailbox for {sms.to}")
        record = new_record(
            now=datetime.fromtimestamp(self._clock(), UTC),
            rng=self._rng,
            domain=self.domain,
            mailbox=mailbox.number,
            owner=mailbox.owner,
            kind="sms",
            caller_number=sms.sender,
            # line breaks at the end are an artefact of the sender (SIPp, some gateways), not text
            meta={"text": sms.text.rstrip("\r\n"), "via": sms.via, "ref": sms.ref},
        )
        await asyncio.to_thread(self.index.add, record)
        log.info(
            kv(
                "sms.received",
                id=record.id,
                mailbox=mailbox.number,
                sender=sms.sender,
                via=sms.via,
                chars=len(sms.text),
            )
        )
        self._announce(record)
