"""T.38 session attributes in SDP (T.38 Annex D, RFC 4612) and their offer/answer.

What it does
------------
A T.38 stream is an ``m=image <port> udptl t38`` line (T.38 Annex D) whose ``a=`` attributes
describe the session.  :func:`parse_t38_attributes` reads them into :class:`T38Params`,
:func:`t38_attributes` writes them back, :func:`answer_t38` answers an offer within our
:class:`T38Capabilities`, :func:`make_t38_offer` and :func:`accept_t38_answer` do the other
side.  The agreed result is a :class:`T38Session`, from which :meth:`T38Session.encoder`
builds the matching :class:`~ums.fax_t38.udptl.UdptlEncoder`.  Bad values raise
:class:`T38SdpError` (a ``ValueError``).

How it works
------------
Attributes are ``(name, value)`` pairs, ``value`` ``None`` for a property attribute, the same
shape as ``MediaDescription.attributes`` in :mod:`ums.sip.sdp`; this module does not import it.
Names are matched without regard to case (peers send ``T38faxVersion``, ``t38FaxUdpEC`` ...);
unknown attributes are ignored.  Boolean attributes are true when present as a property, and
also accept ``:1``/``:0`` (some peers write ``a=T38FaxFillBitRemoval:0``).

Answer rules (T.38 Annex D, RFC 4612): the version is the lower of the two; the bit rate the lower
of the two (14400 when the offer has none); rate management is the offer's (an offer without
it means ``transferredTCF``), and a value we do not do rejects the stream; fill-bit removal and
MMR/JBIG transcoding only if both ends do them (we do none); the error correction is parity FEC
only if the offer asks for it (and we accept FEC), "none" if the offer says so, else redundancy
(T.38 Annex D; SpanDSP's T.38 notes: redundancy is what every peer accepts).  ``T38FaxMaxBuffer``
and ``T38FaxMaxDatagram`` describe the *receiver* of the side that writes them: the answer
carries ours, the offer's limit what we send.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from ums.fax_t38.udptl import UdptlEncoder

__all__ = [
    "T38_FORMAT",
    "T38_MEDIA",
    "T38_PROTO",
    "RateManagement",
    "T38Capabilities",
    "T38Params",
    "T38SdpError",
    "T38Session",
    "UdpEc",
    "accept_t38_answer",
    "answer_t38",
    "is_t38_stream",
    "make_t38_offer",
    "parse_t38_attributes",
    "t38_attributes",
]

#: ``m=image <port> udptl t38`` (T.38 Annex D)
T38_MEDIA = "image"
T38_PROTO = "udptl"
T38_FORMAT = "t38"
#: the rate assumed when the offer gives none (V.17, the fastest G3 modem)
_DEFAULT_BIT_RATE = 14400


class T38SdpError(ValueError):
    """A T.38 SDP attribute with a value we cannot read."""


class RateManagement(StrEnum):
    """``T38FaxRateManagement``: TCF checked end to end, or by the gateway."""

    LOCAL_TCF = "localTCF"
    TRANSFERRED_TCF = "transferredTCF"


class UdpEc(StrEnum):
    """``T38FaxUdpEC``: UDPTL error correction."""

    REDUNDANCY = "t38UDPRedundancy"
    FEC = "t38UDPFEC"
    NONE = "t38UDPNoEC"


@dataclass(frozen=True)
class T38Params:
    """The T.38 attributes of one media section; ``None`` means "not given"."""

    version: int = 0
    max_bit_rate: int | None = None
    fill_bit_removal: bool = False
    transcoding_mmr: bool = False
    transcoding_jbig: bool = False
    rate_management: RateManagement | None = None
    max_buffer: int | None = None
    max_datagram: int | None = None
    max_ifp: int | None = None
    udp_ec: UdpEc | None = None
    #: ``T38FaxUdpECDepth:<min> [<max>]`` (later T.38 editions)
    ec_depth: tuple[int, int | None] | None = None
    #: ``T38FaxUdpFECMaxSpan`` (later T.38 editions)
    fec_max_span: int | None = None
    vendor_info: str | None = None


@dataclass(frozen=True)
class T38Capabilities:
    """What we can do, and our receive limits (put in our offer/answer)."""

    max_version: int = 3
    max_bit_rate: int = 14400
    rate_management: tuple[RateManagement, ...] = (RateManagement.TRANSFERRED_TCF,)
    fec: bool = True
    max_buffer: int = 2000
    max_datagram: int = 1400


@dataclass(frozen=True)
class T38Session:
    """The agreed T.38 session.

    ``version`` selects the IFP layout, ``ec`` what we send; ``remote_max_datagram`` /
    ``remote_max_buffer`` are the far end's receive limits (``None`` if it gave none).
    """

    version: int
    bit_rate: int
    rate_management: RateManagement
    ec: UdpEc
    remote_max_datagram: int | None = None
    remote_max_buffer: int | None = None
    remote_max_ifp: int | None = None
    fill_bit_removal: bool = False
    transcoding_mmr: bool = False
    transcoding_jbig: bool = False

    def encoder(self, *, depth: int = 3, fec_span: int = 3, fec_entries: int = 3) -> UdptlEncoder:
        """A UDPTL encoder with this session's error correction and datagram limit."""
        return UdptlEncoder(
            _EC_SCHEMES[self.ec],
            depth=depth,
            fec_span=fec_span,
            fec_entries=fec_entries,
            max_datagram=self.remote_max_datagram,
        )


