"""Outbound fax jobs: the job record, the retry policy and the scheduler that decides when to dial.

What it does
------------
A :class:`Job` is one fax to one number: who asked for it, how many pages it has, which page a
retry resumes from, and every :class:`Attempt` made so far.  :class:`Scheduler` holds the jobs
that still have work to do and answers three questions for the shell that places the calls:

* ``due(now)`` -- which jobs to dial now (each is marked ``ACTIVE`` and its dial counted);
* ``finished(job_id, attempt, now)`` -- what to do after a call: a :class:`Decision` that the job
  is ``DONE``, will ``RETRY`` at a given time, ``FAILED`` (with a reason a person understands) or
  was ``CANCELLED``;
* ``next_wakeup()`` -- when to ask ``due`` again.

``cancel`` stops a job, ``restore`` takes back the jobs found on disk after a restart.
Jobs travel to disk as JSON (``Job.to_json`` / ``Job.from_json``, field ``v`` is the format
version); :mod:`ums.store.fax_jobs` stores them.

Typical use by the outbound shell::

    sched = Scheduler(RetryPolicy(), limits={"trunk1": 2})
    sched.restore(store.load_all(), now)          # after a restart
    sched.add(job, now)                           # after FaxJobStore.create (then SMTP says 250)
    for job in sched.due(now):                    # save each, then place the call
        ...
    decision = sched.finished(job.id, Attempt(start, end, Cause.BUSY), now)   # save decision.job

How it works
------------
Vocabulary follows HylaFAX (``faxq``, ``sendfax(1)``, ``hylafax-config(5)``): a *dial* is every
call placed; a *try* is a call a fax machine answered, so that T.30 started (``OK`` or
``LINE_ERROR``).  ``max_dials`` bounds all calls, ``max_tries`` bounds the tries that end on the
same page (HylaFAX's ``MaxTries``: "3 consecutive attempts to send a particular page fail"), so
a long fax on a poor line that confirms a few pages on each call keeps going; every page that
was confirmed (``Attempt.pages_sent``) moves ``Job.next_page`` on and a retry resumes there.

Each :class:`Cause` of a failed call has its own retry interval and, optionally, its own limit
(see :class:`RetryPolicy` for the values and why).  After a call the decision is, in order:

1. ``OK`` -> ``DONE`` (even if a cancel arrived while the fax went through);
2. a cancel requested during the call, or ``CANCELLED`` -> ``CANCELLED``;
3. ``REJECTED`` (a final SIP answer such as 404, 484, 403, 488) -> ``FAILED`` at once;
4. any limit reached (the cause's own limit, ``max_tries`` on the current page, ``max_dials``)
   -> ``FAILED``;
5. otherwise ``RETRY`` at ``now + interval(cause)``, spread by an optional jitter that is
   derived from the job id and the dial count (the same job always gets the same times).

``CONGESTION`` (503, no channel free at the PBX) is a call that never left our side: it is
counted in ``dials`` but not against ``max_dials`` (it has its own limit), like HylaFAX, which
does not count a dial while no modem is free.

Concurrency: at most ``limits[account]`` (else ``default_limit``) calls per SIP account and at
most ``per_number`` calls to the same number at once (HylaFAX ``MaxConcurrentCalls`` = 1: a
second call to a single fax line would only be busy).  Jobs wait in FIFO order by
``not_before``, then ``created``, then id.  Finished jobs leave the scheduler with their
decision; the shell reports them and archives them.

Restart: a job found ``ACTIVE`` was in, or just before, a call when the process died.  It goes
back to ``QUEUED``, due now, with no try counted (the dial already counted stays counted, so a
job that crashes the process on every call ends at ``max_dials``).  It is dialled once: it is
``ACTIVE`` again from ``due`` until its ``finished``.

Pure: time comes in as ``now`` (seconds since the epoch); no clock, no I/O, no randomness.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

__all__ = [
    "FORMAT_VERSION",
    "Action",
    "Attempt",
    "Cause",
    "Decision",
    "Job",
    "JobFormatError",
    "JobState",
    "RestoreResult",
    "RetryPolicy",
    "Scheduler",
    "SchedulerError",
    "UnknownJobError",
]

#: version of the JSON written by :meth:`Job.to_json`
FORMAT_VERSION = 1


class Cause(StrEnum):
    """How one call attempt ended."""

    OK = "ok"  # every remaining page confirmed (T.30 MCF on the last page)
    BUSY = "busy"  # SIP 486/600 or a busy tone
    NO_ANSWER = "no_answer"  # rang out (480/408 or our own ring timeout)
    NOT_FAX = "not_fax"  # answered, but no fax: no CED / DIS (T.30 T1 expired)
    LINE_ERROR = "line_error"  # T.30 started and failed: page not confirmed, DCN, training failed
    REJECTED = "rejected"  # a final answer that will not change (404, 484, 403, 488): no retry
    CONGESTION = "congestion"  # 503, no channel free: retry soon
    CANCELLED = "cancelled"  # stopped on request


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for its first call (or its send_at time)
    SLEEPING = "sleeping"  # waiting to retry
    ACTIVE = "active"  # handed out by ``due``: the call is being placed or runs
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
_WAITING = frozenset({JobState.QUEUED, JobState.SLEEPING})
#: causes of a call that a fax machine answered (HylaFAX counts these as tries)
_TRY_CAUSES = frozenset({Cause.OK, Cause.LINE_ERROR})


class Action(StrEnum):
    """What :meth:`Scheduler.finished` or :meth:`Scheduler.cancel` decided."""

    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: cancel of an ACTIVE job: hang up; the final decision comes from ``finished``
    STOPPING = "stopping"


class JobFormatError(ValueError):
    """A job (or its JSON) with a missing or wrong field; the message names the field."""


class SchedulerError(ValueError):
    """An operation the job's state does not allow (finishing a job that is not ACTIVE, ...)."""


