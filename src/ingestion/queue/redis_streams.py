"""The job queue on Redis Streams (design §5).

Guarantees:

- **At-least-once.** An entry is acknowledged only after its job's sync committed, or in the
  same Lua step that re-queues or dead-letters it. Entries left pending by a consumer that died
  are reclaimed with XAUTOCLAIM after `JOB_VISIBILITY_TIMEOUT`; a running job's worker calls
  `keep_alive` so a healthy long job is not reclaimed. Jobs may therefore run more than once.
- **Coalescing.** `enqueue` sets a per-(provider, user) marker in the same step as the XADD; a
  second job while one is queued, delayed or running is merged into it. The marker is cleared
  when the job is acknowledged or dead-lettered, and expires on its own as a safety net.
- **Widening requests are never lost.** A coalesced request with `forceFullSync` is recorded in
  the pair's widen hash in the same step: a job that has not started takes it when it begins
  (one atomic step); for a running job the acknowledging step enqueues one follow-up job with it.
- **Delayed jobs wait in Redis** (a sorted set scored by due time), never in a sleeping worker;
  any worker moves due ones onto the stream.
- **Trimming** never passes the oldest pending entry nor an undelivered one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from ingestion import metrics
from ingestion.config import Settings
from ingestion.queue import scripts
from ingestion.queue.base import DeadLetter, Delivery, EnqueueResult, Widening
from ingestion.queue.channel import Channel
from ingestion.queue.connection import redis_client
from ingestion.queue.jobs import RERUN_FLAG, Job, widened, widening_flags
from ingestion.queue.keys import Keys
from ingestion.queue.locks import RedisSyncLock
from ingestion.queue.retention import DEAD_LETTER_CHUNK, dead_fingerprint, tick_ttl

if TYPE_CHECKING:  # the queue imports no provider, not even through the engine
    from ingestion.sync import SyncLockFactory

__all__ = ["RedisConsumer", "RedisJobQueue", "consumer_name"]

log = structlog.get_logger("ingestion.queue")

#: How long an untaken widening request waits for the pair's next job (any tick takes it).
_WIDEN_TTL_SECONDS = 7 * 86400
_DEAD_FIELDS = ("error", "failedAt", "attempts", "count")


def consumer_name() -> str:
    """Unique per process: host, pid and a random suffix (design §5)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _entries(raw: Any) -> list[tuple[str, dict[str, str]]]:
    """XRANGE/XAUTOCLAIM entries as (id, fields); a deleted entry has empty fields."""
    return [(str(entry_id), dict(fields or {})) for entry_id, fields in raw or []]


def _pairs(fields: Any) -> dict[str, str] | None:
    """A raw entry's field list `[k1, v1, k2, v2, ...]` as a dict (None for a deleted entry)."""
    if fields is None:
        return None
    if isinstance(fields, dict):
        return {str(k): str(v) for k, v in fields.items()}
    return {str(fields[i]): str(fields[i + 1]) for i in range(0, len(fields) - 1, 2)}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _widening(value: str) -> Widening | None:
    if value == "merged":
        return "merged"
    if value == "follow-up":
        return "follow-up"
    if value == "covered":
        return "covered"
    return None


#: One script call of a pipeline: the script, its keys, its arguments.
_Call = tuple[AsyncScript, list[str], list[Any]]


