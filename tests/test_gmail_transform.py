"""The Gmail transformer on the `full` payload the emulator builds from raw RFC 5322 bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.message import EmailMessage

from ingestion.providers.gmail.transform import transform, trim_quoted
from tests.emulators.gmail import GmailMessage, render_message

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def full(raw: bytes, labels: tuple[str, ...] = ("INBOX",)) -> dict[str, object]:
    message = GmailMessage(
        "18c0ffee00000001", "18c0ffee00000001", list(labels), raw, int(WHEN.timestamp() * 1000), 5
    )
    return render_message(message, "full")


def test_encoded_words_addresses_and_record_fields() -> None:
    raw = (
        b"From: =?iso-8859-1?q?Andr=E9_Dupont?= <andre@example.fr>\r\n"
        b'To: "Doe, Jane" <jane@example.com>, bob@example.com\r\n'
        b"Cc: =?utf-8?b?Wm/DqyBNw7xsbGVy?= <zoe@example.de>\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9_r=C3=A9union?= =?utf-8?q?_demain?=\r\n"
        b"Message-ID: <abc@example.fr>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Rendez-vous au caf\xc3\xa9.\r\n"
    )
    result = transform(full(raw, ("INBOX", "IMPORTANT")), "u1")
    record = result.record
    assert record.title == "Café réunion demain"
    assert record.content == "Rendez-vous au café."
    assert record.metadata["from"] == {"name": "André Dupont", "email": "andre@example.fr"}
    assert record.metadata["to"] == [
        {"name": "Doe, Jane", "email": "jane@example.com"},
        {"name": "", "email": "bob@example.com"},
    ]
    assert record.metadata["cc"] == [{"name": "Zoë Müller", "email": "zoe@example.de"}]
    assert record.metadata["messageId"] == "<abc@example.fr>"
    assert record.metadata["labels"] == ["INBOX", "IMPORTANT"]
    assert record.metadata["threadId"] == "18c0ffee00000001"
    assert record.occurred_at == WHEN
    assert record.url == "https://mail.google.com/mail/u/0/#all/18c0ffee00000001"
    assert record.id == "gmail:u1:18c0ffee00000001"
    assert result.defects == []


def test_encoded_names_whatever_they_hide_give_the_same_recipients() -> None:
    """Encoded words that may hold a separator (a Q-encoded comma, a quote) are parsed as
    the standard library does; the ones that cannot are split first, then decoded."""
    raw = (
        b"From: sender@example.org\r\n"
        b"To: =?utf-8?Q?Doe,_Jane?= <jane@example.com>, =?utf-8?q?Zo=C3=AB?= <zoe@example.de>\r\n"
        b"Cc: =?utf-8?q?Andr=C3=A9?= <andre@example.fr>,\r\n"
        b" =?utf-8?b?TcO8bGxlcg==?= =?utf-8?q?_Zo=C3=AB?= <mz@example.de>, plain@example.com\r\n"
        b"Subject: s\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
    )
    metadata = transform(full(raw), "u1").record.metadata
    assert metadata["to"] == [
        {"name": "Doe, Jane", "email": "jane@example.com"},
        {"name": "Zoë", "email": "zoe@example.de"},
    ]
    assert metadata["cc"] == [
        {"name": "André", "email": "andre@example.fr"},
        {"name": "Müller Zoë", "email": "mz@example.de"},
        {"name": "", "email": "plain@example.com"},
    ]


def test_plain_is_preferred_and_html_only_becomes_text() -> None:
    message = EmailMessage()
    message["Subject"] = "both"
    message.set_content("The plain version.\n")
    message.add_alternative("<html><body><p>The <b>HTML</b> version.</p></body></html>", "html")
    assert transform(full(message.as_bytes()), "u1").record.content == "The plain version."

    html = EmailMessage()
    html["Subject"] = "html only"
    html.set_content(
        "<html><head><style>p {color: red}</style></head><body><h1>Launch</h1>"
        "<p>See the <a href='https://example.com/plan'>plan</a> &amp; notes.</p>"
        "<table><tr><td>Q1</td><td>done</td></tr></table></body></html>",
        subtype="html",
    )
    content = transform(full(html.as_bytes()), "u1").record.content
    assert "<" not in content
    assert "color: red" not in content
    assert "Launch" in content
    assert "plan" in content
    assert "& notes." in content
    assert "Q1" in content
    assert "done" in content


def test_forwarded_message_rfc822_is_rendered_with_its_headers() -> None:
    inner = EmailMessage()
    inner["From"] = "Carol <carol@example.org>"
    inner["Subject"] = "Original plan"
    inner["Date"] = "Tue, 03 Mar 2026 10:00:00 +0000"
    inner.set_content("Budget is approved.\n")
    outer = EmailMessage()
    outer["Subject"] = "Fwd: Original plan"
    outer.set_content("FYI, see below.\n")
    outer.add_attachment(inner)
    record = transform(full(outer.as_bytes()), "u1").record
    assert record.content.startswith("FYI, see below.")
    assert "From: Carol <carol@example.org>" in record.content
    assert "Subject: Original plan" in record.content
    assert "Budget is approved." in record.content


def test_wrong_and_unknown_charsets_never_fail_the_message() -> None:
    wrong = (
        b"Subject: wrong\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Caf\xe9 cr\xe8me \x80 10\r\n"
    )
    result = transform(full(wrong), "u1")
    assert result.record.content == "Café crème € 10"
    assert any("not valid utf-8" in d for d in result.defects)

    unknown = (
        b"Subject: unknown\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
        b"na\xc3\xafve\r\n"
    )
    result = transform(full(unknown), "u1")
    assert result.record.content == "naïve"  # valid UTF-8: the label is never needed
    unknown_latin = unknown.replace(b"\xc3\xaf", b"\xef")
    result = transform(full(unknown_latin), "u1")
    assert result.record.content == "naïve"  # not UTF-8, unknown label: Windows-1252
    assert any("unknown charset" in d for d in result.defects)


def test_missing_boundary_is_kept_as_text_and_reported() -> None:
    raw = (
        b"Subject: broken\r\nContent-Type: multipart/mixed\r\n\r\n"
        b"There is no boundary parameter, but this text matters.\r\n"
    )
    result = transform(full(raw), "u1")
    assert "this text matters" in result.record.content
    assert any("without parts" in d for d in result.defects)


def test_attachments_are_listed_never_stored() -> None:
    payload = bytes(range(256)) * 40
    message = EmailMessage()
    message["Subject"] = "report"
    message.set_content("Attached.\n")
    message.add_attachment(payload, maintype="application", subtype="pdf", filename="Q1 résumé.pdf")
    record = transform(full(message.as_bytes()), "u1").record
    [attachment] = record.metadata["attachments"]
    assert attachment["filename"] == "Q1 résumé.pdf"
    assert attachment["mimeType"] == "application/pdf"
    assert attachment["size"] == len(payload)
    assert attachment["attachmentId"]
    wire = json.dumps(record.to_wire())
    assert len(wire) < 2000  # no attachment bytes, base64 or otherwise
    assert record.content == "Attached."


def test_quoted_reply_chain_and_signature_are_trimmed_new_text_stays() -> None:
    text = (
        "Sounds good, ship it on Friday.\n\n-- \nBob\nVP Shipping\n\n"
        "On Mon, Mar 2, 2026 at 9:00 AM Alice <alice@example.com> wrote:\n"
        "> Can we ship on Friday?\n> \n> Alice\n"
    )
    assert trim_quoted(text) == "Sounds good, ship it on Friday."
    outlook = "Yes.\n\n-----Original Message-----\nFrom: Alice\nSent: Monday\n\nQuestion?\n"
    assert trim_quoted(outlook) == "Yes."
    inline = "> first question\nAnswer one.\n> second question\nAnswer two.\n"
    assert trim_quoted(inline) == "> first question\nAnswer one.\n> second question\nAnswer two."
    only_quote = "> everything is quoted\n> here\n"
    assert trim_quoted(only_quote) == only_quote.strip()


def test_a_message_without_payload_or_headers_still_becomes_a_record() -> None:
    bare = {"id": "abc", "threadId": "abc", "snippet": "just a snippet", "internalDate": "0"}
    result = transform(bare, "u1")
    assert result.record.title == ""
    assert result.record.content == "just a snippet"
    assert result.record.metadata["from"] is None
