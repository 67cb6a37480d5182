"""Mail to feed the Gmail emulator: two real corpora and a generator.

- `stdlib_corpus(data)`: CPython's own email test messages (`test/test_email/data/msg_*.txt` of
  the standard library's test package).
- `mailparser_corpus(folder)`: the sample mails of the `mail-parser` sdist from PyPI (real
  spam, Outlook mail and deliberately malformed messages), reference material fetched by
  `uv run python -m tests.reference` (tests/reference.py).
- `generated_message(i)`: a realistic multipart/alternative message (plain + HTML, sometimes a
  PDF attachment) for benchmarks, deterministic in `i`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

__all__ = [
    "CorpusUnavailable",
    "generated_message",
    "mailparser_corpus",
    "stdlib_corpus",
]

_OLE_MAGIC = b"\xd0\xcf\x11\xe0"


class CorpusUnavailable(Exception):
    """The corpus cannot be obtained here (the reason is the message)."""


def stdlib_corpus(data: Path) -> list[tuple[str, bytes]]:
    """(file name, raw bytes) of CPython's email test messages in `data`."""
    files = sorted(data.glob("msg_*.txt"))
    if not files:
        raise CorpusUnavailable(f"no msg_*.txt in {data}")
    return [(path.name, path.read_bytes()) for path in files]


def mailparser_corpus(folder: Path) -> list[tuple[str, bytes]]:
    """(file name, raw bytes) of the sample mails of the unpacked mail-parser sdist."""
    mails = folder / "tests" / "mails"
    # mail_outlook_1 is an Outlook .msg file (OLE compound document), not RFC 5322 mail.
    return [
        (path.name, data)
        for path in sorted(mails.iterdir())
        if path.is_file() and not (data := path.read_bytes()).startswith(_OLE_MAGIC)
    ]


_WORDS = [
    "quarterly",
    "report",
    "budget",
    "meeting",
    "schedule",
    "launch",
    "review",
    "design",
    "draft",
    "invoice",
    "travel",
    "customer",
    "feedback",
    "roadmap",
    "hiring",
    "offsite",
    "contract",
    "renewal",
    "release",
    "notes",
    "incident",
    "postmortem",
    "dashboard",
    "metrics",
    "analysis",
    "proposal",
    "agenda",
    "minutes",
    "follow-up",
    "deadline",
]


def _template(cc: bool, attachment: bool) -> bytes:
    message = EmailMessage()
    message["From"] = "Sender @@N97@@ <sender@@N97@@@example.org>"
    message["To"] = "Owner <owner@example.com>"
    if cc:
        message["Cc"] = "Team <team@example.com>, Zoë Müller <zoe@example.de>"
    message["Subject"] = "Re: @@TOPIC@@ #@@N@@"
    message["Date"] = _DATE_SENTINEL
    message["Message-ID"] = "<gen-@@N@@@example.org>"
    message.set_content(
        "Hello,\n\n@@PARAGRAPH@@.\n\nItem @@N@@ is ready for review.\n\nBest,\nSender\n",
        cte="7bit",
    )
    message.add_alternative(
        "<html><body><p>Hello,</p><p>@@PARAGRAPH@@.</p><p>Item <b>@@N@@</b> is ready "
        "for review.</p><p>Best,<br>Sender</p></body></html>",
        subtype="html",
        cte="7bit",
    )
    if attachment:
        message.add_attachment(
            (b"%PDF-1.4\n" + bytes(range(256)) * 8),
            maintype="application",
            subtype="pdf",
            filename="report-@@N@@.pdf",
        )
    return message.as_bytes()


_TEMPLATES: dict[tuple[bool, bool], bytes] = {}
_DATE_SENTINEL = "Thu, 01 Jan 1970 00:00:00 +0000"


def generated_message(index: int, *, base: datetime | None = None) -> tuple[bytes, datetime]:
    """A deterministic realistic message and its receive time (one minute apart, newest last).

    Plain + HTML alternative; one in five has a Cc (with an RFC 2047 encoded name), one in ten
    a PDF attachment. Built from a template (fast enough for a 10,000-message mailbox).
    """
    when = (base or datetime(2026, 11, 1, tzinfo=UTC)) - timedelta(minutes=10_000 - index)
    words = [_WORDS[(index * 7 + k * 3) % len(_WORDS)] for k in range(12)]
    key = (index % 5 == 0, index % 10 == 0)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = _template(*key)
    raw = _TEMPLATES[key]
    for placeholder, value in (
        (b"@@N97@@", str(index % 97)),
        (b"@@TOPIC@@", " ".join(words[:4]).title()),
        (_DATE_SENTINEL.encode(), format_datetime(when)),
        (b"@@PARAGRAPH@@", " ".join(words * 4)),
        (b"@@N@@", str(index)),
    ):
        raw = raw.replace(placeholder, value.encode())
    return raw, when
