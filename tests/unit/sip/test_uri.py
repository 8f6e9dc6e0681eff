"""SipUri / NameAddr / Via (RFC 3261 §19.1, §20.10, §20.42, §25.1) and the identifier helpers."""

from __future__ import annotations

import random

import pytest

from ums.sip.message import SipParseError
from ums.sip.uri import NameAddr, SipUri, Via, new_branch, new_call_id, new_tag

# --- SipUri ---------------------------------------------------------------------------------------


def test_plain_sip_uri() -> None:
    uri = SipUri.parse("sip:alice@atlanta.example.com")
    assert uri == SipUri("sip", "alice", "atlanta.example.com")
    assert str(uri) == "sip:alice@atlanta.example.com"


def test_full_sip_uri() -> None:
    uri = SipUri.parse(
        "sips:alice:secretword@gateway.example.com:5061;transport=tcp;lr?subject=project&priority=urgent"
    )
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("alice", "secretword")
    assert (uri.host, uri.port) == ("gateway.example.com", 5061)
    assert uri.params == (("transport", "tcp"), ("lr", ""))
    assert uri.headers == "subject=project&priority=urgent"
    assert (
        str(uri)
        == "sips:alice:secretword@gateway.example.com:5061;transport=tcp;lr?subject=project&priority=urgent"
    )


def test_host_only_and_scheme_case() -> None:
    uri = SipUri.parse("SIP:pbx.example.com.")
    assert uri.scheme == "sip" and uri.user is None and uri.host == "pbx.example.com."
    assert str(uri) == "sip:pbx.example.com."


@pytest.mark.parametrize(
    ("text", "host", "port", "out"),
    [
        ("sip:100@[2001:db8::20]:5060", "2001:db8::20", 5060, "sip:100@[2001:db8::20]:5060"),
        ("sip:[::1]", "::1", None, "sip:[::1]"),
        ("sip:u@192.0.2.4:0", "192.0.2.4", 0, "sip:u@192.0.2.4:0"),
        ("sip:u@192.0.2.4:65535", "192.0.2.4", 65535, "sip:u@192.0.2.4:65535"),
    ],
)
def test_hosts_and_ports(text: str, host: str, port: int | None, out: str) -> None:
    uri = SipUri.parse(text)
    assert (uri.host, uri.port) == (host, port)
    assert str(uri) == out


def test_escaped_user_part_is_unescaped() -> None:
    # RFC 4475 §3.1.1.7 (esc01): the user part of this URI is "sips:user@example.com"
    uri = SipUri.parse("sip:sips%3Auser%40example.com@example.net")
    assert uri.user == "sips:user@example.com"
    assert uri.host == "example.net"
    assert str(uri) == "sip:sips%3Auser%40example.com@example.net"
    # escaped and unescaped forms are equal (RFC 3261 §19.1.4)
    assert SipUri.parse("sip:%61lice@example.com") == SipUri.parse("sip:alice@example.com")
    assert str(SipUri.parse("sip:%61lice@example.com")) == "sip:alice@example.com"


def test_escaped_nul_and_semicolon_in_user() -> None:
    assert SipUri.parse("sip:null-%00-null@example.com").user == "null-\x00-null"
    # RFC 4475 §3.1.1.10 (semiuri): the ';' belongs to the user part
    uri = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u@example.net"
    assert uri.params == ()
    assert SipUri.parse(str(uri)) == uri


def test_telephone_style_user_parts() -> None:
    assert SipUri.parse("sip:*97@192.0.2.10").user == "*97"
    uri = SipUri.parse("sip:+49-30-1234567;isub=12@carrier.example.net;user=phone")
    assert uri.user == "+49-30-1234567;isub=12"
    assert uri.param("user") == "phone"
    # '#' is common in PBX dial strings; it is escaped on output
    hashed = SipUri.parse("sip:*21#@pbx")
    assert hashed.user == "*21#" and str(hashed) == "sip:*21%23@pbx"


def test_params_lookup_is_case_insensitive() -> None:
    uri = SipUri.parse("sip:a@b;Transport=TCP;LR;maddr=239.255.255.1")
    assert uri.param("transport") == "TCP"
    assert uri.param("lr") == "" and uri.has_param("Lr")
    assert uri.param("ttl") is None and not uri.has_param("ttl")


