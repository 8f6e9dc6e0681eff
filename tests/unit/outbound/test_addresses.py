"""Gateway addresses, the sender policy and the X-Fax option headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ums.outbound.addresses import (
    BadOption,
    FaxOptions,
    GatewayAddressing,
    GatewayRecipient,
    SenderPolicy,
    parse_options,
    parse_recipient,
)
from ums.outbound.numbers import DialPlan, normalize

FAX = GatewayAddressing(
    service="fax",
    domains=("fax.example.com",),
    local_domains=("example.com", "example.org"),
    subdomain_form=True,
)
SMS = GatewayAddressing(service="SMS", domains=("SMS.Example.COM.",), local_domains=("example.com",))
PLAIN = GatewayAddressing(service="fax", domains=("fax.example.com",), prefix_forms=False)


def R(number: str, attention: str | None, address: str) -> GatewayRecipient:
    return GatewayRecipient(number_text=number, attention=attention, address=address)


@pytest.mark.parametrize(
    ("address", "addressing", "expected"),
    [
        # NUMBER@gateway-domain, envelope and header forms
        ("+4930123456@fax.example.com", FAX, R("+4930123456", None, "+4930123456@fax.example.com")),
        ("<+4930123456@fax.example.com>", FAX, R("+4930123456", None, "+4930123456@fax.example.com")),
        ("+4930123456@FAX.Example.Com", FAX, R("+4930123456", None, "+4930123456@FAX.Example.Com")),
        ("+4930123456@fax.example.com.", FAX, R("+4930123456", None, "+4930123456@fax.example.com.")),
        ("+49-30-123456@fax.example.com", FAX, R("+49-30-123456", None, "+49-30-123456@fax.example.com")),
        ("030.123456@fax.example.com", FAX, R("030.123456", None, "030.123456@fax.example.com")),
        ("030/123456@fax.example.com", FAX, R("030/123456", None, "030/123456@fax.example.com")),
        # parentheses are kept (parseaddr would read them as a comment)
        ("+49(30)123456@fax.example.com", FAX, R("+49(30)123456", None, "+49(30)123456@fax.example.com")),
        # quoted local part
        ('"+49 30 123456"@fax.example.com', FAX, R("+49 30 123456", None, '"+49 30 123456"@fax.example.com')),
        ('"030 \\"12\\""@fax.example.com', FAX, R('030 "12"', None, '"030 \\"12\\""@fax.example.com')),
        # the number is not checked here
        ("bob@fax.example.com", FAX, R("bob", None, "bob@fax.example.com")),
        # display names
        (
            '"Bob Smith" <+4930123@fax.example.com>',
            FAX,
            R("+4930123", "Bob Smith", "+4930123@fax.example.com"),
        ),
        ("Bob Smith <+4930123@fax.example.com>", FAX, R("+4930123", "Bob Smith", "+4930123@fax.example.com")),
        (
            '"Smith, Bob <Sales>" <+4930123@fax.example.com>',
            FAX,
            R("+4930123", "Smith, Bob <Sales>", "+4930123@fax.example.com"),
        ),
        (
            "=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <030123456@fax.example.com>",
            FAX,
            R("030123456", "Jürgen Müller", "030123456@fax.example.com"),
        ),
        # Outlook shows a typed address as its own display name: that is nobody's name
        (
            "'+4930123@fax.example.com' <+4930123@fax.example.com>",
            FAX,
            R("+4930123", None, "+4930123@fax.example.com"),
        ),
        ('"+4930123" <+4930123@fax.example.com>', FAX, R("+4930123", None, "+4930123@fax.example.com")),
        ('"" <+4930123@fax.example.com>', FAX, R("+4930123", None, "+4930123@fax.example.com")),
        ('"+49 30 123" <+4930123@fax.example.com>', FAX, R("+4930123", None, "+4930123@fax.example.com")),
        # obsolete source route in an envelope path
        (
            "<@relay.example.net:+4930123@fax.example.com>",
            FAX,
            R("+4930123", None, "+4930123@fax.example.com"),
        ),
        # service=NUMBER at a gateway domain and at a local domain
        ("fax=+4930123456@fax.example.com", FAX, R("+4930123456", None, "fax=+4930123456@fax.example.com")),
        ("FAX=030123456@Example.ORG", FAX, R("030123456", None, "FAX=030123456@Example.ORG")),
        (
            '"Bob" <fax=030-123456@example.com>',
            FAX,
            R("030-123456", "Bob", "fax=030-123456@example.com"),
        ),
        (
            "fax=+4930123456@fax.example.com",
            PLAIN,
            R("fax=+4930123456", None, "fax=+4930123456@fax.example.com"),
        ),
        # user@NUMBER.fax and user@NUMBER.<gateway domain>
        ("bob@030123456.fax", FAX, R("030123456", "bob", "bob@030123456.fax")),
        ("Bob.Smith@004930123456.FAX", FAX, R("004930123456", "Bob.Smith", "Bob.Smith@004930123456.FAX")),
        ("bob@030-123456.fax.example.com", FAX, R("030-123456", "bob", "bob@030-123456.fax.example.com")),
        ('"Robert" <bob@030123456.fax>', FAX, R("030123456", "bob", "bob@030123456.fax")),
        ('"Robert" <@030123456.fax>', FAX, R("030123456", "Robert", "@030123456.fax")),
        # SMS: the same forms with its own service name
        ("+491711234567@sms.example.com", SMS, R("+491711234567", None, "+491711234567@sms.example.com")),
        ("sms=01711234567@example.com", SMS, R("01711234567", None, "sms=01711234567@example.com")),
    ],
)
def test_parse_recipient(address: str, addressing: GatewayAddressing, expected: GatewayRecipient) -> None:
    assert parse_recipient(address, addressing) == expected


@pytest.mark.parametrize(
    ("address", "addressing"),
    [
        ("bob@example.com", FAX),  # ordinary mail at a local domain
        ("fax=030123456@example.net", FAX),  # not one of ours
        ("fax=030123456@example.com", PLAIN),  # prefix forms off
        ("bob@030123456.fax", PLAIN),  # subdomain form off
        ("bob@030123456.fax", SMS),
        ("+4930123456@fax.example.com", SMS),
        ("030123456@sub.fax.example.com.evil.net", FAX),
        ("030123456@notfax.example.com", FAX),
        ("postmaster@fax.example.com", FAX),  # RFC 5321 §4.5.1
        ("PostMaster@fax.example.com", FAX),
        ("sms=0171@example.com", FAX),
        ("030123456", FAX),
        ("", FAX),
        ("<>", FAX),
        ("bob@[192.0.2.1]", FAX),
    ],
)
def test_not_for_the_gateway(address: str, addressing: GatewayAddressing) -> None:
    assert parse_recipient(address, addressing) is None


def test_recipient_number_goes_to_normalize() -> None:
    plan = DialPlan(area_code="30")
    for address in ("+49-30-123456@fax.example.com", "fax=030.123456@example.com", "bob@030123456.fax"):
        recipient = parse_recipient(address, FAX)
        assert recipient is not None
        assert normalize(recipient.number_text, plan) == "+4930123456"


def test_addressing_is_normalised() -> None:
    assert SMS.service == "sms"
    assert SMS.domains == ("sms.example.com",)
    domains: Any = ["Fax.Example.com"]  # a list from a config file
    local: Any = ["Example.com"]
    listed = GatewayAddressing("fax", domains, local_domains=local)
    assert listed.domains == ("fax.example.com",)
    assert listed.local_domains == ("example.com",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"service": "fax!", "domains": ("fax.example.com",)}, "service 'fax!'"),
        ({"service": "", "domains": ("fax.example.com",)}, "service ''"),
        ({"service": "fax", "domains": ("bob@fax.example.com",)}, "domains: 'bob@fax.example.com' is not"),
        ({"service": "fax", "domains": ("",)}, "domains: '' is not"),
        ({"service": "fax", "domains": ("a.com",), "local_domains": ("A.com",)}, "a.com cannot be both"),
        ({"service": "fax", "domains": ()}, "no address reaches the fax gateway"),
        ({"service": "fax", "domains": (), "local_domains": ("a.com",), "prefix_forms": False}, "no address"),
    ],
)
def test_addressing_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        GatewayAddressing(**fields)


def test_addressing_without_gateway_domain() -> None:
    assert GatewayAddressing("fax", (), subdomain_form=True)
    prefix_only = GatewayAddressing("fax", (), local_domains=("example.com",))
    assert parse_recipient("fax=030123456@example.com", prefix_only) == R(
        "030123456", None, "fax=030123456@example.com"
    )
    with pytest.raises(TypeError):
        GatewayAddressing("fax", "fax.example.com")  # type: ignore[arg-type]


COMPANY = SenderPolicy(allow=["@example.com", "Partner@Example.NET"], deny=["intern@example.com"])


@pytest.mark.parametrize(
    ("policy", "mail_from", "auth_user", "reason"),
    [
        (COMPANY, "bob@example.com", None, None),
        (COMPANY, "<bob@example.com>", None, None),
        (COMPANY, "Bob@EXAMPLE.COM", None, None),
        (COMPANY, "bob@example.com.", None, None),
        (COMPANY, '"Bob Smith" <bob@example.com>', None, None),
        (COMPANY, "partner@example.net", None, None),
        (COMPANY, "other@example.net", None, "sender other@example.net may not send faxes"),
        (COMPANY, "bob@sub.example.com", None, "sender bob@sub.example.com may not send faxes"),
        (COMPANY, "bob@example.com.evil.org", None, "sender bob@example.com.evil.org may not send faxes"),
        (COMPANY, "x@y.org", None, "sender x@y.org may not send faxes"),
        (COMPANY, "<x@y.org>", None, "sender x@y.org may not send faxes"),
        # deny wins over allow
        (COMPANY, "Intern@Example.com", None, "sender Intern@Example.com may not send faxes"),
        # bounces never send, whoever is logged in
        (COMPANY, "<>", None, "mail with an empty sender (<>, such as a bounce) cannot send faxes"),
        (COMPANY, "", None, "mail with an empty sender (<>, such as a bounce) cannot send faxes"),
        (COMPANY, " <> ", "bob", "mail with an empty sender (<>, such as a bounce) cannot send faxes"),
        (COMPANY, "bob", None, "sender 'bob' is not a valid e-mail address"),
        (COMPANY, "@example.com", None, "sender '@example.com' is not a valid e-mail address"),
        # authentication does not help unless allow_authenticated
        (COMPANY, "x@y.org", "bob", "sender x@y.org may not send faxes"),
        (SenderPolicy(allow=[], allow_authenticated=True), "x@y.org", "bob", None),
        (
            SenderPolicy(allow=[], allow_authenticated=True),
            "x@y.org",
            "",
            "sender x@y.org may not send faxes",
        ),
        (
            SenderPolicy(allow=[], allow_authenticated=True),
            "x@y.org",
            None,
            "sender x@y.org may not send faxes",
        ),
        # deny applies to the login name too, and still wins over authentication
        (
            SenderPolicy(allow=[], deny=["intern@example.com"], allow_authenticated=True),
            "x@y.org",
            "Intern@example.com",
            "sender x@y.org may not send faxes",
        ),
        (
            SenderPolicy(allow=[], deny=["@y.org"], allow_authenticated=True),
            "x@y.org",
            "bob",
            "sender x@y.org may not send faxes",
        ),
        # everyone
        (SenderPolicy(allow=["*"]), "anyone@anywhere.example", None, None),
        (
            SenderPolicy(allow=["*"], deny=["@spam.example"]),
            "a@spam.example",
            None,
            "sender a@spam.example may not send faxes",
        ),
        (
            SenderPolicy(allow=["*"]),
            "<>",
            None,
            "mail with an empty sender (<>, such as a bounce) cannot send faxes",
        ),
        # nobody
        (SenderPolicy(allow=[]), "bob@example.com", None, "sender bob@example.com may not send faxes"),
        # quoted local part, SMS wording
        (SenderPolicy(allow=['"bob smith"@example.com']), '"Bob Smith"@example.com', None, None),
        (SenderPolicy(allow=[], service="sms"), "x@y.org", None, "sender x@y.org may not send SMS messages"),
        (
            SenderPolicy(allow=[], service="pager"),
            "x@y.org",
            None,
            "sender x@y.org may not send pager messages",
        ),
    ],
)
def test_sender_policy(
    policy: SenderPolicy, mail_from: str, auth_user: str | None, reason: str | None
) -> None:
    assert policy.authorised(mail_from, auth_user) == reason


@pytest.mark.parametrize(
    ("allow", "deny", "message"),
    [
        (["example.com"], [], "allow: 'example.com' is not an address, '@domain' or '*'"),
        (["bob@"], [], "allow: 'bob@' is not"),
        (["*@example.com"], [], None),
        (['""@example.com'], [], "allow: '\"\"@example.com' is not"),
        (["bob smith@example.com"], [], "allow: 'bob smith@example.com' is not"),
        ([], ["**"], "deny: '**' is not"),
    ],
)
def test_sender_policy_validation(allow: list[str], deny: list[str], message: str | None) -> None:
    if message is None:
        # "*@domain" is read as "@domain"
        assert SenderPolicy(allow=allow).authorised("bob@example.com", None) is None
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        SenderPolicy(allow=allow, deny=deny)


def test_sender_policy_entries_are_normalised() -> None:
    policy = SenderPolicy(allow=[" Bob@Example.COM "], deny=("@Spam.Example.",))
    assert policy.allow == ("bob@example.com",)
    assert policy.deny == ("@spam.example",)
    with pytest.raises(TypeError):
        SenderPolicy(allow="*")


AWARE = datetime(2026, 11, 27, 8, 0, tzinfo=timezone(timedelta(hours=1)))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, FaxOptions()),
        ({"Subject": "hello", "X-Fax-Unknown": "whatever"}, FaxOptions()),
        ({"X-Fax-Cover": "yes"}, FaxOptions(cover=True)),
        ({"x-fax-cover": "No"}, FaxOptions(cover=False)),
        ({"X-FAX-COVER": " TRUE "}, FaxOptions(cover=True)),
        ({"X-Fax-Cover": "off"}, FaxOptions(cover=False)),
        ({"X-Fax-Cover": "1"}, FaxOptions(cover=True)),
        ({"X-Fax-Cover": ""}, FaxOptions()),
        ({"X-Fax-Resolution": "standard"}, FaxOptions(resolution="standard")),
        ({"X-Fax-Resolution": "Normal"}, FaxOptions(resolution="standard")),
        ({"X-Fax-Resolution": "fine"}, FaxOptions(resolution="fine")),
        ({"X-Fax-Resolution": "HIGH"}, FaxOptions(resolution="fine")),
        ({"X-Fax-Resolution": "superfine"}, FaxOptions(resolution="superfine")),
        ({"X-Fax-Resolution": "super-fine"}, FaxOptions(resolution="superfine")),
        ({"X-Fax-Retries": "1"}, FaxOptions(retries=1)),
        ({"X-Fax-Retries": "20"}, FaxOptions(retries=20)),
        ({"X-Fax-Retries": " 03 "}, FaxOptions(retries=3)),
        ({"X-Fax-Notify": "final"}, FaxOptions(notify="final")),
        ({"X-Fax-Notify": "Each"}, FaxOptions(notify="each")),
        ({"X-Fax-Notify": "none"}, FaxOptions(notify="none")),
        ({"X-Fax-Send-At": "Fri, 27 Nov 2026 08:00:00 +0100"}, FaxOptions(send_at=AWARE)),
        ({"X-Fax-Send-At": "27 Nov 2026 07:00 GMT"}, FaxOptions(send_at=AWARE)),
        ({"X-Fax-Send-At": "2026-11-27T08:00+01:00"}, FaxOptions(send_at=AWARE)),
        ({"X-Fax-Send-At": "2026-11-27 07:00:00Z"}, FaxOptions(send_at=AWARE)),
        ({"X-Fax-Send-At": "20261127T070000Z"}, FaxOptions(send_at=datetime(2026, 11, 27, 7, tzinfo=UTC))),
        ({"X-Fax-Comment": "Please call back"}, FaxOptions(cover_comment="Please call back")),
        ({"X-Fax-Comment": "two\r\n  lines"}, FaxOptions(cover_comment="two lines")),
        ({"X-Fax-Comment": "=?utf-8?q?Gr=C3=BC=C3=9Fe?="}, FaxOptions(cover_comment="Grüße")),
        ({"X-Fax-Comment": "bell\x07"}, FaxOptions(cover_comment="bell")),
        ({"X-Fax-Comment": "x" * 1000}, FaxOptions(cover_comment="x" * 1000)),
        ({"X-Fax-Attach-Document": "yes"}, FaxOptions(attach_document=True)),
        ({"X-Fax-Attach-Document": "no"}, FaxOptions(attach_document=False)),
        (
            {
                "X-Fax-Cover": "no",
                "X-Fax-Resolution": "fine",
                "X-Fax-Retries": "5",
                "X-Fax-Notify": "each",
                "X-Fax-Send-At": "2026-11-27T08:00+01:00",
                "X-Fax-Comment": "hi",
                "X-Fax-Attach-Document": "yes",
            },
            FaxOptions(False, "fine", 5, "each", AWARE, "hi", True),
        ),
    ],
)
def test_parse_options(headers: dict[str, str], expected: FaxOptions) -> None:
    assert parse_options(headers) == expected


@pytest.mark.parametrize(
    ("headers", "header", "reason"),
    [
        ({"X-Fax-Cover": "maybe"}, "X-Fax-Cover", "expected yes or no, not 'maybe'"),
        ({"X-Fax-Attach-Document": "2"}, "X-Fax-Attach-Document", "expected yes or no, not '2'"),
        (
            {"X-Fax-Resolution": "ultra"},
            "X-Fax-Resolution",
            "expected standard, fine or superfine, not 'ultra'",
        ),
        ({"X-Fax-Retries": "0"}, "X-Fax-Retries", "expected a number of tries from 1 to 20, not '0'"),
        ({"X-Fax-Retries": "21"}, "X-Fax-Retries", "expected a number of tries from 1 to 20, not '21'"),
        ({"X-Fax-Retries": "-1"}, "X-Fax-Retries", "expected a number of tries from 1 to 20, not '-1'"),
        ({"X-Fax-Retries": "3.5"}, "X-Fax-Retries", "expected a number of tries from 1 to 20, not '3.5'"),
        ({"X-Fax-Retries": "five"}, "X-Fax-Retries", "expected a number of tries from 1 to 20, not 'five'"),
        ({"X-Fax-Retries": "١٠"}, "X-Fax-Retries", "expected a number of tries from 1 to 20, not '١٠'"),
        ({"X-Fax-Notify": "always"}, "X-Fax-Notify", "expected final, each or none, not 'always'"),
        (
            {"X-Fax-Send-At": "tomorrow"},
            "X-Fax-Send-At",
            "expected a date such as 'Fri, 27 Nov 2026 08:00:00 +0100' or '2026-11-27T08:00+01:00', "
            "not 'tomorrow'",
        ),
        (
            {"X-Fax-Send-At": "2026-11-27T08:00"},
            "X-Fax-Send-At",
            "'2026-11-27T08:00' needs a time zone, e.g. '+01:00' or 'Z'",
        ),
        (
            {"X-Fax-Send-At": "2026-11-27"},
            "X-Fax-Send-At",
            "'2026-11-27' needs a time zone, e.g. '+01:00' or 'Z'",
        ),
        (
            {"X-Fax-Send-At": "Fri, 27 Nov 2026 08:00:00 -0000"},
            "X-Fax-Send-At",
            "'Fri, 27 Nov 2026 08:00:00 -0000' needs a time zone, e.g. '+01:00' or 'Z'",
        ),
        ({"X-Fax-Comment": "x" * 1001}, "X-Fax-Comment", "too long: at most 1000 characters"),
    ],
)
def test_parse_options_refuses(headers: dict[str, str], header: str, reason: str) -> None:
    with pytest.raises(BadOption) as info:
        parse_options(headers)
    assert info.value.header == header
    assert info.value.reason == reason
    assert str(info.value) == f"{header}: {reason}"
    assert isinstance(info.value, ValueError)


def _mail(*headers: str, modern: bool = True) -> Message:
    raw = (
        "\r\n".join(("From: bob@example.com", "To: +4930123@fax.example.com", *headers)) + "\r\n\r\nbody\r\n"
    ).encode()
    return message_from_bytes(raw, policy=policy.default if modern else policy.compat32)


@pytest.mark.parametrize("modern", [True, False])
def test_parse_options_from_message(modern: bool) -> None:
    msg = _mail(
        "x-fax-cover: no",
        "X-Fax-Retries: 4",
        "X-Fax-Send-At: Fri, 27 Nov 2026\r\n 08:00:00 +0100",
        "X-Fax-Comment: =?utf-8?q?Bitte_zur=C3=BCckrufen?=",
        modern=modern,
    )
    assert parse_options(msg) == FaxOptions(
        cover=False, retries=4, send_at=AWARE, cover_comment="Bitte zurückrufen"
    )


@pytest.mark.parametrize("modern", [True, False])
def test_repeated_header(modern: bool) -> None:
    same = _mail("X-Fax-Cover: yes", "X-Fax-Cover: YES ", modern=modern)
    assert parse_options(same) == FaxOptions(cover=True)
    different = _mail("X-Fax-Cover: yes", "X-Fax-Cover: no", modern=modern)
    with pytest.raises(BadOption, match="X-Fax-Cover: given more than once with different values"):
        parse_options(different)


def test_parse_options_from_built_message() -> None:
    msg = EmailMessage()
    msg["X-Fax-Resolution"] = "superfine"
    msg["X-Fax-Notify"] = "none"
    assert parse_options(msg) == FaxOptions(resolution="superfine", notify="none")


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('+0123456789 -.()@"<>=:;,\\bfaxBob\u00e9\t'), max_size=40))
def test_parse_recipient_never_fails(address: str) -> None:
    recipient = parse_recipient(address, FAX)
    assert recipient is None or isinstance(recipient.number_text, str)
    reason = COMPANY.authorised(address, None)
    assert reason is None or isinstance(reason, str)
