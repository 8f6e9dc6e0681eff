"""SDP parse/serialize (RFC 4566) and the G.711 offer/answer rules (RFC 3264)."""

from __future__ import annotations

import pytest

from tests.unit.sip.fuzzcorpus import load
from ums.sip.message import parse_message
from ums.sip.sdp import (
    AudioParams,
    MediaDescription,
    SdpError,
    SessionDescription,
    answer_audio,
    make_audio_offer,
    parse_answer,
)

OFFER = b"""v=0
o=root 1621734541 1621734541 IN IP4 192.0.2.10
s=Asterisk PBX 18.10.0
c=IN IP4 192.0.2.10
t=0 0
m=audio 14916 RTP/AVP 0 8 3 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:3 GSM/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:30
a=sendrecv
""".replace(b"\n", b"\r\n")


def _offer(text: str) -> SessionDescription:
    return SessionDescription.parse(text.encode())


def _answer(
    offer: SessionDescription, codecs: tuple[str, ...] = ("PCMA", "PCMU")
) -> tuple[SessionDescription, AudioParams]:
    result = answer_audio(offer, codecs=codecs, local_host="203.0.113.5", local_port=40000, session_id=4242)
    assert result is not None
    return result


def test_parse_fields() -> None:
    sd = SessionDescription.parse(OFFER)
    assert sd.origin.username == "root" and sd.origin.session_id == "1621734541"
    assert sd.origin.address == "192.0.2.10"
    assert sd.session_name == "Asterisk PBX 18.10.0"
    assert sd.connection == "192.0.2.10"
    (md,) = sd.media
    assert (md.media, md.port, md.proto, md.formats) == ("audio", 14916, "RTP/AVP", ["0", "8", "3", "101"])
    assert md.connection is None
    assert md.rtpmap()["101"] == ("telephone-event", 8000, 1)
    assert md.fmtp() == {"101": "0-16"}
    assert md.ptime() == 30
    assert md.direction == "sendrecv"
    assert md.attribute("sendrecv") == "" and md.attribute("rtcp") is None


def test_round_trip_is_byte_exact_for_canonical_sdp() -> None:
    assert SessionDescription.parse(OFFER).serialize() == OFFER


def test_lf_only_and_unknown_lines_are_kept() -> None:
    text = (
        b"v=0\no=- 1 2 IN IP4 192.0.2.1\ns=-\ni=session info\nu=http://example.com/\ne=a@example.com\n"
        b"c=IN IP4 192.0.2.1\nb=AS:64\nt=0 0\nr=7d 1h 0 25h\nz=2882844526 -1h\nk=prompt\nx=unknown\n"
        b"a=group:BUNDLE a\nm=audio 5004/2 RTP/AVP 0\ni=audio info\nb=TIAS:64000\ny=other\na=rtcp:5005\n"
    )
    sd = SessionDescription.parse(text)
    assert sd.media[0].port_count == 2
    assert ("x", "unknown") in sd.extra and ("y", "other") in sd.media[0].extra
    out = sd.serialize()
    assert out.split(b"\r\n")[:14] == [
        b"v=0",
        b"o=- 1 2 IN IP4 192.0.2.1",
        b"s=-",
        b"i=session info",
        b"u=http://example.com/",
        b"e=a@example.com",
        b"c=IN IP4 192.0.2.1",
        b"b=AS:64",
        b"t=0 0",
        b"r=7d 1h 0 25h",
        b"z=2882844526 -1h",
        b"k=prompt",
        b"x=unknown",
        b"a=group:BUNDLE a",
    ]
    assert b"m=audio 5004/2 RTP/AVP 0\r\ni=audio info\r\nb=TIAS:64000\r\ny=other\r\na=rtcp:5005\r\n" in out
    assert SessionDescription.parse(out).serialize() == out


