"""Pipeline workers: one in this process, or child processes for ``ums serve``.

What it does
------------
``run_worker(config, concurrency)`` runs a Celery worker in the calling
process until SIGTERM/SIGINT (warm shutdown: the task in hand finishes, queued
messages stay queued) and returns its exit code.  ``python -m
ums.pipeline.worker --config FILE [--data-dir DIR]`` does the same from the
command line (``ums worker`` calls ``run_worker`` too).

``spawn_embedded_workers(config, config_path, data_dir, n)`` starts ``n``
worker processes for ``ums serve`` (threads pool, ``EMBEDDED_CONCURRENCY`` tasks
at once each) and ``stop_workers(procs, timeout)`` stops
them (SIGTERM, SIGKILL after the timeout).

Scale-out with Redis (``[pipeline] broker = "redis://host:6379/0"``): run
workers on any machine that sees the same data directory (the spool and the
index live there) and the same configuration file, either::

    ums worker --config /etc/ums/ums.toml --concurrency 4

or with Celery's own command line (the app is built from ``UMS_CONFIG``)::

    UMS_CONFIG=/etc/ums/ums.toml celery -A ums.pipeline.worker worker \\
        --pool=threads --concurrency=4 --without-gossip --without-mingle --without-heartbeat

and set ``[pipeline] workers = 0`` on the server if it should start none itself.

How it works
------------
``app.Worker`` (what ``celery worker`` builds) with the solo pool for one
task at a time and the threads pool for more (the tasks wait on disk and
SMTP; the index serialises its writes).  Gossip, mingle and heartbeats are
off: workers need not know each other.

Embedded workers are children of the server, in their own session (a Ctrl-C
in the terminal reaches the server, which then stops them in order).  The
server hands back every delivery lease before it starts them — whatever was
in flight died with the previous run — and each child watches its parent:
when the server dies (even by ``kill -9``) the child shuts down warm on its
own instead of lingering beside the next server's workers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ums.config import Config, ConfigError, load_config
from ums.log import kv, setup_logging
from ums.pipeline.app import configure, current

__all__ = ["main", "run_worker", "spawn_embedded_workers", "stop_workers"]

log = logging.getLogger("ums.pipeline")

#: seconds between two looks at the parent process
PARENT_CHECK_INTERVAL = 0.5
#: tasks at once in each embedded worker (threads pool): while one message waits for fsync or for
#: the SMTP server's answers, others are composed and sent (docs/BENCHMARKS.md, voicemail load)
EMBEDDED_CONCURRENCY = 4


def _watch_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL)
        log.warning(kv("pipeline.worker_orphaned", parent=parent_pid))
        os.kill(os.getpid(), signal.SIGTERM)  # Celery: warm shutdown

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_worker(
    config: Config,
    concurrency: int = 1,
    *,
    loglevel: str = "info",
    release_claims: bool = False,
    parent_pid: int | None = None,
    hostname: str | None = None,
) -> int:
    """Run a pipeline worker in this process until it is told to stop; returns the exit code.

    ``release_claims``: hand back every delivery lease first — only when no other worker runs.
    ``parent_pid``: shut down when that process is no longer the parent.
    """
    setup_logging(loglevel)
    ctx = configure(config)
    if release_claims:
        released = ctx.index.release_claims()
        log.info(kv("pipeline.claims_released", count=released))
    if parent_pid is not None:
        _watch_parent(parent_pid)
    pool = "solo" if concurrency <= 1 else "threads"
    worker: Any = ctx.app.Worker(
        hostname=hostname or f"ums-{os.getpid()}@{socket.gethostname()}",
        pool_cls=pool,
        concurrency=max(1, concurrency),
        loglevel=loglevel.upper(),
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
        no_color=True,
    )
    log.info(kv("pipeline.worker_start", pid=os.getpid(), pool=pool, concurrency=concurrency, via=ctx.via))
    worker.start()
    code = int(worker.exitcode or 0)
    log.info(kv("pipeline.worker_stop", pid=os.getpid(), code=code))
    ctx.close()
    return code


def spawn_embedded_workers(
    config: Config,
    config_path: str | Path,
    data_dir: str | Path,
    n: int,
    *,
    loglevel: str | None = None,
    concurrency: int = EMBEDDED_CONCURRENCY,
) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` worker processes (``python -m ums worker``) for ``ums serve``, each running
    ``concurrency`` tasks at once.

    Hands back every delivery lease first: call it before the server submits anything, while no
    worker of this data directory runs.  The children log to this process's stderr.
    """
    if n <= 0:
        return []
    try:
        released = current().index.release_claims()
    except RuntimeError:  # not configured in this process: open the index just for this
        from ums.store.index import MessageIndex

        with MessageIndex(Path(data_dir) / "index.sqlite") as index:
            released = index.release_claims()
    if released:
        log.info(kv("pipeline.claims_released", count=released))
    # `-m ums worker` (not `-m ums.pipeline.worker`): the command line installs its SIGTERM
    # handler before Celery is imported, so a stop during start-up still exits cleanly
    argv = [
        sys.executable,
        "-m",
        "ums",
        "worker",
        "--config",
        str(config_path),
        "--data-dir",
        str(data_dir),
        "--parent-pid",
        str(os.getpid()),
        "--log-level",
        loglevel or config.server.log_level,
        "--concurrency",
        str(max(1, concurrency)),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(n):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        log.info(kv("pipeline.worker_spawned", n=i + 1, pid=proc.pid))
        procs.append(proc)
    return procs


def stop_workers(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> list[int]:
    """SIGTERM every worker (warm shutdown), SIGKILL those still running after ``timeout``; reaps all."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes: list[int] = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            log.warning(kv("pipeline.worker_killed", pid=proc.pid))
            proc.kill()
            codes.append(proc.wait())
    return codes


# -- command line and `celery -A ums.pipeline.worker` ----------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ums.pipeline.worker", description="ums pipeline worker")
    p.add_argument("--config", "-c", required=True, help="TOML configuration file")
    p.add_argument("--data-dir", help="data directory (overrides server.data_dir)")
    p.add_argument("--concurrency", type=int, default=1, help="tasks at once (threads); default 1")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--release-claims",
        action="store_true",
        help="hand back all delivery leases at start (only when no other worker runs)",
    )
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.data_dir:
        cfg = cfg.with_data_dir(Path(args.data_dir))
    return run_worker(
        cfg,
        args.concurrency,
        loglevel=args.log_level or cfg.server.log_level,
        release_claims=args.release_claims,
        parent_pid=args.parent_pid,
    )


def __getattr__(name: str) -> Any:
    """``celery -A ums.pipeline.worker``: the app, configured from ``UMS_CONFIG`` (and ``UMS_DATA_DIR``)."""
    if name not in ("app", "celery"):
        raise AttributeError(name)
    path = os.environ.get("UMS_CONFIG")
    if not path:
        raise AttributeError("set UMS_CONFIG to the configuration file for `celery -A ums.pipeline.worker`")
    try:
        return current().app
    except RuntimeError:
        pass
    cfg = load_config(path)
    if os.environ.get("UMS_DATA_DIR"):
        cfg = cfg.with_data_dir(Path(os.environ["UMS_DATA_DIR"]))
    setup_logging(cfg.server.log_level)
    return configure(cfg).app


if __name__ == "__main__":
    sys.exit(main())
