"""Outbound fax jobs: retry policy, scheduler decisions and the JSON record."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from ums.outbound.jobs import (
    FORMAT_VERSION,
    Action,
    Attempt,
    Cause,
    Decision,
    Job,
    JobFormatError,
    JobState,
    RetryPolicy,
    Scheduler,
    SchedulerError,
    UnknownJobError,
)

T0 = 1_764_000_000.0  # a fixed epoch time


def make_job(job_id: str = "j1", **kw: Any) -> Job:
    fields: dict[str, Any] = {
        "id": job_id,
        "number": "+4989123456",
        "dial": "089123456",
        "sender": "alice@example.com",
        "pages": 5,
        "created": T0,
        "not_before": T0,
    }
    fields.update(kw)
    return Job(**fields)


def call(sched: Scheduler, job_id: str, cause: Cause, now: float, **kw: Any) -> Decision:
    """Dial ``job_id`` at ``now`` (it must be due) and end the call with ``cause``."""
    started = [j.id for j in sched.due(now)]
    assert job_id in started, f"{job_id} not due at {now}: {started}"
    return sched.finished(job_id, Attempt(now, now + 30, cause, **kw), now + 30)


# -- policy -------------------------------------------------------------------------------


def test_policy_defaults_follow_hylafax() -> None:
    p = RetryPolicy()
    assert p.rule(Cause.BUSY) == (180.0, None)
    assert p.rule(Cause.NO_ANSWER) == (300.0, None)
    assert p.rule(Cause.NOT_FAX) == (300.0, 2)
    assert p.rule(Cause.LINE_ERROR) == (60.0, None)
    assert p.rule(Cause.CONGESTION) == (60.0, 30)
    assert (p.max_tries, p.max_dials) == (3, 12)
    with pytest.raises(ValueError):
        p.rule(Cause.REJECTED)


@pytest.mark.parametrize(
    "kw",
    [{"busy_interval": -1.0}, {"not_fax_max": 0}, {"max_tries": 0}, {"max_dials": 0}, {"jitter": 1.0}],
)
def test_policy_rejects_bad_values(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kw)


def test_jitter_is_deterministic_and_bounded() -> None:
    p = RetryPolicy(jitter=0.2)
    delays = [p.delay(Cause.BUSY, f"job{i}", 1) for i in range(200)]
    assert delays == [RetryPolicy(jitter=0.2).delay(Cause.BUSY, f"job{i}", 1) for i in range(200)]
    assert all(144.0 <= d <= 216.0 for d in delays)
    assert len(set(delays)) > 150  # spread, not one value
    assert p.delay(Cause.BUSY, "job1", 1) != p.delay(Cause.BUSY, "job1", 2)  # each retry differs
    assert RetryPolicy().delay(Cause.BUSY, "job1", 1) == 180.0


# -- retry decisions ----------------------------------------------------------------------


def test_busy_then_ok() -> None:
    sched = Scheduler()
    job = make_job()
    sched.add(job, T0)
    d1 = call(sched, "j1", Cause.BUSY, T0)
    assert (d1.action, d1.at) == (Action.RETRY, T0 + 30 + 180)
    assert job.state is JobState.SLEEPING
    assert sched.due(T0 + 100) == []
    assert sched.next_wakeup() == T0 + 210
    d2 = call(sched, "j1", Cause.OK, T0 + 210, pages_sent=5)
    assert d2.action is Action.DONE and d2.is_final
    assert d2.reason == "sent 5 pages"
    assert (job.state, job.tries, job.dials, job.next_page) == (JobState.DONE, 1, 2, 6)
    assert job.finished == T0 + 240
    assert [a.cause for a in job.attempts] == [Cause.BUSY, Cause.OK]
    assert "j1" not in sched and len(sched) == 0  # finished jobs leave the scheduler


def test_busy_on_every_dial_fails_once_with_reason() -> None:
    sched = Scheduler(RetryPolicy(max_dials=3))
    sched.add(make_job(), T0)
    now = T0
    decisions = []
    for _ in range(3):
        d = call(sched, "j1", Cause.BUSY, now)
        decisions.append(d)
        now = d.at if d.at is not None else now
    assert [d.action for d in decisions] == [Action.RETRY, Action.RETRY, Action.FAILED]
    assert decisions[-1].reason == "busy on all 3 tries"
    assert decisions[-1].job.tries == 0 and decisions[-1].job.dials == 3


def test_no_answer_until_the_last_dial() -> None:
    sched = Scheduler()  # 12 dials, 300 s apart
    job = make_job()
    sched.add(job, T0)
    now = T0
    actions = []
    for _ in range(12):
        d = call(sched, "j1", Cause.NO_ANSWER, now)
        actions.append(d.action)
        if d.action is Action.RETRY:
            assert d.at == now + 30 + 300
            assert d.at is not None
            now = d.at
    assert actions == [Action.RETRY] * 11 + [Action.FAILED]
    assert job.final_reason == "no answer on all 12 tries"
    assert sched.next_wakeup() is None


def test_mixed_causes_reason_summarises() -> None:
    sched = Scheduler(RetryPolicy(max_dials=3))
    sched.add(make_job(), T0)
    d = call(sched, "j1", Cause.BUSY, T0)
    assert d.at is not None
    d = call(sched, "j1", Cause.BUSY, d.at)
    assert d.at is not None
    d = call(sched, "j1", Cause.NO_ANSWER, d.at)
    assert d.action is Action.FAILED
    assert d.reason == "no answer (3 calls: 2 busy, 1 no answer)"


def test_not_fax_gives_up_after_two_calls() -> None:
    sched = Scheduler()
    sched.add(make_job(), T0)
    d1 = call(sched, "j1", Cause.NOT_FAX, T0)
    assert (d1.action, d1.at) == (Action.RETRY, T0 + 330)
    assert d1.at is not None
    d2 = call(sched, "j1", Cause.NOT_FAX, d1.at)
    assert d2.action is Action.FAILED
    assert d2.reason == "no fax machine answered on both tries"
    assert d2.job.tries == 0  # no T.30 session: not a try


def test_rejected_fails_at_once() -> None:
    sched = Scheduler()
    sched.add(make_job(), T0)
    d = call(sched, "j1", Cause.REJECTED, T0, reason="404 Not Found", sip_code=404)
    assert d.action is Action.FAILED
    assert d.reason == "the number was rejected: 404 Not Found"


def test_congestion_retries_soon_and_spares_max_dials() -> None:
    sched = Scheduler(RetryPolicy(max_dials=2, congestion_max=4))
    sched.add(make_job(), T0)
    now = T0
    for _ in range(3):
        d = call(sched, "j1", Cause.CONGESTION, now, reason="503 Service Unavailable")
        assert d.action is Action.RETRY and d.at == now + 30 + 60
        assert d.at is not None
        now = d.at
    d = call(sched, "j1", Cause.BUSY, now)  # first real dial
    assert d.action is Action.RETRY
    assert d.at is not None
    d = call(sched, "j1", Cause.CONGESTION, d.at)  # 4th congestion: its own limit
    assert d.action is Action.FAILED
    assert d.reason == "no line free (5 calls: 4 no line free, 1 busy)"
    assert d.job.dials == 5


def test_line_error_resumes_from_first_unconfirmed_page() -> None:
    sched = Scheduler()
    job = make_job()
    sched.add(job, T0)
    d = call(sched, "j1", Cause.LINE_ERROR, T0, pages_sent=2, reason="no MCF for page 3")
    assert d.action is Action.RETRY and d.at == T0 + 30 + 60
    assert d.reason == "stopped at page 3 of 5: no MCF for page 3"
    assert (job.next_page, job.pages_done, job.tries) == (3, 2, 1)
    assert d.at is not None
    d = call(sched, "j1", Cause.OK, d.at, pages_sent=3)
    assert d.action is Action.DONE and job.next_page == 6


def test_three_tries_on_the_same_page_fail() -> None:
    sched = Scheduler()
    job = make_job()
    sched.add(job, T0)
    now = T0
    plan = [(2, Action.RETRY), (0, Action.RETRY), (0, Action.FAILED)]
    for pages, expected in plan:
        d = call(sched, "j1", Cause.LINE_ERROR, now, pages_sent=pages, reason="DCN after page")
        assert d.action is expected
        now = d.at if d.at is not None else now
    assert job.final_reason == "stopped at page 3 of 5: DCN after page"
    assert job.tries == 3


def test_progress_on_each_try_keeps_going() -> None:
    sched = Scheduler()  # max_tries 3, but each call confirms one more page
    job = make_job()
    sched.add(job, T0)
    now = T0
    for _ in range(4):
        d = call(sched, "j1", Cause.LINE_ERROR, now, pages_sent=1)
        assert d.action is Action.RETRY
        assert d.at is not None
        now = d.at
    assert job.next_page == 5
    assert call(sched, "j1", Cause.OK, now, pages_sent=1).action is Action.DONE
    assert job.tries == 5


def test_training_failure_on_page_one_reason() -> None:
    sched = Scheduler(RetryPolicy(max_tries=1))
    sched.add(make_job(pages=2), T0)
    d = call(sched, "j1", Cause.LINE_ERROR, T0, reason="training failed at 2400 bit/s")
    assert d.action is Action.FAILED
    assert d.reason == "stopped at page 1 of 2: training failed at 2400 bit/s"


def test_job_options_override_limits() -> None:
    sched = Scheduler()
    sched.add(make_job(options={"max_dials": 1}), T0)
    d = call(sched, "j1", Cause.BUSY, T0)
    assert d.action is Action.FAILED and d.reason == "busy"
    with pytest.raises(JobFormatError, match="max_tries"):
        make_job(options={"max_tries": 0})
    with pytest.raises(JobFormatError, match="max_dials"):
        make_job(options={"max_dials": "3"})


def test_pages_sent_never_passes_the_end() -> None:
    sched = Scheduler()
    job = make_job(pages=2)
    sched.add(job, T0)
    call(sched, "j1", Cause.LINE_ERROR, T0, pages_sent=7)
    assert job.next_page == 3


def test_finished_needs_an_active_job() -> None:
    sched = Scheduler()
    sched.add(make_job(), T0)
    with pytest.raises(SchedulerError, match="not in a call"):
        sched.finished("j1", Attempt(T0, T0, Cause.OK), T0)
    with pytest.raises(UnknownJobError):
        sched.finished("nope", Attempt(T0, T0, Cause.OK), T0)


# -- queue, concurrency, send_at -----------------------------------------------------------


def test_fifo_by_not_before_then_created() -> None:
    sched = Scheduler(default_limit=10, per_number=10)
    sched.add(make_job("c", created=T0 + 2, not_before=T0), T0)
    sched.add(make_job("a", created=T0 + 5, not_before=T0 - 10), T0)
    sched.add(make_job("b", created=T0 + 1, not_before=T0), T0)
    assert [j.id for j in sched.jobs()] == ["a", "b", "c"]
    due = sched.due(T0)
    assert [j.id for j in due] == ["a", "b", "c"]
    assert all(j.state is JobState.ACTIVE and j.dials == 1 for j in due)
    assert sched.due(T0) == []  # never handed out twice


def test_per_account_limit_and_default() -> None:
    sched = Scheduler(limits={"trunk": 2}, default_limit=1, per_number=5)
    for i in range(4):
        sched.add(make_job(f"t{i}", account="trunk", created=T0 + i), T0)
    for i in range(2):
        sched.add(make_job(f"d{i}", created=T0 + i), T0)
    assert [j.id for j in sched.due(T0)] == ["d0", "t0", "t1"]
    assert sched.due(T0 + 1) == []
    assert sched.next_wakeup() is None  # the rest only wait for a line
    sched.finished("t0", Attempt(T0, T0 + 60, Cause.OK), T0 + 60)
    assert [j.id for j in sched.due(T0 + 60)] == ["t2"]
    sched.finished("d0", Attempt(T0, T0 + 60, Cause.BUSY), T0 + 61)
    assert [j.id for j in sched.due(T0 + 62)] == ["d1"]


def test_one_call_per_number_at_a_time() -> None:
    sched = Scheduler(default_limit=5)
    sched.add(make_job("a", created=T0), T0)
    sched.add(make_job("b", created=T0 + 1), T0)
    sched.add(make_job("c", created=T0 + 2, number="+4930999"), T0)
    assert [j.id for j in sched.due(T0)] == ["a", "c"]
    sched.finished("a", Attempt(T0, T0 + 9, Cause.OK), T0 + 9)
    assert [j.id for j in sched.due(T0 + 9)] == ["b"]


def test_send_at_in_the_future() -> None:
    sched = Scheduler()
    sched.add(make_job(not_before=T0 + 3600), T0)
    assert sched.next_wakeup() == T0 + 3600
    assert sched.due(T0 + 3599) == []
    assert [j.id for j in sched.due(T0 + 3600)] == ["j1"]


def test_add_refuses_duplicates_and_final_jobs() -> None:
    sched = Scheduler()
    sched.add(make_job(), T0)
    with pytest.raises(SchedulerError, match="already"):
        sched.add(make_job(), T0)
    with pytest.raises(SchedulerError, match="not waiting"):
        sched.add(make_job("x", state=JobState.DONE), T0)


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        Scheduler(limits={"a": 0})
    with pytest.raises(ValueError):
        Scheduler(default_limit=0)


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_queued() -> None:
    sched = Scheduler()
    job = make_job(not_before=T0 + 999)
    sched.add(job, T0)
    d = sched.cancel("j1", T0 + 1)
    assert (d.action, d.reason, job.state, job.finished) == (
        Action.CANCELLED,
        "cancelled",
        JobState.CANCELLED,
        T0 + 1,
    )
    assert "j1" not in sched and sched.next_wakeup() is None


def test_cancel_sleeping_after_some_pages() -> None:
    sched = Scheduler()
    job = make_job()
    sched.add(job, T0)
    call(sched, "j1", Cause.LINE_ERROR, T0, pages_sent=2)
    assert job.state is JobState.SLEEPING
    d = sched.cancel("j1", T0 + 40)
    assert d.action is Action.CANCELLED and d.reason == "cancelled after 2 pages of 5"


def test_cancel_active_stops_then_cancels() -> None:
    sched = Scheduler()
    job = make_job()
    sched.add(job, T0)
    sched.due(T0)
    d = sched.cancel("j1", T0 + 5)
    assert d.action is Action.STOPPING and not d.is_final
    assert job.state is JobState.ACTIVE and job.cancel_requested
    # the call ends (whatever the line said): cancelled, not retried
    d = sched.finished("j1", Attempt(T0, T0 + 6, Cause.LINE_ERROR, pages_sent=1), T0 + 6)
    assert d.action is Action.CANCELLED and d.reason == "cancelled after 1 page of 5"
    assert d.job is job and d.job.state is JobState.CANCELLED


def test_cancel_active_but_fax_went_through() -> None:
    sched = Scheduler()
    sched.add(make_job(), T0)
    sched.due(T0)
    sched.cancel("j1", T0 + 5)
    d = sched.finished("j1", Attempt(T0, T0 + 6, Cause.OK, pages_sent=5), T0 + 6)
    assert d.action is Action.DONE


def test_cancel_finished_or_unknown_job() -> None:
    sched = Scheduler()
    sched.add(make_job(), T0)
    call(sched, "j1", Cause.OK, T0, pages_sent=5)
    with pytest.raises(UnknownJobError):
        sched.cancel("j1", T0 + 60)


# -- restart --------------------------------------------------------------------------------


def test_restore_after_crash_runs_the_active_job_once() -> None:
    # before the crash: j1 was in a call (second dial), j2 sleeping, j3 done, j4 being cancelled
    j1 = make_job("j1", state=JobState.ACTIVE, dials=2, tries=1, not_before=T0 - 500)
    j1.attempts.append(Attempt(T0 - 900, T0 - 800, Cause.LINE_ERROR, pages_sent=1))
    j1.next_page = 2
    j2 = make_job("j2", state=JobState.SLEEPING, not_before=T0 + 100, number="+4930111")
    j3 = make_job("j3", state=JobState.DONE, next_page=6, number="+4930222")
    j4 = make_job("j4", state=JobState.ACTIVE, cancel_requested=True, number="+4930333")
    restored = [Job.from_json(j.to_json()) for j in (j1, j2, j3, j4)]

    sched = Scheduler(default_limit=5)
    result = sched.restore(restored, T0)
    assert [j.id for j in result.requeued] == ["j1"]
    assert [(j.id, j.state) for j in result.finished] == [("j3", JobState.DONE), ("j4", JobState.CANCELLED)]
    r1 = sched.get("j1")
    assert (r1.state, r1.tries, r1.dials, r1.next_page) == (JobState.QUEUED, 1, 2, 2)
    assert r1.not_before == T0 - 500  # due now, ahead of later jobs
    assert sched.next_wakeup() == T0 - 500

    assert [j.id for j in sched.due(T0)] == ["j1"]
    assert sched.due(T0 + 1) == []  # not twice at once
    assert r1.dials == 3
    d = sched.finished("j1", Attempt(T0, T0 + 50, Cause.OK, pages_sent=4), T0 + 50)
    assert d.action is Action.DONE and r1.tries == 2
    with pytest.raises(SchedulerError):
        sched.restore([make_job("j2")], T0)


def test_restored_job_still_ends_at_max_dials() -> None:
    sched = Scheduler(RetryPolicy(max_dials=3))
    job = make_job(state=JobState.ACTIVE, dials=3)
    job.attempts.extend(Attempt(T0, T0, Cause.BUSY) for _ in range(2))
    sched.restore([job], T0)
    d = call(sched, "j1", Cause.BUSY, T0)
    assert d.action is Action.FAILED and d.reason == "busy on all 3 tries"


# -- JSON -----------------------------------------------------------------------------------


def full_job() -> Job:
    job = make_job(
        account="trunk",
        options={"notify": "always", "resolution": "fine", "max_tries": 5},
        next_page=3,
        state=JobState.SLEEPING,
        tries=1,
        dials=2,
        final_reason="",
        cancel_requested=False,
    )
    job.attempts.append(Attempt(T0, T0 + 30.5, Cause.BUSY, sip_code=486, reason="486 Busy Here"))
    job.attempts.append(
        Attempt(
            T0 + 300,
            T0 + 420,
            Cause.LINE_ERROR,
            pages_sent=2,
            reason="no MCF for page 3",
            remote_csid="+49 89 123456",
            rate=9600,
            sip_code=200,
            transport="t38",
        )
    )
    return job


def test_json_round_trip() -> None:
    job = full_job()
    text = job.to_json()
    data = json.loads(text)
    assert data["v"] == FORMAT_VERSION
    assert data["state"] == "sleeping" and data["attempts"][1]["cause"] == "line_error"
    back = Job.from_json(text)
    assert back == job
    assert back.to_json() == text  # stable
    assert Job.from_json(text.encode("utf-8")) == job
    done = replace(job, state=JobState.DONE, finished=T0 + 500, final_reason="sent 5 pages")
    assert Job.from_json(done.to_json()) == done


def test_json_is_sorted_and_readable() -> None:
    text = full_job().to_json()
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith(' "')]
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": 2}, "version"),
        ({"v": None}, "version"),
        ({"v": True}, "version"),
        ({"pages": "5"}, "pages"),
        ({"pages": 0}, "at least one page"),
        ({"state": "flying"}, "state"),
        ({"number": None}, "number"),
        ({"attempts": [{"start": 1, "end": 2, "cause": "meh"}]}, "cause"),
        ({"attempts": "none"}, "attempts"),
        ({"options": []}, "options"),
        ({"not_before": True}, "not_before"),
        ({"next_page": 9}, "next_page"),
        ({"cancel_requested": 1}, "cancel_requested"),
    ],
)
def test_json_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    data = json.loads(full_job().to_json())
    data.update(change)
    with pytest.raises(JobFormatError, match=message):
        Job.from_json(json.dumps(data))


def test_json_missing_field_and_garbage() -> None:
    data = json.loads(full_job().to_json())
    del data["sender"]
    with pytest.raises(JobFormatError, match="'sender' is missing"):
        Job.from_json(json.dumps(data))
    with pytest.raises(JobFormatError, match="not valid JSON"):
        Job.from_json('{"v": 1, "id": "x"')
    with pytest.raises(JobFormatError, match="object"):
        Job.from_json("[1, 2]")


def test_options_that_are_not_json_are_a_clear_error() -> None:
    job = make_job(options={"when": object()})
    with pytest.raises(JobFormatError, match="cannot be written as JSON"):
        job.to_json()
    with pytest.raises(JobFormatError, match="cannot be written as JSON"):
        make_job(not_before=float("nan")).to_json()
