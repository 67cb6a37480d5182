"""Forgetting: `accounts remove`, `users forget`, their HTTP routes, and product-side disconnects.

Against real PostgreSQL (and Redis for the workers' per-pair lock), SQLite, and the memory engine
emulator over HTTP:

- a removal while a job of the pair is in flight: the job ends before its next page reaches the
  engine, with and without purge; a later job and the scheduler leave the pair alone;
- a purge killed with SIGKILL mid-way is finished by the next run, every record deleted once;
- `users forget` across the four providers: exactly the user's delete calls, counts, history
  gone, idempotent (CLI and `DELETE /v1/users/{id}`);
- a product-side disconnect: noticed at the tick, visible in status, purged only after
  `FORGET_AFTER_DISCONNECT` on an injected clock (`never` keeps the records).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ingestion.api import create_app
from ingestion.clock import SystemClock
from ingestion.config import Settings
from ingestion.forget import Forgetter
from ingestion.memory.record import MemoryRecord, record_id
from ingestion.providers import registry
from ingestion.providers.base import SyncContext, SyncPage
from ingestion.queue import RedisJobQueue
from ingestion.queue.locks import RedisSyncLock
from ingestion.reconcile import DeliveredRecords, Reconciliation
from ingestion.scheduler import Scheduler
from ingestion.services import Services
from ingestion.status import gather_status
from ingestion.storage.accounts import save_account
from ingestion.storage.models import Account, DeliveredRow, SyncRun, SyncStateRow
from ingestion.storage.removals import Removals
from ingestion.storage.state import SyncStateStore
from ingestion.web import render_status_page
from tests.conftest import INGESTION, run_cli
from tests.emulators import memory_engine
from tests.emulators.memory_engine import MemoryEngineState
from tests.emulators.server import serve

PROVIDERS = {"gmail": "google", "calendar": "google", "github": "github", "twitter": "twitter"}


class ManualClock(SystemClock):
    """`now` moves only when the test says so."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


@pytest.fixture
def engine() -> Iterator[tuple[MemoryEngineState, str]]:
    state = MemoryEngineState()
    server = serve(memory_engine.create_app(state))
    yield state, server.url
    server.stop()


def settings_for(database_url: str, engine_url: str, **extra: Any) -> Settings:
    """A test's settings: its database, the memory engine emulator, nothing inherited from the
    environment, no Redis unless given."""
    values: dict[str, Any] = {"redis_url": None, **extra}
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        memory_engine_url=engine_url,
        **values,
    )


def record(provider: str, user_id: str, source_id: str) -> MemoryRecord:
    return MemoryRecord.build(
        source=provider,
        user_id=user_id,
        source_id=source_id,
        type={"gmail": "email", "calendar": "event", "github": "issue"}.get(provider, "tweet"),
        title=None if provider == "twitter" else f"item {source_id}",
        content=f"content of {source_id}",
        occurred_at=datetime(2026, 5, 1, tzinfo=UTC),
    )


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in iter(int, 1):
        if condition():
            return
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def deliver(services: Services, provider: str, user_id: str, source_ids: list[str]) -> None:
    """What an accepted sync page leaves behind: records in the sink, remembered as delivered."""
    records = [record(provider, user_id, s) for s in source_ids]
    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        await services.sink.upsert(user_id, chunk)
        await DeliveredRecords(services.db, services.sink, user_id, provider).remember(
            chunk, [], Reconciliation()
        )


async def connect(services: Services, user_id: str, account_provider: str) -> None:
    async with services.db.session() as session:
        await save_account(
            session, user_id=user_id, provider_id=account_provider, access_token="tok"
        )


async def delivered_count(services: Services, user_id: str, provider: str) -> int:
    async with services.db.session() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(DeliveredRow)
                .where(DeliveredRow.user_id == user_id, DeliveredRow.provider == provider)
            )
            or 0
        )


# --- a removal while a job is in flight (PostgreSQL + Redis) -------------------------------------


