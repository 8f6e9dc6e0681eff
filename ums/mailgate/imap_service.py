"""The IMAP watcher: a thread per mailbox that turns ``\\Seen`` in the owner's folder into read state.

What it does
------------
:class:`ImapWatcher` logs in to the mailbox's IMAP account (``[mailboxes.imap]``),
looks at the configured folder read-only, finds our messages by their
``X-UMS-Message-Id`` / ``Message-ID`` headers and sets each record of the mailbox
``read`` or ``new`` in the :class:`~ums.store.index.MessageIndex` as
:mod:`ums.mailgate.imap_watch` decides.  After a round that changed something it
calls ``on_change(mailbox_number)`` from its own thread (the MWI service hops to
its event loop with ``call_soon_threadsafe`` and sends the NOTIFYs).  Where the
server offers IDLE (RFC 2177) it waits in IDLE and looks again as soon as the
server reports a change; otherwise it looks every ``poll_interval`` seconds.

How it works
------------
stdlib :mod:`imaplib`: ``IMAP4_SSL`` for ``tls = "implicit"``, ``IMAP4`` plus
``STARTTLS`` for ``"starttls"``, plain ``IMAP4`` for ``"none"``.  One round is
``EXAMINE folder`` (read-only: ums never changes a flag), ``UID FETCH 1:*
(UID FLAGS)`` and, for UIDs not yet in the cache, ``UID FETCH <set>
(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-UMS-MESSAGE-ID)])``; the header
cache lives as long as the folder's ``UIDVALIDITY``.

imaplib (3.11) has no IDLE, so the watcher sends ``<tag> IDLE`` itself, waits for
the ``+`` continuation, reads untagged lines until one reports EXISTS, EXPUNGE
or FETCH or the IDLE period ends (``poll_interval``, at most 29 minutes), then
sends ``DONE`` and reads up to the tagged completion.  imaplib's own reader is a
buffered socket file that is unusable after a timeout, so the connection classes
here read lines from the socket into their own buffer: a wait that times out
loses nothing.

Any error (refused connection, ``* BYE``, timeout, ``NO``/``BAD``) ends the
connection, produces no state change, is logged once as ``event=imap.failed``
and is followed by a reconnect after a doubling delay (``retry_first`` up to
``retry_max``).  :meth:`ImapWatcher.stop` sets a flag, shuts the socket down
(which wakes a blocked read) and joins the thread with a 2 s bound; after
``stop`` the thread never touches the index again.  A thread stuck in
``connect()`` to an unreachable host is a daemon and ends when that times out.
"""

from __future__ import annotations

import imaplib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from ums.config import ImapSettings, Mailbox
from ums.log import kv
from ums.mailgate.imap_watch import (
    FETCH_FLAGS,
    FETCH_HEADERS,
    IDLE_REISSUE,
    FolderCache,
    Observation,
    ReadStateTracker,
    idle_event,
    parse_fetch,
    quote_mailbox,
    retry_delay,
    uid_sets,
)
from ums.store.index import MessageIndex

__all__ = ["ImapWatchError", "ImapWatcher", "stop_watchers", "watchers_for"]

log = logging.getLogger("ums.mailgate.imap")

#: imaplib's own limit on one response line.
_MAX_LINE = 1_000_000
#: TCP keepalive: first probe after 60 s idle, then every 15 s, give up after 4 unanswered.
_KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4))
#: Longest single blocking wait inside IDLE (a stop also wakes it by shutting the socket down).
_IDLE_SLICE = 5.0


class ImapWatchError(Exception):
    """The server refused a command or answered something we cannot use."""


class _LineReader:
    """Reads lines and counted bytes from a socket through a private buffer.

    A ``socket.timeout`` while waiting leaves the buffer intact, unlike ``socket.makefile``.
    """

    def __init__(self, sock: Callable[[], socket.socket]) -> None:
        self._sock = sock
        self._buf = bytearray()

    def _more(self) -> None:
        chunk = self._sock().recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("connection closed by the server")
        self._buf += chunk

    def readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                return line
            if len(self._buf) > _MAX_LINE:
                raise imaplib.IMAP4.error(f"got more than {_MAX_LINE} bytes without a line end")
            self._more()

    def read(self, size: int) -> bytes:
        while len(self._buf) < size:
            self._more()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def wait_line(self, timeout: float) -> bytes | None:
        """A line if one arrives within ``timeout`` seconds, else None (nothing is lost)."""
        if b"\n" not in self._buf:
            sock = self._sock()
            old = sock.gettimeout()
            sock.settimeout(max(timeout, 0.001))
            try:
                self._more()
            except TimeoutError:
                return None
            finally:
                sock.settimeout(old)
            if b"\n" not in self._buf:
                return None
        return self.readline()


