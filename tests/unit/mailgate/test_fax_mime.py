"""The fax notification mail: reception details, several documents, the first-page preview."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from ums.mailgate.mime import Attachment, ComposeSettings, attachment_filename, compose_fax, fax_fields
from ums.store.models import MessageRecord, new_record

T0 = datetime(2024, 7, 1, 10, 15, 30, tzinfo=UTC)
SETTINGS = ComposeSettings(from_addr="fax@ums.example.com", from_name="Fax", timezone="Europe/Berlin")
PDF = b"%PDF-1.4\n" + b"x" * 300
TIFF = b"II*\x00" + bytes(range(256))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)
FAX_META: dict[str, Any] = {
    "csid": "+49 89 1234560",
    "call_id": "abc",
    "fax": {
        "success": True,
        "reason": "",
        "pages": 3,
        "remote_ident": "+49 89 1234560",
        "rate": 14400,
        "modem": "v17",
        "ecm": True,
        "resolution": "fine",
        "compression": "T.6",
        "bad_rows": 4,
        "duration": 95.0,
        "transport": "g711",
    },
    "fax_pages": [{"page": 1, "xdpi": 204.0, "ydpi": 196.0, "width": 1728, "rows": 2286}],
}


def record(**kw: Any) -> MessageRecord:
    base: dict[str, Any] = {
        "now": T0,
        "rng": random.Random(4),
        "domain": "ums.example.com",
        "mailbox": "200",
        "owner": "alice@example.com",
        "kind": "fax",
        "caller_number": "+49891234567",
        "caller_name": "",
        "duration": 95.0,
        "pages": 3,
        "meta": {**FAX_META, "company": "ACME"},
    }
    base.update(kw)
    return new_record(**base)


def parse(data: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(data)


def test_fields_of_a_received_fax() -> None:
    assert fax_fields(record()) == [
        ("Station ID", "+49 89 1234560"),
        ("Pages", "3"),
        ("Resolution", "fine (204 x 196 dpi)"),
        ("Speed", "14400 bit/s (V.17)"),
        ("ECM", "yes"),
        ("Compression", "T.6"),
        ("Duration", "1:35"),
        ("Transport", "G.711 audio"),
        ("Bad rows", "4"),
        ("Result", "complete"),
    ]
    # a record without reception details (a fax stored as a document): only what is known
    assert fax_fields(record(meta={}, duration=None)) == [("Pages", "3")]


def test_fax_mail_with_pdf_tiff_and_inline_preview() -> None:
    r = record()
    pdf_name = attachment_filename(r, "pdf", SETTINGS)
    tif = Attachment(TIFF, attachment_filename(r, "tif", SETTINGS), "image/tiff")
    data = compose_fax(r, PDF, pdf_name, "application/pdf", SETTINGS, more=[tif], thumbnail=PNG)
    assert data.isascii() and b"\n" not in data.replace(b"\r\n", b"")
    assert compose_fax(r, PDF, pdf_name, "application/pdf", SETTINGS, more=[tif], thumbnail=PNG) == data
    msg = parse(data)
    assert msg["Subject"] == "Fax from +49 89 1234567 (ACME), 3 pages"
    assert msg.get_content_type() == "multipart/mixed"
    atts = [(a.get_content_type(), a.get_filename(), a.get_content()) for a in msg.iter_attachments()]
    assert atts == [
        ("application/pdf", "fax-20240701-121530-+49891234567.pdf", PDF),
        ("image/tiff", "fax-20240701-121530-+49891234567.tif", TIFF),
    ]
    html = msg.get_body(("html",))
    assert html is not None
    [related] = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    [image] = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    assert image.get_content() == PNG
    assert image["Content-ID"] == f"<page1-{r.id}@ums.example.com>"
    assert image.get_content_disposition() == "inline"
    assert f'<img src="cid:page1-{r.id}@ums.example.com"' in html.get_content()
    text = msg.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert "The documents are attached (fax-20240701-121530-+49891234567.pdf, " in body
    assert "Speed:       14400 bit/s (V.17)" in body and "Result:      complete" in body
    assert "Station ID" in html.get_content() and "G.711 audio" in html.get_content()


def test_without_html_the_preview_is_an_attachment() -> None:
    r = record()
    plain = ComposeSettings(from_addr="fax@ums.example.com", html=False)
    msg = parse(compose_fax(r, PDF, "f.pdf", "application/pdf", plain, thumbnail=PNG))
    atts = [(a.get_content_type(), a.get_filename()) for a in msg.iter_attachments()]
    assert atts == [("application/pdf", "f.pdf"), ("image/png", "f-page1.png")]


def test_incomplete_fax_says_why() -> None:
    meta = {**FAX_META, "fax": {**FAX_META["fax"], "success": False, "reason": "remote hung up"}}
    r = record(meta=meta, pages=2)
    msg = parse(compose_fax(r, PDF, "f.pdf", "application/pdf", SETTINGS))
    assert msg["Subject"] == "Fax from +49 89 1234567, 2 pages (incomplete)"
    text = msg.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert (
        "The fax was not received completely (remote hung up); the pages that arrived are attached." in body
    )
    assert "Result:      incomplete: remote hung up" in body
    assert "The document is attached (f.pdf)." in body
