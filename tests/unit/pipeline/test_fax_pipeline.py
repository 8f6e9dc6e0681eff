"""The pipeline run eagerly on received faxes: stored pages -> PDF/TIFF -> one e-mail in the Maildir."""

from __future__ import annotations

import email
import email.policy
import io
import random
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tests.unit.pipeline.helpers import Clock
from tests.unit.render.tools import needs_poppler, pdfinfo, pdftoppm_pages
from ums.config import Config, ConfigError, parse_config
from ums.pipeline.app import PipelineContext, configure
from ums.pipeline.deliver import ensure_encoded, fax_document_paths, fax_thumbnail_path, load_fax_pages
from ums.pipeline.tasks import process_message, submit
from ums.render.tiff import read_tiff
from ums.store.fax_pages import FaxSinkFactory
from ums.store.models import MessageRecord

DOMAIN = "ums.example.com"
RESULT: dict[str, object] = {
    "success": True,
    "reason": "",
    "pages": 2,
    "remote_ident": "+49 89 1234560",
    "rate": 9600,
    "modem": "V.29",
    "ecm": False,
    "resolution": "fine",
    "compression": "T.4 2-D",
    "bad_rows": 0,
    "duration": 63.2,
    "transport": "t38",
}


def make_config(data_dir: Path) -> Config:
    doc: dict[str, Any] = {
        "server": {"data_dir": str(data_dir)},
        "mailboxes": [
            {"number": "200", "owner": "alice@example.com", "service": "fax"},
            {"number": "201", "owner": "bob@example.com", "service": "fax", "fax_format": "tiff"},
            {"number": "202", "owner": "carol@example.com", "service": "both", "fax_format": "both"},
        ],
        "mail": {"from": f"fax@{DOMAIN}", "admin": "admin@example.com", "retry_first": 60.0},
        "directory": {"entries": {"+49891234567": "Jane Doe"}},
    }
    return parse_config(doc, "<test>")


def page(rows: int, seed: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    pels = np.zeros((rows, 1728), dtype=np.uint8)
    for _ in range(60):
        r, c = int(rng.integers(0, rows - 10)), int(rng.integers(0, 1650))
        pels[r : r + int(rng.integers(1, 10)), c : c + int(rng.integers(1, 70))] = 1
    return pels


class FaxEnv:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.ctx: PipelineContext = configure(
            make_config(tmp_path / "data"), eager=True, clock=self.clock, rng=random.Random(3)
        )
        # what the server wires: indexed -> pipeline (eager: delivered before finish returns)
        self.factory = FaxSinkFactory(
            self.ctx.spool, self.ctx.index, lambda rec: submit(rec.id), domain=DOMAIN, rng=random.Random(1)
        )
        #: fine page, then a standard one (both A4 width): each must keep its physical size
        self.pages = [(page(400, 1), 204.0, 196.0), (page(200, 2), 204.0, 98.0)]

    def receive(self, mailbox: str = "200", result: dict[str, object] | None = None) -> MessageRecord:
        mb = self.ctx.config.mailbox_for(mailbox)
        assert mb is not None
        sink = self.factory.open(
            mailbox=mb,
            caller="+49891234567",
            caller_name=None,
            called=mailbox,
            call_id="c-1",
            started_at=self.clock(),
        )
        for n, (pels, xdpi, ydpi) in enumerate(self.pages, start=1):
            sink.store_page(n, pels, xdpi, ydpi, {"bad_rows": 0})
        record = sink.finish(dict(RESULT if result is None else result))
        assert record is not None
        return record

    def mail(self, owner: str) -> EmailMessage:
        new = self.ctx.maildir_root / owner / "Maildir" / "new"
        [path] = sorted(new.iterdir())
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@pytest.fixture
def env(tmp_path: Path) -> FaxEnv:
    return FaxEnv(tmp_path)


def attachments(msg: EmailMessage) -> dict[str, tuple[str, bytes]]:
    out = {}
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        out[part.get_content_type()] = (part.get_filename() or "", data)
    return out


def inline_png(msg: EmailMessage) -> tuple[str, bytes]:
    [part] = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes) and part["Content-ID"]
    return str(part["Content-ID"]), data


def test_fax_arrives_as_pdf_with_preview_and_details(env: FaxEnv) -> None:
    rec = env.receive()
    msg = env.mail("alice@example.com")
    assert msg["Message-ID"] == rec.message_id and msg["X-UMS-Kind"] == "fax"
    # no name in the record: the directory supplies it
    assert msg["Subject"] == "Fax from Jane Doe (+49 89 1234567), 2 pages"
    atts = attachments(msg)
    assert list(atts) == ["application/pdf"]
    name, pdf = atts["application/pdf"]
    assert name == "fax-20240506-070809-Jane Doe.pdf" and pdf.startswith(b"%PDF-")
    assert pdf == env.ctx.spool.read(f"fax/{rec.id}/fax.pdf")

    text = msg.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    for expected in (
        "Station ID:  +49 89 1234560",
        "Pages:       2",
        "Resolution:  fine (204 x 196 dpi)",
        "Speed:       9600 bit/s (V.29)",
        "ECM:         no",
        "Compression: T.4 2-D",
        "Duration:    1:03",
        "Transport:   T.38",
        "Result:      complete",
    ):
        assert expected in body, expected
    cid, png = inline_png(msg)
    html = msg.get_body(("html",))
    assert html is not None and f'src="cid:{cid.strip("<>")}"' in html.get_content()
    with Image.open(io.BytesIO(png)) as thumb:
        # A4 proportions from the fine page: 1728/204 in wide, 400/196 in tall
        assert thumb.size == (600, round(600 * (400 / 196) / (1728 / 204)))

    stored = env.ctx.index.get(rec.id)
    assert stored is not None and (stored.delivery, stored.attempts) == ("delivered", 1)
    assert all(env.ctx.spool.exists(f) for f in rec.files)  # the pages stay


