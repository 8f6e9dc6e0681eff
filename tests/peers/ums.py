"""Start ``ums serve`` for a test, read its log events and recordings.

What it does
------------
:class:`UmsConfig` describes a test configuration (listen port, numbers,
accounts pointing at a peer, ring delay, call limit, RTP range, data dir) and
:func:`write_config` turns it into TOML in the documented format.
:class:`UmsServer` runs ``python -m ums serve --config FILE --data-dir DIR``
from the repository root, waits until it answers OPTIONS, stops it with
SIGTERM (the server unregisters then), parses its ``event=...`` log lines
(:class:`LogEvent`) and finds recordings with their JSON sidecars
(:class:`Recording`).  The configuration can also carry the ``[mail]``,
``[voicemail]``, ``[pipeline]``, ``[mwi]``, ``[directory]`` and ``[fax]`` keys and extra
mailbox keys (``notify``); ``UmsServer.kill()`` is a ``kill -9``,
``UmsServer.cli("mailbox", "mark-read", "100")`` runs the operator CLI against
the same files, and :class:`UmsWorker` runs ``python -m ums worker`` for the
Redis scale-out mode.

How it works
------------
The server logs one line per event to stderr; the part from ``event=`` on is
split with :mod:`shlex` into fields.  Waits poll the log file and fail early,
with the log tail, if the server exits.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.peers.audio import read_wav
from tests.peers.ports import free_port, free_port_block
from tests.peers.procs import PeerError, Proc, wait_until

__all__ = [
    "REPO",
    "SIDECAR_KEYS",
    "Account",
    "LogEvent",
    "Recording",
    "UmsConfig",
    "UmsServer",
    "UmsWorker",
    "parse_log_line",
    "python_executable",
    "write_config",
]

REPO = Path(__file__).resolve().parents[2]
#: Keys of a recording's JSON sidecar (docs/api-contracts.md, ums.calls).
SIDECAR_KEYS = frozenset(
    {"call_id", "number", "owner", "caller", "codec", "digits", "duration", "end_reason", "started", "ended"}
)


def python_executable() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@dataclass(frozen=True)
class Account:
    name: str
    registrar: str
    aor: str
    auth_user: str = ""
    password: str = ""
    expires: int = 600
    transport: str = "udp"
    proxy: str = ""


@dataclass
class UmsConfig:
    data_dir: Path
    sip_port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    transports: Sequence[str] = ("udp", "tcp")
    #: (number, owner, service)
    mailboxes: Sequence[tuple[str, str, str]] = (("100", "alice@example.com", "voice"),)
    accounts: Sequence[Account] = ()
    ring_delay: float = 0.0
    max_call_seconds: float | None = None
    max_channels: int | None = None
    accept_direct: bool = True
    codecs: Sequence[str] = ("PCMA", "PCMU")
    rtp_ports: int = 200
    log_level: str = "info"
    extra_sip: Mapping[str, Any] = field(default_factory=dict)
    #: extra keys of [mail] (smarthost = "127.0.0.1:PORT", retry_first = 1, ...)
    mail: Mapping[str, Any] = field(default_factory=dict)
    #: [voicemail], [pipeline], [mwi], [directory] and [fax] keys as given
    voicemail: Mapping[str, Any] = field(default_factory=dict)
    pipeline: Mapping[str, Any] = field(default_factory=dict)
    mwi: Mapping[str, Any] = field(default_factory=dict)
    directory: Mapping[str, Any] = field(default_factory=dict)
    fax: Mapping[str, Any] = field(default_factory=dict)
    #: [fax_gateway] keys (e-mail to fax) as given
    fax_gateway: Mapping[str, Any] = field(default_factory=dict)
    #: [sms] keys as given ([sms.smpp] as an inline table: smpp = {...})
    sms: Mapping[str, Any] = field(default_factory=dict)
    #: [directory.entries]: number -> name
    directory_entries: Mapping[str, str] = field(default_factory=dict)
    #: extra keys per mailbox number (notify = [...], name = "...", attachment = "wav")
    mailbox_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rtp_port_min = free_port_block(self.rtp_ports)
        self.rtp_port_max = self.rtp_port_min + self.rtp_ports - 1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.sip_port}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, cfg: UmsConfig) -> Path:
    """Write ``cfg`` as a ums TOML configuration file."""
    sip: dict[str, Any] = {
        "listen": [f"{t}:{cfg.host}:{cfg.sip_port}" for t in cfg.transports],
        "ring_delay": float(cfg.ring_delay),
        "rtp_port_min": cfg.rtp_port_min,
        "rtp_port_max": cfg.rtp_port_max,
        "codecs": list(cfg.codecs),
        "accept_direct": cfg.accept_direct,
    }
    if cfg.max_call_seconds is not None:
        sip["max_call_seconds"] = float(cfg.max_call_seconds)
    if cfg.max_channels is not None:
        sip["max_channels"] = cfg.max_channels
    sip.update(cfg.extra_sip)
    lines = [
        "# written by tests/peers/ums.py",
        "[server]",
        f"data_dir = {_toml(cfg.data_dir)}",
        f"log_level = {_toml(cfg.log_level)}",
        "",
        "[sip]",
        *(f"{k} = {_toml(v)}" for k, v in sip.items()),
        "",
    ]
    for a in cfg.accounts:
        lines += ["[[accounts]]"]
        for key in ("name", "registrar", "aor", "auth_user", "password", "expires", "transport", "proxy"):
            value = getattr(a, key)
            if key == "proxy" and not value:
                continue
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    for number, owner, service in cfg.mailboxes:
        lines += ["[[mailboxes]]", f"number = {_toml(number)}", f"owner = {_toml(owner)}"]
        lines += [f"service = {_toml(service)}"]
        lines += [f"{k} = {_toml(v)}" for k, v in cfg.mailbox_options.get(number, {}).items()]
        lines += [""]
    mail: dict[str, Any] = {"from": "ums@example.com", "smarthost": ""}
    mail.update(cfg.mail)
    lines += ["[mail]", *(f"{k} = {_toml(v)}" for k, v in mail.items()), ""]
    for section in ("voicemail", "pipeline", "mwi", "directory", "fax", "fax_gateway", "sms"):
        table: Mapping[str, Any] = getattr(cfg, section)
        if table or (section == "directory" and cfg.directory_entries):
            lines += [f"[{section}]", *(f"{k} = {_toml(v)}" for k, v in table.items()), ""]
    if cfg.directory_entries:
        lines += ["[directory.entries]"]
        lines += [f"{_toml(num)} = {_toml(name)}" for num, name in cfg.directory_entries.items()]
        lines += [""]
    path.write_text("\n".join(lines))
    return path


@dataclass(frozen=True)
class LogEvent:
    """One ``event=NAME key=value ...`` log line."""

    name: str
    fields: Mapping[str, str]
    line: str

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.fields[key]


def parse_log_line(line: str) -> LogEvent | None:
    """The event in a log line, or None when the line has no ``event=``."""
    pos = line.find("event=")
    if pos < 0 or (pos > 0 and not line[pos - 1].isspace()):
        return None
    text = line[pos:]
    try:
        parts = shlex.split(text)
    except ValueError:
        parts = text.split()
    fields: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    return LogEvent(fields.pop("event", ""), fields, line)


@dataclass(frozen=True)
class Recording:
    wav: Path
    sidecar_path: Path

    @property
    def sidecar(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.sidecar_path.read_text())
        return data

    def audio(self) -> tuple[np.ndarray, int]:
        return read_wav(self.wav)


class UmsServer:
    """``ums serve`` under test."""

    def __init__(self, run_dir: Path, config: UmsConfig, *, profile_out: Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)
        self.config_path = write_config(self.run_dir / "ums.toml", config)
        argv = [python_executable()]
        if profile_out is not None:
            argv += ["-m", "cProfile", "-o", str(profile_out)]
        argv += ["-m", "ums", "serve", "--config", str(self.config_path), "--data-dir", str(config.data_dir)]
        self.proc = Proc(argv, self.run_dir, "ums", cwd=REPO)

    @property
    def address(self) -> str:
        return self.config.address

    @property
    def port(self) -> int:
        return self.config.sip_port

    @property
    def log_path(self) -> Path:
        return self.proc.stderr_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> UmsServer:
        self.proc.start()
        try:
            if "udp" in self.config.transports:
                self.proc.wait_udp_sip(self.config.host, self.config.sip_port, timeout)
            if "tcp" in self.config.transports:
                self.proc.wait_tcp(self.config.host, self.config.sip_port, timeout)
        except PeerError:
            self.proc.stop(2.0)
            raise
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        return self.proc.stop(timeout)

    def kill(self) -> int | None:
        """SIGKILL (``kill -9``): no clean-up at all, as in a crash."""
        return self.proc.kill()

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -m ums <args[0]> --config FILE --data-dir DIR <args[1:]>`` (e.g. ``mailbox``,
        ``mark-read``, ``100``) with this server's configuration; the result is not checked."""
        argv = [python_executable(), "-m", "ums", args[0], "--config", str(self.config_path)]
        argv += ["--data-dir", str(self.config.data_dir), *args[1:]]
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)

    def terminate(self) -> None:
        """SIGTERM without waiting (the caller watches what happens next)."""
        self.proc.signal(self.proc.stop_signal)

    def __enter__(self) -> UmsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- log --------------------------------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def events(self, name: str | None = None, **match: str) -> list[LogEvent]:
        """Events in the log so far, optionally only ``name`` with matching field values."""
        out = []
        for line in self.log().splitlines():
            ev = parse_log_line(line)
            if ev is None or (name is not None and ev.name != name):
                continue
            if all(ev.fields.get(k) == str(v) for k, v in match.items()):
                out.append(ev)
        return out

    def wait_event(self, name: str, timeout: float = 10.0, count: int = 1, **match: str) -> LogEvent:
        """Wait for the ``count``-th event ``name`` whose fields equal ``match``; return it."""

        def probe() -> bool:
            if len(self.events(name, **match)) >= count:
                return True
            if not self.proc.alive():
                raise PeerError(f"ums exited (rc={self.proc.popen and self.proc.popen.returncode})")
            return False

        try:
            wait_until(probe, timeout, 0.05, f"event={name} {match or ''} in the ums log")
        except PeerError as exc:
            raise type(exc)(f"{exc}\n{self.log_tail()}") from None
        return self.events(name, **match)[count - 1]

    def log_tail(self, lines: int = 40) -> str:
        return self.proc.log_tail(lines)

    # -- recordings -------------------------------------------------------------------------------
    def recordings(self) -> list[Recording]:
        """Recordings whose sidecar exists and parses, oldest first."""
        out = []
        for wav in sorted((Path(self.config.data_dir) / "recordings").glob("*.wav")):
            side = wav.with_suffix(".json")
            try:
                json.loads(side.read_text())
            except (OSError, ValueError):
                continue
            out.append(Recording(wav, side))
        return out

    def wait_recordings(self, count: int = 1, timeout: float = 10.0) -> list[Recording]:
        what = f"{count} recording(s) with a sidecar"
        wait_until(lambda: len(self.recordings()) >= count, timeout, 0.1, what)
        return self.recordings()


class UmsWorker:
    """``python -m ums worker --config FILE --data-dir DIR``: pipeline tasks in their own process
    (the scale-out mode, ``[pipeline] workers = 0`` in the server's configuration)."""

    def __init__(self, run_dir: Path, server: UmsServer, name: str = "worker") -> None:
        self.run_dir = Path(run_dir)
        argv = [python_executable(), "-m", "ums", "worker", "--config", str(server.config_path)]
        argv += ["--data-dir", str(server.config.data_dir)]
        self.proc = Proc(argv, self.run_dir, name, cwd=REPO)

    def start(self) -> UmsWorker:
        self.proc.start()
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        return self.proc.stop(timeout)

    def log(self) -> str:
        try:
            return self.proc.stderr_path.read_text(errors="replace") + self.proc.stdout_path.read_text(
                errors="replace"
            )
        except OSError:
            return ""

    def __enter__(self) -> UmsWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
