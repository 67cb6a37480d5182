"""The sync state row: created once even when several processes create it at the same moment."""

from __future__ import annotations

import asyncio

import pytest

from ingestion.config import Settings
from ingestion.storage.db import open_database
from ingestion.storage.state import SyncStateStore


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_concurrent_first_runs_create_one_state_row(
    backend: str, sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    url = sqlite_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    databases = [await open_database(settings, migrate=True) for _ in range(4)]
    try:
        stores = [SyncStateStore(db) for db in databases]
        run_ids = await asyncio.gather(
            *(s.begin("u1", "github", f"job-{i}") for i, s in enumerate(stores))
        )
        assert len(set(run_ids)) == 4
        states = await stores[0].all()
        assert [(s.user_id, s.provider, s.status) for s in states] == [("u1", "github", "running")]
        await stores[1].checkpoint(
            "u1", "github", run_ids[1], {"cursor": 7}, fetched=3, upserted=2, deleted=1
        )
        await stores[1].finish("u1", "github", run_ids[1], "ok")
        state = await stores[2].load("u1", "github")
        assert state.cursor == {"cursor": 7}
        assert (state.items_fetched, state.items_upserted, state.items_deleted) == (3, 2, 1)
        assert state.status == "ok"
        assert state.last_sync_time is not None
    finally:
        for db in databases:
            await db.dispose()


async def test_a_run_left_running_by_a_dead_process_is_closed_by_the_next(
    sqlite_url: str,
) -> None:
    settings = Settings(_env_file=None, database_url=sqlite_url)  # type: ignore[call-arg]
    db = await open_database(settings, migrate=True)
    try:
        store = SyncStateStore(db)
        await store.begin("u1", "gmail", "killed-job")  # its process dies: never finished
        second = await store.begin("u1", "gmail", "next-job")
        await store.finish("u1", "gmail", second, "ok")
        runs = {r.job_id: r for r in await store.recent_runs()}
        assert runs["killed-job"].status == "abandoned"
        assert runs["killed-job"].finished_at is not None
        assert runs["next-job"].status == "ok"
    finally:
        await db.dispose()
