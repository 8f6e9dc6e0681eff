"""An SMTP sink in its own process: every message accepted is written to ``<dir>/<n>.eml``.

What it does
------------
``python -m tests.peers.smtpsink --port P --dir D`` runs an aiosmtpd server on 127.0.0.1:P that
accepts any sender and recipient and stores each message as ``D/<n>.eml`` (``n`` counting on
from the files already there, so a restarted sink never overwrites), with the envelope in
``D/<n>.json`` and one line ``accepted n=.. time=.. message_id=.. rcpt=..`` on stdout.

:class:`SmtpSink` starts it as a supervised subprocess; ``stop()`` / ``start()`` / ``restart()``
take the sink away and bring it back on the same port and directory, which is how a test makes
the smarthost unreachable for a while.  ``messages()`` parses what arrived (:class:`Mail`:
headers, attachments, the arrival time).

How it works
------------
The message is written to a temporary name and renamed, so a reader never sees half a file; the
SMTP ``250`` goes out only after the rename.  Reading uses the stdlib ``email`` package with the
default policy.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.peers.procs import PeerError, Proc, wait_until

__all__ = ["Attachment", "Mail", "SmtpSink", "main", "read_mail"]


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Mail:
    """One message the sink accepted."""

    path: Path
    accepted: float  # wall-clock time of acceptance (time.time())
    envelope_from: str
    envelope_to: tuple[str, ...]
    message: EmailMessage

    def header(self, name: str) -> str | None:
        value = self.message.get(name)
        return None if value is None else str(value)

    @property
    def subject(self) -> str:
        return self.header("Subject") or ""

    @property
    def message_id(self) -> str:
        return self.header("Message-ID") or ""

    def attachments(self) -> list[Attachment]:
        out = []
        for part in self.message.iter_attachments():
            payload = part.get_payload(decode=True)
            out.append(Attachment(part.get_filename() or "", part.get_content_type(), bytes(payload or b"")))
        return out

    def body_text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else str(part.get_content())


def read_mail(path: Path) -> Mail:
    meta_path = path.with_suffix(".json")
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return Mail(
        path=path,
        accepted=float(meta.get("time", path.stat().st_mtime)),
        envelope_from=str(meta.get("from", "")),
        envelope_to=tuple(meta.get("to", ())),
        message=msg,
    )


class SmtpSink:
    """The sink as a subprocess on a fixed port and directory."""

    def __init__(
        self, run_dir: Path, port: int, directory: Path | None = None, name: str = "smtpsink"
    ) -> None:
        from tests.peers.ums import REPO, python_executable

        self.run_dir = Path(run_dir)
        self.port = port
        self.dir = Path(directory) if directory else self.run_dir / "mail"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._argv = [
            python_executable(),
            "-m",
            "tests.peers.smtpsink",
            "--port",
            str(port),
            "--dir",
            str(self.dir),
        ]
        self._cwd = REPO
        self._runs = 0
        self.proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> SmtpSink:
        self._runs += 1
        name = self.name if self._runs == 1 else f"{self.name}{self._runs}"
        self.proc = Proc(self._argv, self.run_dir, name, cwd=self._cwd, stop_signal=signal.SIGTERM)
        self.proc.start()
        try:
            self.proc.wait_log(r"^listening ", timeout, stream="out")
        except PeerError:
            self.proc.stop(2.0)
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(5.0)

    def restart(self) -> SmtpSink:
        self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def paths(self) -> list[Path]:
        return sorted(self.dir.glob("*.eml"), key=lambda p: int(p.stem))

    def messages(self) -> list[Mail]:
        return [read_mail(p) for p in self.paths()]

    def wait_messages(self, count: int = 1, timeout: float = 20.0) -> list[Mail]:
        wait_until(lambda: len(self.paths()) >= count, timeout, 0.05, f"{count} message(s) in {self.dir}")
        return self.messages()


# -- the server process ------------------------------------------------------------------------------
class _Handler:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        existing = [int(p.stem) for p in directory.glob("*.eml") if p.stem.isdigit()]
        self.next = max(existing, default=0) + 1

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        n = self.next
        self.next += 1
        data: bytes = envelope.original_content or envelope.content
        final = self.dir / f"{n}.eml"
        tmp = self.dir / f".{n}.eml.tmp"
        tmp.write_bytes(data)
        now = time.time()
        meta = {
            "time": now,
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "peer": str(session.peer),
        }
        (self.dir / f"{n}.json").write_text(json.dumps(meta))
        os.replace(tmp, final)
        msg = email.message_from_bytes(data, policy=email.policy.default)
        mid = str(msg.get("Message-ID", "")).strip()
        print(
            f"accepted n={n} time={now:.6f} message_id={mid} rcpt={','.join(envelope.rcpt_tos)}", flush=True
        )
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="SMTP sink for tests")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--dir", type=Path, required=True)
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)

    from aiosmtpd.controller import Controller

    controller = Controller(_Handler(args.dir), hostname=args.host, port=args.port, data_size_limit=64 << 20)
    controller.start()
    print(f"listening {args.host}:{args.port} dir={args.dir}", flush=True)
    done = {"flag": False}

    def on_signal(signum: int, frame: object) -> None:
        done["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not done["flag"]:
        time.sleep(0.1)
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
