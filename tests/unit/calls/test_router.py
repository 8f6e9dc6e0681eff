"""Which mailbox answers: Diversion, History-Info, Request-URI, To."""

from __future__ import annotations

from ums.calls.router import caller_of, normalise_number, route
from ums.config import parse_config
from ums.sip.message import Headers, Request

CONFIG = parse_config(
    {
        "mailboxes": [
            {"number": "100", "owner": "alice@example.com"},
            {"number": "+498912345", "owner": "bob@example.com", "service": "both"},
            {"number": "200", "owner": "fax@example.com", "service": "fax"},
        ]
    },
    "t.toml",
)


def invite(uri: str, to: str = "<sip:999@pbx>", **extra: str | list[str]) -> Request:
    headers = Headers.of(
        [
            ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"),
            ("From", '"Jane Doe" <sip:+4930555@pbx>;tag=a'),
            ("To", to),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
        ]
    )
    for name, value in extra.items():
        for v in value if isinstance(value, list) else [value]:
            headers.add(name.replace("_", "-"), v)
    return Request(method="INVITE", uri=uri, headers=headers)


def test_request_uri_user() -> None:
    rt = route(invite("sip:100@ums.example.com"), CONFIG)
    assert rt.mailbox is not None and rt.mailbox.owner == "alice@example.com"
    assert rt.matched_by == "request-uri" and rt.number == "100"


def test_to_user_when_request_uri_is_a_contact() -> None:
    rt = route(invite("sip:ums@10.0.0.9:5060", to="<sip:200@pbx>"), CONFIG)
    assert rt.mailbox is not None and rt.mailbox.number == "200"
    assert rt.matched_by == "to"


def test_diversion_wins_over_the_pilot_number() -> None:
    req = invite(
        "sip:800@ums",
        Diversion=["<sip:100@pbx>;reason=user-busy;counter=1", "<sip:555@pbx>;reason=no-answer"],
    )
    rt = route(req, CONFIG)
    assert rt.mailbox is not None and rt.mailbox.number == "100"
    assert (rt.matched_by, rt.reason) == ("diversion", "user-busy")


def test_diversion_lower_entry_when_top_is_unknown() -> None:
    req = invite(
        "sip:800@ums", Diversion="<sip:777@pbx>;reason=unconditional, <tel:+49-89-12345>;reason=no-answer"
    )
    rt = route(req, CONFIG)
    assert rt.mailbox is not None and rt.mailbox.owner == "bob@example.com"
    assert rt.reason == "no-answer"


def test_history_info_retargeted_entry() -> None:
    req = invite(
        "sip:800@ums",
        History_Info=[
            "<sip:+498912345@pbx>;index=1",
            "<sip:800@ums;cause=486?Reason=SIP%3Bcause%3D486>;index=1.1",
        ],
    )
    rt = route(req, CONFIG)
    assert rt.mailbox is not None and rt.mailbox.number == "+498912345"
    assert rt.matched_by == "history-info" and rt.reason == "486"


def test_unknown_number() -> None:
    rt = route(invite("sip:4711@ums"), CONFIG)
    assert rt.mailbox is None and rt.number == "4711" and rt.matched_by == "none"


def test_caller_prefers_p_asserted_identity() -> None:
    req = invite("sip:100@ums", P_Asserted_Identity='"Reception" <sip:+49895550@pbx>')
    c = caller_of(req)
    assert (c.number, c.name) == ("+49895550", "Reception")
    c2 = caller_of(invite("sip:100@ums"))
    assert (c2.number, c2.name) == ("+4930555", "Jane Doe")


def test_normalise_number() -> None:
    assert normalise_number("+49-(89)-123.45") == "+498912345"
    assert normalise_number("%2B4989") == "+4989"
    assert normalise_number("100;phone-context=pbx") == "100"
    assert normalise_number(None) == ""
