"""Received fax pages in the spool, and the sink that stores a fax while it arrives.

What it does
------------
One :class:`FaxReceptionSink` per incoming fax call (from :meth:`FaxSinkFactory.open`) takes the
pages the T.30 receiver hands out and makes each one durable *before* the receiver confirms it
(T.30 §5.3.6: MCF is the receiver's acknowledgement of the page); ``finish(result)`` then indexes
the message (kind ``fax``) with the reception result in ``meta`` and announces it (pipeline, lamps).
A fax that failed or stopped half-way is still delivered with every confirmed page and the reason;
a call that stored no page leaves nothing behind.  ``abort()`` drops what was stored.

The pages are kept raw, as the receiver decoded them, so that the pipeline renders whatever the
mailbox wants (PDF, TIFF; :mod:`ums.pipeline.deliver`) from the original pels, and a renderer fixed
later can render them again.  :func:`read_page` reads a page file back.

Interface for the call layer (blocking: fsync; run it in a worker thread)::

    factory = FaxSinkFactory(spool, index, announce, domain="example.com")
    factory.recover()                      # at start-up, before any call: faxes a crash interrupted
    sink = factory.open(mailbox=mb, caller="+4989...", caller_name=None, called="200",
                        call_id="a84b4c76e66710", started_at=datetime.now(UTC))
    sink.store_page(1, pels, 204.0, 196.0, {"bad_rows": 0})   # durable on return: now send MCF
    record = sink.finish({"success": True, "reason": "", "remote_ident": "+49 89 1234560", ...})
    sink.abort()                           # after finish: does nothing

``announce(record)`` is called in the thread that runs ``finish``/``recover``, after the record is
in the index; the server passes a thread-safe hand-over to its event loop (lamps, then
``ums.pipeline.submit``).  An exception from it is logged and swallowed: the message is indexed
and pending, and the pipeline's sweep delivers it.

How it works
------------
Spool layout, per message id: ``fax/<id>/page-0001.pbm.gz`` … and, while the call lasts,
``fax/<id>/call.json``.  A page file is a binary PBM (netpbm "P4": rows of packed bits, most
significant bit first, 1 = black, which is ``numpy.packbits`` of the pels) compressed with gzip
(mtime 0, so the same page always gives the same bytes); a one-line comment in the PBM header
holds the resolution and the receiver's page information as JSON.  A fine A4 page is 494 KB raw and
typically 15-40 KB stored; ``zcat page-0001.pbm.gz | pnmtopng`` shows it.

``call.json`` is written (durably) with the first page and describes the call (mailbox, owner,
caller, id, Message-ID).  ``finish`` adds the record to the index, then removes it.  A crash in
between leaves confirmed pages with their ``call.json``: :meth:`FaxSinkFactory.recover` indexes
those as an incomplete fax (reason ``interrupted``) so that no confirmed page is lost.

Only ``config`` and ``store`` are imported (the import arrows): the page format is numpy and gzip.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from ums.config import Mailbox
from ums.log import kv
from ums.store.index import MessageIndex
from ums.store.models import META_CSID, MessageRecord, new_record
from ums.store.spool import Spool, SpoolPathError

__all__ = [
    "META_CALLED",
    "META_CALL_ID",
    "META_FAX",
    "META_FAX_PAGES",
    "PAGE_SUFFIX",
    "RESULT_KEYS",
    "FaxReceptionSink",
    "FaxSinkFactory",
    "StoredPage",
    "encode_page",
    "fax_dir",
    "is_page_file",
    "page_path",
    "read_page",
]

log = logging.getLogger("ums.store.fax")

#: ``meta`` keys of a fax record (besides :data:`~ums.store.models.META_CSID`)
META_FAX = "fax"  # the reception result: the RESULT_KEYS the receiver reported
META_FAX_PAGES = "fax_pages"  # one dict per stored page: page, file, width, rows, xdpi, ydpi, info
META_CALL_ID = "call_id"
META_CALLED = "called"

#: what ``finish(result)`` reads from the receiver's result
RESULT_KEYS = (
    "success",
    "reason",
    "pages",
    "remote_ident",
    "rate",
    "modem",
    "ecm",
    "resolution",
    "compression",
    "bad_rows",
    "duration",
    "transport",
)
PAGE_SUFFIX = ".pbm.gz"
_MANIFEST = "call.json"
_PBM_MAGIC = b"P4"
_COMMENT_TAG = "ums-fax "
_PAGE_RE = re.compile(r"^page-(\d{4,})\.pbm\.gz$")
#: reason written for a fax whose call ended with the server (found by ``recover``)
INTERRUPTED = "interrupted"


def fax_dir(message_id: str) -> str:
    """Spool folder of one fax message."""
    return f"fax/{message_id}"


def page_path(message_id: str, page_no: int) -> str:
    """Spool path of one received page."""
    return f"{fax_dir(message_id)}/page-{page_no:04d}{PAGE_SUFFIX}"


def is_page_file(relpath: str) -> bool:
    return relpath.endswith(PAGE_SUFFIX)


def _jsonable(value: object) -> Any:
    """``value`` as plain JSON types (numpy scalars unwrapped, anything else as its text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


@dataclass(frozen=True)
class StoredPage:
    """A page read back from the spool: pels (1 = black), resolution, and what was stored with it."""

    pels: npt.NDArray[np.uint8]
    xdpi: float
    ydpi: float
    meta: dict[str, Any]


def encode_page(pels: npt.ArrayLike, xdpi: float, ydpi: float, meta: Mapping[str, object]) -> bytes:
    """A page file: gzip of a P4 PBM whose header comment carries the resolution and ``meta``."""
    arr = np.asarray(pels)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"a page needs at least one row and one column, got shape {arr.shape}")
    if not (xdpi > 0 and ydpi > 0):
        raise ValueError(f"resolution must be positive, got {xdpi} x {ydpi}")
    rows, width = arr.shape
    note = json.dumps(
        {"xdpi": float(xdpi), "ydpi": float(ydpi), **_jsonable(dict(meta))}, sort_keys=True, ensure_ascii=True
    )
    header = f"P4\n# {_COMMENT_TAG}{note}\n{width} {rows}\n".encode("ascii")
    raster = np.packbits(arr != 0, axis=1).tobytes()
    return gzip.compress(header + raster, compresslevel=6, mtime=0)


