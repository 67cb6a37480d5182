"""The embedded memory store and its full-text search, on SQLite (FTS5) and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ingestion.config import Settings
from ingestion.memory.local_store import LocalMemoryStore
from ingestion.memory.record import CONTENT_MAX_CHARS, MemoryRecord
from ingestion.storage.db import open_database
from tests.conftest import run_cli

FILLER = "The weekly notes cover routine items and nothing else of interest. " * 40


def note(
    source_id: str,
    title: str,
    content: str,
    *,
    user: str = "u1",
    source: Any = "gmail",
    type: Any = "email",
    day: int = 1,
) -> MemoryRecord:
    return MemoryRecord.build(
        source=source,
        user_id=user,
        source_id=source_id,
        type=type,
        title=title,
        content=content,
        occurred_at=datetime(2026, 2, day, 10, tzinfo=UTC),
        url=f"https://example.test/{source_id}",
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LocalMemoryStore]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    db = await open_database(Settings(database_url=url), migrate=True)
    yield LocalMemoryStore(db)
    await db.dispose()


async def test_search_finds_stemmed_words_with_a_snippet(store: LocalMemoryStore) -> None:
    await store.upsert(
        "u1",
        [
            note("m1", "Budget review", FILLER + "We approved the budgets for the Lisbon offsite."),
            note("m2", "Lunch", "Pizza on Friday.", day=2),
            note("m3", "Offsite planning", "Hotels booked in Lisbon for the team.", day=3),
        ],
    )
    hits = await store.search("lisbon budget")
    assert [h.id for h in hits] == ["gmail:u1:m1"]
    assert "Lisbon offsite" in hits[0].snippet
    assert len(hits[0].snippet) < 400
    assert hits[0].as_json() == {
        "id": "gmail:u1:m1",
        "title": "Budget review",
        "source": "gmail",
        "type": "email",
        "occurredAt": "2026-02-01T10:00:00Z",
        "url": "https://example.test/m1",
        "snippet": hits[0].snippet,
    }
    # Title matches rank above body matches; every word must match.
    assert [h.id for h in await store.search("offsite")] == ["gmail:u1:m3", "gmail:u1:m1"]
    assert await store.search("lisbon pizza") == []


async def test_search_filters_by_user_and_source_and_limits(store: LocalMemoryStore) -> None:
    await store.upsert("u1", [note(f"m{i}", f"Invoice {i}", "invoice due", day=i) for i in (1, 2)])
    await store.upsert(
        "u1",
        [note("octo/r#1", "Invoice bug", "invoice", source="github", type="issue", day=3)],
    )
    await store.upsert("u2", [note("m9", "Invoice", "invoice", user="u2")])
    assert len(await store.search("invoice")) == 4
    assert {h.id for h in await store.search("invoice", user_id="u2")} == {"gmail:u2:m9"}
    assert [h.id for h in await store.search("invoice", user_id="u1", source="github")] == [
        "github:u1:octo/r#1"
    ]
    assert len(await store.search("invoice", limit=2)) == 2


async def test_updates_and_deletes_reach_the_index(store: LocalMemoryStore) -> None:
    assert await store.upsert("u1", [note("m1", "Draft", "the old wording")]) == 1
    assert await store.upsert("u1", [note("m1", "Draft", "the old wording")]) == 0
    assert await store.upsert("u1", [note("m1", "Draft", "a brand new phrasing")]) == 1
    assert await store.search("wording") == []
    assert [h.id for h in await store.search("phrasing")] == ["gmail:u1:m1"]
    await store.delete("u1", ["gmail:u1:m1"])
    assert await store.search("phrasing") == []


async def test_any_typed_text_is_a_valid_query(store: LocalMemoryStore) -> None:
    await store.upsert("u1", [note("m1", "Release", 'Shipped "v2.0" (finally) - NEAR AND OR')])
    for query in ['"v2.0', "finally) AND (", "NEAR(", "-shipped*", "release:"]:
        assert [h.id for h in await store.search(query)] == ["gmail:u1:m1"], query
    assert await store.search("!!! ???") == []


async def test_control_characters_and_huge_bodies_are_stored_and_found(
    store: LocalMemoryStore,
) -> None:
    huge = "needle at the start. " + "hay " * 60_000 + "needle2 at the end"
    await store.upsert(
        "u1",
        [
            note("m1", "Binary\x00junk", b"caf\xc3\xa9 r\xe9sum\xc3\xa9 \x00\x01\x02 payload"),
            note("m2", "Huge", huge),
        ],
    )
    [hit] = await store.search("café payload")  # invalid byte replaced, control bytes gone
    assert hit.title == "Binaryjunk"
    assert "\x00" not in hit.snippet
    [big] = await store.search("needle")
    assert big.id == "gmail:u1:m2"
    # The end of the body was cut (with a marker) and is not searchable.
    assert await store.search("needle2") == []
    assert len(huge) > CONTENT_MAX_CHARS


async def test_cli_search_prints_json_and_a_table(base_env: dict[str, str]) -> None:
    settings = Settings(database_url=base_env["DATABASE_URL"])
    db = await open_database(settings, migrate=True)
    await LocalMemoryStore(db).upsert(
        "u1",
        [
            note("m1", "Dentist appointment", "Remember the dentist on Tuesday at nine."),
            note("e1", "Standup", "Daily standup.", source="calendar", type="event"),
        ],
    )
    await db.dispose()
    result = await asyncio.to_thread(
        run_cli, "search", "dentist", "--user", "u1", "--json", env=base_env
    )
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert [h["id"] for h in hits] == ["gmail:u1:m1"]
    assert set(hits[0]) == {"id", "title", "source", "type", "occurredAt", "url", "snippet"}
    assert "dentist on Tuesday" in hits[0]["snippet"]
    table = await asyncio.to_thread(
        run_cli, "search", "standup", "--source", "calendar", env=base_env
    )
    assert table.returncode == 0, table.stderr
    assert "Standup" in table.stdout
    assert "calendar/event" in table.stdout


async def test_cli_search_refuses_to_search_the_wrong_place(base_env: dict[str, str]) -> None:
    result = await asyncio.to_thread(
        run_cli, "search", "x", env={**base_env, "MEMORY_ENGINE_URL": "http://127.0.0.1:9"}
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: search looks inside the embedded memory store, but MEMORY_ENGINE_URL is set: "
        "memories go to the memory engine"
    )


async def test_migration_0002_indexes_memories_stored_before_it(sqlite_url: str) -> None:
    from sqlalchemy import create_engine, text

    from ingestion.storage.db import sync_url, upgrade

    settings = Settings(database_url=sqlite_url)
    await asyncio.to_thread(upgrade, settings, "0001")
    engine = create_engine(sync_url(settings))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ingestion_memories (id, user_id, source, source_id, type, title, "
                "content, url, occurred_at, metadata, content_hash, updated_at) VALUES "
                "('gmail:u1:old', 'u1', 'gmail', 'old', 'email', 'Old mail', 'synced long ago', "
                "NULL, '2025-01-01 00:00:00', '{}', 'h', '2025-01-01 00:00:00')"
            )
        )
    engine.dispose()
    db = await open_database(settings, migrate=True)
    try:
        assert [h.id for h in await LocalMemoryStore(db).search("long ago")] == ["gmail:u1:old"]
    finally:
        await db.dispose()
