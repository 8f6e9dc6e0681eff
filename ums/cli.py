"""The ``ums`` command line: ``ums serve``, ``ums check-config``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ums.config import ConfigError, load_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ums", description="Unified messaging server")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", "-c", required=True, help="TOML configuration file")
    serve.add_argument("--data-dir", help="data directory (overrides server.data_dir)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            f"{cfg.source}: ok ({len(cfg.accounts)} accounts, {len(cfg.mailboxes)} mailboxes, "
            f"listen {', '.join(str(x) for x in cfg.sip.listen)})"
        )
        return 0
    if args.command == "serve":
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.data_dir:
            cfg = cfg.with_data_dir(Path(args.data_dir))
        from ums.server import run

        return run(cfg, log_level=args.log_level)
    return 2  # pragma: no cover - argparse enforces the choices
