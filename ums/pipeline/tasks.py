"""The pipeline tasks: encode -> compose -> deliver -> notify, one task per message.

What it does
------------
``submit(message_id)`` queues the work for a stored message and returns at
once; it never raises because the broker is away (it logs and returns False —
the message index is the source of truth and ``sweep`` queues it again).
``sweep(now)`` queues every delivery the index says is due: at server start
(``resume()``), and once a minute from the server, so nothing waits forever
for a message that was lost with a broker or a killed worker.

The tasks, each small, idempotent and keyed by the message id:

* ``encode``  — the attachment in the mailbox's format (MP3, Opus; WAV as is;
  a received fax: its pages rendered as PDF and/or TIFF, and a first-page preview);
* ``compose`` — the e-mail, stored as ``mail/<id>.eml``;
* ``deliver`` — claims the message in the index, hands the mail to the
  smarthost or the owner's Maildir, and books the outcome: delivered; a
  temporary failure -> the attempt is counted, the next one scheduled
  (exponential backoff, :class:`~ums.store.retry.RetryPolicy`) and the task
  retried at that time; after ``give_up_days``, or at once for a permanent
  failure (SMTP 5yz) -> marked failed, kept, and one report to the admin;
* ``notify``  — after a delivery: the hook for later services (SMS
  notification, ...); today one log line ``event=pipeline.delivered``.

How it works
------------
``submit`` queues one ``process`` task, which runs the four steps one after
the other in the same invocation (:func:`run_process`): one trip through the
queue per message instead of four (each trip costs a published, fsynced queue
file and up to one polling interval; measured in docs/BENCHMARKS.md).  The
steps stay separate functions with the same checks, so a step whose output
exists is skipped, and a retried ``process`` (after a temporary delivery
failure) goes straight to ``deliver``.  The four single-step tasks stay
registered and chain as before (``process_chain``): messages queued by an
older version still run.  Each step returns the message id for the next one,
or None to stop (nothing to do: unknown, already delivered, held by another
worker).

Exactly-once is the index's business, not the broker's: ``deliver`` first
``claim``s the record (a lease of 10 x ``smtp_timeout``, at least 2 min), and
only a pending record that nobody holds can be claimed; a record whose next
attempt lies in the future is left alone (that retry is already scheduled).
So a message queued twice, a retry racing the sweep, or a redelivered broker
message cost one look at the index.  A worker killed while it held a message
leaves a lease; when the lease has run out the sweep queues the message again
(``release_claims()`` at start gives all leases back at once when the
restarted workers are the only ones).

What remains is the window between the receiver's acceptance and the
``mark_delivered`` that books it: a crash there sends the mail again on the
next attempt.  It is the same mail with the same Message-ID: the Maildir
delivery recognises it and writes nothing; over SMTP the receiving side gets a
second copy with an identical Message-ID, which mail stores and clients treat
as the same message (RFC 5322 §3.6.4: a Message-ID names exactly one
message).  A slow SMTP attempt that outlives its lease can do the same.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import Celery, chain
from celery.canvas import Signature

from ums.log import kv
from ums.mailgate.smtp_out import DeliveryError
from ums.pipeline.app import PipelineContext, current
from ums.pipeline.deliver import (
    ensure_composed,
    ensure_encoded,
    mail_path,
    send_admin_report,
    send_mail,
)
from ums.store.models import MessageRecord

__all__ = [
    "COMPOSE",
    "DELIVER",
    "ENCODE",
    "NOTIFY",
    "PROCESS",
    "DeliverOutcome",
    "process_chain",
    "process_message",
    "register_tasks",
    "resume",
    "run_compose",
    "run_deliver",
    "run_encode",
    "run_notify",
    "run_process",
    "submit",
    "sweep",
]

log = logging.getLogger("ums.pipeline")

ENCODE = "ums.pipeline.encode"
COMPOSE = "ums.pipeline.compose"
DELIVER = "ums.pipeline.deliver"
NOTIFY = "ums.pipeline.notify"
PROCESS = "ums.pipeline.process"

#: a retry that arrives this early still counts as due (clocks of several machines in Redis mode)
DUE_TOLERANCE = timedelta(seconds=5)
#: how hard ``submit`` tries to reach the broker before it leaves the message to the sweep
SUBMIT_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.1, "interval_max": 0.2}


def _load(ctx: PipelineContext, message_id: str | None, step: str) -> MessageRecord | None:
    if not message_id:
        return None
    record = ctx.index.get(message_id)
    if record is None:
        log.warning(kv(f"pipeline.{step}", id=message_id, result="unknown"))
    return record


# -- the steps, callable without Celery --------------------------------------------------------------
def run_encode(ctx: PipelineContext, message_id: str | None) -> str | None:
    record = _load(ctx, message_id, "encode")
    if record is None:
        return None
    if record.delivery != "pending":
        log.info(kv("pipeline.encode", id=record.id, result="skip", delivery=record.delivery))
        return None
    try:
        result = ensure_encoded(ctx, record)
    except Exception as exc:  # deliver books the failure (it composes again)
        log.error(kv("pipeline.encode", id=record.id, result="error", reason=f"{type(exc).__name__}: {exc}"))
        return record.id
    log.info(kv("pipeline.encode", id=record.id, result=result))
    return record.id


def run_compose(ctx: PipelineContext, message_id: str | None) -> str | None:
    record = _load(ctx, message_id, "compose")
    if record is None:
        return None
    if record.delivery != "pending":
        log.info(kv("pipeline.compose", id=record.id, result="skip", delivery=record.delivery))
        return None
    try:
        data, written = ensure_composed(ctx, record)
    except Exception as exc:  # deliver books the failure (it composes again)
        log.error(kv("pipeline.compose", id=record.id, result="error", reason=f"{type(exc).__name__}: {exc}"))
        return record.id
    log.info(kv("pipeline.compose", id=record.id, result="written" if written else "exists", bytes=len(data)))
    return record.id


class DeliverOutcome:
    """What one ``deliver`` run did: ``result`` is delivered, retry, failed or skip."""

    __slots__ = ("result", "retry_in")

    def __init__(self, result: str, retry_in: float | None = None) -> None:
        self.result = result
        self.retry_in = retry_in

    def __repr__(self) -> str:
        return f"DeliverOutcome({self.result!r}, retry_in={self.retry_in!r})"


def _give_up(ctx: PipelineContext, record: MessageRecord, error: str, reason: str) -> DeliverOutcome:
    failed = ctx.index.mark_failed(record.id, error)
    log.error(kv("pipeline.deliver", id=record.id, result="failed", reason=reason, error=error))
    send_admin_report(ctx, [failed], reason)
    return DeliverOutcome("failed")


def _failed(
    ctx: PipelineContext, record: MessageRecord, attempt: int, exc: DeliveryError, now: datetime
) -> DeliverOutcome:
    error = str(exc)
    if exc.permanent:
        ctx.index.record_attempt(record.id, False, error, now)
        return _give_up(ctx, record, error, "permanent failure")
    after = ctx.clock()
    if ctx.retry.gives_up(record.received_at, after):
        ctx.index.record_attempt(record.id, False, error, after)
        return _give_up(ctx, record, error, f"not delivered within {ctx.config.mail.give_up_days:g} days")
    nxt = ctx.retry.next_attempt(after, attempt, ctx.rng)
    ctx.index.record_attempt(record.id, False, error, nxt)
    retry_in = max(0.0, (nxt - after).total_seconds())
    log.warning(
        kv("pipeline.deliver", id=record.id, result="retry", attempt=attempt, retry_in=retry_in, error=error)
    )
    return DeliverOutcome("retry", retry_in)


def run_deliver(ctx: PipelineContext, message_id: str | None) -> DeliverOutcome:
    record = _load(ctx, message_id, "deliver")
    if record is None:
        return DeliverOutcome("skip")
    now = ctx.clock()
    if record.delivery != "pending":
        log.info(kv("pipeline.deliver", id=record.id, result="skip", reason=record.delivery))
        return DeliverOutcome("skip")
    if record.next_attempt_at is not None and record.next_attempt_at > now + DUE_TOLERANCE:
        log.info(kv("pipeline.deliver", id=record.id, result="skip", reason="not-due"))
        return DeliverOutcome("skip")
    if not ctx.index.claim(record.id, now, ctx.lease):
        log.info(kv("pipeline.deliver", id=record.id, result="skip", reason="held"))
        return DeliverOutcome("skip")
    claimed = ctx.index.get(record.id)
    if claimed is None:
        return DeliverOutcome("skip")
    if claimed.next_attempt_at is not None and claimed.next_attempt_at > now + DUE_TOLERANCE:
        # another worker tried (and failed) between our read and our claim; its retry is scheduled.
        # Our lease runs out on its own; the sweep takes the message from there.
        log.info(kv("pipeline.deliver", id=record.id, result="skip", reason="tried-meanwhile"))
        return DeliverOutcome("skip")
    record = claimed
    attempt = record.attempts + 1
    try:
        try:
            data, _ = ensure_composed(ctx, record)
        except Exception as exc:  # a broken spool file is retried and reported like a failure
            raise DeliveryError(False, None, f"compose: {type(exc).__name__}: {exc}") from exc
        duplicate = send_mail(ctx, record.owner, data)
    except DeliveryError as exc:
        return _failed(ctx, record, attempt, exc, now)
    except BaseException:
        # a bug: leave the lease to run out, the sweep tries again after it
        log.exception(kv("pipeline.deliver", id=record.id, result="error", attempt=attempt))
        raise
    ctx.index.record_attempt(record.id, True)
    ctx.spool.remove(mail_path(record.id))  # compose builds it again, byte for byte, if ever needed
    log.info(
        kv(
            "pipeline.deliver",
            id=record.id,
            result="delivered",
            via=ctx.via,
            attempt=attempt,
            duplicate=int(duplicate),
        )
    )
    return DeliverOutcome("delivered")


def run_notify(ctx: PipelineContext, message_id: str | None) -> None:
    record = _load(ctx, message_id, "notify")
    if record is None:
        return
    log.info(kv("pipeline.delivered", id=record.id, owner=record.owner, via=ctx.via, kind=record.kind))


def run_process(ctx: PipelineContext, message_id: str | None) -> DeliverOutcome:
    """encode -> compose -> deliver -> notify for one message, in this call (the ``process`` task)."""
    mid = run_compose(ctx, run_encode(ctx, message_id))
    if mid is None:
        return DeliverOutcome("skip")
    outcome = run_deliver(ctx, mid)
    if outcome.result == "delivered":
        run_notify(ctx, mid)
    return outcome


# -- Celery ------------------------------------------------------------------------------------------
def register_tasks(app: Celery) -> None:
    """Add the tasks to ``app`` (called by :func:`ums.pipeline.app.make_app`)."""

    @app.task(name=PROCESS, bind=True, shared=False, max_retries=None)  # type: ignore[untyped-decorator]
    def process(self: Any, message_id: str | None) -> None:
        outcome = run_process(current(), message_id)
        if outcome.result == "retry" and not self.request.is_eager:
            # the attempt is booked in the index; encode and compose find their files next time.
            # Eager (tests): no retry in-line, the sweep picks the message up when it is due.
            raise self.retry(countdown=outcome.retry_in, max_retries=None)

    @app.task(name=ENCODE, shared=False)  # type: ignore[untyped-decorator]
    def encode(message_id: str | None) -> str | None:
        return run_encode(current(), message_id)

    @app.task(name=COMPOSE, shared=False)  # type: ignore[untyped-decorator]
    def compose(message_id: str | None) -> str | None:
        return run_compose(current(), message_id)

    @app.task(name=DELIVER, bind=True, shared=False, max_retries=None)  # type: ignore[untyped-decorator]
    def deliver(self: Any, message_id: str | None) -> str | None:
        outcome = run_deliver(current(), message_id)
        if outcome.result == "retry" and not self.request.is_eager:
            # the attempt is booked in the index; the retry message carries the rest of the chain.
            # Eager (tests): no retry in-line, the sweep picks the message up when it is due.
            raise self.retry(countdown=outcome.retry_in, max_retries=None)
        return message_id if outcome.result == "delivered" else None

    @app.task(name=NOTIFY, shared=False)  # type: ignore[untyped-decorator]
    def notify(message_id: str | None) -> None:
        run_notify(current(), message_id)


def process_message(message_id: str, app: Celery | None = None) -> Signature:
    """The ``process`` task for one message (not yet sent): all four steps in one queue trip."""
    a = app if app is not None else current().app
    return a.signature(PROCESS, args=(message_id,))


def process_chain(message_id: str, app: Celery | None = None) -> Signature:
    """The four steps as a chain of single-step tasks, one queue trip each (not yet sent)."""
    a = app if app is not None else current().app
    return chain(
        a.signature(ENCODE, args=(message_id,)),
        a.signature(COMPOSE),
        a.signature(DELIVER),
        a.signature(NOTIFY),
    )


def submit(message_id: str) -> bool:
    """Queue the pipeline for a stored message; False (logged) when the broker cannot be reached.

    Quick (one file written, or one Redis command) and safe to call from any thread; call it
    from a thread pool, not from the event loop, when the broker is remote.
    """
    ctx = current()
    try:
        process_message(message_id, ctx.app).apply_async(retry=True, retry_policy=SUBMIT_RETRY_POLICY)
    except Exception as exc:
        if ctx.app.conf.task_always_eager:
            raise
        log.warning(kv("pipeline.submit_failed", id=message_id, reason=f"{type(exc).__name__}: {exc}"))
        return False
    log.debug(kv("pipeline.submitted", id=message_id))
    return True


def sweep(now: datetime | None = None, *, min_age: float = 0.0, limit: int | None = 1000) -> int:
    """Queue every delivery that is due (and at least ``min_age`` seconds overdue); returns how many.

    The server calls ``sweep()`` at start and ``sweep(min_age=60)`` every minute: messages whose
    task is still on its way through the queue are not queued a second time.  Stops at the first
    message the broker does not take.
    """
    ctx = current()
    t = now if now is not None else ctx.clock()
    due = ctx.index.due_deliveries(t - timedelta(seconds=min_age), limit)
    sent = 0
    for record in due:
        if not submit(record.id):
            break
        sent += 1
    if due:
        log.info(kv("pipeline.sweep", due=len(due), submitted=sent))
    return sent


def resume(now: datetime | None = None) -> int:
    """At start: queue everything the index still has to deliver."""
    return sweep(now)
