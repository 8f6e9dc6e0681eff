"""SDP session descriptions (RFC 4566) and the G.711 offer/answer exchange (RFC 3264).

What it does
------------
:meth:`SessionDescription.parse` / :meth:`SessionDescription.serialize` convert between bytes
and a small object model; :func:`answer_audio` answers a remote offer with one G.711 codec plus
``telephone-event`` (RFC 4733), :func:`make_audio_offer` writes our offer and
:func:`parse_answer` reads the answer to it.  The negotiated result is an :class:`AudioParams`.
Malformed SDP raises :class:`SdpError` (a ``ValueError``).

How it works
------------
Lines are ``<type>=<value>``, CRLF or bare LF terminated (RFC 4566 §5 asks parsers to accept
LF).  ``v=``, ``o=``, ``s=``, ``c=``, ``m=`` and ``a=`` are parsed into fields; every other
line (``i=``, ``b=``, ``t=``, ``k=``, unknown types ...) is kept in ``extra`` and written back
in the RFC 4566 §5 order.  Attributes are ``(name, value)`` pairs, ``value`` ``None`` for a
property attribute such as ``a=sendrecv``.

The answer follows RFC 3264 §6: one ``m=`` line per offered line, in the same order; the
first usable RTP/AVP audio stream is accepted, every other stream gets port 0.  The codec is
the first one of *our* preference list that the offer carries (static payload types 0/8 or an
``rtpmap`` name, clock 8000).  The offer direction is mirrored (sendonly -> recvonly ...), and
an old-style hold (``c=0.0.0.0``, RFC 3264 §8.4) counts as "the offerer does not receive".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_PTIME",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT_PT",
    "AudioParams",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SessionDescription",
    "answer_audio",
    "is_udptl_image",
    "make_audio_offer",
    "new_description",
    "parse_answer",
]

#: RFC 3551 §6 table 4: static payload types of the codecs we speak (8 kHz, mono).
STATIC_PAYLOAD_TYPES: dict[str, int] = {"PCMU": 0, "PCMA": 8}
_STATIC_BY_PT = {pt: name for name, pt in STATIC_PAYLOAD_TYPES.items()}
#: Dynamic payload type we offer for RFC 4733 telephone-event (any of 96-127 is allowed).
TELEPHONE_EVENT_PT = 101
#: RFC 4733 §2.4.1: "If no "a=fmtp" is present ... events 0-15 are supported" (DTMF digits).
DEFAULT_TELEPHONE_EVENTS = "0-15"
#: RFC 3551 §4.5: default packetisation of G.711 is 20 ms.
DEFAULT_PTIME = 20
_CLOCK_RATE = 8000
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# RFC 3264 §6.1: the answer's direction mirrors the offer's
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
# RFC 4566 §5: session-level order "v o s i u e p c b t r z k a", media-level "m i c b k a"
_ORDER = {t: i for i, t in enumerate("vosiuepcbtrzkam")}
_LINE_RE = re.compile(r"([a-zA-Z])[ \t]*=(.*)")
_DIGITS = re.compile(r"[0-9]+")


class SdpError(ValueError):
    """SDP we cannot read."""


@dataclass
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _parse_connection(value: str) -> str:
    """``c=IN IP4 <address>[/ttl[/n]]`` -> the address (multicast suffixes dropped)."""
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"bad c= line: {value[:60]!r}")
    return parts[2].split("/", 1)[0]


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    return (name, rest) if colon else (name, None)


@dataclass
class MediaDescription:
    """One ``m=`` section."""

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    port_count: int | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name[:value]`` ("" for a property attribute), None if absent."""
        for n, v in self.attributes:
            if n == name:
                return "" if v is None else v
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [v for n, v in self.attributes if n == name and v is not None]

    @property
    def direction(self) -> str | None:
        """The last direction attribute at media level, None if there is none."""
        found = None
        for n, v in self.attributes:
            if v is None and n in _DIRECTIONS:
                found = n
        return found

    def rtpmap(self) -> dict[str, tuple[str, int, int]]:
        """payload type -> (encoding name, clock rate, channels) from ``a=rtpmap``."""
        out: dict[str, tuple[str, int, int]] = {}
        for value in self.attribute_values("rtpmap"):
            pt, _, enc = value.strip().partition(" ")
            fields = enc.strip().split("/")
            if len(fields) < 2 or not _DIGITS.fullmatch(fields[1]) or len(fields[1]) > 9:
                continue
            channels = int(fields[2]) if len(fields) > 2 and _DIGITS.fullmatch(fields[2]) else 1
            out.setdefault(pt, (fields[0], int(fields[1]), channels))
        return out

    def fmtp(self) -> dict[str, str]:
        """payload type -> format parameters from ``a=fmtp``."""
        out: dict[str, str] = {}
        for value in self.attribute_values("fmtp"):
            pt, _, params = value.strip().partition(" ")
            out.setdefault(pt, params.strip())
        return out

    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if not value:
            return None
        try:
            ms = int(float(value.strip()))
        except (ValueError, OverflowError):
            return None
        return ms if 1 <= ms <= 1000 else None

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        rest: list[tuple[int, str]] = [(_ORDER.get(t, 14), f"{t}={v}") for t, v in self.extra]
        if self.connection is not None:
            rest.append((_ORDER["c"], f"c=IN {_addrtype(self.connection)} {self.connection}"))
        rest.sort(key=lambda item: item[0])
        out += [line for _, line in rest]
        out += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        return out


