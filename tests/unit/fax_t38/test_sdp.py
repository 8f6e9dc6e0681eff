"""T.38 SDP attributes (T.38 Annex D, RFC 4612): parsing, writing, offer/answer, fit with ums.sip.sdp."""

from __future__ import annotations

import pytest

from ums.fax_t38.sdp import (
    RateManagement,
    T38Capabilities,
    T38Params,
    T38SdpError,
    UdpEc,
    accept_t38_answer,
    answer_t38,
    is_t38_stream,
    make_t38_offer,
    parse_t38_attributes,
    t38_attributes,
)
from ums.fax_t38.udptl import parse_udptl
from ums.sip.sdp import MediaDescription, SessionDescription

Attrs = list[tuple[str, str | None]]

#: the shape FreeSWITCH (mod_spandsp) offers on a re-INVITE to T.38
FREESWITCH: Attrs = [
    ("T38FaxVersion", "0"),
    ("T38MaxBitRate", "14400"),
    ("T38FaxFillBitRemoval", None),
    ("T38FaxRateManagement", "transferredTCF"),
    ("T38FaxMaxBuffer", "2000"),
    ("T38FaxMaxDatagram", "400"),
    ("T38FaxUdpEC", "t38UDPRedundancy"),
]
#: gateways that write booleans as :0 / :1, in mixed case
GATEWAY: Attrs = [
    ("T38FaxVersion", "3"),
    ("T38MaxBitRate", "33600"),
    ("T38FaxFillBitRemoval", "0"),
    ("T38FaxTranscodingMMR", "0"),
    ("t38faxtranscodingjbig", "1"),
    ("T38FaxRateManagement", "transferredtcf"),
    ("T38FaxMaxBuffer", "200"),
    ("T38FaxMaxDatagram", "320"),
    ("T38FaxUdpEC", "t38UDPFEC"),
    ("T38FaxUdpECDepth", "2 4"),
    ("T38FaxUdpFECMaxSpan", "5"),
    ("T38VendorInfo", "0 0 0"),
    ("sendrecv", None),
    ("T38FaxVersion", "1"),  # a second copy is ignored
]


def test_parse_freeswitch_offer() -> None:
    assert parse_t38_attributes(FREESWITCH) == T38Params(
        version=0,
        max_bit_rate=14400,
        fill_bit_removal=True,
        rate_management=RateManagement.TRANSFERRED_TCF,
        max_buffer=2000,
        max_datagram=400,
        udp_ec=UdpEc.REDUNDANCY,
    )


def test_parse_gateway_offer() -> None:
    params = parse_t38_attributes(GATEWAY)
    assert params == T38Params(
        version=3,
        max_bit_rate=33600,
        fill_bit_removal=False,
        transcoding_mmr=False,
        transcoding_jbig=True,
        rate_management=RateManagement.TRANSFERRED_TCF,
        max_buffer=200,
        max_datagram=320,
        udp_ec=UdpEc.FEC,
        ec_depth=(2, 4),
        fec_max_span=5,
        vendor_info="0 0 0",
    )


def test_parse_empty_gives_defaults() -> None:
    assert parse_t38_attributes([]) == T38Params()
    assert parse_t38_attributes([("T38FaxUdpECDepth", "3")]).ec_depth == (3, None)


@pytest.mark.parametrize(
    "attr",
    [
        ("T38FaxVersion", None),
        ("T38FaxVersion", "one"),
        ("T38MaxBitRate", "-14400"),
        ("T38FaxMaxDatagram", "1e3"),
        ("T38FaxRateManagement", "remoteTCF"),
        ("T38FaxUdpEC", "t38UDPParity"),
        ("T38FaxFillBitRemoval", "yes"),
        ("T38FaxUdpECDepth", ""),
        ("T38FaxUdpECDepth", "1 2 3"),
        ("T38FaxMaxBuffer", "１２"),  # non-ASCII digits
    ],
)
def test_parse_errors(attr: tuple[str, str | None]) -> None:
    with pytest.raises(T38SdpError):
        parse_t38_attributes([attr])


def test_build_round_trip() -> None:
    params = parse_t38_attributes(GATEWAY)
    attrs = t38_attributes(params)
    assert attrs == [
        ("T38FaxVersion", "3"),
        ("T38MaxBitRate", "33600"),
        ("T38FaxTranscodingJBIG", None),
        ("T38FaxRateManagement", "transferredTCF"),
        ("T38FaxMaxBuffer", "200"),
        ("T38FaxMaxDatagram", "320"),
        ("T38FaxUdpEC", "t38UDPFEC"),
        ("T38FaxUdpECDepth", "2 4"),
        ("T38FaxUdpFECMaxSpan", "5"),
        ("T38VendorInfo", "0 0 0"),
    ]
    assert parse_t38_attributes(attrs) == params
    assert t38_attributes(T38Params()) == [("T38FaxVersion", "0")]


# ------------------------------------------------------------------------------ negotiation
def test_answer_freeswitch_offer() -> None:
    result = answer_t38(parse_t38_attributes(FREESWITCH))
    assert result is not None
    answer, session = result
    assert t38_attributes(answer) == [
        ("T38FaxVersion", "0"),
        ("T38MaxBitRate", "14400"),
        ("T38FaxRateManagement", "transferredTCF"),
        ("T38FaxMaxBuffer", "2000"),
        ("T38FaxMaxDatagram", "1400"),
        ("T38FaxUdpEC", "t38UDPRedundancy"),
    ]
    assert (session.version, session.bit_rate, session.ec) == (0, 14400, UdpEc.REDUNDANCY)
    assert (session.remote_max_datagram, session.remote_max_buffer) == (400, 2000)
    assert not session.fill_bit_removal  # we do not remove fill bits, so neither side does


