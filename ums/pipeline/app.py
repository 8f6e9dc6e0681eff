"""The Celery application of the pipeline, its broker, and the per-process context.

What it does
------------
``make_app(config)`` builds the :class:`celery.Celery` app that runs the
pipeline tasks (:mod:`ums.pipeline.tasks`).  The broker is chosen by
``[pipeline] broker``:

* empty (the default): an embedded queue in the data directory,
  ``<data_dir>/queue/in``, served by kombu's filesystem transport.  No service
  to install or run; one machine; the queue-to-start latency is the polling
  interval ``[pipeline] poll_interval`` (0.1 s gives about 45 ms, measured);
* ``redis://host:port/db``: Redis, for workers on other machines
  (``celery -A ums.pipeline.worker worker``, see :mod:`ums.pipeline.worker`).

``configure(config)`` makes the *current context* of the process — the
config, the app, the spool, the message index, the mail settings — which the
tasks read.  The configuration never travels in task messages: every process
(the server that submits, each worker) loads the same configuration file and
calls ``configure`` once.

How it works
------------
Tasks return nothing to anyone: no result backend, ``task_ignore_result``.
``task_acks_late`` with ``worker_prefetch_multiplier = 1``: a worker holds one
message at a time and acknowledges it when the task has run.  JSON only.

The embedded queue is kombu's filesystem transport with two changes
(:class:`SpoolQueueTransport`): a message file is written under a hidden
temporary name, fsynced and renamed into ``in/``, so a polling consumer never
reads half a message; and a consumer takes a message by renaming it into
``processed/`` on the same file system, so of two workers exactly one gets it
(stock kombu moves it to the system temporary directory, which is a copy on
another file system).  Neither transport is the source of truth: the message
index is.  A message lost with a killed worker is found again by the sweep
(:func:`ums.pipeline.tasks.sweep`) through its expired delivery lease.

The index is opened lazily and again after a ``fork`` (Celery's prefork pool):
an SQLite connection must not cross a fork.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.json import dumps, loads

from ums.config import Config, MailSettings
from ums.directory.lookup import Directory, DirectorySettings, NumberPlan, load_directory
from ums.log import kv
from ums.mailgate.mime import ComposeSettings
from ums.mailgate.smtp_out import SmtpSettings
from ums.store.index import MessageIndex
from ums.store.retry import RetryPolicy
from ums.store.spool import Spool

__all__ = [
    "QUEUE",
    "PipelineContext",
    "SpoolQueueTransport",
    "compose_settings",
    "configure",
    "current",
    "make_app",
    "queue_dirs",
    "reset",
    "smtp_settings",
]

log = logging.getLogger("ums.pipeline")

#: the one queue all pipeline tasks go through
QUEUE = "ums"


# -- the embedded broker -------------------------------------------------------------------------------
class _SpoolQueueChannel(filesystem.Channel):
    """kombu's filesystem channel with atomic publish and atomic take."""

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        # zero-padded so that names sort by time (kombu's own are not padded)
        name = f"{round(monotonic() * 1000):015d}_{uuid.uuid4()}.{queue}.msg"
        folder = Path(self.data_folder_out)
        tmp = folder / f".{name}.tmp"  # a leading dot: never taken for a message
        try:
            with open(tmp, "xb") as fh:
                fh.write(dumps(payload).encode("utf-8"))  # type: ignore[no-untyped-call]
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ChannelError(f"cannot add {name!r} to {folder}") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        wanted = f"{queue}.msg"
        folder = Path(self.data_folder_in)
        taken = Path(self.processed_folder)
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != wanted:
                continue
            claim = taken / name
            try:
                os.rename(folder / name, claim)  # atomic: one consumer wins
            except FileNotFoundError:
                continue  # another worker took it
            try:
                payload = claim.read_bytes()
            finally:
                if not self.store_processed:
                    claim.unlink(missing_ok=True)
            try:
                return loads(payload.decode("utf-8"))  # type: ignore[no-untyped-call]
            except ValueError:
                log.error(kv("pipeline.queue_bad_message", file=name))
                continue
        raise Empty()


class SpoolQueueTransport(filesystem.Transport):
    """The embedded broker: kombu's filesystem transport, with :class:`_SpoolQueueChannel`."""

    Channel = _SpoolQueueChannel
    global_state = virtual.BrokerState()  # type: ignore[no-untyped-call]
    driver_name = "ums-spool-queue"


def queue_dirs(data_dir: Path) -> dict[str, Path]:
    """The folders of the embedded queue under the data directory."""
    base = Path(data_dir) / "queue"
    return {"in": base / "in", "processed": base / "processed", "control": base / "control"}


