"""The parts of one process, built from the settings: database, HTTP client, memory sink,
token service and sync engine (`Services`), and what every long-running command shares
(stop signals, plugins). Every command opens `Services` once and closes it on the way out.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from dataclasses import dataclass

import httpx

from ingestion.clock import Clock, SystemClock
from ingestion.config import Settings
from ingestion.errors import ConfigurationError
from ingestion.memory.base import MemorySink
from ingestion.memory.local_store import LocalMemoryStore
from ingestion.push.channels import PushChannels
from ingestion.storage.db import Database, open_database
from ingestion.sync import SyncEngine, SyncLockFactory
from ingestion.tokens import TokenService
from ingestion.transport import BoundedTransport, no_cookies

__all__ = ["Services", "build_http_client", "build_sink", "install_stop_signals", "load_plugins"]


def build_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client of a process, shared by every user's sync, the token service and the
    memory sink: bounded answers and no cookies (`ingestion.transport`), no redirects."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.http_timeout, connect=10.0),
        transport=BoundedTransport(
            httpx.AsyncHTTPTransport(limits=limits),
            max_bytes=settings.http_max_response_bytes,
        ),
        cookies=no_cookies(),
        follow_redirects=False,
    )


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
    #: Push channel upkeep; `push.stop(user_id, provider)` is what account removal calls.
    push: PushChannels

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
        http = build_http_client(settings)
        sink = build_sink(settings, db, http)
        tokens = TokenService(settings, db, http, clock)
        push = PushChannels(settings, db, http, clock, tokens.source)
        engine = SyncEngine(
            settings=settings,
            db=db,
            sink=sink,
            tokens=tokens,
            http=http,
            clock=clock,
            lock=lock,
            after_sync=push.after_sync,
        )
        return cls(settings, db, http, sink, tokens, engine, clock, push)

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
    for name in (n.strip() for n in settings.plugins.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"INGESTION_PLUGINS: cannot import {name!r}: {exc}") from None
