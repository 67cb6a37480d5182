"""Gmail through the real command line: real mail corpora, and a SIGKILL mid-backfill.

`ingestion sync gmail --user … --json` runs as its own process against the Gmail emulator and
the memory engine emulator on loopback, with its own SQLite database.
"""

from __future__ import annotations

import contextlib
import email
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from tests import reference
from tests.conftest import INGESTION, run_cli
from tests.emulators import gmail as gmail_emulator
from tests.emulators import memory_engine
from tests.emulators.gmail import GmailState
from tests.emulators.gmail_corpus import (
    generated_message,
    mailparser_corpus,
    stdlib_corpus,
)
from tests.emulators.memory_engine import MemoryEngineState
from tests.emulators.server import RunningServer, serve

USER = "u1"
TOKEN = "ya29.cli-test-token"


@pytest.fixture
def emulators() -> Iterator[tuple[GmailState, RunningServer, MemoryEngineState, RunningServer]]:
    gmail = GmailState()
    gmail.add_user(USER, TOKEN)
    engine = MemoryEngineState()
    gmail_server = serve(gmail_emulator.create_app(gmail))
    engine_server = serve(memory_engine.create_app(engine))
    yield gmail, gmail_server, engine, engine_server
    gmail_server.stop()
    engine_server.stop()


def cli_env(base_env: dict[str, str], emulators: Any, **extra: str) -> dict[str, str]:
    _, gmail_server, _, engine_server = emulators
    env = {**base_env, "GMAIL_API_URL": gmail_server.url, "MEMORY_ENGINE_URL": engine_server.url}
    env.update(extra)
    added = run_cli("accounts", "add", "gmail", "--user", USER, "--access-token", TOKEN, env=env)
    assert added.returncode == 0, added.stderr
    return env


def words(text: str) -> str:
    return " ".join(text.split())


def oracle_body(message: EmailMessage) -> str | None:
    """A line of new text from the standard library's own reading of the raw message."""
    try:
        part = message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else None
    except Exception:
        return None
    if not isinstance(text, str):
        return None
    for line in text.splitlines():
        line = words(line)
        if len(line) >= 12 and not line.startswith(">") and "\ufffd" not in line:
            return line[:40]
    return None


def check_corpus(name: str, raw: bytes, record: dict[str, Any], when: datetime) -> list[str]:
    """What differs between the record and the standard library's parse of the raw bytes."""
    problems: list[str] = []
    oracle: Any = email.message_from_bytes(raw, policy=policy.default)
    metadata = record["metadata"]
    try:
        subject = words(str(oracle["subject"] or ""))
    except Exception:
        subject = None
    if subject is not None and "\ufffd" not in subject and words(record["title"]) != subject:
        problems.append(f"{name}: title {record['title']!r} != {subject!r}")
    try:
        sender = oracle["from"].addresses[0].addr_spec if oracle["from"] else None
    except Exception:
        sender = None
    if (
        sender
        and "@" in sender
        and (metadata["from"] or {}).get("email", "").lower() != sender.lower()
    ):
        problems.append(f"{name}: from {metadata['from']} != {sender}")
    try:
        to = {a.addr_spec.lower() for a in oracle["to"].addresses} if oracle["to"] else set()
    except Exception:
        to = set()
    got_to = {a["email"].lower() for a in metadata["to"]}
    to = {a for a in to if "@" in a and not any("\udc80" <= c <= "\udcff" for c in a)}
    if to - got_to:
        problems.append(f"{name}: to {sorted(got_to)} misses {sorted(to - got_to)}")
    if record["occurredAt"] != when.isoformat().replace("+00:00", "Z"):
        problems.append(f"{name}: occurredAt {record['occurredAt']} != {when.isoformat()}")
    line = oracle_body(oracle)
    if line and line not in words(record["content"]):
        problems.append(f"{name}: body misses {line!r}")
    if "<html" in record["content"].lower() or "<body" in record["content"].lower():
        problems.append(f"{name}: HTML left in content")
    names = set()
    with contextlib.suppress(Exception):  # the oracle itself may choke on broken structure
        names = {a.get_filename() for a in oracle.iter_attachments() if a.get_filename()}
    listed = {a["filename"] for a in metadata["attachments"]}
    if names - listed:
        problems.append(f"{name}: attachments {sorted(listed)} miss {sorted(names - listed)}")
    problems.extend(
        f"{name}: attachment fields {sorted(attachment)}"
        for attachment in metadata["attachments"]
        if set(attachment) != {"filename", "mimeType", "size", "attachmentId"}
    )
    return problems


