"""The text of a mail as an SMS: quoted history, signatures and taglines left out."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage

import pytest

from ums.sms.text import NOTHING_TO_SEND, EmptySms, clean_sms_text, html_to_text, sms_text_from_mail


def _mail(plain: str | None = None, html: str | None = None, *, flowed: bool = False) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = "Jane Doe <jane@example.com>"
    msg["To"] = "+4989123456@sms.example.com"
    msg["Subject"] = "Re: meeting"
    if plain is not None:
        msg.set_content(plain, params={"format": "flowed"} if flowed else {})
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content("x")
        msg.clear_content()
    return msg


def test_plain_text() -> None:
    assert sms_text_from_mail(_mail("Running late, be there at 3.\n")) == "Running late, be there at 3."


def test_bytes_in() -> None:
    raw = _mail("Grüße aus München").as_bytes()
    assert sms_text_from_mail(raw) == "Grüße aus München"


def test_plain_preferred_to_html() -> None:
    msg = _mail("plain words", "<p>html words</p>")
    assert sms_text_from_mail(msg) == "plain words"


def test_html_fallback() -> None:
    html = (
        "<html><head><style>p{color:red}</style><title>t</title></head><body>"
        "<p>Call me&nbsp;back</p><p>at <b>5</b></p>"
        '<div class="gmail_signature">Jane Doe<br>ACME Corp</div></body></html>'
    )
    assert sms_text_from_mail(_mail(html=html)) == "Call me back\n\nat 5"


def test_html_used_when_plain_is_only_a_signature() -> None:
    msg = _mail("-- \nJane Doe", "<div>Yes, see you</div>")
    assert sms_text_from_mail(msg) == "Yes, see you"


def test_gmail_reply() -> None:
    plain = (
        "Sounds good, see you then.\n"
        "\n"
        "On Mon, Mar 4, 2024 at 10:12 AM Bob Smith <bob@example.com>\n"
        "wrote:\n"
        "\n"
        "> Can we meet at 3?\n"
        ">\n"
        "> Bob\n"
    )
    html = (
        '<div dir="ltr">Sounds good, see you then.</div><br><div class="gmail_quote">'
        '<div dir="ltr" class="gmail_attr">On Mon, Mar 4, 2024 at 10:12 AM Bob Smith wrote:<br></div>'
        '<blockquote class="gmail_quote">Can we meet at 3?<br>Bob</blockquote></div>'
    )
    assert sms_text_from_mail(_mail(plain, html)) == "Sounds good, see you then."
    assert sms_text_from_mail(_mail(html=html)) == "Sounds good, see you then."


def test_outlook_reply() -> None:
    plain = (
        "Yes, the invoice went out today.\r\n"
        "\r\n"
        "Best regards\r\n"
        "Jane\r\n"
        "\r\n"
        "________________________________\r\n"
        "From: Bob Smith <bob@example.com>\r\n"
        "Sent: Monday, March 4, 2024 10:12 AM\r\n"
        "To: Jane Doe <jane@example.com>\r\n"
        "Subject: invoice\r\n"
        "\r\n"
        "Did the invoice go out?\r\n"
    )
    assert sms_text_from_mail(_mail(plain)) == "Yes, the invoice went out today.\n\nBest regards\nJane"


def test_outlook_desktop_original_message() -> None:
    plain = (
        "Confirmed.\n\n"
        "-----Original Message-----\n"
        "From: Bob Smith [mailto:bob@example.com]\n"
        "Sent: Monday, March 04, 2024 10:12 AM\n"
        "To: Jane Doe\n"
        "Subject: order 42\n\n"
        "Please confirm order 42.\n"
    )
    assert sms_text_from_mail(_mail(plain)) == "Confirmed."


def test_outlook_german_and_french() -> None:
    german = (
        "Passt, bis morgen.\n\n"
        "Von: Bob Schmidt <bob@example.com>\n"
        "Gesendet: Montag, 4. März 2024 10:12\n"
        "An: Jane Doe\n"
        "Betreff: Termin\n\n"
        "Geht morgen um 10?\n"
    )
    assert clean_sms_text(german) == "Passt, bis morgen."
    assert clean_sms_text("Ok.\n\n-----Ursprüngliche Nachricht-----\nVon: Bob\nText") == "Ok."
    french = (
        "D'accord.\n\n"
        "De : Bob Martin <bob@example.com>\n"
        "Envoyé : lundi 4 mars 2024 10:12\n"
        "À : Jane Doe\n"
        "Objet : rendez-vous\n\n"
        "Demain ?\n"
    )
    assert clean_sms_text(french) == "D'accord."
    assert (
        clean_sms_text("Oui.\n\nLe lun. 4 mars 2024 à 10:12, Bob <bob@example.com> a écrit :\n> Demain ?")
        == "Oui."
    )
    assert (
        clean_sms_text("Ja.\n\nAm 04.03.2024 um 10:12 schrieb Bob Schmidt <bob@example.com>:\n> Morgen?")
        == "Ja."
    )


def test_apple_mail_reply_with_tagline() -> None:
    plain = (
        "On my way\n"
        "\n"
        "Sent from my iPhone\n"
        "\n"
        "> On 4 Mar 2024, at 10:12, Bob Smith <bob@example.com> wrote:\n"
        "> \n"
        "> Where are you?\n"
    )
    assert sms_text_from_mail(_mail(plain)) == "On my way"
    html = (
        "<html><body><div>On my way</div><div><br><div>Sent from my iPhone</div>"
        '<div><br><blockquote type="cite">On 4 Mar 2024, at 10:12, Bob wrote:<br><br>'
        "<div>Where are you?</div></blockquote></div></div></body></html>"
    )
    assert sms_text_from_mail(_mail(html=html)) == "On my way"


def test_taglines() -> None:
    for tagline in (
        "Sent from my iPhone",
        "Von meinem iPad gesendet",
        "Get Outlook for Android",
        "Sent from Mail for Windows",
        "Envoyé de mon iPhone",
        "Gesendet von Outlook für Android",
    ):
        assert clean_sms_text(f"Call me.\n\n{tagline}") == "Call me.", tagline
    assert clean_sms_text("Call me.\nSent from my phone") == "Call me."
    assert clean_sms_text("Sent the parcel today.") == "Sent the parcel today."
    assert clean_sms_text("Sent from the mail room today.") == "Sent from the mail room today."
    assert (
        clean_sms_text("Sent from my office, the report is attached.")
        == "Sent from my office, the report is attached."
    )


def test_signature_separator() -> None:
    assert (
        clean_sms_text("Meeting moved to 4pm.\n-- \nJane Doe\nACME Corp\n+49 89 123456")
        == "Meeting moved to 4pm."
    )
    assert clean_sms_text("Meeting moved to 4pm.\n--\nJane") == "Meeting moved to 4pm."
    assert clean_sms_text("a -- b") == "a -- b"


def test_bottom_posting_keeps_the_answer() -> None:
    plain = "On Mon, 4 Mar 2024, Bob wrote:\n> Is it ready?\n\nYes, ready since Friday.\n-- \nJane\n"
    assert clean_sms_text(plain) == "Yes, ready since Friday."


def test_inline_reply() -> None:
    plain = "> Time?\n3pm\n> Place?\nRoom B\n"
    assert clean_sms_text(plain) == "3pm\nRoom B"


def test_whitespace() -> None:
    text = "  Hello\u00a0\u00a0there,\t\tBob  \n\n\n\n\u200bSee\u200b you   soon.\r\n\r\n\r\n"
    assert clean_sms_text(text) == "Hello there, Bob\n\nSee you soon."


def test_outlook_inline_image_placeholder() -> None:
    assert clean_sms_text("See below [cid:image001.png@01DA6E2B.5C0E3A40]\nthanks") == "See below\nthanks"


def test_format_flowed() -> None:
    msg = _mail("This is a long line that \r\nwas wrapped by the client.\r\n", flowed=True)
    assert sms_text_from_mail(msg) == "This is a long line that was wrapped by the client."


def test_max_chars_cuts_at_a_word() -> None:
    text = "word " * 300
    out = sms_text_from_mail(_mail(text), max_chars=100)
    assert len(out) <= 100
    assert out.endswith("word...")
    assert sms_text_from_mail(_mail("x" * 200), max_chars=50) == "x" * 47 + "..."
    with pytest.raises(ValueError, match="max_chars"):
        sms_text_from_mail(_mail("x"), max_chars=0)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   \n\n \u00a0\n",
        "-- \nJane Doe\nACME",
        "Sent from my iPhone",
        "On Mon, 4 Mar 2024, Bob wrote:\n> hello",
        "-----Original Message-----\nFrom: Bob\nhello",
    ],
)
def test_empty(body: str) -> None:
    with pytest.raises(EmptySms, match=NOTHING_TO_SEND) as info:
        sms_text_from_mail(_mail(body))
    assert info.value.reason == "nothing to send: the mail has no text"
    assert isinstance(info.value, ValueError)


def test_no_text_part() -> None:
    msg = EmailMessage()
    msg["Subject"] = "only an attachment"
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="x.pdf")
    with pytest.raises(EmptySms):
        sms_text_from_mail(msg)


def test_text_attachment_is_not_the_body() -> None:
    msg = EmailMessage()
    msg.set_content("the body")
    msg.add_attachment("attached notes", filename="notes.txt")
    assert sms_text_from_mail(msg) == "the body"


def test_html_to_text_blocks() -> None:
    lines = html_to_text("<p>a</p><p>b<br>c</p><pre>x  y</pre>").split("\n")
    assert [line for line in lines if line] == ["a", "b", "c", "x  y"]
    assert clean_sms_text(html_to_text("<p>a</p><p>b<br>c</p>")) == "a\n\nb\nc"


def test_outlook_web_html_reply() -> None:
    html = (
        '<html><body><div style="font-family:Calibri">Yes, 3pm works.</div>'
        '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
        '<div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Bob Smith<br><b>Sent:</b> Monday<br>'
        "<b>Subject:</b> meeting</div><div>Does 3pm work?</div></body></html>"
    )
    assert sms_text_from_mail(_mail(html=html)) == "Yes, 3pm works."


def test_outlook_desktop_html_reply() -> None:
    html = (
        '<html><body><div class="WordSection1"><p class="MsoNormal">Done.<o:p></o:p></p>'
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
        '<p class="MsoNormal"><b>Von:</b> Bob Schmidt &lt;bob@example.com&gt;<br>'
        "<b>Gesendet:</b> Montag, 4. März 2024 10:12<br><b>An:</b> Jane<br><b>Betreff:</b> x</p></div>"
        '<p class="MsoNormal">Erledigt?</p></div></body></html>'
    )
    assert sms_text_from_mail(_mail(html=html)) == "Done."
