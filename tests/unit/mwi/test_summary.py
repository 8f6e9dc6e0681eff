"""application/simple-message-summary bodies (RFC 3842 §5)."""

from __future__ import annotations

import pytest

from ums.mwi.summary import FAX, VOICE, MessageCounts, MessageSummary, SummaryError, summary_for


def test_body_for_new_message_matches_the_grammar_exactly() -> None:
    body = summary_for(MessageCounts(1, 0), account="sip:100@127.0.0.1")
    assert (
        body == b"Messages-Waiting: yes\r\nMessage-Account: sip:100@127.0.0.1\r\nVoice-Message: 1/0 (0/0)\r\n"
    )


def test_body_after_reading_and_without_account() -> None:
    assert summary_for(MessageCounts(0, 1)) == b"Messages-Waiting: no\r\nVoice-Message: 0/1 (0/0)\r\n"


def test_fax_line_when_faxes_are_counted() -> None:
    body = summary_for(MessageCounts(0, 2, 0, 1), fax=MessageCounts(1, 0), account="sip:100@h")
    assert body == (
        b"Messages-Waiting: yes\r\n"
        b"Message-Account: sip:100@h\r\n"
        b"Voice-Message: 0/2 (0/1)\r\n"
        b"Fax-Message: 1/0 (0/0)\r\n"
    )  # waiting because of the new fax


def test_rfc3842_example_parses() -> None:
    # the example body of RFC 3842, with its extension header block
    body = (
        b"Messages-Waiting: yes\r\n"
        b"Message-Account: sip:alice@vmail.example.com\r\n"
        b"Voice-Message: 2/8 (0/2)\r\n"
        b"\r\n"
        b"To: <alice@atlanta.example.com>\r\n"
        b"From: <bob@biloxi.example.com>\r\n"
    )
    s = MessageSummary.parse(body)
    assert s.waiting and s.account == "sip:alice@vmail.example.com"
    assert s.voice == MessageCounts(2, 8, 0, 2)
    assert s.fax is None
    assert s.extra == (("To", "<alice@atlanta.example.com>"), ("From", "<bob@biloxi.example.com>"))
    assert s.serialize() == body


def test_lenient_spacing_case_and_line_ends() -> None:
    s = MessageSummary.parse(b"messages-waiting:NO\nvoice-message : 0 / 3\nfax-message: 1/2 ( 1 / 0 )\n")
    assert not s.waiting
    assert s.classes == ((VOICE, MessageCounts(0, 3)), (FAX, MessageCounts(1, 2, 1, 0)))
    assert s.count("FAX-MESSAGE") == MessageCounts(1, 2, 1, 0)


def test_round_trip() -> None:
    s = MessageSummary(
        True, "sip:1@h", ((VOICE, MessageCounts(3, 4, 1, 2)), ("X-Video-Message", MessageCounts(1, 0)))
    )
    assert MessageSummary.parse(s.serialize()) == s


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"Voice-Message: 1/0\r\n",  # no status line first
        b"Messages-Waiting: maybe\r\n",
        b"Messages-Waiting: yes\r\nMessages-Waiting: no\r\n",
        b"Messages-Waiting: yes\r\nnonsense\r\n",
        b"Messages-Waiting: yes\r\nVoice-Message: 4294967296/0\r\n",
        b"Messages-Waiting: yes\r\nMessage-Account: \r\n",
        b"\xff\xfe",
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(SummaryError):
        MessageSummary.parse(body)


def test_counts_validated() -> None:
    with pytest.raises(ValueError):
        MessageCounts(-1, 0)
    assert str(MessageCounts(5, 6, 1, 2)) == "5/6 (1/2)"
