"""The import arrows of docs/architecture.md, checked on the source with ast."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "ums"

PURE_PACKAGES = ("sip", "media", "fax", "softfax_g711", "fax_t38")
IO_MODULES = {"asyncio", "socket", "threading", "time", "celery", "smtplib", "selectors", "subprocess"}
#: who may import whom (by top-level package under ums); anything not listed may import only these
ALLOWED = {
    "config": set(),
    "log": set(),
    "sip": {"config", "log"},
    "media": {"config", "log"},
    "fax": {"config", "log"},
    "softfax_g711": {"fax", "media", "config", "log"},
    "fax_t38": {"fax", "config", "log"},
    "calls": {
        "sip",
        "media",
        "config",
        "log",
        "store",
        "fax",
        "softfax_g711",
        "fax_t38",
        "voicemail",
        "outbound",
    },
    "store": {"config", "log"},
    "directory": {"config", "log"},
    "render": {"fax", "config", "log"},
    "voicemail": {"media", "store", "config", "log"},
    "mwi": {"sip", "store", "config", "log"},
    "mailgate": {"store", "render", "directory", "config", "log"},
    "pipeline": {"store", "mailgate", "render", "directory", "config", "log"},
    "sms": {"sip", "store", "outbound", "mailgate", "config", "log"},
    "outbound": {"store", "mailgate", "render", "fax", "directory", "config", "log"},
}


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_modules_found() -> None:
    assert len(_modules()) > 10


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_arrows(path: Path) -> None:
    pkg = _package(path)
    if pkg not in ALLOWED:
        return
    for name in _imports(path):
        if not name.startswith("ums."):
            continue
        target = name.split(".")[1]
        if target == pkg:
            continue
        assert target in ALLOWED[pkg], (
            f"{path.relative_to(ROOT)} imports {name}: {pkg} may not import {target}"
        )


@pytest.mark.parametrize(
    "path",
    [p for p in _modules() if _package(p) in PURE_PACKAGES and p.name != "service.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_pure_modules_do_no_io(path: Path) -> None:
    for name in _imports(path):
        assert name.split(".")[0] not in IO_MODULES, f"{path.relative_to(ROOT)} imports {name}"
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"\btime\.(time|monotonic|perf_counter)\(", text), "reads a clock"
    assert "open(" not in re.sub(r"#.*", "", text), "opens a file"


#: shells that drive another package's shell (call legs and lamps go through the SIP shell)
SHELL_ARROWS = {
    "ums.calls.service": {"ums.sip.service"},
    "ums.mwi.service": {"ums.sip.service"},
    "ums.sms.sip": {"ums.sip.service"},
}


def test_only_server_wires_several_services() -> None:
    for path in _modules():
        if path.name == "server.py" and path.parent == ROOT:
            continue
        services = {n for n in _imports(path) if n.startswith("ums.") and n.endswith(".service")}
        module = "ums." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        allowed = {f"ums.{_package(path)}.service"} | SHELL_ARROWS.get(module, set())
        assert services <= allowed, f"{path.relative_to(ROOT)} imports services {sorted(services)}"