async def _run_scripts(redis: Redis, calls: list[_Call]) -> list[Any]:
    """Run script calls in one pipelined round trip, by SHA.

    redis-py's pipelines ask `SCRIPT EXISTS` before every execution that holds a script (one
    more round trip each time); here a call whose script Redis does not have (it restarted, or
    was flushed) fails alone without running and is run again through the script object, which
    loads it. Any other error is raised after the whole pipeline ran, as a pipeline does.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            script, keys, args = calls[i]
            replies[i] = await script(keys=keys, args=args)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class RedisJobQueue:
    """Producer side and operator side: enqueue, figures, dead letters."""

    kind = "redis"

    def __init__(self, settings: Settings, client: Redis | None = None) -> None:
        if not settings.redis_url and client is None:
            raise ValueError("RedisJobQueue needs REDIS_URL")
        self.settings = settings
        self.keys = Keys(settings.redis_namespace)
        #: Safety expiry of a coalescing marker: longer than any wait a live job goes through.
        self.active_ttl = int(
            settings.job_retry_max_seconds + 3 * settings.job_visibility_timeout + 600
        )
        self.widen_ttl = max(_WIDEN_TTL_SECONDS, self.active_ttl)
        self.redis: Redis = client or redis_client(
            settings.redis_url or "",
            decode_responses=True,
            socket_connect_timeout=5,
            socket_keepalive=True,
            health_check_interval=15,
        )
        self._enqueue = self.redis.register_script(scripts.ENQUEUE)
        self._enqueue_ticks = self.redis.register_script(scripts.ENQUEUE_TICKS)
        self._requeue_dead = self.redis.register_script(scripts.REQUEUE_DEAD)
        #: The own connections of the consumers made here (one per worker), closed by `aclose`.
        self._channels: list[Channel] = []

    async def enqueue(self, job: Job, *, rerun: bool = False) -> EnqueueResult:
        """Add `job` unless one for the same (provider, user) is queued or running.

        A coalesced job's widening options (`forceFullSync`) are recorded, not dropped; the
        result's `widening` says how they will be honoured.
        """
        outcome, job_id, widening = await self._add(job, due=0.0, tick_epoch=None, rerun=rerun)
        return EnqueueResult(job_id=job_id, coalesced=outcome == "coalesced", widening=widening)

    async def enqueue_tick(self, job: Job, tick_epoch: int, due: float) -> str:
        """Scheduler enqueue: once per (provider, user, tick) across every scheduler.

        Returns `enqueued`, `coalesced` (a job for the pair is queued or running) or
        `duplicate` (another scheduler already handled this tick).
        """
        outcome, _, _ = await self._add(job, due=due, tick_epoch=tick_epoch)
        return outcome

    async def enqueue_ticks(self, jobs: Sequence[tuple[Job, float]], tick_epoch: int) -> list[str]:
        """`enqueue_tick` for many plain jobs (no options) in one round trip; one outcome each.

        The scheduler calls it once per page of a tick: the jobs of a batch are checked and
        added in one script, so the exactly-once guarantee per (provider, user, tick) is the
        same as with one call per job.
        """
        if not jobs:
            return []
        keys = [self.keys.stream, self.keys.delayed]
        # One cron interval (and a margin) of the batch's provider: a tick key outlives its
        # tick, never the next one (`retention.tick_ttl`); a batch holds one provider's tick.
        # Computed once per provider, not per job (a cron expansion costs about 0.2 ms).
        providers = {job.provider for job, _ in jobs}
        ttl = max(tick_ttl(self.settings, provider, tick_epoch) for provider in providers)
        args: list[str | int] = [self.active_ttl, ttl]
        now = time.time()
        enqueued_at = datetime.now(UTC).isoformat()
        for job, due in jobs:
            job_id = job.job_id or uuid.uuid4().hex
            fields = {
                "type": job.type,
                "payload": job.payload(),
                "attempt": "1",
                "enqueuedAt": enqueued_at,
                "jobId": job_id,
                "scheduledFor": str(tick_epoch),
            }
            keys += [
                self.keys.active(job.provider, job.user_id),
                self.keys.tick(job.provider, job.user_id, tick_epoch),
            ]
            args += [
                job_id,
                f"{due:.3f}" if due > now else "0",
                json.dumps(_flat(fields), separators=(",", ":")),
            ]
        outcomes = [str(o) for o in await self._enqueue_ticks(keys=keys, args=args)]
        for (job, _), outcome in zip(jobs, outcomes, strict=True):
            if outcome == "coalesced":
                metrics.JOBS.labels(provider=job.provider, outcome="coalesced").inc()
        return outcomes

    async def _add(
        self, job: Job, *, due: float, tick_epoch: int | None, rerun: bool = False
    ) -> tuple[str, str, Widening | None]:
        job_id = job.job_id or uuid.uuid4().hex
        fields = Job(job.provider, job.user_id, job.options, attempt=1, job_id=job_id).to_fields()
        if tick_epoch is not None:
            fields["scheduledFor"] = str(tick_epoch)
        tick_key = (
            self.keys.tick(job.provider, job.user_id, tick_epoch)
            if tick_epoch is not None
            else self.keys.stream
        )
        flags = widening_flags(job.options) + ([RERUN_FLAG] if rerun else [])
        result = await self._enqueue(
            keys=[
                self.keys.active(job.provider, job.user_id),
                self.keys.stream,
                self.keys.delayed,
                tick_key,
                self.keys.widen(job.provider, job.user_id),
                self.keys.running(job.provider, job.user_id),
            ],
            args=[
                job_id,
                self.active_ttl,
                f"{due:.3f}" if due > time.time() else "0",
                tick_ttl(self.settings, job.provider, tick_epoch) if tick_epoch is not None else 0,
                self.widen_ttl,
                len(flags),
                *flags,
                *_flat(fields),
            ],
        )
        outcome = str(result[0])
        widening = _widening(str(result[2]))
        if outcome == "coalesced":
            metrics.JOBS.labels(provider=job.provider, outcome="coalesced").inc()
            if widening is not None:
                log.info(
                    "widening request recorded for a coalesced job",
                    provider=job.provider,
                    job_id=str(result[1]),
                    options=flags,
                    widening=widening,
                )
        return outcome, str(result[1]), widening

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) when missing; BUSYGROUP is fine."""
        try:
            await self.redis.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def stats(self) -> dict[str, Any]:
        keys = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.stream)
            pipe.xlen(keys.dead)
            pipe.zcard(keys.delayed)
            length, dead, delayed = await pipe.execute()
        pending = 0
        lag: int | None = int(length)  # no group yet: nothing was delivered
        oldest: float | None = None
        with contextlib.suppress(ResponseError):  # no stream or group yet
            for group in await self.redis.xinfo_groups(keys.stream):
                if group["name"] == keys.group:
                    pending = int(group["pending"])
                    lag = group.get("lag")
            if pending:
                summary = await self.redis.xpending(keys.stream, keys.group)
                if summary and summary.get("min"):
                    oldest = max(0.0, time.time() - _entry_ms(summary["min"]) / 1000)
        return {
            "kind": self.kind,
            "length": int(length),
            "waiting": lag,
            "pending": pending,
            "delayed": int(delayed),
            "deadLetters": int(dead),
            "oldestPendingSeconds": round(oldest, 1) if oldest is not None else None,
        }

    async def ping(self) -> None:
        await self.redis.ping()

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        entries = _entries(await self.redis.xrange(self.keys.dead, count=limit))
        return [
            DeadLetter(
                id=entry_id,
                type=fields.get("type", ""),
                payload=fields.get("payload", ""),
                error=fields.get("error", ""),
                failed_at=fields.get("failedAt", ""),
                attempts=_int(fields.get("attempts"), 0),
                count=_int(fields.get("count"), 1),
            )
            for entry_id, fields in entries
        ]

    async def retry_dead(self, ids: list[str] | None) -> int:
        """Put dead letters back as fresh jobs (attempt 1); unknown ids are skipped.

        All of them (`ids` None) are read `DEAD_LETTER_CHUNK` at a time, never the whole stream.
        """
        if ids is not None:
            entries: list[tuple[str, dict[str, str]]] = []
            for entry_id in ids:
                entries.extend(
                    _entries(await self.redis.xrange(self.keys.dead, entry_id, entry_id))
                )
            return await self._requeue(entries)
        moved = 0
        start = "-"
        while True:
            chunk = _entries(
                await self.redis.xrange(self.keys.dead, start, "+", count=DEAD_LETTER_CHUNK)
            )
            if not chunk:
                return moved
            moved += await self._requeue(chunk)
            start = f"({chunk[-1][0]}"

    async def _requeue(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        moved = 0
        for entry_id, fields in entries:
            fresh = {k: v for k, v in fields.items() if k not in _DEAD_FIELDS}
            fresh.pop("deferrals", None)
            fresh["attempt"] = "1"
            fresh["enqueuedAt"] = datetime.now(UTC).isoformat()
            job_id = fresh.setdefault("jobId", uuid.uuid4().hex)
            delivery = Delivery.parse(entry_id, fresh)
            job = delivery.job
            active = self.keys.active(job.provider, job.user_id) if job else self.keys.dead
            moved += int(
                await self._requeue_dead(
                    keys=[self.keys.dead, self.keys.stream, active],
                    args=[entry_id, job_id if job else "", self.active_ttl, *_flat(fresh)],
                )
            )
        return moved

    @property
    def dead_max_age_seconds(self) -> int:
        return max(1, int(self.settings.dead_letter_max_age_days * 86_400))

    def dead_min_id(self) -> str:
        """The id below which dead letters are older than `DEAD_LETTER_MAX_AGE_DAYS`."""
        return f"{max(0, int((time.time() - self.dead_max_age_seconds) * 1000))}-0"

    async def trim_dead(self) -> int:
        """Drop dead letters past their age (new ones trim on arrival; this covers quiet days)."""
        return int(await self.redis.xtrim(self.keys.dead, minid=self.dead_min_id()))

    async def purge_dead(self) -> int:
        count = int(await self.redis.xlen(self.keys.dead))
        await self.redis.delete(self.keys.dead)
        return count

    def consumer(self, name: str | None = None) -> RedisConsumer:
        consumer = RedisConsumer(self, name or consumer_name())
        self._channels.append(consumer.channel)
        return consumer

    async def aclose(self) -> None:
        for channel in self._channels:
            await channel.aclose()
        await self.redis.aclose()


class RedisConsumer:
    """A worker's view of the stream: one consumer of the group."""

    def __init__(self, queue: RedisJobQueue, name: str) -> None:
        self.queue = queue
        self.name = name
        self.keys = queue.keys
        self.redis = queue.redis
        settings = queue.settings
        self.visibility_ms = settings.job_visibility_timeout * 1000
        self._claim_cursor = "0-0"
        self._last_trim = 0.0
        self._last_prune = 0.0
        self._ack = self.redis.register_script(scripts.ACK)
        self._begin = self.redis.register_script(scripts.BEGIN)
        self._reschedule = self.redis.register_script(scripts.RESCHEDULE)
        self._dead = self.redis.register_script(scripts.DEAD_LETTER)
        self._promote = self.redis.register_script(scripts.PROMOTE)
        self._lock = RedisSyncLock(self.redis, self.keys, settings.job_visibility_timeout)
        #: Sync locks taken with a job's start, by entry id, until the job settles.
        self._job_locks: dict[str, tuple[str, str]] = {}
        #: The consumer's own connection: starts, acknowledges and reads waiting jobs.
        self.channel = Channel(self.redis)

    async def start(self) -> None:
        await self.queue.ensure_group()

    def _deliveries(self, response: Any) -> list[Delivery]:
        result: list[Delivery] = []
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                result.append(self._delivery(entry_id, fields))
        return result

    def _delivery(self, entry_id: str, fields: dict[str, str] | None) -> Delivery:
        if not fields:
            # A pending entry whose stream entry was deleted or trimmed.
            return Delivery(entry_id, {}, gone=True)
        return Delivery.parse(entry_id, fields)

    async def own_pending(self, count: int) -> list[Delivery]:
        response = await self.redis.xreadgroup(
            self.keys.group, self.name, {self.keys.stream: "0"}, count=count
        )
        return self._deliveries(response)

    async def fetch(self, count: int, timeout: float) -> list[Delivery]:
        """Entries already waiting are read without blocking on the channel (in the round trip
        of the starts and acknowledgements in flight, if any); only an empty stream is waited
        on, through the pool (a blocked read would hold up the channel)."""
        keys = self.keys
        waiting = await self.channel.command(
            "XREADGROUP", "GROUP", keys.group, self.name, "COUNT", count,
            "STREAMS", keys.stream, ">",
        )  # fmt: skip
        if waiting:
            entries = waiting.values() if isinstance(waiting, dict) else [e for _, e in waiting]
            return [
                self._delivery(str(entry_id), _pairs(fields))
                for stream_entries in entries
                for entry_id, fields in stream_entries
            ]
        response = await self.redis.xreadgroup(
            self.keys.group,
            self.name,
            {self.keys.stream: ">"},
            count=count,
            block=max(1, int(timeout * 1000)),
        )
        return self._deliveries(response)

    async def reclaim(self, count: int) -> list[Delivery]:
        """XAUTOCLAIM, following its cursor across calls; deleted entries are logged."""
        response = await self.redis.xautoclaim(
            self.keys.stream,
            self.keys.group,
            self.name,
            min_idle_time=self.visibility_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        self._claim_cursor = response[0]
        claimed = [self._delivery(entry_id, fields) for entry_id, fields in response[1]]
        deleted = response[2] if len(response) > 2 else []
        if deleted:
            # XAUTOCLAIM already dropped them from the pending list: nothing left to run.
            log.warning("pending entries were deleted before they ran", entries=deleted)
        for delivery in claimed:
            delivery.deliveries = 2
        if claimed:
            log.info("reclaimed stalled jobs", entries=[d.entry_id for d in claimed])
        return claimed

    async def begin(self, delivery: Delivery, job: Job) -> Job:
        """Mark the pair's running job and take the widening flags recorded for it, and try the
        pair's sync lock, in one atomic script (BEGIN): when taken the lock is handed to this
        job's task (`RedisSyncLock.adopt`) and released with the job's settling call.

        Starts that arrive while another round trip is in flight (the jobs of one read) go
        together in the next one (`Channel`), each still its own atomic script."""
        lock_key = self.keys.sync_lock(job.provider, job.user_id)
        token = self._lock.new_token()
        try:
            flags, taken = await self.channel.script(
                self._begin,
                [
                    self.keys.running(job.provider, job.user_id),
                    self.keys.widen(job.provider, job.user_id),
                    lock_key,
                ],
                [
                    job.job_id,
                    self.queue.active_ttl,
                    token,
                    self._lock.ttl_ms,
                    *widening_flags(job.options),
                ],
            )
        except Exception:
            with contextlib.suppress(Exception):  # the lock may have been taken: give it back
                await self.channel.script(self._lock.release_script, [lock_key], [token])
            raise
        if int(taken) == 1:
            self._job_locks[delivery.entry_id] = (lock_key, token)
            self._lock.adopt(lock_key, token)  # in this job's task
        options = widened(job.options, [str(flag) for flag in flags or []])
        return job if options == job.options else replace(job, options=options)

    def _held_lock(self, delivery: Delivery) -> tuple[str, str] | None:
        """The sync lock (key, token) `delivery`'s job took at its start, if any, no longer
        renewed: the caller releases it (compare-and-delete: harmless if it expired)."""
        held = self._job_locks.pop(delivery.entry_id, None)
        if held is not None:
            self._lock.forget(*held)
        return held

    def _release_lock(self, delivery: Delivery) -> list[_Call]:
        """The release of the sync lock `delivery`'s job took, as a call for a pipeline."""
        held = self._held_lock(delivery)
        return [] if held is None else [(self._lock.release_script, [held[0]], [held[1]])]

    async def abandon(self, delivery: Delivery) -> None:
        """Release the sync lock the job took at its start; the entry stays pending."""
        calls = self._release_lock(delivery)
        if calls:
            await _run_scripts(self.redis, calls)

    async def complete(self, delivery: Delivery) -> None:
        """Acknowledge a finished job (and clear its marker, or pass it to a follow-up job with
        the widening options requested while it ran) and release its sync lock, in one atomic
        script.

        Acknowledgements that arrive while another round trip is in flight go together in the
        next one (`Channel`), each still its own atomic script. Returns once this job's
        acknowledgement was applied; raises if it could not be sent (the lock stays held and
        renewed until a retry settles the job).
        """
        lock_key, token = self._job_locks.get(delivery.entry_id) or (self.keys.stream, "")
        result = await self.channel.script(
            self._ack,
            [*self._pair_keys(delivery.job), lock_key],
            [*self._ack_args(delivery), token],
        )
        self._held_lock(delivery)  # released by the script
        follow_up = str(result[1]) if result and len(result) > 1 else ""
        if follow_up and delivery.job:
            log.info(
                "follow-up job enqueued with options requested while it ran",
                job_id=delivery.job_id,
                follow_up_job_id=follow_up,
                provider=delivery.job.provider,
            )

    def _pair_keys(self, job: Job | None) -> list[str]:
        """stream, active, widen, running of the job's pair (placeholders for no job)."""
        if job is None:
            return [self.keys.stream] * 4
        return [
            self.keys.stream,
            self.keys.active(job.provider, job.user_id),
            self.keys.widen(job.provider, job.user_id),
            self.keys.running(job.provider, job.user_id),
        ]

    def _ack_args(self, delivery: Delivery) -> list[str | int]:
        job = delivery.job
        return [
            self.keys.group,
            delivery.entry_id,
            delivery.job_id,
            secrets.token_hex(16),  # the id of a follow-up job, if the script makes one
            job.type if job else "",
            job.user_id if job else "",
            datetime.now(UTC).isoformat(),
            self.queue.active_ttl,
        ]

    async def reschedule(self, delivery: Delivery, job: Job, due: float | None) -> None:
        """Put `job` back at `due`, at most `JOB_MAX_DEFER_SECONDS` away (a non-finite `due`
        waits that long); the pair's marker lives until then plus its usual safety margin."""
        fields = job.to_fields()
        now = time.time()
        longest = now + self.queue.settings.job_max_defer_seconds
        if due is not None:
            due = min(due, longest) if math.isfinite(due) else (longest if due > 0 else None)
        wait = max(0.0, due - now) if due else 0.0
        reschedule: _Call = (
            self._reschedule,
            [
                self.keys.stream,
                self.keys.delayed,
                self.keys.active(job.provider, job.user_id),
                self.keys.running(job.provider, job.user_id),
                self.keys.widen(job.provider, job.user_id),
            ],
            [
                self.keys.group,
                delivery.entry_id,
                f"{due:.3f}" if due and due > now else "0",
                job.job_id,
                self.queue.active_ttl + math.ceil(wait),
                self.queue.widen_ttl + math.ceil(wait),
                *_flat(fields),
            ],
        )
        await _run_scripts(self.redis, [*self._release_lock(delivery), reschedule])

    async def dead_letter(self, delivery: Delivery, error: str, attempts: int) -> None:
        fields = dict(delivery.fields)
        fields.update(
            error=error[:2000],
            failedAt=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            attempts=str(attempts),
        )
        fields.pop("count", None)
        job = delivery.job
        active = self.keys.active(job.provider, job.user_id) if job else self.keys.dead
        running = self.keys.running(job.provider, job.user_id) if job else self.keys.dead
        widen = self.keys.widen(job.provider, job.user_id) if job else self.keys.dead
        user_id = job.user_id if job else ""
        index = self.keys.dead_index(
            dead_fingerprint(fields.get("type", ""), user_id, fields["error"])
        )
        settings = self.queue.settings
        dead: _Call = (
            self._dead,
            [self.keys.stream, self.keys.dead, active, running, widen, index],
            [
                self.keys.group,
                delivery.entry_id,
                delivery.job_id,
                self.queue.widen_ttl,
                settings.dead_letter_max_entries,
                self.queue.dead_min_id(),
                self.queue.dead_max_age_seconds,
                *_flat(fields),
            ],
        )
        await _run_scripts(self.redis, [*self._release_lock(delivery), dead])

    async def keep_alive(self, deliveries: list[Delivery]) -> None:
        """Reset the idle time of running entries (XCLAIM … JUSTID) and refresh their markers."""
        if not deliveries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xclaim(
                self.keys.stream,
                self.keys.group,
                self.name,
                min_idle_time=0,
                message_ids=[d.entry_id for d in deliveries],
                justid=True,
            )
            for delivery in deliveries:
                if delivery.job:
                    job = delivery.job
                    for key in (
                        self.keys.active(job.provider, job.user_id),
                        self.keys.running(job.provider, job.user_id),
                    ):
                        pipe.expire(key, self.queue.active_ttl, xx=True)
            await pipe.execute()

    async def housekeeping(self) -> None:
        await self._promote(keys=[self.keys.delayed, self.keys.stream], args=[time.time(), 100])
        now = time.monotonic()
        if now - self._last_trim >= 5.0:
            self._last_trim = now
            await self.trim()
            await self.queue.trim_dead()
        if now - self._last_prune >= 600.0:
            self._last_prune = now
            await self.prune_consumers()

    async def prune_consumers(self, idle_seconds: float = 3600.0) -> int:
        """Forget consumers of dead processes: no pending entry and silent for an hour.

        A live worker touches the group at least every second, so it is never pruned; one with
        pending entries is left for XAUTOCLAIM (deleting it would drop its pending entries).
        """
        pruned = 0
        consumers: Any = await self.redis.xinfo_consumers(self.keys.stream, self.keys.group)
        for consumer in consumers:
            if (
                consumer["name"] != self.name
                and int(consumer["pending"]) == 0
                and int(consumer["idle"]) > idle_seconds * 1000
            ):
                await self.redis.xgroup_delconsumer(
                    self.keys.stream, self.keys.group, consumer["name"]
                )
                pruned += 1
        return pruned

    async def trim(self) -> int:
        """Drop acknowledged entries: everything below the oldest pending or undelivered one."""
        keys = self.keys
        last_delivered: str | None = None
        for group in await self.redis.xinfo_groups(keys.stream):
            if group["name"] == keys.group:
                last_delivered = group["last-delivered-id"]
        if not last_delivered:
            return 0
        summary = await self.redis.xpending(keys.stream, keys.group)
        if summary and summary.get("pending"):
            min_id = str(summary["min"])
        else:
            ms, _, seq = last_delivered.partition("-")
            min_id = f"{ms}-{int(seq or 0) + 1}"
        return int(await self.redis.xtrim(keys.stream, minid=min_id, approximate=False))

    def sync_lock(self) -> SyncLockFactory:
        return self._lock

    async def leave(self) -> None:
        """Remove this consumer from the group if it holds no pending entry (clean exit), and
        close its channel."""
        try:
            consumers: Any = await self.redis.xinfo_consumers(self.keys.stream, self.keys.group)
            for consumer in consumers:
                if consumer["name"] == self.name and int(consumer["pending"]) == 0:
                    await self.redis.xgroup_delconsumer(
                        self.keys.stream, self.keys.group, self.name
                    )
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the consumer's own connection (the queue's client closes the pool's)."""
        await self.channel.aclose()
