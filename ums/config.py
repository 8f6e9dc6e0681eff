"""Configuration: one TOML file, validated into frozen dataclasses.

What it does
------------
``load_config(path)`` reads the file and returns a :class:`Config`;
``parse_config(data, source)`` does the same for an already-parsed mapping.
Every problem raises :class:`ConfigError` naming the file, the key and what is
wrong, e.g. ``examples/ums.toml: accounts[0].transport: must be one of udp, tcp``.

How it works
------------
Each section has a small reader that pops known keys from a copy of the table,
checks type and range, and complains about keys left over (a typo must not be
ignored silently).  No I/O beyond reading the one file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

__all__ = [
    "Account",
    "Config",
    "ConfigError",
    "Listen",
    "MailSettings",
    "Mailbox",
    "ServerSettings",
    "SipSettings",
    "load_config",
    "parse_config",
]

Transport = Literal["udp", "tcp"]
Service = Literal["voice", "fax", "both"]


class ConfigError(ValueError):
    """A configuration problem: ``<file>: <key>: <problem>``."""


@dataclass(frozen=True)
class Listen:
    transport: Transport
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path = Path("var")
    log_level: str = "info"
    user_agent: str = "ums/0.1"


@dataclass(frozen=True)
class SipSettings:
    listen: tuple[Listen, ...] = (Listen("udp", "127.0.0.1", 5060), Listen("tcp", "127.0.0.1", 5060))
    #: Host written in Via/Contact/SDP; defaults to the first listen host.
    public_host: str = ""
    #: Seconds to ring (180) before answering; gives CANCEL its window.
    ring_delay: float = 0.0
    #: Calls answered at once; more get 486 Busy Here.
    max_channels: int = 60
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    #: Audio codecs we answer with, in our order of preference.
    codecs: tuple[str, ...] = ("PCMA", "PCMU")
    #: Answer calls that come straight to us (a PBX trunk by IP address), not only via an account.
    accept_direct: bool = True
    #: Longest call we keep open (seconds); a safety net against lost BYEs.
    max_call_seconds: float = 3600.0


@dataclass(frozen=True)
class Account:
    name: str
    registrar: str
    aor: str
    auth_user: str
    password: str
    expires: int = 600
    transport: Transport = "udp"
    proxy: str = ""
    #: Register at all (an account may only be used for outbound calls).
    register: bool = True


@dataclass(frozen=True)
class Mailbox:
    number: str
    owner: str
    service: Service = "voice"
    name: str = ""


@dataclass(frozen=True)
class MailSettings:
    sender: str = "ums@localhost"
    #: "host:port" of the smarthost; empty means mail is written to a Maildir under the data dir.
    smarthost: str = ""
    starttls: bool = False
    username: str = ""
    password: str = ""
    #: SMTP listener for e-mail to fax/SMS ("host:port"; empty = off).
    listen: str = ""


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerSettings = field(default_factory=ServerSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    accounts: tuple[Account, ...] = ()
    mailboxes: tuple[Mailbox, ...] = ()
    mail: MailSettings = field(default_factory=MailSettings)

    def mailbox_for(self, number: str) -> Mailbox | None:
        for mb in self.mailboxes:
            if mb.number == number:
                return mb
        return None

    def with_data_dir(self, data_dir: Path) -> Config:
        from dataclasses import replace

        return replace(self, server=replace(self.server, data_dir=data_dir))


class _Reader:
    """Pops typed values out of one TOML table; reports errors with the full key path."""

    def __init__(self, source: str, path: str, table: Any) -> None:
        self.source = source
        self.path = path
        if not isinstance(table, Mapping):
            self.fail("", "must be a table")
        self.table = dict(table)

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> None:
        key = self.key(name) if name else self.path
        raise ConfigError(f"{self.source}: {key}: {problem}")

    def _pop(self, name: str, typ: type | tuple[type, ...], default: Any, required: bool) -> Any:
        if name not in self.table:
            if required:
                self.fail(name, "is required")
            return default
        value = self.table.pop(name)
        if isinstance(value, bool) and typ is not bool and not (isinstance(typ, tuple) and bool in typ):
            self.fail(name, f"must be {_type_name(typ)}, not a boolean")
        if not isinstance(value, typ):
            self.fail(name, f"must be {_type_name(typ)}, got {type(value).__name__}")
        return value

    def text(self, name: str, default: str = "", required: bool = False) -> str:
        v: str = self._pop(name, str, default, required)
        if required and not v.strip():
            self.fail(name, "must not be empty")
        return v

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        v: int = self._pop(name, int, default, False)
        if not lo <= v <= hi:
            self.fail(name, f"must be between {lo} and {hi}, got {v}")
        return v

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        v = self._pop(name, (int, float), default, False)
        if not lo <= v <= hi:
            self.fail(name, f"must be between {lo} and {hi}, got {v}")
        return float(v)

    def flag(self, name: str, default: bool) -> bool:
        v: bool = self._pop(name, bool, default, False)
        return v

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        v = self.text(name, default)
        if v not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def items(self, name: str, default: list[Any]) -> list[Any]:
        v: list[Any] = self._pop(name, list, default, False)
        return v

    def done(self) -> None:
        for name in self.table:
            self.fail(name, "unknown key")


def _type_name(typ: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    if isinstance(typ, tuple):
        return " or ".join(names.get(t, t.__name__) for t in typ if t is not int or float not in typ)
    return names.get(typ, typ.__name__)


def _parse_hostport(r: _Reader, key: str, text: str, default_port: int) -> tuple[str, int]:
    host, sep, port_s = text.rpartition(":")
    if not sep:
        host, port_s = text, str(default_port)
    host = host.strip("[]")
    if not host:
        r.fail(key, f"missing host in {text!r}")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        r.fail(key, f"bad port in {text!r}")
    return host, int(port_s)


def _read_listen(r: _Reader, items: list[Any]) -> tuple[Listen, ...]:
    out: list[Listen] = []
    for i, item in enumerate(items):
        key = f"listen[{i}]"
        if not isinstance(item, str):
            r.fail(key, "must be a string like 'udp:127.0.0.1:5060'")
        transport, sep, rest = str(item).partition(":")
        if not sep or transport not in ("udp", "tcp"):
            r.fail(key, f"must start with udp: or tcp:, got {item!r}")
        host, port = _parse_hostport(r, key, rest, 5060)
        out.append(Listen(cast(Transport, transport), host, port))
    if not out:
        r.fail("listen", "must name at least one address")
    return tuple(out)


def _looks_like_sip_uri(text: str) -> bool:
    return text.startswith(("sip:", "sips:")) and len(text) > 4


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    top = _Reader(source, "", data)

    srv = _Reader(source, "server", top._pop("server", dict, {}, False))
    server = ServerSettings(
        data_dir=Path(srv.text("data_dir", "var") or "var"),
        log_level=srv.choice("log_level", "info", ("debug", "info", "warning", "error")),
        user_agent=srv.text("user_agent", "ums/0.1"),
    )
    srv.done()

    s = _Reader(source, "sip", top._pop("sip", dict, {}, False))
    listen = _read_listen(s, s.items("listen", ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]))
    codecs = tuple(s.items("codecs", ["PCMA", "PCMU"]))
    for i, c in enumerate(codecs):
        if c not in ("PCMA", "PCMU"):
            s.fail(f"codecs[{i}]", f"must be PCMA or PCMU, got {c!r}")
    if not codecs:
        s.fail("codecs", "must name at least one codec")
    rtp_min = s.integer("rtp_port_min", 20000, 1024, 65534)
    rtp_max = s.integer("rtp_port_max", 29999, 1025, 65535)
    if rtp_max <= rtp_min + 1:
        s.fail("rtp_port_max", "must be above rtp_port_min + 1")
    sip = SipSettings(
        listen=listen,
        public_host=s.text("public_host", ""),
        ring_delay=s.number("ring_delay", 0.0, 0.0, 60.0),
        max_channels=s.integer("max_channels", 60, 1, 100_000),
        rtp_port_min=rtp_min,
        rtp_port_max=rtp_max,
        codecs=codecs,
        accept_direct=s.flag("accept_direct", True),
        max_call_seconds=s.number("max_call_seconds", 3600.0, 1.0, 86400.0),
    )
    s.done()

    accounts: list[Account] = []
    names: set[str] = set()
    for i, item in enumerate(top.items("accounts", [])):
        a = _Reader(source, f"accounts[{i}]", item)
        name = a.text("name", required=True)
        if name in names:
            a.fail("name", f"duplicate account name {name!r}")
        names.add(name)
        registrar = a.text("registrar", required=True)
        aor = a.text("aor", required=True)
        for key, val in (("registrar", registrar), ("aor", aor)):
            if not _looks_like_sip_uri(val):
                a.fail(key, f"must be a sip: URI, got {val!r}")
        proxy = a.text("proxy", "")
        if proxy and not _looks_like_sip_uri(proxy):
            a.fail("proxy", f"must be a sip: URI, got {proxy!r}")
        accounts.append(
            Account(
                name=name,
                registrar=registrar,
                aor=aor,
                auth_user=a.text("auth_user", ""),
                password=a.text("password", ""),
                expires=a.integer("expires", 600, 30, 86400),
                transport=cast(Transport, a.choice("transport", "udp", ("udp", "tcp"))),
                proxy=proxy,
                register=a.flag("register", True),
            )
        )
        a.done()

    mailboxes: list[Mailbox] = []
    numbers: set[str] = set()
    for i, item in enumerate(top.items("mailboxes", [])):
        m = _Reader(source, f"mailboxes[{i}]", item)
        number = m.text("number", required=True)
        if not all(ch.isdigit() or ch in "+*#" for ch in number):
            m.fail("number", f"must be digits (optionally +, *, #), got {number!r}")
        if number in numbers:
            m.fail("number", f"duplicate mailbox number {number!r}")
        numbers.add(number)
        owner = m.text("owner", required=True)
        if "@" not in owner:
            m.fail("owner", f"must be an e-mail address, got {owner!r}")
        mailboxes.append(
            Mailbox(
                number=number,
                owner=owner,
                service=cast(Service, m.choice("service", "voice", ("voice", "fax", "both"))),
                name=m.text("name", ""),
            )
        )
        m.done()

    ml = _Reader(source, "mail", top._pop("mail", dict, {}, False))
    smarthost = ml.text("smarthost", "")
    if smarthost:
        _parse_hostport(ml, "smarthost", smarthost, 25)
    listen_smtp = ml.text("listen", "")
    if listen_smtp:
        _parse_hostport(ml, "listen", listen_smtp, 25)
    mail = MailSettings(
        sender=ml.text("from", "ums@localhost"),
        smarthost=smarthost,
        starttls=ml.flag("starttls", False),
        username=ml.text("username", ""),
        password=ml.text("password", ""),
        listen=listen_smtp,
    )
    ml.done()
    top.done()
    return Config(
        source=source,
        server=server,
        sip=sip,
        accounts=tuple(accounts),
        mailboxes=tuple(mailboxes),
        mail=mail,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: TOML syntax error: {exc}") from exc
    return parse_config(data, str(p))
