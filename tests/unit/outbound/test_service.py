"""The e-mail to fax shell: SMTP policy, durable jobs, retries, reports, restart and cancel.

A fake dialer returns scripted attempts, a fake clock is advanced by hand, a fake renderer makes
small pages; the runner is driven step by step with ``tick()`` and ``drain()``.
"""

from __future__ import annotations

import asyncio
import email
import smtplib
import socket
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ums.config import parse_config
from ums.mailgate.smtp_in import Reject, SmtpGateway, SmtpInSettings
from ums.mailgate.smtp_out import SmtpSettings
from ums.outbound.jobs import Attempt, Cause, Job, JobState
from ums.outbound.service import (
    CANCEL_FILE,
    PAGES_FILE,
    DialJob,
    FaxGatewayService,
    GatewaySettings,
    mail_sender,
    request_cancel,
)
from ums.render.page import FaxPage, Resolution
from ums.store.fax_jobs import FaxJobStore

T0 = 1_795_000_000.0  # 2026-11-18, a fixed "now"
SENDER = "alice@example.com"
FAX = "030 1234567@fax.example.com"
NUMBER = "+49301234567"


def mail(to: str = FAX, subject: str = "Invoice", extra: str = "", body: str = "Please find it.") -> bytes:
    return (
        f"From: Alice <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <m1@example.com>\r\n{extra}Content-Type: text/plain\r\n\r\n{body}\r\n"
    ).encode()


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Dialer:
    """Answers each call with the next scripted cause (pages: all remaining for OK)."""

    def __init__(self, clock: Clock, causes: Iterable[Cause | tuple[Cause, int]] = ()) -> None:
        self.clock = clock
        self.script = list(causes)
        self.calls: list[DialJob] = []
        self.block: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.hung_up = 0

    async def __call__(self, job: DialJob) -> Attempt:
        self.calls.append(job)
        self.entered.set()
        if self.block is not None:
            try:
                await self.block.wait()
            except asyncio.CancelledError:
                self.hung_up += 1
                raise
        step = self.script.pop(0) if self.script else Cause.OK
        cause, pages = step if isinstance(step, tuple) else (step, 0)
        if cause is Cause.OK:
            pages = len(job.pages) - job.first_page + 1
        return Attempt(self.clock.t, self.clock.t + 40, cause, pages_sent=pages, remote_csid="+49 30 1234567")


def fake_render(
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    resolution: Resolution = "fine",
) -> list[FaxPage]:
    page = np.zeros((60, 80), np.uint8)
    page[10:20, 10:70] = 1
    return [FaxPage.at(page, resolution), FaxPage.at(page, resolution)]


def settings(tmp_path: Path, **gateway: Any) -> GatewaySettings:
    section: dict[str, Any] = {
        "enabled": True,
        "domains": ["fax.example.com"],
        "senders": ["@example.com"],
        "area_code": "30",
    }
    section.update(gateway)
    cfg = parse_config(
        {
            "server": {"data_dir": str(tmp_path)},
            "mail": {"from": "ums@example.com", "listen": "127.0.0.1:2525"},
            "fax_gateway": section,
        }
    )
    return GatewaySettings.from_config(cfg)