@dataclass
class SessionDescription:
    """A whole SDP body."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: str | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        """Parse an SDP body; raises :class:`SdpError`."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        sd = cls()
        seen_v = seen_o = False
        current: MediaDescription | None = None
        for raw in text.replace("\r\n", "\n").split("\n"):
            line = raw.rstrip("\r \t")
            if not line:
                continue
            m = _LINE_RE.fullmatch(line)
            if m is None:
                raise SdpError(f"bad SDP line: {line[:60]!r}")
            typ, value = m.group(1), m.group(2)
            if not seen_v:
                if typ != "v" or value.strip() != "0":
                    raise SdpError("SDP must start with v=0")
                seen_v = True
                continue
            if typ == "m":
                current = _parse_media(value)
                sd.media.append(current)
            elif typ == "a":
                (current.attributes if current is not None else sd.attributes).append(_parse_attribute(value))
            elif typ == "c":
                if current is not None:
                    current.connection = _parse_connection(value)
                else:
                    sd.connection = _parse_connection(value)
            elif current is not None:
                current.extra.append((typ, value))
            elif typ == "o":
                sd.origin = _parse_origin(value)
                seen_o = True
            elif typ == "s":
                sd.session_name = value
            elif typ == "v":
                raise SdpError("repeated v= line")
            else:
                sd.extra.append((typ, value))
        if not seen_v:
            raise SdpError("empty SDP")
        if not seen_o:
            raise SdpError("SDP without o= line")
        return sd

    def serialize(self) -> bytes:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name or '-'}"]
        rest: list[tuple[int, str]] = [(_ORDER.get(t, 14), f"{t}={v}") for t, v in self.extra]
        if self.connection is not None:
            rest.append((_ORDER["c"], f"c=IN {_addrtype(self.connection)} {self.connection}"))
        if not any(t == "t" for t, _ in self.extra):
            rest.append((_ORDER["t"], "t=0 0"))
        rest.sort(key=lambda item: item[0])
        lines += [line for _, line in rest]
        lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        for md in self.media:
            lines += md.lines()
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def attribute(self, name: str) -> str | None:
        for n, v in self.attributes:
            if n == name:
                return "" if v is None else v
        return None

    @property
    def direction(self) -> str | None:
        found = None
        for n, v in self.attributes:
            if v is None and n in _DIRECTIONS:
                found = n
        return found


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"bad o= line: {value[:60]!r}")
    return Origin(*parts)


def _parse_media(value: str) -> MediaDescription:
    # m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line: {value[:60]!r}")
    port_text, slash, count_text = parts[1].partition("/")
    if not _DIGITS.fullmatch(port_text) or len(port_text) > 5 or int(port_text) > 65535:
        raise SdpError(f"bad m= port: {parts[1][:20]!r}")
    count: int | None = None
    if slash:
        if not _DIGITS.fullmatch(count_text) or len(count_text) > 5:
            raise SdpError(f"bad m= port count: {parts[1][:20]!r}")
        count = int(count_text)
    return MediaDescription(parts[0], int(port_text), parts[2], parts[3:], port_count=count)


