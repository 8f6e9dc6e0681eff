"""Crash-safe spool writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ums.store.spool import Spool, SpoolPathError


def visible(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
    )


def test_write_atomic_and_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.write_atomic("voice/2024/0101/a.wav", b"RIFF")
    assert path == tmp_path / "spool" / "voice" / "2024" / "0101" / "a.wav"
    assert spool.read("voice/2024/0101/a.wav") == b"RIFF"
    spool.write_atomic("voice/2024/0101/a.wav", b"NEW")  # replaces
    assert spool.read("voice/2024/0101/a.wav") == b"NEW"
    assert visible(spool.root) == ["voice/2024/0101/a.wav"]
    assert list(spool.root.rglob(".*")) == []


def test_streaming_writer_is_invisible_until_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    w = spool.open_writer("rec/x.raw")
    for i in range(50):  # 20 ms chunks of 8 kHz 16-bit audio
        w.write(bytes([i]) * 320)
    assert not spool.exists("rec/x.raw")
    assert visible(tmp_path) == []
    final = w.commit()
    assert final.read_bytes() == b"".join(bytes([i]) * 320 for i in range(50))
    assert w.size == 50 * 320
    assert [p.name for p in (tmp_path / "rec").iterdir()] == ["x.raw"]
    with pytest.raises(ValueError):
        w.write(b"late")


def test_abort_and_exception_leave_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    w = spool.open_writer("a/b.bin")
    w.write(b"partial")
    w.abort()
    w.abort()  # idempotent
    with pytest.raises(RuntimeError), spool.open_writer("a/c.bin") as w2:
        w2.write(b"partial")
        raise RuntimeError("call dropped")
    assert list((tmp_path / "a").iterdir()) == []
    with spool.open_writer("a/d.bin") as w3:  # a clean exit commits
        w3.write(b"ok")
    assert spool.read("a/d.bin") == b"ok"


def test_uncommitted_writer_is_cleaned_up_after_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write_atomic("keep.bin", b"durable")
    w = spool.open_writer("lost.bin")
    w.write(b"half a recording")
    # the process dies here: the writer is never committed nor aborted
    reopened = Spool(tmp_path)
    assert visible(tmp_path) == ["keep.bin"]
    removed = reopened.cleanup_temp()
    assert [p.name.startswith(".lost.bin.") for p in removed] == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]
    assert reopened.read("keep.bin") == b"durable"
    w.abort()  # closes the file handle; the temp is gone already


@pytest.mark.parametrize(
    "bad",
    ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "x/", ".hidden", "a/.b", "a\\b", "a\x00b"],
)
def test_relpaths_are_checked(tmp_path: Path, bad: str) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolPathError):
        spool.path(bad)
    with pytest.raises(SpoolPathError):
        spool.write_atomic(bad, b"x")


def test_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write_atomic("x/y", b"1")
    assert spool.remove("x/y") is True
    assert spool.remove("x/y") is False
    assert not spool.exists("x/y")


def test_patch_rewrites_a_header_before_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    w = spool.open_writer("voice/a.bin")
    w.write(b"\x00\x00\x00\x00")
    w.write(b"payload")
    w.patch(0, b"SIZE")
    with pytest.raises(ValueError):
        w.patch(8, b"xxxx")
    w.commit()
    assert spool.read("voice/a.bin") == b"SIZEpayload"