_EC_SCHEMES: dict[UdpEc, Literal["redundancy", "fec", "none"]] = {
    UdpEc.REDUNDANCY: "redundancy",
    UdpEc.FEC: "fec",
    UdpEc.NONE: "none",
}


def is_t38_stream(media: str, proto: str, formats: Sequence[str]) -> bool:
    """True for ``m=image <port> udptl t38`` (case-insensitive)."""
    return (
        media.lower() == T38_MEDIA
        and proto.lower() == T38_PROTO
        and any(f.lower() == T38_FORMAT for f in formats)
    )


# --------------------------------------------------------------------------------- parsing
_NAMES = {
    "t38faxversion": "version",
    "t38maxbitrate": "max_bit_rate",
    "t38faxfillbitremoval": "fill_bit_removal",
    "t38faxtranscodingmmr": "transcoding_mmr",
    "t38faxtranscodingjbig": "transcoding_jbig",
    "t38faxratemanagement": "rate_management",
    "t38faxmaxbuffer": "max_buffer",
    "t38faxmaxdatagram": "max_datagram",
    "t38faxmaxifp": "max_ifp",
    "t38faxudpec": "udp_ec",
    "t38faxudpecdepth": "ec_depth",
    "t38faxudpfecmaxspan": "fec_max_span",
    "t38vendorinfo": "vendor_info",
}
_INTEGERS = {"version", "max_bit_rate", "max_buffer", "max_datagram", "max_ifp", "fec_max_span"}
_BOOLEANS = {"fill_bit_removal", "transcoding_mmr", "transcoding_jbig"}
_RATE_MANAGEMENT = {v.value.lower(): v for v in RateManagement}
_UDP_EC = {v.value.lower(): v for v in UdpEc}


def _integer(name: str, value: str | None) -> int:
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise T38SdpError(f"{name}: not a number: {value!r}")
    return int(text)


def _boolean(name: str, value: str | None) -> bool:
    if value is None:
        return True
    text = value.strip()
    if text in ("1", ""):
        return True
    if text == "0":
        return False
    raise T38SdpError(f"{name}: not a boolean: {value!r}")


def parse_t38_attributes(attributes: Iterable[tuple[str, str | None]]) -> T38Params:
    """Read the T.38 attributes among ``attributes`` (the first of each name counts)."""
    values: dict[str, object] = {}
    for name, value in attributes:
        key = _NAMES.get(name.strip().lower())
        if key is None or key in values:
            continue
        if key in _INTEGERS:
            values[key] = _integer(name, value)
        elif key in _BOOLEANS:
            values[key] = _boolean(name, value)
        elif key == "rate_management":
            rm = _RATE_MANAGEMENT.get((value or "").strip().lower())
            if rm is None:
                raise T38SdpError(f"{name}: unknown value {value!r}")
            values[key] = rm
        elif key == "udp_ec":
            ec = _UDP_EC.get((value or "").strip().lower())
            if ec is None:
                raise T38SdpError(f"{name}: unknown value {value!r}")
            values[key] = ec
        elif key == "ec_depth":
            parts = (value or "").split()
            if not 1 <= len(parts) <= 2:
                raise T38SdpError(f"{name}: bad value {value!r}")
            low = _integer(name, parts[0])
            high = _integer(name, parts[1]) if len(parts) == 2 else None
            values[key] = (low, high)
        else:
            values[key] = (value or "").strip()
    return T38Params(**values)  # type: ignore[arg-type]


