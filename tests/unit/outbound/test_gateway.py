"""What the e-mail gateways share: SMTP recipient policy, all-or-none job writing, the task runner."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ums.config import SmsConfig, parse_config
from ums.mailgate.smtp_in import Reject
from ums.outbound.addresses import GatewayAddressing, SenderPolicy
from ums.outbound.gateway import MailGateway, TaskRunner, create_jobs, gateway_addressing
from ums.outbound.numbers import DialPlan
from ums.store.fax_jobs import FaxJobStore, FaxJobStoreError

T0 = 1_795_000_000.0
LOG = logging.getLogger("ums.test_gateway")


@dataclass(frozen=True)
class Policy:
    addressing: GatewayAddressing
    senders: SenderPolicy
    plan: DialPlan


def gateway(authenticate: Callable[[str, str], bool] | None = None) -> MailGateway:
    policy = Policy(
        addressing=GatewayAddressing("fax", domains=("fax.example.com",)),
        senders=SenderPolicy(allow=("@example.com",)),
        plan=DialPlan(country_code="49", area_code="30"),
    )
    return MailGateway(policy, kind="fax", authenticate=authenticate)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


# -- MailGateway -----------------------------------------------------------------------------------


def test_claims_and_recipient_number() -> None:
    gw = gateway()
    assert gw.claims("<030 1234567@fax.example.com>")
    assert not gw.claims("bob@example.com")
    found, number = gw._recipient("Bob <030 1234567@fax.example.com>")
    assert number == "+49301234567" and found.number_text == "030 1234567"
    gw.check_recipient("+4940123456@fax.example.com", "alice@example.com", None)


def test_refusals_name_the_gateway_and_the_reason() -> None:
    gw = gateway()
    with pytest.raises(Reject) as info:
        gw.check_recipient("<bob@example.com>", "alice@example.com", None)
    assert info.value.code == 550
    assert "no such fax address: bob@example.com" in str(info.value)
    with pytest.raises(Reject, match="CALL-ME") as bad:
        gw.check_recipient("030-CALL-ME@fax.example.com", "alice@example.com", None)
    assert bad.value.code == 550
    with pytest.raises(Reject, match="may not send") as sender:
        gw.check_sender("eve@elsewhere.org", None)
    assert sender.value.code == 550
    gw.check_sender("alice@example.com", None)


def test_authenticate_goes_to_the_injected_callable() -> None:
    assert not gateway().authenticate("alice", "secret")
    gw = gateway(lambda user, password: (user, password) == ("alice", "secret"))
    assert gw.authenticate("alice", "secret")
    assert not gw.authenticate("alice", "wrong")


def test_gateway_addressing_from_a_section() -> None:
    config = parse_config({})
    made = gateway_addressing(
        config, "sms", "sms", SmsConfig(domains=("SMS.Example.com",), subdomain_form=True)
    )
    assert made == GatewayAddressing("sms", domains=("sms.example.com",), subdomain_form=True)
    with pytest.raises(ValueError, match=r"^<config>: fax_gateway\.domains: no address reaches the fax"):
        gateway_addressing(config, "fax_gateway", "fax", config.fax_gateway)


# -- create_jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    id: str

    def to_json(self) -> str:
        return json.dumps({"id": self.id})

    @classmethod
    def from_json(cls, text: str) -> Item:
        return cls(json.loads(text)["id"])


def test_create_jobs_writes_all(tmp_path: Path) -> None:
    store = FaxJobStore(tmp_path, Item.from_json)
    create_jobs(store, [Item("a1"), Item("b2")], b"Subject: x\r\n\r\nhi\r\n")
    assert sorted(j.id for j in store.load_all()) == ["a1", "b2"]
    assert store.read_mail("b2") == b"Subject: x\r\n\r\nhi\r\n"


def test_create_jobs_writes_none_when_one_fails(tmp_path: Path) -> None:
    store = FaxJobStore(tmp_path, Item.from_json)
    create_jobs(store, [Item("old")], b"m")
    with pytest.raises(FaxJobStoreError):
        create_jobs(store, [Item("a1"), Item("b2"), Item("old")], b"m")  # the third exists already
    assert [j.id for j in store.load_all()] == ["old"]


# -- TaskRunner ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split()[0] for r in caplog.records if r.name == LOG.name]


def test_spawn_drain_and_failures_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    done: list[int] = []

    async def work(n: int) -> None:
        await asyncio.sleep(0)
        if n == 2:
            runner.spawn(work(3))  # started while draining: waited for too
        done.append(n)

    async def broken() -> None:
        raise RuntimeError("boom")

    runner = TaskRunner(LOG, "gw", Clock())

    async def main() -> None:
        runner.spawn(work(1))
        runner.spawn(work(2))
        runner.spawn(broken())
        await runner.drain()

    run(main)
    assert sorted(done) == [1, 2, 3]
    failed = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    assert failed == ["event=gw.task_failed error=RuntimeError('boom')"]


def test_loop_runs_steps_on_wake_and_when_due(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    runner = TaskRunner(LOG, "gw", clock)
    steps: list[asyncio.Event] = []
    due: list[float | None] = [None]

    async def step() -> None:
        steps.append(asyncio.Event())
        steps[-1].set()
        if len(steps) == 2:
            raise ValueError("a bad step")  # logged; the loop goes on

    def next_wakeup() -> float | None:
        wake, due[0] = due[0], None
        return wake

    async def ran(n: int) -> None:
        while len(steps) < n:
            await asyncio.sleep(0)

    async def main() -> None:
        runner.start(step, idle=lambda: 3600.0, next_wakeup=next_wakeup, name="gw-test")
        await asyncio.wait_for(ran(1), 20)  # the first step runs at once
        runner.wake()
        await asyncio.wait_for(ran(2), 20)
        assert len(steps) == 2  # nothing due: the loop sleeps
        due[0] = clock.t - 5
        runner.wake()
        await asyncio.wait_for(ran(4), 20)  # step 3 on the wake-up, step 4 because it was due
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(steps) == 4
        await runner.stop()

    run(main)
    assert events(caplog) == ["event=gw.tick_failed"]


def test_stop_cancels_tasks_and_logs_the_ones_that_fail(caplog: pytest.LogCaptureFixture) -> None:
    runner = TaskRunner(LOG, "gw", Clock())
    cancelled: list[str] = []

    async def waits(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def step() -> None:
        pass

    async def main() -> None:
        runner.start(step, idle=lambda: 3600.0, next_wakeup=lambda: None, name="gw-test")
        runner.spawn(waits("a"))
        runner.spawn(fails_on_cancel())
        await asyncio.sleep(0)
        await runner.stop()
        await runner.drain()  # nothing left

    run(main)
    assert cancelled == ["a"]
    assert events(caplog).count("event=gw.task_failed_at_stop") == 1


def test_from_thread_needs_attach() -> None:
    runner = TaskRunner(LOG, "gw", Clock())
    calls: list[str] = []
    runner.from_thread(lambda: calls.append("early"))  # no loop yet: nothing

    async def main() -> None:
        runner.attach()
        got = asyncio.Event()

        def on_loop() -> None:
            calls.append(threading.current_thread().name)
            got.set()

        worker = threading.Thread(target=runner.from_thread, args=(on_loop,), name="worker")
        worker.start()
        await asyncio.wait_for(got.wait(), 20)
        worker.join()

    run(main)
    assert calls == [threading.main_thread().name]


def test_prune_once_a_day(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    store = FaxJobStore(tmp_path, Item.from_json)
    day = 86400.0
    for job_id in ("a1", "b2"):
        store.create(Item(job_id), b"m")
        store.archive(job_id, T0)
    store.create(Item("c3"), b"m")
    store.archive("c3", T0 + day)
    runner = TaskRunner(LOG, "gw", Clock())

    async def main() -> None:
        await runner.prune(store, T0 + 0.5 * day, keep_days=1)  # none a day old yet
        await runner.prune(store, T0 + 1.4 * day, keep_days=1)  # a1, b2 are, but it is the same day
        assert len(store.archived()) == 3
        await runner.prune(store, T0 + 1.5 * day, keep_days=1)

    run(main)
    assert store.archived() == ["c3"]
    assert [r.getMessage() for r in caplog.records if r.name == LOG.name] == ["event=gw.pruned jobs=2"]