def test_ipv6_and_multicast_connection() -> None:
    sd = _offer(
        "v=0\r\no=- 1 1 IN IP6 2001:db8::10\r\ns=-\r\nc=IN IP6 2001:db8::10\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\n"
    )
    assert sd.connection == "2001:db8::10"
    assert b"c=IN IP6 2001:db8::10\r\n" in sd.serialize()
    mc = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 224.2.1.1/127/3\r\n"
    )
    assert mc.media[0].connection == "224.2.1.1"


def test_t38_image_line_is_kept() -> None:
    msg = parse_message(load("reinvite_t38"))
    sd = SessionDescription.parse(msg.body)
    image, audio = sd.media
    assert (image.media, image.port, image.proto, image.formats) == ("image", 5004, "udptl", ["t38"])
    assert image.attribute("T38FaxMaxDatagram") == "176"
    assert image.attribute("T38FaxUdpEC") == "t38UDPRedundancy"
    assert audio.port == 0
    assert SessionDescription.parse(sd.serialize()).media[0] == image


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"\r\n\r\n",
        b"o=- 1 1 IN IP4 h\r\n",
        b"v=1\r\no=- 1 1 IN IP4 h\r\n",
        b"v=0\r\ns=-\r\n",
        b"v=0\r\no=- 1 1 IN IP4\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nthis is not sdp\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 4000/x RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n",
        b"v=0\r\no=- 1 1 IN IP4 h\r\nv=0\r\n",
    ],
)
def test_bad_sdp(text: bytes) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(text)
    assert issubclass(SdpError, ValueError)


# --- answer_audio ---------------------------------------------------------------------------------


def test_answer_picks_our_preference_and_keeps_telephone_event() -> None:
    answer, params = _answer(SessionDescription.parse(OFFER))
    assert params == AudioParams(
        codec="PCMA",
        payload_type=8,
        remote_host="192.0.2.10",
        remote_port=14916,
        telephone_event_pt=101,
        ptime=30,
        direction="sendrecv",
    )
    assert answer.serialize() == (
        b"v=0\r\n"
        b"o=ums 4242 1 IN IP4 203.0.113.5\r\n"
        b"s=ums\r\n"
        b"c=IN IP4 203.0.113.5\r\n"
        b"t=0 0\r\n"
        b"m=audio 40000 RTP/AVP 8 101\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:30\r\n"
        b"a=sendrecv\r\n"
    )
    _, pcmu = _answer(SessionDescription.parse(OFFER), codecs=("PCMU", "PCMA"))
    assert (pcmu.codec, pcmu.payload_type) == ("PCMU", 0)


def test_answer_version_argument() -> None:
    result = answer_audio(
        SessionDescription.parse(OFFER),
        codecs=["PCMA"],
        local_host="h",
        local_port=1,
        session_id=9,
        version=3,
    )
    assert result is not None
    assert result[0].origin.session_version == "3"


def test_static_payload_types_without_rtpmap() -> None:
    sd = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 18 0\r\n"
    )
    answer, params = _answer(sd)
    assert (params.codec, params.payload_type, params.telephone_event_pt, params.ptime) == (
        "PCMU",
        0,
        None,
        20,
    )
    assert answer.media[0].formats == ["0"]
    assert ("ptime", "20") in answer.media[0].attributes


def test_dynamic_payload_type_and_name_case() -> None:
    msg = parse_message(load("invite_diversion"))
    answer, params = _answer(SessionDescription.parse(msg.body))
    # a=rtpmap:96 pcma/8000 and a=rtpmap:97 Telephone-Event/8000: the offerer's numbers are kept
    assert (params.codec, params.payload_type, params.telephone_event_pt) == ("PCMA", 96, 97)
    audio, video = answer.media
    assert audio.formats == ["96", "97"]
    assert ("rtpmap", "96 PCMA/8000") in audio.attributes
    assert ("fmtp", "97 0-15") in audio.attributes
    # RFC 3264 §6: the video stream is declined with port 0, and the m= order is kept
    assert (video.media, video.port, video.formats) == ("video", 0, ["99"])


def test_telephone_event_without_fmtp_answers_0_15() -> None:
    sd = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=audio 7000 RTP/AVP 8 100\r\na=rtpmap:100 telephone-event/8000\r\n"
    )
    answer, params = _answer(sd)
    assert params.telephone_event_pt == 100
    assert ("fmtp", "100 0-15") in answer.media[0].attributes


