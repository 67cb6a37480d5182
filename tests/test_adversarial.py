"""Hostile items: every transform is fast on the adversarial corpus, runs off the event loop in
a time budget, and one bad item never stops a sync (`ingestion.providers.items`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import select

from ingestion import metrics
from ingestion.config import Settings
from ingestion.errors import MalformedItem, RetryableError
from ingestion.memory.record import CONTENT_MAX_CHARS, MemoryRecord
from ingestion.providers.base import FetchOptions
from ingestion.providers.calendar.transform import event_record
from ingestion.providers.github.transform import commit_record, issue_record
from ingestion.providers.gmail.transform import transform as gmail_transform
from ingestion.providers.gmail.transform import trim_quoted
from ingestion.providers.items import ItemGuard
from ingestion.providers.twitter.transform import Includes, to_record
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.models import DeliveredRow, MemoryRow
from tests import adversarial
from tests.adversarial import LONG_EVENT_ID, Case, all_cases
from tests.emulators import RunningServer, serve
from tests.emulators.calendar import CalendarState, create_app

LOG = structlog.get_logger("test")


def _transform(case: Case, payload: Any) -> partial[Any]:
    """The production transform of a corpus entry, ready to run."""
    if case.provider == "gmail":
        return partial(gmail_transform, payload, "u1")
    if case.provider == "calendar":
        return partial(event_record, "u1", "me@example.com", payload, calendar_zone="Europe/Berlin")
    if case.provider == "github" and "issue" in case.name:
        issue, comments = payload
        return partial(issue_record, user_id="u1", repo="o/r", issue=issue, comments=comments)
    if case.provider == "github":
        commit, files = payload
        return partial(
            commit_record, user_id="u1", repo="o/r", commit=commit, files=files, patch_budget=20_000
        )
    return partial(
        to_record,
        payload,
        Includes.of({}),
        user_id="u1",
        account_user_id="9",
        account_username="me",
        timeline="tweets",
    )


def _record(value: Any) -> MemoryRecord:
    record = getattr(value, "record", value)
    assert isinstance(record, MemoryRecord)
    return record


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.name)
async def test_each_adversarial_item_is_stored_within_a_second(case: Case) -> None:
    payload = case.build()
    guard = ItemGuard(case.provider, LOG, budget=Settings().transform_time_budget)
    started = time.perf_counter()
    result = await guard.run(case.name, _transform(case, payload))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{case.name}: {elapsed:.2f} s"
    record = _record(result)
    assert len(record.content) <= CONTENT_MAX_CHARS
    # Stored (over budget on a loaded machine at worst: then counted defective, never skipped).
    assert "skipped" not in guard.take_counts()


def _content(case_name: str) -> MemoryRecord:
    [case] = [c for c in all_cases() if c.name == case_name]
    return _record(_transform(case, case.build())())


def test_what_the_hostile_items_become() -> None:
    wrote = _content("gmail: 60,000 'x wrote:' lines")
    assert wrote.content.startswith("new text on top\nx wrote:")
    assert wrote.content.endswith("more characters not stored]")

    wall = _content("gmail: 100,000-line quote wall")
    assert wall.content.startswith("the reply\n")
    assert "> quoted line" not in wall.content
    assert "Bob wrote:" not in wall.content
    # The unread part of the wall (over the input cap) is counted in the cut marker.
    assert wall.content.endswith("more characters not stored]")

    assert _content("gmail: HTML nested 20,000 deep").content == "deep text"
    assert "cell one" in _content("gmail: 2 MB of HTML tables").content
    # An HTML5 parser (as a browser) drops a tag left open at the end: no text, so the record
    # falls back to Gmail's snippet.
    assert _content("gmail: 30 KB of unclosed tags").content == "snippet of hostile"

    rrule = _content("calendar: RRULE INTERVAL=²")
    assert "Repeats: RRULE:FREQ=WEEKLY;INTERVAL=²" in rrule.content
    year1 = _content("calendar: year-1 start with an offset")
    assert year1.occurred_at == datetime.min.replace(tzinfo=UTC)
    long_id = _content("calendar: 1,024-character event id")
    assert long_id.source_id == f"me@example.com/{LONG_EVENT_ID}"
    assert len(LONG_EVENT_ID) == 1024
    crowd = _content("calendar: 10,000 attendees")
    assert len(crowd.metadata["attendees"]) == 2_000

    tweet = _content("twitter: year-1 creation time with an offset")
    assert tweet.occurred_at == datetime.min.replace(tzinfo=UTC)


def test_trim_quoted_keeps_its_rules() -> None:
    assert trim_quoted("Hi\n\nOn Mon, Bob wrote:\n> a\n>b\n") == "Hi"
    assert trim_quoted("Salut\n\nLe lundi, Bob a écrit :\n> a\n") == "Salut"
    assert trim_quoted("Hallo\n\nAm Montag schrieb Bob <b@x>:\n> a\n") == "Hallo"
    assert trim_quoted("Hi\n-----Original Message-----\nFrom: x\n") == "Hi"
    assert trim_quoted("Hi\n\nOn Mon, Bob wrote:\n> a\nnew text\n") == (
        "Hi\n\nOn Mon, Bob wrote:\n> a\nnew text"
    )
    assert trim_quoted("Body\n-- \nSig") == "Body"
    assert trim_quoted("> only quotes\n> here") == "> only quotes\n> here"


# --- the item guard --------------------------------------------------------------------------


def _items_metric(provider: str, action: str) -> float:
    return metrics.ITEMS.labels(provider=provider, action=action)._value.get()


async def test_an_item_over_budget_is_stored_with_what_was_extracted() -> None:
    message = adversarial.gmail_message("b1", adversarial.html_tables(), "text/html")
    before = _items_metric("gmail", "defective")
    generous = await ItemGuard("gmail", LOG, 5.0).run("b1", gmail_transform, message, "u1")
    assert "cell one cell two link (https://e.x/)" in _record(generous).content[:2000]

    guard = ItemGuard("gmail", LOG, budget=1e-6, hard_limit=30)
    result = await guard.run("b1", gmail_transform, message, "u1")
    content = _record(result).content
    assert "cell one" in content
    assert "(https://e.x/)" not in content[:2000]  # only stripped of its tags
    assert result is not None
    assert any("time budget" in d for d in result.defects)
    assert guard.take_counts() == {"defective": 1}
    assert _items_metric("gmail", "defective") == before + 1


async def test_an_item_that_overruns_is_abandoned_never_awaited_for_ever() -> None:
    def stuck() -> str:
        time.sleep(0.6)
        return "late"

    guard = ItemGuard("calendar", LOG, budget=0.02)  # abandoned at 5 x 0.02 s
    started = time.perf_counter()
    assert await guard.run("slow", stuck, fallback=lambda: "fallback") == "fallback"
    assert await guard.run("slow", stuck) is None
    assert time.perf_counter() - started < 0.6
    assert guard.take_counts() == {"defective": 1, "skipped": 1}


async def test_a_transform_that_raises_is_skipped_and_counted_errors_of_the_sync_are_not() -> None:
    guard = ItemGuard("github", LOG, budget=1.0)
    before = _items_metric("github", "skipped")

    def bad() -> None:
        raise ValueError("nope")

    def malformed() -> None:
        raise MalformedItem("bad shape")

    def outage() -> None:
        raise RetryableError("the sink is down")

    assert await guard.run("a", bad) is None
    assert await guard.run("b", malformed) is None
    with pytest.raises(RetryableError):
        await guard.run("c", outage)
    assert guard.take_counts() == {"skipped": 2}
    assert _items_metric("github", "skipped") == before + 2


async def test_transforms_run_off_the_event_loop() -> None:
    def busy() -> int:
        deadline = time.perf_counter() + 1.2
        n = 0
        while time.perf_counter() < deadline:
            n += 1
        return n

    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        assert await ItemGuard("gmail", LOG, budget=5.0).run("busy", busy)
    finally:
        task.cancel()
    assert len(gaps) > 10
    assert max(gaps) < 0.5, max(gaps)  # inline: one gap of 1.2 s


# --- a real sync -----------------------------------------------------------------------------

USER = "u1"
TOKEN = "ya29.hostile"
CALENDAR = "me@example.com"


@pytest.fixture
def calendar_emulator() -> Iterator[tuple[CalendarState, RunningServer]]:
    state = CalendarState(tokens={TOKEN: USER})
    server = serve(create_app(state))
    yield state, server
    server.stop()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_calendar_sync_stores_hostile_events_and_skips_only_the_broken_one(
    database: str,
    calendar_emulator: tuple[CalendarState, RunningServer],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    state, server = calendar_emulator
    url = (
        f"sqlite:///{tmp_path / 'ingestion.db'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    settings = Settings(
        database_url=url, calendar_api_url=server.url, calendar_quota_requests_per_minute=60_000
    )
    state.add_calendar(USER, CALENDAR, "Me", time_zone="Europe/Berlin", primary=True)
    now = datetime.now(UTC)
    soon = {"dateTime": now.replace(microsecond=0).isoformat().replace("+00:00", "Z")}
    state.insert_event(CALENDAR, id=LONG_EVENT_ID, summary="long id", start=soon, end=soon)
    state.insert_event(
        CALENDAR,
        id="rrule2",
        summary="superscript interval",
        start=soon,
        end=soon,
        recurrence=["RRULE:FREQ=WEEKLY;INTERVAL=\u00b2"],
    )
    state.insert_event(CALENDAR, id="year1", summary="year one", start=adversarial.event(
        "x", start={"dateTime": "0001-01-01T00:00:00+05:00"})["start"], end=soon)  # fmt: skip
    # A field of the wrong type (the API never sends a list there): no record can be made.
    state.insert_event(
        CALENDAR, id="broken", summary="broken", start=soon, end=soon,
        attendees=[{"email": "a@example.com", "responseStatus": ["accepted"]}],
    )  # fmt: skip
    state.insert_event(CALENDAR, id="fine", summary="fine", start=soon, end=soon)

    services = await Services.open(settings, migrate=True)
    try:
        async with services.db.session() as session:
            await save_account(session, user_id=USER, provider_id="google", access_token=TOKEN)
        before = _items_metric("calendar", "skipped")
        summary = await services.engine.run("calendar", USER, FetchOptions())
        assert summary.status == "ok"
        assert summary.upserted == 4
        assert summary.stats.get("skipped") == 1
        assert _items_metric("calendar", "skipped") == before + 1
        async with services.db.session() as session:
            stored = set((await session.execute(select(MemoryRow.source_id))).scalars())
            delivered = set((await session.execute(select(DeliveredRow.source_id))).scalars())
        expected = {f"{CALENDAR}/{e}" for e in (LONG_EVENT_ID, "rrule2", "year1", "fine")}
        assert stored == expected
        assert delivered == expected

        from ingestion.status import gather_status

        status = await gather_status(services.db)
        [run] = status["recentRuns"]
        assert (run["status"], run["skipped"], run["defective"]) == ("ok", 1, 0)

        # Nothing is retried for ever: the next sync is incremental and quiet.
        again = await services.engine.run("calendar", USER, FetchOptions())
        assert (again.status, again.upserted, again.stats.get("skipped")) == ("ok", 0, None)
    finally:
        await services.aclose()