class UnknownJobError(SchedulerError):
    """No job with that id is in the scheduler (never added, or already finished)."""


# --------------------------------------------------------------------------------------------
# retry policy


#: causes that are retried (the others end the job)
_RETRY_CAUSES = (Cause.BUSY, Cause.NO_ANSWER, Cause.NOT_FAX, Cause.LINE_ERROR, Cause.CONGESTION)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry intervals (seconds) and limits per cause, and the overall limits.

    Defaults follow the values documented in ``hylafax-config(5)`` and ``sendfax(1)``:

    * BUSY: 180 s (``JobReqBusy``), limited by ``max_dials``.
    * NO_ANSWER: 300 s (``JobReqNoAnswer``, ``JobReqNoCarrier``), limited by ``max_dials``.
    * NOT_FAX: 300 s (``JobReqNoFCon``, ``JobReqDataConn``), at most 2 calls.  HylaFAX rejects a
      job once the far end "appears not to be a facsimile machine" (``NoCarrierRetrys`` = 1, so
      two calls); ringing a person twelve times is worse than a failure report.
    * LINE_ERROR: 60 s (``JobReqProto``): a fax machine is there, call back soon; limited by
      ``max_tries`` on the same page.
    * CONGESTION: 60 s, at most 30 calls (half an hour), not counted against ``max_dials``.
      HylaFAX has no such cause (it waits for a free modem without dialling); a 503 from our
      own PBX means the same: no channel free yet.

    ``max_tries`` = 3 (HylaFAX ``MaxTries``) and ``max_dials`` = 12 (HylaFAX ``MaxDials``, the
    ``sendfax -T`` default).  So a busy number is called for about 35 minutes, a number that
    does not answer for about an hour, a fax machine that fails on the same page three times
    ends the job.  HylaFAX's compiled-in fallbacks are longer (5 min busy, 15 min otherwise);
    the documented values suit a PBX gateway whose users wait for the report.

    ``jitter`` (0 = off, 0.1 = ±10 %) spreads retries of jobs that failed together; the offset
    comes from a hash of the job id and its dial count, so it is reproducible.  A limit of
    ``None`` means only ``max_tries``/``max_dials`` apply.  A job may override ``max_tries`` and
    ``max_dials`` in its ``options`` (like ``sendfax -t`` / ``-T``).
    """

    busy_interval: float = 180.0
    busy_max: int | None = None
    no_answer_interval: float = 300.0
    no_answer_max: int | None = None
    not_fax_interval: float = 300.0
    not_fax_max: int | None = 2
    line_error_interval: float = 60.0
    line_error_max: int | None = None
    congestion_interval: float = 60.0
    congestion_max: int | None = 30
    max_tries: int = 3
    max_dials: int = 12
    jitter: float = 0.0

    def __post_init__(self) -> None:
        for cause in _RETRY_CAUSES:
            interval, limit = self.rule(cause)
            if not (math.isfinite(interval) and interval >= 0):
                raise ValueError(f"{cause.value}_interval must be a finite number >= 0, got {interval!r}")
            if limit is not None and limit < 1:
                raise ValueError(f"{cause.value}_max must be >= 1 or None, got {limit!r}")
        if self.max_tries < 1 or self.max_dials < 1:
            raise ValueError("max_tries and max_dials must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")

    def rule(self, cause: Cause) -> tuple[float, int | None]:
        """``(interval, limit)`` for a cause that is retried."""
        if cause not in _RETRY_CAUSES:
            raise ValueError(f"{cause.value} is not retried")
        prefix = cause.value
        interval: float = getattr(self, f"{prefix}_interval")
        limit: int | None = getattr(self, f"{prefix}_max")
        return interval, limit

    def delay(self, cause: Cause, job_id: str, dials: int) -> float:
        """Seconds to wait before the next call after a call that ended with ``cause``."""
        interval, _ = self.rule(cause)
        if not self.jitter:
            return interval
        digest = hashlib.sha256(f"{job_id}/{dials}".encode()).digest()
        unit = int.from_bytes(digest[:8], "big") / float(1 << 64)  # [0, 1)
        return interval * (1.0 + self.jitter * (2.0 * unit - 1.0))


# --------------------------------------------------------------------------------------------
# job record and JSON


@dataclass(frozen=True)
class Attempt:
    """One call: when, how it ended, how many pages the far end confirmed in it."""

    start: float
    end: float
    cause: Cause
    #: pages confirmed during this call, counted from the job's ``next_page`` when it started
    pages_sent: int = 0
    #: the T.30 / SIP reason in words ("no MCF for page 3", "486 Busy Here")
    reason: str = ""
    #: the far end's identification (T.30 CSI)
    remote_csid: str = ""
    #: signalling rate of the last page, bit/s (0 = unknown)
    rate: int = 0
    #: final SIP status of the INVITE (0 = none)
    sip_code: int = 0
    #: "t38" or "g711" ("" = no fax session)
    transport: str = ""

    def __post_init__(self) -> None:
        if self.pages_sent < 0:
            raise JobFormatError(f"pages_sent must be >= 0, got {self.pages_sent}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "cause": self.cause.value,
            "pages_sent": self.pages_sent,
            "reason": self.reason,
            "remote_csid": self.remote_csid,
            "rate": self.rate,
            "sip_code": self.sip_code,
            "transport": self.transport,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(
            start=_num(data, "start"),
            end=_num(data, "end"),
            cause=_enum(Cause, data, "cause"),
            pages_sent=_int(data, "pages_sent", 0),
            reason=_str(data, "reason", ""),
            remote_csid=_str(data, "remote_csid", ""),
            rate=_int(data, "rate", 0),
            sip_code=_int(data, "sip_code", 0),
            transport=_str(data, "transport", ""),
        )


#: ``options`` keys that override the policy; each must be an int >= 1
OPTION_LIMITS = ("max_tries", "max_dials")


@dataclass
class Job:
    """One fax to one number, and where it stands."""

    id: str
    number: str  # E.164, "+4989123456"
    dial: str  # what to dial on the account (digits, maybe a prefix)
    sender: str  # mail address the reports go to
    pages: int  # total pages (cover included)
    created: float
    account: str = ""  # SIP account to call through ("" = the default)
    next_page: int = 1  # first page not yet confirmed (1-based); pages + 1 when all are
    state: JobState = JobState.QUEUED
    not_before: float = 0.0  # earliest time for the next call (send_at, then retry time)
    tries: int = 0  # calls a fax machine answered (T.30 started)
    dials: int = 0  # all calls placed
    attempts: list[Attempt] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # notify, resolution, max_tries, ...
    final_reason: str = ""
    cancel_requested: bool = False
    finished: float | None = None  # when it reached a final state

    def __post_init__(self) -> None:
        if not self.id:
            raise JobFormatError("a job needs an id")
        if self.pages < 1:
            raise JobFormatError(f"a job needs at least one page, got {self.pages}")
        if not 1 <= self.next_page <= self.pages + 1:
            raise JobFormatError(f"next_page {self.next_page} outside 1..{self.pages + 1}")
        if self.tries < 0 or self.dials < 0:
            raise JobFormatError("tries and dials must be >= 0")
        for key in OPTION_LIMITS:
            value = self.options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise JobFormatError(f"option {key} must be a whole number >= 1, got {value!r}")

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def pages_done(self) -> int:
        """Pages the far end has confirmed so far."""
        return self.next_page - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "id": self.id,
            "account": self.account,
            "number": self.number,
            "dial": self.dial,
            "sender": self.sender,
            "pages": self.pages,
            "next_page": self.next_page,
            "state": self.state.value,
            "not_before": self.not_before,
            "tries": self.tries,
            "dials": self.dials,
            "attempts": [a.to_dict() for a in self.attempts],
            "created": self.created,
            "options": self.options,
            "final_reason": self.final_reason,
            "cancel_requested": self.cancel_requested,
            "finished": self.finished,
        }

    def to_json(self) -> str:
        """Stable JSON (sorted keys, one field per line) for ``job.json``."""
        try:
            text = json.dumps(self.to_dict(), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise JobFormatError(f"job {self.id} cannot be written as JSON: {exc}") from None
        return text + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        if not isinstance(data, Mapping):
            raise JobFormatError("a job must be a JSON object")
        version = data.get("v")
        if type(version) is not int or version != FORMAT_VERSION:
            raise JobFormatError(f"unknown job format version {version!r} (expected {FORMAT_VERSION})")
        attempts_raw = data.get("attempts", [])
        if not isinstance(attempts_raw, list) or not all(isinstance(a, Mapping) for a in attempts_raw):
            raise JobFormatError("attempts must be a list of objects")
        options = data.get("options", {})
        if not isinstance(options, dict):
            raise JobFormatError("options must be an object")
        finished = data.get("finished")
        return cls(
            id=_str(data, "id"),
            account=_str(data, "account", ""),
            number=_str(data, "number"),
            dial=_str(data, "dial"),
            sender=_str(data, "sender"),
            pages=_int(data, "pages"),
            next_page=_int(data, "next_page", 1),
            state=_enum(JobState, data, "state"),
            not_before=_num(data, "not_before", 0.0),
            tries=_int(data, "tries", 0),
            dials=_int(data, "dials", 0),
            attempts=[Attempt.from_dict(a) for a in attempts_raw],
            created=_num(data, "created"),
            options=dict(options),
            final_reason=_str(data, "final_reason", ""),
            cancel_requested=_bool(data, "cancel_requested", False),
            finished=None if finished is None else _num(data, "finished"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """The job in ``text``; :class:`JobFormatError` says what is wrong with it."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise JobFormatError(f"job is not valid JSON: {exc}") from None
        return cls.from_dict(data)


