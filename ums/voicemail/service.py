"""Voicemail recordings into the store: streamed to the spool, durable, then indexed.

What it does
------------
:class:`VoiceMessageSink` turns the audio a :class:`~ums.voicemail.machine.VoicemailSession`
hands out into a message: ``begin()`` allocates the message (id, Message-ID) and opens
``voice/<id>.wav`` in the spool; :class:`VoiceRecording` takes 16-bit PCM as it comes;
``finish()`` completes the WAV header, fsyncs and renames the file into place, then adds
the :class:`~ums.store.models.MessageRecord` to the index.  Only after that does the
caller announce the message (pipeline, message-waiting lamps): "recorded" means durable.

How it works
------------
The WAV header is written first with zero sizes and patched just before commit
(:meth:`ums.store.spool.DurableWriter.patch`).  ``finish`` and ``abort`` block on disk
(fsync), so the call layer runs them in a worker thread.
"""

from __future__ import annotations

import logging
import random
import struct
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from ums.log import kv
from ums.store.index import MessageIndex
from ums.store.models import MessageRecord, new_record
from ums.store.spool import DurableWriter, Spool

__all__ = ["VoiceMessageSink", "VoiceRecording", "wav_header"]

log = logging.getLogger("ums.voicemail")

RATE = 8000


def wav_header(data_bytes: int, rate: int = RATE) -> bytes:
    """RIFF/WAVE header for 16-bit mono PCM with ``data_bytes`` of samples (44 octets)."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


@dataclass
class VoiceRecording:
    """One message being recorded; ``write`` on the event loop, ``finish``/``abort`` in a thread."""

    record: MessageRecord
    relpath: str
    writer: DurableWriter
    index: MessageIndex
    samples: int = 0
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, pcm: npt.NDArray[np.int16]) -> None:
        if self.closed or pcm.size == 0:
            return
        self.writer.write(np.asarray(pcm, dtype="<i2").tobytes())
        self.samples += int(pcm.size)

    def finish(self, reason: str) -> MessageRecord:
        """Make the recording durable and index it; returns the stored record."""
        with self._lock:
            if self.closed:
                raise ValueError("recording already closed")
            self.closed = True
            data_bytes = self.samples * 2
            self.writer.patch(0, wav_header(data_bytes))
            self.writer.commit()
            meta = dict(self.record.meta)
            meta["end_reason"] = reason
            record = self.record.with_changes(duration=round(self.samples / RATE, 3), meta=meta)
            self.index.add(record)
        return record

    def abort(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self.writer.abort()


class VoiceMessageSink:
    def __init__(
        self, spool: Spool, index: MessageIndex, domain: str, rng: random.Random | None = None
    ) -> None:
        self.spool = spool
        self.index = index
        self.domain = domain
        self._rng = rng or random.Random()

    def begin(
        self,
        *,
        mailbox: str,
        owner: str,
        caller_number: str,
        caller_name: str,
        meta: dict[str, Any],
        now: datetime | None = None,
    ) -> VoiceRecording:
        record = new_record(
            now=now or datetime.now(UTC),
            rng=self._rng,
            domain=self.domain,
            mailbox=mailbox,
            owner=owner,
            kind="voice",
            caller_number=caller_number,
            caller_name=caller_name,
            meta=meta,
        )
        relpath = f"voice/{record.id}.wav"
        record = record.with_changes(files=(relpath,))
        writer = self.spool.open_writer(relpath)
        writer.write(wav_header(0))
        log.debug(kv("voicemail.begin", id=record.id, mailbox=mailbox))
        return VoiceRecording(record=record, relpath=relpath, writer=writer, index=self.index)
