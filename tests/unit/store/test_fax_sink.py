"""Received faxes into the store: durable pages, one indexed message, recovery after a crash."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from ums.config import Mailbox
from ums.store.fax_pages import (
    INTERRUPTED,
    META_CALL_ID,
    META_CALLED,
    META_FAX,
    META_FAX_PAGES,
    FaxReceptionSink,
    FaxSinkFactory,
    encode_page,
    page_path,
    read_page,
)
from ums.store.index import MessageIndex
from ums.store.models import META_CSID, MessageRecord
from ums.store.spool import Spool

T0 = datetime(2024, 7, 1, 12, 15, 30, tzinfo=UTC)
MAILBOX = Mailbox(number="200", owner="fax@example.com", service="fax")
RESULT: dict[str, object] = {
    "success": True,
    "reason": "",
    "pages": 2,
    "remote_ident": "+49 89 1234560",
    "rate": 14400,
    "modem": "V.17",
    "ecm": True,
    "resolution": "fine",
    "compression": "T.6",
    "bad_rows": 0,
    "duration": 41.5,
    "transport": "g711",
}


def page(rows: int, width: int = 1728, seed: int = 1) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    pels = np.zeros((rows, width), dtype=np.uint8)
    for _ in range(40):  # text-like black blocks
        r, c = int(rng.integers(0, max(1, rows - 8))), int(rng.integers(0, max(1, width - 40)))
        pels[r : r + int(rng.integers(2, 8)), c : c + int(rng.integers(3, 40))] = 1
    return pels


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool = Spool(root / "spool")
        self.index = MessageIndex(root / "index.sqlite")
        self.announced: list[MessageRecord] = []
        self.factory = FaxSinkFactory(
            self.spool, self.index, self.announced.append, domain="example.com", rng=random.Random(5)
        )

    def open(self, **kw: object) -> FaxReceptionSink:
        args: dict[str, object] = {
            "mailbox": MAILBOX,
            "caller": "+49891234567",
            "caller_name": None,
            "called": "200",
            "call_id": "call-1",
            "started_at": T0,
        }
        args.update(kw)
        return self.factory.open(**args)  # type: ignore[arg-type]

    def files(self) -> list[str]:
        base = self.spool.root
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def test_page_file_round_trip_is_exact_and_deterministic() -> None:
    pels = page(37, width=13, seed=4)  # a width that is not a multiple of 8
    data = encode_page(pels, 204.0, 98.0, {"page": 3, "info": {"bad_rows": 2}})
    assert encode_page(pels, 204.0, 98.0, {"page": 3, "info": {"bad_rows": 2}}) == data
    back = read_page(data)
    assert back.pels.dtype == np.uint8 and np.array_equal(back.pels, pels)
    assert (back.xdpi, back.ydpi) == (204.0, 98.0)
    assert back.meta == {"page": 3, "info": {"bad_rows": 2}}
    # a plain P4 PBM: netpbm (and Pillow) read it
    raw = gzip.decompress(data)
    assert raw.startswith(b"P4\n# ums-fax ")
    with Image.open(io.BytesIO(raw)) as img:
        assert img.size == (13, 37)
        assert np.array_equal(np.asarray(img.convert("L")) == 0, pels == 1)


def test_fine_a4_page_is_stored_compactly() -> None:
    data = encode_page(page(2286), 204.0, 196.0, {})
    assert len(data) < 1728 * 2286 // 8 // 5


def test_store_page_is_durable_before_it_returns(store: Store) -> None:
    sink = store.open()
    pels = page(300)
    sink.store_page(1, pels, 204.0, 196.0, {"bad_rows": 3, "width": np.int64(1728)})
    rel = page_path(sink.id, 1)
    # the final file is there (renamed after fsync), no temporary file, nothing indexed yet
    assert store.files() == [f"fax/{sink.id}/call.json", rel]
    stored = read_page(store.spool.read(rel))
    assert np.array_equal(stored.pels, pels)
    assert stored.meta == {"page": 1, "info": {"bad_rows": 3, "width": 1728}}
    assert store.index.list() == []


def test_finish_indexes_the_fax_and_announces_it(store: Store) -> None:
    sink = store.open(caller_name="ACME Corp")
    p1, p2 = page(300, seed=1), page(150, seed=2)
    sink.store_page(1, p1, 204.0, 196.0, {"bad_rows": 0})
    sink.store_page(2, p2, 204.0, 98.0, {"bad_rows": 5})
    record = sink.finish(dict(RESULT))
    assert record is not None
    assert store.announced == [record]
    assert store.index.get(record.id) == record
    assert (record.kind, record.mailbox, record.owner) == ("fax", "200", "fax@example.com")
    assert (record.caller_number, record.caller_name) == ("+49891234567", "ACME Corp")
    assert (record.pages, record.duration, record.received_at) == (2, 41.5, T0)
    assert record.files == (page_path(record.id, 1), page_path(record.id, 2))
    assert record.meta[META_CSID] == "+49 89 1234560"
    assert (record.meta[META_CALL_ID], record.meta[META_CALLED]) == ("call-1", "200")
    assert record.meta[META_FAX] == RESULT
    entries = record.meta[META_FAX_PAGES]
    assert [(e["page"], e["rows"], e["width"], e["ydpi"]) for e in entries] == [
        (1, 300, 1728, 196.0),
        (2, 150, 1728, 98.0),
    ]
    assert entries[1]["info"] == {"bad_rows": 5}
    # the call description is gone once the record is in the index
    assert store.files() == list(record.files)
    sink.abort()  # after finish: nothing happens
    assert store.files() == list(record.files)
    with pytest.raises(ValueError):
        sink.finish(dict(RESULT))
    with pytest.raises(ValueError):
        sink.store_page(3, p1, 204.0, 196.0, {})


def test_failed_fax_with_pages_is_kept_with_the_reason(store: Store) -> None:
    sink = store.open()
    sink.store_page(1, page(100), 204.0, 196.0, {})
    record = sink.finish({"success": False, "reason": "carrier lost during page 2", "pages": 1})
    assert record is not None and record.pages == 1
    assert record.meta[META_FAX] == {"success": False, "reason": "carrier lost during page 2", "pages": 1}
    assert META_CSID not in record.meta and record.duration is None
    assert store.index.list(kind="fax") == [record]


def test_no_page_no_message(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    sink = store.open()
    with caplog.at_level("INFO", logger="ums.store.fax"):
        assert sink.finish({"success": False, "reason": "no fax tones"}) is None
    assert "event=fax.discarded" in caplog.text and "no fax tones" in caplog.text
    assert store.files() == [] and store.index.list() == [] and store.announced == []


def test_abort_drops_everything(store: Store) -> None:
    sink = store.open()
    sink.store_page(1, page(50), 204.0, 196.0, {})
    sink.store_page(2, page(50), 204.0, 196.0, {})
    sink.abort()
    sink.abort()
    assert store.files() == []
    assert not store.spool.path(f"fax/{sink.id}").exists()
    assert store.index.list() == [] and store.announced == []


def test_a_page_stored_again_replaces_the_first_copy(store: Store) -> None:
    sink = store.open()
    sink.store_page(1, page(50, seed=1), 204.0, 196.0, {})
    again = page(60, seed=9)
    sink.store_page(1, again, 204.0, 196.0, {})
    record = sink.finish(dict(RESULT))
    assert record is not None and record.pages == 1
    assert np.array_equal(read_page(store.spool.read(record.files[0])).pels, again)


def test_bad_pages_are_refused(store: Store) -> None:
    sink = store.open()
    with pytest.raises(ValueError):
        sink.store_page(1, np.zeros((0, 1728), np.uint8), 204.0, 196.0, {})
    with pytest.raises(ValueError):
        sink.store_page(1, page(10), 0.0, 196.0, {})
    with pytest.raises(ValueError):
        sink.store_page(-1, page(10), 204.0, 196.0, {})


def test_announce_failure_leaves_the_message_pending(tmp_path: Path) -> None:
    spool, index = Spool(tmp_path / "spool"), MessageIndex(tmp_path / "index.sqlite")

    def broken(record: MessageRecord) -> None:
        raise RuntimeError("broker away")

    sink = FaxSinkFactory(spool, index, broken, domain="example.com").open(
        mailbox=MAILBOX, caller="", caller_name=None, called="200", call_id="c", started_at=T0
    )
    sink.store_page(1, page(20), 204.0, 196.0, {})
    record = sink.finish(dict(RESULT))
    assert record is not None
    assert [r.id for r in index.due_deliveries(T0)] == [record.id]


def test_faxes_count_for_the_lamp(store: Store) -> None:
    sink = store.open()
    sink.store_page(1, page(20), 204.0, 196.0, {})
    record = sink.finish(dict(RESULT))
    assert record is not None
    assert store.index.counts("200", ("voice",)) == (0, 0)
    assert store.index.counts("200", ("voice", "fax")) == (1, 0)
    assert store.index.counts("200", ("fax",)) == (1, 0)


def test_recover_indexes_confirmed_pages_of_an_interrupted_fax(tmp_path: Path) -> None:
    first = Store(tmp_path)
    sink = first.open()
    p1, p2 = page(80, seed=1), page(90, seed=2)
    sink.store_page(1, p1, 204.0, 196.0, {"bad_rows": 1})
    sink.store_page(2, p2, 204.0, 98.0, {})
    other = first.open(call_id="call-2")
    other.store_page(1, page(10), 204.0, 196.0, {})
    done = other.finish(dict(RESULT))
    assert done is not None
    first.index.close()  # the process dies here: no finish for the first call

    again = Store(tmp_path)
    [record] = again.factory.recover()
    assert again.announced == [record]
    assert record.id == sink.id and record.message_id == sink.record.message_id
    assert (record.pages, record.received_at, record.delivery) == (2, T0, "pending")
    assert record.meta[META_FAX] == {"success": False, "reason": INTERRUPTED, "pages": 2}
    assert record.meta[META_CALL_ID] == "call-1"
    assert [e["info"] for e in record.meta[META_FAX_PAGES]] == [{"bad_rows": 1}, {}]
    assert again.index.get(record.id) == record
    assert not again.spool.exists(f"fax/{record.id}/call.json")
    assert again.factory.recover() == []  # once only
    assert {r.id for r in again.index.list()} == {record.id, done.id}


def test_recover_after_a_crash_between_index_and_cleanup(store: Store) -> None:
    sink = store.open()
    sink.store_page(1, page(10), 204.0, 196.0, {})
    record = sink.finish(dict(RESULT))
    assert record is not None
    # as if the process had died right after index.add: call.json still there
    manifest = f"fax/{record.id}/call.json"
    store.spool.write_atomic(manifest, json.dumps({"id": record.id}).encode())
    assert store.factory.recover() == []
    assert not store.spool.exists(manifest)
    assert len(store.index.list()) == 1


CHILD = textwrap.dedent(
    """
    import random, sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    import numpy as np
    from ums.config import Mailbox
    from ums.store.fax_pages import FaxSinkFactory
    from ums.store.index import MessageIndex
    from ums.store.spool import Spool

    root = Path(sys.argv[1])
    factory = FaxSinkFactory(Spool(root / "spool"), MessageIndex(root / "index.sqlite"), print,
                             domain="example.com", rng=random.Random(1))
    sink = factory.open(mailbox=Mailbox(number="200", owner="fax@example.com"), caller="+4930123",
                        caller_name=None, called="200", call_id="killed",
                        started_at=datetime(2024, 7, 1, tzinfo=UTC))
    for n in (1, 2):
        pels = np.zeros((40, 1728), np.uint8)
        pels[n * 5 : n * 5 + 3, 100:200] = 1
        sink.store_page(n, pels, 204.0, 196.0, {"page": n})
        print(f"MCF {n}", flush=True)   # the point where the receiver confirms the page
    time.sleep(60)
    """
)


def test_pages_confirmed_before_a_kill_are_delivered_after_restart(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["MCF 1", "MCF 2"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    store = Store(tmp_path)
    [record] = store.factory.recover()
    assert (record.pages, record.meta[META_CALL_ID]) == (2, "killed")
    for n, rel in enumerate(record.files, start=1):
        pels = read_page(store.spool.read(rel)).pels
        assert np.array_equal(np.flatnonzero(pels.any(axis=1)), np.arange(n * 5, n * 5 + 3))
    assert [r.id for r in store.index.due_deliveries(datetime.now(UTC))] == [record.id]
