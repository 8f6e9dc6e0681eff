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
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

__all__ = [
    "Account",
    "Config",
    "ConfigError",
    "FaxConfig",
    "FaxGatewayConfig",
    "Listen",
    "MailSettings",
    "Mailbox",
    "ServerSettings",
    "SipSettings",
    "SmppConfig",
    "SmsConfig",
    "load_config",
    "parse_config",
]

Transport = Literal["udp", "tcp"]
Service = Literal["voice", "fax", "both"]
AudioFormat = Literal["wav", "mp3", "opus"]
FaxFormat = Literal["pdf", "tiff", "both"]
ImapTls = Literal["implicit", "starttls", "none"]
T38Reinvite = Literal["never", "after_ced"]
DialFormat = Literal["e164", "national", "international"]
FaxNotify = Literal["final", "each", "none"]
FaxResolution = Literal["standard", "fine", "superfine"]
SmsTransportName = Literal["sip", "smpp"]


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
class ImapSettings:
    """The owner's IMAP mailbox, watched for ``\\Seen`` on our own messages (read state for MWI)."""

    host: str
    user: str
    password: str
    port: int = 993
    tls: ImapTls = "implicit"
    folder: str = "INBOX"
    #: seconds between checks when the server offers no IDLE (and the IDLE re-issue interval)
    poll_interval: float = 60.0


@dataclass(frozen=True)
class Mailbox:
    number: str
    owner: str
    service: Service = "voice"
    name: str = ""
    #: voicemail attachment format
    attachment: AudioFormat = "wav"
    #: received faxes: PDF, multi-page TIFF (Class F, G4), or both attached
    fax_format: FaxFormat = "pdf"
    #: greeting files (any format PyAV reads); empty = the [voicemail] default or the built-in prompt
    greeting: str = ""
    greeting_busy: str = ""
    greeting_unavailable: str = ""
    #: SIP URIs of phones/PBXs that get an unsolicited message-summary NOTIFY on changes
    notify: tuple[str, ...] = ()
    #: count faxes in the message-waiting state as well
    count_faxes: bool = False
    imap: ImapSettings | None = None


@dataclass(frozen=True)
class VoicemailConfig:
    silence_threshold: float = -45.0
    silence_timeout: float = 5.0
    max_length: float = 180.0
    min_length: float = 2.0
    beep_frequency: float = 1000.0
    greeting: str = ""
    greeting_busy: str = ""
    greeting_unavailable: str = ""
    #: play a short goodbye before hanging up after '#', silence or max length
    goodbye: bool = True


@dataclass(frozen=True)
class FaxConfig:
    #: answer T.38 (re-INVITE or initial offer of m=image udptl t38)
    t38: bool = True
    #: "after_ced": after sending CED on a G.711 fax call, ask for T.38 with our own re-INVITE
    t38_reinvite: T38Reinvite = "never"
    #: seconds to wait for the answer to our re-INVITE before staying on G.711
    t38_timeout: float = 5.0
    #: our fax identity (CSI): digits, "+" and spaces, 20 characters at most
    ident: str = ""
    #: offer error correction mode (T.30 Annex A)
    ecm: bool = True
    #: on voice (and combined) numbers, switch a call to fax reception when CNG is heard
    cng_detect: bool = True
    #: seconds after the end of T.30 (DCN) before we hang up if the caller has not
    hangup_delay: float = 2.0


