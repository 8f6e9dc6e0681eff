"""The inbound SMTP shell against stdlib smtplib: policy replies, exact bytes, size limit, AUTH, STARTTLS."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime
import logging
import queue
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from ums.mailgate import smtp_in
from ums.mailgate.smtp_in import Reject, SmtpGateway, SmtpInSettings

SENDER = "alice@example.com"
FAX = "4930123456@fax.example.com"
PASSWORD = "s3cret"
MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: 4930123456@fax.example.com\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hallo, sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe.\r\n"
    b".a line that starts with a dot (RFC 5321 4.5.2)\r\n"
    b"\r\n"
    b"end\r\n"
)


class Recorder:
    """The caller's policy: one allowed sender, fax numbers as recipients, one user."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, list[str], bytes, str | None, str]] = []
        self.accept_error: Exception | None = None
        self.gate: tuple[threading.Event, threading.Event] | None = None
        self.lock = threading.Lock()

    def check_sender(self, mail_from: str, auth_user: str | None) -> None:
        if mail_from != SENDER:
            raise Reject(550, f"sender {mail_from} may not send faxes")

    def check_recipient(self, rcpt: str, mail_from: str, auth_user: str | None) -> None:
        if not rcpt.partition("@")[0].isdigit():
            raise Reject(550, f"{rcpt} is not a fax number")

    def accept(self, mail_from: str, rcpts: list[str], data: bytes, auth_user: str | None, peer: str) -> None:
        assert threading.current_thread() is not threading.main_thread()
        if self.gate is not None:
            entered, release = self.gate
            entered.set()
            assert release.wait(10)
        if self.accept_error is not None:
            raise self.accept_error
        with self.lock:
            self.accepted.append((mail_from, rcpts, data, auth_user, peer))

    def authenticate(self, user: str, password: str) -> bool:
        return (user, password) in {("alice", PASSWORD), ("jörg", "pässword")}


class Running:
    """The gateway on its own event loop in a thread, for the length of a ``with`` block."""

    def __init__(self, handler: Recorder, **settings: Any) -> None:
        settings.setdefault("port", 0)
        settings.setdefault("hostname", "fax.example.com")
        self.gateway = SmtpGateway(SmtpInSettings(**settings), handler)
        self.port = 0
        self._started: queue.Queue[int | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="smtp-in-test")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            port = await self.gateway.start()
        except BaseException as exc:
            self._started.put(exc)
            return
        self._started.put(port)
        await self._stop.wait()
        await self.gateway.stop(grace=5.0)

    def __enter__(self) -> Running:
        self._thread.start()
        started = self._started.get(timeout=10)
        if isinstance(started, BaseException):
            self._thread.join(10)
            raise started
        self.port = started
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive()

    def begin_stop(self) -> concurrent.futures.Future[None]:
        """Start ``gateway.stop()`` and return once it is waiting for DATA commands in progress."""
        assert self._loop is not None
        stopping = asyncio.run_coroutine_threadsafe(self.gateway.stop(), self._loop)
        # Tasks take turns in FIFO order: once this one has run, stop() has reached its first await.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(10)
        return stopping

    def until_no_connections(self) -> None:
        """Return once the server has seen every client connection close (it yields, never sleeps)."""

        async def wait() -> None:
            while self.gateway.connections:
                await asyncio.sleep(0)

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(wait(), self._loop).result(10)

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=10)


@pytest.fixture
def handler() -> Recorder:
    return Recorder()


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="ums.mailgate.smtp_in")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"event={event} ")]


# --- replies -------------------------------------------------------------------------------------


def test_reject_reply_enhanced_codes() -> None:
    assert Reject(550, "no").reply("mail") == "550 5.7.1 no"
    assert Reject(550, "no").reply("rcpt") == "550 5.1.1 no"
    assert Reject(552, "big").reply("data") == "552 5.3.4 big"
    assert Reject(451, "later").reply("data") == "451 4.3.0 later"
    assert Reject(554, "cannot convert").reply("data") == "554 5.6.0 cannot convert"
    assert Reject(452, "spool full", enhanced="4.3.1").reply("data") == "452 4.3.1 spool full"
    assert Reject(571, "odd").reply("rcpt") == "571 5.0.0 odd"
    assert Reject(550, "two\r\nlines ü").reply("mail") == "550 5.7.1 two lines ?"