@dataclass(frozen=True)
class AudioParams:
    """The negotiated audio stream."""

    codec: str
    payload_type: int
    remote_host: str
    remote_port: int
    telephone_event_pt: int | None
    ptime: int
    direction: str


def _pt_int(pt: str) -> int | None:
    if _DIGITS.fullmatch(pt) and len(pt) <= 3 and int(pt) <= 127:
        return int(pt)
    return None


def _codec_of(md: MediaDescription, pt: str, rtpmap: dict[str, tuple[str, int, int]]) -> str | None:
    """The G.711 codec name of payload type ``pt`` (or "telephone-event"), None for others."""
    if pt in rtpmap:
        name, clock, channels = rtpmap[pt]
        if clock != _CLOCK_RATE or channels != 1:
            return None
        upper = name.upper()
        if upper in STATIC_PAYLOAD_TYPES:
            return upper
        if upper == "TELEPHONE-EVENT":
            return "telephone-event"
        return None
    num = _pt_int(pt)
    return _STATIC_BY_PT.get(num) if num is not None else None


def _check_codecs(codecs: Sequence[str]) -> list[str]:
    out = [c.upper() for c in codecs]
    unknown = [c for c in out if c not in STATIC_PAYLOAD_TYPES]
    if unknown or not out:
        raise ValueError(f"unsupported codecs {list(codecs)!r}; use PCMA and/or PCMU")
    return out


def _effective_direction(sd: SessionDescription, md: MediaDescription, host: str | None) -> str:
    direction = md.direction or sd.direction or "sendrecv"
    if host in ("0.0.0.0", "::"):
        # RFC 3264 §8.4: a zero connection address is the old way of putting a stream on hold
        direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
    return direction


def _is_rtp_audio(md: MediaDescription) -> bool:
    return md.media.lower() == "audio" and md.proto.upper() == "RTP/AVP" and md.port != 0


def new_description(local_host: str, session_id: int, version: int = 1) -> SessionDescription:
    """An empty description of ours: ``o=ums <session_id> <version>``, ``c=`` and ``t=0 0``."""
    return SessionDescription(
        origin=Origin("ums", str(session_id), str(version), "IN", _addrtype(local_host), local_host),
        session_name="ums",
        connection=local_host,
        extra=[("t", "0 0")],
    )


def is_udptl_image(md: MediaDescription) -> bool:
    """``m=image <port> udptl t38`` with a port (T.38 Annex D; names compared without case)."""
    return (
        md.media.lower() == "image"
        and md.proto.lower() == "udptl"
        and any(f.lower() == "t38" for f in md.formats)
        and md.port != 0
    )


def _audio_lines(
    pt: int, codec: str, te_pt: int | None, te_fmtp: str | None, ptime: int, direction: str
) -> list[tuple[str, str | None]]:
    attrs: list[tuple[str, str | None]] = [("rtpmap", f"{pt} {codec}/{_CLOCK_RATE}")]
    if te_pt is not None:
        attrs.append(("rtpmap", f"{te_pt} telephone-event/{_CLOCK_RATE}"))
        attrs.append(("fmtp", f"{te_pt} {te_fmtp or DEFAULT_TELEPHONE_EVENTS}"))
    attrs.append(("ptime", str(ptime)))
    attrs.append((direction, None))
    return attrs


def answer_audio(
    offer: SessionDescription,
    *,
    codecs: Sequence[str],
    local_host: str,
    local_port: int,
    session_id: int,
    version: int = 1,
) -> tuple[SessionDescription, AudioParams] | None:
    """Answer ``offer`` (RFC 3264 §6): accept the first usable G.711 audio stream.

    Returns ``None`` when no audio stream offers one of ``codecs`` (the caller answers 488) or
    the stream has no connection address.  ``codecs`` is our preference order ("PCMA", "PCMU").
    """
    prefs = _check_codecs(codecs)
    answer = new_description(local_host, session_id, version)
    chosen: AudioParams | None = None
    for md in offer.media:
        accepted = None
        if chosen is None and _is_rtp_audio(md):
            accepted = _negotiate(offer, md, prefs)
        if accepted is None:
            # RFC 3264 §6: "An offered stream MAY be rejected in the answer by setting the port to zero"
            answer.media.append(MediaDescription(md.media, 0, md.proto, list(md.formats) or ["0"]))
            continue
        chosen, attrs = accepted
        formats = [str(chosen.payload_type)]
        if chosen.telephone_event_pt is not None:
            formats.append(str(chosen.telephone_event_pt))
        answer.media.append(MediaDescription("audio", local_port, md.proto, formats, attributes=attrs))
    if chosen is None:
        return None
    return answer, chosen


