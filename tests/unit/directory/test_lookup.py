"""Number normalisation, display grouping, exact and company (switchboard) look-ups."""

from __future__ import annotations

from pathlib import Path

import pytest

from ums.directory.lookup import (
    Directory,
    DirectorySettings,
    DirectorySource,
    Lookup,
    NumberPlan,
    TableSource,
    display_number,
    load_directory,
    normalise_number,
    read_csv,
)

DE = NumberPlan(country_code="49")


@pytest.mark.parametrize(
    ("raw", "plan", "expected"),
    [
        ("+49 89 1234567", None, "+49891234567"),
        ("+49 (0)89 123-45-67", None, "+49891234567"),
        ("+49 (89) 1234567", None, "+49891234567"),
        ("0049 89/1234567", None, "+49891234567"),
        ("089 1234567", DE, "+49891234567"),
        ("089 1234567", None, "0891234567"),
        ("tel:+49-89-1234567;phone-context=x", None, "+49891234567"),
        ("sip:+49891234567@pbx.example.com", None, "+49891234567"),
        ("201", DE, "201"),
        ("0", DE, "0"),
        ("  ", DE, ""),
        ("011 44 20 7946 0958", NumberPlan("1", "011", "1"), "+442079460958"),
        ("1 415 555 0123", NumberPlan("1", "011", "1"), "+14155550123"),
    ],
)
def test_normalise(raw: str, plan: NumberPlan | None, expected: str) -> None:
    assert normalise_number(raw, plan) == expected


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("+49891234567", "+49 89 1234567"),
        ("+493012345678", "+49 30 12345678"),
        ("+4917612345678", "+49 176 12345678"),
        ("+4922112345", "+49 221 12345"),
        ("+4961311234", "+49 6131 1234"),
        ("+14155550123", "+1 415 555 0123"),
        ("+33123456789", "+33 1 23 45 67 89"),
        ("+442079460958", "+44 2079460958"),
        ("+35312345678", "+353 12345678"),
        ("201", "201"),
        ("anonymous", "anonymous"),
        ("", ""),
    ],
)
def test_display(number: str, shown: str) -> None:
    assert display_number(number) == shown


def make(entries: dict[str, str], **kw: object) -> Directory:
    return Directory([TableSource(entries, DE)], DE, **kw)  # type: ignore[arg-type]


def test_exact_match_across_notations() -> None:
    d = make({"+49 89 1234567": "Jane Doe", "201": "Reception"})
    assert d.lookup("089 1234567") == Lookup("Jane Doe", "+49891234567", "exact")
    assert d.lookup("+49891234567") == Lookup("Jane Doe", "+49891234567", "exact")
    assert d.lookup("201") == Lookup("Reception", "201", "exact")
    assert d.lookup("") is None
    assert d.lookup("+49891234568") is None


def test_company_search_replaces_last_digits_by_zero() -> None:
    d = make({"+49 89 1234560": "ACME", "+49 89 7654000": "Globex", "+49 30 123450": "Initech"})
    hit = d.lookup("+49 89 1234567")
    assert hit == Lookup("ACME", "+49891234560", "company")
    assert hit.is_company and hit.describe() == "company: ACME, switchboard +49 89 1234560"
    assert d.lookup("+49 89 7654321") == Lookup("Globex", "+49897654000", "company")
    # German direct dial-in: extension 12345-67, switchboard 12345-0
    assert d.lookup("+49 30 1234567") == Lookup("Initech", "+4930123450", "company")
    # the switchboard itself is an exact match
    assert d.lookup("+49891234560") == Lookup("ACME", "+49891234560", "exact")
    # four digits away: no match
    assert make({"+49 89 1230000": "Far"}).lookup("+49891234567") is None


def test_exact_beats_company_and_extensions_get_no_company_search() -> None:
    d = make({"+49891234560": "ACME", "+49891234567": "Jane Doe", "200": "Desk"})
    assert d.lookup("+49891234567") == Lookup("Jane Doe", "+49891234567", "exact")
    assert d.lookup("201") is None  # short internal number: "200" is not its switchboard
    assert make({"+49891234560": "ACME"}, company_search=False).lookup("+49891234567") is None


def test_sources_are_asked_in_order() -> None:
    class Fake:
        def __init__(self, names: dict[str, str]) -> None:
            self.names = names
            self.asked: list[str] = []

        def find(self, number: str) -> str | None:
            self.asked.append(number)
            return self.names.get(number)

    first, second = Fake({}), Fake({"+49891234567": "From LDAP"})
    sources: list[DirectorySource] = [first, second]
    d = Directory(sources, DE)
    assert d.lookup("089 1234567") == Lookup("From LDAP", "+49891234567", "exact")
    assert first.asked == ["+49891234567"]


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    assert read_csv('number,name\n+49 89 1234567,Jane Doe\n\n089 555,"Doe, John"\n') == [
        ("+49 89 1234567", "Jane Doe"),
        ("089 555", "Doe, John"),
    ]
    assert read_csv("\ufeff+49 89 1,A\n") == [("+49 89 1", "A")]
    assert read_csv("Nummer;Name\n089 1234567;Jürgen Müller\n") == [("089 1234567", "Jürgen Müller")]
    csv_file = tmp_path / "phone.csv"
    csv_file.write_text("\ufeffnumber,name\n089 1234560,ACME GmbH\n089 1234567,Jane Doe\n", encoding="utf-8")
    d = load_directory(
        DirectorySettings(entries=(("+49891234567", "Jane from config"),), csv_path=csv_file, plan=DE)
    )
    assert d.lookup("+49891234567") == Lookup("Jane from config", "+49891234567", "exact")  # table first
    assert d.lookup("+49891234569") == Lookup("ACME GmbH", "+49891234560", "company")


def test_bad_plan() -> None:
    with pytest.raises(ValueError):
        NumberPlan(country_code="+49")