# -- the app -------------------------------------------------------------------------------------------
def make_app(config: Config, *, eager: bool = False) -> Celery:
    """The Celery app for ``config``, with the pipeline tasks registered.

    ``eager`` runs every task in the calling process at once (unit tests).
    """
    app = Celery("ums")
    pl = config.pipeline
    conf: dict[str, Any] = {
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 4.0,
        "task_default_queue": QUEUE,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "enable_utc": True,
        "timezone": "UTC",
        "task_always_eager": eager,
        "task_eager_propagates": eager,
        "task_store_eager_result": False,
    }
    broker = pl.broker
    if not broker or broker.startswith("filesystem://"):
        dirs = queue_dirs(config.server.data_dir)
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        conf.update(
            broker_url="filesystem://localhost/",
            broker_transport=SpoolQueueTransport,
            broker_transport_options={
                "data_folder_in": str(dirs["in"]),
                "data_folder_out": str(dirs["in"]),
                "processed_folder": str(dirs["processed"]),
                "control_folder": str(dirs["control"]),
                "store_processed": False,
                "polling_interval": pl.poll_interval,
            },
            # broadcast (remote control) has no use on one machine and would need fanout files
            worker_enable_remote_control=False,
        )
    else:
        mail = config.mail
        conf.update(
            broker_url=broker,
            broker_transport_options={
                # an unacknowledged message (also one waiting for its retry time) goes back to the
                # queue after this long; it must outlast the longest retry wait and one attempt
                "visibility_timeout": int(2 * mail.retry_max + delivery_lease(mail).total_seconds()),
                "socket_connect_timeout": 2.0,
            },
        )
    app.conf.update(conf)
    from ums.pipeline.tasks import register_tasks

    register_tasks(app)
    return app


# -- settings derived from the configuration -----------------------------------------------------------
def compose_settings(mail: MailSettings) -> ComposeSettings:
    return ComposeSettings(
        from_addr=mail.sender,
        from_name=mail.from_name,
        reply_to=mail.reply_to,
        admin=mail.admin,
        timezone=mail.timezone,
    )


def smtp_settings(mail: MailSettings) -> SmtpSettings | None:
    """The smarthost, or None when mail goes to the local Maildir."""
    if not mail.smarthost:
        return None
    host, sep, port = mail.smarthost.rpartition(":")
    if not sep:
        host, port = mail.smarthost, "25"
    return SmtpSettings(
        host=host.strip("[]"),
        port=int(port),
        starttls=mail.starttls,
        username=mail.username,
        password=mail.password,
        timeout=mail.smtp_timeout,
    )


def retry_policy(mail: MailSettings) -> RetryPolicy:
    return RetryPolicy(
        first=mail.retry_first, cap=mail.retry_max, give_up_after=timedelta(days=mail.give_up_days)
    )


def delivery_lease(mail: MailSettings) -> timedelta:
    """How long one delivery attempt may hold a message: well above the SMTP time-outs of one
    attempt (connect, greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, end of data)."""
    return timedelta(seconds=max(120.0, 10 * mail.smtp_timeout))


def _directory(config: Config) -> Directory:
    d = config.directory
    plan = NumberPlan(d.country_code, d.international_prefix, d.national_prefix)
    settings = DirectorySettings(
        entries=d.entries,
        csv_path=Path(d.csv) if d.csv else None,
        plan=plan,
        company_search=d.company_search,
        company_min_digits=d.company_min_digits,
    )
    try:
        return load_directory(settings)
    except (OSError, ValueError) as exc:
        log.error(kv("pipeline.directory_failed", csv=d.csv, reason=exc))
        return load_directory(DirectorySettings(entries=d.entries, plan=plan))


# -- the current context ---------------------------------------------------------------------------------
def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PipelineContext:
    """Everything a task needs, built from the configuration once per process."""

    config: Config
    app: Celery
    spool: Spool
    maildir_root: Path
    compose: ComposeSettings
    smtp: SmtpSettings | None
    retry: RetryPolicy
    lease: timedelta
    directory: Directory
    clock: Callable[[], datetime] = _utcnow
    rng: random.Random = field(default_factory=random.Random)
    _index: MessageIndex | None = None
    _index_pid: int = 0
    _owns_index: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def index(self) -> MessageIndex:
        """The message index of this process (opened on first use, again after a fork)."""
        with self._lock:
            if self._index is None or self._index_pid != os.getpid():
                self._index = MessageIndex(self.config.server.data_dir / "index.sqlite")
                self._index_pid = os.getpid()
            return self._index

    @property
    def via(self) -> str:
        return "smtp" if self.smtp is not None else "maildir"

    def close(self) -> None:
        with self._lock:
            if self._index is not None and self._index_pid == os.getpid() and self._owns_index:
                self._index.close()
            self._index = None


_current: PipelineContext | None = None


def configure(
    config: Config,
    *,
    app: Celery | None = None,
    eager: bool = False,
    clock: Callable[[], datetime] | None = None,
    rng: random.Random | None = None,
    index: MessageIndex | None = None,
) -> PipelineContext:
    """Make the context of this process from ``config`` (replacing an earlier one) and return it.

    ``index`` shares an index the caller has open already (the server's); otherwise the context
    opens ``<data_dir>/index.sqlite`` itself on first use.
    """
    global _current
    mail = config.mail
    data = config.server.data_dir
    ctx = PipelineContext(
        config=config,
        app=app if app is not None else make_app(config, eager=eager),
        spool=Spool(data / "spool"),
        maildir_root=data / "maildir",
        compose=compose_settings(mail),
        smtp=smtp_settings(mail),
        retry=retry_policy(mail),
        lease=delivery_lease(mail),
        directory=_directory(config),
        clock=clock or _utcnow,
        rng=rng or random.Random(),
    )
    if index is not None:
        ctx._index, ctx._index_pid, ctx._owns_index = index, os.getpid(), False
    old, _current = _current, ctx
    if old is not None:
        old.close()
    return ctx


def current() -> PipelineContext:
    """The context of this process; RuntimeError before :func:`configure`."""
    if _current is None:
        raise RuntimeError("the pipeline is not configured in this process (call ums.pipeline.configure)")
    return _current


def reset() -> None:
    """Forget the current context (tests); an index the context opened itself is closed."""
    global _current
    if _current is not None:
        _current.close()
    _current = None
