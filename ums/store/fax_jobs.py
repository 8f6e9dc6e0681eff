"""Outbound fax jobs on disk: one directory per job, written so that a crash never loses one.

What it does
------------
:class:`FaxJobStore` keeps each job under ``root/<id>/``:

* ``mail.eml`` -- the mail as it was received (the source of every later rendering);
* ``job.json`` -- the job record (``Job.to_json``), replaced atomically on every ``save``;
* any other files the caller adds with ``put_file`` (rendered pages, the cover page, ...).

``create(job, mail)`` is durable when it returns, so the SMTP front end may answer 250 only
after it.  ``load_all()`` (at start-up) returns every job on disk; a directory it cannot read is
logged and skipped, never fatal.  After the final report, ``archive`` moves a job to
``root/_archive/<id>/`` (``prune(now, keep_days)`` deletes archived jobs older than that) or
``remove`` deletes it.  :func:`new_job_id` makes a job id.

The store does not import the job model (``ums.outbound`` sits above ``ums.store``): it keeps
any object with an ``id`` and ``to_json()``, and reads ``job.json`` back with the ``decode``
function it is given, e.g. ``FaxJobStore(root, Job.from_json)``.

Blocking (fsync): call it from a worker thread when an event loop is running.

How it works
------------
Every file is written with :class:`ums.store.spool.Spool`: a temporary file in the same
directory, ``fsync``, ``rename`` over the final name (atomic, POSIX ``rename(2)``), ``fsync`` of
the directory.  ``job.json`` is the commit mark of a job: ``create`` makes the directory, writes
``mail.eml``, then ``job.json``, so a job directory without ``job.json`` is a ``create`` that a
crash interrupted (nobody was told "250"); ``load_all`` removes it.  Leftover temporary files
(``.*.tmp``) of a torn write are removed too; the ``job.json`` before them stays valid.
``remove`` deletes ``job.json`` first (durably), then the rest.  ``archive`` writes
``archived_at`` (the time, for ``prune``) into the job directory and renames the directory into
``_archive/``; ``load_all`` finishes an archive a crash interrupted between the two steps.

Job ids are ``YYYYMMDD-HHMMSS-mmm-xxxxxxxx`` (UTC time of creation, milliseconds, 32 random
bits as hex): they sort by creation time and are safe as directory names.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from ums.log import kv
from ums.store.spool import Spool, fsync_dir

__all__ = [
    "ARCHIVE_DIR",
    "JOB_FILE",
    "MAIL_FILE",
    "FaxJobStore",
    "FaxJobStoreError",
    "StoredJob",
    "new_job_id",
]

log = logging.getLogger("ums.store.fax_jobs")

JOB_FILE = "job.json"
MAIL_FILE = "mail.eml"
ARCHIVE_DIR = "_archive"
_ARCHIVED_AT = "archived_at"
_RESERVED = frozenset({JOB_FILE, MAIL_FILE, _ARCHIVED_AT})
#: a job id: starts with a letter or digit (so never ``_archive`` or a hidden temp name)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DAY = 86400.0


class FaxJobStoreError(ValueError):
    """A bad job id or file name, an unknown job, or a job that exists already."""


class StoredJob(Protocol):
    """What the store needs of a job."""

    @property
    def id(self) -> str: ...

    def to_json(self) -> str: ...


J = TypeVar("J", bound=StoredJob)


def new_job_id(now: float, rng: random.Random) -> str:
    """A sortable unique job id: UTC time of ``now`` to the millisecond, then 32 random bits."""
    ms = int(now * 1000)
    if ms < 0:
        raise ValueError(f"time before the epoch: {now!r}")
    stamp = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{ms % 1000:03d}-{rng.getrandbits(32):08x}"


def _check_id(job_id: str) -> str:
    if not _ID_RE.match(job_id):
        raise FaxJobStoreError(f"not a usable job id: {job_id!r}")
    return job_id


class FaxJobStore(Generic[J]):
    """Job directories under ``root``; ``decode`` turns a ``job.json`` back into a job."""

    def __init__(self, root: str | Path, decode: Callable[[str], J]) -> None:
        self._spool = Spool(root)
        self.root = self._spool.root
        self._decode = decode

    # -- paths ----------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.root / _check_id(job_id)

    def archive_dir(self, job_id: str) -> Path:
        return self.root / ARCHIVE_DIR / _check_id(job_id)

    def exists(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / JOB_FILE).is_file()

    def _existing(self, job_id: str) -> Path:
        d = self.job_dir(job_id)
        if not (d / JOB_FILE).is_file():
            raise FaxJobStoreError(f"no job {job_id!r} in {self.root}")
        return d

    # -- writing --------------------------------------------------------------------------

    def create(self, job: J, mail: bytes) -> Path:
        """Store a new job and its mail; durable on return.  Returns the job directory."""
        d = self.job_dir(job.id)
        try:
            d.mkdir()
        except FileExistsError:
            raise FaxJobStoreError(f"job {job.id} exists already") from None
        fsync_dir(self.root)
        self._spool.write_atomic(f"{job.id}/{MAIL_FILE}", mail)
        self._spool.write_atomic(f"{job.id}/{JOB_FILE}", job.to_json().encode("utf-8"))
        log.info(kv("faxjob.created", job=job.id, mail_bytes=len(mail)))
        return d

    def save(self, job: J) -> None:
        """Replace ``job.json`` of an existing job (atomically, durably)."""
        self._existing(job.id)
        self._spool.write_atomic(f"{job.id}/{JOB_FILE}", job.to_json().encode("utf-8"))

    def put_file(self, job_id: str, name: str, data: bytes) -> Path:
        """Store (or replace) a file of the job, such as a rendered page; durable on return."""
        self._existing(job_id)
        if not _NAME_RE.match(name) or name in _RESERVED:
            raise FaxJobStoreError(f"not a usable file name for a job: {name!r}")
        return self._spool.write_atomic(f"{job_id}/{name}", data)

    # -- reading --------------------------------------------------------------------------

    def read_mail(self, job_id: str) -> bytes:
        return (self._existing(job_id) / MAIL_FILE).read_bytes()

    def read_file(self, job_id: str, name: str) -> bytes:
        if not _NAME_RE.match(name):
            raise FaxJobStoreError(f"not a usable file name for a job: {name!r}")
        return (self._existing(job_id) / name).read_bytes()

    def files(self, job_id: str) -> list[str]:
        """Names of the files added with ``put_file``, sorted."""
        d = self._existing(job_id)
        return sorted(
            p.name for p in d.iterdir() if p.is_file() and _NAME_RE.match(p.name) and p.name not in _RESERVED
        )

    def load(self, job_id: str) -> J:
        return self._decode((self._existing(job_id) / JOB_FILE).read_text(encoding="utf-8"))

    def load_all(self) -> list[J]:
        """Every job on disk, by id (creation order).  Call at start-up, before any write.

        Removes the leftovers of a crash: temporary files, job directories without ``job.json``
        (an interrupted ``create`` or ``remove``); finishes an interrupted ``archive``.  A job
        whose ``job.json`` cannot be read or decoded is logged and skipped (left on disk).
        """
        for tmp in self._spool.cleanup_temp():
            log.warning(kv("faxjob.temp_removed", path=str(tmp)))
        jobs: list[J] = []
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or not _ID_RE.match(d.name):
                continue
            if (d / _ARCHIVED_AT).is_file():
                self._move_to_archive(d)
                log.warning(kv("faxjob.archive_finished", job=d.name))
                continue
            if not (d / JOB_FILE).is_file():
                shutil.rmtree(d)
                fsync_dir(self.root)
                log.warning(kv("faxjob.incomplete_removed", job=d.name))
                continue
            try:
                job = self._decode((d / JOB_FILE).read_text(encoding="utf-8"))
                if job.id != d.name:
                    raise ValueError(f"job.json has id {job.id!r}")
            except (OSError, ValueError) as exc:
                log.error(kv("faxjob.unreadable", job=d.name, error=str(exc)))
                continue
            jobs.append(job)
        return jobs

    # -- ending ---------------------------------------------------------------------------

    def remove(self, job_id: str) -> bool:
        """Delete a job and its files; False when there was none."""
        d = self.job_dir(job_id)
        try:
            (d / JOB_FILE).unlink()
        except FileNotFoundError:
            return False
        fsync_dir(d)  # from here on the job is gone, whatever else a crash leaves
        shutil.rmtree(d)
        fsync_dir(self.root)
        log.info(kv("faxjob.removed", job=job_id))
        return True

    def archive(self, job_id: str, now: float) -> Path:
        """Move a finished job to ``_archive/<id>/``, remembering ``now`` for ``prune``."""
        d = self._existing(job_id)
        self._spool.write_atomic(f"{job_id}/{_ARCHIVED_AT}", f"{now!r}\n".encode("ascii"))
        target = self._move_to_archive(d)
        log.info(kv("faxjob.archived", job=job_id))
        return target

    def _move_to_archive(self, d: Path) -> Path:
        archive = self.root / ARCHIVE_DIR
        if not archive.is_dir():
            archive.mkdir(exist_ok=True)
            fsync_dir(self.root)
        target = archive / d.name
        if target.exists():  # archived before under the same id: keep the newer one
            shutil.rmtree(target)
        os.replace(d, target)
        fsync_dir(self.root)
        fsync_dir(archive)
        return target

    def archived(self) -> list[str]:
        """Ids of the archived jobs, sorted."""
        archive = self.root / ARCHIVE_DIR
        if not archive.is_dir():
            return []
        return sorted(p.name for p in archive.iterdir() if p.is_dir() and _ID_RE.match(p.name))

    def load_archived(self, job_id: str) -> J:
        return self._decode((self.archive_dir(job_id) / JOB_FILE).read_text(encoding="utf-8"))

    def prune(self, now: float, keep_days: float) -> list[str]:
        """Delete archived jobs archived more than ``keep_days`` before ``now``; returns their ids."""
        if keep_days < 0:
            raise ValueError("keep_days must be >= 0")
        limit = now - keep_days * _DAY
        archive = self.root / ARCHIVE_DIR
        removed: list[str] = []
        for job_id in self.archived():
            d = archive / job_id
            if _archived_at(d) > limit:
                continue
            doomed = archive / f".{job_id}.deleting"
            os.replace(d, doomed)
            shutil.rmtree(doomed)
            removed.append(job_id)
        if archive.is_dir():
            for leftover in archive.glob(".*.deleting"):  # a prune a crash interrupted
                shutil.rmtree(leftover)
            if removed:
                fsync_dir(archive)
        if removed:
            log.info(kv("faxjob.pruned", count=len(removed)))
        return removed


def _archived_at(d: Path) -> float:
    """The time written by ``archive``; the directory's mtime if the file is unreadable."""
    try:
        return float((d / _ARCHIVED_AT).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return d.stat().st_mtime
