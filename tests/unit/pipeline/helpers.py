"""Pieces of the pipeline tests: a configuration, a clock, stored voicemails, an SMTP sink."""

from __future__ import annotations

import asyncio
import io
import random
import socket
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ums.config import Config, parse_config
from ums.pipeline.app import PipelineContext, configure
from ums.store.models import MessageRecord, new_record

START = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
DOMAIN = "ums.example.com"


def make_config(data_dir: Path, **mail: Any) -> Config:
    doc: dict[str, Any] = {
        "server": {"data_dir": str(data_dir)},
        "mailboxes": [
            {"number": "100", "owner": "alice@example.com"},
            {"number": "101", "owner": "bob@example.com", "attachment": "mp3"},
            {"number": "102", "owner": "carol@example.com", "attachment": "opus"},
        ],
        "mail": {
            "from": f"vm@{DOMAIN}",
            "admin": "admin@example.com",
            "retry_first": 60.0,
            "retry_max": 600.0,
            "give_up_days": 1.0,
            "smtp_timeout": 5.0,
            **mail,
        },
        "directory": {"entries": {"+49891234567": "Jane Doe"}},
    }
    return parse_config(doc, "<test>")


class Clock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def wav_bytes(seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000.0
    pcm = (8000 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


@dataclass
class Env:
    ctx: PipelineContext
    clock: Clock
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def store(
        self,
        mailbox: str = "100",
        *,
        caller_number: str = "+49891234567",
        caller_name: str = "",
        seconds: float = 2.0,
        meta: dict[str, Any] | None = None,
    ) -> MessageRecord:
        """A voicemail as the server stores it: WAV in the spool, then the record in the index."""
        mb = self.ctx.config.mailbox_for(mailbox)
        assert mb is not None
        rec = new_record(
            now=self.clock(),
            rng=self.rng,
            domain=DOMAIN,
            mailbox=mailbox,
            owner=mb.owner,
            kind="voice",
            caller_number=caller_number,
            caller_name=caller_name,
            duration=seconds,
            meta=meta,
        )
        rel = f"voice/{rec.id}.wav"
        rec = rec.with_changes(files=(rel,))
        with self.ctx.spool.open_writer(rel) as w:
            w.write(wav_bytes(seconds))
        assert self.ctx.index.add(rec)
        return rec

    def maildir(self, owner: str) -> list[Path]:
        new = self.ctx.maildir_root / owner / "Maildir" / "new"
        return sorted(new.iterdir()) if new.is_dir() else []


def setup_env(tmp_path: Path, **mail: Any) -> Env:
    clock = Clock()
    ctx = configure(make_config(tmp_path / "data", **mail), eager=True, clock=clock, rng=random.Random(3))
    return Env(ctx, clock)


# -- SMTP sink -----------------------------------------------------------------------------------------
def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class SinkHandler:
    """Keeps what it accepts; refuses RCPT for the addresses in ``refuse`` with ``refuse_reply``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.refuse: set[str] = set()
        self.refuse_reply = "550 5.1.1 no such user"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse or "*" in self.refuse:
            return self.refuse_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 accepted"


class Sink:
    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        self.port = port
        self.handler = SinkHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port)

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[tuple[str, list[str], bytes]]:
        return self.handler.received
