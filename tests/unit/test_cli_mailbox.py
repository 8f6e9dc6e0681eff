"""``ums mailbox list | mark-read | mark-unread`` on a real message index."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ums.cli import main
from ums.store.index import MessageIndex
from ums.store.models import new_record


def _setup(tmp_path: Path) -> tuple[Path, list[str]]:
    cfg = tmp_path / "ums.toml"
    cfg.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
        '[[mailboxes]]\nnumber = "100"\nowner = "alice@example.com"\n'
        '[[mailboxes]]\nnumber = "200"\nowner = "bob@example.com"\n'
    )
    (tmp_path / "data").mkdir()
    rng = random.Random(1)
    ids = []
    with MessageIndex(tmp_path / "data" / "index.sqlite") as index:
        for i in range(2):
            rec = new_record(
                now=datetime(2026, 11, 26, 8, i, tzinfo=UTC),
                rng=rng,
                domain="example.com",
                mailbox="100",
                owner="alice@example.com",
                kind="voice",
                caller_number="+4930555",
                caller_name="Jane Doe",
                duration=4.5,
            )
            index.add(rec)
            ids.append(rec.id)
    return cfg, ids


def test_list_and_mark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, ids = _setup(tmp_path)
    assert main(["mailbox", "-c", str(cfg), "list"]) == 0
    out = capsys.readouterr().out
    assert ids[0] in out and "Jane Doe" in out and "mailbox 100: 2 new, 0 old" in out

    assert main(["mailbox", "-c", str(cfg), "mark-read", "100", ids[0]]) == 0
    assert "1 marked read; 1 new, 1 old" in capsys.readouterr().out
    assert main(["mailbox", "-c", str(cfg), "mark-read", "100"]) == 0
    assert "0 new, 2 old" in capsys.readouterr().out
    assert main(["mailbox", "-c", str(cfg), "mark-unread", "100", ids[1]]) == 0
    assert "1 new, 1 old" in capsys.readouterr().out


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, ids = _setup(tmp_path)
    assert main(["mailbox", "-c", str(cfg), "mark-read", "999"]) == 2
    assert "999 is not a mailbox" in capsys.readouterr().err
    assert main(["mailbox", "-c", str(cfg), "mark-read", "200", ids[0]]) == 2
    assert f"no message {ids[0]} in mailbox 200" in capsys.readouterr().err
    assert main(["mailbox", "-c", str(cfg), "--data-dir", str(tmp_path / "none"), "list"]) == 1
    assert "no message index" in capsys.readouterr().err
