"""An SMPP v3.4 SMSC simulator for tests, run as its own process, and the class that drives it.

What it does
------------
``python -m tests.peers.smsc --port P --control-port C --log FILE`` listens for ESMEs on
127.0.0.1:P (any system_id/password binds) and:

* accepts every ``submit_sm`` with message id ``<incarnation>-<n>`` and appends one JSON line
  per submit to FILE (source, destination, esm_class, data_coding, registered_delivery,
  short_message as hex, message_id), written and flushed *before* the response goes out;
* sends a delivery receipt (``deliver_sm`` esm_class 0x04, SMPP v3.4 Appendix B text plus the
  ``receipted_message_id`` and ``message_state`` TLVs) for each submit that asked for one, unless
  ``--no-receipts``;
* refuses submits to chosen destinations (``--refuse 15550000=0x0B``) with that status;
* takes commands on a line-based TCP control port (one JSON object per line, one JSON answer):
  ``ping``, ``mo`` (a text from a handset, split into concatenated UCS-2 or GSM 7-bit parts with
  a UDH, sent all at once or one at a time; TON international for numbers of 8 or more digits,
  else unknown, unless given), ``receipt``, ``set`` (receipts on/off, refusals),
  ``unbind`` (the SMSC ends the binds).  The answers carry the ``deliver_sm_resp`` statuses,
  which are also logged.

:class:`SmscProcess` starts, stops (SIGTERM), kills and restarts it on the same ports and wraps
the control commands; ``submits()`` reads the log.  Its methods block: from a coroutine call them
through ``asyncio.to_thread``.  ``python -m tests.peers.smsc --selfcheck`` drives a simulator with
smpp34's own client.

How it works
------------
smpp34's ``Server`` (Rust core) does the framing, binds and ``enquire_link``; this file only
answers its events.  Test-only: smpp34 is a test dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import smpp34  # test dependency: importing this module without it fails (pytest.importorskip works)

from tests.peers.ports import free_port
from tests.peers.procs import PeerError, Proc, wait_until

__all__ = ["SmscProcess", "mo_parts"]

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STAT_STATE = {
    "ENROUTE": 1,
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "REJECTD": 8,
}
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427


# -- parts of a text from a handset (written independently of ums.sms.gsm's splitter) ------------------


def mo_parts(text: str, coding: str = "auto", ref: int = 1) -> list[tuple[int, int, bytes]]:
    """``(esm_class, data_coding, short_message)`` for each part of ``text`` (8-bit reference UDH)."""
    if coding == "auto":
        from ums.sms.gsm import gsm7_encodable

        coding = "gsm7" if gsm7_encodable(text) else "ucs2"
    if coding == "ucs2":
        data, unit, single, per_part, dcs = text.encode("utf-16-be"), 2, 140, 134, 8
    elif coding == "gsm7":
        from ums.sms.gsm import encode_gsm7

        data, unit, single, per_part, dcs = encode_gsm7(text), 1, 160, 153, 0
    else:
        raise ValueError(f"coding must be auto, gsm7 or ucs2, not {coding!r}")
    if len(data) <= single:
        return [(0, dcs, data)]
    chunks: list[bytes] = []
    while data:
        cut = min(per_part, len(data))
        if cut < len(data):
            if unit == 2 and 0xD8 <= data[cut - 2] <= 0xDB:  # do not split a surrogate pair
                cut -= 2
            elif unit == 1 and data[cut - 1] == 0x1B:  # nor an escape pair
                cut -= 1
        chunks.append(data[:cut])
        data = data[cut:]
    total = len(chunks)
    return [
        (0x40, dcs, bytes((5, 0, 3, ref & 0xFF, total, seq)) + chunk) for seq, chunk in enumerate(chunks, 1)
    ]


# -- the simulator process ------------------------------------------------------------------------------


class Simulator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.port: int = args.port
        self.control_port: int = args.control_port
        self.incarnation: int = args.incarnation
        self.receipts: bool = not args.no_receipts
        self.refuse: dict[str, int] = dict(_refusal(r) for r in args.refuse)
        self.log_file = open(args.log, "a", encoding="utf-8")  # closed in run()
        self.sessions: dict[str, Any] = {}
        self.submits: dict[str, dict[str, Any]] = {}
        self.count = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.server = smpp34.Server(host=HOST, port=self.port, system_id="SIMSMSC")

    def log(self, event: str, **fields: Any) -> None:
        fields = {"event": event, "incarnation": self.incarnation, "t": round(time.time(), 3), **fields}
        self.log_file.write(json.dumps(fields) + "\n")
        self.log_file.flush()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        await self.server.start()
        control = await asyncio.start_server(self.control, HOST, self.control_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.log("start", port=self.port)
        print(f"smsc listening port={self.port} control={self.control_port}", flush=True)
        events = loop.create_task(self.events())
        await stop.wait()
        events.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await events
        control.close()
        await control.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await self.server.stop()
        self.log("stop")
        self.log_file.close()

    async def events(self) -> None:
        while True:
            ev = await self.server.next()
            if isinstance(ev, smpp34.Esme):
                self.sessions[ev.session_id] = ev
                self.log("bound", system_id=ev.system_id, session=ev.session_id)
            elif isinstance(ev, smpp34.Unbound):
                self.sessions.pop(ev.session_id, None)
                self.log("unbound", session=ev.session_id)
            elif isinstance(ev, smpp34.SubmitSmEvent):
                self.submit(ev)

    def submit(self, ev: Any) -> None:
        record = {
            "source": ev.source_addr,
            "destination": ev.destination_addr,
            "source_ton": ev.source_addr_ton,
            "dest_ton": ev.dest_addr_ton,
            "esm_class": ev.esm_class,
            "data_coding": ev.data_coding,
            "registered_delivery": ev.registered_delivery,
            "short_message": bytes(ev.short_message).hex(),
            "session": ev.session_id,
        }
        status = self.refuse.get(ev.destination_addr)
        if status is not None:
            self.log("submit_refused", status=status, **record)
            ev.reject(status)
            return
        self.count += 1
        message_id = f"{self.incarnation}-{self.count}"
        record["message_id"] = message_id
        self.submits[message_id] = record
        self.log("submit", **record)  # on disk before the ESME hears "accepted"
        ev.accept(message_id)
        if self.receipts and ev.registered_delivery & 0x01:
            self.spawn(self.receipt(message_id, "DELIVRD", "000", True, delay=0.05))

    def session(self) -> Any:
        for esme in reversed(list(self.sessions.values())):
            if esme.can_receive:
                return esme
        return None

    async def wait_session(self, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while (esme := self.session()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("no ESME is bound")
            await asyncio.sleep(0.02)
        return esme

    async def deliver(self, esme: Any, kind: str, **kwargs: Any) -> int | str:
        try:
            resp = await esme.deliver_sm(**kwargs)
        except Exception as exc:  # the session went away, or no answer in time
            self.log("deliver_resp", kind=kind, error=str(exc))
            return str(exc)
        self.log("deliver_resp", kind=kind, status=resp.command_status)
        return int(resp.command_status)

    async def receipt(
        self, message_id: str, stat: str, err: str, tlvs: bool, delay: float = 0.0
    ) -> int | str:
        if delay:
            await asyncio.sleep(delay)
        esme = await self.wait_session()
        sub = self.submits.get(message_id, {})
        stamp = datetime.now(UTC).strftime("%y%m%d%H%M")
        delivered = "001" if stat == "DELIVRD" else "000"
        text = (
            f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{stamp} done date:{stamp}"
            f" stat:{stat} err:{err} text:"
        )
        extra = []
        if tlvs:
            tlv = smpp34.Tlv
            extra = [
                tlv(TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\x00"),
                tlv(TLV_MESSAGE_STATE, bytes((STAT_STATE.get(stat, 7),))),
            ]
        return await self.deliver(
            esme,
            "receipt",
            source_addr=sub.get("destination", "0"),
            destination_addr=sub.get("source", "0"),
            esm_class=0x04,
            short_message=text.encode(),
            tlvs=extra,
        )

    async def mo(
        self,
        source: str,
        dest: str,
        text: str,
        coding: str,
        ref: int,
        sequential: bool,
        tons: tuple[int, int],
    ) -> list[Any]:
        esme = await self.wait_session()
        parts = mo_parts(text, coding, ref)
        sends = [
            self.deliver(
                esme,
                "mo",
                source_addr=source,
                destination_addr=dest,
                source_addr_ton=tons[0],
                dest_addr_ton=tons[1],
                esm_class=esm_class,
                data_coding=dcs,
                short_message=payload,
            )
            for esm_class, dcs, payload in parts
        ]
        if sequential:
            return [await send for send in sends]
        return list(await asyncio.gather(*sends))

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await self.command(json.loads(line))
                except Exception as exc:
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "ping":
            return {"ok": True, "sessions": len(self.sessions), "incarnation": self.incarnation}
        if cmd == "mo":
            statuses = await self.mo(
                req["source"],
                req["dest"],
                req["text"],
                req.get("coding", "auto"),
                int(req.get("ref", 1)),
                bool(req.get("sequential", False)),
                (_ton(req["source"], req.get("source_ton")), _ton(req["dest"], req.get("dest_ton"))),
            )
            return {"ok": True, "statuses": statuses}
        if cmd == "receipt":
            status = await self.receipt(
                req["message_id"], req.get("stat", "DELIVRD"), req.get("err", "000"), req.get("tlvs", True)
            )
            return {"ok": True, "status": status}
        if cmd == "set":
            if "receipts" in req:
                self.receipts = bool(req["receipts"])
            if "refuse" in req:
                self.refuse = {str(k): int(v) for k, v in req["refuse"].items()}
            return {"ok": True}
        if cmd == "unbind":
            for esme in list(self.sessions.values()):
                with contextlib.suppress(Exception):
                    await esme.unbind()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


def _ton(addr: str, ton: int | None) -> int:
    """The TON given, else international (1) for 8 or more digits, unknown (0) for a short number."""
    if ton is not None:
        return int(ton)
    return 1 if addr.isdigit() and len(addr) >= 8 else 0


def _refusal(spec: str) -> tuple[str, int]:
    dest, _, status = spec.partition("=")
    return dest, int(status or "0x0B", 0)


# -- the controller --------------------------------------------------------------------------------------


class SmscProcess:
    """One simulator process on 127.0.0.1:``port``; its files in ``workdir``."""

    def __init__(
        self,
        port: int,
        workdir: Path,
        *,
        control_port: int | None = None,
        receipts: bool = True,
        refuse: dict[str, int] | None = None,
    ) -> None:
        self.port = port
        self.control_port = control_port or free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "smsc-events.log"
        self.receipts = receipts
        self.refuse = dict(refuse or {})
        self.incarnation = 0
        self.proc: Proc | None = None

    def start(self, timeout: float = 15.0) -> SmscProcess:
        self.incarnation += 1
        argv = [
            sys.executable,
            "-m",
            "tests.peers.smsc",
            "--port",
            str(self.port),
            "--control-port",
            str(self.control_port),
            "--log",
            str(self.log_path),
            "--incarnation",
            str(self.incarnation),
        ]
        if not self.receipts:
            argv.append("--no-receipts")
        for dest, status in self.refuse.items():
            argv += ["--refuse", f"{dest}={status}"]
        self.proc = Proc(argv, self.workdir, f"smsc{self.incarnation}", cwd=REPO).start()
        self.proc.wait_log(r"smsc listening", timeout=timeout, stream="out")
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        return self.proc.stop(timeout) if self.proc else None

    def kill(self) -> int | None:
        return self.proc.kill() if self.proc else None

    def restart(self, *, kill: bool = True) -> SmscProcess:
        """Kill (or stop) and start again on the same ports; message ids of the new run start ``<n+1>-``."""
        self.kill() if kill else self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def __enter__(self) -> SmscProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the log -------------------------------------------------------------------------------------------
    def events(self, event: str | None = None, incarnation: int | None = None) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if event is not None and record.get("event") != event:
                continue
            if incarnation is not None and record.get("incarnation") != incarnation:
                continue
            out.append(record)
        return out

    def submits(self, incarnation: int | None = None) -> list[dict[str, Any]]:
        """The submit_sm accepted (all runs, or one ``incarnation``), oldest first."""
        return self.events("submit", incarnation)

    def wait_events(self, event: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def probe() -> bool:
            found[:] = self.events(event)
            return len(found) >= count

        wait_until(probe, timeout, 0.05, f"{count} {event} event(s) in {self.log_path}")
        return found

    # -- control -------------------------------------------------------------------------------------------
    def command(self, timeout: float = 15.0, **request: Any) -> dict[str, Any]:
        with socket.create_connection((HOST, self.control_port), timeout=timeout) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer: dict[str, Any] = json.loads(data or b"{}")
        if not answer.get("ok"):
            raise PeerError(f"smsc control {request.get('cmd')}: {answer.get('error', answer)}")
        return answer

    def ping(self) -> dict[str, Any]:
        return self.command(cmd="ping")

    def send_mo(
        self,
        source: str,
        dest: str,
        text: str,
        *,
        coding: str = "auto",
        ref: int = 1,
        sequential: bool = False,
    ) -> list[int | str]:
        """Deliver a handset's text; the ``deliver_sm_resp`` statuses of its parts (or error texts)."""
        answer = self.command(
            cmd="mo", source=source, dest=dest, text=text, coding=coding, ref=ref, sequential=sequential
        )
        return list(answer["statuses"])

    def send_receipt(
        self, message_id: str, stat: str = "DELIVRD", *, err: str = "000", tlvs: bool = True
    ) -> int | str:
        """Deliver a receipt for ``message_id``; the ``deliver_sm_resp`` status."""
        answer = self.command(cmd="receipt", message_id=message_id, stat=stat, err=err, tlvs=tlvs)
        status: int | str = answer["status"]
        return status

    def set_options(self, *, receipts: bool | None = None, refuse: dict[str, int] | None = None) -> None:
        request: dict[str, Any] = {"cmd": "set"}
        if receipts is not None:
            request["receipts"] = receipts
        if refuse is not None:
            request["refuse"] = refuse
        self.command(**request)

    def unbind(self) -> None:
        self.command(cmd="unbind")


