"""Real pipeline workers: separate processes on the embedded queue and on Redis.

What it does
------------
The test process plays the server: it stores voicemails (spool + index) and
calls ``submit``; the worker is ``python -m ums.pipeline.worker`` (or
``celery -A ums.pipeline.worker worker`` for Redis) in a subprocess.  Checks:
mail arrives; a sink that is down makes the worker retry until it returns; a
worker killed with SIGKILL in the middle of an SMTP delivery leaves the
message to the next worker, which delivers it exactly once.
"""

from __future__ import annotations

import asyncio
import email
import os
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.ports import free_port
from tests.peers.procs import Proc, wait_until
from tests.peers.ums import REPO, python_executable
from tests.unit.pipeline.helpers import DOMAIN, wav_bytes
from ums.config import load_config
from ums.pipeline.app import PipelineContext, configure, reset
from ums.pipeline.tasks import submit, sweep
from ums.store.models import MessageRecord, new_record

pytestmark = pytest.mark.acceptance


def write_config(run_dir: Path, *, smarthost: str = "", broker: str = "") -> Path:
    path = run_dir / "ums.toml"
    path.write_text(
        f"""
[server]
data_dir = "{run_dir / "data"}"
log_level = "info"

[pipeline]
broker = "{broker}"
poll_interval = 0.05

[mail]
from = "vm@{DOMAIN}"
admin = "admin@example.com"
smarthost = "{smarthost}"
retry_first = 1.0
retry_max = 2.0
smtp_timeout = 5.0

[[mailboxes]]
number = "100"
owner = "alice@example.com"

[directory.entries]
"+49891234567" = "Jane Doe"
"""
    )
    return path


def store(ctx: PipelineContext, rng: random.Random) -> MessageRecord:
    from datetime import UTC, datetime

    rec = new_record(
        now=datetime.now(UTC),
        rng=rng,
        domain=DOMAIN,
        mailbox="100",
        owner="alice@example.com",
        kind="voice",
        caller_number="+49891234567",
        duration=1.0,
    )
    rec = rec.with_changes(files=(f"voice/{rec.id}.wav",))
    ctx.spool.write_atomic(rec.files[0], wav_bytes(1.0))
    assert ctx.index.add(rec)
    return rec


def maildir(ctx: PipelineContext, owner: str = "alice@example.com") -> list[Path]:
    new = ctx.maildir_root / owner / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def start_worker(run_dir: Path, config: Path, name: str, *extra: str) -> Proc:
    argv = [python_executable(), "-m", "ums.pipeline.worker", "--config", str(config), *extra]
    proc = Proc(argv, run_dir, name, cwd=REPO)
    proc.start()
    proc.wait_log(r"event=pipeline\.worker_start", 20.0)
    return proc


@pytest.fixture
def server_side() -> Iterator[None]:
    yield
    reset()


# -- an SMTP sink in this process that can hold a delivery in DATA ---------------------------------------
class HoldingHandler:
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.hold = False
        self.in_data = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hold:
            self.in_data.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return "451 4.3.0 held"  # the client is gone by now; nothing was accepted
        self.received.append(envelope.original_content)
        return "250 2.0.0 accepted"


class InProcessSink:
    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        self.handler = HoldingHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)

    def __enter__(self) -> HoldingHandler:
        self.controller.start()
        return self.handler

    def __exit__(self, *exc: object) -> None:
        self.handler.release.set()
        self.controller.stop()


def message_ids(raw: list[bytes]) -> list[str]:
    return [str(email.message_from_bytes(r)["Message-ID"]) for r in raw]


# -- the tests -------------------------------------------------------------------------------------------
def test_embedded_worker_delivers_to_maildir(tmp_path: Path, server_side: None) -> None:
    cfg_path = write_config(tmp_path)
    ctx = configure(load_config(cfg_path))
    rng = random.Random(11)
    worker = start_worker(tmp_path, cfg_path, "worker")
    try:
        recs = [store(ctx, rng) for _ in range(3)]
        for rec in recs:
            assert submit(rec.id)
        wait_until(lambda: len(maildir(ctx)) == 3, 10.0, 0.05, "three mails in the Maildir")
        got = {str(email.message_from_bytes(p.read_bytes())["Message-ID"]) for p in maildir(ctx)}
        assert got == {r.message_id for r in recs}
        wait_until(
            lambda: all((s := ctx.index.get(r.id)) is not None and s.delivery == "delivered" for r in recs),
            5.0,
            0.05,
            "records marked delivered",
        )
    finally:
        assert worker.stop(10.0) == 0  # SIGTERM: warm shutdown, exit 0
    assert "event=pipeline.delivered" in worker.stderr_path.read_text()


def test_worker_retries_until_the_sink_returns(tmp_path: Path, server_side: None) -> None:
    port = free_port()
    cfg_path = write_config(tmp_path, smarthost=f"127.0.0.1:{port}")
    ctx = configure(load_config(cfg_path))
    worker = start_worker(tmp_path, cfg_path, "worker")
    try:
        rec = store(ctx, random.Random(12))
        assert submit(rec.id)
        wait_until(lambda: (s := ctx.index.get(rec.id)) is not None and s.attempts >= 1, 10.0, 0.05, "a try")
        with InProcessSink(port) as sink:
            # the task retries itself (retry_first = 1 s, retry_max = 2 s): no sweep needed
            wait_until(lambda: len(sink.received) == 1, 10.0, 0.05, "the mail at the sink")
            assert message_ids(sink.received) == [rec.message_id]
            wait_until(lambda: (s := ctx.index.get(rec.id)) is not None and s.delivery == "delivered", 5.0)
    finally:
        worker.stop(10.0)