class Harness:
    def __init__(self, tmp_path: Path, causes: Iterable[Cause | tuple[Cause, int]] = (), **gateway: Any):
        self.root = tmp_path / "jobs"
        self.clock = Clock()
        self.dialer = Dialer(self.clock, causes)
        self.reports: list[tuple[str, EmailMessage]] = []
        self.settings = settings(tmp_path, **gateway)
        self.on_report: Callable[[], object] = lambda: None
        self.svc = self.make()

    def make(self) -> FaxGatewayService:
        def send(to: str, data: bytes) -> None:
            msg = email.message_from_bytes(data, policy=policy.default)
            assert isinstance(msg, EmailMessage)
            self.reports.append((to, msg))
            self.on_report()

        return FaxGatewayService(
            self.settings,
            FaxJobStore(self.root, Job.from_json),
            self.dialer,
            send,
            clock=self.clock,
            render=fake_render,
        )

    @property
    def store(self) -> FaxJobStore[Job]:
        return self.svc.store

    async def deliver(self, data: bytes | None = None, rcpts: tuple[str, ...] = (FAX,)) -> None:
        for rcpt in rcpts:
            self.svc.check_recipient(rcpt, SENDER, None)
        await asyncio.to_thread(self.svc.accept, SENDER, list(rcpts), data or mail(), None, "127.0.0.1")
        await self.drain()

    async def drain(self) -> None:
        await asyncio.wait_for(self.svc.drain(), 20)

    async def step(self, advance: float = 0.0) -> None:
        self.clock.t += advance
        await self.svc.tick()
        await self.drain()

    async def in_call(self) -> None:
        """Start the due call and wait until the (blocking) dialer has it."""
        self.dialer.block = asyncio.Event()
        self.dialer.entered.clear()
        await self.svc.tick()
        await asyncio.wait_for(self.dialer.entered.wait(), 20)

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for _, m in self.reports]


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def test_busy_then_ok_sends_one_success_report(tmp_path: Path) -> None:
    h = Harness(tmp_path, [Cause.BUSY, Cause.OK])

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver()
        (job_id,) = [p.name for p in h.root.iterdir() if not p.name.startswith("_")]
        job = h.store.load(job_id)
        assert job.pages == 2 and job.options["rendered"] and job.dial == "0301234567"
        await h.step()
        assert len(h.dialer.calls) == 1 and h.reports == []
        assert h.store.load(job_id).state is JobState.SLEEPING
        await h.step(100)  # busy retry is 180 s away
        assert len(h.dialer.calls) == 1
        await h.step(80)
        assert len(h.dialer.calls) == 2
        call = h.dialer.calls[-1]
        assert (
            call.target == "sip:0301234567@127.0.0.1:5080" and call.first_page == 1 and len(call.pages) == 2
        )
        assert h.subjects() == [f"Fax to {NUMBER} sent: 2 pages"]
        to, report = h.reports[0]
        assert to == SENDER and report["In-Reply-To"] == "<m1@example.com>"
        assert any(p.get_content_type() == "image/png" for p in report.walk())  # the page 1 preview
        assert h.store.archived() == [job_id]
        done = h.store.load_archived(job_id)
        assert done.state is JobState.DONE and done.dials == 2 and done.options["reported"]
        await h.svc.stop()

    run(main)


def test_no_answer_until_the_last_try_sends_one_failure_report(tmp_path: Path) -> None:
    h = Harness(tmp_path, [Cause.NO_ANSWER] * 3, max_dials=3, no_answer_interval=60.0)

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver()
        for _ in range(3):
            await h.step(60)
        assert len(h.dialer.calls) == 3
        await h.step(600)
        assert len(h.dialer.calls) == 3
        assert h.subjects() == [f"Fax to {NUMBER} failed: no answer on all 3 tries (3 tries)"]
        assert len(h.store.archived()) == 1

    run(main)


def test_notify_each_reports_every_failed_try(tmp_path: Path) -> None:
    h = Harness(tmp_path, [(Cause.LINE_ERROR, 1), Cause.OK], notify="each", attach_document=True)

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver()
        await h.step()
        await h.step(60)
        assert [c.first_page for c in h.dialer.calls] == [1, 2]  # resumes after the confirmed page
        assert len(h.reports) == 2
        assert "not sent yet" in h.subjects()[0] and "sent: 2 pages" in h.subjects()[1]
        final = h.reports[1][1]
        assert any(p.get_content_type() == "application/pdf" for p in final.walk())

    run(main)


def test_x_fax_headers_override_the_defaults(tmp_path: Path) -> None:
    h = Harness(tmp_path, [Cause.BUSY])

    async def main() -> None:
        await h.svc.start(run=False)
        extra = "X-Fax-Notify: none\r\nX-Fax-Retries: 1\r\nX-Fax-Resolution: standard\r\n"
        await h.deliver(mail(extra=extra))
        await h.step()
        (job_id,) = h.store.archived()
        job = h.store.load_archived(job_id)
        assert job.state is JobState.FAILED and job.options["max_dials"] == 1
        assert job.options["resolution"] == "standard" and h.reports == []

    run(main)


