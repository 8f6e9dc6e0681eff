"""The text of a mail's parts: a text MIME part decoded, an HTML body as lines of text.

What it does
------------
* :func:`part_text` decodes a text MIME part (``Content-Transfer-Encoding`` undone) with the charset
  its Content-Type names; an unknown charset or bytes that do not decode fall back to UTF-8, then to
  latin-1, which decodes anything, so a mail with a wrong label is still read.
* :func:`html_text` (parser :class:`HtmlText`) takes the text of an HTML body: a line per block,
  runs of white space in the text as one space, ``head``, ``style``, ``script`` and the like left
  out, and elements whose ``id`` or ``class`` holds one of ``drop_marks`` (signatures, quoted
  history) left out with their content.  The callers choose the rest: ``skip_quotes`` leaves out
  ``blockquote``; ``cut_marks`` ends the text at the first element so marked (Outlook's
  ``divRplyFwdMsg``, whose history follows unwrapped); ``keep_pre`` keeps the white space of
  ``pre``; ``blocks`` and ``line_breaks`` say which tags break the line; ``strip_lines`` strips
  every line.

Used by e-mail to fax (``ums.outbound.document``: is the mail text empty) and by e-mail to SMS
(``ums.sms.text``: the words of the message).

How it works
------------
Pure, stdlib only: the payload decoded by ``email``, the HTML read with ``html.parser`` (character
references converted) keeping a stack of the open elements whose content is left out.
"""

from __future__ import annotations

import re
from email.message import Message
from html.parser import HTMLParser
from typing import Final

__all__ = ["BLOCK_TAGS", "HtmlText", "html_text", "part_text"]

#: tags that start and end a line of text (``blocks`` of :func:`html_text` by default)
BLOCK_TAGS: Final = frozenset({"p", "div", "tr", "li", "table", "h1", "h2", "h3", "h4", "h5", "h6"})

_SKIP: Final = frozenset({"head", "style", "script", "title", "template", "noscript"})
_VOID: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
_WHITE: Final = re.compile(r"[ \t\r\n]+")


def part_text(part: Message) -> str:
    """The decoded text of a MIME part: its declared charset, else UTF-8, else latin-1."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    for charset in (part.get_content_charset(), "utf-8"):
        if charset:
            try:
                return data.decode(charset)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("latin-1")


class HtmlText(HTMLParser):
    """Text of an HTML body, collected in :attr:`out` (see :func:`html_text` for the parameters)."""

    def __init__(
        self,
        *,
        skip_quotes: bool,
        cut_marks: frozenset[str],
        drop_marks: frozenset[str],
        keep_pre: bool = False,
        blocks: frozenset[str] = BLOCK_TAGS,
        line_breaks: frozenset[str] = frozenset({"br"}),
    ) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip_tags = _SKIP | {"blockquote"} if skip_quotes else _SKIP
        self._cut_marks = cut_marks
        self._drop_marks = drop_marks
        self._keep_pre = keep_pre
        self._blocks = blocks
        self._line_breaks = line_breaks
        self._skip: list[str] = []  # open elements whose content is left out
        self._pre = 0
        self._done = False  # a cut mark was seen: the rest is left out

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._done:
            return
        if tag in _VOID:
            if not self._skip and tag in self._line_breaks:
                self.out.append("\n")
            return
        marks = {
            word.lower()
            for name, value in attrs
            if name in ("id", "class") and value
            for word in value.split()
        }
        if marks & self._cut_marks and not self._skip:
            self._done = True
            return
        if self._skip or tag in self._skip_tags or marks & self._drop_marks:
            self._skip.append(tag)
            return
        if tag in self._blocks:
            self.out.append("\n")
        if tag == "pre" and self._keep_pre:
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if self._done:
            return
        if self._skip:
            if tag in self._skip:
                while self._skip and self._skip.pop() != tag:
                    pass
            return
        if tag in self._blocks:
            self.out.append("\n")
        if tag == "pre" and self._pre:
            self._pre -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and not self._done:
            self.out.append(data if self._pre else _WHITE.sub(" ", data))


def html_text(
    html: str,
    *,
    skip_quotes: bool,
    cut_marks: frozenset[str],
    drop_marks: frozenset[str],
    keep_pre: bool = False,
    blocks: frozenset[str] = BLOCK_TAGS,
    line_breaks: frozenset[str] = frozenset({"br"}),
    strip_lines: bool = False,
) -> str:
    """The text of an HTML body, a line per block.

    Parameters
    ----------
    skip_quotes
        Leave out ``blockquote`` elements (quoted history).
    cut_marks
        id or class words (lower case) of an element from which on everything is left out.
    drop_marks
        id or class words (lower case) of elements left out with their content.
    keep_pre
        Keep the white space inside ``pre`` as it is.
    blocks
        Tags whose start and end tags break the line.
    line_breaks
        Void tags (``br``, ``hr``) that break the line.
    strip_lines
        Strip white space from both ends of every line.
    """
    parser = HtmlText(
        skip_quotes=skip_quotes,
        cut_marks=cut_marks,
        drop_marks=drop_marks,
        keep_pre=keep_pre,
        blocks=blocks,
        line_breaks=line_breaks,
    )
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    return "\n".join(line.strip() for line in text.split("\n")) if strip_lines else text
