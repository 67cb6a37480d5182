"""Mail to feed the Gmail emulator: two real corpora and a generator.

- `stdlib_corpus()`: CPython's own email test messages (`test/test_email/data/msg_*.txt` of the
  standard library's test package), when this interpreter ships that package.
- `mailparser_corpus(cache)`: the sample mails of the `mail-parser` sdist from PyPI (real
  spam, Outlook mail and deliberately malformed messages), downloaded once with pip at a pinned
  version and cached under `tests/.cache/`.
- `generated_message(i)`: a realistic multipart/alternative message (plain + HTML, sometimes a
  PDF attachment) for benchmarks, deterministic in `i`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

__all__ = [
    "CACHE_DIR",
    "MAILPARSER_VERSION",
    "CorpusUnavailable",
    "generated_message",
    "mailparser_corpus",
    "stdlib_corpus",
]

CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache"
MAILPARSER_VERSION = "4.8.0"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"


class CorpusUnavailable(Exception):
    """The corpus cannot be obtained here (the reason is the message)."""


def stdlib_corpus() -> list[tuple[str, bytes]]:
    """(file name, raw bytes) of CPython's email test messages."""
    try:
        import test.test_email
    except ImportError as exc:
        raise CorpusUnavailable(
            f"the standard library test package is not installed: {exc}"
        ) from exc
    data = Path(test.test_email.__file__).parent / "data"
    files = sorted(data.glob("msg_*.txt"))
    if not files:
        raise CorpusUnavailable(f"no msg_*.txt in {data}")
    return [(path.name, path.read_bytes()) for path in files]


def _pip() -> list[str]:
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    uvx = shutil.which("uvx")
    if uvx:
        return [uvx, "pip"]
    return [sys.executable, "-m", "pip"]


def mailparser_corpus(cache: Path = CACHE_DIR) -> list[tuple[str, bytes]]:
    """(file name, raw bytes) of the sample mails in the mail-parser sdist (cached)."""
    target = cache / f"mail-parser-{MAILPARSER_VERSION}"
    mails = target / "mails"
    if not mails.is_dir():
        download = cache / "downloads"
        download.mkdir(parents=True, exist_ok=True)
        sdist = download / f"mail_parser-{MAILPARSER_VERSION}.tar.gz"
        if not sdist.exists():
            command = [
                *_pip(),
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"mail-parser=={MAILPARSER_VERSION}",
                "-d",
                str(download),
            ]
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
            if result.returncode != 0 or not sdist.exists():
                raise CorpusUnavailable(
                    f"pip download mail-parser=={MAILPARSER_VERSION} failed: "
                    f"{(result.stderr or result.stdout)[-500:]}"
                )
        staging = cache / f"staging-{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if "/tests/mails/" in m.name and m.isfile()]
            archive.extractall(staging, members=members, filter="data")
        extracted = next(staging.glob("*/tests/mails"))
        target.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # another worker got there first
            extracted.rename(mails)
        shutil.rmtree(staging, ignore_errors=True)
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