class GatedProvider:
    """Stands in for `github`: page 1 at once, page 2 only when the test opens the gate."""

    name = "github"
    account_provider = "github"
    gate: asyncio.Event
    pages_yielded = 0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        for page in range(2):
            if page == 1:
                await GatedProvider.gate.wait()
            GatedProvider.pages_yielded += 1
            yield SyncPage(
                state={"page": page + 1},
                upserts=[record("github", ctx.user_id, f"o/r#{page * 2 + i}") for i in (0, 1)],
                fetched=2,
            )


@pytest.fixture
def gated_github() -> Iterator[None]:
    GatedProvider.gate = asyncio.Event()
    GatedProvider.pages_yielded = 0
    registry.register("github", GatedProvider)
    yield
    registry._overrides.pop("github", None)


@pytest.mark.usefixtures("gated_github")
@pytest.mark.parametrize("purge", [True, False], ids=["purge", "keep"])
async def test_remove_stops_a_job_in_flight(
    purge: bool,
    pg_url: str,
    redis_url: str,
    namespace: str,
    engine: tuple[MemoryEngineState, str],
) -> None:
    state, engine_url = engine
    settings = settings_for(pg_url, engine_url, redis_url=redis_url, redis_namespace=namespace)
    queue = RedisJobQueue(settings)
    lock = RedisSyncLock(queue.redis, queue.keys, settings.job_visibility_timeout)
    services = await Services.open(settings, migrate=True, lock=lock)
    try:
        await connect(services, "u1", "github")
        job = asyncio.create_task(services.engine.run("github", "u1"))
        await until(lambda: len(state.ids("u1")) >= 2)  # page 1 accepted: the job is mid-way
        forgetter = Forgetter(settings, services.db, services.sink, lock=lock)
        removal = asyncio.create_task(forgetter.remove("github", "u1", purge=purge))
        removals = Removals(services.db)
        for _ in range(1000):
            if await removals.get("u1", "github") is not None:
                break
            await asyncio.sleep(0.01)
        assert not removal.done()  # it waits for the running job's lock
        GatedProvider.gate.set()  # the provider hands over page 2...
        summary = await job
        report = await removal

        # ...which never reaches the engine: the job ended without writing it.
        assert GatedProvider.pages_yielded == 2
        assert summary.status == "removed"
        assert summary.pages == 1
        first_page = {record_id("github", "u1", f"o/r#{i}") for i in (0, 1)}
        assert set(state.upserts) == first_page
        assert not report.pending
        assert report.state_removed
        async with services.db.session() as session:
            assert await session.get(SyncStateRow, ("u1", "github")) is None
            assert await session.scalar(select(func.count()).select_from(Account)) == 1
        if purge:
            assert report.purged == 2
            assert sorted(state.deleted) == sorted(first_page)
            assert state.ids("u1") == set()
            assert await delivered_count(services, "u1", "github") == 0
        else:
            assert report.kept == 2
            assert state.deleted == []
            assert state.ids("u1") == first_page
            assert await delivered_count(services, "u1", "github") == 2

        # A job queued before the removal ends without writing; no tick schedules the pair.
        before = len(state.requests)
        again = await services.engine.run("github", "u1")
        assert again.status == "removed"
        assert again.pages == 0
        assert len(state.requests) == before
        scheduler = Scheduler(settings, queue, services.db, providers=["github"])
        assert await scheduler.due_users("github") == []

        # `accounts add` stores tokens again and lifts the removal.
        assert await removals.lift("u1", "github")
        assert await scheduler.due_users("github") == ["u1"]
    finally:
        await services.aclose()
        await queue.aclose()


