"""Outbound SMS jobs: the job record, the retry policy and the scheduler that decides when to submit.

What it does
------------
An :class:`SmsJob` is one text mailed to ``NUMBER@sms.example.com``: who mailed it (the report
goes there), the number as written and as the transport dials it, the text, the subject and
Message-ID of the mail (the report threads under it), and every :class:`SmsTry` so far.
:class:`SmsScheduler` holds the jobs that still have work to do and answers the SMS shell:

* ``due(now)`` -- which jobs to submit now (each is marked ``SENDING``), at most
  ``max_concurrent`` at once;
* ``submitted(job_id, result, now, receipts)`` -- what the far end's answer to a submit means;
* ``receipt(receipt, now)`` -- what a delivery receipt means for the job it belongs to;
* ``advance(now)`` -- jobs that ran out of time (not sent within ``expire``, no receipt within
  ``receipt_timeout``);
* ``next_wakeup()`` -- when to call ``advance`` and ``due`` again.

Each answer is an :class:`SmsDecision`: the updated job (save it) and whether a report mail is
due (``"delivered"``, ``"sent"``, ``"failed"``; ``None``: no report).  ``cancel`` stops a job,
``restore`` takes back the jobs found on disk after a restart.  Jobs travel to disk as JSON
(``SmsJob.to_json`` / ``SmsJob.from_json``, field ``v`` is the format version) through
``FaxJobStore[SmsJob]`` (:mod:`ums.store.fax_jobs`), which keeps any job with an ``id`` and
``to_json()``.  :func:`sms_report` turns a finished job into the
:class:`~ums.mailgate.sms_reports.SmsReport` for the report mail.

Typical use by the SMS shell::

    sched = SmsScheduler(SmsRetryPolicy())
    restored = sched.restore(store.load_all(), now)     # save restored.requeued; report .finished
    sched.add(job, now)                                 # after store.create (then SMTP says 250)
    for decision in sched.advance(now): ...             # save decision.job; report if due
    for job in sched.due(now):                          # save each, then submit
        result = await transport.submit(OutgoingSms(job.id, job.sender, job.dest, job.text))
        decision = sched.submitted(job.id, result, now, receipts=True)   # save, report if due
    decision = sched.receipt(receipt, now)              # from on_receipt; None: no job matched

How it works
------------
States (:class:`SmsState`)::

    QUEUED --due--> SENDING --submitted: accepted, receipt expected--> SUBMITTED --receipt--> DELIVERED
       ^               |  \\--accepted, no receipt expected or no message id--> SENT       \\--> FAILED
       |               |---refused, permanent, or tries/expiry used up--> FAILED     timeout: SENT
       +---temporary---+                                          cancel: QUEUED -> CANCELLED

A refused submit that may succeed later (the far end said so: ``SubmitResult.permanent`` is
False, e.g. SMPP ``ESME_RTHROTTLED`` / ``ESME_RMSGQFUL`` or no connection) is retried after
``intervals[n - 1]`` seconds for the n-th try (the last interval repeats), spread by an
optional jitter derived from the job id and the try count (the same job always gets the same
times).  The job fails when ``max_tries`` submits were refused, or when the next try would
fall after ``created + expire``; a queued job still waiting at that time (a service that was
down for a day) fails in ``advance`` without being sent: a text that old is no longer news.

Delivery receipts (SMPP v3.4 §5.2.12 ``esm_class`` receipt, Appendix B ``stat`` words; SIP
IMDN, RFC 5438) are matched by the message ids that the accepted submit returned.  ``DELIVRD``
is delivered; ``UNDELIV``, ``REJECTD``, ``EXPIRED``, ``DELETED`` and ``UNKNOWN`` (and the IMDN
words ``failed``, ``forbidden``, ``error``) are final failures; ``ENROUTE``, ``ACCEPTD`` and
any word we do not know are not final (a word misread as pending costs a "sent" report after
``receipt_timeout``; misread as failure it would tell the sender a delivered text was lost).
A text sent in several parts (SMPP concatenation) has one message id per part and a receipt
for each: the job **fails as soon as any part has a failing receipt** (the recipient cannot
have the whole text, and no later receipt changes that), and is **delivered when every part
has ``DELIVRD``**.  Receipts are kept per part (``SmsJob.part_receipts``), so a restart
between the parts' receipts loses nothing.  A receipt that matches no job yet is kept for a
few minutes (an SMSC may send the receipt before the shell has recorded the submit's answer)
and applied when the matching ``submitted`` comes.

Restart: a job found ``SENDING`` was being submitted when the process died.  It goes back to
``QUEUED``, due now, with no try counted.  The submit may or may not have reached the far end
(the answer may have been lost with the process), so **the recipient may get the text twice**.
That is the lesser evil: the sender's mail was acknowledged with 250, so dropping the text
would lose a message we took, silently; a duplicate text is visible, harmless and rare, and
neither SIP MESSAGE nor SMPP ``submit_sm`` lets us ask the far end whether it has a submit we
never got an answer for (SMPP ``query_sm`` needs the message id we did not receive).  A job
``SENDING`` with a cancel requested is cancelled instead.

Pure: time comes in as ``now`` (seconds since the epoch); no clock, no I/O, no randomness.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from ums.log import kv
from ums.mailgate.sms_reports import SmsReport
from ums.sms.transport import DeliveryReceipt, SubmitResult

__all__ = [
    "FINAL_STATES",
    "FORMAT_VERSION",
    "ORPHAN_AGE",
    "ORPHAN_MAX",
    "TRANSPORTS",
    "ReceiptOutcome",
    "ReportDue",
    "SmsDecision",
    "SmsJob",
    "SmsJobFormatError",
    "SmsRestoreResult",
    "SmsRetryPolicy",
    "SmsScheduler",
    "SmsSchedulerError",
    "SmsState",
    "SmsTry",
    "UnknownSmsJobError",
    "receipt_outcome",
    "sms_report",
]

log = logging.getLogger("ums.sms.jobs")

#: version of the JSON written by :meth:`SmsJob.to_json`
FORMAT_VERSION: Final = 1
#: the transports a job may name
TRANSPORTS: Final = ("sip", "smpp")

ReportDue = Literal["delivered", "sent", "failed"]


class SmsState(StrEnum):
    QUEUED = "queued"  # waiting for its (next) submit at ``next_try``
    SENDING = "sending"  # handed out by ``due``: the submit is under way
    SUBMITTED = "submitted"  # accepted by the far end, waiting for a delivery receipt
    DELIVERED = "delivered"  # a receipt says it reached the phone
    SENT = "sent"  # accepted; no receipt expected, or none came within the receipt timeout
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES: Final = frozenset({SmsState.DELIVERED, SmsState.SENT, SmsState.FAILED, SmsState.CANCELLED})
_REPORT_OF: Final[Mapping[SmsState, ReportDue]] = {
    SmsState.DELIVERED: "delivered",
    SmsState.SENT: "sent",
    SmsState.FAILED: "failed",
}


class SmsJobFormatError(ValueError):
    """A job (or its JSON) with a missing or wrong field; the message names the field."""


class SmsSchedulerError(ValueError):
    """An operation the job's state does not allow (a submit answer for a job not SENDING, ...)."""


