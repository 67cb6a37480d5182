"""What every request to the HTTP API passes before a route sees it (an ASGI middleware).

In this order, for every route present and future (a new `/v1` route inherits all of it):

1. `Host` must name this service: a loopback name, `API_HOST`, or one of `API_ALLOWED_HOSTS`
   (421 otherwise). A page on another site that rebinds its DNS name to 127.0.0.1 reaches the
   port with its own name in `Host`, so it cannot read the API. The probes (`/healthz`,
   `/readyz`, `/metrics`) answer any `Host`, as load balancers and scrapers expect; they are
   open without a key anyway.
2. A state-changing method (anything but GET, HEAD, OPTIONS) from a browser must come from the
   page's own origin: an `Origin` whose host and port differ from `Host` (or `null`), or
   `Sec-Fetch-Site: cross-site`, is refused with 403. Clients that are not browsers send
   neither and pass.
3. `/v1/*` and the status page need `Authorization: Bearer <INGESTION_API_KEY>` when a key is
   set (compared in constant time), else 401. Without a key the status page is served only
   when the API listens on loopback (403 otherwise): it shows every user's state.
4. POST, PUT and PATCH need `Content-Type: application/json` (415 otherwise, an empty body
   too: a cross-site form or `no-cors` fetch can send neither JSON nor an empty JSON request),
   and a body of at most `API_MAX_BODY_BYTES` (413), read before the route runs.
5. Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
   only, no inline script, `frame-ancestors 'none'`), `Referrer-Policy: no-referrer`,
   `X-Content-Type-Options: nosniff` and `X-Frame-Options: DENY`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from ingestion.config import Settings
from ingestion.push import is_self_authenticated

__all__ = ["SECURITY_HEADERS", "RequestGuard"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Renders the login page of the status page (status 401) when the key is missing or wrong.
LoginPage = Callable[[], str]

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)

#: Routes that answer whatever `Host` says (health checks, scrapers); they hold no user data.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _host_name(host: str) -> tuple[str, str | None]:
    """`Host` header value → (lower-case name, port or None); IPv6 literals keep brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest.removeprefix(":") or None
    name, _, port = host.partition(":")
    return name.rstrip("."), port or None


def _host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """`name` is one of `allowed`, or under a `*.domain` pattern of it."""
    return any(
        name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:]))
        for pattern in allowed
    )


def _same_origin(origin: str, host: str) -> bool:
    """Does `Origin` name the host and port the request was sent to?

    A port left out on either side is the default of the origin's scheme, so a page served as
    `https://name` through a TLS-terminating proxy (which forwards `Host: name`) matches.
    """
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    default = 443 if parts.scheme == "https" else 80
    try:
        origin_port = parts.port or default
    except ValueError:
        return False
    name, port = _host_name(host)
    if port is not None and not port.isdigit():
        return False
    host_port = int(port) if port else default
    return _host_name(parts.netloc)[0] == name and origin_port == host_port


class RequestGuard:
    """The checks above around one Starlette app; `login_page` renders the status page's
    sign-in form (no data) for a browser that has not given the key yet."""

    def __init__(self, app: ASGIApp, settings: Settings, login_page: LoginPage) -> None:
        self.app = app
        key = settings.ingestion_api_key
        self._key = key.get_secret_value().encode() if key else None
        self._allowed_hosts = settings.api_host_names
        self._page_open = self._key is not None or settings.api_is_loopback
        self._max_body = settings.api_max_body_bytes
        self._login_page = login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            status, answer, content_type, headers = refusal
            await _answer(send_with_headers, status, answer, content_type, headers)
            return
        if scope["method"] in BODY_METHODS:
            body = await self._read_body(scope, receive)
            if body is None:
                await _answer(
                    send_with_headers,
                    413,
                    _json_error(f"the request body is larger than {self._max_body} bytes"),
                )
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send_with_headers)

    # --- the checks ---------------------------------------------------------------------------
    def _refusal(self, scope: Scope) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]] | None:
        headers = _headers(scope)
        path: str = scope["path"]
        method: str = scope["method"]
        host = headers.get("host", "")
        if path not in PROBES:
            name, _ = _host_name(host)
            if not name or not _host_allowed(name, self._allowed_hosts):
                return _problem(
                    421,
                    "this service does not answer to that Host name: add it to "
                    "API_ALLOWED_HOSTS if it is yours",
                )
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            if (origin is not None and not _same_origin(origin, host)) or headers.get(
                "sec-fetch-site"
            ) == "cross-site":
                return _problem(403, "cross-origin requests may not change anything here")
        page = path == "/"
        # Push routes (`ingestion.push`) authenticate each delivery by its sender's own
        # signature (OIDC token, channel token, webhook HMAC), never by the API key, and take
        # what their senders post (Calendar's notifications have no body at all).
        pushed = is_self_authenticated(path)
        if not pushed and (page or path == "/v1" or path.startswith("/v1/")):
            if self._key is not None and not self._authorized(headers):
                www = [(b"www-authenticate", b"Bearer")]
                if page:
                    return 401, self._login_page().encode(), b"text/html; charset=utf-8", www
                status, answer, json_type, _ = _problem(
                    401, "missing or wrong API key (Authorization: Bearer …)"
                )
                return status, answer, json_type, www
            if page and not self._page_open:
                return _problem(
                    403,
                    "the status page shows every user's state: set INGESTION_API_KEY to "
                    "serve it on a non-loopback API_HOST",
                )
        if method in BODY_METHODS and not pushed:
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return _problem(415, "send the body as JSON (Content-Type: application/json)")
        return None

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self._key is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._key)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (Content-Length or bytes read)."""
        declared = _headers(scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers (latin-1, as HTTP/1.1 defines them); the first of repeats wins."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _json_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _problem(status: int, message: str) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    return status, _json_error(message), b"application/json", []


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits for disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