@pytest.mark.usefixtures("gated_github")
async def test_remove_finishes_in_the_background_when_the_job_keeps_the_lock(
    pg_url: str, redis_url: str, namespace: str, engine: tuple[MemoryEngineState, str]
) -> None:
    state, engine_url = engine
    settings = settings_for(pg_url, engine_url, redis_url=redis_url, redis_namespace=namespace)
    queue = RedisJobQueue(settings)
    lock = RedisSyncLock(queue.redis, queue.keys, settings.job_visibility_timeout)
    services = await Services.open(settings, migrate=True, lock=lock)
    try:
        await connect(services, "u1", "github")
        job = asyncio.create_task(services.engine.run("github", "u1"))
        await until(lambda: len(state.ids("u1")) >= 2)
        forgetter = Forgetter(settings, services.db, services.sink, lock=lock, lock_wait=0.3)
        report = await forgetter.remove("github", "u1", purge=True)
        assert report.pending
        assert report.purged == 0
        removal = await Removals(services.db).get("u1", "github")
        assert removal is not None
        assert removal.settled_at is None
        GatedProvider.gate.set()
        assert (await job).status == "removed"
        [finished] = await forgetter.finish_pending()
        assert finished.purged == 2
        assert finished.state_removed
        assert state.ids("u1") == set()
        assert await forgetter.finish_pending() == []
    finally:
        await services.aclose()
        await queue.aclose()


# --- a purge killed mid-way ----------------------------------------------------------------------