@needs_poppler
def test_pdf_pages_are_the_received_pels_at_their_physical_size(env: FaxEnv, tmp_path: Path) -> None:
    rec = env.receive()
    path = tmp_path / "fax.pdf"
    path.write_bytes(env.ctx.spool.read(f"fax/{rec.id}/fax.pdf"))
    count, sizes = pdfinfo(path)
    assert count == 2
    for (pels, xdpi, ydpi), (w_pt, h_pt) in zip(env.pages, sizes, strict=True):
        assert w_pt == pytest.approx(pels.shape[1] / xdpi * 72, abs=0.01)
        assert h_pt == pytest.approx(pels.shape[0] / ydpi * 72, abs=0.01)
    # standard and fine: same width, and the 200 standard lines as tall as 400 fine ones
    assert sizes[1] == pytest.approx(sizes[0], abs=0.01)
    for number, (pels, xdpi, ydpi) in enumerate(env.pages, start=1):
        (bitmap,) = pdftoppm_pages(path, xdpi, ydpi, tmp_path, first=number)
        assert np.array_equal(bitmap, pels)


@pytest.mark.parametrize(
    ("mailbox", "owner", "types"),
    [
        ("201", "bob@example.com", ["image/tiff"]),
        ("202", "carol@example.com", ["application/pdf", "image/tiff"]),
    ],
)
def test_fax_format_per_mailbox(env: FaxEnv, mailbox: str, owner: str, types: list[str]) -> None:
    rec = env.receive(mailbox)
    msg = env.mail(owner)
    atts = attachments(msg)
    assert sorted(atts) == types
    name, tif = atts["image/tiff"]
    assert name.endswith(".tif")
    with Image.open(io.BytesIO(tif)) as img:
        assert getattr(img, "n_frames", 1) == 2
    pages = read_tiff(tif)
    for got, (pels, xdpi, ydpi) in zip(pages, env.pages, strict=True):
        assert np.array_equal(got.pels, pels)
        assert (got.xdpi, got.ydpi) == pytest.approx((xdpi, ydpi))
    text = msg.get_body(("plain",))
    assert text is not None
    if len(types) == 2:
        assert "The documents are attached (" in text.get_content()
    inline_png(msg)
    assert [p for p, _ in fax_document_paths(env.ctx, rec)] == [
        f"fax/{rec.id}/fax.{'pdf' if t == 'application/pdf' else 'tif'}" for t in types
    ]


def test_partial_fax_is_delivered_with_the_reason(env: FaxEnv) -> None:
    env.pages = env.pages[:1]
    result = {**RESULT, "success": False, "reason": "no carrier after page 1", "pages": 1}
    env.receive(result=result)
    msg = env.mail("alice@example.com")
    assert msg["Subject"] == "Fax from Jane Doe (+49 89 1234567), 1 page (incomplete)"
    text = msg.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert "not received completely (no carrier after page 1)" in body
    assert "Result:      incomplete: no carrier after page 1" in body
    assert list(attachments(msg)) == ["application/pdf"]


def test_rendering_is_idempotent_and_deterministic(env: FaxEnv) -> None:
    rec = env.receive()
    pdf = env.ctx.spool.path(f"fax/{rec.id}/fax.pdf")
    thumb = fax_thumbnail_path(rec)
    first = pdf.read_bytes(), env.ctx.spool.read(thumb)
    assert ensure_encoded(env.ctx, rec) == "exists"
    pdf.unlink()
    env.ctx.spool.remove(thumb)
    assert ensure_encoded(env.ctx, rec) == "written"
    assert (pdf.read_bytes(), env.ctx.spool.read(thumb)) == first
    pages = load_fax_pages(env.ctx, rec)
    assert [(p.rows, p.ydpi, p.bad_rows) for p in pages] == [(400, 196.0, 0), (200, 98.0, 0)]


def test_missing_page_is_retried_not_lost(env: FaxEnv) -> None:
    # the pipeline is away while the fax arrives; a page file then goes missing
    env.factory.announce = lambda rec: None
    rec = env.receive()
    env.ctx.spool.remove(rec.files[1])
    process_message(rec.id).apply_async()
    stored = env.ctx.index.get(rec.id)
    assert stored is not None
    assert (stored.delivery, stored.attempts) == ("pending", 1)
    assert "compose" in stored.last_error
    assert not (env.ctx.maildir_root / "alice@example.com").exists()


def test_fax_format_is_checked_in_the_configuration() -> None:
    doc: dict[str, Any] = {"mailboxes": [{"number": "200", "owner": "a@example.com", "fax_format": "jpeg"}]}
    with pytest.raises(
        ConfigError, match=r"^ums\.toml: mailboxes\[0\]\.fax_format: must be one of pdf, tiff, both"
    ):
        parse_config(doc, "ums.toml")
    mb = parse_config({"mailboxes": [{"number": "1", "owner": "a@example.com"}]}, "x").mailbox_for("1")
    assert mb is not None and mb.fax_format == "pdf"
