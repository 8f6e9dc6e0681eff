"""The work behind the pipeline tasks: attachment, e-mail, hand-over — without Celery.

What it does
------------
``ensure_encoded(ctx, record)`` writes the attachment in the mailbox's format
(``voice/<id>.mp3`` / ``.opus``; WAV is the recording itself),
``ensure_composed(ctx, record)`` writes the e-mail (``mail/<id>.eml``), both
into the spool and only when the file is not there yet.  ``send_mail(ctx, to,
data)`` hands a composed message to the smarthost, or, without one, to the
recipient's Maildir under ``<data_dir>/maildir``; ``send_admin_report`` tells
the admin about messages that could not be delivered.

How it works
------------
Every step is idempotent and keyed by the message id: files are written
atomically (:meth:`ums.store.spool.Spool.write_atomic`) and a step whose file
exists does nothing, so running a step again after a crash, or twice because
a message was queued twice, changes nothing.  The e-mail is built from the
record and the spool only (:func:`ums.mailgate.mime.compose_voicemail`); its
Message-ID is the record's, fixed when the message was stored, so every copy
of one message carries the same Message-ID.

A caller without a name in the record is looked up in the directory once more
(the directory may have learned the number since the call); the name is used
in the mail and not written back.

An attachment that cannot be encoded (PyAV missing, encoder error) falls back
to the WAV recording: the message must reach its owner in some form.

A received fax is stored as raw pages (:mod:`ums.store.fax_pages`);
``ensure_encoded`` renders them once into ``fax/<id>/fax.pdf`` and/or
``fax/<id>/fax.tif`` (TIFF Class F, G4) per the mailbox's ``fax_format``, and
``fax/<id>/page1.png``, the preview shown in the mail.  Every page keeps its
own resolution, so standard (204 x 98 dpi) and fine (204 x 196 dpi) pages both
come out at their physical size.  The writers are deterministic: rendering
again after a crash gives the same bytes.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from ums.log import kv
from ums.mailgate.maildir import deliver_maildir
from ums.mailgate.mime import (
    Attachment,
    attachment_filename,
    compose_admin_report,
    compose_fax,
    compose_sms,
    compose_voicemail,
)
from ums.mailgate.smtp_out import DeliveryError, deliver_smtp
from ums.pipeline.app import PipelineContext
from ums.render.audio import decode_audio, encode_audio
from ums.render.page import FaxPage, thumbnail_png
from ums.render.pdf import write_pdf
from ums.render.tiff import write_tiff
from ums.store.fax_pages import fax_dir, is_page_file, read_page
from ums.store.models import META_COMPANY, META_SWITCHBOARD, MessageRecord

__all__ = [
    "AUDIO_TYPES",
    "DOCUMENT_TYPES",
    "FAX_DOCUMENTS",
    "attachment_path",
    "ensure_composed",
    "ensure_encoded",
    "fax_document_paths",
    "fax_thumbnail_path",
    "load_fax_pages",
    "mail_path",
    "send_admin_report",
    "send_mail",
    "with_directory_name",
]

log = logging.getLogger("ums.pipeline")

#: attachment format -> (file extension, MIME type), as :func:`ums.render.audio.encode_audio` writes them
AUDIO_TYPES: dict[str, tuple[str, str]] = {
    "wav": ("wav", "audio/wav"),
    "mp3": ("mp3", "audio/mpeg"),
    "opus": ("opus", "audio/ogg"),
}
#: fax documents by extension (RFC 3778 application/pdf, RFC 3302 image/tiff)
DOCUMENT_TYPES: dict[str, str] = {
    ".pdf": "application/pdf",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


#: ``fax_format`` -> the documents rendered: (file extension, MIME type) each
FAX_DOCUMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "pdf": (("pdf", "application/pdf"),),
    "tiff": (("tif", "image/tiff"),),
    "both": (("pdf", "application/pdf"), ("tif", "image/tiff")),
}
#: width of the first-page preview in pixels
THUMBNAIL_WIDTH = 600


def mail_path(message_id: str) -> str:
    """Spool path of the composed e-mail."""
    return f"mail/{message_id}.eml"


def _attachment_format(ctx: PipelineContext, record: MessageRecord) -> str:
    mailbox = ctx.config.mailbox_for(record.mailbox)
    return mailbox.attachment if mailbox is not None else "wav"


def _recording(record: MessageRecord) -> str:
    if not record.files:
        raise FileNotFoundError(f"message {record.id} has no files")
    return record.files[0]


def attachment_path(ctx: PipelineContext, record: MessageRecord) -> str:
    """Spool path of the voicemail attachment in the mailbox's format (the WAV itself for wav)."""
    fmt = _attachment_format(ctx, record)
    if fmt == "wav":
        return _recording(record)
    return f"voice/{record.id}.{AUDIO_TYPES[fmt][0]}"


