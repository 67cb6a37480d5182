"""The worker: takes jobs from the queue and runs each one through the sync engine.

Guarantees:

- **At-least-once.** A job is acknowledged only after its sync committed; a crash leaves it
  pending and another worker reclaims it after the visibility timeout. Jobs may run twice;
  stable record ids and the committed cursor make that harmless.
- **Failures are handled in one place** (`Worker._run`), by error class:
  `RateLimited` → deferred to its `retry_after` without counting an attempt (at most
  `JOB_MAX_DEFERRALS` times); `RetryableError` or an unexpected exception → retried with
  exponential backoff and jitter, never sooner than `retry_after`, and dead-lettered after
  `JOB_MAX_ATTEMPTS`; `ReauthRequired` → acknowledged, not retried (the account is marked);
  `PermanentError` and malformed entries → dead-lettered at once with their error.
- **A coalesced full sync is honoured**: a job first takes (`Consumer.begin`) the widening options
  that requests merged into it asked for, and runs with them; the queue enqueues a follow-up job
  for those that arrived while it ran.
- **Up to `WORKER_CONCURRENCY` jobs running**; one sync per (provider, user) at a time through
  the queue's lock. A job whose runner returned gives its slot to the next one while it is
  acknowledged; at most as many again wait for their acknowledgement.
- **Graceful shutdown**: once `stop` is set no new entry is taken, running jobs get
  `SHUTDOWN_GRACE_PERIOD` to finish, entries read but not started are handed back at once,
  and jobs still running after the grace period stay pending for another worker.
- **A lost queue connection** is retried with capped exponential backoff; the worker keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

import structlog

from ingestion import metrics
from ingestion.config import Settings
from ingestion.errors import (
    PermanentError,
    RateLimited,
    ReauthRequired,
    RetryableError,
    describe_unexpected,
    safe_traceback,
)
from ingestion.providers.base import FetchOptions
from ingestion.queue.base import Consumer, Delivery
from ingestion.queue.jobs import Job, JobOptions
from ingestion.sync import SyncEngine

__all__ = [
    "JobRunner",
    "Worker",
    "engine_runner",
    "fetch_options",
    "retry_delay",
    "serve_worker",
]

log = structlog.get_logger("ingestion.worker")

JobRunner = Callable[[Job], Awaitable[Any]]

#: Longest single wait of the read loop, so `stop` is noticed promptly.
_POLL_SECONDS = 1.0

#: While a backlog waits and jobs are still running, how long a freed slot waits for others to
#: free before the next read: the jobs of one read start in one round trip (and, ending close
#: together, are acknowledged in one), instead of one read, one start and one acknowledgement
#: per job once short jobs fall out of step. Negligible beside a sync's own duration.
_REFILL_WINDOW_SECONDS = 0.002


def retry_delay(settings: Settings, attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry number `attempt` (1 = first retry): exponential, jittered, capped,
    and never shorter than the provider's `retry_after` unless that is longer than
    `JOB_MAX_DEFER_SECONDS`."""
    ceiling = min(
        settings.job_retry_max_seconds, settings.job_retry_base_seconds * 2 ** (attempt - 1)
    )
    delay = random.uniform(ceiling / 2, ceiling)
    return min(max(delay, retry_after or 0.0), max(delay, settings.job_max_defer_seconds))


