"""One sync per (provider, user) at a time: a Redis lock across workers, or one in-process.

The Redis lock is a key holding a random owner token (SET NX PX), renewed while held and
released by compare-and-delete, so a worker never frees a lock it no longer owns. It expires on
its own (at most the visibility timeout) when its holder dies, before the holder's job can be
reclaimed. A busy lock raises `SyncBusy`, a `RateLimited`: the worker defers the job instead
of running it beside the other one.

On a worker the lock rides on the job's own round trips: the consumer takes it in the same
pipeline as the job's start (`RedisConsumer.begin`) and hands it to the job's task (`adopt`);
the sync engine's `with lock(…)` in that task then finds it held and costs nothing; the
consumer releases it in the same pipeline as the job's acknowledgement. Every lock a process
holds is renewed by one batched call per renewal interval. A job whose start did not get the
lock (another sync of the pair runs) asks for it again in the engine, and is deferred.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ingestion.errors import RateLimited
from ingestion.queue import scripts
from ingestion.queue.keys import Keys

__all__ = ["LocalSyncLock", "RedisSyncLock", "SyncBusy"]

log = structlog.get_logger("ingestion.queue.lock")

#: The lock (key, token) the current job's task was handed by its start (`adopt`); only that
#: task's `with lock(…)` of the same key uses it: a second job of the pair, in another task of
#: the same process, still asks Redis and finds it busy.
_ADOPTED: ContextVar[tuple[str, str] | None] = ContextVar("ingestion_adopted_lock", default=None)


class SyncBusy(RateLimited):
    """Another worker is syncing this (provider, user) right now."""


class RedisSyncLock:
    """A `SyncLockFactory` backed by Redis (keys from `Keys.sync_lock`)."""

    def __init__(self, redis: Redis, keys: Keys, visibility_timeout: float) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = int(max(1.0, min(float(visibility_timeout), 30.0)) * 1000)
        self.busy_retry = float(min(max(visibility_timeout, 1), 60))
        self.acquire_script = redis.register_script(scripts.LOCK_ACQUIRE)
        self._renew = redis.register_script(scripts.LOCK_RENEW)
        self.release_script = redis.register_script(scripts.LOCK_RELEASE)
        self._held: dict[str, str] = {}
        #: The next renewal while anything is held: a timer, cheap to set and cancel (jobs of
        #: a busy worker take and give back locks thousands of times a second, and the held
        #: set empties between batches), and the renewal's round trip when one is under way.
        self._renewal: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)

    def adopt(self, key: str, token: str) -> None:
        """The calling task's job took the lock `key` with `token` (in its start's round trip):
        keep it renewed, and let this task's `with lock(…)` of the key use it."""
        self._hold(key, token)
        _ADOPTED.set((key, token))

    def forget(self, key: str, token: str) -> None:
        """The job holding `key` with `token` settled: stop renewing (the caller releases it)."""
        if self._held.get(key) == token:
            self._unhold(key)

    def _hold(self, key: str, token: str) -> None:
        self._held[key] = token
        if self._renewal is None:
            self._renewal = asyncio.get_running_loop().call_later(
                self.ttl_ms / 3000, self._renew_due
            )

    def _unhold(self, key: str) -> None:
        self._held.pop(key, None)
        if not self._held and self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None

    def _renew_due(self) -> None:
        self._renewal = None
        if self._held and (self._renewing is None or self._renewing.done()):
            self._renewing = asyncio.create_task(self._renew_held())
        if self._held:
            self._renewal = asyncio.get_running_loop().call_later(
                self.ttl_ms / 3000, self._renew_due
            )

    def __call__(self, provider: str, user_id: str) -> AbstractAsyncContextManager[None]:
        key = self.keys.sync_lock(provider, user_id)
        adopted = _ADOPTED.get()
        if adopted is not None and adopted[0] == key and self._held.get(key) == adopted[1]:
            return nullcontext()  # taken with the job's start; released with its acknowledgement
        return self._take(provider, key)

    @asynccontextmanager
    async def _take(self, provider: str, key: str) -> AsyncIterator[None]:
        token = self.new_token()
        taken = int(await self.acquire_script(keys=[key], args=[token, self.ttl_ms]))
        if taken != 1:
            raise SyncBusy(
                f"a {provider} sync for this user is already running elsewhere",
                retry_after=self.busy_retry,
            )
        self._hold(key, token)
        try:
            yield
        finally:
            self._unhold(key)
            try:
                await self.release_script(keys=[key], args=[token])
            except RedisError as exc:  # it expires on its own
                log.warning("could not release sync lock", key=key, error=str(exc))

    async def _renew_held(self) -> None:
        """Renew every lock this process holds in one pipelined round trip (every third of the
        lock's ttl while any is held)."""
        held = list(self._held.items())
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, token in held:
                    await self._renew(keys=[key], args=[token, self.ttl_ms], client=pipe)
                renewed = await pipe.execute()
        except RedisError as exc:
            log.warning("could not renew sync locks", locks=len(held), error=str(exc))
            return
        for (key, token), ok in zip(held, renewed, strict=True):
            if not int(ok) and self._held.get(key) == token:
                log.error("sync lock lost while the sync was running", key=key)


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
