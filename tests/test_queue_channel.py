"""A consumer's own connection (`ingestion.queue.channel.Channel`): calls made together share a
round trip and each gets its own reply, in order; one call's error is its own; a lost
connection fails the round trip under way and the next call reconnects; a caller that gives up
never shifts another caller's reply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError

from ingestion.config import Settings
from ingestion.queue import RedisJobQueue
from ingestion.queue import channel as channel_module
from ingestion.queue.channel import Channel
from ingestion.queue.connection import redis_client
from ingestion.queue.jobs import Job


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = redis_client(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def channel(redis: Redis) -> AsyncIterator[Channel]:
    channel = Channel(redis)
    try:
        yield channel
    finally:
        await channel.aclose()


async def test_calls_made_together_each_get_their_own_reply_in_order(
    channel: Channel, namespace: str
) -> None:
    counter = f"{namespace}:counter"
    replies = await asyncio.gather(*(channel.command("INCR", counter) for _ in range(50)))
    assert replies == list(range(1, 51))
    assert channel.direct  # the installed redis-py exposes the stream the fast path reads
    echoes = await asyncio.gather(*(channel.command("ECHO", f"é-{i}") for i in range(20)))
    assert echoes == [f"é-{i}" for i in range(20)]  # decoded as the client's pool decodes


async def test_one_calls_error_is_its_own(channel: Channel, namespace: str) -> None:
    text = f"{namespace}:text"
    await channel.command("SET", text, "not a number")
    results = await asyncio.gather(
        channel.command("INCR", f"{namespace}:n"),
        channel.command("INCR", text),
        channel.command("INCR", f"{namespace}:n"),
        return_exceptions=True,
    )
    assert results[0] == 1
    assert results[2] == 2
    assert isinstance(results[1], ResponseError)
    assert "not an integer" in str(results[1])


async def test_a_script_redis_does_not_have_yet_runs_once(
    redis: Redis, channel: Channel, namespace: str
) -> None:
    script = redis.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")
    counter = f"{namespace}:scripted"
    assert await asyncio.gather(*(channel.script(script, [counter], []) for _ in range(3))) == [
        1,
        2,
        3,
    ]
    assert await channel.script(script, [counter], []) == 4  # loaded by now: by SHA


async def test_a_killed_connection_fails_the_call_under_way_and_the_next_reconnects(
    redis: Redis, channel: Channel, namespace: str
) -> None:
    first_id = await channel.command("CLIENT", "ID")
    blocked = asyncio.create_task(channel.command("BLPOP", f"{namespace}:never", 5))
    await asyncio.sleep(0.1)
    assert await redis.execute_command("CLIENT", "KILL", "ID", first_id) == 1
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(blocked, timeout=3)
    second_id = await channel.command("CLIENT", "ID")
    assert second_id != first_id
    assert await channel.command("ECHO", "after") == "after"


async def test_a_caller_that_gives_up_never_shifts_another_callers_reply(
    channel: Channel, namespace: str
) -> None:
    slow = asyncio.create_task(channel.command("BLPOP", f"{namespace}:empty", 0.3))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # The cancelled call's reply (a nil after 0.3 s) is still read off the connection: the
    # next call gets its own reply, not that one.
    assert await channel.command("ECHO", "mine") == "mine"
    assert await channel.command("INCR", f"{namespace}:c") == 1


async def test_without_the_stream_redis_py_reads_each_reply(
    monkeypatch: pytest.MonkeyPatch, channel: Channel, namespace: str
) -> None:
    """A redis-py that kept no stream attribute: the channel still works, through the
    connection's own reads (slower), errors included."""
    monkeypatch.setattr(channel_module, "_stream_of", lambda connection: None)
    await channel.command("SET", f"{namespace}:t", "x")
    results = await asyncio.gather(
        channel.command("ECHO", "a"),
        channel.command("INCR", f"{namespace}:t"),
        channel.command("ECHO", "b"),
        return_exceptions=True,
    )
    assert not channel.direct
    assert results[0] == "a"
    assert results[2] == "b"
    assert isinstance(results[1], ResponseError)


async def test_close_then_use_opens_a_new_connection(channel: Channel) -> None:
    first_id = await channel.command("CLIENT", "ID")
    await channel.aclose()
    assert await channel.command("CLIENT", "ID") != first_id


async def test_resp3_replies_a_false_included(redis_url: str, namespace: str) -> None:
    """A URL asking for RESP3 (`?protocol=3`): replies come as RESP3 types, a boolean false
    among them, which is a reply like any other and not 'nothing read yet'."""
    client = redis_client(f"{redis_url}?protocol=3", decode_responses=True)
    channel = Channel(client)
    try:
        falsy = "redis.setresp(3); return false"
        replies = await asyncio.wait_for(
            asyncio.gather(channel.command("EVAL", falsy, 0), channel.command("ECHO", "next")),
            timeout=5,
        )
        assert replies == [False, "next"]
        assert await channel.command("HELLO") is not None
        assert (await channel.command("HELLO"))["proto"] == 3
    finally:
        await channel.aclose()
        await client.aclose()


async def test_a_consumer_reads_jobs_over_resp3(redis_url: str, namespace: str) -> None:
    """XREADGROUP answers a map under RESP3 (an array of pairs under RESP2): the consumer reads
    jobs either way."""
    settings = Settings(redis_url=f"{redis_url}?protocol=3", redis_namespace=namespace)
    queue = RedisJobQueue(settings)
    try:
        consumer = queue.consumer()
        await consumer.start()
        await queue.enqueue(Job("github", "resp3-user"))
        [delivery] = await consumer.fetch(4, 1.0)
        assert delivery.job is not None
        assert delivery.job.user_id == "resp3-user"
        started = await consumer.begin(delivery, delivery.job)
        await consumer.complete(delivery)
        assert started.user_id == "resp3-user"
        assert (await queue.stats())["pending"] == 0
    finally:
        await queue.aclose()