class _Plain(imaplib.IMAP4):
    def __init__(
        self, host: str, port: int, timeout: float, on_socket: Callable[[socket.socket], None]
    ) -> None:
        self._reader = _LineReader(lambda: self.sock)
        self._on_socket = on_socket
        super().__init__(host, port, timeout)

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        super().open(host, port, timeout)
        self._on_socket(self.sock)

    def starttls(self, ssl_context: Any | None = None) -> tuple[Literal["OK"], list[None]]:
        result = super().starttls(ssl_context)
        self._on_socket(self.sock)
        return result

    def readline(self) -> bytes:
        return self._reader.readline()

    def read(self, size: int) -> bytes:
        return self._reader.read(size)

    def wait_line(self, timeout: float) -> bytes | None:
        return self._reader.wait_line(timeout)


class _Ssl(imaplib.IMAP4_SSL):
    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        on_socket: Callable[[socket.socket], None],
        ssl_context: ssl.SSLContext,
    ) -> None:
        self._reader = _LineReader(lambda: self.sock)
        self._on_socket = on_socket
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def open(self, host: str = "", port: int | None = 993, timeout: float | None = None) -> None:
        super().open(host, port, timeout)
        self._on_socket(self.sock)

    def readline(self) -> bytes:
        return self._reader.readline()

    def read(self, size: int) -> bytes:
        return self._reader.read(size)

    def wait_line(self, timeout: float) -> bytes | None:
        return self._reader.wait_line(timeout)


_Conn = _Plain | _Ssl


def _check(typ: str, data: Any, what: str) -> None:
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise ImapWatchError(f"{what}: {typ} {detail}".strip())


