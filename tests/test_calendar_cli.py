"""`ingestion sync calendar` as a real process: a missing scope fails it, visibly."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestion.config import Settings
from ingestion.status import gather_status
from ingestion.storage.accounts import save_account
from ingestion.storage.db import open_database
from tests.conftest import run_cli
from tests.emulators import RunningServer, serve
from tests.emulators.calendar import CalendarState, create_app
from tests.test_calendar_sync import migrated_db

__all__ = ["migrated_db"]

USER = "u1"
TOKEN = "ya29.cli-calendar-token"


@pytest.fixture
def emulator() -> Iterator[tuple[CalendarState, RunningServer]]:
    state = CalendarState(tokens={TOKEN: USER})
    server = serve(create_app(state))
    yield state, server
    server.stop()


async def _add_account(database: Path) -> None:
    db = await open_database(Settings(database_url=f"sqlite:///{database}"), migrate=False)
    try:
        async with db.session() as session:
            await save_account(session, user_id=USER, provider_id="google", access_token=TOKEN)
    finally:
        await db.dispose()


def test_missing_scope_is_an_error_the_user_sees(
    base_env: dict[str, str],
    tmp_path: Path,
    migrated_db: Path,
    emulator: tuple[CalendarState, RunningServer],
) -> None:
    state, server = emulator
    database = tmp_path / "ingestion.db"
    shutil.copyfile(migrated_db, database)
    asyncio.run(_add_account(database))
    env = {**base_env, "DATABASE_URL": f"sqlite:///{database}", "CALENDAR_API_URL": server.url}
    state.add_calendar(USER, "u1@example.com", "Me", primary=True)
    state.scopes[TOKEN] = "openid email https://www.googleapis.com/auth/gmail.readonly"

    result = run_cli("sync", "calendar", "--user", USER, "--json", env=env)
    assert result.returncode == 1, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "error"
    assert "insufficient authentication scopes" in body["error"]

    # `ingestion status --json` prints this same document (see ingestion.status).
    document = asyncio.run(_status(database))
    row = next(r for r in document["accounts"] if r["provider"] == "calendar")
    assert row["status"] == "error"
    assert "insufficient authentication scopes" in row["lastError"]
    assert TOKEN not in json.dumps(document, default=str)
    assert TOKEN not in result.stdout + result.stderr


async def _status(database: Path) -> dict[str, Any]:
    db = await open_database(Settings(database_url=f"sqlite:///{database}"), migrate=False)
    try:
        return await gather_status(db)
    finally:
        await db.dispose()
