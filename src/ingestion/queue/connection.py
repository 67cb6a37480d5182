"""The process's Redis client: redis-py asyncio, commands packed by hiredis's C packer.

redis-py's synchronous client packs commands with hiredis when it is installed
(`redis.connection.HiredisRespSerializer`); its asyncio connection always packs them in Python
(`Connection.pack_command`: one `encode` and several `bytes.join` per argument). A worker
sends two script calls of up to fifteen arguments per job, and that packing was the largest
item of its profile (bench/results/queue.md). The connection class of every pool is given the
same C packer the synchronous client uses; the wire bytes are identical.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError

__all__ = ["redis_client"]


def _pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
    """`HiredisRespSerializer.pack` of redis-py: a command name holding spaces is split into
    its words, buffers become bytes, the rest is hiredis's `pack_command`."""
    if isinstance(args[0], float):  # redis-py's own packer refuses it too
        raise DataError("a command name cannot be a float")
    if isinstance(args[0], str):
        args = (*args[0].encode().split(), *args[1:])
    elif b" " in args[0]:
        args = (*args[0].split(), *args[1:])
    args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
    try:
        return [hiredis.pack_command(args)]
    except TypeError as exc:
        raise DataError(str(exc)) from exc


_FAST: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _fast_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` (TCP, TLS or Unix socket, as the URL chose) with the C packer."""
    if connection_class not in _FAST:
        _FAST[connection_class] = type(
            f"Hiredis{connection_class.__name__}",
            (connection_class,),
            {"pack_command": _pack_command},
        )
    return _FAST[connection_class]


def redis_client(url: str, **options: Any) -> Redis:
    """`Redis.from_url(url, **options)` whose connections pack commands with hiredis."""
    client = Redis.from_url(url, **options)
    pool = client.connection_pool
    pool.connection_class = _fast_packing(pool.connection_class)
    return client
