"""Fuzzing the SIP parsers: damaged messages may only ever raise SipParseError / SdpError.

A seeded mutation fuzzer (tests/unit/sip/fuzzcorpus.py) feeds 100 000 damaged messages built
from testdata/sip to ``parse_message`` and ``StreamFramer``; the header values and bodies of
those that still parse go on to the URI, name-addr, Via, digest and SDP parsers.  Besides
"no other exception", every value a parser accepts must survive ``parse(str(x)) == x``.
A hypothesis test (derandomized) checks the same round trips on generated values.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.sip.fuzzcorpus import corpus, mutated_messages
from ums.sip.digest import Challenge, parse_credentials, pick_challenge
from ums.sip.message import Request, Response, SipParseError, StreamFramer, parse_message
from ums.sip.sdp import SdpError, SessionDescription, answer_audio, parse_answer
from ums.sip.uri import NameAddr, SipUri, Via

FUZZ_SEED = 20240312
FUZZ_COUNT = 100_000

_NAME_ADDR_HEADERS = ("From", "To", "Contact", "Route", "Record-Route", "Diversion", "P-Asserted-Identity")


class _Checker:
    """Runs every parser on one input; remembers values already checked (most repeat unchanged)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.seen_bodies: set[bytes] = set()
        self.parsed = 0

    def _once(self, kind: str, value: str, check: Callable[[str], None]) -> None:
        key = (kind, value)
        if key in self.seen:
            return
        self.seen.add(key)
        try:
            check(value)
        except SipParseError:
            pass

    def message(self, data: bytes) -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            msg = None
        try:
            for chunk in StreamFramer().feed(data):
                if chunk != data:
                    try:
                        parse_message(chunk)
                    except SipParseError:
                        pass
        except SipParseError:
            pass
        if msg is None:
            return
        self.parsed += 1
        if self.parsed % 4 == 1:  # (a sample keeps the run short) what parses must re-parse from its bytes
            again = parse_message(msg.serialize())
            assert _headers(again) == _headers(msg) and again.body == msg.body
        if isinstance(msg, Request):
            self._once("uri", msg.uri, _uri_round_trip)
        for value in msg.headers.get_all_values("Via"):
            self._once("via", value, _via_round_trip)
        for name in _NAME_ADDR_HEADERS:
            for value in msg.headers.get_all_values(name):
                self._once("name-addr", value, _name_addr_round_trip)
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            lines = msg.headers.get_lines(name)
            for value in lines:
                self._once("challenge", value, _challenge)
            pick_challenge(lines)
        for value in msg.headers.get_lines("Authorization"):
            self._once("credentials", value, _credentials)
        if msg.body and msg.body not in self.seen_bodies:
            self.seen_bodies.add(msg.body)
            try:
                _sdp(msg.body)
            except SdpError:
                pass


def _headers(msg: Request | Response) -> list[tuple[str, str]]:
    """The header list without Content-Length (serialize() rewrites it, last)."""
    return [(n, v) for n, v in msg.headers if n != "Content-Length"]


def _uri_round_trip(text: str) -> None:
    uri = SipUri.parse(text)
    assert SipUri.parse(str(uri)) == uri, (text, str(uri))


def _via_round_trip(text: str) -> None:
    via = Via.parse(text)
    assert Via.parse(str(via)) == via, (text, str(via))


def _name_addr_round_trip(text: str) -> None:
    na = NameAddr.parse(text)
    assert NameAddr.parse(str(na)) == na, (text, str(na))


def _challenge(text: str) -> None:
    ch = Challenge.parse(text)
    assert ch.realm is not None and ch.nonce is not None


def _credentials(text: str) -> None:
    parse_credentials(text)


def _sdp(body: bytes) -> None:
    sd = SessionDescription.parse(body)
    out = sd.serialize()
    assert SessionDescription.parse(out).serialize() == out
    result = answer_audio(sd, codecs=["PCMA", "PCMU"], local_host="192.0.2.1", local_port=4000, session_id=7)
    if result is not None:
        answer, params = result
        assert len(answer.media) == len(sd.media)
        SessionDescription.parse(answer.serialize())
        assert params.codec in ("PCMA", "PCMU")
    parse_answer(sd, ["PCMA", "PCMU"])


def test_corpus_is_clean_for_every_parser() -> None:
    checker = _Checker()
    for data in corpus().values():
        checker.message(data)
    assert checker.parsed >= 30