def test_answer_lowers_version_and_rate_and_takes_fec() -> None:
    result = answer_t38(parse_t38_attributes(GATEWAY), T38Capabilities(max_version=2))
    assert result is not None
    answer, session = result
    assert (answer.version, answer.max_bit_rate, answer.udp_ec) == (2, 14400, UdpEc.FEC)
    assert not answer.transcoding_jbig
    encoder = session.encoder()
    assert encoder.ec == "fec" and encoder.max_datagram == 320


@pytest.mark.parametrize(
    ("offered", "fec", "expected"),
    [
        (None, True, UdpEc.REDUNDANCY),
        (UdpEc.REDUNDANCY, True, UdpEc.REDUNDANCY),
        (UdpEc.FEC, True, UdpEc.FEC),
        (UdpEc.FEC, False, UdpEc.REDUNDANCY),
        (UdpEc.NONE, True, UdpEc.NONE),
    ],
)
def test_answer_error_correction(offered: UdpEc | None, fec: bool, expected: UdpEc) -> None:
    result = answer_t38(T38Params(version=2, udp_ec=offered), T38Capabilities(fec=fec))
    assert result is not None and result[0].udp_ec == expected and result[1].ec == expected


def test_answer_defaults_and_rate_management() -> None:
    result = answer_t38(T38Params())  # bare "m=image ... udptl t38"
    assert result is not None
    answer, session = result
    assert (answer.version, answer.max_bit_rate, answer.rate_management) == (
        0,
        14400,
        RateManagement.TRANSFERRED_TCF,
    )
    assert session.remote_max_datagram is None and session.encoder().max_datagram is None
    local = T38Params(version=1, rate_management=RateManagement.LOCAL_TCF)
    assert answer_t38(local) is None
    both = T38Capabilities(rate_management=(RateManagement.TRANSFERRED_TCF, RateManagement.LOCAL_TCF))
    result = answer_t38(local, both)
    assert result is not None and result[0].rate_management is RateManagement.LOCAL_TCF


def test_offer_and_answer_round_trip() -> None:
    offer = make_t38_offer()
    assert t38_attributes(offer) == [
        ("T38FaxVersion", "3"),
        ("T38MaxBitRate", "14400"),
        ("T38FaxRateManagement", "transferredTCF"),
        ("T38FaxMaxBuffer", "2000"),
        ("T38FaxMaxDatagram", "1400"),
        ("T38FaxUdpEC", "t38UDPRedundancy"),
    ]
    # a peer answers like FreeSWITCH: version 0, its own limits
    peer = parse_t38_attributes(FREESWITCH)
    session = accept_t38_answer(offer, peer)
    assert session is not None
    assert (session.version, session.bit_rate, session.ec, session.remote_max_datagram) == (
        0,
        14400,
        UdpEc.REDUNDANCY,
        400,
    )
    # an answer above our version is held to ours; one we cannot do is refused
    assert accept_t38_answer(T38Params(version=0), T38Params(version=2)) is not None
    assert accept_t38_answer(offer, T38Params(version=0, rate_management=RateManagement.LOCAL_TCF)) is None
    assert accept_t38_answer(offer, T38Params(udp_ec=UdpEc.FEC), T38Capabilities(fec=False)) is None


def test_session_encoder_respects_far_end_datagram_limit() -> None:
    result = answer_t38(T38Params(version=0, max_datagram=60, udp_ec=UdpEc.REDUNDANCY))
    assert result is not None
    encoder = result[1].encoder(depth=3)
    for _ in range(10):
        wire = encoder.packet(bytes(20))
        assert len(wire) <= 60
    assert len(parse_udptl(wire).secondary) == 1


# ---------------------------------------------------------------- fit with ums.sip.sdp
OFFER_SDP = (
    b"v=0\r\n"
    b"o=FreeSWITCH 1 2 IN IP4 192.0.2.10\r\n"
    b"s=FreeSWITCH\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=image 20002 udptl t38\r\n"
    b"a=T38FaxVersion:0\r\n"
    b"a=T38MaxBitRate:14400\r\n"
    b"a=T38FaxFillBitRemoval\r\n"
    b"a=T38FaxRateManagement:transferredTCF\r\n"
    b"a=T38FaxMaxBuffer:2000\r\n"
    b"a=T38FaxMaxDatagram:400\r\n"
    b"a=T38FaxUdpEC:t38UDPRedundancy\r\n"
)


def test_fits_sip_sdp_media_description() -> None:
    offer = SessionDescription.parse(OFFER_SDP)
    md = offer.media[0]
    assert is_t38_stream(md.media, md.proto, md.formats)
    assert not is_t38_stream("audio", "RTP/AVP", ["0"])
    assert is_t38_stream("image", "UDPTL", ["T38"])
    params = parse_t38_attributes(md.attributes)
    assert params == parse_t38_attributes(FREESWITCH)
    result = answer_t38(params)
    assert result is not None
    answer = SessionDescription(connection="192.0.2.20", extra=[("t", "0 0")])
    answer.media.append(
        MediaDescription("image", 30000, "udptl", ["t38"], attributes=t38_attributes(result[0]))
    )
    text = answer.serialize()
    assert b"m=image 30000 udptl t38\r\n" in text and b"a=T38FaxUdpEC:t38UDPRedundancy\r\n" in text
    again = SessionDescription.parse(text).media[0]
    assert parse_t38_attributes(again.attributes) == result[0]