class UnknownSmsJobError(SmsSchedulerError):
    """No job with that id is in the scheduler (never added, or already finished)."""


# --------------------------------------------------------------------------------------------
# delivery receipt words

#: SMPP v3.4 Appendix B ``stat`` words (and RFC 5438 IMDN words) that end a text as not delivered
_FAILED_WORDS: Final = frozenset(
    {"UNDELIV", "REJECTD", "EXPIRED", "DELETED", "UNKNOWN", "FAILED", "FORBIDDEN", "ERROR"}
)
#: words for a text delivered to the phone
_DELIVERED_WORDS: Final = frozenset({"DELIVRD", "DELIVERED"})

ReceiptOutcome = Literal["delivered", "failed", "pending"]


def receipt_outcome(status: str, delivered: bool = False) -> ReceiptOutcome:
    """What a receipt's status word means: ``"delivered"``, ``"failed"`` or ``"pending"``.

    ``ENROUTE``, ``ACCEPTD`` and unknown words are pending; ``delivered`` (the transport's own
    reading) counts as delivered when the word is not a known failure.
    """
    word = status.strip().upper()
    if word in _FAILED_WORDS:
        return "failed"
    if word in _DELIVERED_WORDS or delivered:
        return "delivered"
    return "pending"


def _not_delivered(status: str, error: str) -> str:
    word = status.strip().upper() or "UNKNOWN"
    err = error.strip()
    return f"not delivered: {word}" + (f" err {err}" if err else "")


