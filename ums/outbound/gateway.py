"""What the e-mail gateways (fax, SMS) share: the SMTP recipient policy, job writing and the runner.

What it does
------------
* :class:`MailGateway` is the policy half of a :class:`~ums.mailgate.smtp_in.RoutedHandler`:
  ``MAIL FROM`` is checked by the :class:`~ums.outbound.addresses.SenderPolicy` (``550`` with its
  reason); a recipient is the gateway's when :func:`~ums.outbound.addresses.parse_recipient` takes it
  (else ``550 no such <kind> address``) and its number must pass
  :func:`~ums.outbound.numbers.normalize` (else ``550`` with the reason); ``AUTH`` goes to the
  injected ``authenticate`` (none: refused).  The subclass adds ``accept``.
* :func:`gateway_addressing` builds the addresses of a gateway from its configuration section.
* :func:`create_jobs` writes the jobs of one mail, all or none.
* :class:`TaskRunner` owns a gateway's background tasks and the loop that runs its steps:
  :meth:`~TaskRunner.spawn` starts a task (a failure is logged as ``<prefix>.task_failed``),
  :meth:`~TaskRunner.start` runs a step again and again, :meth:`~TaskRunner.drain` waits until no
  task is left, :meth:`~TaskRunner.stop` cancels and awaits them all,
  :meth:`~TaskRunner.from_thread` hands work from aiosmtpd's worker thread to the loop and
  :meth:`~TaskRunner.prune` deletes old archived jobs once a day.

How it works
------------
The loop clears its wake-up event, awaits the step (a failure is logged as ``<prefix>.tick_failed``
and the loop goes on), then sleeps until :meth:`~TaskRunner.wake` is called, a task ends, the
scheduler's next wake-up comes or ``idle()`` seconds have passed, whichever is first.  Time comes from
the injected ``clock``.  Log lines go to the caller's logger with the caller's event prefix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, Protocol, TypeVar

from ums.config import Config, FaxGatewayConfig, SmsConfig
from ums.log import kv
from ums.mailgate.smtp_in import Reject
from ums.outbound.addresses import (
    GatewayAddressing,
    GatewayRecipient,
    SenderPolicy,
    bare_address,
    parse_recipient,
)
from ums.outbound.numbers import BadNumber, DialPlan, normalize
from ums.outbound.policy import configured
from ums.store.fax_jobs import FaxJobStore, StoredJob

__all__ = [
    "GatewayPolicy",
    "MailGateway",
    "TaskRunner",
    "create_jobs",
    "gateway_addressing",
]

_DAY: Final = 86400.0

J = TypeVar("J", bound=StoredJob)


class GatewayPolicy(Protocol):
    """What :class:`MailGateway` reads of a gateway's settings."""

    @property
    def addressing(self) -> GatewayAddressing: ...

    @property
    def senders(self) -> SenderPolicy: ...

    @property
    def plan(self) -> DialPlan: ...


def gateway_addressing(
    config: Config, key: str, kind: str, section: FaxGatewayConfig | SmsConfig
) -> GatewayAddressing:
    """The addresses of gateway ``kind`` ("fax") from ``section``; ``ValueError`` names ``<key>.domains``."""
    return configured(
        config,
        f"{key}.domains",
        lambda: GatewayAddressing(
            kind,
            domains=section.domains,
            prefix_forms=section.prefix_forms,
            local_domains=section.local_domains,
            subdomain_form=section.subdomain_form,
        ),
    )


