"""One log line per event, as ``event=NAME key=value ...``.

What it does
------------
``kv("call.answered", call_id="a1", number="100")`` formats the message part;
``setup_logging(level)`` installs a stderr handler with a timestamp and level.
Values with spaces, quotes or ``=`` are quoted so a line splits back into its
fields with ``shlex.split``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["kv", "setup_logging"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    else:
        text = str(value)
    if text == "" or any(ch in text for ch in ' "=\t\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def kv(event: str, **fields: Any) -> str:
    """``event=NAME k=v ...`` with values quoted where needed; None values are left out."""
    parts = [f"event={event}"]
    parts.extend(f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None)
    return " ".join(parts)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
