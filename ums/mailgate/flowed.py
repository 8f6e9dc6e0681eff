"""RFC 3676 ``format=flowed`` text, unflowed: the plain text of a mail body as its writer typed it.

What it does
------------
:func:`unflow` joins the soft line breaks of a ``format=flowed`` body (a line ending in a space goes
on in the next line of the same quote depth), undoes space-stuffing, leaves the signature separator
``"-- "`` alone, and writes quoted lines as ``"> text"`` (one ``>`` per depth).  Used by e-mail to
fax (the mail text as a page) and by e-mail to SMS (the text of the message).

How it works
------------
One pass over the lines, keeping the line being joined and its quote depth.  Pure, stdlib only.
"""

from __future__ import annotations

__all__ = ["unflow"]


def unflow(text: str, delsp: bool) -> str:
    """RFC 3676 §4.2: join soft line breaks (a line ending in a space) within one quote depth."""
    out: list[str] = []
    pending: str | None = None
    pending_depth = 0
    for raw in text.split("\n"):
        depth = len(raw) - len(raw.lstrip(">"))
        line = raw[depth:]
        if line.startswith(" "):  # §4.4 space-stuffing
            line = line[1:]
        prefix = ">" * depth + (" " if depth else "")
        if line == "-- " and depth == 0:  # §4.3: the signature separator is never flowed
            if pending is not None:
                out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
            pending = None
            out.append(line)
            continue
        if pending is not None and depth == pending_depth:
            line = pending + line
        elif pending is not None:
            out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
        pending = None
        if line.endswith(" ") and line != "-- ":
            pending, pending_depth = (line[:-1] if delsp else line), depth
            continue
        out.append(prefix + line)
    if pending is not None:
        out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
    return "\n".join(out)
