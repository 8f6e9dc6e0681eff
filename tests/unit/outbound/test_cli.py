"""``ums fax send|queue|cancel`` against a job directory, and the server picking the jobs up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from ums.cli import main
from ums.config import load_config
from ums.outbound.jobs import Attempt, Cause, Job, JobState
from ums.outbound.service import CANCEL_FILE, DialJob, FaxGatewayService, GatewaySettings, job_store

CONFIG = """
[server]
data_dir = "{data}"
[mail]
from = "ums@example.com"
listen = "127.0.0.1:2525"
[fax_gateway]
enabled = true
domains = ["fax.example.com"]
senders = ["@example.com"]
area_code = "30"
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    cfg = tmp_path / "ums.toml"
    cfg.write_text(CONFIG.format(data=tmp_path / "var"))
    img = Image.new("L", (400, 560), 255)
    ImageDraw.Draw(img).rectangle((40, 40, 360, 100), fill=0)
    page = tmp_path / "page.png"
    img.save(page)
    return cfg, page


def job_ids(cfg: Path) -> list[str]:
    root = job_store(load_config(cfg)).root
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(("_", ".")))


def test_send_queue_cancel(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, page = setup
    assert (
        main(["fax", "send", "-c", str(cfg), "--to", "030 1234567", "--from", "bob@example.com", str(page)])
        == 0
    )
    out = capsys.readouterr().out
    (job_id,) = job_ids(cfg)
    assert f"job {job_id}: 1 page to +49301234567 (dial 0301234567)" in out

    store = job_store(load_config(cfg))
    job = store.load(job_id)
    assert job.sender == "bob@example.com" and job.options["rendered"] and job.state is JobState.QUEUED
    assert {"pages.tif", "page1.png"} <= set(store.files(job_id))

    assert main(["fax", "queue", "-c", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NUMBER", "STATE"]
    assert lines[1].split()[:4] == [job_id, "+49301234567", "queued", "0/12"]
    assert lines[1].split()[-1] == "0/1"

    assert main(["fax", "cancel", "-c", str(cfg), job_id]) == 0
    assert (store.job_dir(job_id) / CANCEL_FILE).is_file()
    assert main(["fax", "cancel", "-c", str(cfg), "20260101-000000-000-00000000"]) == 2
    assert "no job" in capsys.readouterr().err


def test_send_refuses_bad_input(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, page = setup
    assert main(["fax", "send", "-c", str(cfg), "--to", "0900 1234567", str(page)]) == 1
    assert "premium-rate number +499001234567 is not allowed" in capsys.readouterr().err
    assert main(["fax", "send", "-c", str(cfg), "--to", "CALL-ME", str(page)]) == 1
    assert "letters" in capsys.readouterr().err
    exe = page.with_name("x.exe")
    exe.write_bytes(b"MZ\x90\x00" + bytes(100))
    assert main(["fax", "send", "-c", str(cfg), "--to", "030 1234567", str(exe)]) == 1
    assert "cannot fax" in capsys.readouterr().err
    assert job_ids(cfg) == []


def test_the_server_picks_up_cli_jobs_and_cancels(setup: tuple[Path, Path]) -> None:
    cfg_path, page = setup
    cfg = load_config(cfg_path)
    now = [2_000_000_000.0]
    calls: list[DialJob] = []
    reports: list[tuple[str, bytes]] = []

    async def dialer(job: DialJob) -> Attempt:
        calls.append(job)
        return Attempt(now[0], now[0] + 30, Cause.BUSY)

    async def scenario() -> None:
        svc = FaxGatewayService(
            GatewaySettings.from_config(cfg),
            job_store(cfg),
            dialer,
            lambda to, data: reports.append((to, data)),
            clock=lambda: now[0],
        )
        await svc.start(run=False)
        await svc.tick()
        assert calls == []
        assert main(["fax", "send", "-c", str(cfg_path), "--to", "+49 40 123456", str(page)]) == 0
        now[0] += 2.0  # the next scan
        await svc.tick()
        await svc.drain()
        assert [c.number for c in calls] == ["+4940123456"] and len(calls[0].pages) == 1
        (job_id,) = job_ids(cfg_path)
        assert main(["fax", "cancel", "-c", str(cfg_path), job_id]) == 0
        svc.rescan()
        await svc.tick()
        await svc.drain()
        assert job_ids(cfg_path) == []
        job: Job = svc.store.load_archived(job_id)
        assert job.state is JobState.CANCELLED
        assert [to for to, _ in reports] == ["ums@example.com"]
        await svc.stop()

    asyncio.run(scenario())
    assert main(["fax", "queue", "-c", str(cfg_path), "--all"]) == 0
