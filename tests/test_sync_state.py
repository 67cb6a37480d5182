"""The sync state row: created once even when several processes create it at the same moment."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_checkpoints_add_their_counts_and_recreate_a_missing_row(
    backend: str, sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    """A checkpoint adds to the counts in the database (two pages, two additions) and stores
    the cursor and reconciliation state; a row gone meanwhile is created again, not lost."""
    url = sqlite_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    db = await open_database(settings, migrate=True)
    try:
        store = SyncStateStore(db)
        run = await store.begin("u1", "gmail", "job")
        await store.checkpoint("u1", "gmail", run, {"page": 1}, fetched=3, upserted=2, deleted=1)
        await store.checkpoint(
            "u1",
            "gmail",
            run,
            {"page": 2},
            fetched=4,
            upserted=4,
            deleted=0,
            last_item_id="m9",
            reconcile={"scopes": {}},
        )
        state = await store.load("u1", "gmail")
        assert state.cursor == {"page": 2}
        assert (state.items_fetched, state.items_upserted, state.items_deleted) == (7, 6, 1)
        assert state.reconcile == {"scopes": {}}
        [history] = await store.recent_runs()
        assert (history.fetched, history.upserted, history.deleted) == (7, 6, 1)

        other = await store.begin("u2", "gmail", "job-2")
        async with db.session() as session:  # the row goes (a removal) while the run goes on
            await session.execute(text("DELETE FROM ingestion_sync_state WHERE user_id = 'u2'"))
        await store.checkpoint("u2", "gmail", other, {"page": 1}, fetched=5, upserted=5, deleted=0)
        again = await store.load("u2", "gmail")
        assert again.cursor == {"page": 1}
        assert (again.items_fetched, again.items_upserted) == (5, 5)
    finally:
        await db.dispose()