def test_wrong_clock_rate_is_not_g711() -> None:
    sd = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=audio 7000 RTP/AVP 96 101\r\na=rtpmap:96 PCMA/16000\r\na=rtpmap:101 telephone-event/48000\r\n"
    )
    assert answer_audio(sd, codecs=["PCMA", "PCMU"], local_host="h", local_port=1, session_id=1) is None


def test_no_g711_means_none() -> None:
    sd = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=audio 7000 RTP/AVP 9 18\r\na=rtpmap:9 G722/8000\r\na=rtpmap:18 G729/8000\r\n"
    )
    assert answer_audio(sd, codecs=["PCMA", "PCMU"], local_host="h", local_port=1, session_id=1) is None
    # offering only PCMU while we only want PCMA
    assert answer_audio(
        SessionDescription.parse(OFFER), codecs=["PCMA"], local_host="h", local_port=1, session_id=1
    )
    pcmu_only = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
    )
    assert answer_audio(pcmu_only, codecs=["PCMA"], local_host="h", local_port=1, session_id=1) is None


def test_no_connection_address_means_none() -> None:
    sd = _offer("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n")
    assert answer_audio(sd, codecs=["PCMU"], local_host="h", local_port=1, session_id=1) is None


def test_media_level_connection_wins() -> None:
    sd = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 7000 RTP/AVP 0\r\nc=IN IP4 198.51.100.2\r\n"
    )
    assert _answer(sd)[1].remote_host == "198.51.100.2"


@pytest.mark.parametrize(
    ("session_attr", "media_attr", "ours"),
    [
        ("", "", "sendrecv"),
        ("", "a=sendrecv\r\n", "sendrecv"),
        ("", "a=sendonly\r\n", "recvonly"),
        ("", "a=recvonly\r\n", "sendonly"),
        ("", "a=inactive\r\n", "inactive"),
        ("a=sendonly\r\n", "", "recvonly"),
        ("a=sendonly\r\n", "a=sendrecv\r\n", "sendrecv"),
    ],
)
def test_direction_mirroring(session_attr: str, media_attr: str, ours: str) -> None:
    sd = _offer(
        f"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n{session_attr}"
        f"m=audio 7000 RTP/AVP 8\r\n{media_attr}"
    )
    answer, params = _answer(sd)
    assert params.direction == ours
    assert answer.media[0].direction == ours


def test_old_style_hold() -> None:
    # RFC 3264 §8.4: c=0.0.0.0 -- the offerer does not want to receive
    msg = parse_message(load("reinvite_hold"))
    _, params = _answer(SessionDescription.parse(msg.body))
    assert params.remote_host == "0.0.0.0" and params.direction == "recvonly"
    hold = _offer("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 7000 RTP/AVP 8\r\n")
    assert _answer(hold)[1].direction == "recvonly"
    hold_recvonly = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        "m=audio 7000 RTP/AVP 8\r\na=recvonly\r\n"
    )
    assert _answer(hold_recvonly)[1].direction == "inactive"


def test_t38_offer_with_declined_audio_gets_no_audio_answer() -> None:
    msg = parse_message(load("reinvite_t38"))
    assert (
        answer_audio(
            SessionDescription.parse(msg.body), codecs=["PCMA"], local_host="h", local_port=1, session_id=1
        )
        is None
    )


def test_image_stream_beside_audio_is_declined_in_order() -> None:
    sd = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=image 5000 udptl t38\r\na=T38FaxVersion:0\r\nm=audio 7000 RTP/AVP 8\r\n"
        "m=audio 7002 RTP/AVP 0\r\nm=audio 7004 RTP/SAVP 8\r\n"
    )
    answer, params = _answer(sd)
    assert [(m.media, m.port, m.proto) for m in answer.media] == [
        ("image", 0, "udptl"),
        ("audio", 40000, "RTP/AVP"),
        ("audio", 0, "RTP/AVP"),  # only one audio stream is accepted
        ("audio", 0, "RTP/SAVP"),
    ]
    assert answer.media[0].formats == ["t38"]
    assert params.remote_port == 7000
    again = SessionDescription.parse(answer.serialize())
    assert [m.port for m in again.media] == [0, 40000, 0, 0]


