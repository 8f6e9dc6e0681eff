"""SMPP v3.4 transport: texts out as ``submit_sm``, texts and delivery receipts in as ``deliver_sm``.

What it does
------------
:class:`SmppTransport` implements :class:`ums.sms.transport.SmsTransport` against an SMSC, with
:class:`SmppSettings` (``[sms.smpp]``, :meth:`SmppSettings.from_config`):

* ``start`` connects and binds as a transceiver (SMPP v3.4 §4.1.5) in the background, keeps the
  link alive with ``enquire_link`` (§4.11) and reconnects with exponential backoff; every state
  change is one ``event=sms.smpp.state`` log line.
* ``submit`` splits the text with :func:`ums.sms.gsm.split_sms` (GSM 7-bit when possible, else
  UCS-2, concatenation UDH with a reference derived from the job id, so a retry of the same job
  reuses it) and sends one ``submit_sm`` (§4.4) per part, up to ``window`` outstanding, matched to
  their responses by sequence number.  Error statuses (§5.1.3) are permanent or temporary as
  :func:`ums.sms.smpp_pdu.classify_status` says; a submit while not bound waits
  ``submit_timeout`` for a bind, then is refused as temporary.
* An incoming ``deliver_sm`` (§4.6) is a delivery receipt or a text from a handset; concatenated
  texts are put together first.  ``deliver_sm_resp`` is sent only after ``on_incoming`` /
  ``on_receipt`` returned; a callback that raises is answered ESME_RX_T_APPN so the SMSC delivers
  again.

How it works
------------
The asyncio shell around the pure PDU layer of :mod:`ums.sms.smpp_pdu`: one reader task per
connection (responses resolve futures keyed by sequence number), one keep-alive task, and one
worker that runs the callbacks in arrival order while the reader goes on.

Concatenated texts from handsets and durability: the ``deliver_sm_resp`` of every part is held
until the whole text was handed to ``on_incoming`` (then nothing acknowledged is lost), but at
most ``mo_part_hold`` seconds: an SMSC with a window smaller than the number of parts waits for
the first answer before it sends the next part, and would never complete the text.  A part
answered on that timer is kept in memory until the rest arrives (``mo_part_expiry``); only a
crash in that interval loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from ums.config import SmppConfig
from ums.log import kv
from ums.sms.gsm import SmsFormatError, SmsTooLong, split_sms
from ums.sms.smpp_pdu import (
    BIND_TRANSCEIVER,
    DELIVER_SM,
    ENQUIRE_LINK,
    ESM_TYPE_INTERMEDIATE,
    ESM_TYPE_MASK,
    ESME_RINVCMDID,
    ESME_ROK,
    ESME_RX_P_APPN,
    ESME_RX_T_APPN,
    GENERIC_NACK,
    RESP,
    SUBMIT_SM,
    UNBIND,
    Backoff,
    BindBody,
    MoReassembler,
    Pdu,
    PduFramer,
    ReassemblyError,
    ShortMessage,
    SmppCodecError,
    build_submits,
    classify_status,
    decode_message_id,
    incoming_part,
    is_receipt,
    our_number,
    receipt_from_deliver,
    status_name,
    udh_reference,
)
from ums.sms.transport import IncomingSms, OnIncoming, OnReceipt, OutgoingSms, SubmitResult

__all__ = ["SmppSettings", "SmppTransport"]

log = logging.getLogger("ums.sms")


@dataclass(frozen=True)
class SmppSettings(SmppConfig):
    """``[sms.smpp]`` (the fields of :class:`ums.config.SmppConfig`), checked for the transport.

    TON/NPI (§5.2.5, §5.2.6) default to international / E.164: a ``+`` in our numbers is dropped
    on the wire.  ``window`` is how many ``submit_sm`` may wait for their response at once.
    Times are in seconds.  A value the transport cannot work with raises ``ValueError``.
    """

    @classmethod
    def from_config(cls, cfg: SmppConfig) -> SmppSettings:
        """The settings of a configuration's ``[sms.smpp]`` section, every field as it is there."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("sms.smpp: host is empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"sms.smpp: port {self.port} is out of range 1..65535")
        for name, value, longest in (
            ("system_id", self.system_id, 15),
            ("password", self.password, 8),
            ("system_type", self.system_type, 12),
        ):
            if len(value.encode("latin-1", errors="replace")) > longest:
                raise ValueError(f"sms.smpp: {name} is longer than {longest} characters (SMPP v3.4 §4.1.1)")
        for name in ("source_ton", "source_npi", "dest_ton", "dest_npi"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"sms.smpp: {name} {getattr(self, name)} is out of range 0..255")
        if self.window < 1:
            raise ValueError(f"sms.smpp: window must be at least 1, not {self.window}")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("sms.smpp: need 0 < reconnect_min <= reconnect_max")
        for name in ("enquire_link", "submit_timeout", "mo_part_hold", "mo_part_expiry"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sms.smpp: {name} must be positive, not {getattr(self, name)}")


class _LinkClosed(ConnectionError):
    pass


class _Link:
    """One TCP connection to the SMSC: the writer, the framer, and requests waiting for a response."""

    def __init__(
        self,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_close: Callable[[_Link], None],
    ) -> None:
        self.number = number
        self.on_close = on_close
        self.reader = reader
        self.writer = writer
        self.framer = PduFramer()
        self.pending: dict[int, asyncio.Future[Pdu]] = {}
        self.reason = ""
        self.done = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self.done.is_set()

    def send(self, pdu: Pdu) -> None:
        if self.closed:
            raise _LinkClosed(self.reason)
        self.writer.write(pdu.encode())

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.reason = reason
        self.done.set()
        self.writer.close()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(_LinkClosed(reason))
        self.pending.clear()
        self.on_close(self)

    async def wait_closed(self) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)