def test_with_params() -> None:
    uri = SipUri.parse("sip:a@b;transport=udp")
    assert str(uri.with_params(transport="tcp")) == "sip:a@b;transport=tcp"
    assert str(uri.with_params(lr="")) == "sip:a@b;transport=udp;lr"
    assert str(uri.with_params(transport=None)) == "sip:a@b"
    assert str(uri) == "sip:a@b;transport=udp"  # frozen: the original is unchanged


def test_tel_uri() -> None:
    uri = SipUri.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert uri.scheme == "tel" and uri.user == "+1-201-555-0123" and uri.host == ""
    assert uri.param("phone-context") == "example.com"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"
    assert SipUri.parse("TEL:7042").user == "7042"


def test_unknown_scheme_hints_416() -> None:
    with pytest.raises(SipParseError) as err:
        SipUri.parse("nobodyKnowsThisScheme:totallyopaquecontent")
    assert err.value.status_hint == 416


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:@example.com",
        "alice@example.com",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:",
        "sip:alice@example.com:65536",
        "sip:alice@example.com:5o60",
        "sip:alice@[::1",
        "sip:alice@[::g]",
        "sip:alice@[::1]x",
        "sip:alice@-bad-.example.com",
        "sip:alice@a..b",
        "sip:al<ice@example.com",
        "sip:al%4@example.com",
        "sip:al%ff@example.com",
        "sip:alice@example.com;;lr",
        "sip:alice@example.com;lr=",
        "sip:alice@example.com;a b=c",
        "sip:alice@example.com?",
        "sip:alice@example.com?a=<b>",
        "tel:",
        "tel:call-me-maybe",
        "<sip:alice@example.com>",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


# --- NameAddr -------------------------------------------------------------------------------------


def test_name_addr_quoted_display() -> None:
    na = NameAddr.parse('"Alice, the \\"boss\\"" <sip:alice@example.com;transport=tcp>;tag=1928301774')
    assert na.display == 'Alice, the "boss"'
    assert na.uri.param("transport") == "tcp"  # inside <>: the URI's parameter
    assert na.tag == "1928301774"
    assert str(na) == '"Alice, the \\"boss\\"" <sip:alice@example.com;transport=tcp>;tag=1928301774'


def test_name_addr_token_display_and_no_space() -> None:
    assert NameAddr.parse("Bob   Smith <sip:bob@example.com>").display == "Bob Smith"
    # RFC 4475 §3.1.1.6 (lwsdisp): no LWS between the display name and '<'
    na = NameAddr.parse("caller<sip:caller@example.com>;tag=323")
    assert na.display == "caller" and na.tag == "323"
    assert str(na) == '"caller" <sip:caller@example.com>;tag=323'


def test_addr_spec_params_belong_to_the_header() -> None:
    # RFC 3261 §20.10: without <>, ;tag (and every other parameter) is a header parameter
    na = NameAddr.parse("sip:j.user@example.com;tag=43251j3j324;transport=tcp")
    assert na.uri == SipUri("sip", "j.user", "example.com")
    assert na.params == (("tag", "43251j3j324"), ("transport", "tcp"))
    assert str(na) == "<sip:j.user@example.com>;tag=43251j3j324;transport=tcp"
    assert NameAddr.parse("tel:+123;tag=x").uri == SipUri("tel", "+123", "")


def test_name_addr_params() -> None:
    na = NameAddr.parse(
        '<sip:ums@203.0.113.5:5062>;expires=600;q=0.7;+sip.instance="<urn:uuid:3f25-4f89>";reg-id=1;ob'
    )
    assert na.display is None
    assert na.param("EXPIRES") == "600"
    assert na.param("+sip.instance") == '"<urn:uuid:3f25-4f89>"'
    assert na.param("ob") == ""
    assert na.tag is None
    tagged = na.with_param("tag", "abc").with_param("expires", None)
    assert tagged.tag == "abc" and tagged.param("expires") is None
    assert NameAddr.parse(str(tagged)) == tagged


def test_name_addr_whitespace_variations() -> None:
    na = NameAddr.parse('  "x"<sip:a@b> ;  tag = 98asjd8 ; lr  ')
    assert na.params == (("tag", "98asjd8"), ("lr", ""))


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"Mr. J. User <sip:j.user@example.com>',  # quotbal: unterminated quote
        "Bell, Alexander <sip:a.g.bell@example.com>",  # baddn: ',' in an unquoted display name
        "< sip:t.watson@example.org >",  # badaspec: whitespace inside <>
        "<sip:a@b",
        "<>",
        '"Joe" sip:joe@example.org',
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # regbadct: '?' in addr-spec form
        "sip:j.user@example.com;",  # badinv01: empty parameter
        "<sip:joe@example.org>;;;;",
        "<sip:a@b>;tag=x y",
        '<sip:a@b>;p="unterminated',
        "<sip:a@b> junk",
        "*",
        "Bob sip:bob@x",
    ],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