_MISSING: Any = object()
_E = TypeVar("_E", bound=StrEnum)


def _field(data: Mapping[str, Any], key: str, default: Any) -> Any:
    value = data.get(key, default)
    if value is _MISSING:
        raise JobFormatError(f"job field {key!r} is missing")
    return value


def _str(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> str:
    value = _field(data, key, default)
    if not isinstance(value, str):
        raise JobFormatError(f"job field {key!r} must be text, got {value!r}")
    return value


def _int(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> int:
    value = _field(data, key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobFormatError(f"job field {key!r} must be a whole number, got {value!r}")
    return value


def _num(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> float:
    value = _field(data, key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JobFormatError(f"job field {key!r} must be a number, got {value!r}")
    return float(value)


def _bool(data: Mapping[str, Any], key: str, default: Any = _MISSING) -> bool:
    value = _field(data, key, default)
    if not isinstance(value, bool):
        raise JobFormatError(f"job field {key!r} must be true or false, got {value!r}")
    return value


def _enum(kind: type[_E], data: Mapping[str, Any], key: str) -> _E:
    value = _field(data, key, _MISSING)
    try:
        return kind(value)
    except ValueError:
        raise JobFormatError(f"job field {key!r} has an unknown value {value!r}") from None


# --------------------------------------------------------------------------------------------
# scheduler


@dataclass(frozen=True)
class Decision:
    """The outcome of a call (or a cancel) for one job; ``job`` is the updated job to save."""

    job_id: str
    action: Action
    reason: str
    job: Job
    #: RETRY: when the next call may start
    at: float | None = None

    @property
    def is_final(self) -> bool:
        return self.action in (Action.DONE, Action.FAILED, Action.CANCELLED)


@dataclass(frozen=True)
class RestoreResult:
    """What :meth:`Scheduler.restore` did with the jobs found on disk."""

    #: jobs that were ACTIVE and are queued again (save them)
    requeued: list[Job]
    #: jobs already in a final state, or cancelled during the call the crash ended: not scheduled;
    #: the shell reports them (if not done yet) and archives them
    finished: list[Job]


_CAUSE_WORDS = {
    Cause.BUSY: "busy",
    Cause.NO_ANSWER: "no answer",
    Cause.NOT_FAX: "no fax machine answered",
    Cause.CONGESTION: "no line free",
    Cause.LINE_ERROR: "line error",
    Cause.REJECTED: "rejected",
    Cause.CANCELLED: "cancelled",
    Cause.OK: "sent",
}


class Scheduler:
    """The jobs still to be sent, and when to dial which (pure; time passed in)."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        limits: Mapping[str, int] | None = None,
        default_limit: int = 1,
        per_number: int = 1,
    ) -> None:
        self.policy = policy if policy is not None else RetryPolicy()
        self.limits = dict(limits or {})
        if default_limit < 1 or per_number < 1 or any(v < 1 for v in self.limits.values()):
            raise ValueError("concurrency limits must be >= 1")
        self.default_limit = default_limit
        self.per_number = per_number
        self._jobs: dict[str, Job] = {}

    # -- queries --------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJobError(f"no job {job_id!r}") from None

    def jobs(self) -> list[Job]:
        """All jobs in the scheduler, in queue order."""
        return sorted(self._jobs.values(), key=_queue_key)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def limit_for(self, account: str) -> int:
        return self.limits.get(account, self.default_limit)

    def next_wakeup(self) -> float | None:
        """Earliest ``not_before`` of a waiting job that a free line could take, or None.

        Jobs held back only by a concurrency limit are not counted: they become startable when
        a call finishes, so the shell calls ``due`` after every ``finished``.
        """
        accounts, numbers = self._busy_lines()
        times = [
            job.not_before
            for job in self._jobs.values()
            if job.state in _WAITING and self._has_line(job, accounts, numbers)
        ]
        return min(times) if times else None

    # -- changes --------------------------------------------------------------------------

    def add(self, job: Job, now: float) -> None:
        """Take a new (or re-read) waiting job; its first call is at ``job.not_before``."""
        if job.id in self._jobs:
            raise SchedulerError(f"job {job.id} is already scheduled")
        if job.state not in _WAITING:
            raise SchedulerError(f"job {job.id} is {job.state.value}, not waiting")
        self._jobs[job.id] = job

    def due(self, now: float) -> list[Job]:
        """Jobs to call now, FIFO, within the limits; each becomes ACTIVE with one more dial."""
        accounts, numbers = self._busy_lines()
        started: list[Job] = []
        for job in sorted(self._jobs.values(), key=_queue_key):
            if job.state not in _WAITING or job.not_before > now:
                continue
            if not self._has_line(job, accounts, numbers):
                continue
            job.state = JobState.ACTIVE
            job.dials += 1
            accounts[job.account] = accounts.get(job.account, 0) + 1
            numbers[job.number] = numbers.get(job.number, 0) + 1
            started.append(job)
        return started

    def finished(self, job_id: str, attempt: Attempt, now: float) -> Decision:
        """Record a finished call of an ACTIVE job and decide what comes next."""
        job = self.get(job_id)
        if job.state is not JobState.ACTIVE:
            raise SchedulerError(f"job {job_id} is {job.state.value}, not in a call")
        job.attempts.append(attempt)
        if attempt.cause in _TRY_CAUSES:
            job.tries += 1
        job.next_page = min(job.pages + 1, job.next_page + attempt.pages_sent)

        if attempt.cause is Cause.OK:
            job.next_page = job.pages + 1
            return self._final(job, Action.DONE, f"sent {job.pages} page{'s' if job.pages != 1 else ''}", now)
        if job.cancel_requested or attempt.cause is Cause.CANCELLED:
            return self._final(job, Action.CANCELLED, _cancel_reason(job), now)
        if attempt.cause is Cause.REJECTED:
            return self._final(job, Action.FAILED, _rejected_reason(attempt), now)

        if self._exhausted(job, attempt.cause):
            return self._final(job, Action.FAILED, _failure_reason(job, attempt), now)

        at = now + self.policy.delay(attempt.cause, job.id, job.dials)
        job.state = JobState.SLEEPING
        job.not_before = at
        return Decision(job.id, Action.RETRY, _retry_reason(job, attempt), job, at)

    def cancel(self, job_id: str, now: float) -> Decision:
        """Cancel a job: a waiting one at once; an ACTIVE one is marked (``STOPPING``).

        For ``STOPPING`` the shell hangs up; the call's ``finished`` then returns the final
        decision (``CANCELLED``, or ``DONE`` if the last page was confirmed meanwhile).
        """
        job = self.get(job_id)
        if job.state is JobState.ACTIVE:
            job.cancel_requested = True
            return Decision(job.id, Action.STOPPING, "cancel requested; stopping the call", job)
        job.cancel_requested = True
        return self._final(job, Action.CANCELLED, _cancel_reason(job), now)

    def restore(self, jobs: Iterable[Job], now: float) -> RestoreResult:
        """Take the jobs found on disk at start-up (see the module docstring)."""
        requeued: list[Job] = []
        finished: list[Job] = []
        for job in sorted(jobs, key=_queue_key):
            if job.id in self._jobs:
                raise SchedulerError(f"job {job.id} is already scheduled")
            if job.is_final:
                finished.append(job)
                continue
            if job.state is JobState.ACTIVE:
                if job.cancel_requested:
                    job.state = JobState.CANCELLED
                    job.final_reason = _cancel_reason(job)
                    job.finished = now
                    finished.append(job)
                    continue
                job.state = JobState.QUEUED
                job.not_before = min(job.not_before, now)
                requeued.append(job)
            self._jobs[job.id] = job
        return RestoreResult(requeued, finished)

    # -- internals ------------------------------------------------------------------------

    def _busy_lines(self) -> tuple[dict[str, int], dict[str, int]]:
        accounts: dict[str, int] = {}
        numbers: dict[str, int] = {}
        for job in self._jobs.values():
            if job.state is JobState.ACTIVE:
                accounts[job.account] = accounts.get(job.account, 0) + 1
                numbers[job.number] = numbers.get(job.number, 0) + 1
        return accounts, numbers

    def _has_line(self, job: Job, accounts: Mapping[str, int], numbers: Mapping[str, int]) -> bool:
        return (
            accounts.get(job.account, 0) < self.limit_for(job.account)
            and numbers.get(job.number, 0) < self.per_number
        )

    def _exhausted(self, job: Job, cause: Cause) -> bool:
        _, cause_limit = self.policy.rule(cause)
        if cause_limit is not None and sum(a.cause is cause for a in job.attempts) >= cause_limit:
            return True
        max_tries = int(job.options.get("max_tries", self.policy.max_tries))
        if _tries_on_current_page(job) >= max_tries:
            return True
        max_dials = int(job.options.get("max_dials", self.policy.max_dials))
        counted = sum(a.cause is not Cause.CONGESTION for a in job.attempts)
        return cause is not Cause.CONGESTION and counted >= max_dials

    def _final(self, job: Job, action: Action, reason: str, now: float) -> Decision:
        job.state = {
            Action.DONE: JobState.DONE,
            Action.FAILED: JobState.FAILED,
            Action.CANCELLED: JobState.CANCELLED,
        }[action]
        job.final_reason = reason
        job.finished = now
        self._jobs.pop(job.id, None)
        return Decision(job.id, action, reason, job)


def _queue_key(job: Job) -> tuple[float, float, str]:
    return (job.not_before, job.created, job.id)


def _tries_on_current_page(job: Job) -> int:
    """Tries since (and including) the last one that confirmed a page: HylaFAX's "ntries"."""
    count = 0
    for attempt in reversed(job.attempts):
        if attempt.cause in _TRY_CAUSES:
            count += 1
            if attempt.pages_sent > 0:
                break
    return count


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _stopped_at(job: Job, attempt: Attempt) -> str:
    detail = attempt.reason or "line error"
    return f"stopped at page {job.next_page} of {job.pages}: {detail}"


def _failure_reason(job: Job, attempt: Attempt) -> str:
    """A plain sentence for the sender: why the fax did not go through."""
    if attempt.cause is Cause.LINE_ERROR:
        return _stopped_at(job, attempt)
    words = _CAUSE_WORDS[attempt.cause]
    n = len(job.attempts)
    if n > 1 and all(a.cause is attempt.cause for a in job.attempts):
        return f"{words} on both tries" if n == 2 else f"{words} on all {n} tries"
    if n == 1:
        return words
    counts: dict[Cause, int] = {}
    for a in job.attempts:
        counts[a.cause] = counts.get(a.cause, 0) + 1
    summary = ", ".join(f"{c} {_CAUSE_WORDS[cause]}" for cause, c in counts.items())
    return f"{words} ({_plural(n, 'call')}: {summary})"


def _retry_reason(job: Job, attempt: Attempt) -> str:
    if attempt.cause is Cause.LINE_ERROR:
        return _stopped_at(job, attempt)
    return _CAUSE_WORDS[attempt.cause] + (f": {attempt.reason}" if attempt.reason else "")


def _rejected_reason(attempt: Attempt) -> str:
    return "the number was rejected" + (f": {attempt.reason}" if attempt.reason else "")


def _cancel_reason(job: Job) -> str:
    if job.pages_done:
        return f"cancelled after {_plural(job.pages_done, 'page')} of {job.pages}"
    return "cancelled"
