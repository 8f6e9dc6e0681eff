"""Dovecot as a private loopback IMAP server, and an IMAP client playing the mailbox owner.

What it does
------------
:class:`Dovecot` writes a configuration from ``templates/dovecot.conf.in`` (a
free port, one passwd-file user ``bob``/``secret``, Maildir homes), runs
``dovecot -F`` in the foreground and waits until the port accepts.  ``stop``
is the graceful outage (SIGTERM; clients get ``* BYE``; it waits until
``master.pid`` is gone so it can be started again on the same port and
directories, the mailboxes survive); ``cleanup`` kills everything and removes
the directories.

:class:`MailUser` is the owner "in Outlook": ``append`` delivers a message,
``set_seen`` marks one read or unread, ``delete`` removes it, each over its own
short imaplib session.

With ``tls=True`` the server also speaks STARTTLS on its port and implicit TLS on
``tls_port``, with a throw-away self-signed certificate for 127.0.0.1 made by
``openssl`` (a dependency of Debian's ``dovecot-core`` through ``ssl-cert``).

How it works
------------
``imap-login`` refuses to run as root, so as root the whole server runs as
``nobody:nogroup`` through ``setpriv``; as another user it runs as that user.
Its directories live in a fresh ``ums-dovecot-*`` folder under the system temp
directory (pytest's own temp tree is private to root, so ``nobody`` could not
reach it), removed by :meth:`Dovecot.cleanup`; the log goes to
``<run_dir>/dovecot/dovecot.err``.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.peers.ports import free_port
from tests.peers.procs import PeerTimeout, Proc, wait_until

__all__ = ["DOVECOT", "Dovecot", "MailUser"]

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
TEMPLATE = Path(__file__).resolve().parent / "templates" / "dovecot.conf.in"


class Dovecot:
    """One Dovecot on 127.0.0.1:``port`` with the single user ``user``/``password``."""

    def __init__(
        self,
        run_dir: Path,
        user: str = "bob",
        password: str = "secret",
        port: int | None = None,
        tls: bool = False,
    ) -> None:
        self.log_dir = Path(run_dir) / "dovecot"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.user = user
        self.password = password
        if os.geteuid() == 0:
            self.run_user, self.run_group = "nobody", "nogroup"
        else:
            self.run_user = pwd.getpwuid(os.geteuid()).pw_name
            self.run_group = grp.getgrgid(os.getegid()).gr_name
        self.base = Path(tempfile.mkdtemp(prefix="ums-dovecot-"))
        self.base.chmod(0o755)
        for sub in ("run", "state", "home"):
            (self.base / sub).mkdir()
        users = self.base / "users"
        users.write_text(f"{user}:{{PLAIN}}{password}::::::\n")
        self.config_path = self.base / "dovecot.conf"
        #: implicit-TLS port (0 without ``tls``); STARTTLS is offered on ``port`` with ``tls``
        self.tls_port = free_port() if tls else 0
        #: the self-signed certificate (for 127.0.0.1) a client must trust, with ``tls``
        self.cert_path: Path | None = None
        ssl_setting = "no"
        if tls:
            self.cert_path, key_path = self._make_certificate()
            ssl_setting = f"yes\nssl_cert = <{self.cert_path}\nssl_key = <{key_path}"
        text = TEMPLATE.read_text()
        for key, value in (
            ("BASE", self.base),
            ("PORT", self.port),
            ("IMAPS_PORT", self.tls_port),
            ("SSL", ssl_setting),
            ("RUNUSER", self.run_user),
            ("RUNGROUP", self.run_group),
        ):
            text = text.replace(f"@{key}@", str(value))
        self.config_path.write_text(text)
        for path in (users, self.config_path):
            path.chmod(0o644)
        if os.geteuid() == 0:
            uid, gid = pwd.getpwnam(self.run_user).pw_uid, grp.getgrnam(self.run_group).gr_gid
            for sub in ("run", "state", "home"):
                os.chown(self.base / sub, uid, gid)
        self.proc: Proc | None = None
        self.starts = 0

    def _make_certificate(self) -> tuple[Path, Path]:
        cert, key = self.base / "cert.pem", self.base / "key.pem"
        subprocess.run(
            [
                OPENSSL,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for path in (cert, key):
            path.chmod(0o644)  # read by the unprivileged server; a throw-away test key
        return cert, key

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (and checks the name 127.0.0.1)."""
        if self.cert_path is None:
            raise ValueError("started without tls")
        return ssl.create_default_context(cafile=str(self.cert_path))

    @property
    def pid_file(self) -> Path:
        return self.base / "run" / "master.pid"

    def argv(self) -> list[str]:
        cmd = [DOVECOT, "-F", "-c", str(self.config_path)]
        if os.geteuid() == 0:
            cmd = [SETPRIV, f"--reuid={self.run_user}", f"--regid={self.run_group}", "--clear-groups", *cmd]
        return cmd

    def start(self, timeout: float = 10.0) -> Dovecot:
        if self.proc is not None and self.proc.alive():
            return self
        self.starts += 1
        name = "dovecot" if self.starts == 1 else f"dovecot{self.starts}"
        self.proc = Proc(self.argv(), self.log_dir, name).start()
        self.proc.wait_tcp(self.host, self.port, timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then wait (bounded) until ``master.pid`` is gone: a restart works right after.

        The master leaves its ``imap`` (and ``log``, ``stats``) processes running as long as a
        client stays connected; those are ended too, by pid, so the server is really gone.
        """
        if self.proc is None or not self.proc.alive():
            return
        children = _descendants(self.proc.pid)
        self.proc.stop(timeout=timeout)
        _end(children, timeout)
        try:
            wait_until(lambda: not self.pid_file.exists(), timeout, 0.05, "dovecot's master.pid to vanish")
        except PeerTimeout:
            self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server and all its processes at once (teardown: nothing to be graceful for)."""
        if self.proc is None or not self.proc.alive():
            return
        children = _descendants(self.proc.pid)
        self.proc.kill()
        _end(children, 5.0, (signal.SIGKILL,))
        self.pid_file.unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Kill the server and remove its directories (mailboxes included)."""
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def log(self) -> str:
        if self.proc is None:
            return ""
        return self.proc.log_tail(200)

    def mail_user(self) -> MailUser:
        return MailUser(self.host, self.port, self.user, self.password)


def _stat(pid: int) -> tuple[int, int, str] | None:
    """``(ppid, start time, state)`` of a process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def _descendants(pid: int) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every process below ``pid``."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                parents.setdefault(st[0], []).append((int(entry.name), st[1]))
    out: list[tuple[int, int]] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def _end(
    processes: list[tuple[int, int]],
    timeout: float,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGKILL),
) -> None:
    """Signal the listed processes that are still the same processes (start time) until they end."""

    def alive() -> list[int]:
        out = []
        for pid, start in processes:
            st = _stat(pid)
            if st is not None and st[1] == start and st[2] != "Z":
                out.append(pid)
        return out

    for sig in signals:
        for pid in alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            wait_until(lambda: not alive(), timeout / len(signals), 0.02, "dovecot's processes to end")
            return
        except PeerTimeout:
            continue


