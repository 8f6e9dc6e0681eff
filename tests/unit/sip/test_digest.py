"""Digest authentication: RFC 2617 / RFC 7616 test vectors, challenge parsing and selection."""

from __future__ import annotations

import hashlib
import re

import pytest

from ums.sip.digest import (
    Challenge,
    build_authorization,
    parse_auth_params,
    parse_credentials,
    pick_challenge,
    verify_authorization,
)
from ums.sip.message import SipParseError

# RFC 2617 §3.5
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
# RFC 7616 §3.9.1
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def _params(header: str) -> dict[str, str]:
    return parse_auth_params(header)[1]


def test_rfc2617_example() -> None:
    ch = Challenge.parse(RFC2617_CHALLENGE)
    assert ch == Challenge(
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        algorithm="MD5",
        qop=("auth", "auth-int"),
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
    )
    header = build_authorization(
        ch,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
        nc=1,
    )
    p = _params(header)
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert p["qop"] == "auth" and p["nc"] == "00000001" and p["cnonce"] == "0a4f113b"
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert header.startswith('Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b')
    # unquoted tokens, as RFC 7616 §3.4 wants them: algorithm, qop, nc
    assert re.search(r", algorithm=MD5, qop=auth, nc=00000001, ", header)
    assert verify_authorization(header, method="GET", password="Circle Of Life", realm="testrealm@host.com")
    assert not verify_authorization(
        header, method="GET", password="circle of life", realm="testrealm@host.com"
    )
    assert not verify_authorization(
        header, method="POST", password="Circle Of Life", realm="testrealm@host.com"
    )
    assert not verify_authorization(header, method="GET", password="Circle Of Life", realm="other")


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, response: str) -> None:
    ch = Challenge.parse(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    assert ch.qop == ("auth", "auth-int")
    header = build_authorization(
        ch,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )
    p = _params(header)
    assert p["response"] == response
    assert p["algorithm"] == algorithm
    assert verify_authorization(
        header, method="GET", password="Circle of Life", realm="http-auth@example.org"
    )


def _h(name: str, text: str) -> str:
    return hashlib.new(name, text.encode()).hexdigest()


@pytest.mark.parametrize(("algorithm", "hname"), [("MD5-sess", "md5"), ("SHA-256-sess", "sha256")])
def test_sess_variants(algorithm: str, hname: str) -> None:
    ch = Challenge(realm="r", nonce="n", algorithm=algorithm, qop=("auth",))
    header = build_authorization(
        ch, method="INVITE", uri="sip:x@y", username="u", password="p", cnonce="c", nc=2
    )
    ha1 = _h(hname, f"{_h(hname, 'u:r:p')}:n:c")
    ha2 = _h(hname, "INVITE:sip:x@y")
    assert _params(header)["response"] == _h(hname, f"{ha1}:n:00000002:c:auth:{ha2}")
    assert _params(header)["algorithm"] == algorithm
    assert verify_authorization(header, method="INVITE", password="p", realm="r")


def test_auth_int_hashes_the_body() -> None:
    ch = Challenge(realm="r", nonce="n", qop=("auth-int",))
    body = b"v=0\r\n"
    header = build_authorization(
        ch, method="INVITE", uri="sip:x@y", username="u", password="p", cnonce="c", nc=1, body=body
    )
    ha1 = _h("md5", "u:r:p")
    ha2 = _h("md5", f"INVITE:sip:x@y:{_h('md5', 'v=0' + chr(13) + chr(10))}")
    assert _params(header)["qop"] == "auth-int"
    assert _params(header)["response"] == _h("md5", f"{ha1}:n:00000001:c:auth-int:{ha2}")
    assert verify_authorization(header, method="INVITE", password="p", realm="r", body=body)
    assert not verify_authorization(header, method="INVITE", password="p", realm="r", body=b"v=1\r\n")


def test_no_qop_is_the_rfc2069_form() -> None:
    ch = Challenge.parse('Digest realm="asterisk", nonce="3bd6b3f1"')
    header = build_authorization(
        ch, method="REGISTER", uri="sip:pbx.example.com", username="100", password="s3cret", cnonce="c", nc=1
    )
    p = _params(header)
    assert "qop" not in p and "nc" not in p and "cnonce" not in p and "opaque" not in p
    ha1 = _h("md5", "100:asterisk:s3cret")
    ha2 = _h("md5", "REGISTER:sip:pbx.example.com")
    assert p["response"] == _h("md5", f"{ha1}:3bd6b3f1:{ha2}")
    assert verify_authorization(header, method="REGISTER", password="s3cret", realm="asterisk")


def test_nc_is_eight_hex_digits() -> None:
    ch = Challenge(realm="r", nonce="n", qop=("auth",))
    header = build_authorization(
        ch, method="BYE", uri="sip:a@b", username="u", password="p", cnonce="c", nc=255
    )
    assert _params(header)["nc"] == "000000ff"
    with pytest.raises(ValueError):
        build_authorization(ch, method="BYE", uri="sip:a@b", username="u", password="p", cnonce="c", nc=0)


def test_algorithm_token_is_echoed_as_written() -> None:
    ch = Challenge.parse('Digest realm="r", nonce="n", algorithm=md5, qop=auth')
    header = build_authorization(
        ch, method="BYE", uri="sip:a@b", username="u", password="p", cnonce="c", nc=1
    )
    assert ", algorithm=md5," in header
    assert verify_authorization(header, method="BYE", password="p", realm="r")


def test_quotes_in_values_are_escaped() -> None:
    ch = Challenge(realm='a "quoted" realm', nonce="n")
    header = build_authorization(
        ch, method="BYE", uri="sip:a@b", username='us"er', password="p", cnonce="c", nc=1
    )
    assert 'realm="a \\"quoted\\" realm"' in header
    assert parse_credentials(header).username == 'us"er'
    assert verify_authorization(header, method="BYE", password="p", realm='a "quoted" realm')


def test_challenge_parsing_variants() -> None:
    ch = Challenge.parse(
        'digest REALM="sip, example", Nonce=abc123, QOP="auth-int, auth", OPAQUE="", stale=TRUE, '
        'algorithm=SHA-256, domain="sip:a sip:b", unknownparam=x'
    )
    assert ch.realm == "sip, example"
    assert ch.nonce == "abc123"
    assert ch.qop == ("auth-int", "auth")
    assert ch.opaque == ""
    assert ch.stale is True
    assert ch.algorithm == "SHA-256"
    assert Challenge.parse('Digest realm="r",nonce="n",stale=false').stale is False
    assert Challenge.parse('Digest realm="r", nonce="n"  ').qop == ()
    # a quoted-string with an escaped quote and a comma
    assert Challenge.parse('Digest realm="say \\"hi\\", ok", nonce="n"').realm == 'say "hi", ok'


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Digest",
        'Basic realm="x"',
        'Digest realm="r"',
        'Digest nonce="n"',
        'Digest realm="unterminated, nonce="n"',
        'Digest realm="r" nonce="n"',
        'Digest realm="r"x, nonce="n"',
        "Digest =x",
    ],
)
def test_bad_challenges(text: str) -> None:
    with pytest.raises(SipParseError):
        Challenge.parse(text)