class Worker:
    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        run_job: JobRunner,
        *,
        concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.run_job = run_job
        self.concurrency = concurrency or settings.worker_concurrency
        self.log = log.bind(consumer=consumer.name)
        #: Every job task until it settled (keep-alive and shutdown look after all of them).
        self._running: dict[asyncio.Task[None], Delivery] = {}
        #: The tasks whose job is still running: what `concurrency` bounds. A job leaves this
        #: set once its runner returned, before its settling call, so the read that refills
        #: its slot shares a round trip with the acknowledgements (`RedisConsumer` channel).
        self._busy: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        #: Set when a job ends or `stop` is set: what the read loop waits on for a free slot.
        self._wake = asyncio.Event()
        visibility = float(settings.job_visibility_timeout)
        self._keepalive_every = max(0.2, min(visibility / 3, 10.0))
        self._reclaim_every = max(0.2, min(visibility / 2, 30.0))
        self._housekeeping_every = min(1.0, self._keepalive_every)

    # --- the loop ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Process jobs until `stop` is set, then shut down gracefully (see module docstring)."""
        self._stop = stop
        self.log.info("worker started", concurrency=self.concurrency)
        housekeeper = asyncio.create_task(self._housekeeping())
        stopping = asyncio.create_task(self._wake_on_stop())
        try:
            await self._read_loop()
        finally:
            await self._drain()
            for task in (housekeeper, stopping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                await self.consumer.leave()
            self.log.info("worker stopped")

    async def _read_loop(self) -> None:
        backoff = _Backoff()
        started = False
        first_start = True
        last_reclaim = 0.0
        backlog = False  # the last read filled every slot it asked for
        while not self._stop.is_set():
            try:
                if not started:
                    await self.consumer.start()
                    if first_start:  # entries this consumer left unacknowledged before
                        for delivery in await self.consumer.own_pending(self.concurrency):
                            self._spawn(delivery)
                        first_start = False
                    started = True
                free = self._free_slots()
                if free <= 0:
                    await self._wait_while(lambda: self._free_slots() <= 0)
                    if backlog:  # the other running jobs, for a moment: one read refills all
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(_REFILL_WINDOW_SECONDS):
                                await self._wait_while(lambda: bool(self._busy))
                    continue
                if time.monotonic() - last_reclaim >= self._reclaim_every:
                    last_reclaim = time.monotonic()
                    reclaimed = await self.consumer.reclaim(free)
                    for delivery in reclaimed:
                        self._spawn(delivery)
                    if reclaimed:
                        continue
                deliveries = await self.consumer.fetch(free, _POLL_SECONDS)
                backlog = len(deliveries) >= free
            except Exception as exc:
                started = False
                wait = backoff.next()
                self.log.warning(
                    "queue unreachable; retrying",
                    error=describe_unexpected(exc),
                    retry_in=round(wait, 2),
                )
                await self._sleep(wait)
                continue
            if backoff.failures:
                self.log.info("queue reachable again")
            backoff.reset()
            if self._stop.is_set():
                await self._hand_back(deliveries)
                return
            for delivery in deliveries:
                self._spawn(delivery)

    def _free_slots(self) -> int:
        """Jobs the worker may start now: `concurrency` running at most, and no more than as
        many again still settling (acknowledgements that cannot get through hold new reads)."""
        return min(self.concurrency - len(self._busy), 2 * self.concurrency - len(self._running))

    async def _wake_on_stop(self) -> None:
        await self._stop.wait()
        self._wake.set()

    async def _wait_while(self, busy: Callable[[], bool]) -> None:
        """While `busy()` holds and `stop` is not set; checked again whenever a job ends."""
        while busy() and not self._stop.is_set():
            self._wake.clear()
            await self._wake.wait()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def _spawn(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._process(delivery))
        self._running[task] = delivery
        self._busy.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._busy.discard(task)
        self._wake.set()

    def _run_ended(self) -> None:
        """The calling job task's runner is done; only its settling call is left."""
        task = asyncio.current_task()
        if task in self._busy:
            self._busy.discard(task)
            self._wake.set()

    async def _hand_back(self, deliveries: list[Delivery]) -> None:
        """Entries read after `stop`: put them straight back for another worker."""
        for delivery in deliveries:
            if delivery.job is None:
                await self._process(delivery)  # malformed or gone: settled without running
                continue
            with contextlib.suppress(Exception):
                await self.consumer.reschedule(delivery, delivery.job, None)

    async def _drain(self) -> None:
        if not self._running:
            return
        grace = self.settings.shutdown_grace_period
        self.log.info("waiting for running jobs", jobs=len(self._running), grace_seconds=grace)
        _done, still = await asyncio.wait(list(self._running), timeout=grace)
        if still:
            self.log.warning(
                "grace period over; leaving jobs pending for another worker",
                entries=[self._running[t].entry_id for t in still if t in self._running],
            )
            abandoned = [self._running[t] for t in still if t in self._running]
            for task in still:
                task.cancel()
            await asyncio.wait(still, timeout=5)
            # Their sync locks go back now (not at the lock's expiry): the worker that
            # reclaims an entry after the visibility timeout runs it instead of deferring.
            for delivery in abandoned:
                try:
                    await self.consumer.abandon(delivery)
                except Exception as exc:  # the lock then expires by itself
                    self.log.warning("sync lock not released", error=describe_unexpected(exc))

    async def _housekeeping(self) -> None:
        """Keep running entries claimed, promote due delayed jobs, trim the stream."""
        last_keepalive = 0.0
        while True:
            await asyncio.sleep(self._housekeeping_every)
            try:
                if time.monotonic() - last_keepalive >= self._keepalive_every:
                    last_keepalive = time.monotonic()
                    await self.consumer.keep_alive(list(self._running.values()))
                if not self._stop.is_set():
                    await self.consumer.housekeeping()
            except Exception as exc:
                self.log.debug("housekeeping failed", error=describe_unexpected(exc))

    # --- one job ----------------------------------------------------------------------------------
    async def _process(self, delivery: Delivery) -> None:
        try:
            await self._process_one(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, not a job failure: the entry stays pending
            self.log.error(
                "job handling crashed",
                entry=delivery.entry_id,
                error=describe_unexpected(exc),
                trace=safe_traceback(exc),
            )

    async def _process_one(self, delivery: Delivery) -> None:
        job = delivery.job
        if delivery.gone:
            self.log.warning(
                "pending entry no longer exists; acknowledging", entry=delivery.entry_id
            )
            self._run_ended()
            await self._settle(partial(self.consumer.complete, delivery))
            return
        if job is None:
            error = delivery.error or "malformed entry"
            self.log.error("malformed job dead-lettered", entry=delivery.entry_id, error=error)
            metrics.JOBS.labels(provider="unknown", outcome="dead_lettered").inc()
            self._run_ended()
            await self._settle(partial(self.consumer.dead_letter, delivery, error, 0))
            return
        # Bound for the rest of this task only: every job runs in its own task, whose context
        # is its own copy (`_spawn`), so nothing needs unbinding.
        structlog.contextvars.bind_contextvars(
            job_id=job.job_id, provider=job.provider, user_id=job.user_id
        )
        started = await self._begin(delivery, job)
        if started is None:
            return  # shutting down with the queue unreachable: the entry stays pending
        await self._run(delivery, started)

    async def _begin(self, delivery: Delivery, job: Job) -> Job | None:
        """Mark the job running and widen it with what coalesced requests asked for (e.g. a
        full sync). A widened job's entry fields are updated so a dead letter shows it too."""
        backoff = _Backoff()
        while True:
            try:
                started = await self.consumer.begin(delivery, job)
                break
            except Exception as exc:
                if self._stop.is_set():
                    return None
                wait = backoff.next()
                self.log.warning(
                    "could not start job; retrying",
                    error=describe_unexpected(exc),
                    retry_in=round(wait, 2),
                )
                await asyncio.sleep(wait)
        if started.options != job.options:
            self.log.info("job widened by a coalesced request", options=started.payload())
            delivery.fields["payload"] = started.payload()
        return started

    async def _run(self, delivery: Delivery, job: Job) -> None:
        """Run one job and settle it: the one place where errors become queue actions."""
        settings = self.settings
        outcome: str
        action: Callable[[], Awaitable[Any]]
        try:
            await self.run_job(job)
        except RateLimited as exc:
            if job.deferrals >= settings.job_max_deferrals:
                outcome = "dead_lettered"
                action = partial(
                    self.consumer.dead_letter,
                    delivery,
                    f"deferred {job.deferrals} times; last: {exc}",
                    job.attempt,
                )
            else:
                outcome = "deferred"
                wait = exc.retry_after if exc.retry_after is not None else retry_delay(settings, 1)
                wait = min(wait, settings.job_max_defer_seconds)
                action = partial(
                    self.consumer.reschedule,
                    delivery,
                    replace(job, deferrals=job.deferrals + 1),
                    time.time() + wait,
                )
                self.log.info("job deferred", retry_in=round(wait, 2), reason=str(exc))
        except ReauthRequired as exc:
            outcome = "failed"
            action = partial(self.consumer.complete, delivery)
            self.log.warning("account needs re-authentication; job dropped", error=str(exc))
        except PermanentError as exc:
            outcome = "dead_lettered"
            action = partial(self.consumer.dead_letter, delivery, str(exc), job.attempt)
            self.log.error("job failed permanently", error=str(exc))
        except asyncio.CancelledError:
            raise  # shutdown after the grace period: the entry stays pending
        except Exception as exc:
            message = str(exc) if isinstance(exc, RetryableError) else describe_unexpected(exc)
            retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
            if job.attempt >= settings.job_max_attempts:
                outcome = "dead_lettered"
                action = partial(
                    self.consumer.dead_letter,
                    delivery,
                    f"failed after {job.attempt} attempts: {message}",
                    job.attempt,
                )
                self.log.error("job dead-lettered", attempts=job.attempt, error=message)
            else:
                outcome = "retried"
                wait = retry_delay(settings, job.attempt, retry_after)
                action = partial(
                    self.consumer.reschedule,
                    delivery,
                    replace(job, attempt=job.attempt + 1),
                    time.time() + wait,
                )
                self.log.warning(
                    "job failed; will retry",
                    attempt=job.attempt,
                    retry_in=round(wait, 2),
                    error=message,
                )
        else:
            outcome = "succeeded"
            action = partial(self.consumer.complete, delivery)
        metrics.JOBS.labels(provider=job.provider, outcome=outcome).inc()
        self._run_ended()
        await self._settle(action)

    async def _settle(self, action: Callable[[], Awaitable[Any]]) -> None:
        """Run a settling call, retrying while the queue is unreachable.

        Gives up only at shutdown: the entry then stays pending and is run again elsewhere.
        """
        backoff = _Backoff()
        while True:
            try:
                await action()
                return
            except Exception as exc:
                if self._stop.is_set() and backoff.failures >= 5:
                    self.log.error(
                        "could not settle job; it stays pending", error=describe_unexpected(exc)
                    )
                    return
                wait = backoff.next()
                self.log.warning(
                    "could not settle job; retrying",
                    error=describe_unexpected(exc),
                    retry_in=round(wait, 2),
                )
                await asyncio.sleep(wait)


class _Backoff:
    """Capped exponential backoff with jitter for reconnecting: 0.1 s doubling to 5 s."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


def fetch_options(options: JobOptions) -> FetchOptions:
    """A job's options (the queue's type) as the providers take them."""
    return FetchOptions(
        max_results=options.max_results,
        since=options.since,
        force_full_sync=options.force_full_sync,
    )


def engine_runner(engine: SyncEngine) -> JobRunner:
    """Run a job as one `SyncEngine.run` (the engine takes the queue's per-pair lock)."""

    async def run(job: Job) -> Any:
        return await engine.run(
            job.provider, job.user_id, fetch_options(job.options), job_id=job.job_id
        )

    return run


async def serve_worker(settings: Settings, concurrency: int | None = None) -> None:
    """`ingestion worker`: consume the Redis queue until SIGINT/SIGTERM, then exit cleanly."""
    from ingestion.forget import Forgetter
    from ingestion.queue import redis_queue
    from ingestion.services import Services, install_stop_signals, load_plugins

    metrics.check_multiprocess(settings)
    load_plugins(settings)
    queue = redis_queue(settings)
    consumer = queue.consumer()
    stop = asyncio.Event()
    install_stop_signals(stop)
    services = await Services.open(settings, lock=consumer.sync_lock())
    try:
        worker = Worker(settings, consumer, engine_runner(services.engine), concurrency=concurrency)
        forgetter = Forgetter.of(services)
        forgetting = asyncio.create_task(forgetter.run(stop))
        try:
            await worker.run(stop)
        finally:
            stop.set()
            await forgetting
    finally:
        await services.aclose()
        await queue.aclose()
