"""baresip as a headless phone that registers and places calls.

What it does
------------
:class:`Baresip` writes a config directory (``templates/baresip.*.in``: SIP on
a free port, RTP in a free port block, the WAV to play as microphone, ctrl_tcp
on a free port, one account), starts ``baresip -f DIR`` and connects a
:class:`CtrlClient` to it.  ``dial(uri)`` starts a call; the call plays the
WAV and hangs up when the file ends (``CALL_CLOSED``, "end of file").  baresip
does not exit cleanly once ctrl_tcp is in use, so :meth:`Baresip.stop` kills it.

With ``mwi=True`` the ``mwi`` module is loaded: after registering, baresip
SUBSCRIBEs to ``message-summary`` for its own AOR and prints every NOTIFY body;
:meth:`Baresip.mwi_reports` reads those back from its stdout (:class:`MwiReport`)
and :meth:`Baresip.wait_mwi` waits for one that matches.

How it works
------------
ctrl_tcp speaks JSON objects framed as netstrings (``<len>:<json>,``): commands
``{"command", "params", "token"}``, answers ``{"response": true, ...}`` and
events ``{"event": true, "type": "CALL_ESTABLISHED", ...}``.  The client reads
on a background thread and keeps every event; waits poll that list.  The
``mwi`` module prints ``----- MWI for <aor> -----`` and then the body's
``Name: value`` lines.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers.ports import free_port, free_port_block
from tests.peers.procs import PeerError, PeerTimeout, Proc, wait_until

__all__ = ["BARESIP", "Baresip", "CtrlClient", "MwiReport", "parse_mwi_reports"]

BARESIP = shutil.which("baresip") or "/usr/bin/baresip"
MODULE_PATH = "/usr/lib/baresip/modules"
TEMPLATES = Path(__file__).resolve().parent / "templates"
_MWI_HEAD = re.compile(r"^----- MWI for (\S+) -----\s*$")
_MWI_LINE = re.compile(r"^([A-Z][A-Za-z-]*):[ \t]*(.*?)\s*$")


@dataclass(frozen=True)
class MwiReport:
    """One message-summary NOTIFY body as baresip's ``mwi`` module printed it."""

    aor: str
    fields: Mapping[str, str]

    @property
    def waiting(self) -> str:
        """``Messages-Waiting`` in lower case (``yes``/``no``), '' when absent."""
        return self.fields.get("Messages-Waiting", "").lower()

    @property
    def voice(self) -> str:
        """``Voice-Message`` new/old counts without the urgent part (``1/0``), '' when absent."""
        return self.fields.get("Voice-Message", "").split("(")[0].strip()


def parse_mwi_reports(text: str) -> list[MwiReport]:
    """Every ``----- MWI for ... -----`` block in baresip's output, oldest first."""
    out: list[MwiReport] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _MWI_HEAD.match(lines[i])
        i += 1
        if m is None:
            continue
        fields: dict[str, str] = {}
        while i < len(lines):
            f = _MWI_LINE.match(lines[i])
            if f is None:
                break
            fields[f.group(1)] = f.group(2)
            i += 1
        out.append(MwiReport(m.group(1), fields))
    return out