class MailGateway:
    """``claims`` / ``check_sender`` / ``check_recipient`` / ``authenticate`` of an e-mail gateway.

    ``kind`` names the gateway in refusals ("fax": ``no such fax address: ...``).
    """

    def __init__(
        self,
        policy: GatewayPolicy,
        *,
        kind: str,
        authenticate: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._policy = policy
        self._kind = kind
        self._authenticate = authenticate

    def claims(self, rcpt: str) -> bool:
        return parse_recipient(rcpt, self._policy.addressing) is not None

    def check_sender(self, mail_from: str, auth_user: str | None) -> None:
        reason = self._policy.senders.authorised(mail_from, auth_user)
        if reason is not None:
            raise Reject(550, reason)

    def check_recipient(self, rcpt: str, mail_from: str, auth_user: str | None) -> None:
        self._recipient(rcpt)

    def authenticate(self, user: str, password: str) -> bool:
        return self._authenticate is not None and self._authenticate(user, password)

    def _recipient(self, rcpt: str) -> tuple[GatewayRecipient, str]:
        """The parsed recipient and its E.164 number; :class:`Reject` (550) when it is not one."""
        found = parse_recipient(rcpt, self._policy.addressing)
        if found is None:
            raise Reject(550, f"no such {self._kind} address: {bare_address(rcpt)}")
        try:
            number = normalize(found.number_text, self._policy.plan)
        except BadNumber as exc:
            raise Reject(550, f"{found.number_text}: {exc.reason}") from None
        return found, number


def create_jobs(store: FaxJobStore[J], jobs: Sequence[J], mail: bytes) -> None:
    """Write every job with ``mail`` (durable on return), or none.

    When one fails the jobs already written are removed and the error goes on: the SMTP client gets
    a temporary error and sends the mail again, and no job is there twice.
    """
    made: list[J] = []
    for job in jobs:
        try:
            store.create(job, mail)
        except BaseException:
            for done in made:
                store.remove(done.id)
            raise
        made.append(job)


class TaskRunner:
    """The background tasks of a gateway and the loop that runs its steps (on one event loop)."""

    def __init__(self, log: logging.Logger, prefix: str, clock: Callable[[], float]) -> None:
        self._log = log
        self._prefix = prefix
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_prune = float("-inf")

    def attach(self) -> None:
        """Remember the running loop, for :meth:`from_thread`."""
        self._loop = asyncio.get_running_loop()

    def from_thread(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` on the loop (safe from any thread); before :meth:`attach`, nothing happens."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(callback)

    def wake(self) -> None:
        """Run the next step now."""
        self._wake.set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task; its end wakes the loop, its failure is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(kv(f"{self._prefix}.task_failed", error=repr(task.exception())))
        self._wake.set()

    async def drain(self) -> None:
        """Wait until no task is left (tasks started meanwhile included)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def prune(self, store: FaxJobStore[Any], now: float, keep_days: float) -> None:
        """Delete the jobs archived more than ``keep_days`` ago, at most once a day."""
        if now - self._last_prune < _DAY:
            return
        self._last_prune = now
        removed = await asyncio.to_thread(store.prune, now, keep_days)
        if removed:
            self._log.info(kv(f"{self._prefix}.pruned", jobs=len(removed)))

    def start(
        self,
        step: Callable[[], Awaitable[None]],
        *,
        idle: Callable[[], float],
        next_wakeup: Callable[[], float | None],
        name: str,
    ) -> None:
        """Run ``step`` in a loop: after each, wait for a wake-up, ``next_wakeup()`` or ``idle()`` s."""
        self._loop_task = asyncio.create_task(self._run(step, idle, next_wakeup), name=name)

    async def stop(self) -> None:
        """Cancel the loop and every task, and wait for them (a failure is logged)."""
        runner, self._loop_task = self._loop_task, None
        if runner is not None:
            runner.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in [*tasks, *([runner] if runner else [])]:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                self._log.exception(kv(f"{self._prefix}.task_failed_at_stop"))

    async def _run(
        self,
        step: Callable[[], Awaitable[None]],
        idle: Callable[[], float],
        next_wakeup: Callable[[], float | None],
    ) -> None:
        while True:
            self._wake.clear()
            try:
                await step()
            except Exception:
                self._log.exception(kv(f"{self._prefix}.tick_failed"))
            timeout = idle()
            wake = next_wakeup()
            if wake is not None:
                timeout = min(timeout, max(0.0, wake - self._clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
