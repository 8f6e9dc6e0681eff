"""Kamailio as a loopback registrar and Record-Routing proxy with digest auth.

What it does
------------
:class:`Kamailio` writes a configuration from ``kamailio.cfg.in`` (port and
password filled in), runs ``kamailio`` in the foreground with its log on
stderr, waits until it answers SIP OPTIONS, and stops it with SIGTERM.  Every
user may register with the one password; INVITEs and other requests go to the
registered contact of the Request-URI user, with Record-Route.

``mwi_user="vm"`` makes it hand message-summary SUBSCRIBEs to the voicemail
server registered as ``vm`` (Request-URI unchanged, Record-Route added), as a
PBX does; ``register_delay=0.2`` holds back every REGISTER answer (baresip's
``mwi`` module needs that, see ``kamailio.cfg.in``).

How it works
------------
No database: ``pv_www_authenticate`` with a static password and ``usrloc`` in
memory.  The configuration logs one ``KAM ...`` line per registration and
relayed request, which :meth:`Kamailio.wait_registered` watches.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.peers.ports import free_port
from tests.peers.procs import Proc

__all__ = ["KAMAILIO", "Kamailio"]

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
TEMPLATE = Path(__file__).resolve().parent / "kamailio.cfg.in"


class Kamailio:
    """One Kamailio instance on 127.0.0.1:``port`` (UDP and TCP)."""

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        password: str = "secret",
        children: int = 2,
        *,
        mwi_user: str = "",
        register_delay: float = 0.0,
    ) -> None:
        self.run_dir = Path(run_dir) / "kamailio"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.host = "127.0.0.1"
        self.config_path = self.run_dir / "kamailio.cfg"
        if mwi_user and not re.fullmatch(r"[A-Za-z0-9._-]+", mwi_user):
            raise ValueError(f"unusable user name {mwi_user!r}")
        defines = []
        if mwi_user:
            defines.append(f'#!define MWI_USER "{mwi_user}"')
        if register_delay > 0:
            defines.append(f"#!define REGISTER_DELAY_US {round(register_delay * 1e6)}")
        text = TEMPLATE.read_text()
        for key, value in (
            ("PORT", self.port),
            ("PASSWORD", password),
            ("CHILDREN", children),
            ("DEFINES", "\n".join(defines) or "# (none)"),
        ):
            text = text.replace(f"@{key}@", str(value))
        self.config_path.write_text(text)
        self.proc = Proc(
            [
                KAMAILIO,
                "-f",
                str(self.config_path),
                "-DD",
                "-E",
                "-Y",
                str(self.run_dir),
                "-w",
                str(self.run_dir),
            ],
            self.run_dir,
            "kamailio",
        )

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.proc.stderr_path

    def start(self, timeout: float = 10.0) -> Kamailio:
        self.proc.start()
        self.proc.wait_udp_sip(self.host, self.port, timeout)
        return self

    def stop(self) -> None:
        self.proc.stop(timeout=5.0)

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def registrations(self, user: str | None = None) -> list[str]:
        """``KAM registered`` lines (optionally for one user)."""
        lines = [ln for ln in self.log().splitlines() if "KAM registered" in ln]
        if user is not None:
            rx = re.compile(rf"registered sip:{re.escape(user)}@")
            lines = [ln for ln in lines if rx.search(ln)]
        return lines

    def wait_registered(self, user: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        """Wait until ``user`` has registered ``count`` times; return the log lines."""
        self.proc.wait_log(rf"(?:.*KAM registered sip:{re.escape(user)}@.*\n?){{{count}}}", timeout)
        return self.registrations(user)