def test_pick_challenge_prefers_sha256() -> None:
    md5 = 'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"'
    sha = 'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"'
    aka = 'Digest realm="r", nonce="n3", algorithm=AKAv1-MD5, qop="auth"'
    basic = 'Basic realm="r"'
    assert pick_challenge([md5, sha]) == Challenge.parse(sha)
    assert pick_challenge([aka, basic, md5]) == Challenge.parse(md5)
    assert pick_challenge([aka, basic, "garbage"]) is None
    assert pick_challenge([]) is None
    # unknown qop only: we cannot answer it
    assert pick_challenge(['Digest realm="r", nonce="n", qop="auth-conf"']) is None
    # first of two equally good ones
    assert pick_challenge([md5, md5.replace("n1", "n9")]) == Challenge.parse(md5)


def test_verify_rejects_malformed_credentials() -> None:
    ch = Challenge(realm="r", nonce="n", qop=("auth",))
    good = build_authorization(ch, method="BYE", uri="sip:a@b", username="u", password="p", cnonce="c", nc=1)
    assert verify_authorization(good, method="BYE", password="p", realm="r")
    assert not verify_authorization("Basic dXNlcjpwYXNz", method="BYE", password="p", realm="r")
    assert not verify_authorization(
        good.replace("nc=00000001", "nc=1"), method="BYE", password="p", realm="r"
    )
    assert not verify_authorization(
        good.replace(", cnonce=", ", xcnonce="), method="BYE", password="p", realm="r"
    )
    assert not verify_authorization(good.replace("MD5", "AKAv1-MD5"), method="BYE", password="p", realm="r")
    assert not verify_authorization('Digest realm="r"', method="BYE", password="p", realm="r")


def test_sipp_style_credentials_verify() -> None:
    # the shape SIPp 3.6 writes (no spaces, qop before uri), response computed independently here
    ha1 = _h("md5", "alice:test.local:secret")
    ha2 = _h("md5", "REGISTER:sip:127.0.0.1:5070")
    nonce = "47ebe028cda119c35d4877b383027d28da013815"
    resp = _h("md5", f"{ha1}:{nonce}:00000001:6b8b4567:auth:{ha2}")
    header = (
        f'Digest username="alice",realm="test.local",cnonce="6b8b4567",nc=00000001,qop=auth,'
        f'uri="sip:127.0.0.1:5070",nonce="{nonce}",response="{resp}",algorithm=MD5'
    )
    assert verify_authorization(header, method="REGISTER", password="secret", realm="test.local")
    cred = parse_credentials(header)
    assert (cred.username, cred.uri, cred.nc, cred.qop) == ("alice", "sip:127.0.0.1:5070", "00000001", "auth")