@pytest.mark.parametrize(("code", "enhanced"), [(250, None), (600, None), (550, "4.1.1"), (550, "5.1")])
def test_reject_refuses_bad_codes(code: int, enhanced: str | None) -> None:
    with pytest.raises(ValueError, match=r"code|enhanced"):
        Reject(code, "x", enhanced=enhanced)


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="together"):
        SmtpInSettings(tls_cert="cert.pem")
    with pytest.raises(ValueError, match="max_size"):
        SmtpInSettings(max_size=0)


def test_unreadable_certificate_fails_start(handler: Recorder, tmp_path: Path) -> None:
    missing = str(tmp_path / "none.pem")
    with (
        pytest.raises(ValueError, match="cannot load TLS certificate"),
        Running(handler, tls_cert=missing, tls_key=missing),
    ):
        pass


# --- mail flow -----------------------------------------------------------------------------------


def test_accepted_mail_reaches_accept_with_exact_bytes(handler: Recorder, log_lines: Any) -> None:
    with Running(handler) as srv, srv.client() as smtp:
        code, banner = smtp.ehlo()
        assert code == 250 and banner.startswith(b"fax.example.com")
        assert smtp.has_extn("size") and smtp.has_extn("8bitmime") and not smtp.has_extn("starttls")
        assert smtp.mail(SENDER, ["BODY=8BITMIME"]) == (250, b"2.1.0 OK")
        assert smtp.rcpt(FAX) == (250, b"2.1.5 OK")
        assert smtp.data(MESSAGE) == (250, b"2.0.0 OK queued")
    [(mail_from, rcpts, data, user, peer)] = handler.accepted
    assert (mail_from, rcpts, data, user) == (SENDER, [FAX], MESSAGE, None)
    assert peer.startswith("127.0.0.1:")
    [line] = _lines(log_lines, "smtp_in.accepted")
    assert f"from={SENDER} rcpts=1 size={len(MESSAGE)}" in line


def test_unknown_sender_refused_at_mail_from(handler: Recorder, log_lines: Any) -> None:
    with Running(handler) as srv, srv.client() as smtp:
        smtp.ehlo()
        assert smtp.mail("mallory@example.net") == (
            550,
            b"5.7.1 sender mallory@example.net may not send faxes",
        )
        assert smtp.rcpt(FAX)[0] == 503  # no transaction was opened
    assert handler.accepted == []
    [line] = _lines(log_lines, "smtp_in.rejected")
    assert "stage=mail code=550 enhanced=5.7.1 reason=" in line and "from=mallory@example.net" in line


def test_null_sender_reaches_check_sender_as_angle_brackets(handler: Recorder) -> None:
    with Running(handler) as srv, srv.client() as smtp:
        smtp.ehlo()
        assert smtp.docmd("MAIL", "FROM:<>") == (550, b"5.7.1 sender <> may not send faxes")


def test_bad_recipient_refused_others_kept(handler: Recorder, log_lines: Any) -> None:
    good2 = "4940999@fax.example.com"
    with Running(handler) as srv, srv.client() as smtp:
        refused = smtp.sendmail(SENDER, [FAX, "bob@fax.example.com", good2], MESSAGE)
    assert refused == {"bob@fax.example.com": (550, b"5.1.1 bob@fax.example.com is not a fax number")}
    [(_, rcpts, data, _, _)] = handler.accepted
    assert rcpts == [FAX, good2] and data == MESSAGE
    [line] = _lines(log_lines, "smtp_in.rejected")
    assert "stage=rcpt code=550" in line and "rcpt=bob@fax.example.com" in line


def test_too_many_recipients(handler: Recorder) -> None:
    with Running(handler, max_recipients=2) as srv, srv.client() as smtp:
        smtp.ehlo()
        smtp.mail(SENDER)
        assert smtp.rcpt("1@fax.example.com")[0] == 250
        assert smtp.rcpt("2@fax.example.com")[0] == 250
        assert smtp.rcpt("3@fax.example.com") == (452, b"4.5.3 too many recipients")
        assert smtp.data(MESSAGE)[0] == 250
    [(_, rcpts, _, _, _)] = handler.accepted
    assert rcpts == ["1@fax.example.com", "2@fax.example.com"]