@dataclass(frozen=True)
class FaxGatewayConfig:
    """``[fax_gateway]``: e-mail to fax (``ums.outbound``); SMTP listens on ``[mail] listen``."""

    enabled: bool = False
    #: gateway domains: every local part there is a fax number ("+4930123456@fax.example.com")
    domains: tuple[str, ...] = ()
    #: ordinary mail domains where "fax=NUMBER@domain" reaches the gateway (with prefix_forms)
    local_domains: tuple[str, ...] = ()
    prefix_forms: bool = True
    #: also "name@NUMBER.fax" and "name@NUMBER.<gateway domain>"
    subdomain_form: bool = False
    #: who may send: addresses, "@domain" or "*"; deny_senders wins
    senders: tuple[str, ...] = ()
    deny_senders: tuple[str, ...] = ()
    #: any SMTP-authenticated user may send
    allow_authenticated: bool = False
    # dial plan (ums.outbound.numbers.DialPlan)
    country_code: str = "49"
    area_code: str = ""
    national_prefix: str = "0"
    international_prefix: str = "00"
    outside_line: str = ""
    dial_format: DialFormat = "national"
    #: destinations refused (E.164 prefixes, globs, "re:..."); "default" stands for the built-in
    #: toll-fraud list (ums.outbound.numbers.DEFAULT_DENY)
    deny: tuple[str, ...] = ("default",)
    #: exceptions to deny (the most specific rule decides)
    allow: tuple[str, ...] = ()
    #: where calls go without an account: "sip:<dial>@host:port"
    trunk: str = "sip:127.0.0.1:5080"
    #: name of an [[accounts]] entry to call through; empty: the trunk
    account: str = ""
    #: calls at once per account (the trunk counts as one)
    max_concurrent: int = 1
    # retry policy (ums.outbound.jobs.RetryPolicy; HylaFAX defaults)
    busy_interval: float = 180.0
    no_answer_interval: float = 300.0
    not_fax_interval: float = 300.0
    not_fax_max: int = 2
    line_error_interval: float = 60.0
    congestion_interval: float = 60.0
    congestion_max: int = 30
    max_tries: int = 3
    max_dials: int = 12
    #: seconds to ring before giving up a call
    ring_timeout: float = 60.0
    resolution: FaxResolution = "fine"
    cover: bool = False
    #: cover page logo (path relative to the configuration file)
    cover_logo: str = ""
    notify: FaxNotify = "final"
    attach_document: bool = False
    #: most pages of one fax, the cover included
    max_pages: int = 200
    #: days finished jobs stay in the archive
    keep_days: float = 30.0
    #: our fax identity (TSI); empty: [fax] ident
    ident: str = ""
    #: seconds between scans of the job directory for jobs made by `ums fax send` and cancel requests
    scan_interval: float = 2.0


@dataclass(frozen=True)
class SmppConfig:
    """``[sms.smpp]``: the SMSC that ``transport = "smpp"`` binds to (SMPP v3.4 bind_transceiver)."""

    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    #: type of number / numbering plan of our and the far numbers (1/1: international, ISDN)
    source_ton: int = 1
    source_npi: int = 1
    dest_ton: int = 1
    dest_npi: int = 1
    #: submit_sm outstanding at once
    window: int = 10
    #: seconds between enquire_link
    enquire_link: float = 30.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    submit_timeout: float = 10.0
    #: ask for delivery receipts (registered_delivery 1) when the text asks for one
    receipts: bool = True
    #: seconds a part of a concatenated text from a handset waits for its siblings before it is answered
    mo_part_hold: float = 5.0
    #: seconds after its first part an incomplete concatenated text is dropped
    mo_part_expiry: float = 3600.0


@dataclass(frozen=True)
class SmsConfig:
    """``[sms]``: texts in (to a mailbox number) and out (mail to NUMBER@sms domain).

    Who may send and which numbers are refused come from ``[fax_gateway]`` (senders,
    deny_senders, allow_authenticated, deny, allow and the dial plan): one policy for both.
    """

    enabled: bool = False
    transport: SmsTransportName = "sip"
    #: gateway domains: every local part there is a mobile number ("+491512345678@sms.example.com")
    domains: tuple[str, ...] = ()
    #: ordinary mail domains where "sms=NUMBER@domain" reaches the gateway (with prefix_forms)
    local_domains: tuple[str, ...] = ()
    prefix_forms: bool = True
    subdomain_form: bool = False
    #: our number shown to the recipient (SIP From user, SMPP source_addr); empty: none / the account's
    sender: str = ""
    #: SIP: texts go to "sip:<number>@host:port" ...
    trunk: str = "sip:127.0.0.1:5080"
    #: ... or through this [[accounts]] entry
    account: str = ""
    #: numbers the far end writes before a mailbox number (a DID block, "+4989123456"): "+498912345610"
    #: reaches mailbox "10"
    did_prefixes: tuple[str, ...] = ()
    #: the longest text taken from a mail (characters; longer texts are cut with "...")
    max_chars: int = 1000
    max_concurrent: int = 4
    #: temporary failures: seconds before the next try (the last value repeats)
    retry_intervals: tuple[float, ...] = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
    max_tries: int = 8
    #: a text not sent after this many seconds fails
    expire: float = 86400.0
    #: days finished jobs stay in the archive
    keep_days: float = 30.0
    smpp: SmppConfig = field(default_factory=SmppConfig)