def test_mutated_messages_only_raise_parse_errors() -> None:
    checker = _Checker()
    count = 0
    for data in mutated_messages(FUZZ_SEED, FUZZ_COUNT):
        count += 1
        try:
            checker.message(data)
        except Exception:  # the test's whole point: report the input that broke a parser
            raise AssertionError(
                f"input #{count} broke a parser:\n{data!r}\n{traceback.format_exc()}"
            ) from None
    assert count == FUZZ_COUNT
    # the mutations must leave a fair share of messages parseable, or the deeper parsers go untested
    assert checker.parsed > FUZZ_COUNT // 10


def test_mutated_messages_are_reproducible() -> None:
    assert list(mutated_messages(5, 50)) == list(mutated_messages(5, 50))
    assert list(mutated_messages(5, 50)) != list(mutated_messages(6, 50))


def test_framer_survives_the_whole_fuzz_stream_as_one_connection() -> None:
    # one long TCP stream: whenever framing fails the connection is dropped and a new one starts
    framer = StreamFramer()
    frames = 0
    for data in mutated_messages(FUZZ_SEED + 1, 3000):
        try:
            frames += len(framer.feed(data))
        except SipParseError:
            framer = StreamFramer()
    assert frames > 0


# --- hypothesis round trips ----------------------------------------------------------------------
_PROPS = settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_label = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,8}[a-z0-9])?", fullmatch=True)
_hostname = st.lists(_label, min_size=1, max_size=3).map(".".join)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.ip_addresses(v=6).map(str).filter(lambda s: "%" not in s)
_host = st.one_of(_hostname, _ipv4, _ipv6)
_pname = st.from_regex(r"[a-zA-Z0-9\-_.!~*'()]{1,8}", fullmatch=True)
_pvalue = st.one_of(st.just(""), st.from_regex(r"[a-zA-Z0-9\-_.!~*'()\[\]/:&+$]{1,10}", fullmatch=True))
_uri_params = st.lists(st.tuples(_pname, _pvalue), max_size=3).map(tuple)
_port = st.one_of(st.none(), st.integers(0, 65535))
_token = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,10}", fullmatch=True)
_gen_params = st.lists(
    st.tuples(_token, st.one_of(st.just(""), _token, st.from_regex(r'"[a-z ,;=<>]{0,8}"', fullmatch=True))),
    max_size=3,
).map(tuple)


@st.composite
def _sip_uris(draw: st.DrawFn) -> SipUri:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    # any text: user and password are escaped on output (st.text() never yields surrogates)
    user = draw(st.one_of(st.none(), st.text(min_size=1, max_size=12)))
    password = draw(st.one_of(st.none(), st.text(max_size=6))) if user is not None else None
    headers = draw(st.one_of(st.just(""), st.from_regex(r"[a-z]{1,5}=[a-z0-9]{0,5}", fullmatch=True)))
    return SipUri(scheme, user, draw(_host), draw(_port), draw(_uri_params), headers, password)


@given(_sip_uris())
@_PROPS
def test_sip_uri_round_trip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@given(_sip_uris(), st.one_of(st.none(), st.text(max_size=10)), _gen_params)
@_PROPS
def test_name_addr_round_trip(uri: SipUri, display: str | None, params: tuple[tuple[str, str], ...]) -> None:
    if display is not None:
        display = "".join(c for c in display if c not in "\r\n\x00")
    na = NameAddr(uri, display, params)
    again = NameAddr.parse(str(na))
    assert again == na
    assert str(again) == str(na)


@given(st.sampled_from(["UDP", "TCP", "TLS"]), _host, _port, _gen_params)
@_PROPS
def test_via_round_trip(
    transport: str, host: str, port: int | None, params: tuple[tuple[str, str], ...]
) -> None:
    params = tuple(
        (n, v) for n, v in params if n.lower() not in ("received", "rport", "ttl", "maddr", "branch")
    )
    via = Via(transport, host, port, (("branch", "z9hG4bK1"), *params))
    assert Via.parse(str(via)) == via


@given(st.sampled_from(sorted(corpus())), st.data())
@_PROPS
def test_message_round_trip(name: str, data: st.DataObject) -> None:
    raw = corpus()[name]
    try:
        msg = parse_message(raw)
    except SipParseError:
        return
    extra = data.draw(st.lists(st.tuples(_token, st.from_regex(r"[ -~]{0,20}", fullmatch=True)), max_size=3))
    for hname, value in extra:
        if hname.lower() not in ("content-length", "l", "from", "f", "to", "t", "call-id", "i", "cseq"):
            msg.headers.add(hname, value.strip())
    again = parse_message(msg.serialize())
    assert type(again) is type(msg)
    assert _headers(again) == _headers(msg)
    assert again.body == msg.body
    assert again.serialize() == msg.serialize()
