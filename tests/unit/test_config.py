"""Configuration validation: good files load, bad ones name file, key and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ums.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ums.toml"


def test_example_is_the_quick_start() -> None:
    cfg = load_config(EXAMPLE)
    assert [(str(x.transport), x.host, x.port) for x in cfg.sip.listen] == [
        ("udp", "127.0.0.1", 5060),
        ("tcp", "127.0.0.1", 5060),
    ]
    assert cfg.accounts == ()
    assert cfg.sip.accept_direct
    boxes = {m.number: (m.service, m.owner) for m in cfg.mailboxes}
    assert boxes == {
        "100": ("voice", "alice@example.com"),
        "200": ("fax", "alice@example.com"),
        "300": ("both", "alice@example.com"),
    }
    assert cfg.mail.smarthost == ""
    assert cfg.mail.listen == "127.0.0.1:2525"
    assert str(cfg.server.data_dir) == "var"


def test_accounts_parse() -> None:
    cfg = parse_config(
        {
            "accounts": [
                {
                    "name": "pbx",
                    "registrar": "sip:pbx.example.com",
                    "aor": "sip:ums@pbx.example.com",
                    "auth_user": "ums",
                    "password": "pw",
                    "expires": 120,
                    "transport": "tcp",
                    "proxy": "sip:sbc.example.com:5070",
                },
                {"name": "trunk", "registrar": "sip:t.example", "aor": "sip:1@t.example"},
            ]
        },
        "t.toml",
    )
    assert [a.name for a in cfg.accounts] == ["pbx", "trunk"]
    assert cfg.accounts[0].transport == "tcp" and cfg.accounts[0].expires == 120
    assert cfg.accounts[1].transport == "udp" and cfg.accounts[1].expires == 600


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sip": {"listen": ["sctp:1.2.3.4:5060"]}}, "t.toml: sip.listen[0]: must start with udp: or tcp:"),
        ({"sip": {"listen": ["udp:1.2.3.4:99999"]}}, "t.toml: sip.listen[0]: bad port"),
        ({"sip": {"max_channels": 0}}, "t.toml: sip.max_channels: must be between 1 and 100000, got 0"),
        ({"sip": {"codecs": ["G729"]}}, "t.toml: sip.codecs[0]: must be PCMA or PCMU"),
        ({"sip": {"ring_delay": "2"}}, "t.toml: sip.ring_delay: must be"),
        ({"sip": {"lisen": []}}, "t.toml: sip.lisen: unknown key"),
        (
            {"accounts": [{"name": "a", "registrar": "pbx", "aor": "sip:a@b"}]},
            "accounts[0].registrar: must be a sip: URI",
        ),
        ({"accounts": [{"registrar": "sip:x", "aor": "sip:a@b"}]}, "t.toml: accounts[0].name: is required"),
        (
            {"accounts": [{"name": "a", "registrar": "sip:x", "aor": "sip:a@x", "transport": "tls"}]},
            "accounts[0].transport: must be one of udp, tcp",
        ),
        (
            {"accounts": [{"name": "a", "registrar": "sip:x", "aor": "sip:a@x", "expires": True}]},
            "accounts[0].expires: must be an integer, not a boolean",
        ),
        ({"mailboxes": [{"number": "1x", "owner": "a@b"}]}, "mailboxes[0].number: must be digits"),
        (
            {"mailboxes": [{"number": "1", "owner": "nobody"}]},
            "mailboxes[0].owner: must be an e-mail address",
        ),
        (
            {"mailboxes": [{"number": "1", "owner": "a@b"}, {"number": "1", "owner": "c@d"}]},
            "mailboxes[1].number: duplicate mailbox number",
        ),
        (
            {"mailboxes": [{"number": "1", "owner": "a@b", "service": "sms"}]},
            "mailboxes[0].service: must be one of",
        ),
        ({"mail": {"smarthost": "mail:xx"}}, "t.toml: mail.smarthost: bad port"),
        ({"extra": 1}, "t.toml: extra: unknown key"),
    ],
)
def test_errors_name_file_key_and_problem(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "t.toml")
    assert message in str(info.value)


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\nlisten = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: TOML syntax error"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_check_config_cli(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "ums", "check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok (0 accounts, 3 mailboxes" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[mailboxes]]\nnumber = "100"\nowner = "alice"\n')
    res = subprocess.run(
        [sys.executable, "-m", "ums", "check-config", str(bad)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 2
    assert f"{bad}: mailboxes[0].owner: must be an e-mail address" in res.stderr


def test_issue3_sections(tmp_path: Path) -> None:
    cfg_file = tmp_path / "ums.toml"
    cfg_file.write_text(
        """
