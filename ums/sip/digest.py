"""HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760).

What it does
------------
Client side: :meth:`Challenge.parse` reads a ``WWW-Authenticate`` / ``Proxy-Authenticate``
value, :func:`pick_challenge` chooses the best one of several (SHA-256 before MD5; unknown
schemes and algorithms such as AKA are skipped) and :func:`build_authorization` writes the
``Authorization`` / ``Proxy-Authorization`` value.  Server side (tests, a future registrar):
:func:`parse_credentials` and :func:`verify_authorization`.

How it works
------------
RFC 7616 §3.4.1-§3.4.3 with H = MD5 or SHA-256::

    A1       = username ":" realm ":" password
    A1 (-sess) = H(username ":" realm ":" password) ":" nonce ":" cnonce
    A2       = method ":" uri                      (qop=auth or no qop)
    A2       = method ":" uri ":" H(body)          (qop=auth-int)
    response = H(H(A1) ":" nonce ":" nc ":" cnonce ":" qop ":" H(A2))
    response = H(H(A1) ":" nonce ":" H(A2))       (no qop: the RFC 2069 form)

All strings are hashed as UTF-8.  The ``algorithm`` token is echoed exactly as the server wrote
it; ``opaque`` is echoed; ``nc`` is written as 8 lower-case hex digits (RFC 7616 §3.4).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from ums.sip.message import SipParseError

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Challenge",
    "Credentials",
    "build_authorization",
    "parse_auth_params",
    "parse_credentials",
    "pick_challenge",
    "verify_authorization",
]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Hash functions by upper-cased algorithm token (RFC 7616 §6.1 registry, minus SHA-512-256),
#: with the preference used by :func:`pick_challenge` (higher wins; RFC 7616 §3.7: "the client
#: SHOULD use the first challenge it supports" among those ordered by preference).
SUPPORTED_ALGORITHMS: dict[str, tuple[Callable[[bytes], str], int]] = {
    "MD5": (_md5, 1),
    "MD5-SESS": (_md5, 1),
    "SHA-256": (_sha256, 2),
    "SHA-256-SESS": (_sha256, 2),
}

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# auth-param = token "=" ( token / quoted-string ), separated by commas with LWS (RFC 7235 §2.1).
# Unquoted values are also read up to the next comma, which tolerates "uri=sip:a@b" from old UAs.
_PARAM_RE = re.compile(
    r"[ \t]*(" + _TOKEN + r")[ \t]*=[ \t]*(?:\"((?:[^\"\\]|\\.)*)\"|([^\",]*?))[ \t]*(?:,|$)", re.DOTALL
)
_SCHEME_RE = re.compile(r"[ \t]*(" + _TOKEN + r")(?:[ \t]+|$)")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def parse_auth_params(header_value: str) -> tuple[str, dict[str, str]]:
    """``Scheme name=value, name="quoted, value"`` -> (scheme, {lower-case name: value}).

    Quoted values are unescaped; names are case-insensitive (stored lower-case).  Raises
    :class:`SipParseError` when the text does not follow the grammar.
    """
    m = _SCHEME_RE.match(header_value)
    if m is None:
        raise SipParseError(f"bad auth header: {header_value[:60]!r}")
    scheme = m.group(1)
    pos = m.end()
    params: dict[str, str] = {}
    text = header_value.rstrip(" \t")
    while pos < len(text):
        pm = _PARAM_RE.match(text, pos)
        if pm is None or pm.end() == pos:
            raise SipParseError(f"bad auth parameter near {text[pos : pos + 40]!r}")
        name, quoted, plain = pm.groups()
        value = _UNESCAPE_RE.sub(r"\1", quoted) if quoted is not None else plain
        params.setdefault(name.lower(), value)
        pos = pm.end()
    return scheme, params


@dataclass(frozen=True)
class Challenge:
    """A Digest challenge from ``WWW-Authenticate`` / ``Proxy-Authenticate``."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, header_value: str) -> Challenge:
        """Parse ``Digest realm="..", nonce="..", ...``; raises :class:`SipParseError`."""
        scheme, params = parse_auth_params(header_value)
        if scheme.lower() != "digest":
            raise SipParseError(f"not a Digest challenge: {scheme!r}")
        if "realm" not in params or "nonce" not in params:
            raise SipParseError("Digest challenge without realm or nonce")
        qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=params.get("algorithm") or "MD5",
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
        )

    @property
    def supported(self) -> bool:
        """Whether :func:`build_authorization` can answer this challenge."""
        if self.algorithm.upper() not in SUPPORTED_ALGORITHMS:
            return False
        return not self.qop or any(q.lower() in ("auth", "auth-int") for q in self.qop)