Token = tuple[_Link, int]
_SEQUENCE_MAX: Final = 0x7FFFFFFF


def _on_link(link: _Link, token: Token) -> bool:
    return token[0] is link


class SmppTransport:
    """SMS over SMPP v3.4 as an ESME bound as transceiver; see the module docstring."""

    name = "smpp"

    def __init__(self, settings: SmppSettings) -> None:
        self.settings = settings
        self._on_incoming: OnIncoming | None = None
        self._on_receipt: OnReceipt | None = None
        self._link: _Link | None = None
        self._links = 0
        self._sequence = 0
        self._bound = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._window = asyncio.Semaphore(settings.window)
        self._inbox: asyncio.Queue[tuple[_Link, Pdu] | None] = asyncio.Queue()
        self._mo: MoReassembler[Token] = MoReassembler(settings.mo_part_hold, settings.mo_part_expiry)
        self._runner: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._where = f"{settings.host}:{settings.port}"

    # -- public ------------------------------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return self._link is not None and not self._link.closed and self._bound.is_set()

    def ready(self) -> bool:
        """True while bound: a submit can go out now."""
        return self.bound

    async def start(self, on_incoming: OnIncoming, on_receipt: OnReceipt) -> None:
        """Connect and bind in the background; returns at once."""
        if self._runner is not None:
            raise RuntimeError("the SMPP transport is already started")
        self._on_incoming = on_incoming
        self._on_receipt = on_receipt
        loop = asyncio.get_running_loop()
        self._worker = loop.create_task(self._work(), name="smpp-worker")
        self._runner = loop.create_task(self._run(), name="smpp-link")

    async def wait_bound(self, timeout: float) -> bool:
        """True once bound (at most ``timeout`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bound.wait(), timeout)
        return self.bound

    async def stop(self) -> None:
        """Finish the callback in progress, unbind (§4.2) and close; texts not answered come again later."""
        self._stopping = True
        self._inbox.put_nowait(None)
        if self._worker is not None:
            await self._finish(self._worker, 10.0)
        self._stop.set()
        if self._runner is not None:
            await self._finish(self._runner, 5.0)

    async def submit(self, sms: OutgoingSms) -> SubmitResult:
        """Send ``sms`` as one ``submit_sm`` per part; see the module docstring."""
        try:
            parts = split_sms(sms.text, udh_reference(sms.job_id))
            bodies = [
                body.encode()
                for body in build_submits(
                    sms,
                    parts,
                    source_ton=self.settings.source_ton,
                    source_npi=self.settings.source_npi,
                    dest_ton=self.settings.dest_ton,
                    dest_npi=self.settings.dest_npi,
                    registered_delivery=sms.receipt and self.settings.receipts,
                )
            ]
        except (SmsTooLong, SmppCodecError) as exc:
            return self._submitted(sms, SubmitResult(False, permanent=True, reason=exc.reason, parts=0))
        link = await self._wait_link(self.settings.submit_timeout)
        if link is None:
            reason = f"not bound to the SMSC at {self._where} (waited {self.settings.submit_timeout:g} s)"
            return self._submitted(sms, SubmitResult(False, reason=reason, parts=len(parts)))
        answers = await asyncio.gather(
            *(self._submit_part(link, body) for body in bodies), return_exceptions=True
        )
        ids: list[str] = []
        refusals: list[tuple[int, str, bool]] = []
        for number, answer in enumerate(answers, start=1):
            if isinstance(answer, Pdu) and answer.status == ESME_ROK and answer.command_id != GENERIC_NACK:
                ids.append(decode_message_id(answer.body))
            elif isinstance(answer, Pdu):
                cls = classify_status(answer.status)
                refusals.append((number, f"{cls.name} (0x{answer.status:08X})", cls.permanent))
            elif isinstance(answer, TimeoutError):
                wait = f"{self.settings.submit_timeout:g}"
                refusals.append((number, f"no submit_sm_resp within {wait} s", False))
            elif isinstance(answer, ConnectionError):
                refusals.append((number, f"connection to the SMSC lost ({answer})", False))
            else:
                raise answer
        if not refusals:
            return self._submitted(sms, SubmitResult(True, message_ids=tuple(ids), parts=len(parts)))
        number, why, _ = refusals[0]
        where = f"part {number} of {len(parts)}: " if len(parts) > 1 else ""
        result = SubmitResult(
            False,
            message_ids=tuple(ids),
            permanent=any(p for _, _, p in refusals),
            reason=f"SMSC refused the text: {where}{why}",
            parts=len(parts),
        )
        return self._submitted(sms, result)

    # -- submit helpers ----------------------------------------------------------------------------------
    def _submitted(self, sms: OutgoingSms, result: SubmitResult) -> SubmitResult:
        log.info(
            kv(
                "sms.smpp.submit",
                job=sms.job_id,
                to=sms.to,
                parts=result.parts,
                accepted=result.accepted,
                ids=",".join(result.message_ids) or None,
                permanent=result.permanent if not result.accepted else None,
                reason=result.reason or None,
            )
        )
        return result

    async def _wait_link(self, timeout: float) -> _Link | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._stopping:
            link = self._link
            if link is not None and not link.closed:
                return link
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bound.wait(), remaining)
        return None

    async def _submit_part(self, link: _Link, body: bytes) -> Pdu:
        async with self._window:
            return await self._request(link, SUBMIT_SM, body, self.settings.submit_timeout)

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % _SEQUENCE_MAX + 1
        return self._sequence

    async def _request(self, link: _Link, command_id: int, body: bytes, timeout: float) -> Pdu:
        """Send a request and wait for its response (or generic_nack) by sequence number (§2.6)."""
        sequence = self._next_sequence()
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        link.send(Pdu(command_id, ESME_ROK, sequence, body))
        link.pending[sequence] = future
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            link.pending.pop(sequence, None)

    # -- connection cycle --------------------------------------------------------------------------------
    def _state(self, state: str, **fields: object) -> None:
        level = logging.WARNING if state == "disconnected" and not self._stopping else logging.INFO
        log.log(level, kv("sms.smpp.state", state=state, smsc=self._where, **fields))

    async def _run(self) -> None:
        backoff = Backoff(self.settings.reconnect_min, self.settings.reconnect_max)
        while not self._stop.is_set():
            self._links += 1
            self._state("connecting", link=self._links)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.settings.host, self.settings.port),
                    self.settings.submit_timeout,
                )
            except (OSError, TimeoutError) as exc:
                reason = f"connect failed: {exc or type(exc).__name__}"
            else:
                reason = await self._session(_Link(self._links, reader, writer, self._closed), backoff)
            self._state("disconnected", link=self._links, reason=reason)
            if self._stop.is_set():
                break
            delay = backoff.next_delay()
            self._state("waiting", retry_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def _closed(self, link: _Link) -> None:
        """A link closed: submits wait for the next bind; parts held on it cannot be answered any more."""
        if self._link is link:
            self._link = None
            self._bound.clear()
        self._mo.forget(functools.partial(_on_link, link))

    async def _session(self, link: _Link, backoff: Backoff) -> str:
        """Bind and serve one connection until it fails or we stop; returns why it ended."""
        reader = asyncio.create_task(self._read(link), name=f"smpp-read-{link.number}")
        keepalive: asyncio.Task[None] | None = None
        reason = "stopped"
        try:
            reason = await self._bind(link)
            if reason:
                return reason
            backoff.reset()
            keepalive = asyncio.create_task(self._keepalive(link), name=f"smpp-keepalive-{link.number}")
            waiters = [asyncio.create_task(self._stop.wait()), asyncio.create_task(link.done.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if link.closed:
                reason = link.reason
            else:
                self._closed(link)  # no new submits on this link while it unbinds
                await self._unbind(link)
                reason = "stopped"
            return reason
        finally:
            link.close(reason)
            for task in (reader, keepalive):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await link.wait_closed()

    async def _bind(self, link: _Link) -> str:
        """§4.1.5 bind_transceiver; ``""`` when bound, else why not."""
        body = BindBody(self.settings.system_id, self.settings.password, self.settings.system_type).encode()
        try:
            answer = await self._request(link, BIND_TRANSCEIVER, body, self.settings.submit_timeout)
        except TimeoutError:
            return f"no bind_transceiver_resp within {self.settings.submit_timeout:g} s"
        except ConnectionError:
            return link.reason
        if answer.status != ESME_ROK:
            return f"bind refused: {status_name(answer.status)} (0x{answer.status:08X})"
        self._link = link
        self._bound.set()
        self._state("bound", link=link.number, system_id=decode_message_id(answer.body) or None)
        return ""

    async def _unbind(self, link: _Link) -> None:
        """§4.2: unbind and wait briefly for unbind_resp (some SMSCs just close the connection)."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            await self._request(link, UNBIND, b"", min(2.0, self.settings.submit_timeout))

    async def _keepalive(self, link: _Link) -> None:
        """§4.11: enquire_link every ``enquire_link`` seconds; no answer in time closes the link."""
        while not link.closed:
            await asyncio.sleep(self.settings.enquire_link)
            try:
                await self._request(link, ENQUIRE_LINK, b"", self.settings.submit_timeout)
            except TimeoutError:
                link.close(f"no enquire_link_resp within {self.settings.submit_timeout:g} s")
            except ConnectionError:
                return

    async def _read(self, link: _Link) -> None:
        reason = "connection closed by the SMSC"
        try:
            while not link.closed:
                data = await link.reader.read(65536)
                if not data:
                    break
                for pdu in link.framer.feed(data):
                    self._dispatch(link, pdu)
        except SmppCodecError as exc:
            reason = f"bad data from the SMSC: {exc.reason}"
        except OSError as exc:
            reason = f"connection error: {exc}"
        link.close(reason)

    def _dispatch(self, link: _Link, pdu: Pdu) -> None:
        if pdu.is_response:
            future = link.pending.get(pdu.sequence)
            if future is not None and not future.done():
                future.set_result(pdu)
            else:
                log.info(kv("sms.smpp.late_response", pdu=pdu.name, sequence=pdu.sequence))
        elif pdu.command_id == ENQUIRE_LINK:
            link.send(pdu.response())
        elif pdu.command_id == UNBIND:
            link.send(pdu.response())
            link.close("unbound by the SMSC")
        elif pdu.command_id == DELIVER_SM:
            self._inbox.put_nowait((link, pdu))
        else:
            log.warning(kv("sms.smpp.unsupported", pdu=pdu.name, sequence=pdu.sequence))
            link.send(Pdu(GENERIC_NACK, ESME_RINVCMDID, pdu.sequence))

    # -- incoming deliver_sm -----------------------------------------------------------------------------
    async def _work(self) -> None:
        """Runs the callbacks one at a time, in arrival order, and answers each deliver_sm afterwards."""
        loop = asyncio.get_running_loop()
        while True:
            deadline = self._mo.next_deadline()
            item: tuple[_Link, Pdu] | None = None
            try:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                item = await asyncio.wait_for(self._inbox.get(), timeout)
            except TimeoutError:
                pass
            now = loop.time()
            for token in self._mo.due(now):
                log.info(kv("sms.smpp.part_answered", sequence=token[1], held=self.settings.mo_part_hold))
                self._answer(token, ESME_ROK)
            for key, tokens in self._mo.expired(now):
                log.warning(kv("sms.smpp.parts_dropped", sender=key[0], to=key[1], ref=key[2], total=key[3]))
                for token in tokens:
                    self._answer(token, ESME_RX_T_APPN)
            if self._stopping:
                return
            if item is not None:
                await self._deliver(*item)

    def _answer(self, token: Token, status: int) -> None:
        link, sequence = token
        if link.closed:
            return  # the SMSC delivers it again on the next bind
        link.send(Pdu(DELIVER_SM | RESP, status, sequence, b"\x00"))

    async def _deliver(self, link: _Link, pdu: Pdu) -> None:
        token: Token = (link, pdu.sequence)
        try:
            sm = ShortMessage.decode(pdu.body, "deliver_sm")
        except SmppCodecError as exc:
            log.warning(kv("sms.smpp.bad_deliver_sm", sequence=pdu.sequence, reason=exc.reason))
            self._answer(token, ESME_RX_P_APPN)
            return
        if is_receipt(sm):
            await self._receipt(token, sm)
        else:
            await self._incoming(token, sm)

    async def _receipt(self, token: Token, sm: ShortMessage) -> None:
        receipt = receipt_from_deliver(sm)
        if receipt is None:
            log.warning(kv("sms.smpp.bad_receipt", sequence=token[1], text=sm.payload.decode("latin-1")))
            self._answer(token, ESME_RX_P_APPN)
            return
        if (sm.esm_class & ESM_TYPE_MASK) == ESM_TYPE_INTERMEDIATE:
            log.info(kv("sms.smpp.intermediate_receipt", id=receipt.message_id, status=receipt.status))
            self._answer(token, ESME_ROK)
            return
        assert self._on_receipt is not None
        self._answer(token, await self._call("on_receipt", self._on_receipt(receipt)))

    async def _incoming(self, token: Token, sm: ShortMessage) -> None:
        sender = our_number(sm.source_addr, sm.source_addr_ton)
        to = our_number(sm.destination_addr, sm.dest_addr_ton)
        try:
            part, info = incoming_part(sm)
        except SmsFormatError as exc:
            log.warning(kv("sms.smpp.bad_text", sender=sender, to=to, sequence=token[1], reason=exc.reason))
            self._answer(token, ESME_RX_P_APPN)
            return
        assert self._on_incoming is not None
        if info is None:
            sms = IncomingSms(sender, to, part.text, via="smpp", ref=f"seq={token[1]}")
            self._answer(token, await self._call("on_incoming", self._on_incoming(sms)))
            return
        now = asyncio.get_running_loop().time()
        try:
            assembled = self._mo.add(sender, to, info, part, token, now)
        except ReassemblyError as exc:
            log.warning(kv("sms.smpp.bad_text", sender=sender, to=to, ref=info[0], reason=exc.reason))
            for held in exc.tokens:
                self._answer(held, ESME_RX_P_APPN)  # type: ignore[arg-type]
            return
        if assembled is None:
            log.info(kv("sms.smpp.part_held", sender=sender, ref=info[0], seq=info[2], total=info[1]))
            return
        sms = IncomingSms(sender, to, assembled.text, via="smpp", ref=f"ref={info[0]}/{info[1]}")
        status = await self._call("on_incoming", self._on_incoming(sms))
        if status != ESME_ROK:
            self._mo.restore(assembled, asyncio.get_running_loop().time())
        for held in assembled.tokens:
            self._answer(held, status)

    async def _call(self, what: str, callback: Awaitable[None]) -> int:
        """Await a callback: ESME_ROK, or ESME_RX_T_APPN (the SMSC retries) when it raised."""
        try:
            await callback
        except Exception:
            log.exception(kv("sms.smpp.callback_failed", callback=what))
            return ESME_RX_T_APPN
        return ESME_ROK

    @staticmethod
    async def _finish(task: asyncio.Task[None], timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
