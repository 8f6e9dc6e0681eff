"""GatewayRouter: one SMTP listener in front of the fax and SMS gateways."""

from __future__ import annotations

import pytest

from ums.mailgate.smtp_in import GatewayRouter, Reject


class Gateway:
    def __init__(self, domain: str, senders: set[str], fail_accept: bool = False) -> None:
        self.domain = domain
        self.senders = senders
        self.fail_accept = fail_accept
        self.accepted: list[list[str]] = []

    def claims(self, rcpt: str) -> bool:
        return rcpt.strip("<>").lower().endswith("@" + self.domain)

    def check_sender(self, mail_from: str, auth_user: str | None) -> None:
        if mail_from not in self.senders:
            raise Reject(550, f"{mail_from} may not use {self.domain}")

    def check_recipient(self, rcpt: str, mail_from: str, auth_user: str | None) -> None:
        if "bad" in rcpt:
            raise Reject(550, "not a number")

    def accept(self, mail_from: str, rcpts: list[str], data: bytes, auth_user: str | None, peer: str) -> None:
        if self.fail_accept:
            raise OSError("disk full")
        self.accepted.append(rcpts)

    def authenticate(self, user: str, password: str) -> bool:
        return user == self.domain


def test_each_recipient_goes_to_the_gateway_that_claims_it() -> None:
    fax = Gateway("fax.x", {"a@x"})
    sms = Gateway("sms.x", {"a@x"})
    router = GatewayRouter([fax, sms])
    router.check_sender("a@x", None)
    for rcpt in ("1@fax.x", "2@sms.x", "3@fax.x"):
        router.check_recipient(rcpt, "a@x", None)
    router.accept("a@x", ["1@fax.x", "2@sms.x", "3@fax.x"], b"mail", None, "peer")
    assert fax.accepted == [["1@fax.x", "3@fax.x"]] and sms.accepted == [["2@sms.x"]]


def test_unknown_addresses_and_wrong_senders_are_refused_at_rcpt() -> None:
    fax = Gateway("fax.x", {"a@x"})
    sms = Gateway("sms.x", {"b@x"})
    router = GatewayRouter([fax, sms])
    router.check_sender("b@x", None)  # one gateway takes the sender at MAIL FROM
    with pytest.raises(Reject, match=r"may not use fax\.x"):
        router.check_recipient("1@fax.x", "b@x", None)
    with pytest.raises(Reject, match=r"no such gateway address: 1@mail\.x") as info:
        router.check_recipient("<1@mail.x>", "b@x", None)
    assert info.value.code == 550
    with pytest.raises(Reject, match="not a number"):
        router.check_recipient("bad@sms.x", "b@x", None)
    with pytest.raises(Reject, match=r"c@x may not use fax\.x"):  # the first gateway's reason
        router.check_sender("c@x", None)


def test_accept_failure_reaches_the_listener_and_auth_is_any() -> None:
    router = GatewayRouter([Gateway("fax.x", {"a@x"}), Gateway("sms.x", {"a@x"}, fail_accept=True)])
    with pytest.raises(OSError):
        router.accept("a@x", ["2@sms.x"], b"mail", None, "peer")
    assert router.authenticate("sms.x", "pw") and not router.authenticate("nobody", "pw")
    with pytest.raises(ValueError):
        GatewayRouter([])
