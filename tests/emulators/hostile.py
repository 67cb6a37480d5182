"""A hostile HTTP server for transport tests: what a compromised, broken or malicious API (or a
proxy in front of it) can send. None of this is a provider's documented behaviour; each answer is
built from the wire format it abuses, named beside it.

`hostile_app()` answers on its own routes; `Recorder` is an ASGI app that only records who called
it (the "other origin" a leaked token would reach); `rewrite_links(app, origin)` wraps an
emulator so its `Link` headers point at another origin.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["Recorder", "gzip_bomb", "hostile_app", "rewrite_links"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_MB = 1024 * 1024


def gzip_bomb(megabytes: int) -> bytes:
    """`megabytes` MiB of zeros as one gzip member (RFC 1952; the `gzip` coding of RFC 9110
    §8.4.1.3): about 1/1000 of its inflated size on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(_MB)
    parts = [compressor.compress(block) for _ in range(megabytes)]
    parts.append(compressor.flush())
    return b"".join(parts)


def hostile_app(*, bomb_megabytes: int = 100) -> Starlette:
    bomb = gzip_bomb(bomb_megabytes)

    async def gzip_bomb_route(request: Request) -> Response:
        # Content-Encoding: gzip (RFC 9110 §8.4) over a body that inflates ~1000-fold.
        return Response(
            bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def brotli_unasked(request: Request) -> Response:
        # Content-Encoding: br (RFC 7932) although the request never offered it.
        return Response(
            b"\x1b\xff\xff" * 1000,
            headers={"Content-Encoding": "br", "Content-Type": "application/json"},
        )

    async def big_stream(request: Request) -> Response:
        # A chunked body (RFC 9112 §7.1) with no Content-Length, larger than any cap set.
        megabytes = int(request.query_params.get("mb", "3"))

        async def chunks() -> Any:
            yield b"["
            for i in range(megabytes * 16):
                yield (b'"' + b"x" * (64 * 1024 - 4) + b'",') if i else b'"x",'
            yield b'"end"]'

        return StreamingResponse(chunks(), media_type="application/json")

    async def deep_json(request: Request) -> Response:
        # Valid JSON (RFC 8259 sets no nesting limit) nested `depth` levels.
        depth = int(request.query_params.get("depth", "1000"))
        return Response(b"[" * depth + b"]" * depth, media_type="application/json")

    async def set_cookie(request: Request) -> Response:
        # Set-Cookie (RFC 6265 §4.1), as any API front end may send.
        response = JSONResponse({"ok": True})
        response.set_cookie("session", "user-a-secret", path="/")
        return response

    async def later(request: Request) -> Response:
        # 429 with Retry-After (RFC 9110 §10.2.3) set to whatever the test asks, valid or not.
        return JSONResponse(
            {"error": "slow down"},
            status_code=429,
            headers={"Retry-After": request.query_params.get("after", "inf")},
        )

    async def echo(request: Request) -> Response:
        return JSONResponse(
            {
                "cookie": request.headers.get("cookie"),
                "authorization": request.headers.get("authorization"),
            }
        )

    async def gmail_batch_with_deep_part(request: Request) -> Response:
        # A Gmail batch answer (multipart/mixed, one application/http part per call, as
        # https://developers.google.com/gmail/api/guides/batch shows) whose second part is
        # JSON nested 1,000 deep.
        boundary = "batch_hostile"
        good = b'{"id": "m0", "threadId": "t0", "labelIds": [], "payload": {"headers": []}}'
        deep = b"[" * 1000 + b"]" * 1000
        parts = []
        for index, body in enumerate((good, deep)):
            parts.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: <response-item-{index}>\r\n\r\n"
                "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode()
                + body
                + b"\r\n"
            )
        content = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return Response(content, media_type=f"multipart/mixed; boundary={boundary}")

    return Starlette(
        routes=[
            Route("/bomb/gzip", gzip_bomb_route, methods=["GET", "POST"]),
            Route("/bomb/br", brotli_unasked),
            Route("/big", big_stream),
            Route("/deep", deep_json),
            Route("/set-cookie", set_cookie),
            Route("/echo", echo),
            Route("/later", later, methods=["GET", "POST"]),
            Route("/batch/gmail/v1", gmail_batch_with_deep_part, methods=["POST"]),
        ]
    )


class Recorder:
    """An ASGI app that answers 200 `[]` and records every request's path and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append((scope["path"], headers))
        await JSONResponse([])(scope, receive, send)


def rewrite_links(app: Any, origin: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """`app` with every `Link` header (RFC 8288) pointing at `origin` instead of its own: a
    hijacked API answer handing back a URL on another host."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_rewritten(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", []):
                    if name.lower() == b"link":
                        text = value.decode("latin-1")
                        start = text.index("<") + 1
                        path_at = text.index("/", text.index("//", start) + 2)
                        value = (text[:start] + origin + text[path_at:]).encode("latin-1")
                    headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_rewritten)

    return wrapped
