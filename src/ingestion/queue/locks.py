"""One sync per (provider, user) at a time: a Redis lock across workers, or one in-process.

The Redis lock is a key holding a random owner token (SET NX PX), renewed while held and
released by compare-and-delete, so a worker never frees a lock it no longer owns. It expires on
its own (at most the visibility timeout) when its holder dies, before the holder's job can be
reclaimed. A busy lock raises `SyncBusy`, a `RateLimited`: the worker defers the job instead
of running it beside the other one.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ingestion.errors import RateLimited
from ingestion.queue import scripts
from ingestion.queue.keys import Keys

__all__ = ["LocalSyncLock", "RedisSyncLock", "SyncBusy"]

log = structlog.get_logger("ingestion.queue.lock")


class SyncBusy(RateLimited):
    """Another worker is syncing this (provider, user) right now."""


class RedisSyncLock:
    """A `SyncLockFactory` backed by Redis (keys from `Keys.sync_lock`)."""

    def __init__(self, redis: Redis, keys: Keys, visibility_timeout: float) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = int(max(1.0, min(float(visibility_timeout), 30.0)) * 1000)
        self.busy_retry = float(min(max(visibility_timeout, 1), 60))
        self._acquire = redis.register_script(scripts.LOCK_ACQUIRE)
        self._renew = redis.register_script(scripts.LOCK_RENEW)
        self._release = redis.register_script(scripts.LOCK_RELEASE)
        self._held: dict[str, str] = {}
        self._renewer: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def __call__(self, provider: str, user_id: str) -> AsyncIterator[None]:
        key = self.keys.sync_lock(provider, user_id)
        token = secrets.token_hex(16)
        taken = int(await self._acquire(keys=[key], args=[token, self.ttl_ms]))
        if taken != 1:
            raise SyncBusy(
                f"a {provider} sync for this user is already running elsewhere",
                retry_after=self.busy_retry,
            )
        self._held[key] = token
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._keep())
        try:
            yield
        finally:
            self._held.pop(key, None)
            if not self._held and self._renewer is not None:
                self._renewer.cancel()
                self._renewer = None
            try:
                await self._release(keys=[key], args=[token])
            except RedisError as exc:  # it expires on its own
                log.warning("could not release sync lock", key=key, error=str(exc))

    async def _keep(self) -> None:
        """One task renews every lock this process holds, every third of the lock's ttl."""
        interval = self.ttl_ms / 3000
        while self._held:
            await asyncio.sleep(interval)
            for key, token in list(self._held.items()):
                try:
                    renewed = int(await self._renew(keys=[key], args=[token, self.ttl_ms]))
                    if not renewed and self._held.get(key) == token:
                        log.error("sync lock lost while the sync was running", key=key)
                except RedisError as exc:
                    log.warning("could not renew sync lock", key=key, error=str(exc))


class LocalSyncLock:
    """The in-process equivalent: one asyncio lock per (provider, user); busy raises too."""

    def __init__(self, busy_retry: float = 5.0) -> None:
        self.busy_retry = busy_retry
        self._held: set[tuple[str, str]] = set()

    @asynccontextmanager
    async def __call__(self, provider: str, user_id: str) -> AsyncIterator[None]:
        pair = (provider, user_id)
        if pair in self._held:
            raise SyncBusy(
                f"a {provider} sync for this user is already running",
                retry_after=self.busy_retry,
            )
        self._held.add(pair)
        try:
            yield
        finally:
            self._held.discard(pair)