[[mailboxes]]
number = "100"
owner = "alice@example.com"
attachment = "mp3"
greeting = "greetings/alice.wav"
notify = ["sip:100@10.0.0.5:5060"]
imap = { host = "imap.example.com", user = "alice", password = "pw", tls = "starttls" }

[voicemail]
silence_timeout = 3
max_length = 120
greeting_busy = "/srv/busy.wav"

[pipeline]
broker = "redis://127.0.0.1:6379/0"
workers = 0

[directory]
country_code = "49"
csv = "dir.csv"
entries = { "+49 89 1234567" = "Jane Doe" }

[mail]
timezone = "Europe/Berlin"
give_up_days = 2
"""
    )
    cfg = load_config(cfg_file)
    mb = cfg.mailboxes[0]
    assert mb.attachment == "mp3"
    assert mb.greeting == str(tmp_path / "greetings" / "alice.wav")
    assert mb.notify == ("sip:100@10.0.0.5:5060",)
    assert mb.imap is not None and (mb.imap.port, mb.imap.tls, mb.imap.folder) == (143, "starttls", "INBOX")
    assert cfg.voicemail.silence_timeout == 3.0 and cfg.voicemail.greeting_busy == "/srv/busy.wav"
    assert (cfg.pipeline.broker, cfg.pipeline.workers) == ("redis://127.0.0.1:6379/0", 0)
    assert cfg.directory.csv == str(tmp_path / "dir.csv")
    assert cfg.directory.entries == (("+49 89 1234567", "Jane Doe"),)
    assert cfg.mail.timezone == "Europe/Berlin" and cfg.mail.give_up_days == 2.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pipeline": {"broker": "amqp://x"}}, "t.toml: pipeline.broker: must be empty, redis://"),
        ({"mail": {"timezone": "Mars/Olympus"}}, "t.toml: mail.timezone: unknown time zone"),
        ({"voicemail": {"min_length": 10, "max_length": 5}}, "t.toml: voicemail.min_length: must not exceed"),
        (
            {"mailboxes": [{"number": "1", "owner": "a@b", "notify": ["tel:1"]}]},
            "mailboxes[0].notify[0]: must be a sip: URI",
        ),
        (
            {"mailboxes": [{"number": "1", "owner": "a@b", "imap": {"host": "h"}}]},
            "mailboxes[0].imap.user: is required",
        ),
        ({"directory": {"country_code": "+49"}}, "t.toml: directory.country_code: must be digits"),
    ],
)
def test_issue3_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "t.toml")
    assert message in str(info.value)


def test_fax_gateway_in_the_quick_start() -> None:
    g = load_config(EXAMPLE).fax_gateway
    assert g.enabled
    assert g.domains == ("fax.example.com",) and g.senders == ("@example.com",)
    assert g.trunk == "sip:127.0.0.1:5080" and g.account == ""
    assert g.deny == ("default",) and g.notify == "final" and g.resolution == "fine"
    assert (g.max_tries, g.max_dials, g.busy_interval) == (3, 12, 180.0)


def test_fax_gateway_defaults_and_values() -> None:
    assert not parse_config({}).fax_gateway.enabled
    cfg = parse_config(
        {
            "mail": {"listen": "127.0.0.1:2525"},
            "accounts": [{"name": "pbx", "registrar": "sip:pbx", "aor": "sip:ums@pbx"}],
            "fax_gateway": {
                "enabled": True,
                "domains": ["Fax.Example.com"],
                "senders": ["*"],
                "deny": ["default", "+449"],
                "allow": ["+49900123456"],
                "account": "pbx",
                "dial_format": "international",
                "outside_line": "0",
                "notify": "each",
                "keep_days": 7,
            },
        }
    )
    g = cfg.fax_gateway
    assert g.domains == ("fax.example.com",) and g.deny == ("default", "+449") and g.account == "pbx"
    assert g.dial_format == "international" and g.notify == "each" and g.keep_days == 7.0


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"enabled": True, "domains": ["f.x"], "senders": ["*"]}, "fax_gateway.enabled: needs [mail] listen"),
        ({"trunk": "127.0.0.1:5080"}, "fax_gateway.trunk: must be 'sip:host:port'"),
        ({"account": "nope"}, "fax_gateway.account: no [[accounts]] entry named 'nope'"),
        ({"dial_format": "local"}, "fax_gateway.dial_format: must be one of e164, national, international"),
        ({"country_code": "049"}, "fax_gateway.country_code: must be 1 to 3 digits"),
        ({"area_code": "3a"}, "fax_gateway.area_code: must be at most 7 digits"),
        ({"notify": "always"}, "fax_gateway.notify: must be one of final, each, none"),
        ({"deny": ["+49900", ""]}, "fax_gateway.deny[1]: must be a non-empty string"),
        ({"max_dials": 0}, "fax_gateway.max_dials: must be between 1 and 1000"),
        ({"domain": ["f.x"]}, "fax_gateway.domain: unknown key"),
    ],
)
def test_fax_gateway_errors(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"fax_gateway": section}, "t.toml")
    assert message in str(info.value)


def test_fax_gateway_needs_domains_and_senders() -> None:
    base = {"mail": {"listen": "127.0.0.1:2525"}}
    with pytest.raises(ConfigError, match=r"fax_gateway\.domains: no address reaches the gateway"):
        parse_config({**base, "fax_gateway": {"enabled": True, "senders": ["*"]}}, "t.toml")
    with pytest.raises(ConfigError, match=r"fax_gateway\.senders: nobody may send"):
        parse_config({**base, "fax_gateway": {"enabled": True, "domains": ["f.x"]}}, "t.toml")


def test_check_config_checks_the_fax_gateway_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ums.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[mail]\nlisten = "127.0.0.1:2525"\n'
        '[fax_gateway]\nenabled = true\ndomains = ["fax.example.com"]\nsenders = ["*"]\ndeny = ["+49x"]\n'
    )
    assert main(["check-config", str(bad)]) == 2
    assert "fax_gateway.deny: deny rule '+49x'" in capsys.readouterr().err


def test_smtp_listener_tls_and_auth_users() -> None:
    mail = parse_config(
        {
            "mail": {
                "listen": "127.0.0.1:2525",
                "listen_tls_cert": "/etc/ums/cert.pem",
                "listen_tls_key": "/etc/ums/key.pem",
                "users": {"bob": "s3cret", "alice": "pa55"},
            }
        }
    ).mail
    assert (mail.listen_tls_cert, mail.listen_tls_key) == ("/etc/ums/cert.pem", "/etc/ums/key.pem")
    assert dict(mail.listen_users) == {"bob": "s3cret", "alice": "pa55"}
    with pytest.raises(ConfigError, match=r"mail\.listen_tls_key: STARTTLS needs both"):
        parse_config({"mail": {"listen": "127.0.0.1:2525", "listen_tls_cert": "c.pem"}})
    with pytest.raises(ConfigError, match=r"mail\.users\.bob: must be a non-empty password"):
        parse_config({"mail": {"listen": "127.0.0.1:2525", "users": {"bob": ""}}})


def test_sms_in_the_quick_start() -> None:
    s = load_config(EXAMPLE).sms
    assert s.enabled and s.transport == "sip"
    assert s.domains == ("sms.example.com",) and s.trunk == "sip:127.0.0.1:5080"
    assert s.sender == "+49301234500" and s.max_tries == 8


def test_sms_defaults_and_smpp_values() -> None:
    assert not parse_config({}).sms.enabled
    cfg = parse_config(
        {
            "mail": {"listen": "127.0.0.1:2525"},
            "fax_gateway": {"senders": ["@example.com"]},
            "sms": {
                "enabled": True,
                "transport": "smpp",
                "domains": ["SMS.Example.com"],
                "did_prefixes": ["+4930123450"],
                "retry_intervals": [10, 20.5],
                "smpp": {"host": "smsc", "port": 2776, "system_id": "ums", "password": "pw", "window": 5},
            },
        }
    )
    s = cfg.sms
    assert s.domains == ("sms.example.com",) and s.did_prefixes == ("+4930123450",)
    assert s.retry_intervals == (10.0, 20.5)
    assert (s.smpp.host, s.smpp.port, s.smpp.system_id, s.smpp.window) == ("smsc", 2776, "ums", 5)


def test_smpp_receipts_and_handset_part_times() -> None:
    d = parse_config({}).sms.smpp
    assert (d.receipts, d.mo_part_hold, d.mo_part_expiry) == (True, 5.0, 3600.0)
    smpp = {"receipts": False, "mo_part_hold": 0.5, "mo_part_expiry": 86400}
    s = parse_config({"sms": {"smpp": smpp}}).sms.smpp
    assert (s.receipts, s.mo_part_hold, s.mo_part_expiry) == (False, 0.5, 86400.0)
    for key, value, problem in (
        ("receipts", 1, "must be true or false"),
        ("mo_part_hold", 0.4, "must be between 0.5 and 60.0"),
        ("mo_part_hold", 61, "must be between 0.5 and 60.0"),
        ("mo_part_expiry", 59, "must be between 60.0 and 86400.0"),
        ("mo_part_expiry", 86401, "must be between 60.0 and 86400.0"),
    ):
        with pytest.raises(ConfigError, match=rf"sms\.smpp\.{key}: {problem}"):
            parse_config({"sms": {"smpp": {key: value}}}, "t.toml")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"transport": "http"}, "sms.transport: must be one of sip, smpp"),
        ({"trunk": "127.0.0.1:5080"}, "sms.trunk: must be 'sip:host:port'"),
        ({"account": "nope"}, "sms.account: no [[accounts]] entry named 'nope'"),
        ({"enabled": True, "domains": ["s.x"]}, "sms.enabled: needs [mail] listen"),
        ({"retry_intervals": [-1]}, "sms.retry_intervals[0]: must be seconds"),
        ({"sender": "a b"}, "sms.sender: must be a number"),
        ({"smpp": {"system_id": "x" * 16}}, "sms.smpp.system_id: must be at most 15 characters"),
        ({"smpp": {"password": "123456789"}}, "sms.smpp.password: must be at most 8 characters"),
        ({"smpp": {"port": 0}}, "sms.smpp.port: must be between 1 and 65535"),
        ({"smpp": {"colour": "red"}}, "sms.smpp.colour: unknown key"),
    ],
)
def test_sms_errors(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sms": section}, "t.toml")
    assert message in str(info.value)


def test_sms_needs_senders_and_an_smpp_system_id() -> None:
    base = {"mail": {"listen": "127.0.0.1:2525"}}
    with pytest.raises(ConfigError, match="nobody may send"):
        parse_config({**base, "sms": {"enabled": True, "domains": ["s.x"]}}, "t.toml")
    with pytest.raises(ConfigError, match=r"sms\.smpp\.system_id: is required"):
        parse_config(
            {
                **base,
                "fax_gateway": {"senders": ["*"]},
                "sms": {"enabled": True, "domains": ["s.x"], "transport": "smpp"},
            },
            "t.toml",
        )
