"""The HTTP transport of the shared client: every answer from a provider API, a token endpoint or
the memory engine is read here, with bounds, before anyone looks at it.

`BoundedTransport` promises, for each response:

- the body is read streamed and decoded here (`gzip`, `deflate`; the only codings asked for)
  with at most `HTTP_MAX_RESPONSE_BYTES` of output: a larger body, or a compression bomb, stops
  at the cap with `ResponseRejected` (a `PermanentError`: that page or item fails clearly) and
  never more than the cap is held in memory; a coding that was not asked for (`br`, `zstd`) is
  refused the same way rather than inflated unbounded;
- a JSON answer (a `…json` content type, or a body opening with `[` or `{`) nested deeper than
  `MAX_JSON_DEPTH` is refused with `ResponseRejected`, never a `RecursionError` later (large
  bodies are checked off the loop);
- `Set-Cookie` never reaches the client's cookie jar (which also refuses every cookie): the
  client is shared by every user's sync, and a cookie one API sets during user A's request must
  not travel with user B's.

Error messages name the host and path, never the query string nor any header.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from http.cookiejar import CookieJar, DefaultCookiePolicy
from itertools import accumulate
from typing import Any

import httpx

from ingestion.errors import PermanentError

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_JSON_DEPTH",
    "BoundedTransport",
    "ResponseRejected",
    "json_depth",
    "loads_json",
    "no_cookies",
]

#: The codings this transport can decode with a bound on their output.
ACCEPT_ENCODING = "gzip, deflate"
#: Deepest JSON nesting accepted. Gmail nests two levels per MIME level of a message (anyone can
#: send a deeply nested one): 512 keeps about 250 MIME levels readable (Postfix's
#: `mime_nesting_limit` stops at 100 by default), below where Python's parser fails near 1,000.
MAX_JSON_DEPTH = 512
#: Bodies larger than this are checked for depth in a worker thread, off the event loop.
_OFF_LOOP_BYTES = 256 * 1024
_DROPPED_HEADERS = frozenset({"content-encoding", "content-length", "set-cookie", "set-cookie2"})
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)
_KEEP_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_JSON_START = re.compile(rb"\s*[\[{]")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class ResponseRejected(PermanentError):
    """An answer too large, compressed with an unknown coding, or nested too deep to read."""


def no_cookies() -> CookieJar:
    """A cookie jar that stores and sends nothing (for `httpx.AsyncClient(cookies=…)`)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def json_depth(data: bytes) -> int:
    """The nesting depth of arrays and objects in a JSON text, or a bound of it: the result is
    over `MAX_JSON_DEPTH` exactly when the depth is. Linear; the insides of strings are skipped.

    Most answers (a Gmail message: a few dozen brackets around kilobytes of base64) hold fewer
    opening brackets than the bound, strings included: two byte counts prove it, and that
    count is the bound returned (no copy, no scan in Python)."""
    anywhere = data.count(b"[") + data.count(b"{")
    if anywhere <= MAX_JSON_DEPTH:
        return anywhere
    brackets = _STRING.sub(b"", data).translate(None, _KEEP_BRACKETS)
    openers = brackets.count(b"[") + brackets.count(b"{")
    if openers <= MAX_JSON_DEPTH:
        return max(accumulate((_STEP[b] for b in brackets), initial=0))
    deep = next((d for d in accumulate(_STEP[b] for b in brackets) if d > MAX_JSON_DEPTH), None)
    return deep if deep is not None else MAX_JSON_DEPTH


def loads_json(data: bytes, *, what: str) -> Any:
    """Parse JSON of bounded depth; `ResponseRejected` (naming `what`) when it is too deep.

    The standard library's parser: faster ones measured no gain worth having here (a Gmail
    message parses in about 13 µs), and orjson reads integers past 64 bits as floats."""
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ResponseRejected(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(data)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ResponseRejected(f"{what}: JSON nested too deeply to parse") from None


class _Decoder:
    """Bounded decoding of one body: `feed` returns at most `room` bytes of output and whether
    input was left over (the body is then over the cap)."""

    def __init__(self, coding: str) -> None:
        self._inflate: Any = None
        self._raw_deflate_fallback = False
        if coding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif coding == "deflate":
            # RFC 9110 `deflate` is zlib-wrapped; some servers send raw deflate (as httpx allows).
            self._inflate = zlib.decompressobj()
            self._raw_deflate_fallback = True
        elif coding not in ("", "identity"):
            raise ValueError(coding)
        self._pending = b""

    def feed(self, data: bytes, room: int) -> tuple[bytes, bool]:
        if self._inflate is None:
            return data[:room], len(data) > room
        data = self._pending + data
        try:
            out = self._inflate.decompress(data, room)
        except zlib.error as exc:
            if not self._raw_deflate_fallback:
                raise ValueError(f"corrupt compressed body ({exc})") from None
            self._raw_deflate_fallback = False
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.feed(data, room)
        self._raw_deflate_fallback = False
        self._pending = self._inflate.unconsumed_tail
        return out, bool(self._pending)


class BoundedTransport(httpx.AsyncBaseTransport):
    """Wraps the real transport; see the module docstring for what it promises."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, max_bytes: int) -> None:
        self.inner = inner
        self.max_bytes = max_bytes

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING
        response = await self.inner.handle_async_request(request)
        where = f"{request.url.host}{request.url.path}"
        try:
            body = await self._read(response, where)
        finally:
            await response.aclose()
        content_type = response.headers.get("content-type", "").lower()
        # Callers parse JSON whatever the label says: check anything that looks like it.
        if body and ("json" in content_type or _JSON_START.match(body)):
            depth = (
                await asyncio.to_thread(json_depth, body)
                if len(body) > _OFF_LOOP_BYTES
                else json_depth(body)
            )
            if depth > MAX_JSON_DEPTH:
                raise ResponseRejected(
                    f"the answer of {where} is JSON nested deeper than {MAX_JSON_DEPTH} levels"
                )
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _DROPPED_HEADERS
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )

    async def _read(self, response: httpx.Response, where: str) -> bytes:
        limit = self.max_bytes
        too_large = ResponseRejected(
            f"the answer of {where} is larger than HTTP_MAX_RESPONSE_BYTES ({limit} bytes)"
        )
        declared = response.headers.get("content-length", "")
        coding = response.headers.get("content-encoding", "").strip().lower()
        if declared.isdigit() and not coding and int(declared) > limit:
            raise too_large
        try:
            decoder = _Decoder(coding)
        except ValueError:
            raise ResponseRejected(
                f"the answer of {where} uses Content-Encoding {coding[:40]!r}, "
                f"which was not asked for (only {ACCEPT_ENCODING})"
            ) from None
        body = bytearray()
        received = 0
        try:
            async for chunk in response.aiter_raw():
                received += len(chunk)
                out, over = decoder.feed(chunk, limit + 1 - len(body))
                body += out
                if over or len(body) > limit or received > limit:
                    raise too_large
        except ValueError as exc:
            raise ResponseRejected(f"the answer of {where} could not be decoded: {exc}") from None
        return bytes(body)
