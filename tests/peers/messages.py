"""Messages a test server stored: the index rows and their spool audio.

What it does
------------
:func:`stored_messages` reads ``<data_dir>/index.sqlite`` with the project's own
:class:`~ums.store.index.MessageIndex` and returns each message with the path of
its spool file; :func:`wait_messages` polls until a number of messages is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.peers.audio import read_wav
from tests.peers.procs import wait_until
from ums.store.index import MessageIndex
from ums.store.models import MessageRecord

__all__ = ["StoredMessage", "stored_messages", "wait_messages"]


@dataclass(frozen=True)
class StoredMessage:
    record: MessageRecord
    spool: Path

    def audio(self) -> tuple[np.ndarray, int]:
        return read_wav(self.spool / self.record.files[0])


def stored_messages(data_dir: Path) -> list[StoredMessage]:
    path = data_dir / "index.sqlite"
    if not path.exists():
        return []
    with MessageIndex(path) as index:
        return [StoredMessage(rec, data_dir / "spool") for rec in index.list()]


def wait_messages(data_dir: Path, count: int = 1, timeout: float = 10.0) -> list[StoredMessage]:
    wait_until(lambda: len(stored_messages(data_dir)) >= count, timeout, what=f"{count} stored message(s)")
    return stored_messages(data_dir)
