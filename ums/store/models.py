"""The message record: one voicemail, fax or SMS and where its delivery stands.

What it does
------------
:class:`MessageRecord` is the frozen description of a stored message that the
index keeps and the pipeline passes around: who it is for, who sent it, what
the spool holds for it, whether the owner has read it and how far e-mail
delivery got.  :func:`new_id` makes the message id and :func:`rfc5322_message_id`
the e-mail Message-ID derived from it.

How it works
------------
The id is 32 hex digits: a 48-bit count of milliseconds since the Unix epoch
followed by 80 random bits.  Ids therefore sort by creation time (as text and
as numbers) and two ids made in the same millisecond still differ.  The
Message-ID is ``<id@domain>`` (RFC 5322 §3.6.4 ``msg-id = "<" id-left "@"
id-right ">"``): it depends only on the id, so composing the mail again after a
crash gives the same Message-ID and the receiving side can recognise the copy.

Pure: the caller passes the time and the random generator.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "DELIVERY_STATES",
    "KINDS",
    "META_COMPANY",
    "META_CSID",
    "META_SWITCHBOARD",
    "STATES",
    "Delivery",
    "Kind",
    "MessageRecord",
    "State",
    "id_time",
    "new_id",
    "new_record",
    "rfc5322_message_id",
]

Kind = Literal["voice", "fax", "sms"]
State = Literal["new", "read"]
Delivery = Literal["pending", "delivered", "failed"]

KINDS: tuple[Kind, ...] = ("voice", "fax", "sms")
STATES: tuple[State, ...] = ("new", "read")
DELIVERY_STATES: tuple[Delivery, ...] = ("pending", "delivered", "failed")

#: ``meta`` keys with a meaning for the e-mail text.
META_COMPANY = "company"  # directory name found by the company (switchboard) search
META_SWITCHBOARD = "switchboard"  # the switchboard number that matched
META_CSID = "csid"  # fax: the remote station identification (T.30 CSI/TSI)

#: 48 bits of milliseconds last until the year 10889.
_TIME_BITS = 48
_RANDOM_BITS = 80
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: RFC 5322 §3.2.3 atext without the characters we never put in a domain.
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def new_id(now: datetime, rng: random.Random) -> str:
    """A sortable unique message id: 48-bit ms timestamp + 80 random bits, 32 hex digits."""
    ms = int(now.timestamp() * 1000)
    if not 0 <= ms < 1 << _TIME_BITS:
        raise ValueError(f"time out of range for a message id: {now!r}")
    return f"{(ms << _RANDOM_BITS) | rng.getrandbits(_RANDOM_BITS):032x}"


def id_time(message_id: str) -> datetime:
    """The creation time encoded in an id from :func:`new_id` (UTC, millisecond precision)."""
    if not _ID_RE.match(message_id):
        raise ValueError(f"not a message id: {message_id!r}")
    ms = int(message_id, 16) >> _RANDOM_BITS
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def rfc5322_message_id(message_id: str, domain: str) -> str:
    """``<id@domain>``: the same id and domain always give the same Message-ID."""
    if not message_id or not all(c.isalnum() or c in "-._" for c in message_id):
        raise ValueError(f"not usable as id-left: {message_id!r}")
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"not usable as id-right: {domain!r}")
    return f"<{message_id}@{domain}>"


@dataclass(frozen=True)
class MessageRecord:
    """One stored message. Times are timezone-aware UTC datetimes."""

    id: str
    mailbox: str
    owner: str
    kind: Kind
    received_at: datetime
    message_id: str
    caller_number: str = ""
    caller_name: str = ""
    #: seconds of audio (voice)
    duration: float | None = None
    #: pages received (fax)
    pages: int | None = None
    state: State = "new"
    delivery: Delivery = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str = ""
    #: spool-relative paths of the files that belong to the message
    files: tuple[str, ...] = ()
    #: JSON-able extras (``META_*`` keys, SMS text, call id, ...)
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {self.state!r}")
        if self.delivery not in DELIVERY_STATES:
            raise ValueError(f"delivery must be one of {DELIVERY_STATES}, got {self.delivery!r}")
        for name in ("received_at", "next_attempt_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")

    def with_changes(self, **changes: Any) -> MessageRecord:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)


def new_record(
    *,
    now: datetime,
    rng: random.Random,
    domain: str,
    mailbox: str,
    owner: str,
    kind: Kind,
    caller_number: str = "",
    caller_name: str = "",
    duration: float | None = None,
    pages: int | None = None,
    files: tuple[str, ...] = (),
    meta: dict[str, Any] | None = None,
) -> MessageRecord:
    """A fresh record: new id, its Message-ID, state new, delivery pending and due at ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    ident = new_id(now, rng)
    received = now.astimezone(UTC)
    return MessageRecord(
        id=ident,
        mailbox=mailbox,
        owner=owner,
        kind=kind,
        received_at=received,
        message_id=rfc5322_message_id(ident, domain),
        caller_number=caller_number,
        caller_name=caller_name,
        duration=duration,
        pages=pages,
        next_attempt_at=received,
        files=files,
        meta=dict(meta or {}),
    )
