"""Local delivery into a Maildir, at most once per Message-ID.

What it does
------------
``deliver_maildir(root, owner, message)`` puts a composed message into
``<root>/<owner>/Maildir/new`` — the default when no smarthost is configured,
and what a local Dovecot serves over IMAP.  Delivering the same Message-ID a
second time (a retry after a crash between delivery and bookkeeping) finds the
first copy and does nothing.

How it works
------------
The Maildir protocol (D. J. Bernstein, "maildir(5)"): write the file into
``tmp/`` under a unique name, fsync it, then make it appear in ``new/`` in
one atomic step, and fsync ``new/``.  Readers never see a partial message.

The name in ``new/`` is derived from the Message-ID alone
(``ums-<sha256 prefix>``), and it is hard-linked from ``tmp/`` into ``new/``:
``link(2)`` fails when the name exists, so of two racing deliveries exactly
one wins.  Before that, ``new/`` and ``cur/`` are searched for the name (a
mail client moves a message to ``cur/`` and appends ``:2,<flags>``, keeping
the part before the colon).  A message without a Message-ID gets a random
name and no duplicate check.

Maildir files use the local line ending, so CRLF from the SMTP form of the
message becomes LF.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from ums.store.spool import fsync_dir

__all__ = ["MaildirDelivery", "deliver_maildir", "maildir_name", "maildir_path"]

_SUBDIRS = ("tmp", "new", "cur")


@dataclass(frozen=True)
class MaildirDelivery:
    path: Path
    #: True when the Message-ID was there already and nothing was written
    duplicate: bool


def maildir_path(root: str | Path, owner: str) -> Path:
    """``<root>/<owner>/Maildir``; ``owner`` must be a plain address, not a path."""
    if (
        not owner
        or "/" in owner
        or "\\" in owner
        or "\x00" in owner
        or owner.startswith(".")
        or "@" not in owner
    ):
        raise ValueError(f"not a usable mailbox owner: {owner!r}")
    return Path(root) / owner / "Maildir"


def maildir_name(message_id: str) -> str:
    """The file name (without flags) for a Message-ID: the same id always gives the same name."""
    key = message_id.strip()
    return "ums-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _message_id(message: bytes) -> str:
    headers = BytesHeaderParser(policy=compat32).parsebytes(message)
    value = headers.get("Message-ID")
    return str(value).strip() if value else ""


def _ensure_dirs(base: Path) -> None:
    base.parent.parent.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    for d in (base.parent, base, *(base / s for s in _SUBDIRS)):
        if not d.is_dir():
            try:
                d.mkdir()
            except FileExistsError:
                continue
            created.append(d)
    for d in created:
        fsync_dir(d.parent)


def _existing(base: Path, name: str) -> Path | None:
    candidate = base / "new" / name
    if candidate.exists():
        return candidate
    cur = base / "cur"
    with os.scandir(cur) as entries:
        for entry in entries:
            if entry.name == name or entry.name.startswith(name + ":"):
                return cur / entry.name
    return None


def deliver_maildir(root: str | Path, owner: str, message: bytes) -> MaildirDelivery:
    """Store ``message`` in the owner's Maildir unless its Message-ID was delivered before."""
    base = maildir_path(root, owner)
    _ensure_dirs(base)
    mid = _message_id(message)
    name = maildir_name(mid) if mid else f"ums-{secrets.token_hex(20)}"
    if mid:
        found = _existing(base, name)
        if found is not None:
            return MaildirDelivery(found, duplicate=True)

    data = message.replace(b"\r\n", b"\n")
    tmp = base / "tmp" / f"{name}.{os.getpid()}.{secrets.token_hex(6)}"
    final = base / "new" / name
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, final)
        except FileExistsError:
            return MaildirDelivery(final, duplicate=True)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return MaildirDelivery(final, duplicate=False)
