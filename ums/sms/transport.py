"""What an SMS transport (SIP MESSAGE, SMPP) offers the SMS service, and what it hands back.

What it does
------------
The SMS service (:mod:`ums.sms.service`) does not know how a text travels.  It talks to one
:class:`SmsTransport` chosen in ``[sms] transport``:

* ``submit(OutgoingSms)`` sends one text (split into parts by the transport when it must) and
  returns a :class:`SubmitResult`: accepted (with the far end's message ids, to match delivery
  receipts later), or refused with a reason and whether a retry may help.
* Texts that arrive are handed to the ``on_incoming`` callback as :class:`IncomingSms`.  The
  callback returns only after the text is durable on disk; the transport acknowledges the far end
  (SIP 200, SMPP ``deliver_sm_resp``) after that and not before, so a crash loses nothing: the far
  end sends again.  A callback that raises makes the transport refuse the text with a temporary
  error.
* Delivery receipts are handed to ``on_receipt`` as :class:`DeliveryReceipt`, keyed by the
  message id that ``submit`` returned.

How it works
------------
These are plain data classes and a :class:`typing.Protocol`; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DeliveryReceipt",
    "IncomingSms",
    "OnIncoming",
    "OnReceipt",
    "OutgoingSms",
    "SmsTransport",
    "SubmitResult",
]


@dataclass(frozen=True)
class OutgoingSms:
    """One text to one number.  ``job_id`` is ours (unique, for logs and idempotence)."""

    job_id: str
    #: our number as the far end should see it (E.164 digits with "+", or a short code); may be empty
    sender: str
    #: the destination as the transport dials it (after the dial plan)
    to: str
    text: str
    #: ask for a delivery receipt
    receipt: bool = True


@dataclass(frozen=True)
class SubmitResult:
    """What the far end said to a submit."""

    accepted: bool
    #: the far end's ids, one per part (SMPP) or one for the whole text (SIP Call-ID); receipts use them
    message_ids: tuple[str, ...] = ()
    #: refused: True when sending the same text again cannot help (bad number, text refused)
    permanent: bool = False
    reason: str = ""
    #: parts sent (SMPP concatenation; SIP MESSAGEs of at most 1300 bytes each)
    parts: int = 1


@dataclass(frozen=True)
class IncomingSms:
    """A text that arrived for one of our numbers."""

    #: the sender's number as the far end wrote it (digits, maybe "+")
    sender: str
    #: our number it was sent to (a mailbox number, after the transport's own mapping)
    to: str
    text: str
    #: "sip" or "smpp"
    via: str
    #: the far end's reference (SIP Call-ID, SMPP message id or sequence); for logs and de-duplication
    ref: str = ""


@dataclass(frozen=True)
class DeliveryReceipt:
    """A receipt for a text we submitted (SMPP ``deliver_sm`` with esm_class receipt, or SIP IMDN)."""

    message_id: str
    delivered: bool
    #: the status word as received (DELIVRD, UNDELIV, EXPIRED, REJECTD, ...)
    status: str
    error: str = ""


OnIncoming = Callable[[IncomingSms], Awaitable[None]]
OnReceipt = Callable[[DeliveryReceipt], Awaitable[None]]


class SmsTransport(Protocol):
    """A way texts leave and arrive.  Implementations: ``ums.sms.sip``, ``ums.sms.smpp``."""

    #: "sip" or "smpp"
    name: str

    async def start(self, on_incoming: OnIncoming, on_receipt: OnReceipt) -> None:
        """Begin receiving (and, for SMPP, bind); returns at once, reconnecting in the background."""

    async def stop(self) -> None:
        """Stop receiving and close connections (SMPP: unbind)."""

    def ready(self) -> bool:
        """True when a submit can go out now (SMPP: bound); the service holds its queue otherwise."""
        ...

    async def submit(self, sms: OutgoingSms) -> SubmitResult:
        """Send one text; waits for the far end's answer (or a timeout: not accepted, temporary)."""
        ...