def test_kill_9_during_delivery_then_next_worker_delivers_once(tmp_path: Path, server_side: None) -> None:
    port = free_port()
    cfg_path = write_config(tmp_path, smarthost=f"127.0.0.1:{port}")
    ctx = configure(load_config(cfg_path))
    rec = store(ctx, random.Random(13))
    assert submit(rec.id)  # queued while no worker runs
    with InProcessSink(port) as sink:
        sink.hold = True
        first = start_worker(tmp_path, cfg_path, "worker1")
        try:
            assert sink.in_data.wait(10.0), "the first worker never reached DATA"
            first.signal(signal.SIGKILL)
            first.wait(5.0)
        finally:
            first.stop(2.0)
        sink.hold = False
        sink.release.set()
        # the message left the queue with the dead worker; its lease is still in the index
        assert list((tmp_path / "data" / "queue" / "in").glob("*.msg")) == []
        assert ctx.index.due_deliveries(ctx.clock()) == []

        # restart as `ums serve` does it: hand back the leases, start a worker, sweep
        second = start_worker(tmp_path, cfg_path, "worker2", "--release-claims")
        try:
            assert sweep() == 1
            wait_until(lambda: len(sink.received) >= 1, 10.0, 0.05, "the mail at the sink")
            wait_until(lambda: (s := ctx.index.get(rec.id)) is not None and s.delivery == "delivered", 5.0)
            assert sweep() == 0
        finally:
            second.stop(10.0)
        assert message_ids(sink.received) == [rec.message_id]


@pytest.mark.skipif(not os.path.exists("/usr/bin/redis-server"), reason="redis-server not installed")
def test_redis_broker_with_a_celery_worker(tmp_path: Path, server_side: None) -> None:
    from tests.peers.redis import RedisServer

    with RedisServer(tmp_path) as redis:
        cfg_path = write_config(tmp_path, broker=redis.url(0))
        ctx = configure(load_config(cfg_path))
        env = {**os.environ, "UMS_CONFIG": str(cfg_path)}
        argv = [
            python_executable(), "-m", "celery", "-A", "ums.pipeline.worker", "worker",
            "--pool=threads", "--concurrency=2", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        worker = Proc(argv, tmp_path, "celery-worker", cwd=REPO, env=env)
        worker.start()
        try:
            worker.wait_log(r"ready\.", 20.0)
            rng = random.Random(14)
            recs = [store(ctx, rng) for _ in range(2)]
            for rec in recs:
                assert submit(rec.id)
            wait_until(lambda: len(maildir(ctx)) == 2, 10.0, 0.05, "two mails in the Maildir")
            got = {str(email.message_from_bytes(p.read_bytes())["Message-ID"]) for p in maildir(ctx)}
            assert got == {r.message_id for r in recs}
        finally:
            worker.stop(10.0)


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_embedded_workers_for_serve(tmp_path: Path, server_side: None) -> None:
    from ums.pipeline.worker import spawn_embedded_workers, stop_workers

    cfg_path = write_config(tmp_path)
    cfg = load_config(cfg_path)
    ctx = configure(cfg)
    rec = store(ctx, random.Random(15))
    assert ctx.index.claim(rec.id, ctx.clock(), ctx.lease)  # a lease left by a killed run
    procs = spawn_embedded_workers(cfg, cfg_path, cfg.server.data_dir, 2, loglevel="warning")
    try:
        assert [r.id for r in ctx.index.due_deliveries(ctx.clock())] == [rec.id]  # handed back
        assert sweep() == 1
        wait_until(lambda: len(maildir(ctx)) == 1, 10.0, 0.05, "the mail in the Maildir")
    finally:
        codes = stop_workers(procs, timeout=10.0)
    assert codes == [0, 0]


def test_embedded_worker_stops_when_the_server_is_killed(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path)
    script = (
        "import sys, time\n"
        "from ums.config import load_config\n"
        "from ums.pipeline.worker import spawn_embedded_workers\n"
        f"cfg = load_config({str(cfg_path)!r})\n"
        "[p] = spawn_embedded_workers(cfg, sys.argv[1], cfg.server.data_dir, 1, loglevel='info')\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    server = Proc([python_executable(), "-c", script, str(cfg_path)], tmp_path, "fake-serve", cwd=REPO)
    server.start()
    child = 0
    try:
        server.wait_log(r"event=pipeline\.worker_start", 20.0)
        child = int(server.stdout_path.read_text().split()[0])
        server.signal(signal.SIGKILL)
        server.wait(5.0)
        wait_until(lambda: _gone(child), 10.0, 0.05, "the orphaned worker to exit")
    finally:
        server.stop(2.0)
        if child and not _gone(child):
            os.kill(child, signal.SIGKILL)
    assert "event=pipeline.worker_orphaned" in server.stderr_path.read_text()
