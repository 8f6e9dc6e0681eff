"""Caller names: reverse look-up of a telephone number in a directory.

What it does
------------
:class:`Directory` answers ``lookup(number) -> Lookup | None``: the name that
belongs to a caller's number, from a table in the configuration, a CSV file,
or any other :class:`DirectorySource` (an LDAP source plugs in here).  When no
entry matches exactly, the *company search* tries the number with its last 1,
2, then 3 digits replaced by 0 — by zeros of the same count, and by a single 0
as German direct dial-in numbers write it (``12345-67`` -> ``12345-0``) — to
find the switchboard number of a company with direct dial-in extensions, and
reports that it did (``how="company"``), so
the e-mail can say "company: ACME, switchboard +49 89 1234560" instead of
pretending to know the person.

``normalise_number`` brings numbers into one form for comparison and
``display_number`` groups an E.164 number for people to read.

How it works
------------
Normalisation (:class:`NumberPlan`): drop a ``tel:``/``sip:`` prefix and
parameters, drop the "(0)" of the German ``+49 (0)89 ...`` notation, remove
visual separators (space, ``-``, ``.``, ``/``, parentheses; RFC 3966 §5.1.1
"visual-separator"), turn the international prefix (``00``) into ``+`` and,
when a country code is configured, the national prefix (``0``) into
``+<country code>``.  Short internal numbers stay as they are.  Sources are
asked in order with the normalised number; the first that knows it wins.

Display grouping: the country code is split off with the ITU-T E.164 list of
one-, two- and three-digit codes; NANP numbers become ``+1 NPA NXX XXXX``,
German ones ``+49 <area> <subscriber>`` with a small area-code heuristic,
French ones pairs of digits, others ``+CC <rest>``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = [
    "Directory",
    "DirectorySettings",
    "DirectorySource",
    "Lookup",
    "NumberPlan",
    "TableSource",
    "display_number",
    "load_directory",
    "normalise_number",
    "read_csv",
]

How = Literal["exact", "company"]

#: RFC 3966 §5.1.1: visual-separator = "-" / "." / "(" / ")"; spaces and "/" are common in address books.
_VISUAL = re.compile(r"[\s\-./()\[\]]")
#: "+49 (0)89 ..." — the national prefix written in parentheses after the country code.
_TRUNK_IN_PARENS = re.compile(r"^(\+\d{1,3})\s*\(0\)")

#: ITU-T E.164 assigned country codes of one and two digits; everything else in use has three.
_CC1 = frozenset({"1", "7"})
_CC2 = frozenset(
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "
    "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split()
)
#: German two-digit area codes (Berlin, Hamburg, Frankfurt am Main, Munich).
_DE_AREA2 = frozenset({"30", "40", "69", "89"})


@dataclass(frozen=True)
class NumberPlan:
    """How numbers are written where the server runs."""

    #: e.g. "49"; empty: national numbers are left as they are
    country_code: str = ""
    #: ITU-T E.164 / national dialling: "00" in most of the world, "011" in NANP
    international_prefix: str = "00"
    #: trunk prefix in front of area codes
    national_prefix: str = "0"

    def __post_init__(self) -> None:
        for name in ("country_code", "international_prefix", "national_prefix"):
            value = getattr(self, name)
            if value and not value.isdigit():
                raise ValueError(f"{name} must be digits, got {value!r}")


def normalise_number(number: str, plan: NumberPlan | None = None) -> str:
    """One comparable form: ``"+49 (0)89 123-45"`` -> ``"+498912345"``; ``"089 12345"`` with
    country code 49 -> ``"+498912345"``; ``"201"`` -> ``"201"``.  Returns "" for no number."""
    plan = plan or NumberPlan()
    text = number.strip()
    for scheme in ("tel:", "sip:", "sips:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    text = text.split(";", 1)[0].split("@", 1)[0]
    text = _TRUNK_IN_PARENS.sub(r"\1", text)
    text = _VISUAL.sub("", text)
    if not text:
        return ""
    if text.startswith("+"):
        return text
    if plan.international_prefix and text.startswith(plan.international_prefix):
        rest = text[len(plan.international_prefix) :]
        if rest.isdigit():
            return "+" + rest
    if (
        plan.country_code
        and plan.national_prefix
        and text.startswith(plan.national_prefix)
        and text[len(plan.national_prefix) :].isdigit()
        and len(text) > len(plan.national_prefix) + 2
    ):
        return f"+{plan.country_code}{text[len(plan.national_prefix) :]}"
    return text


def _split_country(digits: str) -> tuple[str, str]:
    for n, table in ((1, _CC1), (2, _CC2)):
        if digits[:n] in table:
            return digits[:n], digits[n:]
    return digits[:3], digits[3:]


def display_number(number: str) -> str:
    """Group an E.164 number for reading: ``+49891234567`` -> ``+49 89 1234567``.

    Anything that is not ``+`` and digits (internal extensions, "anonymous") comes back unchanged.
    """
    if not (number.startswith("+") and number[1:].isdigit() and len(number) > 4):
        return number
    cc, rest = _split_country(number[1:])
    if not rest:
        return number
    if cc == "1" and len(rest) == 10:
        return f"+1 {rest[:3]} {rest[3:6]} {rest[6:]}"
    if cc == "49" and len(rest) > 4:
        if rest[:2] in _DE_AREA2:
            area = 2
        elif rest[0] == "1" or rest[2] == "1":  # mobile 15x/16x/17x; city codes like 211, 341, 711
            area = 3
        else:
            area = 4
        return f"+49 {rest[:area]} {rest[area:]}"
    if cc == "33" and len(rest) == 9:
        return "+33 " + rest[0] + " " + " ".join(rest[i : i + 2] for i in range(1, 9, 2))
    return f"+{cc} {rest}"


@dataclass(frozen=True)
class Lookup:
    """A directory answer for one caller number."""

    name: str
    #: the directory number that matched (the switchboard number for a company match)
    number_matched: str
    how: How = "exact"

    @property
    def is_company(self) -> bool:
        return self.how == "company"

    def describe(self) -> str:
        """``"Jane Doe"`` or ``"company: ACME, switchboard +49 89 1234560"``."""
        if self.how == "company":
            return f"company: {self.name}, switchboard {display_number(self.number_matched)}"
        return self.name


class DirectorySource(Protocol):
    """Something that knows names for numbers (a table, a CSV file, an LDAP server)."""

    def find(self, number: str) -> str | None:
        """The name for a normalised number, or None."""
        ...


class TableSource:
    """A number -> name table (from the configuration or a CSV file), keys normalised."""

    def __init__(self, entries: Iterable[tuple[str, str]] | Mapping[str, str], plan: NumberPlan) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        self._names: dict[str, str] = {}
        for number, name in items:
            key = normalise_number(number, plan)
            if key and name.strip() and key not in self._names:
                self._names[key] = name.strip()

    def __len__(self) -> int:
        return len(self._names)

    def find(self, number: str) -> str | None:
        return self._names.get(number)


def read_csv(text: str) -> list[tuple[str, str]]:
    """Rows ``number,name`` (or ``;``-separated) of a CSV text; a header row is skipped.

    The header is recognised as a first row whose number column holds no digit.
    """
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    delimiter = ";" if ";" in first and "," not in first else ","
    rows: list[tuple[str, str]] = []
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter)
    for i, row in enumerate(reader):
        if len(row) < 2 or not row[0].strip():
            continue
        number, name = row[0].strip(), row[1].strip()
        if i == 0 and not any(ch.isdigit() for ch in number):
            continue
        rows.append((number, name))
    return rows


@dataclass(frozen=True)
class DirectorySettings:
    """Proposed ``[directory]`` section of the configuration."""

    #: number -> name pairs written in the configuration
    entries: tuple[tuple[str, str], ...] = ()
    #: CSV file with columns number,name (header optional); None: no file
    csv_path: Path | None = None
    plan: NumberPlan = NumberPlan()
    #: try the switchboard numbers (last 1-3 digits -> 0) when nothing matches exactly
    company_search: bool = True
    #: numbers with fewer digits are internal extensions: no company search
    company_min_digits: int = 7


class Directory:
    """Reverse look-up over several sources, with the company (switchboard) fallback."""

    def __init__(
        self,
        sources: Sequence[DirectorySource],
        plan: NumberPlan | None = None,
        *,
        company_search: bool = True,
        company_min_digits: int = 7,
    ) -> None:
        self.sources = tuple(sources)
        self.plan = plan or NumberPlan()
        self.company_search = company_search
        self.company_min_digits = company_min_digits

    def _find(self, number: str) -> str | None:
        for source in self.sources:
            name = source.find(number)
            if name:
                return name
        return None

    def lookup(self, number: str) -> Lookup | None:
        """The name for a caller number: exact match, else the company search, else None."""
        key = normalise_number(number, self.plan)
        if not key:
            return None
        name = self._find(key)
        if name is not None:
            return Lookup(name, key, "exact")
        digits = key.lstrip("+")
        if not self.company_search or not digits.isdigit() or len(digits) < self.company_min_digits:
            return None
        tried = {key}
        for candidate in _switchboard_candidates(key):
            if candidate in tried:
                continue
            tried.add(candidate)
            name = self._find(candidate)
            if name is not None:
                return Lookup(name, candidate, "company")
        return None


def _switchboard_candidates(key: str) -> list[str]:
    """Last 1, 2, 3 digits replaced by zeros (same length, ``1234567`` -> ``1234500``) and, for 2 and 3
    digits, by a single 0 (German direct dial-in: extension ``12345-67``, switchboard ``12345-0``)."""
    out: list[str] = []
    for k in (1, 2, 3):
        out.append(key[:-k] + "0" * k)
        if k > 1:
            out.append(key[:-k] + "0")
    return out


def load_directory(settings: DirectorySettings) -> Directory:
    """A :class:`Directory` from the settings: the configured table first, then the CSV file."""
    sources: list[DirectorySource] = []
    if settings.entries:
        sources.append(TableSource(settings.entries, settings.plan))
    if settings.csv_path is not None:
        text = settings.csv_path.read_text(encoding="utf-8-sig")
        sources.append(TableSource(read_csv(text), settings.plan))
    return Directory(
        sources,
        settings.plan,
        company_search=settings.company_search,
        company_min_digits=settings.company_min_digits,
    )