def test_bad_option_is_refused_with_554(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    with pytest.raises(Reject) as info:
        h.svc.accept(SENDER, [FAX], mail(extra="X-Fax-Resolution: ultra\r\n"), None, "peer")
    assert info.value.code == 554 and "X-Fax-Resolution" in info.value.reason
    assert not h.root.exists() or not any(h.root.iterdir())


def test_sender_and_recipient_policy(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    with pytest.raises(Reject) as info:
        h.svc.check_sender("mallory@evil.example", None)
    assert info.value.code == 550 and "may not send faxes" in info.value.reason
    h.svc.check_sender(SENDER, None)
    with pytest.raises(Reject, match=r"no such fax address: bob@example\.com"):
        h.svc.check_recipient("bob@example.com", SENDER, None)
    with pytest.raises(Reject) as info:
        h.svc.check_recipient("030-CALL-ME@fax.example.com", SENDER, None)
    assert info.value.code == 550 and "letters" in info.value.reason
    h.svc.check_recipient("+49 900 1234567@fax.example.com", SENDER, None)  # denied later, with a report


def test_premium_number_fails_at_once_with_a_report(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver(rcpts=("09001234567@fax.example.com",))
        await h.step()
        assert h.dialer.calls == []
        (subject,) = h.subjects()
        assert subject.startswith("Fax to +499001234567 failed: premium-rate number")
        (job_id,) = h.store.archived()
        assert h.store.load_archived(job_id).state is JobState.FAILED

    run(main)


def test_unfaxable_mail_fails_with_a_report(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver(mail(body="-- \r\nAlice"))  # only a signature: nothing to fax
        (subject,) = h.subjects()
        assert "failed" in subject and h.dialer.calls == []

    run(main)


def test_restart_dials_an_accepted_job_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def main() -> None:
        await h.svc.start(run=False)
        await asyncio.to_thread(h.svc.accept, SENDER, [FAX], mail(), None, "peer")
        await h.svc.stop()  # killed after 250: the rendering may or may not have finished
        (job_id,) = [p.name for p in h.root.iterdir() if not p.name.startswith("_")]
        job = h.store.load(job_id)
        job.options["rendered"] = False  # as if it died before the pages were written
        h.store.save(job)
        (h.root / job_id / PAGES_FILE).unlink(missing_ok=True)

        h.svc = h.make()
        await h.svc.start(run=False)
        await h.drain()
        await h.step()
        await h.step(1000)
        assert len(h.dialer.calls) == 1
        assert h.subjects() == [f"Fax to {NUMBER} sent: 2 pages"]

    run(main)


def test_restart_during_a_call_dials_again_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver()
        await h.in_call()
        assert len(h.dialer.calls) == 1
        await h.svc.stop()  # the process goes down in the call
        assert h.dialer.hung_up == 1
        (job_id,) = [p.name for p in h.root.iterdir() if not p.name.startswith("_")]
        assert h.store.load(job_id).state is JobState.ACTIVE

        h.dialer.block = None
        h.svc = h.make()
        await h.svc.start(run=False)
        await h.step()
        await h.step(1000)
        assert len(h.dialer.calls) == 2
        done = h.store.load_archived(job_id)
        assert done.state is JobState.DONE and done.dials == 2 and len(done.attempts) == 1

    run(main)


def test_cancel_a_waiting_job(tmp_path: Path) -> None:
    h = Harness(tmp_path, [Cause.BUSY])

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver()
        await h.step()
        (job_id,) = [p.name for p in h.root.iterdir() if not p.name.startswith("_")]
        request_cancel(h.store, job_id, h.clock.t)  # what `ums fax cancel` does
        await h.step(1)  # not scanned yet: the scan interval is 2 s
        assert h.store.exists(job_id)
        await h.step(2)
        assert h.store.archived() == [job_id]
        assert h.store.load_archived(job_id).state is JobState.CANCELLED
        assert h.subjects() == [f"Fax to {NUMBER} failed: cancelled (1 try)"]
        await h.step(1000)
        assert len(h.dialer.calls) == 1

    run(main)


def test_cancel_during_a_call_hangs_up(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver()
        await h.in_call()
        (job_id,) = [p.name for p in h.root.iterdir() if not p.name.startswith("_")]
        request_cancel(h.store, job_id, h.clock.t)
        h.svc.rescan()
        await h.step()
        assert h.dialer.hung_up == 1
        job = h.store.load_archived(job_id)
        assert job.state is JobState.CANCELLED and job.attempts[-1].cause is Cause.CANCELLED
        assert (h.store.archive_dir(job_id) / CANCEL_FILE).is_file()

    run(main)


def test_two_recipients_two_jobs_and_runner_task(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        two = asyncio.Event()
        h.on_report = lambda: loop.call_soon_threadsafe(two.set) if len(h.reports) == 2 else None
        await h.svc.start()  # with the runner task
        await h.deliver(rcpts=(FAX, "fax=+4940123456@fax.example.com"))
        await asyncio.wait_for(two.wait(), 20)
        assert sorted(c.number for c in h.dialer.calls) == ["+49301234567", "+4940123456"]
        assert len(h.reports) == 2
        await h.svc.stop()

    run(main)


def test_smtp_end_to_end(tmp_path: Path) -> None:
    """smtplib against the real SmtpGateway on a free port."""
    h = Harness(tmp_path)

    async def main() -> None:
        await h.svc.start(run=False)
        gateway = SmtpGateway(
            SmtpInSettings(host="127.0.0.1", port=0, hostname="ums.test", auth=False), h.svc
        )
        port = await gateway.start()

        def client() -> list[tuple[int, bytes]]:
            replies: list[tuple[int, bytes]] = []
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.ehlo("client.example.com")
                replies.append(smtp.mail("mallory@evil.example"))
                smtp.rset()
                replies.append(smtp.mail(SENDER))
                replies.append(smtp.rcpt("bob@example.com"))
                replies.append(smtp.rcpt("123abc@fax.example.com"))
                replies.append(smtp.rcpt("+49 30 1234567@fax.example.com"))
                replies.append(smtp.data(mail()))
            return replies

        replies = await asyncio.to_thread(client)
        await gateway.stop()
        await h.drain()
        codes = [code for code, _ in replies]
        assert codes == [550, 250, 550, 550, 250, 250]
        assert b"may not send faxes" in replies[0][1]
        assert b"no such fax address" in replies[2][1]
        jobs = [p for p in h.root.iterdir() if not p.name.startswith("_")]
        assert len(jobs) == 1
        assert h.store.load(jobs[0].name).sender == SENDER
        await h.step()
        assert h.subjects() == [f"Fax to {NUMBER} sent: 2 pages"]

    run(main)


def test_eight_bit_headers_and_the_to_name(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def main() -> None:
        await h.svc.start(run=False)
        raw = mail(to=f"Bob Builder <{FAX}>").replace(b"Subject: Invoice", b"Subject: Gr\xfc\xdfe")
        await h.deliver(raw)
        (job_id,) = [p.name for p in h.root.iterdir() if not p.name.startswith("_")]
        job = h.store.load(job_id)
        assert job.options["subject"] == "Gr\ufffd\ufffde" and job.options["attention"] == "Bob Builder"
        await h.step()
        assert len(h.reports) == 1

    run(main)


def test_send_at_holds_the_job_back(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def main() -> None:
        await h.svc.start(run=False)
        later = datetime.fromtimestamp(T0 + 3600, UTC).isoformat()
        await h.deliver(mail(extra=f"X-Fax-Send-At: {later}\r\n"))
        await h.step(3599)
        assert h.dialer.calls == []
        await h.step(1)
        assert len(h.dialer.calls) == 1

    run(main)


def test_a_failed_write_leaves_no_job_behind(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    real_create = h.store.create
    made: list[str] = []

    def create(job: Job, mail: bytes) -> Path:
        if made:
            raise OSError(28, "No space left on device")
        made.append(job.id)
        return real_create(job, mail)

    h.store.create = create  # type: ignore[method-assign]
    with pytest.raises(OSError):  # aiosmtpd answers 451: the client sends the mail again
        h.svc.accept(SENDER, [FAX, "+4940123456@fax.example.com"], mail(), None, "peer")
    assert made and not h.store.exists(made[0])


def test_mail_sender_falls_back_to_the_maildir(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    send = mail_sender(SmtpSettings("127.0.0.1", port, timeout=2.0), "ums@example.com", tmp_path / "maildir")
    send(SENDER, b"Message-ID: <r1@example.com>\r\nSubject: report\r\n\r\nbody\r\n")
    assert len(list((tmp_path / "maildir" / SENDER / "Maildir" / "new").iterdir())) == 1


def test_a_failing_dialer_is_retried_not_fatal(tmp_path: Path) -> None:
    h = Harness(tmp_path, congestion_max=2, congestion_interval=10.0)

    async def broken(job: DialJob) -> Attempt:
        raise RuntimeError("no route")

    h.svc._dialer = broken

    async def main() -> None:
        await h.svc.start(run=False)
        await h.deliver()
        await h.step()
        await h.step(10)
        (subject,) = h.subjects()
        assert "failed: no line free on both tries" in subject

    run(main)
