"""The composition root: configuration in, running services out.

What it does
------------
:func:`run` sets up logging, builds the SIP user agent and its asyncio shell,
the media endpoint factory and the call manager, starts registrations, and runs
until SIGINT or SIGTERM.  Shutdown hangs up active calls, finishes recordings
and removes registrations before the process exits.

This is the one module that imports the service shells of several packages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Callable

import numpy as np

from ums.calls.service import CallManager, MediaEndpoint
from ums.config import Config
from ums.log import kv, setup_logging
from ums.media.service import MediaClock, PortPool, RtpEndpoint, RtpSettings
from ums.sip.sdp import AudioParams
from ums.sip.service import SipService
from ums.sip.ua import UaSettings, UserAgent

__all__ = ["Server", "run"]

log = logging.getLogger("ums.server")

#: How long shutdown waits for the registrars to confirm un-REGISTER.
UNREGISTER_GRACE = 3.0


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

    async def _open_media(
        self,
        params: AudioParams,
        on_audio: Callable[[np.ndarray], None],
        on_digit: Callable[[str], None],
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
            media_clock=self.media_clock,
            port_pool=self.rtp_ports,
        )
        await endpoint.open()
        return endpoint

    async def start(self) -> None:
        self.config.server.data_dir.mkdir(parents=True, exist_ok=True)
        self.sip = SipService(self.ua, self.config.sip.listen, self._on_sip_event)
        self.calls = CallManager(self.config, self.sip, self._open_media, self.host)
        await self.sip.start()
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

    def _on_sip_event(self, event: object) -> None:
        assert self.calls is not None
        self.calls.on_sip_event(event)  # type: ignore[arg-type]

    async def stop(self) -> None:
        assert self.sip is not None and self.calls is not None
        log.info(kv("server.stopping", calls=len(self.calls.legs)))
        await self.calls.shutdown()
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
        log.info(kv("server.stopped"))

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal, sig)
        await self.stopping.wait()
        await self.stop()

    def _signal(self, sig: signal.Signals) -> None:
        log.info(kv("server.signal", signal=sig.name))
        self.stopping.set()


def run(config: Config, log_level: str | None = None) -> int:
    setup_logging(log_level or config.server.log_level)
    try:
        asyncio.run(Server(config).serve_forever())
    except OSError as exc:
        log.error(kv("server.failed", reason=exc))
        return 1
    return 0
