"""The HTTP sink against the reference memory engine emulator: bounds, retries, refusals,
skip-unchanged and idempotent resends."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ingestion.config import Settings
from ingestion.errors import ConfigurationError, PermanentError, RateLimited, RetryableError
from ingestion.memory.http_sink import HttpMemorySink
from ingestion.memory.record import MemoryRecord
from ingestion.storage.db import Database, open_database
from tests.emulators.memory_engine import MemoryEngineState, create_app
from tests.emulators.server import RunningServer, serve

USER = "user-1"


def make_records(n: int, *, body: str = "", start: int = 0, user: str = USER) -> list[MemoryRecord]:
    return [
        MemoryRecord.build(
            source="github",
            user_id=user,
            source_id=f"octo/repo#{i}",
            type="issue",
            title=f"Issue {i}",
            content=f"Body of issue {i}. {body}",
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            url=f"https://github.com/octo/repo/issues/{i}",
            metadata={"repo": "octo/repo", "number": i, "state": "open"},
        )
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def engine_server() -> Iterator[tuple[MemoryEngineState, RunningServer]]:
    state = MemoryEngineState()
    server = serve(create_app(state))
    yield state, server
    server.stop()


@pytest.fixture
def engine(
    engine_server: tuple[MemoryEngineState, RunningServer],
) -> tuple[MemoryEngineState, RunningServer]:
    engine_server[0].reset()
    return engine_server


@pytest.fixture
def state(engine: tuple[MemoryEngineState, RunningServer]) -> MemoryEngineState:
    return engine[0]


@pytest.fixture
async def db(migrated_sqlite_url: str) -> AsyncIterator[Database]:
    database = await open_database(Settings(database_url=migrated_sqlite_url), migrate=False)
    yield database
    await database.dispose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def make_sink(
    engine: tuple[MemoryEngineState, RunningServer], db: Database, http: httpx.AsyncClient
) -> Any:
    def build(**settings: Any) -> HttpMemorySink:
        fast = {
            "attempts": settings.pop("attempts", 5),
            "wait_initial": 0.01,
            "wait_max": 0.05,
            "wait_jitter": 0.01,
        }
        config = Settings(
            database_url="sqlite:///unused.db", memory_engine_url=engine[1].url, **settings
        )
        return HttpMemorySink(config, db, http, **fast)

    return build


async def test_batches_hold_at_most_100_records(state: MemoryEngineState, make_sink: Any) -> None:
    sink = make_sink()
    assert await sink.upsert(USER, make_records(250)) == 250
    assert [r.count for r in state.accepted_batches()] == [100, 100, 50]
    assert len(state.ids(USER)) == 250


async def test_batches_hold_the_byte_bound_and_a_giant_travels_alone(
    state: MemoryEngineState, make_sink: Any
) -> None:
    sink = make_sink(memory_batch_max_bytes=20_000)
    records = make_records(30, body="x" * 2_000)
    giant = make_records(1, body="y" * 50_000, start=100)
    await sink.upsert(USER, [*records, *giant, *make_records(3, start=200)])
    batches = state.accepted_batches()
    assert sum(r.count for r in batches) == 34
    oversized = [r for r in batches if r.size > 20_000]
    assert [r.count for r in oversized] == [1]
    assert all(1 < r.count < 30 for r in batches[:3])


async def test_a_413_splits_the_batch(state: MemoryEngineState, make_sink: Any) -> None:
    state.max_body_bytes = 30_000
    sink = make_sink()
    await sink.upsert(USER, make_records(40, body="z" * 1_500))
    assert len(state.ids()) == 40
    assert any(r.status == 413 for r in state.batch_requests())
    assert all(r.size <= 30_000 for r in state.accepted_batches())


async def test_503_then_success(state: MemoryEngineState, make_sink: Any) -> None:
    state.fail_next(503, 2)
    sink = make_sink()
    assert await sink.upsert(USER, make_records(5)) == 5
    assert [r.status for r in state.batch_requests()] == [503, 503, 200]
    assert len(state.ids()) == 5


async def test_429_waits_the_retry_after(state: MemoryEngineState, make_sink: Any) -> None:
    state.fail_next(429, 1, retry_after=1)
    sink = make_sink()
    started = time.monotonic()
    await sink.upsert(USER, make_records(3))
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in state.batch_requests()] == [429, 200]


async def test_dropped_connections_are_retried(state: MemoryEngineState, make_sink: Any) -> None:
    state.drop_next(2)
    sink = make_sink()
    await sink.upsert(USER, make_records(3))
    assert [r.status for r in state.batch_requests()] == [0, 0, 200]
    assert len(state.ids()) == 3


async def test_exhausted_retries_raise_a_retryable_error(
    state: MemoryEngineState, make_sink: Any
) -> None:
    state.fail_next(503, 10, retry_after=0)
    sink = make_sink(attempts=3)
    with pytest.raises(RetryableError) as caught:
        await sink.upsert(USER, make_records(3))
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.retry_after == 0
    assert "HTTP 503" in str(caught.value)
    assert len(state.batch_requests()) == 3


async def test_a_long_retry_after_defers_at_once(state: MemoryEngineState, make_sink: Any) -> None:
    state.fail_next(429, 5, retry_after=120)
    sink = make_sink()
    with pytest.raises(RateLimited) as caught:
        await sink.upsert(USER, make_records(3))
    assert caught.value.retry_after == 120
    assert len(state.batch_requests()) == 1


async def test_a_400_fails_with_the_engines_message(
    state: MemoryEngineState, make_sink: Any
) -> None:
    state.fail_next(400, 1, message="memory 'x' has an unsupported type")
    sink = make_sink()
    records = make_records(3)
    with pytest.raises(PermanentError, match="unsupported type") as caught:
        await sink.upsert(USER, records)
    assert "HTTP 400" in str(caught.value)
    assert len(state.batch_requests()) == 1
    # Nothing was remembered as sent: the next attempt sends everything.
    assert await sink.upsert(USER, records) == 3


async def test_unchanged_records_are_skipped_and_resends_are_idempotent(
    state: MemoryEngineState, make_sink: Any
) -> None:
    sink = make_sink()
    records = make_records(10)
    assert await sink.upsert(USER, records) == 10
    assert await sink.upsert(USER, records) == 0
    assert len(state.batch_requests()) == 1
    edited = make_records(1, body="edited")
    assert await sink.upsert(USER, [*records[1:], *edited]) == 1
    assert await sink.upsert(USER, records, force=True) == 10
    assert len(state.ids()) == 10
    assert state.upserts[records[0].id] == 3
    assert state.duplicates[records[5].id] == 1
    assert state.records[records[0].id]["contentHash"] == records[0].content_hash


async def test_a_half_accepted_page_resends_only_the_rest(
    state: MemoryEngineState, make_sink: Any
) -> None:
    state.fail_next(503, 10, skip=1, path="/memories/batch")
    sink = make_sink(attempts=2)
    records = make_records(150)
    with pytest.raises(RetryableError):
        await sink.upsert(USER, records)
    assert len(state.ids()) == 100
    state.clear_faults()
    assert await sink.upsert(USER, records) == 50
    assert len(state.ids()) == 150
    assert set(state.upserts.values()) == {1}


async def test_deletes_remove_records_and_forget_their_hashes(
    state: MemoryEngineState, make_sink: Any
) -> None:
    sink = make_sink()
    records = make_records(5)
    await sink.upsert(USER, records)
    await sink.delete(USER, [records[0].id, records[1].id, "github:user-1:absent#1"])
    assert state.ids() == {r.id for r in records[2:]}
    assert await sink.upsert(USER, records) == 2
    assert len(state.ids()) == 5


async def test_deletes_are_retried_like_upserts(state: MemoryEngineState, make_sink: Any) -> None:
    sink = make_sink()
    records = make_records(2)
    await sink.upsert(USER, records)
    state.fail_next(502, 1, path="/memories/delete")
    await sink.delete(USER, [records[0].id])
    assert state.ids() == {records[1].id}


async def test_the_api_key_is_sent_and_never_shown(
    state: MemoryEngineState, make_sink: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    state.api_key = "sk-engine-secret"
    await make_sink(memory_engine_api_key="sk-engine-secret").upsert(USER, make_records(2))
    assert state.batch_requests()[-1].authorization == "Bearer sk-engine-secret"
    with pytest.raises(ConfigurationError) as caught:
        await make_sink(memory_engine_api_key="sk-wrong-secret").upsert(
            USER, make_records(2, start=50)
        )
    assert "MEMORY_ENGINE_API_KEY" in str(caught.value)
    captured = capsys.readouterr()
    for text in (str(caught.value), captured.out, captured.err):
        assert "secret" not in text


async def test_the_emulator_enforces_its_contract(
    engine: tuple[MemoryEngineState, RunningServer], http: httpx.AsyncClient
) -> None:
    url = engine[1].url
    wire = [r.to_wire() for r in make_records(101)]
    too_many = await http.post(f"{url}/memories/batch", json={"memories": wire})
    assert too_many.status_code == 400
    assert "at most 100" in too_many.json()["error"]
    tampered = {**wire[0], "contentHash": "0" * 64}
    bad_hash = await http.post(f"{url}/memories/batch", json={"memories": [tampered]})
    assert bad_hash.status_code == 400
    assert "contentHash" in bad_hash.json()["error"]
    wrong_id = {**wire[0], "id": "github:someone-else:octo/repo#0"}
    bad_id = await http.post(f"{url}/memories/batch", json={"memories": [wrong_id]})
    assert bad_id.status_code == 400
    assert engine[0].ids() == set()


async def test_sent_hashes_on_postgresql(
    engine: tuple[MemoryEngineState, RunningServer], http: httpx.AsyncClient, pg_url: str
) -> None:
    state, server = engine
    settings = Settings(database_url=pg_url, memory_engine_url=server.url)
    database = await open_database(settings, migrate=True)
    try:
        sink = HttpMemorySink(settings, database, http, wait_initial=0.01, wait_jitter=0.01)
        records = make_records(120)
        assert await sink.upsert(USER, records) == 120
        assert await sink.upsert(USER, [*records[1:], *make_records(1, body="new")]) == 1
        await sink.delete(USER, [records[5].id])
        assert await sink.upsert(USER, records) == 2  # the deleted one and the edited one
        assert len(state.ids()) == 120
    finally:
        await database.dispose()
