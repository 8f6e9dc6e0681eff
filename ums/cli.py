"""The ``ums`` command line: ``ums serve``, ``ums check-config``, ``ums mailbox``, ``ums fax``."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ums.config import Config, ConfigError, load_config

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

    # handled before parsing (see main); listed here for --help
    sub.add_parser(
        "worker", help="run a delivery worker (Celery): ums worker --config FILE [--concurrency N]"
    )

    mb = sub.add_parser("mailbox", help="list messages, mark them read or unread")
    mb.add_argument("--config", "-c", required=True)
    mb.add_argument("--data-dir")
    mbsub = mb.add_subparsers(dest="action", required=True)
    ls = mbsub.add_parser("list", help="messages of one mailbox or of all")
    ls.add_argument("number", nargs="?")
    for action in ("mark-read", "mark-unread"):
        mk = mbsub.add_parser(
            action, help=f"{action.replace('-', ' ')}: the given messages, or all of the mailbox"
        )
        mk.add_argument("number")
        mk.add_argument("ids", nargs="*", metavar="ID")

    from ums.outbound import cli as outbound_cli
    from ums.render import fax_cli

    fax_cli.add_parsers(sub, extra=outbound_cli.add_parsers)
    return p


def _mailbox(args: argparse.Namespace) -> int:
    from ums.store.index import MessageIndex

    cfg = _load(args, args.config)
    path = cfg.server.data_dir / "index.sqlite"
    if not path.exists():
        print(f"error: no message index at {path}", file=sys.stderr)
        return 1
    numbers = {m.number for m in cfg.mailboxes}
    number = getattr(args, "number", None)
    if number is not None and number not in numbers:
        print(f"error: {number} is not a mailbox in {cfg.source}", file=sys.stderr)
        return 2
    with MessageIndex(path) as index:
        if args.action == "list":
            for rec in index.list(mailbox=number):
                if rec.kind == "sms":
                    length = f"{len(str(rec.meta.get('text', '')))}ch"
                elif rec.duration is not None:
                    length = f"{rec.duration:.1f}s"
                else:
                    length = f"{rec.pages or 0}p"
                caller = rec.caller_name or rec.caller_number or "unknown"
                print(
                    f"{rec.id}  {rec.mailbox:>8}  {rec.kind:5}  {rec.state:4}  {rec.delivery:9}  "
                    f"{rec.received_at:%Y-%m-%d %H:%M}  {length:>7}  {caller}"
                )
            for mailbox, (new, old) in sorted(index.all_counts(("voice", "fax", "sms")).items()):
                if number is None or mailbox == number:
                    print(f"mailbox {mailbox}: {new} new, {old} old")
            return 0
        state: Literal["new", "read"] = "read" if args.action == "mark-read" else "new"
        assert number is not None
        ids = args.ids or [r.id for r in index.list(mailbox=number)]
        changed = 0
        for ident in ids:
            found = index.get(ident)
            if found is None or found.mailbox != number:
                print(f"error: no message {ident} in mailbox {number}", file=sys.stderr)
                return 2
            changed += index.set_state(ident, state)
        new, old = index.counts(number)
        print(f"mailbox {number}: {changed} marked {state}; {new} new, {old} old")
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _load(args: argparse.Namespace, path: str) -> Config:
    """The configuration named on the command line, with ``--data-dir`` applied."""
    cfg = load_config(path)
    data_dir = getattr(args, "data_dir", None)
    return cfg.with_data_dir(Path(data_dir)) if data_dir else cfg


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        # until Celery installs its own handlers nothing has been taken from the queue: a stop
        # request during start-up is a clean exit
        signal.signal(signal.SIGTERM, _exit_cleanly)
        from ums.pipeline.worker import main as worker_main

        return worker_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            cfg = _load(args, args.config)
            if cfg.fax_gateway.enabled:  # the number and sender rules are checked where they are used
                from ums.outbound import cli as outbound_cli

                outbound_cli.check_config(cfg)
            print(
                f"{cfg.source}: ok ({len(cfg.accounts)} accounts, {len(cfg.mailboxes)} mailboxes, "
                f"listen {', '.join(str(x) for x in cfg.sip.listen)})"
            )
            return 0
        if args.command == "mailbox":
            return _mailbox(args)
        if args.command == "fax":
            from ums.outbound import cli as outbound_cli
            from ums.render import fax_cli

            if args.fax_command in outbound_cli.COMMANDS:
                return outbound_cli.run(args)
            return fax_cli.run(args)
        if args.command == "serve":
            cfg = _load(args, args.config)
            from ums.server import run

            return run(cfg, log_level=args.log_level)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse enforces the choices
