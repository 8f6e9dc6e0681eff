"""A mail to the fax gateway as fax pages: which parts count, in which order, and what is refused."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ums.outbound import document
from ums.outbound.document import (
    NOTHING_TO_FAX,
    BadDocument,
    FaxDocument,
    clean_text,
    compose_document,
    html_text,
    is_empty_text,
)
from ums.render.cover import CoverInfo
from ums.render.documents import DocumentError, MissingToolError, render_pdf
from ums.render.page import FaxPage, Resolution

pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")


def small_pdf(pages: int = 2) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=1)
    for n in range(pages):
        c.setFont("Helvetica", 40)
        c.drawString(100, 700, f"Page {n + 1}")
        c.showPage()
    c.save()
    return buf.getvalue()


def png(width: int = 40, height: int = 20) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 0).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakeRender:
    """Records what it was asked to render; returns ``pages`` tiny pages per call."""

    pages: int = 1
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(
        self,
        data: bytes,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        resolution: Resolution = "fine",
    ) -> list[FaxPage]:
        self.calls.append(
            {"data": data, "filename": filename, "content_type": content_type, "res": resolution}
        )
        return [FaxPage.at(np.full((8, 1728), len(self.calls) % 2, np.uint8), resolution)] * self.pages

    def texts(self) -> list[str]:
        return [c["data"].decode("utf-8", "replace") for c in self.calls]


def mail(
    text: str | None = "Please fax this.\n",
    *,
    html: str | None = None,
    subject: str = "Order 4711",
) -> EmailMessage:
    msg = EmailMessage(policy=policy.default)
    msg["From"] = "Alice Example <alice@example.com>"
    msg["To"] = "4930123456@fax.example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<abc@example.com>"
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    return msg


def attach_pdf(msg: EmailMessage, data: bytes, name: str = "invoice.pdf") -> None:
    msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)


# -- order and content --------------------------------------------------------------------------------


def test_text_then_pdf_pages_in_order() -> None:
    pdf = small_pdf(2)
    msg = mail("Dear Sir,\n\nplease find the invoice attached.\n\n-- \nAlice\n")
    attach_pdf(msg, pdf)
    doc = compose_document(msg.as_bytes())
    assert isinstance(doc, FaxDocument)
    assert [(p.name, p.content_type, p.first_page, p.page_count, p.kind) for p in doc.parts] == [
        ("mail text", "text/plain", 0, 1, "text"),
        ("invoice.pdf", "application/pdf", 1, 2, "attachment"),
    ]
    assert doc.page_count == 3
    expected = render_pdf(pdf, resolution="fine")
    assert all(np.array_equal(a.pels, b.pels) for a, b in zip(doc.pages[1:], expected, strict=True))
    assert doc.pages[0].ydpi == 196.0 and doc.pages[0].width == 1728
    assert doc.pages[0].pels.any()  # the text page has ink
    assert (doc.subject, doc.sender, doc.message_id) == (
        "Order 4711",
        "Alice Example <alice@example.com>",
        "<abc@example.com>",
    )


def test_text_is_cleaned_before_rendering() -> None:
    render = FakeRender()
    msg = mail("Hello,\n\nthe order follows.   \n\nSent from my iPhone\n\n-- \nAlice Example\nACME\n")
    compose_document(msg, render=render)
    assert render.texts() == ["Hello,\n\nthe order follows."]
    assert render.calls[0]["content_type"] == "text/plain; charset=utf-8"
    assert render.calls[0]["filename"] is None


@pytest.mark.parametrize(
    "body",
    [
        "",
        "\n \n\u00a0\n",
        "-- \nAlice Example\nACME GmbH\n",
        "\n\n--\nAlice Example\n",
        "Sent from my iPhone",
        "Von meinem iPad gesendet\n",
        "Get Outlook for Android\n",
        "\r\n\r\nBest regards\r\n\r\nAlice Example\r\nACME GmbH | Tel. +49 30 1234567\r\nwww.acme.example\r\n"
        "Sent from Mail for Windows\r\n",
        "Mit freundlichen Grüßen\n\nAlice Example\n",
        "Thanks!\n\nSent from my Samsung Galaxy smartphone.\n",
    ],
)
def test_signature_only_text_is_skipped(body: str) -> None:
    render = FakeRender()
    msg = mail(body)
    attach_pdf(msg, b"%PDF-1.4 fake")
    doc = compose_document(msg, render=render)
    assert [p.name for p in doc.parts] == ["invoice.pdf"]
    assert len(render.calls) == 1 and render.calls[0]["filename"] == "invoice.pdf"
    assert doc.skipped[0] == ("mail text", "empty or only a signature")


def test_closing_phrase_followed_by_real_text_is_kept() -> None:
    render = FakeRender()
    text = "Thanks\n" + "\n".join(f"item {n}" for n in range(20))
    compose_document(mail(text), render=render)
    assert len(render.calls) == 1


def test_boilerplate_disclaimer_is_removed() -> None:
    disclaimer = "This e-mail may contain confidential information. If you are not the intended recipient"
    body = "Best regards\nAlice\n\nThis e-mail may contain\nconfidential information. If you are not the\n"
    body += "intended recipient\n"
    msg = mail(body)
    attach_pdf(msg, b"%PDF-1.4 fake")
    render = FakeRender()
    doc = compose_document(msg, render=render, boilerplate=[disclaimer])
    assert [p.kind for p in doc.parts] == ["attachment"]
    with pytest.raises(BadDocument):
        compose_document(mail(body), render=render, boilerplate=[disclaimer])


def test_html_only_body() -> None:
    msg = mail(None, html="<html><body><h1>Order</h1><p>Two <b>boxes</b> please.</p></body></html>")
    doc = compose_document(msg)
    assert [(p.name, p.content_type, p.page_count) for p in doc.parts] == [("mail text", "text/html", 1)]
    assert doc.pages[0].pels.any()


def test_html_used_when_plain_text_is_empty() -> None:
    render = FakeRender()
    compose_document(mail("\n", html="<p>Real text</p>"), render=render)
    assert render.calls[0]["content_type"] == "text/html; charset=utf-8"
    assert "Real text" in render.texts()[0]


def test_html_signature_only_is_skipped() -> None:
    html = (
        '<html><head><style>p {margin: 0}</style></head><body><p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
        '<div id="Signature"><p>Alice Example</p><p>ACME GmbH</p></div></body></html>'
    )
    msg = mail(None, html=html)
    attach_pdf(msg, b"%PDF-1.4 fake")
    render = FakeRender()
    doc = compose_document(msg, render=render)
    assert [p.name for p in doc.parts] == ["invoice.pdf"]


def outlook_mail(
    body_text: str, *, html_text: str = "Hello", inline_name: str = "image001.png"
) -> EmailMessage:
    """multipart/mixed( multipart/related( multipart/alternative(plain, html), image ), pdf )."""
    html = f'<p>{html_text}</p><p><img src="cid:image001.png@01DA0000.11223344"></p>'
    msg = mail(body_text, html=html)
    html_part = msg.get_body(("html",))
    assert html_part is not None
    html_part.add_related(png(), maintype="image", subtype="png", cid="<image001.png@01DA0000.11223344>")
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    list(related.iter_parts())[1].replace_header("Content-Type", f'image/png; name="{inline_name}"')
    attach_pdf(msg, b"%PDF-1.4 fake", "offer.pdf")
    return msg


def test_inline_image_of_the_html_body_is_not_an_attachment() -> None:
    render = FakeRender(pages=2)
    msg = outlook_mail("Hello\n")
    structure = [p.get_content_type() for p in msg.walk()]
    assert structure == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
    ]
    doc = compose_document(msg, render=render)
    assert [(p.name, p.first_page, p.page_count) for p in doc.parts] == [
        ("mail text", 0, 2),
        ("offer.pdf", 2, 2),
    ]
    assert [c["filename"] for c in render.calls] == [None, "offer.pdf"]
    assert doc.skipped == [("image001.png", "inline resource")]


def test_outlook_related_at_top_level() -> None:
    """Outlook without attachments: multipart/related is the top level; its image is still a resource."""
    msg = mail("Hello\n", html='<p>Hello</p><img src="cid:logo@x">')
    html_part = msg.get_body(("html",))
    assert html_part is not None
    html_part.add_related(png(), maintype="image", subtype="png", cid="<logo@x>")
    outer = EmailMessage(policy=policy.default)
    for name in ("From", "To", "Subject"):
        outer[name] = msg[name]
    alternative = next(p for p in msg.walk() if p.get_content_type() == "multipart/alternative")
    outer.set_content(alternative.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    outer.add_related(png(), maintype="image", subtype="png", cid="<logo@x>")
    render = FakeRender()
    doc = compose_document(outer, render=render)
    assert [p.kind for p in doc.parts] == ["text"]


def test_image_shown_by_the_html_is_not_an_attachment_even_when_marked_so() -> None:
    msg = mail("Hello\n", html='<p>Hello</p><img src="CID:Logo@X">')
    msg.add_attachment(png(), maintype="image", subtype="png", filename="logo.png", cid="<logo@x>")
    attach_pdf(msg, b"%PDF-1.4 fake")
    doc = compose_document(msg, render=FakeRender())
    assert [p.name for p in doc.parts] == ["mail text", "invoice.pdf"]
    assert doc.skipped == [("logo.png", "inline resource")]


def test_inline_image_not_referenced_by_the_html_is_faxed() -> None:
    """Apple Mail: an image between text parts of a multipart/mixed, shown inline, no cid reference."""
    msg = mail("See the sketch:\n")
    msg.add_attachment(png(), maintype="image", subtype="png", filename="sketch.png", disposition="inline")
    render = FakeRender()
    doc = compose_document(msg, render=render)
    assert [p.name for p in doc.parts] == ["mail text", "sketch.png"]


def test_rfc2231_filename_and_unnamed_attachment() -> None:
    msg = mail("x")
    attach_pdf(msg, b"%PDF-1.4 fake", "Rechnung März €.pdf")
    raw = msg.as_bytes(policy=policy.SMTP)
    assert b"filename*=utf-8''Rechnung%20M%C3%A4rz%20%E2%82%AC.pdf" in raw
    msg2 = mail("x")
    msg2.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf")
    render = FakeRender()
    names = [p.name for p in compose_document(raw, render=render).parts]
    names += [p.name for p in compose_document(msg2, render=render).parts]
    assert names == ["mail text", "Rechnung März €.pdf", "mail text", "attachment 1"]


def test_attached_mail_is_faxed_as_its_text() -> None:
    inner = mail("The original text.\n", subject="Inner subject")
    msg = mail("Forwarding:\n")
    msg.add_attachment(inner)
    render = FakeRender()
    doc = compose_document(msg, render=render)
    assert [(p.name, p.content_type) for p in doc.parts] == [
        ("mail text", "text/plain"),
        ("attached mail 'Inner subject'", "message/rfc822"),
    ]
    text = render.texts()[1]
    assert "Subject: Inner subject" in text and "From: Alice Example <alice@example.com>" in text
    assert text.endswith("The original text.")


def test_signed_mail_signature_part_is_skipped() -> None:
    raw = (
        b"From: a@example.com\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary="S"\r\n\r\n'
        b"--S\r\nContent-Type: text/plain\r\n\r\nSigned text\r\n"
        b'--S\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\nMIAG\r\n--S--\r\n'
    )
    render = FakeRender()
    doc = compose_document(raw, render=render)
    assert [p.name for p in doc.parts] == ["mail text"]
    assert render.texts() == ["Signed text"]


def test_format_flowed_is_unwrapped() -> None:
    text = "This is a long \r\nline that flows.\r\n> quoted \r\n> text\r\n\r\nNext -- \r\n-- \r\nsig\r\n"
    assert clean_text(text, flowed=True) == "This is a long line that flows.\n> quoted text\n\nNext --"
    assert clean_text("ab \r\ncd\r\n", flowed=True, delsp=True) == "abcd"
    assert clean_text(" From me\r\n", flowed=True) == "From me"


def test_html_text_leaves_out_head_and_signatures() -> None:
    html = (
        "<html><head><title>T</title><style>x{}</style></head><body><p>One<br>Two</p>"
        '<div class="moz-signature"><p>Sig <b>x</b></p><br></div><p>Three</p></body></html>'
    )
    assert [line for line in html_text(html).split("\n") if line] == ["One", "Two", "Three"]


def test_is_empty_text() -> None:
    assert is_empty_text("")
    assert is_empty_text("Kind regards,\nAlice")
    assert not is_empty_text("Please fax page 2.\nKind regards,\nAlice")
    assert not is_empty_text("Thanks!\nHere is the corrected page three of the contract.")
    assert not is_empty_text("Thanks!\nCan you call me back?")
    assert is_empty_text("Thanks!\nDr. Alice Example\nACME Inc.\nTel. +49 30 1234567\nwww.acme.example")


# -- refusals ---------------------------------------------------------------------------------------------


def never_render(data: bytes, **kw: Any) -> list[FaxPage]:
    raise AssertionError("nothing should be rendered")


def test_unsupported_attachment_is_refused_before_rendering() -> None:
    msg = mail("x")
    attach_pdf(msg, b"%PDF-1.4 fake", "ok.pdf")
    msg.add_attachment(
        b"MZ\x90\x00" + bytes(60), maintype="application", subtype="x-msdownload", filename="x.exe"
    )
    with pytest.raises(BadDocument) as err:
        compose_document(msg, render=never_render)
    assert err.value.reason == "cannot fax 'x.exe': unsupported type application/x-msdownload"
    assert str(err.value) == err.value.reason


@pytest.mark.parametrize(
    ("data", "ctype", "name", "reason"),
    [
        (
            b"PK\x03\x04" + bytes(40),
            "application/zip",
            "files.zip",
            "cannot fax 'files.zip': unsupported type application/zip",
        ),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(40),
            "application/vnd.ms-outlook",
            "mail.msg",
            "cannot fax 'mail.msg': unsupported type application/vnd.ms-outlook (an Outlook item",
        ),
        (
            b"\x78\x9f",
            "application/ms-tnef",
            "winmail.dat",
            "cannot fax 'winmail.dat': unsupported type application/ms-tnef",
        ),
        (b"", "application/pdf", "empty.pdf", "cannot fax 'empty.pdf': the file is empty"),
        (
            b"\x01\x02",
            "application/octet-stream",
            None,
            "cannot fax attachment 1: unsupported type application/octet-stream",
        ),
    ],
)
def test_refused_attachments(data: bytes, ctype: str, name: str | None, reason: str) -> None:
    msg = mail("x")
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    with pytest.raises(BadDocument) as err:
        compose_document(msg, render=never_render)
    assert err.value.reason.startswith(reason)


def test_damaged_pdf_names_the_file() -> None:
    msg = mail("x")
    attach_pdf(msg, b"%PDF-1.4\nnot really a pdf", "broken.pdf")
    with pytest.raises(BadDocument) as err:
        compose_document(msg)
    assert err.value.reason.startswith("cannot fax 'broken.pdf': cannot read the PDF")
    assert isinstance(err.value.__cause__, DocumentError)


def test_missing_office_converter_asks_for_a_pdf() -> None:
    def no_soffice(data: bytes, **kw: Any) -> list[FaxPage]:
        if kw["filename"] == "letter.docx":
            raise MissingToolError("soffice", "LibreOffice (soffice) is not installed")
        return FakeRender()(data, **kw)

    msg = mail("x")
    msg.add_attachment(
        b"PK\x03\x04" + bytes(40),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="letter.docx",
    )
    with pytest.raises(BadDocument) as err:
        compose_document(msg, render=no_soffice)
    assert err.value.reason == (
        "cannot fax 'letter.docx': this server cannot convert Office documents, send it as PDF"
    )


@pytest.mark.parametrize("body", [None, "", "-- \nAlice\n", "Sent from my iPhone\n"])
def test_nothing_to_fax(body: str | None) -> None:
    msg = mail(body)
    if body is None:
        msg.set_content("")
    with pytest.raises(BadDocument) as err:
        compose_document(msg, render=never_render)
    assert err.value.reason == NOTHING_TO_FAX == "nothing to fax: the mail has no text and no attachments"


def test_nothing_to_fax_hints_at_pasted_pictures() -> None:
    msg = outlook_mail("\n", html_text="&nbsp;")
    payload = msg.get_payload()
    assert isinstance(payload, list)
    payload.pop()  # the PDF
    with pytest.raises(BadDocument, match="pictures pasted into the text are not faxed"):
        compose_document(msg, render=never_render)


def test_encrypted_mail_is_refused() -> None:
    raw = (
        b"From: a@example.com\r\nSubject: secret\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n"
    )
    with pytest.raises(BadDocument, match="encrypted"):
        compose_document(raw, render=never_render)


def test_page_limit() -> None:
    msg = mail("x")
    attach_pdf(msg, b"%PDF-1.4 fake", "a.pdf")
    attach_pdf(msg, b"%PDF-1.4 fake", "b.pdf")
    render = FakeRender(pages=3)
    assert compose_document(msg, render=render, max_pages=9).page_count == 9
    render = FakeRender(pages=3)
    with pytest.raises(BadDocument) as err:
        compose_document(msg, render=render, max_pages=5)
    assert err.value.reason == "too many pages: at least 6, the limit is 5"
    assert len(render.calls) == 2  # stopped before the third part


def test_page_limit_counts_the_cover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(document, "render_cover", lambda info, **kw: FaxPage.at(np.zeros((4, 1728)), "fine"))
    cover = CoverInfo(sender="", recipient="+49 30 123456", date="2026-11-26 14:00", pages=0)
    with pytest.raises(BadDocument, match="at least 4, the limit is 3"):
        compose_document(mail("x"), render=FakeRender(pages=3), cover=cover, max_pages=3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown resolution"):
        compose_document(mail("x"), resolution="high", render=never_render)
    with pytest.raises(ValueError, match="max_pages"):
        compose_document(mail("x"), max_pages=0, render=never_render)


# -- cover page and resolution ----------------------------------------------------------------------------


def test_cover_page_first_with_the_total_page_count(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[CoverInfo, dict[str, Any]]] = []

    def fake_cover(info: CoverInfo, **kw: Any) -> FaxPage:
        seen.append((info, kw))
        return FaxPage.at(np.ones((4, 1728)), kw["resolution"])

    monkeypatch.setattr(document, "render_cover", fake_cover)
    msg = mail("Text")
    attach_pdf(msg, b"%PDF-1.4 fake")
    cover = CoverInfo(
        sender="", recipient="ACME (+49 30 123456)", date="2026-11-26 14:00", pages=0, comment="Hi"
    )
    doc = compose_document(msg, render=FakeRender(pages=2), cover=cover, resolution="standard", logo=b"LOGO")
    assert [(p.kind, p.first_page, p.page_count) for p in doc.parts] == [
        ("cover", 0, 1),
        ("text", 1, 2),
        ("attachment", 3, 2),
    ]
    info, kw = seen[0]
    assert (info.pages, info.sender, info.subject, info.recipient, info.comment) == (
        5,
        "Alice Example <alice@example.com>",
        "Order 4711",
        "ACME (+49 30 123456)",
        "Hi",
    )
    assert kw == {"resolution": "standard", "logo": b"LOGO"}
    assert doc.pages[0].pels.all() and doc.pages[0].ydpi == 98.0


def test_real_cover_page() -> None:
    cover = CoverInfo(sender="Alice", recipient="+49 30 123456", date="2026-11-26 14:00", pages=0)
    doc = compose_document(mail("Text"), render=FakeRender(), cover=cover)
    assert doc.page_count == 2 and doc.pages[0].rows == 2286 and doc.pages[0].pels.any()


def test_resolution_is_passed_to_the_renderer() -> None:
    render = FakeRender()
    doc = compose_document(mail("x"), render=render, resolution="superfine")
    assert render.calls[0]["res"] == "superfine" and doc.resolution == "superfine"