def _big(size: int) -> bytes:
    line = b"x" * 98 + b"\r\n"
    return line * (size // len(line))


def test_oversized_declared_size_refused_at_mail_from(handler: Recorder, log_lines: Any) -> None:
    big = _big(2000)
    with Running(handler, max_size=1000) as srv, srv.client() as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "1000"
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            smtp.sendmail(SENDER, [FAX], big)
    assert info.value.smtp_code == 552
    assert info.value.smtp_error == b"5.3.4 message too large (2000 bytes, limit 1000)"
    assert handler.accepted == []
    [line] = _lines(log_lines, "smtp_in.rejected")
    assert "stage=mail code=552" in line


def test_oversized_data_refused_and_session_goes_on(handler: Recorder, log_lines: Any) -> None:
    big = _big(2000)
    small = MESSAGE
    with Running(handler, max_size=1000) as srv, srv.client() as smtp:
        smtp.ehlo()
        smtp.mail(SENDER)  # no SIZE= declared: the limit bites while reading DATA (RFC 1870 6.3)
        smtp.rcpt(FAX)
        assert smtp.data(big) == (552, b"5.3.4 message too large (2000 bytes, limit 1000)")
        assert smtp.sendmail(SENDER, [FAX], small) == {}
    assert [a[2] for a in handler.accepted] == [small]
    [line] = _lines(log_lines, "smtp_in.rejected")
    assert "stage=data code=552" in line and f"from={SENDER}" in line


def test_accept_reject_gives_its_code(handler: Recorder) -> None:
    handler.accept_error = Reject(554, "cannot convert the attachment to fax pages")
    with Running(handler) as srv, srv.client() as smtp:
        with pytest.raises(smtplib.SMTPDataError) as info:
            smtp.sendmail(SENDER, [FAX], MESSAGE)
        assert (info.value.smtp_code, info.value.smtp_error) == (
            554,
            b"5.6.0 cannot convert the attachment to fax pages",
        )
        handler.accept_error = Reject(452, "spool full", enhanced="4.3.1")
        smtp.mail(SENDER)
        smtp.rcpt(FAX)
        assert smtp.data(MESSAGE) == (452, b"4.3.1 spool full")


def test_accept_crash_is_451_and_server_keeps_serving(handler: Recorder, log_lines: Any) -> None:
    handler.accept_error = RuntimeError("disk on fire")
    with Running(handler) as srv:
        with srv.client() as smtp:
            smtp.ehlo()
            smtp.mail(SENDER)
            smtp.rcpt(FAX)
            assert smtp.data(MESSAGE) == (451, b"4.3.0 temporary failure, try again later")
        handler.accept_error = None
        with srv.client() as smtp:
            assert smtp.sendmail(SENDER, [FAX], MESSAGE) == {}
    assert len(handler.accepted) == 1
    [failed] = [r for r in log_lines.records if r.getMessage().startswith("event=smtp_in.accept_failed")]
    assert failed.exc_info is not None and "disk on fire" in str(failed.exc_info[1])
    assert any("stage=data code=451" in line for line in _lines(log_lines, "smtp_in.rejected"))


def test_stop_closes_open_connections(handler: Recorder) -> None:
    with Running(handler) as srv:
        smtp = srv.client()
        smtp.ehlo()
    with smtp, pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.noop()


def test_stop_lets_accept_in_progress_answer(handler: Recorder) -> None:
    entered, release = threading.Event(), threading.Event()
    handler.gate = (entered, release)
    replies: list[tuple[int, bytes]] = []
    with Running(handler) as srv:
        smtp = srv.client()
        smtp.ehlo()
        smtp.mail(SENDER)
        smtp.rcpt(FAX)
        other = srv.client()
        other.ehlo()
        sender = threading.Thread(target=lambda: replies.append(smtp.data(MESSAGE)))
        sender.start()
        assert entered.wait(10)
        stopping = srv.begin_stop()
        assert not stopping.done()
        assert other.mail(SENDER) == (421, b"4.3.2 shutting down, try again later")
        release.set()
        stopping.result(10)
        sender.join(10)
    smtp.close()
    other.close()
    assert replies == [(250, b"2.0.0 OK queued")]
    assert len(handler.accepted) == 1


def test_client_gone_during_accept_is_logged(handler: Recorder, log_lines: Any) -> None:
    entered, release = threading.Event(), threading.Event()
    handler.gate = (entered, release)
    errors: list[BaseException] = []

    def send(smtp: smtplib.SMTP) -> None:
        try:
            smtp.data(MESSAGE)
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(exc)

    with Running(handler) as srv:
        smtp = srv.client()
        smtp.ehlo()
        smtp.mail(SENDER)
        smtp.rcpt(FAX)
        sender = threading.Thread(target=send, args=(smtp,))
        sender.start()
        assert entered.wait(10)
        assert smtp.sock is not None
        smtp.sock.shutdown(socket.SHUT_RDWR)  # the client hangs up while the message is being stored
        sender.join(10)
        srv.until_no_connections()
        release.set()
    smtp.close()
    assert errors and len(handler.accepted) == 1
    [line] = _lines(log_lines, "smtp_in.accepted_unanswered")
    assert f"from={SENDER} rcpts=1" in line


# --- AUTH ----------------------------------------------------------------------------------------


def _login(smtp: smtplib.SMTP, mechanism: str, user: str, password: str, initial: bool = True) -> None:
    smtp.user, smtp.password = user, password
    method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
    smtp.auth(mechanism, method, initial_response_ok=initial)


@pytest.mark.parametrize(("mechanism", "initial"), [("PLAIN", True), ("PLAIN", False), ("LOGIN", False)])
def test_auth_success_on_loopback(handler: Recorder, log_lines: Any, mechanism: str, initial: bool) -> None:
    with Running(handler) as srv, srv.client() as smtp:
        smtp.ehlo()
        assert set(smtp.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
        _login(smtp, mechanism, "alice", PASSWORD, initial)
        assert smtp.sendmail(SENDER, [FAX], MESSAGE) == {}
    [(_, _, _, user, _)] = handler.accepted
    assert user == "alice"
    assert any("result=ok user=alice" in line for line in _lines(log_lines, "smtp_in.auth"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_failure_is_535(handler: Recorder, log_lines: Any, mechanism: str) -> None:
    with Running(handler) as srv, srv.client() as smtp:
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            _login(smtp, mechanism, "alice", "wrong")
        assert info.value.smtp_code == 535
        assert info.value.smtp_error == b"5.7.8 Authentication credentials invalid"
    assert any("result=failed user=alice" in line for line in _lines(log_lines, "smtp_in.auth"))


def test_auth_plain_utf8_credentials(handler: Recorder) -> None:
    # RFC 4616: authcid and passwd are UTF-8 (smtplib itself only sends ASCII)
    blob = base64.b64encode("\0jörg\0pässword".encode()).decode("ascii")
    with Running(handler) as srv, srv.client() as smtp:
        smtp.ehlo()
        assert smtp.docmd("AUTH", f"PLAIN {blob}") == (235, b"2.7.0 Authentication successful")
        assert smtp.sendmail(SENDER, [FAX], MESSAGE) == {}
    assert handler.accepted[0][3] == "jörg"


def test_auth_off(handler: Recorder) -> None:
    with Running(handler, auth=False) as srv, srv.client() as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")
        assert smtp.docmd("AUTH", "PLAIN") == (502, b"5.5.1 AUTH not available")


# --- STARTTLS ------------------------------------------------------------------------------------


def _self_signed_cryptography(cert: Path, key: Path) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=36500))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _self_signed_openssl(openssl: str, cert: Path, key: Path) -> None:
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "36500", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        import cryptography  # noqa: F401
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("STARTTLS tests need a self-signed certificate: neither `cryptography` nor `openssl`")
        _self_signed_openssl(openssl, cert, key)
    else:
        _self_signed_cryptography(cert, key)
    return str(cert), str(key)


def test_starttls_then_auth_for_remote_peer(
    handler: Recorder, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    monkeypatch.setattr(smtp_in, "_is_loopback", lambda peer: False)  # as if the client were remote
    client_tls = ssl.create_default_context(cafile=cert)
    with Running(handler, tls_cert=cert, tls_key=key) as srv, srv.client() as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        assert smtp.docmd("AUTH", "PLAIN") == (
            538,
            b"5.7.11 Encryption required for requested authentication mechanism",
        )
        assert smtp.starttls(context=client_tls)[0] == 220
        smtp.ehlo()
        assert not smtp.has_extn("starttls") and smtp.has_extn("auth")
        _login(smtp, "PLAIN", "alice", PASSWORD)
        assert smtp.sendmail(SENDER, [FAX], MESSAGE) == {}
    [(_, _, data, user, _)] = handler.accepted
    assert (data, user) == (MESSAGE, "alice")


def test_auth_needs_tls_unless_required_off(handler: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtp_in, "_is_loopback", lambda peer: False)
    with Running(handler) as srv, srv.client() as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth") and not smtp.has_extn("starttls")
    with Running(handler, require_tls_for_auth=False) as srv, srv.client() as smtp:
        smtp.ehlo()
        _login(smtp, "LOGIN", "alice", PASSWORD)
