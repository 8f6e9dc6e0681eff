"""The text of a mail's parts: charset fallback, HTML read with and without quotes and cut marks."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

import pytest

from ums.mailgate.mailtext import BLOCK_TAGS, html_text, part_text


def _part(charset: str | None, data: bytes, cte: str = "8bit") -> Message:
    ctype = f"text/plain; charset={charset}" if charset else "text/plain"
    raw = f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode() + data
    return BytesParser(policy=policy.default).parsebytes(raw)


@pytest.mark.parametrize(
    ("charset", "data", "expected"),
    [
        ("iso-8859-1", "Grüße".encode("latin-1"), "Grüße"),
        ("utf-8", "Grüße 🙂".encode(), "Grüße 🙂"),
        ("x-unknown-charset", "Grüße".encode(), "Grüße"),  # unknown label: UTF-8
        ("us-ascii", "Grüße".encode(), "Grüße"),  # wrong label: UTF-8
        ("utf-8", "Grüße".encode("latin-1"), "Grüße"),  # not UTF-8 either: latin-1
        (None, b"caf\xe9", "café"),
    ],
)
def test_part_text_charset_fallback(charset: str | None, data: bytes, expected: str) -> None:
    assert part_text(_part(charset, data)) == expected


def test_part_text_undoes_transfer_encoding() -> None:
    assert part_text(_part("utf-8", b"Gr=C3=BC=C3=9Fe=\r\n dich", "quoted-printable")) == "Grüße dich"
    msg = EmailMessage()
    msg.set_content("hello\n")
    assert part_text(msg) == "hello\n"


SAMPLE = (
    "<html><head><title>T</title><style>p {}</style></head><body>"
    "<p>Hello   there,</p><div><pre>a  b</pre></div>"
    "<div><blockquote>quoted</blockquote></div>"
    "<div class='Signature'>Jane</div>"
    "<ul><li>one</li></ul>"
    "<div id='divRplyFwdMsg'>From: Bob</div><p>history</p>"
    "</body></html>"
)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def test_html_text_everything_but_dropped_marks() -> None:
    text = html_text(SAMPLE, skip_quotes=False, cut_marks=frozenset(), drop_marks=frozenset({"signature"}))
    assert _lines(text) == ["Hello there,", "a b", "quoted", "one", "From: Bob", "history"]


def test_html_text_quotes_and_history_cut() -> None:
    text = html_text(
        SAMPLE,
        skip_quotes=True,
        cut_marks=frozenset({"divrplyfwdmsg"}),
        drop_marks=frozenset({"signature"}),
        keep_pre=True,
        blocks=BLOCK_TAGS | {"pre", "ul"},
    )
    assert _lines(text) == ["Hello there,", "a  b", "one"]


def test_html_text_line_breaks_and_stripping() -> None:
    html = "<p> a <br> b </p>x<hr>y"
    none: frozenset[str] = frozenset()
    assert html_text(html, skip_quotes=False, cut_marks=none, drop_marks=none) == "\n a \n b \nxy"
    both = frozenset({"br", "hr"})
    text = html_text(html, skip_quotes=False, cut_marks=none, drop_marks=none, line_breaks=both)
    assert text == "\n a \n b \nx\ny"
    text = html_text(html, skip_quotes=False, cut_marks=none, drop_marks=none, strip_lines=True)
    assert text == "\na\nb\nxy"
