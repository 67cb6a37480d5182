"""Run history stays bounded per (user, provider): the newest SYNC_RUNS_KEEP runs, none older than
SYNC_RUNS_MAX_AGE_DAYS; the hot query of `begin` is served by an index (migration 0005)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, func, insert, inspect, select, text

from ingestion.config import Settings
from ingestion.providers import registry
from ingestion.services import Services
from ingestion.storage.db import _alembic_config, sync_url, upgrade
from ingestion.storage.models import SyncRun
from tests.queue_helpers import add_accounts
from tests.queue_scripted_provider import PROVIDER, ScriptedProvider

_BEGIN_QUERY = (
    "UPDATE ingestion_sync_runs SET status = 'abandoned' "
    "WHERE user_id = 'ok-a' AND provider = 'github' AND status = 'running'"
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_history_is_pruned_per_pair_by_count_and_age(
    backend: str, sqlite_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry._overrides, PROVIDER, ScriptedProvider)
    url = sqlite_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        sync_runs_keep=5,
        sync_runs_max_age_days=30,
    )
    services = await Services.open(settings, migrate=True)
    try:
        await add_accounts(services, ["ok-a", "ok-b"])
        old = datetime.now(UTC) - timedelta(days=40)
        async with services.db.session() as session:
            await session.execute(
                insert(SyncRun),
                [
                    {"user_id": "ok-b", "provider": PROVIDER, "status": "ok", "started_at": old}
                    for _ in range(3)
                ],
            )
        for _ in range(8):
            await services.engine.run(PROVIDER, "ok-a")
        await services.engine.run(PROVIDER, "ok-b")

        async def runs(user: str) -> list[int]:
            async with services.db.session() as session:
                rows = await session.execute(
                    select(SyncRun.id).where(SyncRun.user_id == user).order_by(SyncRun.id)
                )
                return list(rows.scalars())

        kept = await runs("ok-a")
        assert len(kept) == 5
        async with services.db.session() as session:
            newest = await session.scalar(
                select(func.max(SyncRun.id)).where(SyncRun.user_id == "ok-a")
            )
        assert kept[-1] == newest  # the newest are the ones kept
        assert len(await runs("ok-b")) == 1  # its 40-day-old runs are gone, its new one stays

        async with services.db.engine.connect() as connection:
            if backend == "sqlite":
                plan = await connection.execute(text(f"EXPLAIN QUERY PLAN {_BEGIN_QUERY}"))
            else:
                await connection.execute(text("SET enable_seqscan = off"))
                plan = await connection.execute(text(f"EXPLAIN {_BEGIN_QUERY}"))
            lines = " ".join(str(row[-1]) for row in plan)
        assert "ix_ingestion_sync_runs_running" in lines, lines
    finally:
        await services.aclose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0005_goes_down_and_up_again(
    backend: str, sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    url = sqlite_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    upgrade(settings, "0005")
    config = _alembic_config(settings)

    def indexes() -> set[str]:
        engine = create_engine(sync_url(settings))
        try:
            return {i["name"] for i in inspect(engine).get_indexes("ingestion_sync_runs")}
        finally:
            engine.dispose()

    assert {"ix_ingestion_sync_runs_pair_id", "ix_ingestion_sync_runs_running"} <= indexes()
    command.downgrade(config, "0003")
    assert "ix_ingestion_sync_runs_user_provider" in indexes()
    assert "ix_ingestion_sync_runs_running" not in indexes()
    upgrade(settings, "0005")
    assert "ix_ingestion_sync_runs_user_provider" not in indexes()
