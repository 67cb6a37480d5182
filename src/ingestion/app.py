"""Composition: builds the service's parts from the settings, and `ingestion run`.

`Services` holds one process's database, HTTP client, memory sink, token service and sync
engine; every command opens it once and closes it on the way out.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

import httpx
import structlog

from ingestion.clock import Clock, SystemClock
from ingestion.config import PROVIDER_NAMES, Settings
from ingestion.memory.base import MemorySink
from ingestion.memory.local_store import LocalMemoryStore
from ingestion.storage.db import Database, open_database
from ingestion.sync import SyncEngine, SyncLockFactory
from ingestion.tokens import TokenService

__all__ = ["Services", "build_sink", "install_stop_signals", "run_service"]


def build_sink(settings: Settings, db: Database, http: httpx.AsyncClient) -> MemorySink:
    if settings.memory_engine_url:
        from ingestion.memory.http_sink import HttpMemorySink

        return HttpMemorySink(settings, db, http)
    return LocalMemoryStore(db)


@dataclass
class Services:
    settings: Settings
    db: Database
    http: httpx.AsyncClient
    sink: MemorySink
    tokens: TokenService
    engine: SyncEngine
    clock: Clock

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        migrate: bool | None = None,
        clock: Clock | None = None,
        lock: SyncLockFactory | None = None,
    ) -> Services:
        clock = clock or SystemClock()
        db = await open_database(settings, migrate=migrate)
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.http_timeout, connect=10.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
        )
        sink = build_sink(settings, db, http)
        tokens = TokenService(settings, db, http, clock)
        engine = SyncEngine(
            settings=settings, db=db, sink=sink, tokens=tokens, http=http, clock=clock, lock=lock
        )
        return cls(settings, db, http, sink, tokens, engine, clock)

    async def aclose(self) -> None:
        await self.sink.aclose()
        await self.http.aclose()
        await self.db.dispose()


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop` (the first one; a second SIGINT aborts)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def load_plugins(settings: Settings) -> None:
    """Import the modules named in INGESTION_PLUGINS (comma-separated).

    A plugin module registers extra or replacement providers at import time with
    `ingestion.providers.registry.register(name, factory)`. A module that cannot be imported
    stops the process with a `ConfigurationError` naming it.
    """
    import importlib

    from ingestion.errors import ConfigurationError

    for name in (n.strip() for n in settings.plugins.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"INGESTION_PLUGINS: cannot import {name!r}: {exc}") from None


async def run_service(settings: Settings) -> None:
    """`ingestion run`: scheduler + worker + HTTP API in one process, until SIGINT/SIGTERM.

    With REDIS_URL set the worker and scheduler use the Redis queue (other processes may share
    it); without it, the in-process queue. SIGINT/SIGTERM stop all three: the worker lets
    running jobs finish within SHUTDOWN_GRACE_PERIOD. If one part fails, the others stop too
    and the failure is raised.
    """
    from ingestion import metrics
    from ingestion.api import create_app, serve
    from ingestion.queue import LocalJobQueue, RedisJobQueue
    from ingestion.queue.base import Consumer
    from ingestion.scheduler import Scheduler
    from ingestion.worker import Worker, engine_runner

    log = structlog.get_logger("ingestion.run")
    metrics.check_multiprocess(settings)
    load_plugins(settings)
    stop = asyncio.Event()
    install_stop_signals(stop)
    queue: RedisJobQueue | LocalJobQueue
    consumer: Consumer
    if settings.redis_url:
        queue = RedisJobQueue(settings)
        consumer = queue.consumer()
    else:
        queue = LocalJobQueue()
        consumer = queue
    services = await Services.open(settings, lock=consumer.sync_lock())
    try:
        log.info(
            "ingestion service starting",
            database=settings.database_kind,
            queue=queue.kind,
            sink=services.sink.kind,
            api=f"http://{settings.api_host}:{settings.api_port}",
            schedules={name: settings.cron_for(name) for name in PROVIDER_NAMES},
        )
        worker = Worker(settings, consumer, engine_runner(services.engine))
        scheduler = Scheduler(settings, queue, services.db, clock=services.clock)
        app = create_app(services, queue)
        tasks = [
            asyncio.create_task(serve(app, settings.api_host, settings.api_port, stop)),
            asyncio.create_task(worker.run(stop)),
            asyncio.create_task(scheduler.run(stop)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        log.info("ingestion service stopped")
    finally:
        await services.aclose()
        await queue.aclose()
