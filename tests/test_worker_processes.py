"""Real `ingestion worker` processes: killed mid-job, stopped with SIGTERM, and left running
while their Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis import RedisError as SyncRedisError
from redis.asyncio import Redis

from ingestion.config import Settings
from ingestion.queue import Keys, RedisJobQueue
from ingestion.queue.jobs import Job
from ingestion.services import Services
from ingestion.storage.db import upgrade
from ingestion.storage.state import SyncStateStore
from tests.emulators import memory_engine
from tests.emulators.server import free_port, serve
from tests.queue_helpers import (
    add_accounts,
    log_lines,
    queue_env,
    spawn,
    stop_process,
    wait_for,
)
from tests.queue_scripted_provider import PROVIDER

#: Process start-up dominates these tests; a busy machine needs the long timeouts.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


async def _open(settings: Settings, users: list[str]) -> Services:
    await asyncio.to_thread(upgrade, settings)
    services = await Services.open(settings, migrate=False)
    await add_accounts(services, users)
    return services


async def _pending(redis: Redis, keys: Keys) -> int:
    summary: Any = await redis.xpending(keys.stream, keys.group)
    return int(summary["pending"])


async def _runs(services: Services, status: str) -> list[Any]:
    return [r for r in await SyncStateStore(services.db).recent_runs(100) if r.status == status]


async def test_worker_killed_mid_job_is_reclaimed_and_completed_once(
    namespace: str, redis_url: str, pg_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    engine_state = memory_engine.MemoryEngineState()
    engine = serve(memory_engine.create_app(engine_state))
    markers = tmp_path / "markers"
    markers.mkdir()
    env = queue_env(
        base_env,
        REDIS_URL=redis_url,
        REDIS_NAMESPACE=namespace,
        DATABASE_URL=pg_url,
        MEMORY_ENGINE_URL=engine.url,
        JOB_VISIBILITY_TIMEOUT="2",
        QUEUE_TEST_PAGES="3",
        # The kill lands in the pause after page 1 was committed (1.5 s is ample time to
        # react): a kill between a page's acceptance and its cursor commit would legitimately
        # send that page twice (at-least-once), which this test is not about.
        QUEUE_TEST_PAGE_SECONDS="1.5",
        QUEUE_TEST_MARKERS=str(markers),
    )
    settings = Settings(database_url=pg_url, redis_url=redis_url, redis_namespace=namespace)
    services = await _open(settings, ["slow-1"])
    keys = Keys(namespace)
    redis = Redis.from_url(redis_url, decode_responses=True)
    queue = RedisJobQueue(settings)
    workers = {
        name: spawn(["worker", "--concurrency", "1"], env, tmp_path / f"{name}.log")
        for name in ("a", "b")
    }
    try:
        job = await queue.enqueue(Job(PROVIDER, "slow-1"))
        await wait_for(lambda: asyncio.to_thread((markers / "slow-1.page1").exists), timeout=150)
        # Kill whichever worker holds the job (its pid is part of its consumer name).
        [entry] = await redis.xpending_range(keys.stream, keys.group, "-", "+", 1)
        holder_pid = int(entry["consumer"].split("-")[-2])
        victim = next(n for n, p in workers.items() if p.pid == holder_pid)
        workers[victim].send_signal(signal.SIGKILL)
        assert workers[victim].wait(timeout=10) == -signal.SIGKILL
        # A page's marker is touched after its cursor was committed: these pages were done.
        committed = max(int(m.name.rsplit("page", 1)[1]) for m in markers.glob("slow-1.page*"))

        await wait_for(lambda: _runs(services, "ok"), timeout=45)

        async def nothing_pending() -> bool:
            return await _pending(redis, keys) == 0

        await wait_for(nothing_pending, timeout=10)
        ok_run = (await _runs(services, "ok"))[0]
        assert ok_run.job_id == job.job_id
        # Nothing lost, ids stable: exactly the six records, under their deterministic ids.
        pages = [[f"github:slow-1:o/r#{2 * p + i}" for i in range(2)] for p in range(3)]
        assert engine_state.ids("slow-1") == {i for page in pages for i in page}
        # The second worker resumed after the pages the killed one had committed. A kill
        # between the engine's 2xx and the cursor commit resends that one page (at-least-once,
        # harmless to an upsert by id): at most the page in flight is sent twice, never more.
        assert_at_most_one_page_resent(engine_state.upserts, pages, committed)
        runs = await SyncStateStore(services.db).recent_runs(10)
        assert 6 <= sum(r.upserted for r in runs) <= 6 + 2
        survivor = next(n for n in workers if n != victim)
        reclaimed = [
            line
            for line in log_lines(tmp_path / f"{survivor}.log")
            if line.get("event") == "reclaimed stalled jobs"
        ]
        assert reclaimed
        assert await redis.xlen(keys.dead) == 0
    finally:
        for proc in workers.values():
            stop_process(proc)
        engine.stop()
        await queue.aclose()
        await redis.aclose()
        await services.aclose()


async def test_sigterm_during_a_job_lets_it_finish_and_exits_0(
    namespace: str, redis_url: str, sqlite_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    env = queue_env(
        base_env,
        REDIS_URL=redis_url,
        REDIS_NAMESPACE=namespace,
        DATABASE_URL=sqlite_url,
        QUEUE_TEST_PAGES="3",
        QUEUE_TEST_PAGE_SECONDS="0.5",
        QUEUE_TEST_MARKERS=str(markers),
        SHUTDOWN_GRACE_PERIOD="20",
    )
    settings = Settings(database_url=sqlite_url, redis_url=redis_url, redis_namespace=namespace)
    services = await _open(settings, ["slow-1", "ok-later"])
    keys = Keys(namespace)
    redis = Redis.from_url(redis_url, decode_responses=True)
    queue = RedisJobQueue(settings)
    log = tmp_path / "worker.log"
    proc = spawn(["worker"], env, log)
    try:
        await queue.enqueue(Job(PROVIDER, "slow-1"))
        await wait_for(lambda: asyncio.to_thread((markers / "slow-1.page1").exists), timeout=150)
        proc.send_signal(signal.SIGTERM)

        def stopping() -> bool:
            return any(e.get("event") == "waiting for running jobs" for e in log_lines(log))

        await wait_for(lambda: asyncio.to_thread(stopping), timeout=30)
        # Enqueued once the worker is stopping: it must not take it.
        await queue.enqueue(Job(PROVIDER, "ok-later"))
        assert await asyncio.to_thread(proc.wait, 30) == 0
        [run] = await _runs(services, "ok")
        assert run.user_id == "slow-1"
        assert run.upserted == 6  # all three pages, in this one run
        assert await _pending(redis, keys) == 0
        # The later job is still there for another worker (never delivered, or handed back).
        entries = await redis.xrange(keys.stream)
        assert any('"ok-later"' in fields["payload"] for _, fields in entries)
        assert "worker stopped" in [line.get("event") for line in log_lines(log)]
    finally:
        stop_process(proc, signal.SIGKILL)
        await queue.aclose()
        await redis.aclose()
        await services.aclose()


def assert_at_most_one_page_resent(
    upserts: dict[str, int], pages: list[list[str]], committed: int
) -> None:
    """Ids sent more than once (at most twice) lie in the page that was in flight at the kill,
    the one after the `committed` pages; a committed page is never sent again."""
    again = {i for i, n in upserts.items() if n > 1}
    assert all(n <= 2 for n in upserts.values()), upserts
    in_flight = set(pages[committed]) if committed < len(pages) else set()
    assert again <= in_flight, f"resent {sorted(again)}; only {sorted(in_flight)} may be"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A redis-server of this test's own: (url, (start, stop)). redis-server cannot report a
    port it picked, so a port that was free is tried and, when another process took it first,
    the next one: the first start never races. A restart reuses the port (the test's point)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    state: dict[str, Any] = {}

    def launch(port: int) -> subprocess.Popen[bytes]:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(tmp_path)]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers(port: int, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(SyncRedisError):
                client = SyncRedis(port=port, socket_connect_timeout=0.5)
                try:  # our server, not another process that holds the port
                    if client.info("server")["process_id"] == proc.pid:
                        return True
                finally:
                    client.close()
            time.sleep(0.05)
        return False

    def start() -> None:
        proc = launch(state["port"])
        if not answers(state["port"], proc):
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError(f"redis-server did not come back on port {state['port']}")
        state["proc"] = proc

    def stop() -> None:
        proc = state.pop("proc", None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)

    for _ in range(5):
        port = free_port()
        proc = launch(port)
        if answers(port, proc):
            state.update(port=port, proc=proc)
            break
        proc.kill()
        proc.wait(timeout=10)
    else:
        raise AssertionError("redis-server would not start on any of five free ports")
    try:
        yield f"redis://127.0.0.1:{state['port']}/0", (start, stop)
    finally:
        stop()


async def _wait_ping(url: str) -> None:
    async def ping() -> bool:
        client = Redis.from_url(url)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    await wait_for(ping, timeout=10)


@pytest.fixture
async def sqlite_services(sqlite_url: str) -> AsyncIterator[Services]:
    settings = Settings(database_url=sqlite_url)
    services = await _open(settings, ["ok-1", "ok-2"])
    yield services
    await services.aclose()


async def test_worker_survives_redis_restart_and_processes_new_jobs(
    private_redis: tuple[str, Any],
    sqlite_url: str,
    sqlite_services: Services,
    base_env: dict[str, str],
    tmp_path: Path,
) -> None:
    url, (start, stop) = private_redis
    await _wait_ping(url)
    settings = Settings(database_url=sqlite_url, redis_url=url, redis_namespace="ingestion")
    env = queue_env(base_env, REDIS_URL=url, DATABASE_URL=sqlite_url)
    log = tmp_path / "worker.log"
    proc = spawn(["worker"], env, log)
    try:
        queue = RedisJobQueue(settings)
        await queue.enqueue(Job(PROVIDER, "ok-1"))
        await wait_for(lambda: _runs(sqlite_services, "ok"), timeout=150)
        await queue.aclose()

        stop()

        def outage_logged() -> int:
            return sum(e.get("event") == "queue unreachable; retrying" for e in log_lines(log))

        await wait_for(lambda: asyncio.to_thread(outage_logged), timeout=15)
        await asyncio.sleep(2)  # an outage of a couple of seconds: no busy loop during it
        assert outage_logged() < 25
        start()
        await _wait_ping(url)
        assert proc.poll() is None

        # The restarted server is empty (no persistence): the worker re-creates its group.
        queue = RedisJobQueue(settings)
        await queue.enqueue(Job(PROVIDER, "ok-2"))
        await wait_for(lambda: _count(_runs(sqlite_services, "ok"), 2), timeout=30)
        await queue.aclose()
        assert stop_process(proc) == 0
        assert "queue reachable again" in [e.get("event") for e in log_lines(log)]
    finally:
        stop_process(proc, signal.SIGKILL)


async def _count(runs: Any, n: int) -> bool:
    return len(await runs) >= n