async def test_purge_killed_mid_way_is_finished_by_the_next_run(
    pg_url: str, base_env: dict[str, str], engine: tuple[MemoryEngineState, str]
) -> None:
    state, engine_url = engine
    settings = settings_for(pg_url, engine_url)
    services = await Services.open(settings, migrate=True)
    source_ids = [f"m{i:05d}" for i in range(1200)]
    try:
        await connect(services, "u1", "google")
        await deliver(services, "gmail", "u1", source_ids)
        await deliver(services, "calendar", "u1", ["primary/e1"])
    finally:
        await services.aclose()
    expected = {record_id("gmail", "u1", s) for s in source_ids}
    # The first sweep batch (500 ids, 5 delete calls) and two calls of the second go through;
    # then the engine answers 503 until the process is killed.
    state.fail_next(503, times=10_000, retry_after=1, path="/memories/delete", skip=7)
    env = {**base_env, "DATABASE_URL": pg_url, "MEMORY_ENGINE_URL": engine_url}
    process = await asyncio.create_subprocess_exec(
        *INGESTION,
        *("accounts", "remove", "gmail", "--user", "u1", "--purge"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await until(
        lambda: (
            process.returncode is None
            and sum(1 for r in state.requests if r.path == "/memories/delete") >= 8
        ),
        timeout=60,
    )
    os.kill(process.pid, signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    assert 0 < len(state.deleted) < len(expected)

    services = await Services.open(settings)
    try:
        assert await delivered_count(services, "u1", "gmail") == 1200 - 500
        removal = await Removals(services.db).get("u1", "gmail")
        assert removal is not None
        assert removal.settled_at is None
        assert removal.purged == 500
        status = await gather_status(services.db)
        row = next(r for r in status["accounts"] if r["provider"] == "gmail")
        assert row["status"] == "removed"
        assert row["removal"]["purged"] == 500
    finally:
        await services.aclose()

    state.clear_faults()
    finished = run_cli("accounts", "remove", "gmail", "--user", "u1", "--purge", "--json", env=env)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["purged"] == 700
    assert set(state.deleted) == expected  # every record deleted, calendar's untouched
    assert state.ids("u1") == {record_id("calendar", "u1", "primary/e1")}
    services = await Services.open(settings)
    try:
        assert await delivered_count(services, "u1", "gmail") == 0
        assert await delivered_count(services, "u1", "calendar") == 1
        removal = await Removals(services.db).get("u1", "gmail")
        assert removal is not None
        assert removal.settled_at is not None
        assert removal.purged == 1200
        async with services.db.session() as session:  # the shared Google account stays
            assert await session.scalar(select(func.count()).select_from(Account)) == 1
    finally:
        await services.aclose()


async def test_a_removal_the_engine_refuses_exits_1_saying_how_to_finish(
    pg_url: str, base_env: dict[str, str], engine: tuple[MemoryEngineState, str]
) -> None:
    """`accounts remove --purge` and `users forget` whose deletes the engine refuses: exit code
    1, one line naming the failure, what is already stopped and how to finish; running the
    command again once the engine accepts finishes it."""
    state, engine_url = engine
    settings = settings_for(pg_url, engine_url)
    services = await Services.open(settings, migrate=True)
    try:
        await connect(services, "u1", "google")
        await deliver(services, "gmail", "u1", ["m1", "m2"])
    finally:
        await services.aclose()
    env = {**base_env, "DATABASE_URL": pg_url, "MEMORY_ENGINE_URL": engine_url}
    state.fail_next(400, times=10, path="/memories/delete")
    removed = run_cli("accounts", "remove", "gmail", "--user", "u1", "--purge", env=env)
    assert removed.returncode == 1
    line = removed.stderr.splitlines()[-1]  # after the JSON log lines
    assert line.startswith("remove failed: memory engine /memories/delete: HTTP 400")
    assert line.endswith("(the pair is stopped; run the command again to finish)")
    forgot = run_cli("users", "forget", "u1", env=env)
    assert forgot.returncode == 1
    line = forgot.stderr.splitlines()[-1]
    assert line.startswith("forget failed: memory engine /memories/delete: HTTP 400")
    assert line.endswith("(syncing is stopped; run the command again to finish)")
    state.clear_faults()
    finished = run_cli("users", "forget", "u1", "--json", env=env)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["deleted"] == 2


# --- users forget --------------------------------------------------------------------------------


async def test_forget_user_across_four_providers(
    pg_url: str, base_env: dict[str, str], engine: tuple[MemoryEngineState, str]
) -> None:
    state, engine_url = engine
    settings = settings_for(pg_url, engine_url)
    services = await Services.open(settings, migrate=True)
    items = {
        "gmail": ["18c0a1", "18c0a2"],
        "calendar": ["primary/ev1", "work@group/ev1", "primary/ev2"],
        "github": ["octo/hello#1", "octo/hello@abc123"],
        "twitter": ["1790000000000000001"],
    }
    try:
        for user_id in ("u1", "u2"):
            for account_provider in ("google", "github", "twitter"):
                await connect(services, user_id, account_provider)
            for provider, source_ids in items.items():
                await deliver(services, provider, user_id, source_ids)
                store = SyncStateStore(services.db)
                run = await store.begin(user_id, provider, None)
                await store.finish(user_id, provider, run, "ok")
    finally:
        await services.aclose()
    state.requests.clear()
    env = {**base_env, "DATABASE_URL": pg_url, "MEMORY_ENGINE_URL": engine_url}

    result = run_cli("users", "forget", "u1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["deleted"] == 8
    assert answer["runs"] == 4
    assert {p: r["purged"] for p, r in answer["providers"].items()} == {
        p: len(s) for p, s in items.items()
    }
    expected = {record_id(p, "u1", s) for p, sids in items.items() for s in sids}
    deletes = [r for r in state.requests if r.path == "/memories/delete"]
    assert len(deletes) == 4  # one call per provider, each of exactly its ids
    assert sorted(state.deleted) == sorted(expected)
    assert state.ids("u1") == set()
    assert len(state.ids("u2")) == 8

    synced = run_cli("sync", "github", "--user", "u1", env=env)
    assert synced.returncode == 1
    assert "was removed" in synced.stderr

    again = run_cli("users", "forget", "u1", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["deleted"] == 0
    assert len([r for r in state.requests if r.path == "/memories/delete"]) == 4

    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            runs = await session.scalar(
                select(func.count()).select_from(SyncRun).where(SyncRun.user_id == "u1")
            )
            assert runs == 0
            assert await session.scalar(select(func.count()).select_from(Account)) == 6
        for provider in items:
            assert await delivered_count(services, "u1", provider) == 0
            assert await delivered_count(services, "u2", provider) == len(items[provider])
        scheduler = Scheduler(settings, _NoQueue(), services.db)
        for provider in items:
            assert await scheduler.due_users(provider) == ["u2"]
        # The HTTP route does the same for u2.
        app = create_app(services, None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            refused = await client.post("/v1/sync", json={"provider": "gmail", "userId": "u1"})
            assert refused.status_code == 409
            assert "removed" in refused.json()["error"]
            answer = (await client.delete("/v1/users/u2")).json()
            assert answer["deleted"] == 8
            removed = await client.delete("/v1/accounts/u2/github?purge=true")
            assert removed.status_code == 200
            assert removed.json()["purged"] == 0
            assert (await client.delete("/v1/accounts/u2/myspace")).status_code == 422
            assert (await client.delete(f"/v1/users/{'x' * 300}")).status_code == 422
        assert state.ids() == set()
    finally:
        await services.aclose()


class _NoQueue:
    async def enqueue_tick(self, *_args: Any) -> str:
        raise AssertionError("not used")


# --- product-side disconnect ---------------------------------------------------------------------


@pytest.mark.parametrize("grace", ["7d", "never"])
async def test_disconnect_in_the_product_purges_after_the_grace_period(
    grace: str, tmp_path: Path, engine: tuple[MemoryEngineState, str]
) -> None:
    state, engine_url = engine
    settings = settings_for(
        f"sqlite:///{tmp_path / 'forget.db'}",
        engine_url,
        forget_after_disconnect=grace,
    )
    clock = ManualClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    services = await Services.open(settings, migrate=True, clock=clock)
    try:
        for user_id in ("u1", "u2"):
            await connect(services, user_id, "twitter")
            await deliver(services, "twitter", user_id, ["1", "2", "3"])
            store = SyncStateStore(services.db)
            run = await store.begin(user_id, "twitter", None)
            await store.finish(user_id, "twitter", run, "ok")
        scheduler = Scheduler(settings, _NoQueue(), services.db, clock=clock)
        forgetter = Forgetter(settings, services.db, services.sink, clock=clock)
        assert await scheduler.due_users("twitter") == ["u1", "u2"]

        async with services.db.session() as session:  # the product deletes u1's account
            account = (
                await session.execute(select(Account).where(Account.user_id == "u1"))
            ).scalar_one()
            await session.delete(account)
        if grace == "7d":  # a job queued before the tick ends quietly and records it too
            skipped = await services.engine.run("twitter", "u1")
            assert skipped.status == "removed"
        assert await scheduler.due_users("twitter") == ["u2"]
        status = await gather_status(services.db)
        row = next(r for r in status["accounts"] if r["userId"] == "u1")
        assert row["status"] == "disconnected"
        transport = httpx.ASGITransport(app=create_app(services, None))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            [one] = (await client.get("/v1/accounts/u1")).json()["providers"]
            assert one["status"] == "disconnected"
            assert one["removal"]["purgeAfter"] == row["removal"]["purgeAfter"]
        assert row["itemsUpserted"] == 0 or row["removal"]["purged"] == 0
        expected_purge = "2026-06-08T12:00:00Z" if grace == "7d" else None
        assert row["removal"]["purgeAfter"] == expected_purge
        page = render_status_page(
            status, key_required=False, queue_available=False, now=clock.now()
        )
        assert ("records purged 2026-06-08" in page) == (grace == "7d")
        assert "disconnected" in page

        clock.current += timedelta(days=7) - timedelta(seconds=1)
        assert [r.purged for r in await forgetter.finish_pending()] == []
        assert state.deleted == []
        clock.current += timedelta(seconds=2)
        reports = await forgetter.finish_pending()
        u1_ids = {record_id("twitter", "u1", s) for s in ("1", "2", "3")}
        if grace == "never":
            assert reports == []
            assert state.ids("u1") == u1_ids
            return
        assert [(r.user_id, r.purged) for r in reports] == [("u1", 3)]
        assert set(state.deleted) == u1_ids
        assert len(state.ids("u2")) == 3
        assert await forgetter.finish_pending() == []
        status = await gather_status(services.db)
        assert [r["userId"] for r in status["accounts"]] == ["u2"]
    finally:
        await services.aclose()


async def test_reconnect_inside_the_grace_period_keeps_the_records(
    tmp_path: Path, engine: tuple[MemoryEngineState, str]
) -> None:
    state, engine_url = engine
    settings = settings_for(f"sqlite:///{tmp_path / 'forget.db'}", engine_url)
    clock = ManualClock(datetime(2026, 6, 1, tzinfo=UTC))
    services = await Services.open(settings, migrate=True, clock=clock)
    try:
        await connect(services, "u1", "github")
        await deliver(services, "github", "u1", ["o/r#1"])
        store = SyncStateStore(services.db)
        await store.finish("u1", "github", await store.begin("u1", "github", None), "ok")
        scheduler = Scheduler(settings, _NoQueue(), services.db, clock=clock)
        async with services.db.session() as session:
            await session.execute(Account.__table__.delete())
        assert await scheduler.due_users("github") == []
        clock.current += timedelta(days=3)
        await connect(services, "u1", "github")  # linked again in the product
        assert await scheduler.due_users("github") == ["u1"]
        clock.current += timedelta(days=30)
        assert (
            await Forgetter(settings, services.db, services.sink, clock=clock).finish_pending()
            == []
        )
        assert state.deleted == []
    finally:
        await services.aclose()


# --- the embedded store, --delete-account, metrics ----------------------------------------------


async def test_embedded_store_forgets_and_the_account_row_goes_only_on_request(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    from ingestion import metrics
    from ingestion.storage.models import MemoryRow

    database_url = f"sqlite:///{tmp_path / 'embedded.db'}"
    settings = Settings(_env_file=None, database_url=database_url)  # type: ignore[call-arg]
    services = await Services.open(settings, migrate=True)
    try:
        await connect(services, "u1", "google")
        await deliver(services, "gmail", "u1", ["a", "b", "c"])
        await deliver(services, "calendar", "u1", ["primary/x"])
        deleted = metrics.ITEMS.labels(provider="gmail", action="deleted")
        before = deleted._value.get()
        forgetter = Forgetter(settings, services.db, services.sink)

        from ingestion.errors import PermanentError

        with pytest.raises(PermanentError, match="also serves calendar"):
            await forgetter.remove("gmail", "u1", purge=True, delete_account=True)
        report = await forgetter.remove("gmail", "u1", purge=True)
        assert report.purged == 3
        assert not report.account_deleted
        assert deleted._value.get() - before == 3
        async with services.db.session() as session:
            left = (await session.execute(select(MemoryRow.source_id))).scalars().all()
            assert left == ["primary/x"]
            assert await session.scalar(select(func.count()).select_from(Account)) == 1
    finally:
        await services.aclose()

    env = {**base_env, "DATABASE_URL": database_url}
    removed = run_cli(
        "accounts", "remove", "calendar", "--user", "u1", "--purge", "--delete-account", env=env
    )
    assert removed.returncode == 0, removed.stderr
    assert "1 record(s) deleted" in removed.stdout
    assert "account row deleted" in removed.stdout
    searched = run_cli("search", "content", "--user", "u1", env=env)
    assert "no memories match" in searched.stdout, searched.stdout
    helped = run_cli("accounts", "remove", "--help", env=env)
    assert "DELETE the product's Better Auth account row" in " ".join(helped.stdout.split())
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:  # --delete-account: the row is gone
            assert await session.scalar(select(func.count()).select_from(Account)) == 0
    finally:
        await services.aclose()


def test_forget_after_disconnect_setting(base_env: dict[str, str]) -> None:
    def parsed(value: str) -> float | None:
        settings = Settings(_env_file=None, forget_after_disconnect=value)  # type: ignore[call-arg]
        return settings.forget_after_disconnect

    assert parsed("7d") == 7 * 86400
    assert parsed("12h") == 12 * 3600
    assert parsed("90") == 90
    assert parsed("never") is None
    assert Settings(_env_file=None).forget_after_disconnect == 7 * 86400  # type: ignore[call-arg]
    bad = run_cli("status", env={**base_env, "FORGET_AFTER_DISCONNECT": "soon"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: configuration error: FORGET_AFTER_DISCONNECT: expected `never`, seconds, or a "
        "duration such as 7d or 12h"
    ]