def test_full_sync_of_real_mail_corpora(base_env: dict[str, str], emulators: Any) -> None:
    """CPython's email test corpus and the mail-parser sample mails, each message once."""
    gmail, _, engine, _ = emulators
    corpus = [("stdlib/" + n, raw) for n, raw in stdlib_corpus(reference.require_stdlib_email())]
    mail_parser = reference.require("mail-parser")
    corpus += [("mail-parser/" + n, raw) for n, raw in mailparser_corpus(mail_parser)]
    assert len(corpus) >= 19
    now = datetime.now(UTC).replace(microsecond=0)
    expected: dict[str, tuple[str, bytes, datetime]] = {}
    for index, (name, raw) in enumerate(corpus):
        when = now - timedelta(hours=index + 1)
        message_id = gmail.add_message(USER, raw, internal_date=when, labels=["INBOX"])
        expected[message_id] = (name, raw, when)

    env = cli_env(base_env, emulators)
    result = run_cli("sync", "gmail", "--user", USER, "--json", env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok"
    assert summary["fetched"] == len(corpus)

    with engine.lock:
        records = {r["sourceId"]: r for r in engine.records.values()}
        assert set(engine.upserts.values()) == {1}  # each message landed exactly once
    assert set(records) == set(expected)
    problems = [
        problem
        for message_id, (name, raw, when) in expected.items()
        for problem in check_corpus(name, raw, records[message_id], when)
    ]
    assert problems == [], "\n".join(problems)

    by_name = {expected[mid][0]: record for mid, record in records.items()}
    fish = by_name["stdlib/msg_07.txt"]
    assert fish["title"] == "Here is your dingus fish"
    assert fish["metadata"]["attachments"][0]["filename"] == "dingusfish.gif"
    assert fish["metadata"]["attachments"][0]["mimeType"] == "image/gif"
    assert fish["metadata"]["attachments"][0]["attachmentId"]
    assert fish["url"] == f"https://mail.google.com/mail/u/0/#all/{fish['sourceId']}"
    russian = by_name["mail-parser/mail_test_1"]
    assert russian["title"] == "письмо уведом-е"  # noqa: RUF001
    assert russian["metadata"]["from"] == {
        "name": "служба ФНС Даниил Суворов",
        "email": "suvorov.s@nalg.ru",
    }
    attachments = [a["filename"] for a in russian["metadata"]["attachments"]]
    assert attachments == ["ФНС_РФ558.zip"]  # noqa: RUF001
    assert by_name["mail-parser/mail_test_5"]["title"] == "Je prépare mon été zéro complexe !"
    assert by_name["mail-parser/mail_test_12"]["title"] == "代开各地增值税发票"
    polish = by_name["mail-parser/mail_test_11"]["metadata"]["attachments"][0]["filename"]
    assert polish.startswith("Prokuratura Rejonowa Warszawa-Śródmieście")
    # Malformed mail (nested parts sharing one boundary) still yields its text.
    assert "Some removed test." in by_name["stdlib/msg_15.txt"]["content"]
    # The log names the defects of broken messages.
    assert "item ingested with defects" in result.stderr + result.stdout


@pytest.mark.chaos
def test_sigkill_mid_backfill_resumes_at_the_checkpoint(
    base_env: dict[str, str], emulators: Any
) -> None:
    gmail, _, engine, _ = emulators
    total, page = 60, 10
    now = datetime.now(UTC)
    for index in range(total):
        raw, when = generated_message(index, base=now)
        gmail.add_message(USER, raw, internal_date=when)
    env = cli_env(base_env, emulators, GMAIL_PAGE_SIZE=str(page), GMAIL_FETCH_CONCURRENCY="2")
    gmail.delay = 0.03  # each messages.get takes 30 ms: a page takes about 0.3 s

    process = subprocess.Popen(
        [*INGESTION, "sync", "gmail", "--user", USER, "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(engine.accepted_batches()) < 2:
            assert process.poll() is None, "the sync finished before it could be killed"
            assert time.monotonic() < deadline, "no page was accepted in time"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    with engine.lock:
        before = set(engine.records)
    assert page <= len(before) < total

    gmail.delay = 0.0
    mark = gmail.count()
    result = run_cli("sync", "gmail", "--user", USER, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    with engine.lock:
        assert {r["sourceId"] for r in engine.records.values()} == set(
            gmail.mailboxes[USER].messages
        )
        # The kill may land between the engine's acceptance and the cursor's commit: then
        # that one page is sent again (same ids, idempotent upserts), never more.
        assert sum(count - 1 for count in engine.upserts.values()) <= page
    resumed = gmail.requests[mark:]
    assert "getProfile" not in [r.endpoint for r in resumed]  # no new backfill was started
    first_listing = next(r for r in resumed if r.endpoint == "messages.list")
    assert "pageToken=" in first_listing.query
    fetched_again = sum(1 for r in resumed if r.endpoint == "messages.get")
    # Only the pages after the last checkpoint (at most one page replayed) were fetched.
    assert fetched_again <= total - len(before) + page
    assert json.loads(result.stdout)["status"] == "ok"
