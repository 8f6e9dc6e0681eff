"""The app, the embedded queue and submit without a broker."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from kombu import Connection

from tests.unit.pipeline.helpers import free_port, make_config, setup_env
from ums.pipeline.app import QUEUE, SpoolQueueTransport, configure, current, make_app, queue_dirs, reset
from ums.pipeline.tasks import (
    COMPOSE,
    DELIVER,
    ENCODE,
    NOTIFY,
    PROCESS,
    process_chain,
    process_message,
    submit,
    sweep,
)


def test_embedded_broker_settings(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "data")
    app = make_app(cfg)
    conf = app.conf
    assert conf.broker_url == "filesystem://localhost/"
    assert conf.broker_transport is SpoolQueueTransport
    opts = conf.broker_transport_options
    dirs = queue_dirs(tmp_path / "data")
    assert opts["data_folder_in"] == opts["data_folder_out"] == str(dirs["in"])
    assert opts["processed_folder"] == str(dirs["processed"])
    assert opts["polling_interval"] == 0.1 and opts["store_processed"] is False
    assert dirs["in"].is_dir() and dirs["processed"].is_dir()
    assert conf.task_ignore_result and conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.broker_connection_retry_on_startup
    assert conf.task_serializer == "json" and conf.task_default_queue == QUEUE
    assert {PROCESS, ENCODE, COMPOSE, DELIVER, NOTIFY} <= set(app.tasks)


def test_redis_broker_settings(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "data")
    cfg = replace(cfg, pipeline=replace(cfg.pipeline, broker="redis://h:6379/3"))
    conf = make_app(cfg).conf
    assert conf.broker_url == "redis://h:6379/3"
    assert conf.broker_transport_options["visibility_timeout"] > 2 * cfg.mail.retry_max
    assert not (tmp_path / "data" / "queue").exists()


def test_one_task_per_message_and_the_chain_order(tmp_path: Path) -> None:
    configure(make_config(tmp_path / "data"))
    sig = process_message("ab" * 16)
    assert (sig.task, sig.args) == (PROCESS, ("ab" * 16,))
    steps = process_chain("ab" * 16)
    assert [t.name for t in steps.tasks] == [ENCODE, COMPOSE, DELIVER, NOTIFY]
    assert steps.tasks[0].args == ("ab" * 16,)


def test_submit_writes_one_message_file_atomically(tmp_path: Path) -> None:
    ctx = configure(make_config(tmp_path / "data"))
    assert submit("cd" * 16) is True
    folder = queue_dirs(tmp_path / "data")["in"]
    [name] = [p.name for p in folder.iterdir()]
    assert name.endswith(f".{QUEUE}.msg") and not name.startswith(".")
    payload = json.loads((folder / name).read_text())
    assert payload["headers"]["task"] == PROCESS
    # a consumer takes it exactly once, via processed/
    with Connection("filesystem://", transport=SpoolQueueTransport,
                    transport_options=ctx.app.conf.broker_transport_options) as conn:  # fmt: skip
        queue = conn.SimpleQueue(QUEUE)
        msg = queue.get(timeout=1)
        assert msg.headers["task"] == PROCESS
        msg.ack()
        with pytest.raises(queue.Empty):
            queue.get(block=False)
        queue.close()
    assert list(folder.iterdir()) == []
    assert list(queue_dirs(tmp_path / "data")["processed"].iterdir()) == []


def test_queue_skips_half_written_and_foreign_files(tmp_path: Path) -> None:
    ctx = configure(make_config(tmp_path / "data"))
    folder = queue_dirs(tmp_path / "data")["in"]
    (folder / ".000000000000001_x.ums.msg.tmp").write_text("{half")
    (folder / "000000000000002_y.other.msg").write_text("{}")
    (folder / "000000000000003_z.ums.msg").write_text("not json")
    with Connection("filesystem://", transport=SpoolQueueTransport,
                    transport_options=ctx.app.conf.broker_transport_options) as conn:  # fmt: skip
        queue = conn.SimpleQueue(QUEUE)
        with pytest.raises(queue.Empty):
            queue.get(block=False)
        queue.close()
    assert sorted(p.name for p in folder.iterdir()) == [
        ".000000000000001_x.ums.msg.tmp",
        "000000000000002_y.other.msg",
    ]


def test_submit_does_not_raise_when_the_broker_is_down(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "data")
    down = f"redis://127.0.0.1:{free_port()}/0"
    cfg = replace(cfg, pipeline=replace(cfg.pipeline, broker=down))
    configure(cfg)
    assert submit("ef" * 16) is False


def test_sweep_stops_at_the_first_refusal(tmp_path: Path) -> None:
    env = setup_env(tmp_path)
    env.store()
    env.store()
    cfg = env.ctx.config
    down = f"redis://127.0.0.1:{free_port()}/0"
    cfg = replace(cfg, pipeline=replace(cfg.pipeline, broker=down))
    configure(cfg, clock=env.clock)
    assert sweep() == 0


def test_current_needs_configure() -> None:
    reset()
    with pytest.raises(RuntimeError):
        current()


def test_shared_index_is_not_closed(tmp_path: Path) -> None:
    from ums.store.index import MessageIndex

    cfg = make_config(tmp_path / "data")
    with MessageIndex(tmp_path / "data" / "index.sqlite") as index:
        ctx = configure(cfg, index=index, eager=True)
        assert ctx.index is index
        reset()
        assert index.list() == []  # still open