def _negotiate(
    offer: SessionDescription, md: MediaDescription, prefs: list[str]
) -> tuple[AudioParams, list[tuple[str, str | None]]] | None:
    host = md.connection if md.connection is not None else offer.connection
    if not host:
        return None
    rtpmap = md.rtpmap()
    by_codec: dict[str, str] = {}
    for pt in md.formats:
        name = _codec_of(md, pt, rtpmap)
        if name is not None and _pt_int(pt) is not None:
            by_codec.setdefault(name, pt)
    codec = next((c for c in prefs if c in by_codec), None)
    if codec is None:
        return None
    te_text = by_codec.get("telephone-event")
    te_pt = _pt_int(te_text) if te_text is not None else None
    te_fmtp = md.fmtp().get(te_text) if te_text is not None else None
    ptime = md.ptime() or DEFAULT_PTIME
    direction = _MIRROR[_effective_direction(offer, md, host)]
    pt_num = int(by_codec[codec])
    params = AudioParams(codec, pt_num, host, md.port, te_pt, ptime, direction)
    return params, _audio_lines(pt_num, codec, te_pt, te_fmtp, ptime, direction)


def make_audio_offer(
    *, codecs: Sequence[str], local_host: str, local_port: int, session_id: int, version: int = 1
) -> SessionDescription:
    """Our offer: one RTP/AVP audio stream with ``codecs`` in order plus telephone-event 101."""
    prefs = _check_codecs(codecs)
    sd = new_description(local_host, session_id, version)
    formats = [str(STATIC_PAYLOAD_TYPES[c]) for c in prefs] + [str(TELEPHONE_EVENT_PT)]
    attrs: list[tuple[str, str | None]] = [
        ("rtpmap", f"{STATIC_PAYLOAD_TYPES[c]} {c}/{_CLOCK_RATE}") for c in prefs
    ]
    attrs += [
        ("rtpmap", f"{TELEPHONE_EVENT_PT} telephone-event/{_CLOCK_RATE}"),
        ("fmtp", f"{TELEPHONE_EVENT_PT} {DEFAULT_TELEPHONE_EVENTS}"),
        ("ptime", str(DEFAULT_PTIME)),
        ("sendrecv", None),
    ]
    sd.media.append(MediaDescription("audio", local_port, "RTP/AVP", formats, attributes=attrs))
    return sd


def parse_answer(answer: SessionDescription, offered_codecs: Sequence[str]) -> AudioParams | None:
    """Read the answer to :func:`make_audio_offer`; ``None`` if the audio stream was rejected.

    The codec is the first format of the answer that we offered; ``direction`` is ours (the
    mirror of the answerer's).
    """
    offered = set(_check_codecs(offered_codecs))
    for md in answer.media:
        if not _is_rtp_audio(md):
            continue
        host = md.connection if md.connection is not None else answer.connection
        if not host:
            return None
        rtpmap = md.rtpmap()
        codec_pt: tuple[str, int] | None = None
        te_pt: int | None = None
        for pt in md.formats:
            name = _codec_of(md, pt, rtpmap)
            num = _pt_int(pt)
            if name is None or num is None:
                continue
            if name == "telephone-event":
                te_pt = te_pt if te_pt is not None else num
            elif name in offered and codec_pt is None:
                codec_pt = (name, num)
        if codec_pt is None:
            return None
        direction = _MIRROR[_effective_direction(answer, md, host)]
        ptime = md.ptime() or DEFAULT_PTIME
        return AudioParams(codec_pt[0], codec_pt[1], host, md.port, te_pt, ptime, direction)
    return None
