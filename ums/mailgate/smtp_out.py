"""Delivery to a smarthost by SMTP, with errors sorted into "try again" and "give up".

What it does
------------
``deliver_smtp(settings, sender, recipients, message)`` hands one composed
message to the configured smarthost (STARTTLS and AUTH when configured) and
returns the recipients the server refused while accepting others.  Every
failure raises :class:`DeliveryError`, whose ``permanent`` flag tells the
pipeline whether to retry later or mark the message failed (and keep it).

How it works
------------
stdlib ``smtplib``, synchronous: it runs in a pipeline worker, never on the
event loop.  The classification follows RFC 5321 §4.2.1: a 5yz reply to
MAIL, RCPT or DATA is a "permanent negative completion" — the same message
will fail again — and a 4yz reply is "transient".  Everything that is not
about this message is temporary: connection refused or reset, timeouts, a
server that closes, TLS trouble, an unusable greeting and rejected
credentials (a configuration fix on either side makes the next attempt
succeed, and giving up on every queued message for a wrong password would be
wrong).

The message bytes are sent as they are (they already end lines in CRLF);
smtplib adds the dot-stuffing of RFC 5321 §4.5.2.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DeliveryError", "SmtpSettings", "deliver_smtp"]


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    #: RFC 3207 STARTTLS after EHLO; a server that does not offer it is a (temporary) error
    starttls: bool = False
    #: AUTH when non-empty (RFC 4954)
    username: str = ""
    password: str = ""
    #: seconds for connect and for each reply
    timeout: float = 30.0
    #: check the server certificate (turn off only for a smarthost on loopback with a self-signed cert)
    verify_tls: bool = True
    #: name sent in EHLO; empty: the local FQDN
    local_hostname: str = ""


class DeliveryError(Exception):
    """A failed delivery. ``permanent``: retrying the same message cannot help."""

    def __init__(self, permanent: bool, code: int | None, text: str) -> None:
        super().__init__(f"{'permanent' if permanent else 'temporary'} failure: {code or '-'} {text}")
        self.permanent = permanent
        self.code = code
        self.text = text


def _reply_text(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return raw


def _by_code(code: int, raw: bytes | str) -> DeliveryError:
    # RFC 5321 §4.2.1: 5yz permanent negative completion, 4yz transient negative completion
    return DeliveryError(500 <= code < 600, code, _reply_text(raw))


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not settings.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye; once the message is accepted, a failing QUIT must not turn into an error."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def deliver_smtp(
    settings: SmtpSettings, sender: str, recipients: Sequence[str], message: bytes
) -> dict[str, tuple[int, str]]:
    """Send ``message``; returns ``{recipient: (code, text)}`` for recipients refused while
    others were accepted (empty when all were accepted). Raises :class:`DeliveryError`."""
    if not recipients:
        raise ValueError("no recipients")
    try:
        smtp = smtplib.SMTP(
            settings.host,
            settings.port,
            local_hostname=settings.local_hostname or None,
            timeout=settings.timeout,
        )
        try:
            smtp.ehlo()
            if settings.starttls:
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(False, None, "the server does not offer STARTTLS")
                smtp.starttls(context=_tls_context(settings))
                smtp.ehlo()
            if settings.username:
                smtp.login(settings.username, settings.password)
            refused = smtp.sendmail(sender, list(recipients), message)
        finally:
            _quit(smtp)
    except DeliveryError:
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {rcpt: (code, _reply_text(text)) for rcpt, (code, text) in exc.recipients.items()}
        permanent = all(500 <= code < 600 for code, _ in codes.values())
        first_code, first_text = next(iter(codes.values()))
        raise DeliveryError(permanent, first_code, "recipients refused: " + first_text) from exc
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(
            False, exc.smtp_code, "authentication failed: " + _reply_text(exc.smtp_error)
        ) from exc
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        raise _by_code(exc.smtp_code, exc.smtp_error) from exc
    except smtplib.SMTPConnectError as exc:
        raise DeliveryError(False, exc.smtp_code, "greeting: " + _reply_text(exc.smtp_error)) from exc
    except smtplib.SMTPResponseException as exc:
        # HELO/EHLO, STARTTLS or AUTH refused: about the connection, not this message
        raise DeliveryError(False, exc.smtp_code, _reply_text(exc.smtp_error)) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(False, None, str(exc)) from exc
    except (smtplib.SMTPException, OSError) as exc:
        # SMTPServerDisconnected, connection refused/reset, timeouts, ssl.SSLError (an OSError)
        raise DeliveryError(False, None, f"{type(exc).__name__}: {exc}") from exc
    return {rcpt: (code, _reply_text(text)) for rcpt, (code, text) in refused.items()}
