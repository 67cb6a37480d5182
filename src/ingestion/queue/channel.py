"""A consumer's own Redis connection for the commands every job makes: start, settle, read.

Every job costs a worker three kinds of round trip: the read that takes it (`XREADGROUP`), the
script that starts it (`BEGIN`) and the script that acknowledges it (`ACK`). Through redis-py's
asyncio client each round trip also pays its layers: a pool checkout and release, a pipeline
object, a timeout context and an observability hook per reply, the stream reader's `read` per
reply. Measured on the 2-core machine of bench/results/queue.md: 264 µs of worker CPU for one
pipeline of four script calls, against 34 µs for the same bytes written and read on the same
connection by hiredis; at a few thousand jobs a second those layers were most of a worker's CPU.

A `Channel` holds one connection opened by redis-py (so the URL's TLS, Unix socket, password,
user, database and protocol apply as everywhere else), packs commands with hiredis and parses
replies with hiredis, as redis-py's own hiredis parser does, without the per-call layers. Calls
that arrive while a round trip is in flight are sent together in the next one (one in flight at
a time, replies in order), so the starts of one read, and the acknowledgements of jobs that end
together, each take one round trip. No library offers this: redis-py's pipeline is the
per-call machinery measured above.

Failure: a connection error, or a task cancelled mid round trip, closes the connection (its
reply stream can no longer be trusted) and fails every call of that round trip with
`ConnectionError`; the next call opens a new connection. The caller cannot know whether a
failed script ran, exactly as with a failed pipeline: callers retry idempotent steps.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, InvalidResponse, NoScriptError, ResponseError

__all__ = ["Channel"]

_READ_SIZE = 65536
#: What the reader answers while a reply is incomplete (not `False`: a RESP3 reply can be).
_INCOMPLETE = object()


class Channel:
    """Pipelined script calls and commands on one held connection (see module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._connection: AbstractConnection | None = None
        self._stream: asyncio.StreamReader | None = None
        self._reader: Any = None  # hiredis.Reader of the current connection
        #: Calls for the next round trip: packed command, the script it runs (if one), reply.
        self._queued: list[tuple[bytes, AsyncScript | None, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run `script` by SHA in the next round trip. Calls of a script Redis does not have
        (it restarted or was flushed) fail without running: the script is loaded and they are
        sent again, in their order, in one more round trip."""
        return await self._call(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    async def command(self, *args: Any) -> Any:
        """Send one command in the next round trip; its reply, or its error raised."""
        return await self._call(args, None)

    async def _call(self, args: tuple[Any, ...], script: AsyncScript | None) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((hiredis.pack_command(args), script, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued())
        reply = await future
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _send_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                replies = await self._round_trip([packed for packed, _, _ in batch])
                missing = [
                    i
                    for i, reply in enumerate(replies)
                    if isinstance(reply, NoScriptError) and batch[i][1] is not None
                ]
                if missing:
                    replies = await self._load_and_resend(batch, replies, missing)
            except BaseException as exc:
                await self._drop()
                error = (
                    exc
                    if isinstance(exc, ConnectionError)
                    else ConnectionError(
                        f"round trip on the worker's job connection failed: {exc!r}"
                    )
                )
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (*_, future), reply in zip(batch, replies, strict=True):
                if not future.done():  # a caller that went away leaves its reply unread
                    future.set_result(reply)

    async def _load_and_resend(
        self,
        batch: list[tuple[bytes, AsyncScript | None, asyncio.Future[Any]]],
        replies: list[Any],
        missing: list[int],
    ) -> list[Any]:
        sources: dict[str, Any] = {}
        for i in missing:
            script = batch[i][1]
            if script is not None:
                sources[script.sha] = script.script
        loads = [hiredis.pack_command(_script_load(source)) for source in sources.values()]
        again = await self._round_trip([*loads, *(batch[i][0] for i in missing)])
        replies = list(replies)
        for i, reply in zip(missing, again[len(loads) :], strict=True):
            replies[i] = reply
        return replies

    async def _round_trip(self, packed: list[bytes]) -> list[Any]:
        connection = await self._connect()
        stream, reader = self._stream, self._reader
        if stream is None or reader is None:  # a redis-py without the stream: its own reads
            await connection.send_packed_command(packed, check_health=False)
            return [await _reply_or_error(connection) for _ in packed]
        writer = connection._writer  # the stream's writer, checked by `_stream_of`
        assert writer is not None
        writer.write(b"".join(packed))
        await writer.drain()
        replies: list[Any] = []
        while len(replies) < len(packed):
            reply = reader.gets()
            if reply is _INCOMPLETE:
                data = await stream.read(_READ_SIZE)
                if not data:
                    raise ConnectionError("Redis closed the worker's job connection")
                reader.feed(data)
                continue
            replies.append(reply)
        return replies

    async def _connect(self) -> AbstractConnection:
        if self._connection is not None:
            return self._connection
        connection: AbstractConnection = self.redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        await connection.connect()  # type: ignore[no-untyped-call]
        stream = _stream_of(connection)
        if stream is not None:
            encoder = connection.encoder
            options: dict[str, Any] = {
                "protocolError": InvalidResponse,
                "replyError": BaseParser.parse_error,
                "notEnoughData": _INCOMPLETE,
            }
            if encoder.decode_responses:
                options["encoding"] = encoder.encoding
                options["errors"] = encoder.encoding_errors
            self._stream, self._reader = stream, hiredis.Reader(**options)
        else:
            self._stream = self._reader = None
        self._connection = connection
        return connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._stream = self._reader = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)

    @property
    def direct(self) -> bool:
        """True while replies are read by the channel's own hiredis reader (the fast path)."""
        return self._reader is not None

    async def aclose(self) -> None:
        """Close the connection once the round trips under way are done (at most 5 s); a later
        call opens a new one."""
        if self._sender is not None and not self._sender.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._sender), timeout=5)
        await self._drop()


def _script_load(source: Any) -> tuple[Any, ...]:
    return ("SCRIPT", "LOAD", source)


def _stream_of(connection: AbstractConnection) -> asyncio.StreamReader | None:
    """The stream redis-py reads `connection` from, when this redis-py keeps one (all versions
    since the asyncio client was added do; tests/test_queue_channel.py pins it)."""
    stream = getattr(connection, "_reader", None)
    writer = getattr(connection, "_writer", None)
    if isinstance(stream, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter):
        return stream
    return None


async def _reply_or_error(connection: AbstractConnection) -> Any:
    try:
        return await connection.read_response()
    except ResponseError as exc:  # one call's error, not the round trip's
        return exc