def _has_pages(record: MessageRecord) -> bool:
    return record.kind == "fax" and any(is_page_file(f) for f in record.files)


def fax_document_paths(ctx: PipelineContext, record: MessageRecord) -> list[tuple[str, str]]:
    """``(spool path, MIME type)`` of the documents of a received fax, in the mailbox's format."""
    mailbox = ctx.config.mailbox_for(record.mailbox)
    fmt = mailbox.fax_format if mailbox is not None else "pdf"
    return [(f"{fax_dir(record.id)}/fax.{ext}", mime) for ext, mime in FAX_DOCUMENTS[fmt]]


def fax_thumbnail_path(record: MessageRecord) -> str:
    return f"{fax_dir(record.id)}/page1.png"


def load_fax_pages(ctx: PipelineContext, record: MessageRecord) -> list[FaxPage]:
    """The stored pages of a fax, in page order, with their resolutions and bad-row counts."""
    pages = []
    for rel in record.files:
        if not is_page_file(rel):
            continue
        stored = read_page(ctx.spool.read(rel))
        info = stored.meta.get("info")
        bad = info.get("bad_rows") if isinstance(info, dict) else None
        pages.append(
            FaxPage(
                stored.pels,
                stored.xdpi,
                stored.ydpi,
                bad_rows=bad if isinstance(bad, int) and not isinstance(bad, bool) else None,
            )
        )
    if not pages:
        raise FileNotFoundError(f"fax {record.id} has no pages")
    return pages


def _ensure_fax_rendered(ctx: PipelineContext, record: MessageRecord) -> str:
    """Render the documents and the preview that are missing; "exists" or "written"."""
    wanted = [p for p, _ in fax_document_paths(ctx, record)] + [fax_thumbnail_path(record)]
    missing = [p for p in wanted if not ctx.spool.exists(p)]
    if not missing:
        return "exists"
    pages = load_fax_pages(ctx, record)
    for path in missing:
        if path.endswith(".pdf"):
            data = write_pdf(pages, title=f"Fax {record.id}")
        elif path.endswith(".tif"):
            data = write_tiff(pages, compression="g4")
        else:
            data = thumbnail_png(pages[0], width=THUMBNAIL_WIDTH)
        ctx.spool.write_atomic(path, data)
    return "written"


def ensure_encoded(ctx: PipelineContext, record: MessageRecord) -> str:
    """Make the attachment exist: the voicemail in the mailbox's format, the fax documents.

    Returns what happened: reuse, exists, written, fallback (voice only).
    """
    if _has_pages(record):
        return _ensure_fax_rendered(ctx, record)
    if record.kind != "voice":
        return "reuse"
    fmt = _attachment_format(ctx, record)
    target = attachment_path(ctx, record)
    if fmt == "wav":
        return "reuse"
    if ctx.spool.exists(target):
        return "exists"
    pcm = decode_audio(ctx.spool.read(_recording(record)))
    try:
        data, _, _ = encode_audio(pcm, fmt)  # type: ignore[arg-type]
    except Exception as exc:  # any encoder failure: send the WAV instead
        log.warning(kv("pipeline.encode_failed", id=record.id, format=fmt, reason=exc))
        return "fallback"
    ctx.spool.write_atomic(target, data)
    return "written"


def with_directory_name(ctx: PipelineContext, record: MessageRecord) -> MessageRecord:
    """The record with the caller's directory name filled in when it has none (for the mail only)."""
    if record.caller_name.strip() or record.meta.get(META_COMPANY) or not record.caller_number:
        return record
    found = ctx.directory.lookup(record.caller_number)
    if found is None:
        return record
    if found.is_company:
        meta = dict(record.meta)
        meta[META_COMPANY] = found.name
        meta[META_SWITCHBOARD] = found.number_matched
        return record.with_changes(meta=meta)
    return record.with_changes(caller_name=found.name)


