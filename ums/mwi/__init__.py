"""Message waiting indication (RFC 3842 message-summary over RFC 6665 SUBSCRIBE/NOTIFY).

What it does
------------
:mod:`ums.mwi.summary` builds and parses application/simple-message-summary bodies,
:mod:`ums.mwi.subscriptions` is the notifier for subscriptions from phones, and
:mod:`ums.mwi.notifier` sends unsolicited NOTIFYs to configured URIs.

How it works
------------
All three are sans-I/O: they take the UA's ``RequestReceived`` / ``ResponseReceived``
/ ``RequestFailed`` events and the time, and act through a :class:`SipPort` (the
:class:`ums.sip.ua.UserAgent` itself).  ``service.py`` wires them to the asyncio shell.
"""

from ums.mwi.notifier import NotifyTarget, UnsolicitedNotifier
from ums.mwi.subscriptions import MailboxState, SipPort, SubscriptionManager
from ums.mwi.summary import CONTENT_TYPE, EVENT_PACKAGE, MessageCounts, MessageSummary, SummaryError

__all__ = [
    "CONTENT_TYPE",
    "EVENT_PACKAGE",
    "MailboxState",
    "MessageCounts",
    "MessageSummary",
    "NotifyTarget",
    "SipPort",
    "SubscriptionManager",
    "SummaryError",
    "UnsolicitedNotifier",
]