# --------------------------------------------------------------------------------------------
# retry policy


@dataclass(frozen=True)
class SmsRetryPolicy:
    """When to submit again after a temporary refusal, and when to give up.

    ``intervals`` (seconds) are the waits after the 1st, 2nd, ... refused submit; the last one
    repeats.  The defaults retry quickly (an SMSC that throttles or a connection that drops
    usually recovers within seconds to minutes) and stop after ``max_tries`` = 8 submits,
    about 48 minutes after the first.  ``expire``: a job not sent within this many seconds of
    its creation fails ("not sent within 24 hours").  ``receipt_timeout``: a job accepted
    without a delivery receipt for this long ends as ``SENT`` ("no delivery receipt"); SMSCs
    commonly keep undeliverable texts 24 to 48 hours before they give up and send ``EXPIRED``.
    ``jitter`` (0 = off, 0.1 = ±10 %) spreads retries of jobs that failed together; the offset
    comes from a hash of the job id and the try count, so it is reproducible.
    """

    intervals: tuple[float, ...] = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
    max_tries: int = 8
    expire: float = 24 * 3600.0
    receipt_timeout: float = 48 * 3600.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not self.intervals:
            raise ValueError("intervals must not be empty")
        for value in self.intervals:
            if isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"intervals must be finite numbers >= 0, got {value!r}")
        if self.max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {self.max_tries!r}")
        for name in ("expire", "receipt_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")

    def delay(self, job_id: str, tries: int) -> float:
        """Seconds to wait after the ``tries``-th refused submit (1-based)."""
        interval = self.intervals[min(max(tries, 1), len(self.intervals)) - 1]
        if not self.jitter:
            return interval
        digest = hashlib.sha256(f"{job_id}/{tries}".encode()).digest()
        unit = int.from_bytes(digest[:8], "big") / float(1 << 64)  # [0, 1)
        return interval * (1.0 + self.jitter * (2.0 * unit - 1.0))


# --------------------------------------------------------------------------------------------
# job record and JSON