def t38_attributes(params: T38Params) -> list[tuple[str, str | None]]:
    """The ``a=`` attributes for ``params``, in the usual order; false booleans are left out."""
    out: list[tuple[str, str | None]] = [("T38FaxVersion", str(params.version))]
    if params.max_bit_rate is not None:
        out.append(("T38MaxBitRate", str(params.max_bit_rate)))
    if params.fill_bit_removal:
        out.append(("T38FaxFillBitRemoval", None))
    if params.transcoding_mmr:
        out.append(("T38FaxTranscodingMMR", None))
    if params.transcoding_jbig:
        out.append(("T38FaxTranscodingJBIG", None))
    if params.rate_management is not None:
        out.append(("T38FaxRateManagement", params.rate_management.value))
    if params.max_buffer is not None:
        out.append(("T38FaxMaxBuffer", str(params.max_buffer)))
    if params.max_datagram is not None:
        out.append(("T38FaxMaxDatagram", str(params.max_datagram)))
    if params.max_ifp is not None:
        out.append(("T38FaxMaxIFP", str(params.max_ifp)))
    if params.udp_ec is not None:
        out.append(("T38FaxUdpEC", params.udp_ec.value))
    if params.ec_depth is not None:
        low, high = params.ec_depth
        out.append(("T38FaxUdpECDepth", f"{low}" if high is None else f"{low} {high}"))
    if params.fec_max_span is not None:
        out.append(("T38FaxUdpFECMaxSpan", str(params.fec_max_span)))
    if params.vendor_info is not None:
        out.append(("T38VendorInfo", params.vendor_info))
    return out


# ------------------------------------------------------------------------------ negotiation
def make_t38_offer(caps: T38Capabilities = T38Capabilities()) -> T38Params:
    """Our offer: highest version and rate, first rate management, redundancy, our limits."""
    return T38Params(
        version=caps.max_version,
        max_bit_rate=caps.max_bit_rate,
        rate_management=caps.rate_management[0],
        max_buffer=caps.max_buffer,
        max_datagram=caps.max_datagram,
        udp_ec=UdpEc.REDUNDANCY,
    )


def _ec_for(offered: UdpEc | None, caps: T38Capabilities) -> UdpEc:
    if offered is UdpEc.FEC and caps.fec:
        return UdpEc.FEC
    if offered is UdpEc.NONE:
        return UdpEc.NONE
    return UdpEc.REDUNDANCY


def answer_t38(
    offer: T38Params, caps: T38Capabilities = T38Capabilities()
) -> tuple[T38Params, T38Session] | None:
    """Answer a T.38 offer; ``None`` if we cannot (the stream gets port 0, or 488)."""
    rate_management = offer.rate_management or RateManagement.TRANSFERRED_TCF
    if rate_management not in caps.rate_management:
        return None
    version = min(offer.version, caps.max_version)
    bit_rate = min(offer.max_bit_rate or _DEFAULT_BIT_RATE, caps.max_bit_rate)
    ec = _ec_for(offer.udp_ec, caps)
    answer = T38Params(
        version=version,
        max_bit_rate=bit_rate,
        rate_management=rate_management,
        max_buffer=caps.max_buffer,
        max_datagram=caps.max_datagram,
        udp_ec=ec,
    )
    session = T38Session(
        version=version,
        bit_rate=bit_rate,
        rate_management=rate_management,
        ec=ec,
        remote_max_datagram=offer.max_datagram,
        remote_max_buffer=offer.max_buffer,
        remote_max_ifp=offer.max_ifp,
    )
    return answer, session


def accept_t38_answer(
    offer: T38Params, answer: T38Params, caps: T38Capabilities = T38Capabilities()
) -> T38Session | None:
    """Read the answer to our ``offer``; ``None`` if it asks for what we cannot do.

    The answer may lower the version and rate (a higher value is taken as ours); it may not
    pick a rate management we do not do, or FEC when we do not do FEC.
    """
    bit_rate = min(answer.max_bit_rate or offer.max_bit_rate or _DEFAULT_BIT_RATE, caps.max_bit_rate)
    rate_management = answer.rate_management or offer.rate_management or RateManagement.TRANSFERRED_TCF
    if rate_management not in caps.rate_management:
        return None
    if answer.udp_ec is UdpEc.FEC and not caps.fec:
        return None
    ec = answer.udp_ec or offer.udp_ec or UdpEc.REDUNDANCY
    return T38Session(
        version=min(answer.version, offer.version),
        bit_rate=bit_rate,
        rate_management=rate_management,
        ec=ec,
        remote_max_datagram=answer.max_datagram,
        remote_max_buffer=answer.max_buffer,
        remote_max_ifp=answer.max_ifp,
    )
