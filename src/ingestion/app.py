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


async def run_service(settings: Settings) -> None:
    """`ingestion run`: scheduler + worker + HTTP API in one process, until SIGINT/SIGTERM."""
    from ingestion.api import create_app, serve

    log = structlog.get_logger("ingestion.run")
    stop = asyncio.Event()
    install_stop_signals(stop)
    services = await Services.open(settings)
    try:
        log.info(
            "ingestion service starting",
            database=settings.database_kind,
            queue="redis" if settings.redis_url else "in-process",
            sink=services.sink.kind,
            api=f"http://{settings.api_host}:{settings.api_port}",
            schedules={name: settings.cron_for(name) for name in PROVIDER_NAMES},
        )
        await serve(create_app(), settings.api_host, settings.api_port, stop)
        log.info("ingestion service stopped")
    finally:
        await services.aclose()
