"""ums.store: the durable spool and the message index.

``models`` (pure) describes a message, ``spool`` writes its files crash-safely,
``index`` keeps the records in SQLite, ``retry`` (pure) schedules delivery
retries.
"""

from ums.store.index import MessageIndex
from ums.store.models import MessageRecord, new_id, new_record, rfc5322_message_id
from ums.store.retry import RetryPolicy
from ums.store.spool import DurableWriter, Spool, SpoolPathError

__all__ = [
    "DurableWriter",
    "MessageIndex",
    "MessageRecord",
    "RetryPolicy",
    "Spool",
    "SpoolPathError",
    "new_id",
    "new_record",
    "rfc5322_message_id",
]