def _build(ctx: PipelineContext, record: MessageRecord) -> bytes:
    rec = with_directory_name(ctx, record)
    if rec.kind == "voice":
        path = attachment_path(ctx, rec)
        if not ctx.spool.exists(path):  # the encoder failed: the recording itself
            path = _recording(rec)
        suffix = PurePosixPath(path).suffix.lstrip(".")
        ext, mime = next(((e, m) for e, m in AUDIO_TYPES.values() if e == suffix), ("wav", "audio/wav"))
        name = attachment_filename(rec, ext, ctx.compose)
        return compose_voicemail(rec, ctx.spool.read(path), name, mime, ctx.compose)
    if _has_pages(rec):
        docs = []
        for path, mime in fax_document_paths(ctx, rec):
            name = attachment_filename(rec, PurePosixPath(path).suffix.lstrip("."), ctx.compose)
            docs.append(Attachment(ctx.spool.read(path), name, mime))
        thumb = fax_thumbnail_path(rec)
        return compose_fax(
            rec,
            docs[0].data,
            docs[0].filename,
            docs[0].mime,
            ctx.compose,
            more=docs[1:],
            thumbnail=ctx.spool.read(thumb) if ctx.spool.exists(thumb) else None,
        )
    if rec.kind == "fax":  # a fax stored as a finished document (PDF or TIFF)
        path = _recording(rec)
        suffix = PurePosixPath(path).suffix.lower()
        mime = DOCUMENT_TYPES.get(suffix, "application/octet-stream")
        name = attachment_filename(rec, suffix.lstrip(".") or "bin", ctx.compose)
        return compose_fax(rec, ctx.spool.read(path), name, mime, ctx.compose)
    return compose_sms(rec, str(rec.meta.get("text", "")), ctx.compose)


def ensure_composed(ctx: PipelineContext, record: MessageRecord) -> tuple[bytes, bool]:
    """The e-mail of ``record``: read from the spool, or built and stored. ``(data, written)``."""
    path = mail_path(record.id)
    if ctx.spool.exists(path):
        return ctx.spool.read(path), False
    if record.kind in ("voice", "fax"):
        ensure_encoded(ctx, record)
    data = _build(ctx, record)
    ctx.spool.write_atomic(path, data)
    return data, True


def send_mail(ctx: PipelineContext, to: str, data: bytes) -> bool:
    """Hand ``data`` over for ``to``; True when a Maildir already held this Message-ID.

    Raises :class:`~ums.mailgate.smtp_out.DeliveryError` (``permanent`` or not); a Maildir that
    cannot be written is a temporary error.
    """
    if ctx.smtp is not None:
        refused = deliver_smtp(ctx.smtp, ctx.config.mail.sender, [to], data)
        if to in refused:  # cannot happen with one recipient (all refused raises), kept for safety
            code, text = refused[to]
            raise DeliveryError(500 <= code < 600, code, text)
        return False
    try:
        return deliver_maildir(ctx.maildir_root, to, data).duplicate
    except ValueError as exc:  # not a usable address for a Maildir
        raise DeliveryError(True, None, str(exc)) from exc
    except OSError as exc:
        raise DeliveryError(False, None, f"maildir: {exc}") from exc


def send_admin_report(ctx: PipelineContext, records: list[MessageRecord], reason: str) -> str:
    """Report undeliverable messages to ``[mail] admin`` (or the sender); returns how it went out.

    When the smarthost does not take the report either (it is usually the same outage that made
    the messages fail), the report is written to the admin's Maildir under the data directory and
    an error is logged: "maildir-fallback".  "lost" only if even that fails.
    """
    now = ctx.clock()
    data = compose_admin_report(records, ctx.compose, now, reason)
    to = ctx.config.mail.admin or ctx.config.mail.sender
    ids = ",".join(r.id for r in records)
    try:
        send_mail(ctx, to, data)
        log.info(kv("pipeline.report", to=to, via=ctx.via, ids=ids, reason=reason))
        return ctx.via
    except DeliveryError as exc:
        error = str(exc)
    if ctx.smtp is not None:
        try:
            deliver_maildir(ctx.maildir_root, to, data)
            log.error(kv("pipeline.report", to=to, via="maildir-fallback", ids=ids, smtp_error=error))
            return "maildir-fallback"
        except (OSError, ValueError) as exc:
            error = f"{error}; maildir: {exc}"
    log.error(kv("pipeline.report_lost", to=to, ids=ids, reason=error))
    return "lost"