class MailUser:
    """The mailbox owner's IMAP client: deliver, read, unread and delete messages."""

    def __init__(self, host: str, port: int, user: str, password: str, folder: str = "INBOX") -> None:
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.folder = folder

    def _session(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        conn.login(self.user, self.password)
        return conn

    def append(self, message: bytes, seen: bool = False) -> None:
        conn = self._session()
        try:
            typ, data = conn.append(
                f'"{self.folder}"',
                "(\\Seen)" if seen else None,
                imaplib.Time2Internaldate(time.time()),
                message,
            )
            if typ != "OK":
                raise RuntimeError(f"APPEND failed: {typ} {data!r}")
        finally:
            conn.logout()

    def _uids(self, conn: imaplib.IMAP4, ums_id: str) -> list[bytes]:
        if not re.fullmatch(r"[0-9A-Za-z._-]+", ums_id):
            raise ValueError(f"unexpected message id {ums_id!r}")
        typ, data = conn.uid("SEARCH", "HEADER", "X-UMS-Message-Id", f'"{ums_id}"')
        if typ != "OK" or not data or not data[0]:
            raise RuntimeError(f"message {ums_id} not found in {self.folder}: {typ} {data!r}")
        return list(data[0].split())

    def set_seen(self, ums_id: str, seen: bool = True) -> None:
        """Mark our message with ``X-UMS-Message-Id: ums_id`` read (``\\Seen``) or unread."""
        conn = self._session()
        try:
            conn.select(f'"{self.folder}"')
            for uid in self._uids(conn, ums_id):
                typ, data = conn.uid("STORE", uid.decode(), "+FLAGS" if seen else "-FLAGS", "(\\Seen)")
                if typ != "OK":
                    raise RuntimeError(f"STORE failed: {typ} {data!r}")
        finally:
            conn.logout()

    def delete(self, ums_id: str) -> None:
        """Delete and expunge our message (as a client emptying the trash does)."""
        conn = self._session()
        try:
            conn.select(f'"{self.folder}"')
            for uid in self._uids(conn, ums_id):
                conn.uid("STORE", uid.decode(), "+FLAGS", "(\\Deleted)")
            conn.expunge()
        finally:
            conn.logout()

    def flags(self) -> dict[int, str]:
        """``{uid: flags text}`` of every message in the folder (read-only look)."""
        conn = self._session()
        try:
            typ, data = conn.select(f'"{self.folder}"', readonly=True)
            if typ != "OK" or data[0] == b"0":
                return {}
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS)")
            out: dict[int, str] = {}
            for item in data:
                if isinstance(item, bytes):
                    m = re.search(rb"UID (\d+)", item)
                    f = re.search(rb"FLAGS \(([^)]*)\)", item)
                    if m and f:
                        out[int(m.group(1))] = f.group(1).decode()
            return out
        finally:
            conn.logout()
