"""Outbound SMS jobs: retry policy, scheduler decisions, receipts, restart and the JSON record."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ums.sms.jobs import (
    FORMAT_VERSION,
    ORPHAN_AGE,
    SmsDecision,
    SmsJob,
    SmsJobFormatError,
    SmsRetryPolicy,
    SmsScheduler,
    SmsSchedulerError,
    SmsState,
    SmsTry,
    UnknownSmsJobError,
    receipt_outcome,
    sms_report,
)
from ums.sms.transport import DeliveryReceipt, SubmitResult
from ums.store.fax_jobs import FaxJobStore

T0 = 1_764_000_000.0  # a fixed epoch time
OK = SubmitResult(accepted=True, message_ids=("m1",))
BUSY = SubmitResult(accepted=False, reason="ESME_RTHROTTLED")
BAD = SubmitResult(accepted=False, permanent=True, reason="ESME_RINVDSTADR")


def make_job(job_id: str = "j1", **kw: Any) -> SmsJob:
    fields: dict[str, Any] = {
        "id": job_id,
        "created": T0,
        "mail_from": "alice@example.com",
        "number": "0151 2345678",
        "dest": "+491512345678",
        "text": "Hallo Jörg, bin gleich da 🙂",
        "sender": "+49891234567",
        "subject": "Termin",
        "message_id": "<abc@mail.example.com>",
    }
    fields.update(kw)
    return SmsJob(**fields)


def sched_with(*jobs: SmsJob, now: float = T0, **kw: Any) -> SmsScheduler:
    sched = SmsScheduler(**kw)
    for job in jobs:
        sched.add(job, now)
    return sched


def submit(
    sched: SmsScheduler, job_id: str, result: SubmitResult, now: float, receipts: bool = True
) -> SmsDecision:
    started = [j.id for j in sched.due(now)]
    assert job_id in started, f"{job_id} not due at {now}: {started}"
    return sched.submitted(job_id, result, now, receipts=receipts)


def dlr(mid: str = "m1", status: str = "DELIVRD", error: str = "000") -> DeliveryReceipt:
    return DeliveryReceipt(message_id=mid, delivered=status == "DELIVRD", status=status, error=error)


# -- policy -------------------------------------------------------------------------------


def test_policy_intervals_last_repeats() -> None:
    p = SmsRetryPolicy()
    assert [p.delay("j", n) for n in range(1, 9)] == [30, 60, 120, 300, 600, 900, 900, 900]


def test_policy_jitter_is_reproducible_and_bounded() -> None:
    p = SmsRetryPolicy(jitter=0.1)
    values = [p.delay(f"job{i}", 2) for i in range(50)]
    assert values == [p.delay(f"job{i}", 2) for i in range(50)]
    assert all(54 <= v <= 66 for v in values)
    assert len(set(values)) > 40
    assert p.delay("job1", 1) != p.delay("job1", 2) / 2


@pytest.mark.parametrize(
    "kw",
    [
        {"intervals": ()},
        {"intervals": (30.0, -1.0)},
        {"intervals": (float("nan"),)},
        {"max_tries": 0},
        {"expire": 0},
        {"receipt_timeout": float("inf")},
        {"jitter": 1.0},
    ],
)
def test_policy_rejects_bad_values(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SmsRetryPolicy(**kw)


def test_scheduler_rejects_bad_concurrency() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        SmsScheduler(max_concurrent=0)


# -- receipt words ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "delivered", "outcome"),
    [
        ("DELIVRD", True, "delivered"),
        ("delivrd", False, "delivered"),
        ("delivered", True, "delivered"),  # RFC 5438 IMDN
        ("UNDELIV", False, "failed"),
        ("REJECTD", False, "failed"),
        ("EXPIRED", False, "failed"),
        ("DELETED", False, "failed"),
        ("UNKNOWN", False, "failed"),
        ("failed", False, "failed"),
        ("ENROUTE", False, "pending"),
        ("ACCEPTD", False, "pending"),
        ("WHATEVER", False, "pending"),
        ("WHATEVER", True, "delivered"),
        ("UNDELIV", True, "failed"),  # a known failure word wins over a confused flag
    ],
)
def test_receipt_outcome(word: str, delivered: bool, outcome: str) -> None:
    assert receipt_outcome(word, delivered) == outcome


# -- submit paths -------------------------------------------------------------------------


def test_accepted_with_receipts_waits_for_receipt() -> None:
    sched = sched_with(make_job())
    [job] = sched.due(T0)
    assert job.state is SmsState.SENDING
    d = sched.submitted("j1", OK, T0 + 2, receipts=True)
    assert d.report is None and not d.is_final
    assert d.job.state is SmsState.SUBMITTED
    assert d.job.message_ids == ("m1",)
    assert d.job.part_receipts == ("",)
    assert d.job.tries == (SmsTry(T0 + 2, True, False, "", ("m1",)),)
    assert d.job.submitted_at == T0 + 2
    assert sched.active() == [d.job]
    assert sched.next_wakeup() == T0 + 2 + 48 * 3600


def test_accepted_without_receipts_is_sent() -> None:
    sched = sched_with(make_job())
    d = submit(sched, "j1", OK, T0, receipts=False)
    assert d.report == "sent" and d.is_final
    assert d.job.state is SmsState.SENT
    assert d.job.reason == "no delivery receipt was asked for"
    assert d.job.finished == T0
    assert "j1" not in sched and sched.next_wakeup() is None


def test_accepted_without_message_id_is_sent() -> None:
    sched = sched_with(make_job())
    d = submit(sched, "j1", SubmitResult(accepted=True, message_ids=("",)), T0)
    assert d.report == "sent"
    assert "no message id" in d.job.reason


def test_permanent_refusal_fails_at_once() -> None:
    sched = sched_with(make_job())
    d = submit(sched, "j1", BAD, T0)
    assert d.report == "failed"
    assert d.job.state is SmsState.FAILED
    assert d.job.reason == "the SMS network refused it (ESME_RINVDSTADR)"
    assert d.job.tries[0].permanent and not d.job.tries[0].accepted
    assert len(sched) == 0


def test_temporary_refusal_retries_on_the_interval_schedule() -> None:
    sched = sched_with(make_job())
    now = T0
    expected = [30, 60, 120, 300, 600, 900, 900]
    for n, wait in enumerate(expected, start=1):
        d = submit(sched, "j1", BUSY, now)
        assert d.report is None
        assert d.job.state is SmsState.QUEUED
        assert d.job.next_try == now + wait
        assert len(d.job.tries) == n
        assert d.job.reason == "the SMS network refused it (ESME_RTHROTTLED)"
        assert sched.due(now + wait - 1) == []
        assert sched.next_wakeup() == now + wait
        now += wait
    d = submit(sched, "j1", BUSY, now)
    assert d.report == "failed"
    assert d.job.reason == "not sent after 8 tries: the SMS network refused it (ESME_RTHROTTLED)"
    assert len(d.job.tries) == 8


def test_temporary_then_accepted() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", BUSY, T0)
    d = submit(sched, "j1", OK, T0 + 30)
    assert d.job.state is SmsState.SUBMITTED
    assert [t.accepted for t in d.job.tries] == [False, True]
    assert d.job.next_try is None
    assert d.job.reason == ""  # the refusal before is history (in tries)


def test_retry_after_expiry_fails() -> None:
    policy = SmsRetryPolicy(intervals=(600.0,), max_tries=100, expire=1000.0)
    sched = sched_with(make_job(), policy=policy)
    assert submit(sched, "j1", BUSY, T0).job.next_try == T0 + 600
    d = submit(sched, "j1", BUSY, T0 + 600)
    assert d.report == "failed"
    assert d.job.reason.startswith("not sent within 1000 seconds: the SMS network refused it")


def test_expire_text_in_hours() -> None:
    sched = sched_with(make_job(created=T0 - 24 * 3600 + 10))
    d = submit(sched, "j1", BUSY, T0)
    assert d.job.reason.startswith("not sent within 24 hours: ")


def test_submitted_needs_a_sending_job() -> None:
    sched = sched_with(make_job())
    with pytest.raises(SmsSchedulerError, match="not being submitted"):
        sched.submitted("j1", OK, T0, receipts=True)
    with pytest.raises(UnknownSmsJobError):
        sched.submitted("nope", OK, T0, receipts=True)


# -- scheduling -----------------------------------------------------------------------------


def test_due_respects_max_concurrent_and_fifo() -> None:
    jobs = [make_job(f"j{i}", created=T0 + i) for i in range(6)]
    sched = sched_with(*reversed(jobs), max_concurrent=4)
    first = sched.due(T0 + 10)
    assert [j.id for j in first] == ["j0", "j1", "j2", "j3"]
    assert sched.due(T0 + 10) == []
    assert sched.next_wakeup() == T0 + 4 + 24 * 3600  # held back: only their expiry counts
    sched.submitted("j1", OK, T0 + 11, receipts=False)
    assert [j.id for j in sched.due(T0 + 11)] == ["j4"]


def test_not_due_before_next_try() -> None:
    sched = sched_with(make_job(next_try=T0 + 100))
    assert sched.due(T0 + 99) == []
    assert sched.next_wakeup() == T0 + 100
    assert [j.id for j in sched.due(T0 + 100)] == ["j1"]


def test_add_checks() -> None:
    sched = sched_with(make_job())
    with pytest.raises(SmsSchedulerError, match="already"):
        sched.add(make_job(), T0)
    with pytest.raises(SmsSchedulerError, match="not queued"):
        sched.add(make_job("j2", state=SmsState.SENDING), T0)
    with pytest.raises(UnknownSmsJobError):
        sched.get("nope")


def test_expired_queued_job_fails_in_advance_and_is_not_sent() -> None:
    sched = sched_with(make_job(created=T0 - 25 * 3600), make_job("j2"))
    assert [j.id for j in sched.due(T0)] == ["j2"]
    [d] = sched.advance(T0)
    assert d.job.id == "j1" and d.report == "failed"
    assert d.job.reason == "not sent within 24 hours"
    assert d.job.tries == ()


def test_advance_expiry_names_last_refusal() -> None:
    policy = SmsRetryPolicy(intervals=(10.0,), max_tries=100, expire=100.0)
    sched = sched_with(make_job(), policy=policy)
    submit(sched, "j1", BUSY, T0 + 85)  # retry at T0 + 95, before expiry
    [d] = sched.advance(T0 + 100)
    assert d.job.reason == "not sent within 100 seconds: the SMS network refused it (ESME_RTHROTTLED)"


# -- receipts -------------------------------------------------------------------------------


def test_delivered_receipt() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", OK, T0)
    d = sched.receipt(dlr(), T0 + 5)
    assert d is not None
    assert d.report == "delivered" and d.job.state is SmsState.DELIVERED
    assert d.job.receipt == "DELIVRD" and d.job.finished == T0 + 5
    assert len(sched) == 0
    assert sched.receipt(dlr(), T0 + 6) is None  # a duplicate after the end matches nothing


@pytest.mark.parametrize("word", ["UNDELIV", "REJECTD", "EXPIRED", "DELETED", "UNKNOWN"])
def test_failing_receipts(word: str) -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", OK, T0)
    d = sched.receipt(dlr(status=word, error="001"), T0 + 5)
    assert d is not None and d.report == "failed"
    assert d.job.reason == f"not delivered: {word} err 001"
    assert d.job.receipt == word


def test_failing_receipt_without_error_code() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", OK, T0)
    d = sched.receipt(dlr(status="undeliv", error=""), T0 + 5)
    assert d is not None and d.job.reason == "not delivered: UNDELIV"


@pytest.mark.parametrize("word", ["ENROUTE", "ACCEPTD"])
def test_intermediate_receipts_are_not_final(word: str) -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", OK, T0)
    d = sched.receipt(dlr(status=word), T0 + 5)
    assert d is not None and d.report is None and not d.is_final
    assert d.job.state is SmsState.SUBMITTED
    assert d.job.part_receipts == (word,)
    d2 = sched.receipt(dlr(), T0 + 9)
    assert d2 is not None and d2.report == "delivered"


def test_multipart_delivered_when_every_part_is() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", SubmitResult(accepted=True, message_ids=("a", "b", "c"), parts=3), T0)
    d = sched.receipt(dlr("b"), T0 + 1)
    assert d is not None and d.report is None and d.job.part_receipts == ("", "DELIVRD", "")
    d = sched.receipt(dlr("b"), T0 + 2)  # duplicate
    assert d is not None and d.report is None and "duplicate" in d.reason
    d = sched.receipt(dlr("a", "ENROUTE"), T0 + 2)
    assert d is not None and d.report is None
    d = sched.receipt(dlr("a"), T0 + 3)
    assert d is not None and d.report is None
    d = sched.receipt(dlr("c"), T0 + 4)
    assert d is not None and d.report == "delivered"
    assert d.job.part_receipts == ("DELIVRD",) * 3


def test_multipart_fails_as_soon_as_one_part_fails() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", SubmitResult(accepted=True, message_ids=("a", "b", "c"), parts=3), T0)
    sched.receipt(dlr("a"), T0 + 1)
    d = sched.receipt(dlr("b", "EXPIRED", "027"), T0 + 2)
    assert d is not None and d.report == "failed"
    assert d.job.reason == "not delivered: EXPIRED err 027 (part 2 of 3)"
    assert sched.receipt(dlr("c"), T0 + 3) is None  # the job is over


def test_duplicate_message_ids_from_the_far_end_are_merged() -> None:
    sched = sched_with(make_job())
    d = submit(sched, "j1", SubmitResult(accepted=True, message_ids=("x", "x")), T0)
    assert d.job.message_ids == ("x",)


def test_receipt_before_submit_answer_is_applied_later() -> None:
    sched = sched_with(make_job())
    sched.due(T0)
    assert sched.receipt(dlr("m1"), T0 + 1) is None
    d = sched.submitted("j1", OK, T0 + 2, receipts=True)
    assert d.report == "delivered" and d.job.state is SmsState.DELIVERED


def test_stale_early_receipt_is_not_applied() -> None:
    sched = sched_with(make_job())
    sched.due(T0)
    assert sched.receipt(dlr("m1"), T0) is None
    d = sched.submitted("j1", OK, T0 + ORPHAN_AGE + 1, receipts=True)
    assert d.job.state is SmsState.SUBMITTED


def test_receipt_timeout_ends_as_sent() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", OK, T0)
    assert sched.advance(T0 + 48 * 3600 - 1) == []
    [d] = sched.advance(T0 + 48 * 3600)
    assert d.report == "sent" and d.job.state is SmsState.SENT
    assert d.job.reason == "no delivery receipt within 48 hours"
    assert sched.receipt(dlr(), T0 + 48 * 3600 + 1) is None


def test_receipt_timeout_names_missing_parts() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", SubmitResult(accepted=True, message_ids=("a", "b")), T0)
    sched.receipt(dlr("a"), T0 + 1)
    [d] = sched.advance(T0 + 48 * 3600)
    assert d.job.reason == "no delivery receipt within 48 hours for 1 of 2 parts"


# -- cancel -------------------------------------------------------------------------------


def test_cancel_queued() -> None:
    sched = sched_with(make_job())
    d = sched.cancel("j1", T0)
    assert d.job.state is SmsState.CANCELLED and d.report is None
    assert d.job.report_kind is None
    assert len(sched) == 0


def test_cancel_sending_then_refused_cancels() -> None:
    sched = sched_with(make_job())
    sched.due(T0)
    d = sched.cancel("j1", T0)
    assert d.job.state is SmsState.SENDING and d.job.cancel_requested and d.report is None
    d = sched.submitted("j1", BUSY, T0 + 1, receipts=True)
    assert d.job.state is SmsState.CANCELLED and d.report is None


def test_cancel_sending_then_accepted_goes_on() -> None:
    sched = sched_with(make_job())
    sched.due(T0)
    sched.cancel("j1", T0)
    d = sched.submitted("j1", OK, T0 + 1, receipts=False)
    assert d.job.state is SmsState.SENT and d.report == "sent"


def test_cancel_submitted_is_refused() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", OK, T0)
    with pytest.raises(SmsSchedulerError, match="cannot be called back"):
        sched.cancel("j1", T0 + 1)


# -- restart ------------------------------------------------------------------------------


def test_restore_requeues_sending_due_now_without_a_try() -> None:
    sending = make_job("a", state=SmsState.SENDING, tries=(SmsTry(T0, False, reason="x"),))
    queued = make_job("b", next_try=T0 + 5000)
    submitted = make_job(
        "c", state=SmsState.SUBMITTED, message_ids=("m9",), part_receipts=("",), tries=(SmsTry(T0, True),)
    )
    done = make_job("d", state=SmsState.DELIVERED, finished=T0, receipt="DELIVRD")
    sched = SmsScheduler()
    r = sched.restore([done, submitted, queued, sending], T0 + 1000)
    assert [j.id for j in r.requeued] == ["a"]
    assert r.requeued[0].state is SmsState.QUEUED and r.requeued[0].next_try == T0 + 1000
    assert len(r.requeued[0].tries) == 1
    assert [j.id for j in r.finished] == ["d"]
    assert {j.id for j in sched.active()} == {"a", "b", "c"}
    assert [j.id for j in sched.due(T0 + 1000)] == ["a"]
    d = sched.receipt(dlr("m9"), T0 + 1001)  # receipts still match after a restart
    assert d is not None and d.report == "delivered"


def test_restore_cancels_sending_with_cancel_requested() -> None:
    sched = SmsScheduler()
    r = sched.restore([make_job(state=SmsState.SENDING, cancel_requested=True)], T0)
    assert r.requeued == [] and len(sched) == 0
    assert r.finished[0].state is SmsState.CANCELLED and r.finished[0].finished == T0


def test_restore_rejects_duplicates() -> None:
    sched = sched_with(make_job())
    with pytest.raises(SmsSchedulerError):
        sched.restore([make_job()], T0)


# -- JSON ---------------------------------------------------------------------------------


def full_job() -> SmsJob:
    return make_job(
        state=SmsState.SUBMITTED,
        tries=(SmsTry(T0, False, False, "ESME_RTHROTTLED"), SmsTry(T0 + 30.5, True, message_ids=("a", "b"))),
        message_ids=("a", "b"),
        part_receipts=("DELIVRD", ""),
        reason="",
        transport="smpp",
    )


def test_json_round_trip() -> None:
    job = full_job()
    text = job.to_json()
    assert SmsJob.from_json(text) == job
    assert SmsJob.from_json(text.encode()) == job
    data = json.loads(text)
    assert data["v"] == FORMAT_VERSION
    assert data["text"] == job.text  # written as UTF-8, not \u escapes
    assert "🙂" in text
    final = replace(job, state=SmsState.FAILED, receipt="UNDELIV", finished=T0 + 99, reported=True)
    assert SmsJob.from_json(final.to_json()) == final


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": 2}, "version 2"),
        ({"v": None}, "version None"),
        ({"v": True}, "version True"),
        ({"state": "flying"}, "unknown value 'flying'"),
        ({"created": "yesterday"}, "'created' must be a number"),
        ({"tries": {}}, "'tries' must be a list"),
        ({"tries": [{"at": 1.0}]}, "'accepted' is missing"),
        ({"message_ids": [1]}, "'message_ids' must be a list of text"),
        ({"reported": "yes"}, "'reported' must be true or false"),
        ({"transport": "pigeon"}, "transport must be one of"),
        ({"part_receipts": ["", "", ""]}, "part_receipts must match"),
        ({"next_try": float("nan")}, "'next_try' must be a number"),
    ],
)
def test_json_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    data = full_job().to_dict()
    data.update(change)
    with pytest.raises(SmsJobFormatError, match=message):
        SmsJob.from_dict(data)


def test_json_missing_field_and_garbage() -> None:
    data = full_job().to_dict()
    del data["dest"]
    with pytest.raises(SmsJobFormatError, match="'dest' is missing"):
        SmsJob.from_dict(data)
    with pytest.raises(SmsJobFormatError, match="not valid JSON"):
        SmsJob.from_json("{nope")
    with pytest.raises(SmsJobFormatError, match="JSON object"):
        SmsJob.from_json("[]")


def test_job_validation() -> None:
    with pytest.raises(SmsJobFormatError, match="id"):
        make_job("")
    with pytest.raises(SmsJobFormatError, match="destination"):
        make_job(dest="")
    with pytest.raises(SmsJobFormatError, match="mail_from"):
        make_job(mail_from="alice")


def test_fax_job_store_keeps_sms_jobs(tmp_path: Path) -> None:
    store: FaxJobStore[SmsJob] = FaxJobStore(tmp_path / "sms_jobs", SmsJob.from_json)
    job = make_job("20260101-120000-000-0000abcd")
    store.create(job, b"Subject: Termin\r\n\r\nHallo\r\n")
    store.save(replace(job, state=SmsState.SENDING))
    [loaded] = store.load_all()
    assert loaded == replace(job, state=SmsState.SENDING)


# -- report -------------------------------------------------------------------------------


def test_sms_report_from_a_final_job() -> None:
    sched = sched_with(make_job())
    submit(sched, "j1", BUSY, T0)
    submit(sched, "j1", SubmitResult(accepted=True, message_ids=("a", "b")), T0 + 30)
    sched.receipt(dlr("a"), T0 + 40)
    d = sched.receipt(dlr("b"), T0 + 50)
    assert d is not None and d.report == "delivered"
    report = sms_report(d.job, T0 + 51)
    assert report.kind == "delivered"
    assert report.recipient == "alice@example.com"
    assert report.number == "0151 2345678"
    assert report.tries == 2 and report.parts == 2
    assert report.receipt == "DELIVRD"
    assert report.original_message_id == "<abc@mail.example.com>"
    assert report.submitted is not None and report.submitted.timestamp() == T0 + 30
    assert report.finished is not None and report.finished.timestamp() == T0 + 50
    assert report.date.timestamp() == T0 + 51
    assert d.job.mark_reported().reported


def test_sms_report_needs_a_reportable_job() -> None:
    with pytest.raises(SmsSchedulerError, match="no report"):
        sms_report(make_job(), T0)
    with pytest.raises(SmsSchedulerError, match="no report"):
        sms_report(make_job(state=SmsState.CANCELLED), T0)
