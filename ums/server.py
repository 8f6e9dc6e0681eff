"""The composition root: configuration in, running services out.

What it does
------------
:func:`run` sets up logging, builds the SIP user agent and its asyncio shell,
the media endpoint factory and the call manager, starts registrations, and runs
until SIGINT or SIGTERM.  Shutdown hangs up active calls, finishes recordings
and removes registrations before the process exits.

With ``[fax_gateway] enabled`` it also runs the e-mail to fax gateway
(``ums.outbound.service``) behind the SMTP listener on ``[mail] listen``; its
calls go out through the call manager, and SIGHUP makes it look for jobs made by
``ums fax send`` and cancel requests at once.

This is the one module that imports the service shells of several packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ums import pipeline
from ums.calls.outgoing import FaxSendRequest
from ums.calls.service import (
    CallManager,
    FaxWiring,
    MediaEndpoint,
    StoredMessage,
    UdptlEndpointLike,
    VoicemailWiring,
)
from ums.config import Config, Mailbox
from ums.directory.lookup import Directory, DirectorySettings, NumberPlan, load_directory
from ums.fax_t38.service import UdptlEndpoint
from ums.log import kv, setup_logging
from ums.mailgate.imap_service import ImapWatcher, stop_watchers, watchers_for
from ums.mailgate.smtp_in import GatewayHandler, GatewayRouter, RoutedHandler, SmtpGateway, SmtpInSettings
from ums.media.service import MediaClock, PortPool, RtpEndpoint, RtpSettings
from ums.mwi.service import MwiService
from ums.outbound.jobs import Attempt, Cause
from ums.outbound.service import DialJob, FaxGatewayService, GatewaySettings, job_store, mail_sender
from ums.pipeline.app import compose_settings, smtp_settings
from ums.pipeline.worker import spawn_embedded_workers, stop_workers
from ums.render.audio import decode_audio_file
from ums.sip import events as sip_events
from ums.sip.sdp import AudioParams
from ums.sip.service import SipService
from ums.sip.ua import UaSettings, UserAgent
from ums.sms.service import SmsService, SmsSettings, sms_job_store
from ums.sms.sip import SipMessageTransport, SipSmsSettings
from ums.sms.transport import SmsTransport
from ums.store.fax_pages import FaxSinkFactory
from ums.store.index import MessageIndex
from ums.store.models import MessageRecord
from ums.store.spool import Spool
from ums.voicemail.machine import VoicemailSettings
from ums.voicemail.prompts import GreetingError, default_goodbye, load_greetings
from ums.voicemail.service import VoiceMessageSink, VoiceRecording

__all__ = ["Server", "run"]

log = logging.getLogger("ums.server")

#: How long shutdown waits for the registrars to confirm un-REGISTER.
UNREGISTER_GRACE = 3.0
#: Seconds between sweeps of the message index for deliveries that are due.
SWEEP_INTERVAL = 60.0
#: A Celery warm shutdown takes a few seconds (its loop polls every 2 s).
WORKER_STOP_TIMEOUT = 15.0


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        sip_cfg = config.sip
        self.host = sip_cfg.public_host or sip_cfg.listen[0].host
        ports: dict[str, int] = {}
        for ls in sip_cfg.listen:
            ports.setdefault(ls.transport, ls.port)
        self.ua = UserAgent(
            UaSettings(
                host=self.host,
                ports=ports,
                user_agent=config.server.user_agent,
                accounts=config.accounts,
            ),
            rng=random.Random(),
        )
        self.media_clock = MediaClock(interval=0.02)
        self.rtp_ports = PortPool(sip_cfg.rtp_port_min, sip_cfg.rtp_port_max)
        self.sip: SipService | None = None
        self.calls: CallManager | None = None
        self.mwi: MwiService | None = None
        data = config.server.data_dir
        self.spool = Spool(data / "spool")
        self.index = MessageIndex(data / "index.sqlite")
        domain = config.mail.message_id_domain or config.mail.sender.rpartition("@")[2] or "localhost"
        self.domain = domain
        self.sink = VoiceMessageSink(self.spool, self.index, domain)
        self.fax_sinks: FaxSinkFactory | None = None
        self.directory = self._load_directory()
        self._greetings: dict[str, dict[str, np.ndarray]] = {}
        pipeline.configure(config, index=self.index)
        self.workers: list[subprocess.Popen[bytes]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.imap_watchers: list[ImapWatcher] = []
        self._background: set[asyncio.Future[object]] = set()
        self.fax_gateway: FaxGatewayService | None = None
        self.sms: SmsService | None = None
        self.sms_sip: SipMessageTransport | None = None
        self.smtp_in: SmtpGateway | None = None

    async def _open_media(
        self,
        params: AudioParams,
        on_audio: Callable[[np.ndarray], None],
        on_digit: Callable[[str], None],
        source: Callable[[int], np.ndarray | None] | None = None,
    ) -> MediaEndpoint:
        sip_cfg = self.config.sip
        rtp_host = sip_cfg.listen[0].host
        settings = RtpSettings(
            codec=params.codec,
            payload_type=params.payload_type,
            telephone_event_pt=params.telephone_event_pt,
            ptime=params.ptime,
            local_host=rtp_host,
            port_min=sip_cfg.rtp_port_min,
            port_max=sip_cfg.rtp_port_max,
        )
        endpoint = RtpEndpoint(
            settings,
            on_audio=on_audio,
            on_digit=on_digit,
            source=source,
            media_clock=self.media_clock,
            port_pool=self.rtp_ports,
        )
        await endpoint.open()
        return endpoint

    async def _open_udptl(self) -> UdptlEndpointLike:
        sip_cfg = self.config.sip
        endpoint = UdptlEndpoint(
            sip_cfg.listen[0].host,
            port_pool=self.rtp_ports,
            port_min=sip_cfg.rtp_port_min,
            port_max=sip_cfg.rtp_port_max,
        )
        await endpoint.open()
        return endpoint

    # -- fax wiring -----------------------------------------------------------------------------------
    def _announce_record(self, record: MessageRecord) -> None:
        """A fax is indexed (called on the event loop): lamps and delivery."""
        mailbox = self.config.mailbox_for(record.mailbox)
        if mailbox is not None and self.mwi is not None:
            self.mwi.refresh_later(mailbox.number)
        self._submit(record.id)

    def _fax_wiring(self) -> FaxWiring:
        assert self.fax_sinks is not None
        return FaxWiring(
            config=self.config.fax,
            open_sink=self.fax_sinks.open,
            udptl=self._open_udptl if self.config.fax.t38 else None,
        )

    # -- e-mail to fax -------------------------------------------------------------------------------
    async def _send_fax(self, job: DialJob) -> Attempt:
        """The gateway's dialer: one outgoing fax call through the call manager."""
        if self.calls is None:
            now = time.time()
            return Attempt(now, now, Cause.CONGESTION, reason="calls are not running")
        request = FaxSendRequest(
            dial=job.target or job.dial,
            pages=job.pages,
            first_page=job.first_page,
            account=job.account or None,
            ident=job.ident,
            ecm=self.config.fax.ecm,
            call_id_hint=job.job_id,
            ring_timeout=job.ring_timeout,
        )
        return await self.calls.send_fax(request)

    def _authenticator(self) -> tuple[bool, Callable[[str, str], bool]]:
        users = dict(self.config.mail.listen_users)

        def authenticate(user: str, password: str) -> bool:
            known = users.get(user)
            return known is not None and hmac.compare_digest(known.encode(), password.encode())

        return bool(users), authenticate

    def _report_sender(self) -> Callable[[str, bytes], None]:
        cfg = self.config
        return mail_sender(smtp_settings(cfg.mail), cfg.mail.sender, cfg.server.data_dir / "maildir")

    def _fax_gateway_service(self) -> FaxGatewayService:
        cfg = self.config
        _, authenticate = self._authenticator()
        return FaxGatewayService(
            GatewaySettings.from_config(cfg),
            job_store(cfg),
            self._send_fax,
            self._report_sender(),
            authenticate=authenticate,
        )

    # -- SMS -----------------------------------------------------------------------------------------
    def _sms_transport(self) -> SmsTransport:
        cfg = self.config.sms
        if cfg.transport == "smpp":
            from ums.sms.smpp import SmppSettings, SmppTransport  # only with an SMSC

            return SmppTransport(SmppSettings.from_config(cfg.smpp))
        assert self.sip is not None
        self.sms_sip = SipMessageTransport(
            self.sip,
            SipSmsSettings(trunk=cfg.trunk, account=cfg.account, from_user=cfg.sender),
            numbers=lambda user: self.sms.mailbox_number(user) if self.sms is not None else None,
        )
        return self.sms_sip

    async def _start_sms(self) -> None:
        cfg = self.config
        _, authenticate = self._authenticator()
        self.sms = SmsService(
            SmsSettings.from_config(cfg, compose_settings(cfg.mail)),
            sms_job_store(cfg),
            self._sms_transport(),
            self._report_sender(),
            index=self.index,
            mailboxes=cfg.mailboxes,
            domain=self.domain,
            announce=self._announce_record,
            authenticate=authenticate,
        )
        await self.sms.start()

    async def _start_smtp(self) -> None:
        """The SMTP listener in front of the e-mail gateways that are enabled (fax, SMS)."""
        handlers: list[RoutedHandler] = [h for h in (self.fax_gateway, self.sms) if h is not None]
        if not handlers:
            return
        cfg = self.config
        auth, _ = self._authenticator()
        handler: GatewayHandler = handlers[0] if len(handlers) == 1 else GatewayRouter(handlers)
        host, _, port = cfg.mail.listen.rpartition(":")
        self.smtp_in = SmtpGateway(
            SmtpInSettings(
                host=host.strip("[]"),
                port=int(port),
                auth=auth,
                tls_cert=cfg.mail.listen_tls_cert,
                tls_key=cfg.mail.listen_tls_key,
            ),
            handler,
        )
        await self.smtp_in.start()

    # -- voicemail wiring ----------------------------------------------------------------------------
    def _load_directory(self) -> Directory:
        d = self.config.directory
        settings = DirectorySettings(
            entries=d.entries,
            csv_path=Path(d.csv) if d.csv else None,
            plan=NumberPlan(d.country_code, d.international_prefix, d.national_prefix),
            company_search=d.company_search,
            company_min_digits=d.company_min_digits,
        )
        try:
            return load_directory(settings)
        except (OSError, ValueError) as exc:
            log.error(kv("directory.failed", csv=d.csv, reason=exc))
            return load_directory(DirectorySettings(entries=d.entries, plan=settings.plan))

    def _lookup(self, number: str) -> tuple[str, dict[str, Any]]:
        found = self.directory.lookup(number)
        if found is None:
            return "", {}
        if found.how == "company":
            return "", {"company": found.name, "switchboard": found.number_matched}
        return found.name, {}

    def _greetings_for(self, mailbox: Mailbox) -> dict[str, np.ndarray]:
        cached = self._greetings.get(mailbox.number)
        if cached is not None:
            return cached
        vm = self.config.voicemail
        files = {
            "default": mailbox.greeting or vm.greeting,
            "busy": mailbox.greeting_busy or vm.greeting_busy,
            "unavailable": mailbox.greeting_unavailable or vm.greeting_unavailable,
        }
        try:
            greetings = load_greetings(
                default=files["default"] or None,
                busy=files["busy"] or None,
                unavailable=files["unavailable"] or None,
                decode=decode_audio_file,
            )
        except GreetingError as exc:
            log.error(kv("voicemail.greeting_failed", mailbox=mailbox.number, reason=exc))
            greetings = load_greetings()
        self._greetings[mailbox.number] = greetings
        return greetings

    def _begin_recording(
        self, mailbox: Mailbox, caller_number: str, caller_name: str, meta: dict[str, Any]
    ) -> VoiceRecording:
        return self.sink.begin(
            mailbox=mailbox.number,
            owner=mailbox.owner,
            caller_number=caller_number,
            caller_name=caller_name,
            meta=meta,
        )

    def _announce(self, message: StoredMessage, mailbox: Mailbox) -> None:
        """A message is durable and indexed: lamps now, delivery through the pipeline."""
        if self.mwi is not None:
            self.mwi.refresh_later(mailbox.number)
        self._submit(message.id)

    def _submit(self, message_id: str) -> None:
        """Queue delivery; publishing may fsync or wait for Redis, so it runs in a thread."""
        future: asyncio.Future[object] = asyncio.get_running_loop().run_in_executor(
            None, pipeline.submit, message_id
        )
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    async def _sweep_loop(self) -> None:
        """Re-submit what is due (a broker that was down, a worker that died); the index decides."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await loop.run_in_executor(None, functools.partial(pipeline.sweep, min_age=SWEEP_INTERVAL))
            except Exception:
                log.exception(kv("pipeline.sweep_failed"))

    def _voicemail_wiring(self) -> VoicemailWiring:
        vm = self.config.voicemail
        settings = VoicemailSettings(
            silence_threshold_dbm0=vm.silence_threshold,
            silence_timeout=vm.silence_timeout,
            max_length=vm.max_length,
            min_length=vm.min_length,
            beep_frequency=vm.beep_frequency,
        )
        for mailbox in self.config.mailboxes:  # load (and check) every greeting at start
            if mailbox.service in ("voice", "both"):
                self._greetings_for(mailbox)
        return VoicemailWiring(
            settings=settings,
            greetings=self._greetings_for,
            goodbye=default_goodbye() if vm.goodbye else None,
            begin=self._begin_recording,
            lookup=self._lookup,
            announce=self._announce,
        )

    async def start(self) -> None:
        self.config.server.data_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.spool.cleanup_temp():
            log.info(kv("store.discarded_partial", path=str(leftover)))
        loop = asyncio.get_running_loop()
        self.fax_sinks = FaxSinkFactory(
            self.spool,
            self.index,
            lambda record: loop.call_soon_threadsafe(self._announce_record, record),
            domain=self.domain,
        )
        recovered = await asyncio.to_thread(self.fax_sinks.recover)  # before any fax call
        if recovered:
            log.info(kv("fax.recovered_at_start", messages=len(recovered)))
        self.sip = SipService(self.ua, self.config.sip.listen, self._on_sip_event)
        self.calls = CallManager(
            self.config,
            self.sip,
            self._open_media,
            self.host,
            voicemail=self._voicemail_wiring(),
            fax=self._fax_wiring(),
        )
        self.mwi = MwiService(self.config, self.sip, self.index, self.host)
        await self.sip.start()
        await self.mwi.start()
        if self.config.fax_gateway.enabled:
            self.fax_gateway = self._fax_gateway_service()
            await self.fax_gateway.start()
        if self.config.sms.enabled:
            await self._start_sms()
        await self._start_smtp()
        if self.config.pipeline.workers > 0:
            self.workers = await loop.run_in_executor(
                None,
                spawn_embedded_workers,
                self.config,
                self.config.source,
                self.config.server.data_dir,
                self.config.pipeline.workers,
            )
        resumed = await loop.run_in_executor(None, pipeline.resume)
        if resumed:
            log.info(kv("pipeline.resumed", messages=resumed))
        self._sweeper = loop.create_task(self._sweep_loop())
        self.imap_watchers = watchers_for(self.config.mailboxes, self.index, self.mwi.changed_soon)
        for watcher in self.imap_watchers:
            watcher.start()
        self.ua.start_registrations(self.sip.now())
        self.sip.kick()
        log.info(
            kv(
                "server.started",
                config=self.config.source,
                data_dir=str(self.config.server.data_dir),
                accounts=len(self.config.accounts),
                mailboxes=len(self.config.mailboxes),
            )
        )

    def _on_sip_event(self, event: sip_events.Event) -> None:
        assert self.calls is not None
        if self.mwi is not None and self.mwi.on_sip_event(event):
            return
        if self.sms_sip is not None and self.sms_sip.on_sip_event(event):
            return
        self.calls.on_sip_event(event)

    async def stop(self) -> None:
        assert self.sip is not None and self.calls is not None
        log.info(kv("server.stopping", calls=len(self.calls.legs)))
        if self.smtp_in is not None:
            await self.smtp_in.stop()
        if self.fax_gateway is not None:
            await self.fax_gateway.stop()
        if self.sms is not None:
            await self.sms.stop()
        await self.calls.shutdown()
        loop = asyncio.get_running_loop()
        if self.imap_watchers:
            await loop.run_in_executor(None, stop_watchers, self.imap_watchers)
        if self.mwi is not None:
            await self.mwi.stop()
        self.ua.unregister_all(self.sip.now())
        self.sip.kick()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNREGISTER_GRACE
        while not self.ua.registrations_idle() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        # let the BYEs and final responses leave before the sockets close
        await asyncio.sleep(0.05)
        await self.sip.close()
        await self.media_clock.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.workers:
            await loop.run_in_executor(None, stop_workers, self.workers, WORKER_STOP_TIMEOUT)
        self.index.close()
        log.info(kv("server.stopped"))

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal, sig)
        if self.fax_gateway is not None:
            loop.add_signal_handler(signal.SIGHUP, self.fax_gateway.rescan)
        await self.stopping.wait()
        await self.stop()

    def _signal(self, sig: signal.Signals) -> None:
        log.info(kv("server.signal", signal=sig.name))
        self.stopping.set()


def run(config: Config, log_level: str | None = None) -> int:
    setup_logging(log_level or config.server.log_level)
    try:
        asyncio.run(Server(config).serve_forever())
    except (OSError, ValueError) as exc:  # ValueError: a [fax_gateway] rule the gateway refuses
        log.error(kv("server.failed", reason=exc))
        return 1
    return 0