def pick_challenge(values: list[str]) -> Challenge | None:
    """The challenge to answer among several header values: SHA-256 before MD5, first wins on ties.

    Values that do not parse, other schemes and unsupported algorithms (AKAv1-MD5 ...) are skipped.
    """
    best: Challenge | None = None
    best_rank = 0
    for value in values:
        try:
            ch = Challenge.parse(value)
        except SipParseError:
            continue
        if not ch.supported:
            continue
        rank = SUPPORTED_ALGORITHMS[ch.algorithm.upper()][1]
        if rank > best_rank:
            best, best_rank = ch, rank
    return best


def _choose_qop(offered: tuple[str, ...]) -> str | None:
    lowered = [q.lower() for q in offered]
    if not lowered:
        return None
    if "auth" in lowered:
        return "auth"
    if "auth-int" in lowered:
        return "auth-int"
    raise ValueError(f"no supported qop in {offered!r}")


def _response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str,
    cnonce: str,
    body: bytes,
) -> str:
    entry = SUPPORTED_ALGORITHMS.get(algorithm.upper())
    if entry is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    h = entry[0]
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    if qop is not None and qop.lower() == "auth-int":
        ha2 = h(f"{method}:{uri}:".encode() + h(body).encode())
    else:
        ha2 = h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_authorization(
    ch: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int,
    body: bytes = b"",
) -> str:
    """The ``Authorization`` / ``Proxy-Authorization`` value answering ``ch``.

    ``qop=auth`` is used when offered, else ``auth-int``; with no qop in the challenge the
    RFC 2069 form (no ``qop``/``nc``/``cnonce``) is written.  Raises ``ValueError`` for a
    challenge that :attr:`Challenge.supported` rejects.
    """
    if not 0 < nc < 2**32:
        raise ValueError("nc must fit in 8 hex digits")
    qop = _choose_qop(ch.qop)
    nc_text = f"{nc:08x}"
    response = _response(
        algorithm=ch.algorithm,
        username=username,
        realm=ch.realm,
        password=password,
        nonce=ch.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    parts = [
        f"username={_q(username)}",
        f"realm={_q(ch.realm)}",
        f"nonce={_q(ch.nonce)}",
        f"uri={_q(uri)}",
        f"response={_q(response)}",
        f"algorithm={ch.algorithm}",
    ]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_q(cnonce)}"]
    elif ch.algorithm.upper().endswith("-SESS"):
        parts.append(f"cnonce={_q(cnonce)}")
    if ch.opaque is not None:
        parts.append(f"opaque={_q(ch.opaque)}")
    return "Digest " + ", ".join(parts)


@dataclass(frozen=True)
class Credentials:
    """The parameters of an ``Authorization`` value (server side)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_credentials(header_value: str) -> Credentials:
    """Parse ``Digest username="..", ...``; raises :class:`SipParseError`."""
    scheme, p = parse_auth_params(header_value)
    if scheme.lower() != "digest":
        raise SipParseError(f"not Digest credentials: {scheme!r}")
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise SipParseError(f"Digest credentials without {', '.join(missing)}")
    return Credentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"],
        algorithm=p.get("algorithm") or "MD5",
        qop=p.get("qop"),
        nc=p.get("nc"),
        cnonce=p.get("cnonce"),
        opaque=p.get("opaque"),
    )


def verify_authorization(
    header_value: str, *, method: str, password: str, realm: str, body: bytes = b""
) -> bool:
    """Whether ``header_value`` carries a correct response for ``password`` in ``realm``.

    Only the digest arithmetic is checked; nonce freshness, ``nc`` replay and the
    username-to-password lookup are the caller's job (use :func:`parse_credentials`).
    """
    try:
        cred = parse_credentials(header_value)
    except SipParseError:
        return False
    if cred.realm != realm or cred.algorithm.upper() not in SUPPORTED_ALGORITHMS:
        return False
    if cred.qop is not None:
        if cred.qop.lower() not in ("auth", "auth-int") or cred.nc is None or cred.cnonce is None:
            return False
        if not re.fullmatch(r"[0-9A-Fa-f]{8}", cred.nc):
            return False
    if cred.algorithm.upper().endswith("-SESS") and cred.cnonce is None:
        return False
    expected = _response(
        algorithm=cred.algorithm,
        username=cred.username,
        realm=realm,
        password=password,
        nonce=cred.nonce,
        method=method,
        uri=cred.uri,
        qop=cred.qop,
        nc=cred.nc or "",
        cnonce=cred.cnonce or "",
        body=body,
    )
    return hmac.compare_digest(expected.encode(), cred.response.lower().encode())