class CtrlClient:
    """ctrl_tcp client: netstring-framed JSON, events collected on a reader thread."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=0.5)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise PeerTimeout(f"ctrl_tcp {host}:{port} not accepting: {exc}") from exc
                time.sleep(0.05)
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._token = 0
        self._thread = threading.Thread(target=self._reader, name="baresip-ctrl", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        buf = b""
        while not self._closed.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b":" in buf:
                head, rest = buf.split(b":", 1)
                if not head.isdigit():
                    buf = b""
                    break
                n = int(head)
                if len(rest) < n + 1:
                    break
                try:
                    msg = json.loads(rest[:n])
                except ValueError:
                    msg = {"raw": rest[:n].decode(errors="replace")}
                buf = rest[n + 1 :]
                with self._lock:
                    self.messages.append(msg)

    def send(self, command: str, params: str = "") -> str:
        """Send a command; returns its token."""
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")
        return token

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            evs = [m for m in self.messages if m.get("event")]
        return [e for e in evs if kind is None or e.get("type") == kind]

    def responses(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m.get("response")]

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        wait_until(lambda: bool(self.events(kind)), timeout, 0.05, f"baresip event {kind}")
        return self.events(kind)[0]

    def close(self) -> None:
        self._closed.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(2.0)


class Baresip:
    """One baresip process with one account."""

    def __init__(
        self,
        run_dir: Path,
        audio_file: Path,
        *,
        aor: str,
        password: str = "",
        regint: int = 600,
        outbound: str | None = None,
        account_params: Mapping[str, str] | None = None,
        register: bool = True,
        mwi: bool = False,
    ) -> None:
        self.dir = Path(run_dir) / "baresip"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port()
        self.ctrl_port = free_port()
        self.rtp_min = free_port_block(20)
        params = {"regint": str(regint if register else 0)}
        if password:
            params["auth_pass"] = password
        if outbound:
            params["outbound"] = f'"{outbound}"'
        params.update(account_params or {})
        account = f"<{aor}>" + "".join(f";{k}={v}" for k, v in params.items())
        values = {
            "SIP_PORT": self.sip_port,
            "CTRL_PORT": self.ctrl_port,
            "RTP_MIN": self.rtp_min,
            "RTP_MAX": self.rtp_min + 19,
            "AUDIO_FILE": Path(audio_file).resolve(),
            "MODULE_PATH": MODULE_PATH,
            "ACCOUNT": account,
            "MWI_MODULE": "module_app\t\tmwi.so" if mwi else "# mwi.so not loaded",
        }
        for src, dst in (("baresip.config.in", "config"), ("baresip.accounts.in", "accounts")):
            text = (TEMPLATES / src).read_text()
            for key, value in values.items():
                text = text.replace(f"@{key}@", str(value))
            (self.dir / dst).write_text(text)
        # -t: a safety net; the test kills it long before.
        argv = [BARESIP, "-f", str(self.dir), "-t", "120"]
        self.proc = Proc(argv, self.dir, "baresip", stop_signal=signal.SIGKILL)
        self.ctrl: CtrlClient | None = None

    def start(self, timeout: float = 10.0) -> Baresip:
        self.proc.start()
        try:
            self.proc.wait_tcp("127.0.0.1", self.ctrl_port, timeout)
            self.ctrl = CtrlClient("127.0.0.1", self.ctrl_port, timeout)
        except PeerError:
            self.stop()
            raise
        return self

    def registered(self) -> bool:
        """A REGISTER got 200: the ctrl_tcp event, or baresip's own line (the event may come
        before the ctrl_tcp client is connected)."""
        if self.events("REGISTER_OK"):
            return True
        try:
            out = self.proc.stdout_path.read_text(errors="replace")
        except OSError:
            return False
        return re.search(r"\{\d+/(?:UDP|TCP)/v4\} 200 ", out) is not None

    def wait_registered(self, timeout: float = 10.0) -> None:
        wait_until(self.registered, timeout, 0.05, "baresip to register")

    def output(self) -> str:
        """What baresip printed on stdout so far."""
        try:
            return self.proc.stdout_path.read_text(errors="replace")
        except OSError:
            return ""

    def mwi_reports(self) -> list[MwiReport]:
        """The message-summary bodies printed so far (``mwi=True``), oldest first."""
        return parse_mwi_reports(self.output())

    def wait_mwi(
        self, match: Callable[[MwiReport], bool], timeout: float = 10.0, after: int = 0, what: str = ""
    ) -> MwiReport:
        """Wait for a report that satisfies ``match`` among those after the first ``after``; return it."""
        found: list[MwiReport] = []

        def probe() -> bool:
            found[:] = [r for r in self.mwi_reports()[after:] if match(r)]
            if not found and not self.proc.alive():
                raise PeerError(f"baresip exited\n{self.proc.log_tail()}")
            return bool(found)

        wait_until(probe, timeout, 0.05, what or "a matching MWI report from baresip")
        return found[0]

    def dial(self, uri: str) -> None:
        self._need_ctrl().send("dial", uri)

    def hangup(self) -> None:
        self._need_ctrl().send("hangup")

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        return self._need_ctrl().wait_event(kind, timeout)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self.ctrl.events(kind) if self.ctrl else []

    def _need_ctrl(self) -> CtrlClient:
        if self.ctrl is None:
            raise PeerError("baresip is not started")
        return self.ctrl

    def stop(self) -> None:
        if self.ctrl is not None:
            self.ctrl.close()
        self.proc.kill()

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