# -- selfcheck: the simulator against smpp34's own client ----------------------------------------------------


async def _selfcheck_client(smsc: SmscProcess) -> list[str]:
    lines: list[str] = []
    client = smpp34.Client(HOST, smsc.port, "check", "pw")
    session = await client.connect()
    try:
        resp = await session.submit_sm(
            "15550100",
            b"hello",
            source_addr="15550199",
            registered_delivery=1,
            source_addr_ton=1,
            dest_addr_ton=1,
        )
        assert resp.is_success and resp.message_id == "1-1", (resp.command_status, resp.message_id)
        lines.append(f"submit_sm accepted as {resp.message_id}")
        receipt = await asyncio.wait_for(session.next(), 5)
        assert isinstance(receipt, smpp34.DeliverSmEvent) and receipt.esm_class == 0x04, receipt
        assert b"id:1-1 " in receipt.short_message and b"stat:DELIVRD" in receipt.short_message
        lines.append(f"receipt: {receipt.short_message.decode()}")
        smsc.set_options(refuse={"15550000": 0x0B})
        refused = await session.submit_sm("15550000", b"x", source_addr="15550199")
        assert refused.command_status == 0x0B, refused.command_status
        lines.append("refusal: ESME_RINVDSTADR")
        text = "Grüße 👋 " * 30
        answer = asyncio.ensure_future(asyncio.to_thread(smsc.send_mo, "15550100", "15550199", text))
        got = []
        for _ in range(len(mo_parts(text))):
            event = await asyncio.wait_for(session.next(), 5)
            assert isinstance(event, smpp34.DeliverSmEvent), event
            got.append(event)
        statuses = await answer
        assert statuses == [0] * len(got), statuses
        assert all(e.esm_class == 0x40 and e.data_coding == 8 for e in got)
        joined = b"".join(bytes(e.short_message)[6:] for e in sorted(got, key=lambda e: e.short_message[5]))
        assert joined.decode("utf-16-be") == text
        lines.append(f"mo: {len(got)} UCS-2 parts rejoin to the text")
        await session.unbind()
    finally:
        await client.stop()
    submits = smsc.submits()
    assert [s["message_id"] for s in submits] == ["1-1"], submits
    assert len(smsc.events("submit_refused")) == 1
    lines.append("log: 1 submit, 1 refusal")
    return lines


def selfcheck() -> int:
    with tempfile.TemporaryDirectory(prefix="smsc-selfcheck-") as tmp:
        smsc = SmscProcess(free_port(), Path(tmp))
        try:
            smsc.start()
            for line in asyncio.run(_selfcheck_client(smsc)):
                print("ok  ", line)
            smsc.restart()
            assert smsc.ping()["incarnation"] == 2
            print("ok   restart on the same port")
        except Exception as exc:
            print("FAIL", type(exc).__name__, exc)
            if smsc.proc:
                print(smsc.proc.log_tail())
            return 1
        finally:
            smsc.stop()
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.smsc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=2775)
    parser.add_argument("--control-port", type=int, default=2776)
    parser.add_argument("--log", default="smsc.jsonl")
    parser.add_argument("--incarnation", type=int, default=1)
    parser.add_argument("--no-receipts", action="store_true")
    parser.add_argument("--refuse", action="append", default=[], metavar="DEST=STATUS")
    parser.add_argument("--selfcheck", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.selfcheck:
        return selfcheck()
    asyncio.run(Simulator(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