def read_page(data: bytes) -> StoredPage:
    """The page in a file written by :func:`encode_page` (any P4 PBM, gzipped or not, is read)."""
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    if raw[:2] != _PBM_MAGIC:
        raise ValueError("not a P4 PBM page")
    pos = 2
    numbers: list[int] = []
    meta: dict[str, Any] = {}
    while len(numbers) < 2:
        while pos < len(raw) and raw[pos : pos + 1].isspace():
            pos += 1
        if raw[pos : pos + 1] == b"#":
            end = raw.find(b"\n", pos)
            if end < 0:
                raise ValueError("truncated PBM header")
            comment = raw[pos + 1 : end].decode("ascii", "replace").strip()
            if comment.startswith(_COMMENT_TAG):
                meta = json.loads(comment[len(_COMMENT_TAG) :])
            pos = end + 1
            continue
        start = pos
        while pos < len(raw) and raw[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise ValueError("bad PBM header")
        numbers.append(int(raw[start:pos]))
    pos += 1  # the single whitespace character before the raster
    width, rows = numbers
    stride = (width + 7) // 8
    if width < 1 or rows < 1 or len(raw) - pos < stride * rows:
        raise ValueError(f"PBM raster too short for {width} x {rows}")
    packed = np.frombuffer(raw, dtype=np.uint8, count=stride * rows, offset=pos).reshape(rows, stride)
    pels = np.unpackbits(packed, axis=1, count=width)
    xdpi = float(meta.pop("xdpi", 204.0))
    ydpi = float(meta.pop("ydpi", 196.0))
    return StoredPage(pels=pels, xdpi=xdpi, ydpi=ydpi, meta=meta)


def _announce_safely(announce: Callable[[MessageRecord], object], record: MessageRecord) -> None:
    try:
        announce(record)
    except Exception as exc:  # the record is indexed and pending: the sweep delivers it
        log.error(kv("fax.announce_failed", id=record.id, reason=f"{type(exc).__name__}: {exc}"))


class FaxReceptionSink:
    """One incoming fax: pages made durable as they arrive, then one indexed message.

    ``store_page``, ``finish`` and ``abort`` block on disk (fsync): call them from a worker thread.
    """

    def __init__(
        self,
        spool: Spool,
        index: MessageIndex,
        announce: Callable[[MessageRecord], object],
        domain: str,
        mailbox: Mailbox,
        caller: str,
        caller_name: str | None,
        called: str,
        call_id: str,
        started_at: datetime,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.spool = spool
        self.index = index
        self.mailbox = mailbox
        self._announce = announce
        self._lock = threading.Lock()
        self.record: MessageRecord = new_record(
            now=started_at,
            rng=rng or random.Random(),
            domain=domain,
            mailbox=mailbox.number,
            owner=mailbox.owner,
            kind="fax",
            caller_number=caller,
            caller_name=caller_name or "",
            meta={META_CALL_ID: call_id, META_CALLED: called},
        )
        #: page number -> the page's entry in ``meta["fax_pages"]``
        self.pages: dict[int, dict[str, Any]] = {}
        self.closed = False
        self._manifest_written = False

    @property
    def id(self) -> str:
        return self.record.id

    def _write_manifest(self) -> None:
        r = self.record
        doc = {
            "id": r.id,
            "message_id": r.message_id,
            "mailbox": r.mailbox,
            "owner": r.owner,
            "caller_number": r.caller_number,
            "caller_name": r.caller_name,
            "received_at": r.received_at.isoformat(),
            "meta": r.meta,
        }
        self.spool.write_atomic(f"{fax_dir(r.id)}/{_MANIFEST}", json.dumps(doc, sort_keys=True).encode())
        self._manifest_written = True

    def store_page(
        self, page_no: int, pels: np.ndarray, xdpi: float, ydpi: float, info: dict[str, object]
    ) -> None:
        """Store one received page (``H x W`` uint8, 1 = black); durable (fsynced) when it returns.

        A page number stored again replaces the earlier page.
        """
        if page_no < 0:
            raise ValueError(f"page number must be >= 0, got {page_no}")
        arr = np.asarray(pels)
        with self._lock:
            if self.closed:
                raise ValueError("store_page after finish/abort")
            rel = page_path(self.id, page_no)
            entry_info = _jsonable(dict(info))
            data = encode_page(arr, xdpi, ydpi, {"page": page_no, "info": entry_info})
            if not self._manifest_written:
                self._write_manifest()
            self.spool.write_atomic(rel, data)
            self.pages[page_no] = {
                "page": page_no,
                "file": rel,
                "width": int(arr.shape[1]),
                "rows": int(arr.shape[0]),
                "xdpi": float(xdpi),
                "ydpi": float(ydpi),
                "info": entry_info,
            }
        log.debug(kv("fax.page", id=self.id, page=page_no, rows=arr.shape[0], bytes=len(data)))

    def finish(self, result: dict[str, object]) -> MessageRecord | None:
        """Index the fax with ``result`` (see :data:`RESULT_KEYS`) and announce it.

        At least one page: the message, also for a failed or partial reception (the reason goes
        with it).  No page: nothing is stored, None.
        """
        with self._lock:
            if self.closed:
                raise ValueError("fax already finished or aborted")
            self.closed = True
            outcome = {k: _jsonable(result.get(k)) for k in RESULT_KEYS if k in result}
            outcome.update({str(k): _jsonable(v) for k, v in result.items() if k not in outcome})
            if not self.pages:
                log.info(
                    kv(
                        "fax.discarded",
                        call_id=self.record.meta.get(META_CALL_ID),
                        mailbox=self.record.mailbox,
                        caller=self.record.caller_number or "unknown",
                        reason=outcome.get("reason") or "no pages",
                    )
                )
                return None
            record = self._record(outcome)
            self.index.add(record)
            self._drop_manifest()
        log.info(
            kv(
                "fax.received",
                id=record.id,
                mailbox=record.mailbox,
                pages=record.pages,
                success=int(bool(outcome.get("success"))),
                reason=outcome.get("reason") or None,
            )
        )
        _announce_safely(self._announce, record)
        return record

    def _record(self, outcome: dict[str, Any]) -> MessageRecord:
        entries = [self.pages[n] for n in sorted(self.pages)]
        meta = dict(self.record.meta)
        meta[META_FAX] = outcome
        meta[META_FAX_PAGES] = entries
        csid = str(outcome.get("remote_ident") or "").strip()
        if csid:
            meta[META_CSID] = csid
        duration = outcome.get("duration")
        return self.record.with_changes(
            pages=len(entries),
            duration=float(duration) if isinstance(duration, int | float) else None,
            files=tuple(e["file"] for e in entries),
            meta=meta,
        )

    def _drop_manifest(self) -> None:
        if self._manifest_written:
            self.spool.remove(f"{fax_dir(self.id)}/{_MANIFEST}")

    def abort(self) -> None:
        """Drop every stored page (the call produced no message); nothing after ``finish``."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for entry in self.pages.values():
                self.spool.remove(entry["file"])
            self._drop_manifest()
            folder = self.spool.path(fax_dir(self.id))
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            dropped = len(self.pages)
        if dropped:
            log.warning(kv("fax.aborted", id=self.id, pages_dropped=dropped))


class FaxSinkFactory:
    """Makes the :class:`FaxReceptionSink` of each fax call; the server builds one."""

    def __init__(
        self,
        spool: Spool,
        index: MessageIndex,
        announce: Callable[[MessageRecord], object],
        *,
        domain: str,
        rng: random.Random | None = None,
    ) -> None:
        self.spool = spool
        self.index = index
        self.announce = announce
        self.domain = domain
        self._rng = rng or random.Random()

    def open(
        self,
        *,
        mailbox: Mailbox,
        caller: str,
        caller_name: str | None,
        called: str,
        call_id: str,
        started_at: datetime,
    ) -> FaxReceptionSink:
        """The sink of one incoming fax call (nothing is written before the first page)."""
        return FaxReceptionSink(
            self.spool,
            self.index,
            self.announce,
            self.domain,
            mailbox,
            caller,
            caller_name,
            called,
            call_id,
            started_at,
            rng=self._rng,
        )

    def recover(self) -> list[MessageRecord]:
        """Index the faxes a crash interrupted (pages and ``call.json`` without a record).

        Call it once at start-up, before any fax call: a sink open in this process would look the
        same.  Returns the records added (each also announced).
        """
        found: list[MessageRecord] = []
        base = self.spool.path("fax")
        if not base.is_dir():
            return found
        for manifest in sorted(base.glob(f"*/{_MANIFEST}")):
            folder = manifest.parent.name
            rel_manifest = f"fax/{folder}/{_MANIFEST}"
            try:
                doc = json.loads(manifest.read_text(encoding="utf-8"))
                record = self._recovered(doc, folder)
            except (OSError, ValueError, KeyError, TypeError, SpoolPathError) as exc:
                log.error(kv("fax.recover_failed", folder=folder, reason=f"{type(exc).__name__}: {exc}"))
                continue
            if record is None:  # indexed already, or no page: only the manifest is left
                self.spool.remove(rel_manifest)
                continue
            self.index.add(record)
            self.spool.remove(rel_manifest)
            log.warning(kv("fax.recovered", id=record.id, mailbox=record.mailbox, pages=record.pages))
            _announce_safely(self.announce, record)
            found.append(record)
        return found

    def _recovered(self, doc: dict[str, Any], folder: str) -> MessageRecord | None:
        ident = str(doc["id"])
        if ident != folder or self.index.get(ident) is not None:
            return None
        entries: list[dict[str, Any]] = []
        for path in sorted(self.spool.path(fax_dir(ident)).iterdir()):
            m = _PAGE_RE.match(path.name)
            if m is None:
                continue
            rel = f"{fax_dir(ident)}/{path.name}"
            page = read_page(path.read_bytes())
            entries.append(
                {
                    "page": int(m.group(1)),
                    "file": rel,
                    "width": int(page.pels.shape[1]),
                    "rows": int(page.pels.shape[0]),
                    "xdpi": page.xdpi,
                    "ydpi": page.ydpi,
                    "info": page.meta.get("info", {}),
                }
            )
        if not entries:
            return None
        entries.sort(key=lambda e: int(e["page"]))
        meta = dict(doc.get("meta") or {})
        meta[META_FAX] = {"success": False, "reason": INTERRUPTED, "pages": len(entries)}
        meta[META_FAX_PAGES] = entries
        received = datetime.fromisoformat(str(doc["received_at"]))
        return MessageRecord(
            id=ident,
            mailbox=str(doc["mailbox"]),
            owner=str(doc["owner"]),
            kind="fax",
            received_at=received,
            message_id=str(doc["message_id"]),
            caller_number=str(doc.get("caller_number", "")),
            caller_name=str(doc.get("caller_name", "")),
            pages=len(entries),
            next_attempt_at=received,
            files=tuple(e["file"] for e in entries),
            meta=meta,
        )
