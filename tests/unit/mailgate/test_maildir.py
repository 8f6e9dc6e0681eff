"""Local Maildir delivery, once per Message-ID."""

from __future__ import annotations

import mailbox
import os
from pathlib import Path

import pytest

from ums.mailgate.maildir import deliver_maildir, maildir_name, maildir_path


def message(mid: str | None, body: str = "hello") -> bytes:
    head = "From: ums@example.com\r\nTo: alice@example.com\r\nSubject: t\r\n"
    if mid:
        head += f"Message-ID: {mid}\r\n"
    return (head + f"\r\n{body}\r\n").encode()


def test_delivers_into_new(tmp_path: Path) -> None:
    root = tmp_path / "var" / "mail"  # created on first delivery
    result = deliver_maildir(root, "alice@example.com", message("<1@x>"))
    base = root / "alice@example.com" / "Maildir"
    assert result.duplicate is False
    assert result.path == base / "new" / maildir_name("<1@x>")
    assert sorted(p.name for p in base.iterdir()) == ["cur", "new", "tmp"]
    assert list((base / "tmp").iterdir()) == []
    assert result.path.read_bytes() == message("<1@x>").replace(b"\r\n", b"\n")
    md = mailbox.Maildir(base, create=False)
    msgs = list(md)
    assert len(msgs) == 1 and msgs[0]["Message-ID"] == "<1@x>"


def test_same_message_id_is_delivered_once(tmp_path: Path) -> None:
    first = deliver_maildir(tmp_path, "alice@example.com", message("<1@x>"))
    again = deliver_maildir(tmp_path, "alice@example.com", message("<1@x>", body="retry after a crash"))
    assert again.duplicate is True and again.path == first.path
    other = deliver_maildir(tmp_path, "alice@example.com", message("<2@x>"))
    assert other.duplicate is False
    new = tmp_path / "alice@example.com" / "Maildir" / "new"
    assert len(list(new.iterdir())) == 2


def test_duplicate_found_after_the_client_moved_it_to_cur(tmp_path: Path) -> None:
    first = deliver_maildir(tmp_path, "alice@example.com", message("<1@x>"))
    cur = first.path.parent.parent / "cur"
    seen = cur / (first.path.name + ":2,S")
    os.rename(first.path, seen)  # what an IMAP server does when the message is read
    again = deliver_maildir(tmp_path, "alice@example.com", message("<1@x>"))
    assert again.duplicate is True and again.path == seen
    assert list(first.path.parent.iterdir()) == []


def test_message_without_id_is_always_delivered(tmp_path: Path) -> None:
    a = deliver_maildir(tmp_path, "alice@example.com", message(None))
    b = deliver_maildir(tmp_path, "alice@example.com", message(None))
    assert not a.duplicate and not b.duplicate and a.path != b.path


@pytest.mark.parametrize("owner", ["", "../etc", "a/b@x", ".hidden@x", "noat"])
def test_owner_must_be_a_plain_address(tmp_path: Path, owner: str) -> None:
    with pytest.raises(ValueError):
        maildir_path(tmp_path, owner)
    with pytest.raises(ValueError):
        deliver_maildir(tmp_path, owner, message("<1@x>"))
