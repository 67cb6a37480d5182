"""The queue's Redis connections pack commands with hiredis's C packer: byte for byte what
redis-py's own Python packer sends, for every kind of argument the service passes."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from ingestion.queue.connection import redis_client

ARGUMENTS: list[tuple[object, ...]] = [
    ("EVALSHA", "a" * 40, 3, "ns:running:gmail:u1", "ns:widen:gmail:u1", "ns:lock", "job", 600),
    ("SET", "k", "välue ✓ 𝄞", "PX", 30000, "NX"),
    ("SET", b"k", b"\x00\xff raw bytes", "EX", 1.5),
    ("XADD", "s", "*", "payload", '{"userId":"u"}', "attempt", "1"),
    ("SCRIPT LOAD", "return 1"),  # a command name of two words
    ("ZADD", "z", 1712345678.125, "member"),
    ("SET", "k", memoryview(b"view"), "GET"),
    ("SET", "k", bytearray(b"array")),
    ("DEL", "", "x" * 100_000),  # an empty and a large argument
]


@pytest.mark.parametrize("args", ARGUMENTS)
def test_hiredis_packing_is_byte_identical_to_redis_py(args: tuple[object, ...]) -> None:
    client = redis_client("redis://127.0.0.1:6379/0")
    fast = client.connection_pool.connection_class(**client.connection_pool.connection_kwargs)
    plain = Connection(**client.connection_pool.connection_kwargs)
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))
    commands = [args, ("PING",)]
    assert b"".join(fast.pack_commands(commands)) == b"".join(plain.pack_commands(commands))


def test_an_argument_redis_cannot_take_is_refused_as_redis_py_refuses_it() -> None:
    client = redis_client("redis://127.0.0.1:6379/0")
    fast = client.connection_pool.connection_class(**client.connection_pool.connection_kwargs)
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", {"a": 1})
    with pytest.raises(DataError, match="command name"):
        fast.pack_command(1.5, "k")


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_the_url_still_chooses_the_connection_kind(url: str, base: type) -> None:
    client: Redis = redis_client(url)
    assert issubclass(client.connection_pool.connection_class, base)


async def test_commands_round_trip_through_a_real_redis() -> None:
    client = redis_client("redis://127.0.0.1:6379/0", decode_responses=True)
    key = "test-packing:välue"
    try:
        await client.set(key, "välue ✓ 𝄞", px=5000)
        assert await client.get(key) == "välue ✓ 𝄞"
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(key, 1.5).get(key).delete(key)
            assert await pipe.execute() == [True, "1.5", 1]
    finally:
        await client.aclose()
