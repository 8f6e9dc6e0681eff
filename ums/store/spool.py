"""The spool: message files on disk, written so that a crash never leaves half a file.

What it does
------------
:class:`Spool` keeps files under one root directory, addressed by relative
paths such as ``voice/2024/0101/<id>.wav``.  ``write_atomic`` stores a whole
file; :class:`DurableWriter` (from ``Spool.open_writer``) takes a file piece by
piece, as a recording arrives in 20 ms chunks, and makes it appear only on
``commit()``.  Either the complete file is visible under its name, or nothing
is.

How it works
------------
The classic sequence: write to a temporary file in the *same* directory
(``.<name>.<random>.tmp``), ``fsync`` it, ``rename`` it onto the final name
(atomic within one file system, POSIX ``rename(2)``) and ``fsync`` the
directory so that the new directory entry itself survives a power loss.
Directories the spool creates are fsynced into their parents as well.
``abort()`` (or leaving a ``with`` block by an exception) removes the
temporary file; ``cleanup_temp()`` removes those a crash left behind.

Relative paths are checked: no absolute paths, no ``..``, no empty or hidden
components, no NUL, so a name taken from a message can never escape the root.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path, PurePosixPath
from types import TracebackType

__all__ = ["DurableWriter", "Spool", "SpoolPathError", "fsync_dir"]

_TMP_SUFFIX = ".tmp"


class SpoolPathError(ValueError):
    """A relative path that is not allowed in the spool."""


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new, renamed, removed files) to stable storage."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_relpath(relpath: str | PurePosixPath) -> PurePosixPath:
    text = str(relpath)
    if not text or "\x00" in text or "\\" in text:
        raise SpoolPathError(f"bad spool path {text!r}")
    if text.startswith("/"):
        raise SpoolPathError(f"spool path must be relative: {text!r}")
    for part in text.split("/"):
        if part in ("", ".", "..") or part.startswith("."):
            raise SpoolPathError(f"bad component {part!r} in spool path {text!r}")
    return PurePosixPath(text)


class DurableWriter:
    """A file written in pieces that appears under its name only on :meth:`commit`.

    Use as a context manager: an exception inside the block aborts, a normal
    exit commits unless ``commit()`` or ``abort()`` was already called.
    """

    def __init__(self, final: Path, directory_created: list[Path]) -> None:
        self.final = final
        self._created = directory_created
        self.temp = final.parent / f".{final.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}"
        self._fh = open(self.temp, "xb")
        self.size = 0
        self.done = False

    def write(self, data: bytes) -> None:
        if self.done:
            raise ValueError("write after commit/abort")
        self._fh.write(data)
        self.size += len(data)

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite bytes already written (a file header whose sizes are known only at the end)."""
        if self.done:
            raise ValueError("patch after commit/abort")
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("patch outside what was written")
        self._fh.flush()
        os.pwrite(self._fh.fileno(), data, offset)

    def commit(self) -> Path:
        """fsync, rename into place, fsync the directory; returns the final path."""
        if self.done:
            raise ValueError("commit after commit/abort")
        self.done = True
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self.temp, self.final)
        except BaseException:
            self._fh.close()
            self.temp.unlink(missing_ok=True)
            raise
        fsync_dir(self.final.parent)
        for parent in self._created:
            fsync_dir(parent)
        return self.final

    def abort(self) -> None:
        """Drop what was written; nothing appears under the final name."""
        if self.done:
            return
        self.done = True
        self._fh.close()
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> DurableWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.done:
            self.commit()


class Spool:
    """Files under ``root`` addressed by checked relative paths."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, relpath: str | PurePosixPath) -> Path:
        """The absolute path of a spool file (the path is checked, the file need not exist)."""
        return self.root.joinpath(*_check_relpath(relpath).parts)

    def _make_parent(self, target: Path) -> list[Path]:
        """Create missing parent directories; return the parents whose entries must be synced."""
        missing: list[Path] = []
        d = target.parent
        while not d.exists():
            missing.append(d)
            d = d.parent
        to_sync: list[Path] = []
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            to_sync.append(directory.parent)
        return to_sync

    def open_writer(self, relpath: str | PurePosixPath) -> DurableWriter:
        """A :class:`DurableWriter` for ``relpath`` (replaces an existing file on commit)."""
        final = self.path(relpath)
        return DurableWriter(final, self._make_parent(final))

    def write_atomic(self, relpath: str | PurePosixPath, data: bytes) -> Path:
        """Store ``data`` under ``relpath`` durably and atomically; returns the absolute path."""
        with self.open_writer(relpath) as w:
            w.write(data)
            return w.commit()

    def read(self, relpath: str | PurePosixPath) -> bytes:
        return self.path(relpath).read_bytes()

    def exists(self, relpath: str | PurePosixPath) -> bool:
        return self.path(relpath).is_file()

    def remove(self, relpath: str | PurePosixPath) -> bool:
        """Delete a file (durably); False when it was not there."""
        p = self.path(relpath)
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(p.parent)
        return True

    def cleanup_temp(self) -> list[Path]:
        """Remove temporary files that a crash left behind; returns what was removed.

        Call it only when no writer of this spool is open (at start-up).
        """
        removed: list[Path] = []
        for p in sorted(self.root.rglob(f".*{_TMP_SUFFIX}")):
            if p.is_file():
                p.unlink()
                removed.append(p)
        for parent in sorted({p.parent for p in removed}):
            fsync_dir(parent)
        return removed
