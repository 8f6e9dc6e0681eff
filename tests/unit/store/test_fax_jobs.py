"""Outbound fax jobs on disk: durable create, torn writes, crash leftovers, archive and prune."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ums.outbound.jobs import Job, JobState
from ums.store.fax_jobs import ARCHIVE_DIR, FaxJobStore, FaxJobStoreError, new_job_id

T0 = 1_764_000_000.0
REPO = Path(__file__).resolve().parents[3]
MAIL = b"From: alice@example.com\r\nTo: 4989123456@fax.example.com\r\nSubject: offer\r\n\r\nHello\r\n"


def make_job(job_id: str, **kw: Any) -> Job:
    return Job(
        id=job_id,
        number="+4989123456",
        dial="089123456",
        sender="alice@example.com",
        pages=3,
        created=T0,
        **kw,
    )


def store_at(root: Path) -> FaxJobStore[Job]:
    return FaxJobStore(root, Job.from_json)


def test_job_ids_sort_by_time_and_differ() -> None:
    rng = random.Random(7)
    a = new_job_id(T0, rng)
    b = new_job_id(T0, rng)
    c = new_job_id(T0 + 0.001, rng)
    d = new_job_id(T0 + 86400 * 400, rng)
    assert a != b
    assert a[:19] == b[:19] == "20251124-160000-000"
    assert sorted([d, c, a]) == [a, c, d]
    assert c[:19] == "20251124-160000-001"
    assert new_job_id(T0, random.Random(7)) == a  # reproducible with a seeded rng
    with pytest.raises(ValueError):
        new_job_id(-1.0, rng)


def test_create_load_save(tmp_path: Path) -> None:
    store = store_at(tmp_path / "jobs")
    job = make_job(new_job_id(T0, random.Random(1)))
    d = store.create(job, MAIL)
    assert d == tmp_path / "jobs" / job.id
    assert sorted(p.name for p in d.iterdir()) == ["job.json", "mail.eml"]
    assert store.read_mail(job.id) == MAIL
    assert store.load_all() == [job]
    job.state = JobState.SLEEPING
    job.dials = 1
    store.save(job)
    assert store.load(job.id) == job
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []  # no temp files left
    with pytest.raises(FaxJobStoreError, match="exists"):
        store.create(job, MAIL)
    with pytest.raises(FaxJobStoreError, match="no job"):
        store.save(make_job("other"))


def test_put_file_and_names(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.create(make_job("j1"), MAIL)
    store.put_file("j1", "page-0001.tif", b"II*\x00")
    store.put_file("j1", "cover.pdf", b"%PDF")
    store.put_file("j1", "page-0001.tif", b"II*\x00new")
    assert store.files("j1") == ["cover.pdf", "page-0001.tif"]
    assert store.read_file("j1", "page-0001.tif") == b"II*\x00new"
    for bad in ("job.json", "mail.eml", "../x", ".hidden", "a/b", ""):
        with pytest.raises(FaxJobStoreError):
            store.put_file("j1", bad, b"x")
    with pytest.raises(FaxJobStoreError, match="no job"):
        store.put_file("nope", "page.tif", b"x")


@pytest.mark.parametrize("bad", ["", "../x", ".j", "_archive", "a/b", "x" * 65])
def test_bad_ids_are_refused(tmp_path: Path, bad: str) -> None:
    store = store_at(tmp_path)
    with pytest.raises(FaxJobStoreError, match="job id"):
        store.job_dir(bad)


def test_load_all_orders_by_id(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    rng = random.Random(3)
    ids = [new_job_id(T0 + i, rng) for i in range(5)]
    for job_id in reversed(ids):
        store.create(make_job(job_id), MAIL)
    assert [j.id for j in store.load_all()] == ids


def test_torn_write_is_ignored(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    job = make_job("j1")
    store.create(job, MAIL)
    d = tmp_path / "j1"
    # a save that died before its rename: the temp file is half written, job.json is the old one
    (d / ".job.json.0123456789ab.tmp").write_bytes(b'{"v": 1, "id": "j1", "sta')
    (d / "job.json.tmp").write_bytes(b"garbage")
    assert store.load_all() == [job]
    assert not (d / ".job.json.0123456789ab.tmp").exists()  # crash leftovers are removed
    # a create that died while writing job.json: only a temp file, no job.json
    (tmp_path / "j2").mkdir()
    (tmp_path / "j2" / "mail.eml").write_bytes(MAIL)
    (tmp_path / "j2" / ".job.json.ffffffffffff.tmp").write_bytes(b"{")
    assert store.load_all() == [job]
    assert not (tmp_path / "j2").exists()


def test_broken_directory_is_skipped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = store_at(tmp_path)
    store.create(make_job("good"), MAIL)
    store.create(make_job("bad"), MAIL)
    (tmp_path / "bad" / "job.json").write_text("{not json", encoding="utf-8")
    store.create(make_job("wrongid"), MAIL)
    (tmp_path / "wrongid" / "job.json").write_text(make_job("other").to_json(), encoding="utf-8")
    (tmp_path / "stray.txt").write_text("x", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="ums.store.fax_jobs"):
        jobs = store.load_all()
    assert [j.id for j in jobs] == ["good"]
    assert "job=bad" in caplog.text and "job=wrongid" in caplog.text
    assert (tmp_path / "bad" / "mail.eml").exists()  # left for the admin: nothing is lost


def test_remove(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.create(make_job("j1"), MAIL)
    store.put_file("j1", "page-0001.tif", b"x")
    assert store.remove("j1") is True
    assert not (tmp_path / "j1").exists()
    assert store.remove("j1") is False
    assert store.load_all() == []


def test_remove_interrupted_after_job_json(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.create(make_job("j1"), MAIL)
    (tmp_path / "j1" / "job.json").unlink()  # remove's first step, then the crash
    assert store.load_all() == []
    assert not (tmp_path / "j1").exists()


def test_archive_and_prune(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    for i, job_id in enumerate(["a", "b", "c"]):
        store.create(make_job(job_id, state=JobState.DONE), MAIL)
        store.put_file(job_id, "page-0001.tif", b"x")
        store.archive(job_id, T0 + i * 86400)
    assert store.load_all() == []
    assert store.archived() == ["a", "b", "c"]
    assert store.load_archived("b").state is JobState.DONE
    assert (tmp_path / ARCHIVE_DIR / "a" / "page-0001.tif").exists()
    assert store.prune(T0 + 7 * 86400, keep_days=7) == ["a"]
    assert store.prune(T0 + 7 * 86400, keep_days=7) == []
    assert store.prune(T0 + 9 * 86400, keep_days=7) == ["b", "c"]
    assert store.archived() == []
    assert list((tmp_path / ARCHIVE_DIR).iterdir()) == []
    with pytest.raises(FaxJobStoreError):
        store.archive("a", T0)


def test_archive_interrupted_before_the_move(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.create(make_job("j1", state=JobState.FAILED), MAIL)
    (tmp_path / "j1" / "archived_at").write_text(f"{T0!r}\n", encoding="ascii")  # step 1, then crash
    assert store.load_all() == []
    assert store.archived() == ["j1"]
    assert store.prune(T0 + 86400, keep_days=1) == ["j1"]


def test_prune_leftover_and_unreadable_marker(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.create(make_job("j1", state=JobState.DONE), MAIL)
    target = store.archive("j1", T0)
    (target / "archived_at").write_text("?", encoding="ascii")
    os.utime(target, (T0 - 86400, T0 - 86400))  # falls back to the directory's mtime
    (tmp_path / ARCHIVE_DIR / ".old.deleting").mkdir()
    assert store.prune(T0, keep_days=0.5) == ["j1"]
    assert list((tmp_path / ARCHIVE_DIR).iterdir()) == []


_CHILD = textwrap.dedent(
    """
    import os, random, signal, sys
    from ums.outbound.jobs import Job
    from ums.store.fax_jobs import FaxJobStore, new_job_id

    store = FaxJobStore(sys.argv[1], Job.from_json)
    job_id = new_job_id(1764000000.0, random.Random(42))
    job = Job(id=job_id, number="+4989123456", dial="089123456", sender="a@example.com",
              pages=2, created=1764000000.0)
    store.create(job, b"Subject: x\\r\\n\\r\\nbody\\r\\n")
    os.kill(os.getpid(), signal.SIGKILL)   # the instant create returned, before anything else
    """
)


def test_job_survives_sigkill_right_after_create(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root)], env=env, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")
    jobs = store_at(root).load_all()
    expected_id = new_job_id(T0, random.Random(42))
    assert [j.id for j in jobs] == [expected_id]
    assert store_at(root).read_mail(expected_id) == b"Subject: x\r\n\r\nbody\r\n"
    assert store_at(root).load_all() == jobs  # found exactly once, and again after a second start


_CHILD_KILLED_AT = textwrap.dedent(
    """
    import os, random, signal, sys
    from ums.outbound.jobs import Job
    from ums.store.fax_jobs import FaxJobStore

    kill_at = int(sys.argv[2])
    calls = 0

    def crash_point(real):
        def wrapper(*args, **kwargs):
            global calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapper

    store = FaxJobStore(sys.argv[1], Job.from_json)
    os.fsync = crash_point(os.fsync)
    os.replace = crash_point(os.replace)
    job = Job(id="j1", number="+4989123456", dial="089123456", sender="a@example.com",
              pages=2, created=1764000000.0)
    store.create(job, b"mail")
    print("returned", flush=True)
    """
)


def test_sigkill_at_every_step_of_create(tmp_path: Path) -> None:
    """Killed before any fsync or rename of create: the job is there whole, or not at all."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    outcomes = []
    for kill_at in range(1, 20):
        root = tmp_path / f"run{kill_at}"
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD_KILLED_AT, str(root), str(kill_at)],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        returned = proc.stdout == b"returned\n"
        assert returned or proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")
        jobs = store_at(root).load_all()
        assert [j.id for j in jobs] in ([], ["j1"])
        if jobs:
            assert store_at(root).read_mail("j1") == b"mail"
        assert sorted(p.name for p in root.iterdir()) == (["j1"] if jobs else [])
        outcomes.append((returned, len(jobs)))
        if returned:
            break
    assert outcomes[0] == (False, 0)
    assert outcomes[-1] == (True, 1)
    assert (False, 1) in outcomes  # killed after the rename of job.json: the job is there