@dataclass(frozen=True)
class SmsTry:
    """One submit and the far end's answer."""

    at: float
    accepted: bool
    #: refused, and sending the same text again cannot help
    permanent: bool = False
    #: the far end's words ("ESME_RTHROTTLED", "488 Not Acceptable Here", "timeout")
    reason: str = ""
    #: the far end's ids of an accepted submit (one per part for SMPP)
    message_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "accepted": self.accepted,
            "permanent": self.permanent,
            "reason": self.reason,
            "message_ids": list(self.message_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmsTry:
        if not isinstance(data, Mapping):
            raise SmsJobFormatError("each try must be a JSON object")
        return cls(
            at=_num(data, "at"),
            accepted=_bool(data, "accepted"),
            permanent=_bool(data, "permanent", False),
            reason=_str(data, "reason", ""),
            message_ids=_strs(data, "message_ids"),
        )


@dataclass(frozen=True)
class SmsJob:
    """One text to one number, and where it stands.  Immutable: changes make a new job."""

    id: str
    created: float
    #: mail address of whoever mailed the text: the report goes there
    mail_from: str
    #: the number as written in the address (``0151 2345678``, ``+491512345678``)
    number: str
    #: the destination as the transport dials it (after the dial plan)
    dest: str
    text: str
    #: our number or ident shown to the recipient ("" = the transport's default)
    sender: str = ""
    #: Subject and Message-ID of the mail (the report's In-Reply-To / References)
    subject: str = ""
    message_id: str = ""
    state: SmsState = SmsState.QUEUED
    tries: tuple[SmsTry, ...] = ()
    #: QUEUED: earliest time for the next submit (None = at once); otherwise None
    next_try: float | None = None
    #: far end ids of the accepted submit, one per part (SMPP) or one (SIP)
    message_ids: tuple[str, ...] = ()
    #: receipt status word per message id ("" = none yet), same order as ``message_ids``
    part_receipts: tuple[str, ...] = ()
    #: the status word that decided the job (DELIVRD, UNDELIV, ...), None before
    receipt: str | None = None
    #: why the job ended (or why the last submit was refused), in words
    reason: str = ""
    #: a cancel was asked for while the job was SENDING
    cancel_requested: bool = False
    #: when the job reached a final state
    finished: float | None = None
    #: the final report was handed over for delivery
    reported: bool = False
    #: "sip" or "smpp"
    transport: str = "smpp"

    def __post_init__(self) -> None:
        if not self.id:
            raise SmsJobFormatError("a job needs an id")
        if not self.dest:
            raise SmsJobFormatError(f"job {self.id}: no destination")
        if "@" not in self.mail_from:
            raise SmsJobFormatError(
                f"job {self.id}: mail_from must be an e-mail address, got {self.mail_from!r}"
            )
        if self.transport not in TRANSPORTS:
            raise SmsJobFormatError(
                f"job {self.id}: transport must be one of {TRANSPORTS}, got {self.transport!r}"
            )
        if self.part_receipts and len(self.part_receipts) != len(self.message_ids):
            raise SmsJobFormatError(f"job {self.id}: part_receipts must match message_ids")

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def report_kind(self) -> ReportDue | None:
        """The report a job in this state gets (``None``: not final, or cancelled)."""
        return _REPORT_OF.get(self.state)

    @property
    def submitted_at(self) -> float | None:
        """When the far end accepted the text (None: not yet)."""
        for t in reversed(self.tries):
            if t.accepted:
                return t.at
        return None

    def due_at(self) -> float:
        """When a QUEUED job may be submitted: ``next_try``, else its creation time."""
        return self.created if self.next_try is None else self.next_try

    def mark_reported(self) -> SmsJob:
        """The job with ``reported`` set (after the report mail was handed over)."""
        return replace(self, reported=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "id": self.id,
            "created": self.created,
            "mail_from": self.mail_from,
            "number": self.number,
            "dest": self.dest,
            "sender": self.sender,
            "text": self.text,
            "subject": self.subject,
            "message_id": self.message_id,
            "state": self.state.value,
            "tries": [t.to_dict() for t in self.tries],
            "next_try": self.next_try,
            "message_ids": list(self.message_ids),
            "part_receipts": list(self.part_receipts),
            "receipt": self.receipt,
            "reason": self.reason,
            "cancel_requested": self.cancel_requested,
            "finished": self.finished,
            "reported": self.reported,
            "transport": self.transport,
        }

    def to_json(self) -> str:
        """Stable JSON (sorted keys, one field per line) for ``job.json``."""
        try:
            text = json.dumps(self.to_dict(), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SmsJobFormatError(f"job {self.id} cannot be written as JSON: {exc}") from None
        return text + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmsJob:
        if not isinstance(data, Mapping):
            raise SmsJobFormatError("a job must be a JSON object")
        version = data.get("v")
        if type(version) is not int or version != FORMAT_VERSION:
            raise SmsJobFormatError(f"unknown SMS job format version {version!r} (expected {FORMAT_VERSION})")
        tries_raw = data.get("tries", [])
        if not isinstance(tries_raw, list):
            raise SmsJobFormatError("job field 'tries' must be a list")
        state_word = _str(data, "state")
        try:
            state = SmsState(state_word)
        except ValueError:
            raise SmsJobFormatError(f"job field 'state' has an unknown value {state_word!r}") from None
        return cls(
            id=_str(data, "id"),
            created=_num(data, "created"),
            mail_from=_str(data, "mail_from"),
            number=_str(data, "number"),
            dest=_str(data, "dest"),
            text=_str(data, "text"),
            sender=_str(data, "sender", ""),
            subject=_str(data, "subject", ""),
            message_id=_str(data, "message_id", ""),
            state=state,
            tries=tuple(SmsTry.from_dict(t) for t in tries_raw),
            next_try=_opt_num(data, "next_try"),
            message_ids=_strs(data, "message_ids"),
            part_receipts=_strs(data, "part_receipts"),
            receipt=None if data.get("receipt") is None else _str(data, "receipt"),
            reason=_str(data, "reason", ""),
            cancel_requested=_bool(data, "cancel_requested", False),
            finished=_opt_num(data, "finished"),
            reported=_bool(data, "reported", False),
            transport=_str(data, "transport"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SmsJob:
        """The job in ``text``; :class:`SmsJobFormatError` says what is wrong with it."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SmsJobFormatError(f"SMS job is not valid JSON: {exc}") from None
        return cls.from_dict(data)


_MISSING: Any = object()


def _field(data: Mapping[str, Any], key: str, default: Any) -> Any:
    value = data.get(key, default)
    if value is _MISSING:
        raise SmsJobFormatError(f"job field {key!r} is missing")
    return value


def _str(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> str:
    value = _field(data, key, default)
    if not isinstance(value, str):
        raise SmsJobFormatError(f"job field {key!r} must be text, got {value!r}")
    return value


def _num(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> float:
    value = _field(data, key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SmsJobFormatError(f"job field {key!r} must be a number, got {value!r}")
    return float(value)


def _opt_num(data: Mapping[str, Any], key: str) -> float | None:
    return None if data.get(key) is None else _num(data, key)


def _bool(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> bool:
    value = _field(data, key, default)
    if not isinstance(value, bool):
        raise SmsJobFormatError(f"job field {key!r} must be true or false, got {value!r}")
    return value


def _strs(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SmsJobFormatError(f"job field {key!r} must be a list of text")
    return tuple(value)


# --------------------------------------------------------------------------------------------
# report


def _dt(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def sms_report(job: SmsJob, now: float) -> SmsReport:
    """The report mail's content for a finished job (``report_kind`` not None) at ``now``."""
    kind = job.report_kind
    if kind is None:
        raise SmsSchedulerError(f"job {job.id} is {job.state.value}: no report")
    return SmsReport(
        kind=kind,
        job_id=job.id,
        recipient=job.mail_from,
        number=job.number,
        text=job.text,
        date=datetime.fromtimestamp(now, UTC),
        original_subject=job.subject,
        original_message_id=job.message_id,
        reason=job.reason,
        receipt=job.receipt or "",
        tries=len(job.tries),
        queued=datetime.fromtimestamp(job.created, UTC),
        submitted=_dt(job.submitted_at),
        finished=_dt(job.finished),
        parts=max(1, len(job.message_ids)),
    )


# --------------------------------------------------------------------------------------------
# scheduler


@dataclass(frozen=True)
class SmsDecision:
    """What an event meant for one job: ``job`` is the updated job to save.

    ``report`` says which report mail is due now (``None``: none).  A final job has left the
    scheduler; the shell reports it (then ``mark_reported``) and archives it.
    """

    job: SmsJob
    report: ReportDue | None
    reason: str

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def is_final(self) -> bool:
        return self.job.is_final


@dataclass(frozen=True)
class SmsRestoreResult:
    """What :meth:`SmsScheduler.restore` did with the jobs found on disk."""

    #: jobs that were SENDING and are queued again (save them)
    requeued: list[SmsJob] = field(default_factory=list)
    #: jobs already final (or cancelled while SENDING): not scheduled; report those not
    #: ``reported`` yet (``report_kind``), then archive them
    finished: list[SmsJob] = field(default_factory=list)


#: how long a receipt that matches no job is kept for a ``submitted`` still to come
ORPHAN_AGE: Final = 300.0
#: at most this many such receipts are kept (the oldest go first)
ORPHAN_MAX: Final = 1024


class SmsScheduler:
    """The texts still to be sent or confirmed, and when to submit which (pure; time passed in)."""

    def __init__(self, policy: SmsRetryPolicy | None = None, max_concurrent: int = 4) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent!r}")
        self.policy = policy if policy is not None else SmsRetryPolicy()
        self.max_concurrent = max_concurrent
        self._jobs: dict[str, SmsJob] = {}
        #: message id -> job id, for SUBMITTED jobs
        self._by_message: dict[str, str] = {}
        #: message id -> (arrival time, receipt) for receipts that matched no job
        self._orphans: OrderedDict[str, tuple[float, DeliveryReceipt]] = OrderedDict()

    # -- queries --------------------------------------------------------------------------

    def get(self, job_id: str) -> SmsJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownSmsJobError(f"no SMS job {job_id!r}") from None

    def active(self) -> list[SmsJob]:
        """All jobs in the scheduler (not final), in queue order."""
        return sorted(self._jobs.values(), key=_queue_key)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def next_wakeup(self) -> float | None:
        """Earliest time ``due`` or ``advance`` has something to do, or None.

        Queued jobs held back only by ``max_concurrent`` count with their expiry alone: they
        become startable when a submit ends, so the shell calls ``due`` after every
        ``submitted``.
        """
        free = self._sending() < self.max_concurrent
        times: list[float] = []
        for job in self._jobs.values():
            if job.state is SmsState.QUEUED:
                times.append(job.created + self.policy.expire)
                if free:
                    times.append(job.due_at())
            elif job.state is SmsState.SUBMITTED:
                times.append(self._receipt_deadline(job))
        return min(times) if times else None

    # -- changes --------------------------------------------------------------------------

    def add(self, job: SmsJob, now: float) -> None:
        """Take a new QUEUED job; it is due at ``job.next_try`` (None: at once)."""
        if job.id in self._jobs:
            raise SmsSchedulerError(f"SMS job {job.id} is already scheduled")
        if job.state is not SmsState.QUEUED:
            raise SmsSchedulerError(f"SMS job {job.id} is {job.state.value}, not queued")
        self._jobs[job.id] = job

    def due(self, now: float) -> list[SmsJob]:
        """Jobs to submit now, oldest due first, at most ``max_concurrent`` SENDING in all.

        Each returned job is SENDING (save it before the submit).  Jobs past their expiry are
        left for :meth:`advance`, which fails them.
        """
        room = self.max_concurrent - self._sending()
        started: list[SmsJob] = []
        for job in sorted(self._jobs.values(), key=_queue_key):
            if room <= 0:
                break
            if job.state is not SmsState.QUEUED or job.due_at() > now or self._expired(job, now):
                continue
            job = replace(job, state=SmsState.SENDING)
            self._jobs[job.id] = job
            started.append(job)
            room -= 1
        return started

    def submitted(self, job_id: str, result: SubmitResult, now: float, receipts: bool) -> SmsDecision:
        """Record the far end's answer to the submit of a SENDING job and decide what comes next.

        ``receipts``: a delivery receipt was asked for (``OutgoingSms.receipt``).  A text the far
        end accepted cannot be called back, so a cancel requested meanwhile does not change it.
        """
        job = self.get(job_id)
        if job.state is not SmsState.SENDING:
            raise SmsSchedulerError(f"SMS job {job_id} is {job.state.value}, not being submitted")
        ids = tuple(dict.fromkeys(i for i in result.message_ids if i)) if result.accepted else ()
        attempt = SmsTry(now, result.accepted, result.permanent and not result.accepted, result.reason, ids)
        job = replace(job, tries=(*job.tries, attempt), next_try=None)

        if result.accepted:
            if not receipts:
                return self._final(job, SmsState.SENT, "no delivery receipt was asked for", now)
            if not ids:
                return self._final(
                    job, SmsState.SENT, "the far end gave no message id to match a delivery receipt", now
                )
            job = replace(
                job, state=SmsState.SUBMITTED, message_ids=ids, part_receipts=("",) * len(ids), reason=""
            )
            self._jobs[job.id] = job
            for mid in ids:
                self._by_message[mid] = job.id
            decision = SmsDecision(job, None, "accepted; waiting for a delivery receipt")
            for mid in ids:
                early = self._orphans.pop(mid, None)
                if early is not None and now - early[0] <= ORPHAN_AGE and not decision.is_final:
                    decision = self._apply_receipt(decision.job, early[1], now)
            return decision

        reason = _refused(result.reason)
        if job.cancel_requested:
            return self._final(job, SmsState.CANCELLED, "cancelled", now)
        if result.permanent:
            return self._final(job, SmsState.FAILED, reason, now)
        n = len(job.tries)
        if n >= self.policy.max_tries:
            return self._final(
                job, SmsState.FAILED, f"not sent after {_plural(n, 'try', 'tries')}: {reason}", now
            )
        at = now + self.policy.delay(job.id, n)
        if at > job.created + self.policy.expire:
            return self._final(
                job, SmsState.FAILED, f"not sent within {_span(self.policy.expire)}: {reason}", now
            )
        job = replace(job, state=SmsState.QUEUED, next_try=at, reason=reason)
        self._jobs[job.id] = job
        return SmsDecision(job, None, f"{reason}; next try at {at:.0f}")

    def receipt(self, receipt: DeliveryReceipt, now: float) -> SmsDecision | None:
        """Apply a delivery receipt to the SUBMITTED job with its message id.

        Returns the updated job (save it; ``report`` is set when the receipt ended the job), or
        None when no job has that message id (kept a few minutes for a ``submitted`` still to
        come, then dropped).
        """
        mid = receipt.message_id
        job_id = self._by_message.get(mid)
        job = self._jobs.get(job_id) if job_id is not None else None
        if job is None or job.state is not SmsState.SUBMITTED:
            self._orphans.pop(mid, None)
            self._orphans[mid] = (now, receipt)
            while len(self._orphans) > ORPHAN_MAX:
                self._orphans.popitem(last=False)
            log.info(kv("sms.receipt_unmatched", message_id=mid, status=receipt.status))
            return None
        return self._apply_receipt(job, receipt, now)

    def cancel(self, job_id: str, now: float) -> SmsDecision:
        """Cancel a job: a QUEUED one at once; a SENDING one when its submit is refused.

        A SENDING job keeps going (the submit is on the wire); ``submitted`` then cancels it if
        the far end refused, or carries on if it accepted.  A SUBMITTED job cannot be cancelled:
        the far end has the text (:class:`SmsSchedulerError`).
        """
        job = self.get(job_id)
        if job.state is SmsState.QUEUED:
            return self._final(replace(job, cancel_requested=True), SmsState.CANCELLED, "cancelled", now)
        if job.state is SmsState.SENDING:
            job = replace(job, cancel_requested=True)
            self._jobs[job.id] = job
            return SmsDecision(
                job, None, "cancel requested; the text is being submitted and may still go out"
            )
        raise SmsSchedulerError(f"SMS job {job_id} was accepted by the far end; a text cannot be called back")

    def advance(self, now: float) -> list[SmsDecision]:
        """Jobs that ran out of time: QUEUED past ``expire`` fail, SUBMITTED past
        ``receipt_timeout`` end as SENT.  In queue order."""
        decisions: list[SmsDecision] = []
        for job in sorted(self._jobs.values(), key=_queue_key):
            if job.state is SmsState.QUEUED and self._expired(job, now):
                why = f"not sent within {_span(self.policy.expire)}"
                if job.reason:
                    why += f": {job.reason}"
                decisions.append(self._final(job, SmsState.FAILED, why, now))
            elif job.state is SmsState.SUBMITTED and now >= self._receipt_deadline(job):
                decisions.append(self._final(job, SmsState.SENT, _no_receipt(job, self.policy), now))
        return decisions

    def restore(self, jobs: Iterable[SmsJob], now: float) -> SmsRestoreResult:
        """Take the jobs found on disk at start-up (see "Restart" in the module docstring)."""
        result = SmsRestoreResult()
        for job in sorted(jobs, key=_queue_key):
            if job.id in self._jobs:
                raise SmsSchedulerError(f"SMS job {job.id} is already scheduled")
            if job.is_final:
                result.finished.append(job)
                continue
            if job.state is SmsState.SENDING:
                if job.cancel_requested:
                    job = replace(job, state=SmsState.CANCELLED, reason="cancelled", finished=now)
                    result.finished.append(job)
                    continue
                job = replace(job, state=SmsState.QUEUED, next_try=now)
                result.requeued.append(job)
                log.warning(kv("sms.requeued_after_restart", job=job.id, dest=job.dest))
            self._jobs[job.id] = job
            if job.state is SmsState.SUBMITTED:
                for mid in job.message_ids:
                    self._by_message[mid] = job.id
        return result

    # -- internals ------------------------------------------------------------------------

    def _sending(self) -> int:
        return sum(job.state is SmsState.SENDING for job in self._jobs.values())

    def _expired(self, job: SmsJob, now: float) -> bool:
        return now >= job.created + self.policy.expire

    def _receipt_deadline(self, job: SmsJob) -> float:
        return (job.submitted_at or job.created) + self.policy.receipt_timeout

    def _apply_receipt(self, job: SmsJob, receipt: DeliveryReceipt, now: float) -> SmsDecision:
        word = receipt.status.strip().upper() or ("DELIVRD" if receipt.delivered else "UNKNOWN")
        parts = list(job.part_receipts) or [""] * len(job.message_ids)
        index = job.message_ids.index(receipt.message_id)
        if receipt_outcome(parts[index]) != "pending":
            return SmsDecision(job, None, f"duplicate receipt {word} ignored")
        parts[index] = word if receipt_outcome(word, receipt.delivered) != "delivered" else "DELIVRD"
        job = replace(job, part_receipts=tuple(parts))
        outcome = receipt_outcome(word, receipt.delivered)
        if outcome == "failed":
            job = replace(job, receipt=word)
            reason = _not_delivered(word, receipt.error)
            if len(parts) > 1:
                reason += f" (part {index + 1} of {len(parts)})"
            return self._final(job, SmsState.FAILED, reason, now)
        if all(p == "DELIVRD" for p in parts):
            return self._final(replace(job, receipt="DELIVRD"), SmsState.DELIVERED, "delivered", now)
        self._jobs[job.id] = job
        done = sum(p == "DELIVRD" for p in parts)
        if outcome == "delivered":
            return SmsDecision(job, None, f"part {index + 1} of {len(parts)} delivered ({done} so far)")
        return SmsDecision(job, None, f"receipt {word}: not final yet")

    def _final(self, job: SmsJob, state: SmsState, reason: str, now: float) -> SmsDecision:
        job = replace(job, state=state, reason=reason, finished=now, next_try=None)
        self._jobs.pop(job.id, None)
        for mid in job.message_ids:
            if self._by_message.get(mid) == job.id:
                del self._by_message[mid]
        log.info(kv("sms.job_final", job=job.id, state=state.value, reason=reason, tries=len(job.tries)))
        return SmsDecision(job, _REPORT_OF.get(state), reason)


def _queue_key(job: SmsJob) -> tuple[float, float, str]:
    return (job.due_at(), job.created, job.id)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _span(seconds: float) -> str:
    """``86400`` -> ``"24 hours"``, ``90`` -> ``"90 seconds"``, ``600`` -> ``"10 minutes"``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return _plural(int(seconds // 3600), "hour", "hours")
    if seconds >= 60 and seconds % 60 == 0:
        return _plural(int(seconds // 60), "minute", "minutes")
    return _plural(round(seconds), "second", "seconds")


def _refused(reason: str) -> str:
    reason = " ".join(reason.split())
    return f"the SMS network refused it ({reason})" if reason else "the SMS network refused it"


def _no_receipt(job: SmsJob, policy: SmsRetryPolicy) -> str:
    reason = f"no delivery receipt within {_span(policy.receipt_timeout)}"
    parts = job.part_receipts
    done = sum(p == "DELIVRD" for p in parts)
    if len(parts) > 1 and done:
        reason += f" for {len(parts) - done} of {len(parts)} parts"
    return reason