def test_zero_port_audio_is_skipped() -> None:
    sd = _offer(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=audio 0 RTP/AVP 8\r\nm=audio 7002 RTP/AVP 0\r\n"
    )
    answer, params = _answer(sd)
    assert [m.port for m in answer.media] == [0, 40000]
    assert params.codec == "PCMU"


def test_ipv6_answer() -> None:
    msg = parse_message(load("invite_ipv6"))
    result = answer_audio(
        SessionDescription.parse(msg.body),
        codecs=["PCMU"],
        local_host="2001:db8::5",
        local_port=4000,
        session_id=1,
    )
    assert result is not None
    answer, params = result
    assert params.remote_host == "2001:db8::10"
    out = answer.serialize()
    assert b"o=ums 1 1 IN IP6 2001:db8::5\r\n" in out and b"c=IN IP6 2001:db8::5\r\n" in out


def test_bad_codec_list() -> None:
    with pytest.raises(ValueError):
        answer_audio(
            SessionDescription.parse(OFFER), codecs=["G729"], local_host="h", local_port=1, session_id=1
        )
    with pytest.raises(ValueError):
        make_audio_offer(codecs=[], local_host="h", local_port=1, session_id=1)


# --- our offer and the answer to it ---------------------------------------------------------------


def test_make_audio_offer() -> None:
    offer = make_audio_offer(
        codecs=["PCMA", "PCMU"], local_host="203.0.113.5", local_port=40002, session_id=77
    )
    assert offer.serialize() == (
        b"v=0\r\n"
        b"o=ums 77 1 IN IP4 203.0.113.5\r\n"
        b"s=ums\r\n"
        b"c=IN IP4 203.0.113.5\r\n"
        b"t=0 0\r\n"
        b"m=audio 40002 RTP/AVP 8 0 101\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-15\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_offer_answered_by_ourselves() -> None:
    offer = make_audio_offer(
        codecs=["PCMU", "PCMA"], local_host="192.0.2.1", local_port=5000, session_id=1, version=2
    )
    answer, theirs = _answer(SessionDescription.parse(offer.serialize()))
    assert (theirs.codec, theirs.remote_port) == ("PCMA", 5000)
    ours = parse_answer(SessionDescription.parse(answer.serialize()), ["PCMU", "PCMA"])
    assert ours == AudioParams("PCMA", 8, "203.0.113.5", 40000, 101, 20, "sendrecv")


def test_parse_answer_direction_and_rejection() -> None:
    base = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
    recvonly = _offer(
        base + "m=audio 7000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=recvonly\r\n"
    )
    params = parse_answer(recvonly, ["PCMA", "PCMU"])
    assert params == AudioParams("PCMU", 0, "192.0.2.9", 7000, 101, 20, "sendonly")
    assert parse_answer(_offer(base + "m=audio 0 RTP/AVP 0\r\n"), ["PCMU"]) is None
    assert parse_answer(_offer(base + "m=audio 7000 RTP/AVP 18\r\n"), ["PCMU"]) is None
    assert parse_answer(_offer(base + "m=audio 7000 RTP/AVP 8\r\n"), ["PCMU"]) is None
    held = _offer(base.replace("192.0.2.9", "0.0.0.0") + "m=audio 7000 RTP/AVP 8\r\n")
    assert parse_answer(held, ["PCMA"]) == AudioParams("PCMA", 8, "0.0.0.0", 7000, None, 20, "recvonly")


def test_media_description_defaults() -> None:
    md = MediaDescription("audio", 1, "RTP/AVP", ["0"])
    assert md.connection is None and md.attributes == [] and md.direction is None and md.ptime() is None
    assert md.lines() == ["m=audio 1 RTP/AVP 0"]