@dataclass(frozen=True)
class PipelineSettings:
    #: Celery broker URL; empty = embedded (kombu filesystem transport under the data directory)
    broker: str = ""
    #: worker processes `ums serve` starts itself (0: run `ums worker` yourself, e.g. on other machines)
    workers: int = 1
    #: embedded broker polling interval in seconds (queue-to-start latency)
    poll_interval: float = 0.1


@dataclass(frozen=True)
class DirectoryConfig:
    country_code: str = ""
    international_prefix: str = "00"
    national_prefix: str = "0"
    #: CSV file (number,name), relative to the configuration file
    csv: str = ""
    entries: tuple[tuple[str, str], ...] = ()
    company_search: bool = True
    company_min_digits: int = 7


@dataclass(frozen=True)
class MwiSettings:
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    #: seconds between re-reads of the message index for read-state changes made elsewhere
    poll_interval: float = 5.0


@dataclass(frozen=True)
class MailSettings:
    sender: str = "ums@localhost"
    from_name: str = "Unified Messaging"
    reply_to: str = ""
    #: where reports about undeliverable messages go; empty = sender
    admin: str = ""
    #: IANA time zone for times written in mails
    timezone: str = "UTC"
    #: right-hand side of Message-IDs; empty = the sender's domain
    message_id_domain: str = ""
    retry_first: float = 60.0
    retry_max: float = 3600.0
    give_up_days: float = 5.0
    smtp_timeout: float = 30.0
    #: "host:port" of the smarthost; empty means mail is written to a Maildir under the data dir.
    smarthost: str = ""
    starttls: bool = False
    username: str = ""
    password: str = ""
    #: SMTP listener for e-mail to fax/SMS ("host:port"; empty = off).
    listen: str = ""
    #: certificate and key (PEM) of the listener: STARTTLS is offered when both are set
    listen_tls_cert: str = ""
    listen_tls_key: str = ""
    #: ``[mail.users]``: user -> password for SMTP AUTH (PLAIN, LOGIN) on the listener; AUTH needs
    #: STARTTLS first unless the client is on loopback
    listen_users: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerSettings = field(default_factory=ServerSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    accounts: tuple[Account, ...] = ()
    mailboxes: tuple[Mailbox, ...] = ()
    mail: MailSettings = field(default_factory=MailSettings)
    voicemail: VoicemailConfig = field(default_factory=VoicemailConfig)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    mwi: MwiSettings = field(default_factory=MwiSettings)
    fax: FaxConfig = field(default_factory=FaxConfig)
    fax_gateway: FaxGatewayConfig = field(default_factory=FaxGatewayConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)

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
    """Validate a parsed TOML document into a :class:`Config`.

    Relative file names in it (greetings, directory CSV) are taken relative to the folder of
    ``source`` when that names a file.
    """
    top = _Reader(source, "", data)
    base = Path(source).parent if not source.startswith("<") else None

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
        attachment = cast(AudioFormat, m.choice("attachment", "wav", ("wav", "mp3", "opus")))
        notify = tuple(m.items("notify", []))
        for j, uri in enumerate(notify):
            if not isinstance(uri, str) or not _looks_like_sip_uri(uri):
                m.fail(f"notify[{j}]", f"must be a sip: URI, got {uri!r}")
        imap: ImapSettings | None = None
        if "imap" in m.table:
            im = _Reader(source, f"mailboxes[{i}].imap", m._pop("imap", dict, {}, False))
            tls = cast(ImapTls, im.choice("tls", "implicit", ("implicit", "starttls", "none")))
            imap = ImapSettings(
                host=im.text("host", required=True),
                user=im.text("user", required=True),
                password=im.text("password", ""),
                port=im.integer("port", 993 if tls == "implicit" else 143, 1, 65535),
                tls=tls,
                folder=im.text("folder", "INBOX") or "INBOX",
                poll_interval=im.number("poll_interval", 60.0, 1.0, 3600.0),
            )
            im.done()
        mailboxes.append(
            Mailbox(
                number=number,
                owner=owner,
                service=cast(Service, m.choice("service", "voice", ("voice", "fax", "both"))),
                name=m.text("name", ""),
                attachment=attachment,
                fax_format=cast(FaxFormat, m.choice("fax_format", "pdf", ("pdf", "tiff", "both"))),
                greeting=_rel(base, m.text("greeting", "")),
                greeting_busy=_rel(base, m.text("greeting_busy", "")),
                greeting_unavailable=_rel(base, m.text("greeting_unavailable", "")),
                notify=tuple(str(u) for u in notify),
                count_faxes=m.flag("count_faxes", False),
                imap=imap,
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
    tls_cert = _rel(base, ml.text("listen_tls_cert", ""))
    tls_key = _rel(base, ml.text("listen_tls_key", ""))
    if bool(tls_cert) != bool(tls_key):
        ml.fail(
            "listen_tls_key" if tls_cert else "listen_tls_cert",
            "STARTTLS needs both listen_tls_cert and listen_tls_key",
        )
    users_table = ml._pop("users", dict, {}, False)
    users: list[tuple[str, str]] = []
    for name, password in users_table.items():
        if not isinstance(password, str) or not password:
            ml.fail(f"users.{name}", "must be a non-empty password string")
        users.append((str(name), str(password)))
    mail = MailSettings(
        sender=ml.text("from", "ums@localhost"),
        from_name=ml.text("from_name", "Unified Messaging"),
        reply_to=ml.text("reply_to", ""),
        admin=ml.text("admin", ""),
        timezone=ml.text("timezone", "UTC") or "UTC",
        message_id_domain=ml.text("message_id_domain", ""),
        retry_first=ml.number("retry_first", 60.0, 1.0, 86400.0),
        retry_max=ml.number("retry_max", 3600.0, 1.0, 86400.0),
        give_up_days=ml.number("give_up_days", 5.0, 0.001, 365.0),
        smtp_timeout=ml.number("smtp_timeout", 30.0, 1.0, 600.0),
        smarthost=smarthost,
        starttls=ml.flag("starttls", False),
        username=ml.text("username", ""),
        password=ml.text("password", ""),
        listen=listen_smtp,
        listen_tls_cert=tls_cert,
        listen_tls_key=tls_key,
        listen_users=tuple(users),
    )
    if mail.retry_max < mail.retry_first:
        ml.fail("retry_max", "must not be below retry_first")
    try:
        zoneinfo.ZoneInfo(mail.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        ml.fail("timezone", f"unknown time zone {mail.timezone!r}")
    ml.done()

    v = _Reader(source, "voicemail", top._pop("voicemail", dict, {}, False))
    voicemail = VoicemailConfig(
        silence_threshold=v.number("silence_threshold", -45.0, -90.0, 0.0),
        silence_timeout=v.number("silence_timeout", 5.0, 0.5, 600.0),
        max_length=v.number("max_length", 180.0, 1.0, 7200.0),
        min_length=v.number("min_length", 2.0, 0.0, 60.0),
        beep_frequency=v.number("beep_frequency", 1000.0, 100.0, 3900.0),
        greeting=_rel(base, v.text("greeting", "")),
        greeting_busy=_rel(base, v.text("greeting_busy", "")),
        greeting_unavailable=_rel(base, v.text("greeting_unavailable", "")),
        goodbye=v.flag("goodbye", True),
    )
    if voicemail.min_length > voicemail.max_length:
        v.fail("min_length", "must not exceed max_length")
    v.done()

    pl = _Reader(source, "pipeline", top._pop("pipeline", dict, {}, False))
    pipeline = PipelineSettings(
        broker=pl.text("broker", ""),
        workers=pl.integer("workers", 1, 0, 64),
        poll_interval=pl.number("poll_interval", 0.1, 0.01, 10.0),
    )
    if pipeline.broker and not pipeline.broker.startswith(("redis://", "rediss://", "filesystem://")):
        pl.fail("broker", f"must be empty, redis://... or filesystem://, got {pipeline.broker!r}")
    pl.done()

    d = _Reader(source, "directory", top._pop("directory", dict, {}, False))
    entries_raw = d._pop("entries", dict, {}, False)
    entries: list[tuple[str, str]] = []
    for number, name in entries_raw.items():
        if not isinstance(name, str):
            d.fail(f"entries.{number}", "must be a string (the name)")
        entries.append((str(number), name))
    directory = DirectoryConfig(
        country_code=d.text("country_code", ""),
        international_prefix=d.text("international_prefix", "00"),
        national_prefix=d.text("national_prefix", "0"),
        csv=_rel(base, d.text("csv", "")),
        entries=tuple(entries),
        company_search=d.flag("company_search", True),
        company_min_digits=d.integer("company_min_digits", 7, 1, 20),
    )
    for key in ("country_code", "international_prefix", "national_prefix"):
        value = getattr(directory, key)
        if value and not value.isdigit():
            d.fail(key, f"must be digits, got {value!r}")
    d.done()

    w = _Reader(source, "mwi", top._pop("mwi", dict, {}, False))
    mwi = MwiSettings(
        min_expires=w.integer("min_expires", 60, 1, 86400),
        max_expires=w.integer("max_expires", 7200, 1, 86400 * 7),
        default_expires=w.integer("default_expires", 3600, 1, 86400 * 7),
        poll_interval=w.number("poll_interval", 5.0, 0.1, 3600.0),
    )
    if not mwi.min_expires <= mwi.default_expires <= mwi.max_expires:
        w.fail("default_expires", "must be between min_expires and max_expires")
    w.done()

    fx = _Reader(source, "fax", top._pop("fax", dict, {}, False))
    fax = FaxConfig(
        t38=fx.flag("t38", True),
        t38_reinvite=cast(T38Reinvite, fx.choice("t38_reinvite", "never", ("never", "after_ced"))),
        t38_timeout=fx.number("t38_timeout", 5.0, 0.5, 60.0),
        ident=fx.text("ident", ""),
        ecm=fx.flag("ecm", True),
        cng_detect=fx.flag("cng_detect", True),
        hangup_delay=fx.number("hangup_delay", 2.0, 0.0, 30.0),
    )
    if len(fax.ident) > 20 or not all(ch.isdigit() or ch in "+ " for ch in fax.ident):
        fx.fail("ident", f"must be digits, '+' and spaces, 20 characters at most, got {fax.ident!r}")
    fx.done()

    fax_gateway = _read_fax_gateway(
        _Reader(source, "fax_gateway", top._pop("fax_gateway", dict, {}, False)), base, mail, accounts
    )
    sms = _read_sms(_Reader(source, "sms", top._pop("sms", dict, {}, False)), mail, accounts, fax_gateway)
    top.done()
    return Config(
        source=source,
        server=server,
        sip=sip,
        accounts=tuple(accounts),
        mailboxes=tuple(mailboxes),
        mail=mail,
        voicemail=voicemail,
        pipeline=pipeline,
        directory=directory,
        mwi=mwi,
        fax=fax,
        fax_gateway=fax_gateway,
        sms=sms,
    )


def _strings(r: _Reader, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    values = r.items(name, list(default))
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            r.fail(f"{name}[{i}]", f"must be a non-empty string, got {value!r}")
    return tuple(str(v).strip() for v in values)


def _digits(r: _Reader, name: str, default: str, most: int) -> str:
    value = r.text(name, default)
    if not (value.isdigit() or value == "") or len(value) > most:
        r.fail(name, f"must be at most {most} digits, got {value!r}")
    return value


def _read_fax_gateway(
    g: _Reader, base: Path | None, mail: MailSettings, accounts: list[Account]
) -> FaxGatewayConfig:
    """``[fax_gateway]``; the number rules themselves are checked again by ``ums.outbound``."""
    default = FaxGatewayConfig()
    cfg = FaxGatewayConfig(
        enabled=g.flag("enabled", False),
        domains=tuple(d.lower() for d in _strings(g, "domains", ())),
        local_domains=tuple(d.lower() for d in _strings(g, "local_domains", ())),
        prefix_forms=g.flag("prefix_forms", True),
        subdomain_form=g.flag("subdomain_form", False),
        senders=_strings(g, "senders", ()),
        deny_senders=_strings(g, "deny_senders", ()),
        allow_authenticated=g.flag("allow_authenticated", False),
        country_code=_digits(g, "country_code", "49", 3),
        area_code=_digits(g, "area_code", "", 7),
        national_prefix=_digits(g, "national_prefix", "0", 2),
        international_prefix=_digits(g, "international_prefix", "00", 4),
        outside_line=_digits(g, "outside_line", "", 4),
        dial_format=cast(
            DialFormat, g.choice("dial_format", "national", ("e164", "national", "international"))
        ),
        deny=_strings(g, "deny", default.deny),
        allow=_strings(g, "allow", ()),
        trunk=g.text("trunk", default.trunk),
        account=g.text("account", ""),
        max_concurrent=g.integer("max_concurrent", 1, 1, 1000),
        busy_interval=g.number("busy_interval", default.busy_interval, 0.0, 86400.0),
        no_answer_interval=g.number("no_answer_interval", default.no_answer_interval, 0.0, 86400.0),
        not_fax_interval=g.number("not_fax_interval", default.not_fax_interval, 0.0, 86400.0),
        not_fax_max=g.integer("not_fax_max", default.not_fax_max, 1, 1000),
        line_error_interval=g.number("line_error_interval", default.line_error_interval, 0.0, 86400.0),
        congestion_interval=g.number("congestion_interval", default.congestion_interval, 0.0, 86400.0),
        congestion_max=g.integer("congestion_max", default.congestion_max, 1, 10000),
        max_tries=g.integer("max_tries", default.max_tries, 1, 100),
        max_dials=g.integer("max_dials", default.max_dials, 1, 1000),
        ring_timeout=g.number("ring_timeout", default.ring_timeout, 1.0, 600.0),
        resolution=cast(FaxResolution, g.choice("resolution", "fine", ("standard", "fine", "superfine"))),
        cover=g.flag("cover", False),
        cover_logo=_rel(base, g.text("cover_logo", "")),
        notify=cast(FaxNotify, g.choice("notify", "final", ("final", "each", "none"))),
        attach_document=g.flag("attach_document", False),
        max_pages=g.integer("max_pages", default.max_pages, 1, 10000),
        keep_days=g.number("keep_days", default.keep_days, 0.0, 3650.0),
        ident=g.text("ident", ""),
        scan_interval=g.number("scan_interval", default.scan_interval, 0.1, 3600.0),
    )
    if not cfg.country_code or cfg.country_code.startswith("0"):
        g.fail("country_code", f"must be 1 to 3 digits, not starting with 0, got {cfg.country_code!r}")
    if not cfg.international_prefix:
        g.fail("international_prefix", "must not be empty")
    if cfg.account and cfg.account not in {a.name for a in accounts}:
        g.fail("account", f"no [[accounts]] entry named {cfg.account!r}")
    if not cfg.account:
        _check_trunk(g, cfg.trunk)
    if len(cfg.ident) > 20 or not all(ch.isdigit() or ch in "+ " for ch in cfg.ident):
        g.fail("ident", f"must be digits, '+' and spaces, 20 characters at most, got {cfg.ident!r}")
    if cfg.enabled:
        if not mail.listen:
            g.fail("enabled", "needs [mail] listen (the SMTP address the gateway receives mail on)")
        if not (cfg.domains or (cfg.prefix_forms and cfg.local_domains) or cfg.subdomain_form):
            g.fail("domains", 'no address reaches the gateway: give domains (e.g. ["fax.example.com"])')
        if not (cfg.senders or cfg.allow_authenticated):
            g.fail("senders", 'nobody may send: give senders (e.g. ["@example.com"]) or allow_authenticated')
    g.done()
    return cfg


def _check_trunk(r: _Reader, trunk: str) -> None:
    host, sep, port = trunk.removeprefix("sip:").rpartition(":")
    if not trunk.startswith("sip:") or "@" in trunk or not (sep and host and port.isdigit()):
        r.fail("trunk", f"must be 'sip:host:port', got {trunk!r}")
    if not 0 < int(port) < 65536:
        r.fail("trunk", f"bad port in {trunk!r}")


def _read_sms(
    r: _Reader, mail: MailSettings, accounts: list[Account], fax_gateway: FaxGatewayConfig
) -> SmsConfig:
    """``[sms]`` and ``[sms.smpp]``."""
    default = SmsConfig()
    p = _Reader(r.source, r.key("smpp"), r._pop("smpp", dict, {}, False))
    sd = SmppConfig()
    smpp = SmppConfig(
        host=p.text("host", sd.host),
        port=p.integer("port", sd.port, 1, 65535),
        system_id=p.text("system_id", ""),
        password=p.text("password", ""),
        system_type=p.text("system_type", ""),
        source_ton=p.integer("source_ton", sd.source_ton, 0, 6),
        source_npi=p.integer("source_npi", sd.source_npi, 0, 18),
        dest_ton=p.integer("dest_ton", sd.dest_ton, 0, 6),
        dest_npi=p.integer("dest_npi", sd.dest_npi, 0, 18),
        window=p.integer("window", sd.window, 1, 1000),
        enquire_link=p.number("enquire_link", sd.enquire_link, 1.0, 3600.0),
        reconnect_min=p.number("reconnect_min", sd.reconnect_min, 0.1, 3600.0),
        reconnect_max=p.number("reconnect_max", sd.reconnect_max, 0.1, 86400.0),
        submit_timeout=p.number("submit_timeout", sd.submit_timeout, 0.5, 600.0),
        receipts=p.flag("receipts", sd.receipts),
        mo_part_hold=p.number("mo_part_hold", sd.mo_part_hold, 0.5, 60.0),
        mo_part_expiry=p.number("mo_part_expiry", sd.mo_part_expiry, 60.0, 86400.0),
    )
    if len(smpp.system_id) > 15:
        p.fail("system_id", "must be at most 15 characters (SMPP v3.4 §5.2.1)")
    if len(smpp.password) > 8:
        p.fail("password", "must be at most 8 characters (SMPP v3.4 §5.2.2)")
    if smpp.reconnect_max < smpp.reconnect_min:
        p.fail("reconnect_max", "must not be less than reconnect_min")
    p.done()
    intervals = r.items("retry_intervals", list(default.retry_intervals))
    for i, v in enumerate(intervals):
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 86400:
            r.fail(f"retry_intervals[{i}]", f"must be seconds between 0 and 86400, got {v!r}")
    cfg = SmsConfig(
        enabled=r.flag("enabled", False),
        transport=cast(SmsTransportName, r.choice("transport", "sip", ("sip", "smpp"))),
        domains=tuple(d.lower() for d in _strings(r, "domains", ())),
        local_domains=tuple(d.lower() for d in _strings(r, "local_domains", ())),
        prefix_forms=r.flag("prefix_forms", True),
        subdomain_form=r.flag("subdomain_form", False),
        sender=r.text("sender", ""),
        trunk=r.text("trunk", default.trunk),
        account=r.text("account", ""),
        did_prefixes=_strings(r, "did_prefixes", ()),
        max_chars=r.integer("max_chars", default.max_chars, 1, 100_000),
        max_concurrent=r.integer("max_concurrent", default.max_concurrent, 1, 1000),
        retry_intervals=tuple(float(v) for v in intervals) or default.retry_intervals,
        max_tries=r.integer("max_tries", default.max_tries, 1, 1000),
        expire=r.number("expire", default.expire, 1.0, 86400.0 * 30),
        keep_days=r.number("keep_days", default.keep_days, 0.0, 3650.0),
        smpp=smpp,
    )
    if cfg.sender and not (cfg.sender.lstrip("+").isdigit() or cfg.sender.isalnum()):
        r.fail("sender", f"must be a number (digits, a leading '+') or a short name, got {cfg.sender!r}")
    if cfg.account and cfg.account not in {a.name for a in accounts}:
        r.fail("account", f"no [[accounts]] entry named {cfg.account!r}")
    if not cfg.account:
        _check_trunk(r, cfg.trunk)
    if cfg.enabled:
        if not mail.listen:
            r.fail("enabled", "needs [mail] listen (the SMTP address the gateway receives mail on)")
        if not (cfg.domains or (cfg.prefix_forms and cfg.local_domains) or cfg.subdomain_form):
            r.fail("domains", 'no address reaches the gateway: give domains (e.g. ["sms.example.com"])')
        if not (fax_gateway.senders or fax_gateway.allow_authenticated):
            r.fail(
                "enabled",
                "nobody may send: [fax_gateway] senders (or allow_authenticated) say who may send SMS too",
            )
        if cfg.transport == "smpp" and not smpp.system_id:
            p.fail("system_id", 'is required with [sms] transport = "smpp"')
    r.done()
    return cfg


def _rel(base: Path | None, path: str) -> str:
    """A path from the configuration, taken relative to the configuration file's folder."""
    if not path or base is None or Path(path).is_absolute():
        return path
    return str(base / path)


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