# --- Via ------------------------------------------------------------------------------------------


def test_via_basic() -> None:
    via = Via.parse("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK0a1b2c3d;rport")
    assert (via.transport, via.host, via.port) == ("UDP", "192.0.2.10", 5060)
    assert via.branch == "z9hG4bK0a1b2c3d"
    assert via.param("rport") == ""
    assert str(via) == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK0a1b2c3d;rport"


def test_via_received_rport_maddr_ttl() -> None:
    via = Via.parse(
        "SIP/2.0/udp h.example.com;received=192.0.2.7;rport=5062;maddr=239.1.1.1;ttl=16;branch=z9hG4bKx"
    )
    assert via.transport == "UDP" and via.port is None
    assert via.param("received") == "192.0.2.7"
    assert via.param("rport") == "5062"
    assert via.param("maddr") == "239.1.1.1" and via.param("ttl") == "16"


def test_via_server_side_update() -> None:
    # RFC 3581 §4: the server fills in rport and received
    via = Via.parse("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKabc")
    updated = via.with_param("rport", "40312").with_param("received", "198.51.100.9")
    assert str(updated) == "SIP/2.0/UDP 10.0.0.5:5060;rport=40312;branch=z9hG4bKabc;received=198.51.100.9"


def test_via_whitespace_and_compact_variations() -> None:
    via = Via.parse("SIP  /   2.0 /UDP    192.0.2.2 : 5070 ;rport;branch=390skdjuw")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "192.0.2.2", 5070, "390skdjuw")
    via2 = Via.parse("SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9ikj8")
    assert via2.branch == "z9hG4bK9ikj8"
    assert str(via2) == "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"


def test_via_ipv6() -> None:
    via = Via.parse("SIP/2.0/TCP [2001:db8::10]:5060;branch=z9hG4bK1;received=2001:db8::10")
    assert via.host == "2001:db8::10" and via.port == 5060
    assert str(via) == "SIP/2.0/TCP [2001:db8::10]:5060;branch=z9hG4bK1;received=2001:db8::10"
    assert Via.parse(str(via)) == via


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 192.0.2.1",
        "SIP/3.0/UDP 192.0.2.1",
        "HTTP/2.0/UDP 192.0.2.1",
        "SIP/2.0/UDP 192.0.2.15;;",  # badinv01
        "SIP/2.0/UDP 192.0.2.1:99999;branch=z9hG4bK1",
        "SIP/2.0/UDP 192.0.2.1;branch",
        "SIP/2.0/UDP 192.0.2.1;branch=",
        "SIP/2.0/UDP 192.0.2.1;received=not-an-ip",
        "SIP/2.0/UDP 192.0.2.1;rport=70000",
        "SIP/2.0/UDP 192.0.2.1;ttl=300",
        "SIP/2.0/UDP host name;branch=z9hG4bK1",
        "SIP/2.0/UDP 192.0.2.1 (comment)",
    ],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


# --- identifiers ----------------------------------------------------------------------------------


def test_identifiers_are_reproducible_and_well_formed() -> None:
    rng = random.Random(1)
    branch, tag, call_id = new_branch(rng), new_tag(rng), new_call_id(rng, "192.0.2.1")
    assert branch.startswith("z9hG4bK") and len(branch) == 7 + 16
    int(branch[7:], 16)
    assert len(tag) == 16 and int(tag, 16) >= 0
    local, _, host = call_id.partition("@")
    assert host == "192.0.2.1" and len(local) == 24
    rng2 = random.Random(1)
    assert (new_branch(rng2), new_tag(rng2), new_call_id(rng2, "192.0.2.1")) == (branch, tag, call_id)
    assert new_call_id(random.Random(2), "::1").endswith("@[::1]")
    # usable in the headers they are made for
    assert Via.parse(f"SIP/2.0/UDP h;branch={branch}").branch == branch
    assert NameAddr.parse(f"<sip:a@b>;tag={tag}").tag == tag
