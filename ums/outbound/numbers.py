"""Destination numbers for outbound faxes and SMS: normalising, dialling, deny rules.

What it does
------------
* :func:`normalize` turns what people type into an E.164 number with ``+`` (``"+4930123456"``):
  ``"+49 30 123456"``, ``"+49 (0)30 123-456"``, ``"0049 30 123456"``, ``"030 123456"``, ``"123456"``
  (a local number; needs ``area_code`` in the :class:`DialPlan`) and ``"tel:+4930123456"``
  (RFC 3966 global number).  Letters, extensions, pauses, ``*`` and ``#`` are refused with
  :class:`BadNumber`, whose ``reason`` is a sentence the sender can act on.
* :func:`dial_string` gives the digits for the user part of the Request-URI the PBX account expects:
  the ``outside_line`` digits, then the number as E.164 (``+4930123456``), national (``030123456``
  within the own country, ``0044...`` abroad) or international (``004930123456``).
* :class:`DenyList` keeps faxes away from expensive destinations.  :data:`DEFAULT_DENY` blocks the
  classic toll-fraud ranges:

  ======== ===============================================================================
  +49900   premium-rate services (0900)
  +49137   mass-calling / televoting (0137)
  +49118   directory enquiries (118xy), charged per call and able to connect onwards
  +4919    019x: online-service dial-in (0191..0194) and network-internal routing (0199)
  +4912    innovative services (012), tariffs not regulated
  +870     Inmarsat satellite (ITU-T E.164 shared code for the Inmarsat SNAC)
  +881     global mobile satellite systems (Iridium, Globalstar, ...)
  +882     international networks: mostly premium-priced, a favourite of revenue-share fraud
  +883     international networks, as +882
  +979     international premium-rate service (ITU-T E.169.3)
  ======== ===============================================================================

  German shared-cost numbers (0180) and personal numbers (0700) are *not* blocked: companies do
  publish fax numbers there and their price is capped.  Other countries' premium ranges are not in
  the defaults; add them from the national numbering plan (for example ``+449`` for UK 09 numbers).
  To send only within some countries, deny every destination with ``"+*"`` and allow the country
  codes: ``DenyList((*DEFAULT_DENY, "+*"), allow=("+49", "+43", "+41"))``.  Premium ranges in those
  countries stay blocked, because the most specific rule decides (see below).

How it works
------------
Normalising (:func:`normalize`): NFKC first (full-width digits and no-break spaces become plain
ones), then a ``tel:`` prefix is dropped, the characters are checked, the national prefix written in
parentheses after a country code (``+49 (0)30``) is dropped, visual separators are removed (RFC 3966
§5.1.1: ``-``, ``.``, ``(``, ``)``; also spaces, ``/``, brackets and Unicode dashes), and the digits are
read as international (leading ``+`` or ``international_prefix``), national (``national_prefix``,
replaced by ``+`` and the ``country_code``) or local (``+``, country and area code put in front).
A number of the own country written with its national prefix after the country code
(``+49 030 ...``, a common slip) loses that prefix.  The result has at most 15 digits (ITU-T E.164
§6) and at least :data:`MIN_DIGITS`.  A country with no national prefix (``national_prefix=""``, as
in Italy) has no local numbers: digits without international prefix are national.

Deny rules are written on the E.164 number with ``+``: a prefix (``+49900``; spaces and hyphens are
ignored), a glob (``+881*``, ``+4919?``; :func:`fnmatch.fnmatchcase`) or a regular expression after
``re:`` (matched with :func:`re.match`, so anchored at the start only).  Of all rules that match a
number, allow and deny alike, the most specific one decides: the one that fixes the most leading
characters (a prefix: all of it; a glob: the part before its first wildcard; a regular expression:
its literal start, nothing when it has a top-level ``|``).  On a tie the allow rule wins, so an allow
entry overrides a deny entry of the same or a shorter prefix (``allow=("+49900123456",)`` lets that one
number through ``+49900``), while ``allow=("+49",)`` does not open ``+49900``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final, Literal

__all__ = [
    "DEFAULT_DENY",
    "DENY_LABELS",
    "MAX_DIGITS",
    "MIN_DIGITS",
    "BadNumber",
    "DenyList",
    "DialFormat",
    "DialPlan",
    "deny_rules",
    "dial_string",
    "is_e164",
    "normalize",
]

DialFormat = Literal["e164", "national", "international"]
_DIAL_FORMATS: Final = ("e164", "national", "international")

#: ITU-T E.164 §6: an international number has at most 15 digits (country code included).
MAX_DIGITS: Final = 15
#: The shortest numbers in service are 7 digits with the country code (Niue +683 xxxx, Tokelau
#: +690 xxxx); anything shorter is a typo or a service number.
MIN_DIGITS: Final = 7

#: Known ranges: deny rule -> what it is, for the reason given to the sender.
DENY_LABELS: Final[Mapping[str, str]] = {
    "+49900": "premium-rate number",
    "+49137": "mass-calling (televoting) number",
    "+49118": "directory-enquiry number",
    "+4919": "online-service or network-internal number",
    "+4912": "innovative-services number",
    "+870": "satellite number",
    "+881": "satellite number",
    "+882": "international-network number",
    "+883": "international-network number",
    "+979": "international premium-rate number",
}
#: Toll-fraud classics blocked unless allowed; see the module docstring for the list.
DEFAULT_DENY: Final[tuple[str, ...]] = tuple(DENY_LABELS)

_E164: Final = re.compile(rf"\+[1-9][0-9]{{{MIN_DIGITS - 1},{MAX_DIGITS - 1}}}")
#: RFC 3966 §5.1.1 visual-separator = "-" / "." / "(" / ")"; spaces, "/", brackets and the Unicode
#: dashes (U+2010..U+2015, minus sign U+2212) show up in address books and signatures.
_SEPARATORS: Final = re.compile(r"[\s\-./()\[\]\u2010-\u2015\u2212]")
#: "+49 (0)30 ...", "0044 (0)20 ...": the national prefix in parentheses, written after the country code.
_TRUNK_IN_PARENS: Final = re.compile(r"(?<=\S)\s*\(\s*0\s*\)")
_EXTENSION: Final = re.compile(r"(?i)(;\s*ext\s*=|(?<![a-z])(ext(ension)?\.?|x))\s*\d+\s*$")
_PAUSE: Final = re.compile(r"(?i)[,;]|(?<=\d)\s*[pw]\s*(?=\d)")


class BadNumber(ValueError):
    """A destination number that cannot be dialled; ``reason`` says why, for people."""

    def __init__(self, reason: str, number: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.number = number


@dataclass(frozen=True)
class DialPlan:
    """How numbers are written where the server runs, and how the PBX account wants them dialled."""

    #: own country code, e.g. "49"
    country_code: str = "49"
    #: own area code without the national prefix, e.g. "30"; empty: local numbers are refused
    area_code: str = ""
    #: national (trunk) prefix, "0" in most of Europe, "1" in the NANP, "" where there is none
    national_prefix: str = "0"
    #: international call prefix, "00" in most of the world, "011" in the NANP
    international_prefix: str = "00"
    #: digits dialled first to get an outside line, e.g. "0"; empty when the account dials out directly
    outside_line: str = ""
    #: "e164": "+4930123456"; "national": "030123456" / "0044..."; "international": "004930123456"
    dial_format: DialFormat = "national"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[1-9][0-9]{0,2}", self.country_code):
            raise ValueError(f"country_code {self.country_code!r}: 1 to 3 digits, not starting with 0")
        if not re.fullmatch(r"[0-9]{0,2}", self.national_prefix):
            raise ValueError(f"national_prefix {self.national_prefix!r}: at most 2 digits")
        if not re.fullmatch(r"[0-9]{1,4}", self.international_prefix):
            raise ValueError(f"international_prefix {self.international_prefix!r}: 1 to 4 digits")
        if self.international_prefix == self.national_prefix:
            raise ValueError("international_prefix and national_prefix must differ")
        if not re.fullmatch(r"[0-9]{0,7}", self.area_code):
            raise ValueError(f"area_code {self.area_code!r}: at most 7 digits")
        if self.national_prefix and self.area_code.startswith(self.national_prefix):
            raise ValueError(
                f"area_code is written without the national prefix: "
                f"{self.area_code[len(self.national_prefix) :]!r}, not {self.area_code!r}"
            )
        if not re.fullmatch(r"[0-9]{0,4}", self.outside_line):
            raise ValueError(f"outside_line {self.outside_line!r}: at most 4 digits")
        if self.dial_format not in _DIAL_FORMATS:
            raise ValueError(f"dial_format {self.dial_format!r}: one of {', '.join(_DIAL_FORMATS)}")
        if self.dial_format == "e164" and self.outside_line:
            raise ValueError("outside_line cannot be combined with dial_format 'e164'")


def is_e164(number: str) -> bool:
    """True for ``+`` and 7 to 15 digits, the first not 0 (the form :func:`normalize` returns)."""
    return _E164.fullmatch(number) is not None


def _check_characters(text: str) -> None:
    if _EXTENSION.search(text):
        raise BadNumber("extensions cannot be dialled; give the number of the fax line itself", text)
    if _PAUSE.search(text):
        raise BadNumber("pauses (',', ';', 'p', 'w') cannot be dialled", text)
    for c in text:
        if c.isalpha():
            raise BadNumber("letters are not allowed in a number; write it with digits", text)
        if c in "*#":
            raise BadNumber("'*' and '#' are not allowed in a number", text)
    if "+" in text[1:]:
        raise BadNumber("'+' may only stand at the start of a number", text)
    rest = _SEPARATORS.sub("", text.removeprefix("+"))
    for c in rest:
        if not "0" <= c <= "9":
            raise BadNumber(f"unexpected character {c!r} in a number", text)


def normalize(text: str, plan: DialPlan) -> str:
    """The E.164 form (``"+4930123456"``) of a number as people write it; raises :class:`BadNumber`."""
    s = unicodedata.normalize("NFKC", text).strip()
    if s[:4].lower() == "tel:":
        s = s[4:].strip()
        if ";" in s:
            if re.search(r"(?i);\s*ext\s*=", s):
                raise BadNumber("extensions cannot be dialled; give the number of the fax line itself", text)
            raise BadNumber("tel: URI parameters (after ';') are not supported", text)
    if not _SEPARATORS.sub("", s):
        raise BadNumber("empty number", text)
    _check_characters(s)
    s = _TRUNK_IN_PARENS.sub("", s)
    plus = s.startswith("+")
    digits = _SEPARATORS.sub("", s.removeprefix("+"))
    if plus:
        international = digits
    elif digits.startswith(plan.international_prefix):
        international = digits[len(plan.international_prefix) :]
    elif not plan.national_prefix:
        international = plan.country_code + digits
    elif digits.startswith(plan.national_prefix):
        international = plan.country_code + digits[len(plan.national_prefix) :]
    elif plan.area_code:
        international = plan.country_code + plan.area_code + digits
    else:
        raise BadNumber("a local number needs area_code in the dial plan; write it with the area code", text)
    if not international:
        raise BadNumber("number too short", text)
    if international.startswith("0"):
        raise BadNumber("a country code cannot start with 0", text)
    own_trunk = plan.country_code + plan.national_prefix
    if plan.national_prefix and international.startswith(own_trunk):
        # "+49 030 ...": the own national prefix written after the own country code
        international = plan.country_code + international[len(own_trunk) :]
    if len(international) > MAX_DIGITS:
        raise BadNumber(f"number too long: E.164 allows at most {MAX_DIGITS} digits", text)
    if len(international) < MIN_DIGITS:
        raise BadNumber("number too short", text)
    return "+" + international


def dial_string(e164: str, plan: DialPlan) -> str:
    """The digits for the Request-URI user part: ``outside_line`` + the number in ``plan.dial_format``."""
    if not is_e164(e164):
        raise BadNumber(f"not an E.164 number: '+' and {MIN_DIGITS} to {MAX_DIGITS} digits", e164)
    digits = e164[1:]
    if plan.dial_format == "e164":
        return e164
    if plan.dial_format == "national" and digits.startswith(plan.country_code):
        return plan.outside_line + plan.national_prefix + digits[len(plan.country_code) :]
    return plan.outside_line + plan.international_prefix + digits


def _regex_lead(source: str) -> int:
    """How many characters a regular expression fixes at its start (0 with a top-level ``|``)."""
    depth, i, in_class = 0, 0, False
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return 0
        i += 1
    count, i = 0, 1 if source.startswith("^") else 0
    while i < len(source):
        c = source[i]
        if c == "\\" and i + 1 < len(source) and not source[i + 1].isalnum():
            count, i = count + 1, i + 2
            continue
        if c == "\\" or c in ".^$*+?{}[]()|":
            if c in "*?{" and count:
                count -= 1  # the quantifier makes the last character optional
            break
        count, i = count + 1, i + 1
    return count


@dataclass(frozen=True)
class _Rule:
    pattern: str
    specificity: int
    matches: Callable[[str], bool]


def _rule(pattern: str, what: str) -> _Rule:
    if pattern.startswith("re:"):
        try:
            compiled = re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"{what} rule {pattern!r}: bad regular expression: {exc}") from None
        return _Rule(pattern, _regex_lead(pattern[3:]), lambda n: compiled.match(n) is not None)
    if any(c in pattern for c in "*?["):
        if not re.fullmatch(r"[+*][+0-9*?\[\]!\-]*", pattern):
            raise ValueError(
                f"{what} rule {pattern!r}: a glob starts with '+' or '*' and has digits, '*', '?' and [...]"
            )
        lead = len(re.split(r"[*?\[]", pattern, maxsplit=1)[0])
        return _Rule(pattern, lead, lambda n: fnmatchcase(n, pattern))
    prefix = re.sub(r"[\s\-]", "", pattern)
    if not re.fullmatch(r"\+[0-9]*", prefix):
        raise ValueError(f"{what} rule {pattern!r}: an E.164 prefix starts with '+' (e.g. '+49900')")
    return _Rule(prefix, len(prefix), lambda n: n.startswith(prefix))


class DenyList:
    """Destinations refused by rule; the most specific matching rule decides, allow wins ties."""

    __slots__ = ("_allow", "_deny", "allow", "patterns")

    def __init__(self, patterns: Sequence[str], allow: Sequence[str] = ()) -> None:
        if isinstance(patterns, str) or isinstance(allow, str):
            raise TypeError("patterns and allow are sequences of rules, not a single string")
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.allow: tuple[str, ...] = tuple(allow)
        self._deny = tuple(_rule(p, "deny") for p in self.patterns)
        self._allow = tuple(_rule(p, "allow") for p in self.allow)

    def __repr__(self) -> str:
        return f"DenyList({self.patterns!r}, allow={self.allow!r})"

    def check(self, e164: str) -> str | None:
        """None when ``e164`` may be dialled, else the reason it may not (for the sender)."""
        if not is_e164(e164):
            raise BadNumber(f"not an E.164 number: '+' and {MIN_DIGITS} to {MAX_DIGITS} digits", e164)
        deny = max((r for r in self._deny if r.matches(e164)), key=lambda r: r.specificity, default=None)
        if deny is None:
            return None
        if any(r.specificity >= deny.specificity for r in self._allow if r.matches(e164)):
            return None
        label = DENY_LABELS.get(deny.pattern)
        if label is not None:
            return f"{label} {e164} is not allowed (deny rule {deny.pattern})"
        return f"number {e164} is not allowed (deny rule {deny.pattern})"


def deny_rules(patterns: Sequence[str]) -> tuple[str, ...]:
    """The deny rules with the entry ``"default"`` replaced by :data:`~ums.outbound.numbers.DEFAULT_DENY`."""
    out: list[str] = []
    for p in patterns:
        out.extend(DEFAULT_DENY if p.strip().lower() == "default" else (p,))
    return tuple(out)
