"""The provider/sink contract end to end: a memory engine outage in the middle of a sync loses
nothing, duplicates nothing, and the cursor never runs ahead of what the engine accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest
import stamina

from ingestion.config import Settings
from ingestion.errors import RetryableError
from ingestion.memory.record import MemoryRecord
from ingestion.providers import registry
from ingestion.providers.base import FetchOptions, SyncContext, SyncPage
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from tests.emulators.memory_engine import MemoryEngineState, create_app
from tests.emulators.server import RunningServer, serve

USER = "outage-user"
#: (first item, item count, source ids deleted) of each page the scripted provider yields.
PAGES = [(0, 40, ()), (40, 40, ()), (80, 150, ("octo/repo#5",)), (230, 30, ()), (260, 10, ())]


class ScriptedProvider:
    """Yields PAGES from the page after `ctx.state["page"]`, recording what it was asked."""

    name: ClassVar[str] = "github"
    account_provider: ClassVar[str] = "github"
    resumed_from: ClassVar[list[int]] = []

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        done = int(ctx.state.get("page", 0))
        self.resumed_from.append(done)
        for number, (first, count, deletes) in enumerate(PAGES[done:], start=done + 1):
            records = [
                MemoryRecord.build(
                    source="github",
                    user_id=ctx.user_id,
                    source_id=f"octo/repo#{i}",
                    type="issue",
                    title=f"Issue {i}",
                    content=f"Body {i}",
                    occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                    metadata={"repo": "octo/repo", "number": i},
                )
                for i in range(first, first + count)
            ]
            yield SyncPage(state={"page": number}, upserts=records, deletes=deletes, fetched=count)


@pytest.fixture
def engine() -> Iterator[tuple[MemoryEngineState, RunningServer]]:
    state = MemoryEngineState()
    server = serve(create_app(state))
    yield state, server
    server.stop()


@pytest.fixture
def scripted_provider() -> Iterator[None]:
    registry.register("github", ScriptedProvider)
    ScriptedProvider.resumed_from.clear()
    yield
    registry._overrides.pop("github", None)


@pytest.fixture
def no_waits() -> Iterator[None]:
    """stamina's testing mode: no backoff sleeps, three attempts per request."""
    with stamina.set_testing(True, attempts=3):
        yield


@pytest.mark.usefixtures("scripted_provider", "no_waits")
async def test_an_outage_mid_sync_loses_and_duplicates_nothing(
    engine: tuple[MemoryEngineState, RunningServer], tmp_path: Path
) -> None:
    state, server = engine
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'outage.db'}", memory_engine_url=server.url
    )
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            await save_account(session, user_id=USER, provider_id="github", access_token="t")
        # Batches 1-3 (pages 1, 2 and the first 100 records of page 3) get through, then the
        # engine answers 503 to more requests than one sync attempt makes.
        state.fail_next(503, 5, path="/memories/batch", skip=3)
        with pytest.raises(RetryableError, match="HTTP 503"):
            await services.engine.run("github", USER)
        stored = await services.engine.state.load(USER, "github")
        assert stored.cursor == {"page": 2}
        assert stored.status == "error"
        # Pages 1-2, page 3's delete (sent before its upserts) and its first batch of 100.
        assert len(state.ids(USER)) == 80 - 1 + 100

        # The engine comes back during the next attempt (two more 503s, then 2xx).
        summary = await services.engine.run("github", USER)
        assert summary.status == "ok"
        assert ScriptedProvider.resumed_from == [0, 2]
        assert (await services.engine.state.load(USER, "github")).cursor == {"page": 5}

        expected = {f"github:{USER}:octo/repo#{i}" for i in range(270)} - {
            f"github:{USER}:octo/repo#5"
        }
        assert state.ids(USER) == expected
        assert set(state.upserts.values()) == {1}  # nothing was sent twice
        assert sum(state.duplicates.values()) == 0
        assert state.deleted == [f"github:{USER}:octo/repo#5"]

        # A third run with nothing new: the provider re-yields its last page, nothing is sent.
        before = len(state.batch_requests())
        await services.engine.run("github", USER)
        assert len(state.batch_requests()) == before
        # A forced full sync resends everything: idempotent, still one record per id.
        summary = await services.engine.run("github", USER, FetchOptions(force_full_sync=True))
        assert summary.status == "ok"
        assert state.ids(USER) == expected
        assert set(state.duplicates.values()) == {1}
    finally:
        await services.aclose()