class ImapWatcher:
    """Watches one mailbox's IMAP folder in a thread; see the module docstring.

    ``on_change(mailbox_number)`` is called from the watcher thread after a round that changed
    the state of at least one record.  Keyword arguments: ``use_idle`` (False: always poll),
    ``missing_grace`` (see :class:`~ums.mailgate.imap_watch.ReadStateTracker`), ``retry_first``
    and ``retry_max`` (reconnect delays, seconds), ``timeout`` (seconds for connect and for each
    command), ``ssl_context`` (default: ``ssl.create_default_context()``).
    """

    def __init__(
        self,
        mailbox_number: str,
        settings: ImapSettings,
        index: MessageIndex,
        on_change: Callable[[str], None],
        *,
        use_idle: bool = True,
        missing_grace: float = 900.0,
        retry_first: float = 1.0,
        retry_max: float = 60.0,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.mailbox = mailbox_number
        self.settings = settings
        self.index = index
        self.on_change = on_change
        self.use_idle = use_idle
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._tracker = ReadStateTracker(missing_grace)
        self._cache = FolderCache()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._cond = threading.Condition()
        #: failures since the last complete round (drives the backoff)
        self._streak = 0
        #: successful logins so far
        self.connects = 0
        #: complete looks at the folder so far
        self.rounds = 0
        #: failed connections or rounds so far
        self.failures = 0
        #: rounds that changed at least one record
        self.changes = 0
        self.connected = False
        #: True while the current connection waits in IDLE rather than polling
        self.idle = False
        self.last_error = ""

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._thread = threading.Thread(target=self._run, name=f"imap-watch-{self.mailbox}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Tell the thread to end (does not wait); it touches the index no more after this."""
        self._stop.set()
        self._wake()
        self._notify()

    def join(self, timeout: float = 2.0) -> bool:
        """Wait up to ``timeout`` seconds for the thread; True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread; returns within ``timeout`` seconds (the thread is a daemon)."""
        self.request_stop()
        self.join(timeout)

    def wait(self, predicate: Callable[[ImapWatcher], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds; it is checked after every connect, round and failure."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                # the plain socket call, also for an SSLSocket: wakes a blocked recv in the thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def _set_socket(self, sock: socket.socket | None) -> None:
        if sock is not None:
            _keepalive(sock)
        with self._lock:
            self._sock = sock
        if sock is not None and self._stop.is_set():
            self._wake()

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            conn: _Conn | None = None
            try:
                conn = self._connect()
                self._session(conn)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._streak += 1
                delay = retry_delay(self._streak, self.retry_first, self.retry_max)
                self.failures += 1
                self.last_error = _describe(exc)
                log.warning(
                    kv(
                        "imap.failed",
                        mailbox=self.mailbox,
                        host=self.settings.host,
                        error=self.last_error,
                        retry_in=delay,
                    ),
                    exc_info=not isinstance(exc, OSError | imaplib.IMAP4.error | ImapWatchError | ValueError),
                )
            finally:
                self.connected = False
                self.idle = False
                self._set_socket(None)
                if conn is not None:
                    _close(conn)
            self._notify()
            if not self._stop.is_set():
                self._stop.wait(retry_delay(self._streak, self.retry_first, self.retry_max))
        log.info(kv("imap.stopped", mailbox=self.mailbox))

    def _connect(self) -> _Conn:
        s = self.settings
        conn: _Conn
        if s.tls == "implicit":
            ctx = self._ssl_context or ssl.create_default_context()
            conn = _Ssl(s.host, s.port, self.timeout, self._set_socket, ctx)
        else:
            conn = _Plain(s.host, s.port, self.timeout, self._set_socket)
        try:
            if s.tls == "starttls":
                conn.starttls(self._ssl_context or ssl.create_default_context())
            conn.login(s.user, s.password)
            typ, data = conn.capability()
            _check(typ, data, "CAPABILITY")
        except BaseException:
            _close(conn)
            raise
        caps = {c.upper() for c in b" ".join(d for d in data if isinstance(d, bytes)).decode().split()}
        self.idle = self.use_idle and "IDLE" in caps
        self.connected = True
        self.connects += 1
        log.info(
            kv(
                "imap.connected",
                mailbox=self.mailbox,
                host=s.host,
                port=s.port,
                tls=s.tls,
                user=s.user,
                folder=s.folder,
                idle="yes" if self.idle else "no",
            )
        )
        self._notify()
        return conn

    def _session(self, conn: _Conn) -> None:
        while not self._stop.is_set():
            observation = self._observe(conn)
            self._apply(observation)
            self._streak = 0  # a complete round: the next failure starts the backoff afresh
            self.rounds += 1
            self._notify()
            if self._stop.is_set():
                return
            if self.idle:
                self._idle(conn, min(self.settings.poll_interval, IDLE_REISSUE))
            elif self._stop.wait(self.settings.poll_interval):
                return

    def _observe(self, conn: _Conn) -> Observation | None:
        typ, data = conn.select(quote_mailbox(self.settings.folder), readonly=True)
        _check(typ, data, f"EXAMINE {self.settings.folder}")
        exists = int(data[0] or b"0")
        _, uv = conn.response("UIDVALIDITY")
        uidvalidity = int(uv[0]) if uv and uv[0] else 0
        flags: dict[int, frozenset[str]] = {}
        if exists:
            typ, data = conn.uid("FETCH", "1:*", FETCH_FLAGS)
            _check(typ, data, "UID FETCH FLAGS")
            for m in parse_fetch(data):
                if m.uid is not None and m.flags is not None:
                    flags[m.uid] = m.flags
        for uids in uid_sets(self._cache.plan(uidvalidity, flags)):
            typ, data = conn.uid("FETCH", uids, f"(UID {FETCH_HEADERS})")
            _check(typ, data, "UID FETCH headers")
            for m in parse_fetch(data):
                if m.uid is not None and m.header is not None:
                    self._cache.learn(m.uid, m.header)
        return self._cache.observation(flags)

    def _apply(self, observation: Observation | None) -> None:
        records = self.index.list(mailbox=self.mailbox)
        changes = self._tracker.observe(records, observation, time.monotonic())
        changed = False
        try:
            for change in changes:
                if self._stop.is_set():
                    self._tracker.resync()
                    return
                try:
                    applied = self.index.set_state(change.id, change.state)
                except KeyError:
                    continue  # removed meanwhile
                if applied:
                    changed = True
                    log.info(kv("imap.state", mailbox=self.mailbox, id=change.id, state=change.state))
        except BaseException:
            self._tracker.resync()
            raise
        if changed:
            self.changes += 1
            try:
                self.on_change(self.mailbox)
            except Exception:
                log.exception(kv("imap.on_change_failed", mailbox=self.mailbox))

    def _idle(self, conn: _Conn, duration: float) -> None:
        """RFC 2177 IDLE until the server reports a change, ``duration`` passes or we stop."""
        tag = conn._new_tag()
        conn.tagged_commands.pop(tag, None)  # we read the completion ourselves, imaplib never will
        conn.send(tag + b" IDLE\r\n")
        first = _read_response_line(conn, self.timeout)
        if not first.startswith(b"+"):
            # refused (tagged NO/BAD) or anything unexpected: poll on this connection instead
            self.idle = False
            log.info(kv("imap.idle_refused", mailbox=self.mailbox, answer=first.decode("latin-1").strip()))
            if not first.startswith(tag):
                _finish_tagged(conn, tag, self.timeout)
            self._stop.wait(self.settings.poll_interval)
            return
        deadline = time.monotonic() + duration
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            line = conn.wait_line(min(remaining, _IDLE_SLICE))
            if line is None:
                continue
            line = _skip_literals(conn, line)
            event = idle_event(line)
            if event == "bye":
                raise imaplib.IMAP4.abort(line.decode("latin-1").strip())
            if event == "change":
                break
        if self._stop.is_set():
            return
        conn.send(b"DONE\r\n")
        _finish_tagged(conn, tag, self.timeout)


def watchers_for(
    mailboxes: Iterable[Mailbox], index: MessageIndex, on_change: Callable[[str], None], **options: Any
) -> list[ImapWatcher]:
    """One (not yet started) watcher per mailbox that names an IMAP account."""
    return [
        ImapWatcher(mb.number, mb.imap, index, on_change, **options)
        for mb in mailboxes
        if mb.imap is not None
    ]


def stop_watchers(watchers: Iterable[ImapWatcher], timeout: float = 2.0) -> None:
    """Stop several watchers at once: all are told first, then joined within one ``timeout``."""
    watchers = list(watchers)
    for w in watchers:
        w.request_stop()
    deadline = time.monotonic() + timeout
    for w in watchers:
        w.join(max(0.0, deadline - time.monotonic()))


def _read_response_line(conn: _Conn, timeout: float) -> bytes:
    line = conn.wait_line(timeout)
    if line is None:
        raise ImapWatchError(f"no answer within {timeout:.0f} s")
    return line


def _skip_literals(conn: _Conn, line: bytes) -> bytes:
    """Read past a literal announced at the end of ``line`` (and the rest of its response)."""
    text = line.rstrip(b"\r\n")
    while text.endswith(b"}") and b"{" in text:
        count = text[text.rfind(b"{") + 1 : -1].rstrip(b"+")
        if not count.isdigit():
            break
        conn.read(int(count))
        text = conn.readline().rstrip(b"\r\n")
    return line


def _finish_tagged(conn: _Conn, tag: bytes, timeout: float) -> None:
    """Read (and drop) untagged lines up to ``tag``'s completion; raise unless it is OK."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ImapWatchError("no tagged completion for IDLE")
        line = conn.wait_line(remaining)
        if line is None:
            continue
        _skip_literals(conn, line)
        if idle_event(line) == "bye":
            raise imaplib.IMAP4.abort(line.decode("latin-1").strip())
        if line.startswith(tag + b" "):
            status = line[len(tag) + 1 :].split(b" ", 1)[0].upper()
            if status != b"OK":
                raise ImapWatchError(f"IDLE ended with {line.decode('latin-1').strip()}")
            return


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalive: a peer that vanished without a FIN (power cut, NAT timeout) is noticed in IDLE."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            opt = getattr(socket, name, None)
            if opt is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    except OSError:
        pass


def _close(conn: _Conn) -> None:
    try:
        conn.shutdown()
    except Exception:
        pass


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return f"{type(exc).__name__}: {text}"
