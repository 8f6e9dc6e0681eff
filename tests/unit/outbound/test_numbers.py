"""Destination numbers: normalising what people type, dial strings for the PBX, deny rules."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ums.outbound.numbers import (
    DEFAULT_DENY,
    DENY_LABELS,
    BadNumber,
    DenyList,
    DialPlan,
    dial_string,
    is_e164,
    normalize,
)

BERLIN = DialPlan(country_code="49", area_code="30")
DE = DialPlan()
NANP = DialPlan(country_code="1", area_code="415", national_prefix="1", international_prefix="011")
ITALY = DialPlan(country_code="39", national_prefix="")


@pytest.mark.parametrize(
    ("text", "plan", "expected"),
    [
        ("+49 30 123456", DE, "+4930123456"),
        ("+4930123456", DE, "+4930123456"),
        ("+49 (0)30 123-456", DE, "+4930123456"),
        ("+49(0)30/123456", DE, "+4930123456"),
        ("+44 (0)20 7946 0958", DE, "+442079460958"),
        ("0049 30 123456", DE, "+4930123456"),
        ("0049 (0)30 123456", DE, "+4930123456"),
        ("0044 20 7946 0958", DE, "+442079460958"),
        ("030 123456", DE, "+4930123456"),
        ("(030) 123456", DE, "+4930123456"),
        ("030/12 34 56", DE, "+4930123456"),
        ("030.123456", DE, "+4930123456"),
        ("030-123456", DE, "+4930123456"),
        ("123456", BERLIN, "+4930123456"),
        ("12 34 56", BERLIN, "+4930123456"),
        ("tel:+4930123456", DE, "+4930123456"),
        ("TEL:+49-30-123456", DE, "+4930123456"),
        ("  +49 30 123456\n", DE, "+4930123456"),
        # the own national prefix after the own country code, a common slip
        ("+49 030 123456", DE, "+4930123456"),
        ("0049 030 123456", DE, "+4930123456"),
        # full-width digits, no-break spaces, Unicode dashes
        ("０３０ １２３４５６", DE, "+4930123456"),
        ("030\u00a0123\u2013456", DE, "+4930123456"),
        ("+49\u200930\u2009123456", DE, "+4930123456"),
        # other dial plans
        ("011 44 20 7946 0958", NANP, "+442079460958"),
        ("1 212 555 0123", NANP, "+12125550123"),
        ("555 0123", NANP, "+14155550123"),
        ("06 1234 5678", ITALY, "+390612345678"),
        ("0039 06 1234 5678", ITALY, "+390612345678"),
        # limits: 7 and 15 digits
        ("+683 4002", DE, "+6834002"),
        ("+49 301 234 567 890 1", DE, "+493012345678901"),
    ],
)
def test_normalize(text: str, plan: DialPlan, expected: str) -> None:
    assert normalize(text, plan) == expected
    assert is_e164(expected)


@pytest.mark.parametrize(
    ("text", "plan", "reason"),
    [
        ("", DE, "empty number"),
        ("  - ", DE, "empty number"),
        ("tel:", DE, "empty number"),
        ("+", DE, "number too short"),
        ("00", DE, "number too short"),
        ("0", DE, "number too short"),
        ("030", DE, "number too short"),
        ("+49 30 12", DE, "number too short"),
        ("+49 3012 3456 7890 123", DE, "number too long: E.164 allows at most 15 digits"),
        ("123456", DE, "a local number needs area_code in the dial plan; write it with the area code"),
        ("+049 30 123456", DE, "a country code cannot start with 0"),
        ("000 49 30 123456", DE, "a country code cannot start with 0"),
        ("030 123456 x12", DE, "extensions cannot be dialled; give the number of the fax line itself"),
        ("030 123456x12", DE, "extensions cannot be dialled; give the number of the fax line itself"),
        ("030 123456 ext. 12", DE, "extensions cannot be dialled; give the number of the fax line itself"),
        (
            "030 123456 Extension 12",
            DE,
            "extensions cannot be dialled; give the number of the fax line itself",
        ),
        ("+4930123456;ext=12", DE, "extensions cannot be dialled; give the number of the fax line itself"),
        (
            "tel:+4930123456;ext=12",
            DE,
            "extensions cannot be dialled; give the number of the fax line itself",
        ),
        ("tel:123456;phone-context=+4930", DE, "tel: URI parameters (after ';') are not supported"),
        ("030 123456,,12", DE, "pauses (',', ';', 'p', 'w') cannot be dialled"),
        ("030123456p12", DE, "pauses (',', ';', 'p', 'w') cannot be dialled"),
        ("030123456 w 12", DE, "pauses (',', ';', 'p', 'w') cannot be dialled"),
        ("1-800-FLOWERS", DE, "letters are not allowed in a number; write it with digits"),
        ("bob", DE, "letters are not allowed in a number; write it with digits"),
        ("sip:+4930123456@pbx", DE, "letters are not allowed in a number; write it with digits"),
        ("*31#030123456", DE, "'*' and '#' are not allowed in a number"),
        ("030 123456#", DE, "'*' and '#' are not allowed in a number"),
        ("030+123456", DE, "'+' may only stand at the start of a number"),
        ("++4930123456", DE, "'+' may only stand at the start of a number"),
        ("030_123456", DE, "unexpected character '_' in a number"),
        ("030:123456", DE, "unexpected character ':' in a number"),
        ("٠٣٠١٢٣٤٥٦", DE, "unexpected character '٠' in a number"),
    ],
)
def test_normalize_refuses(text: str, plan: DialPlan, reason: str) -> None:
    with pytest.raises(BadNumber) as info:
        normalize(text, plan)
    assert info.value.reason == reason
    assert str(info.value) == reason
    assert info.value.number == text
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("plan", "number", "expected"),
    [
        (DialPlan(dial_format="e164"), "+4930123456", "+4930123456"),
        (DialPlan(dial_format="e164"), "+442079460958", "+442079460958"),
        (DialPlan(), "+4930123456", "030123456"),
        (DialPlan(), "+442079460958", "00442079460958"),
        (DialPlan(outside_line="0"), "+4930123456", "0030123456"),
        (DialPlan(outside_line="0"), "+442079460958", "000442079460958"),
        (DialPlan(dial_format="international"), "+4930123456", "004930123456"),
        (DialPlan(dial_format="international", outside_line="9"), "+4930123456", "9004930123456"),
        (NANP, "+14155550123", "14155550123"),
        (NANP, "+442079460958", "011442079460958"),
        (ITALY, "+390612345678", "0612345678"),
        (ITALY, "+4930123456", "004930123456"),
    ],
)
def test_dial_string(plan: DialPlan, number: str, expected: str) -> None:
    assert dial_string(number, plan) == expected


@pytest.mark.parametrize(
    "number", ["", "4930123456", "+0123456789", "+49301", "+4930123456789012", "+49 30 1"]
)
def test_dial_string_wants_e164(number: str) -> None:
    with pytest.raises(BadNumber, match=r"not an E\.164 number"):
        dial_string(number, DE)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"country_code": "049"}, "country_code"),
        ({"country_code": ""}, "country_code"),
        ({"country_code": "1234"}, "country_code"),
        ({"area_code": "030"}, "area_code is written without the national prefix: '30', not '030'"),
        ({"area_code": "3O"}, "area_code"),
        ({"national_prefix": "abc"}, "national_prefix"),
        ({"international_prefix": ""}, "international_prefix"),
        ({"international_prefix": "+"}, "international_prefix"),
        ({"national_prefix": "00"}, "must differ"),
        ({"outside_line": "0,"}, "outside_line"),
        ({"dial_format": "local"}, "dial_format 'local'"),
        ({"dial_format": "e164", "outside_line": "0"}, "outside_line cannot be combined"),
    ],
)
def test_dial_plan_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DialPlan(**fields)


def test_dial_plan_round_trip() -> None:
    plan = DialPlan(area_code="30", outside_line="0")
    for text in ("030 123456", "123456", "+44 20 7946 0958"):
        assert normalize(dial_string(normalize(text, plan), plan)[1:], plan) == normalize(text, plan)


DEFAULT = DenyList(DEFAULT_DENY)


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("+4930123456", None),
        ("+491711234567", None),
        ("+4918051234567", None),  # 0180 shared cost: company fax numbers live there
        ("+497001234567", None),  # 0700 personal numbers
        ("+442079460958", None),
        ("+4990012345678", "premium-rate number +4990012345678 is not allowed (deny rule +49900)"),
        ("+491371234567", "mass-calling (televoting) number +491371234567 is not allowed (deny rule +49137)"),
        ("+4911833", "directory-enquiry number +4911833 is not allowed (deny rule +49118)"),
        (
            "+491931234567",
            "online-service or network-internal number +491931234567 is not allowed (deny rule +4919)",
        ),
        (
            "+49199123456",
            "online-service or network-internal number +49199123456 is not allowed (deny rule +4919)",
        ),
        ("+491212345678", "innovative-services number +491212345678 is not allowed (deny rule +4912)"),
        ("+870772123456", "satellite number +870772123456 is not allowed (deny rule +870)"),
        ("+881612345678", "satellite number +881612345678 is not allowed (deny rule +881)"),
        ("+88216123456", "international-network number +88216123456 is not allowed (deny rule +882)"),
        ("+883120123456", "international-network number +883120123456 is not allowed (deny rule +883)"),
        ("+97912345678", "international premium-rate number +97912345678 is not allowed (deny rule +979)"),
    ],
)
def test_default_deny(number: str, reason: str | None) -> None:
    assert DEFAULT.check(number) == reason


def test_default_deny_is_documented() -> None:
    import ums.outbound.numbers as module

    assert module.__doc__ is not None
    for rule in DEFAULT_DENY:
        assert rule in module.__doc__
        assert rule in DENY_LABELS


@pytest.mark.parametrize(
    ("patterns", "allow", "number", "denied_by"),
    [
        # prefixes, with separators
        (["+49 900"], [], "+4990012345678", "+49900"),
        (["+49-30"], [], "+4930123456", "+4930"),
        (["+4930"], [], "+4940123456", None),
        # globs
        (["+881*"], [], "+881612345678", "+881*"),
        (["+4919?1*"], [], "+491921234567", "+4919?1*"),
        (["+4919?1*"], [], "+491992345678", None),
        (["+49[89]*"], [], "+49891234567", "+49[89]*"),
        # regular expressions, anchored at the start
        ([r"re:\+49(900|137)"], [], "+4990012345678", r"re:\+49(900|137)"),
        ([r"re:\+49(900|137)"], [], "+4913712345", r"re:\+49(900|137)"),
        ([r"re:900"], [], "+4990012345678", None),
        ([r"re:.*900"], [], "+4990012345678", r"re:.*900"),
        # allow overrides deny of the same or a shorter prefix
        (["+49900"], ["+4990012345678"], "+4990012345678", None),
        (["+49900"], ["+4990012345678"], "+4990012345679", "+49900"),
        (["+49900"], ["+49900"], "+4990012345678", None),
        (["+881*"], ["+8816*"], "+881612345678", None),
        # ... but not a more specific deny rule
        (["+49900"], ["+49"], "+4990012345678", "+49900"),
        (["+49900"], ["+*"], "+4990012345678", "+49900"),
        # international destinations denied, some countries allowed
        (["+*"], ["+49", "+43"], "+4930123456", None),
        (["+*"], ["+49", "+43"], "+4312345678", None),
        (["+*"], ["+49", "+43"], "+442079460958", "+*"),
        ([*DEFAULT_DENY, "+*"], ["+49"], "+4990012345678", "+49900"),
        ([*DEFAULT_DENY, "+*"], ["+49"], "+4930123456", None),
        # a regular expression counts its literal start
        ([r"re:\+49900\d+"], ["+4990"], "+4990012345678", r"re:\+49900\d+"),
        ([r"re:\+49900\d+"], ["+49900"], "+4990012345678", None),
        ([r"re:^\+49900"], ["+49900"], "+4990012345678", None),
        ([r"re:\+4990?0"], ["+499"], "+4990012345678", None),
        ([r"re:\+49900|\+44"], ["+4"], "+4990012345678", None),
        ([r"re:[+]49900"], ["+"], "+4990012345678", None),
        # the most specific of several deny rules names the reason
        (["+*", "+49", "+49900"], [], "+4990012345678", "+49900"),
    ],
)
def test_deny_rules(patterns: list[str], allow: list[str], number: str, denied_by: str | None) -> None:
    reason = DenyList(patterns, allow=allow).check(number)
    if denied_by is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason.endswith(f"is not allowed (deny rule {denied_by})")
        assert number in reason


def test_own_rule_gets_generic_reason_and_known_range_its_label() -> None:
    assert DenyList(["+4930"]).check("+4930123456") == ("number +4930123456 is not allowed (deny rule +4930)")
    assert DenyList(["+49 900"]).check("+4990012345678") == (
        "premium-rate number +4990012345678 is not allowed (deny rule +49900)"
    )


@pytest.mark.parametrize(
    ("patterns", "allow", "message"),
    [
        (["49900"], [], "deny rule '49900': an E.164 prefix starts with '+' (e.g. '+49900')"),
        (["0900*"], [], "deny rule '0900*': a glob starts with '+' or '*'"),
        (["+49a*"], [], "deny rule '+49a*': a glob starts with '+' or '*'"),
        (["re:("], [], "deny rule 're:(': bad regular expression"),
        ([], ["0049"], "allow rule '0049': an E.164 prefix starts with '+'"),
    ],
)
def test_deny_rule_validation(patterns: list[str], allow: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DenyList(patterns, allow=allow)


def test_deny_list_wants_sequences_and_e164() -> None:
    with pytest.raises(TypeError):
        DenyList("+49900")
    with pytest.raises(BadNumber, match=r"not an E\.164 number"):
        DEFAULT.check("0900123456")
    assert repr(DenyList(["+49900"], allow=["+499001"])) == "DenyList(('+49900',), allow=('+499001',))"


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("+0123456789 -./()[]:;,#*pwxet\u00a0\u2013\uff10"), max_size=24))
def test_normalize_gives_e164_or_bad_number(text: str) -> None:
    try:
        number = normalize(text, BERLIN)
    except BadNumber as exc:
        assert exc.reason
        return
    assert is_e164(number)
    assert DEFAULT.check(number) is None or DEFAULT.check(number)
    assert normalize(dial_string(number, BERLIN), BERLIN) == number
