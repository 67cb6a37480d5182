"""Helpers shared by the queue, worker and scheduler tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ingestion.app import Services
from ingestion.config import Settings
from ingestion.queue.base import Consumer
from ingestion.storage.accounts import save_account
from ingestion.worker import Worker, engine_runner


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


def sync_wait_for(
    check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


async def add_accounts(services: Services, users: list[str], provider_id: str = "github") -> None:
    async with services.db.session() as session:
        for user in users:
            await save_account(
                session, user_id=user, provider_id=provider_id, access_token=f"token-{user}"
            )


@asynccontextmanager
async def running_worker(
    settings: Settings, consumer: Consumer, services: Services, **kwargs: Any
) -> AsyncIterator[Worker]:
    """A worker running in this event loop until the block ends (then stopped gracefully)."""
    worker = Worker(settings, consumer, engine_runner(services.engine), **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
