"""`ingestion connect`: the OAuth authorization-code flow for a person at a terminal.

1. A one-shot HTTP listener opens on `127.0.0.1:PORT` (any free port unless given) and the
   redirect URI is `http://127.0.0.1:PORT/callback`; or, with a fixed redirect URI
   (`OAUTH_REDIRECT_URI` / `--redirect-uri`), on that URI's loopback host, port and path. Any
   loopback port works only for Google Desktop-app clients and GitHub; a Google
   Web-application client and X need the exact URI registered for the app.
2. The consent URL (built with Authlib's RFC 6749 / RFC 7636 helpers: `state`, a PKCE S256
   challenge where the provider takes one, the provider's read scopes and extra parameters such
   as Google's `access_type=offline&prompt=consent`) is announced, and opened in a browser
   when asked.
3. The redirect brings `code` and `state`. A request whose `state` is not this sign-in's is
   answered 400 and ignored (a forged or stale redirect cannot end the flow); the flow keeps
   waiting until its timeout. Only a matching `state` ends it, with its `error` or `code`.
4. The code is exchanged (Authlib prepares the request with the PKCE verifier; it is sent with
   the provider's client authentication by `token_endpoint`, like a refresh); the tokens are
   stored in the `"account"` row, creating the user row when
   needed. Storing new tokens changes the account's fingerprint, which is what lets the
   scheduler sync an account again after `reauth_required`.

Tokens and the client secret are never printed or logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ingestion.clock import Clock, SystemClock
from ingestion.config import Settings, parse_loopback_redirect
from ingestion.errors import PermanentError, RetryableError
from ingestion.providers.base import OAuthEndpoints
from ingestion.providers.registry import account_provider_of, auth_for
from ingestion.storage.accounts import save_account
from ingestion.storage.db import Database
from ingestion.storage.encryption import TokenCipher
from ingestion.token_endpoint import (
    DeadGrant,
    TokenGrant,
    TransientTokenError,
    client_credentials,
    post_token_request,
)

__all__ = ["CallbackListener", "ConnectResult", "connect_account"]

CALLBACK_PATH = "/callback"
_PAGE = (
    "<!doctype html><meta charset=utf-8><title>ingestion</title>"
    "<p>{message}</p><p>You can close this window and return to the terminal.</p>"
)


@dataclass(frozen=True)
class ConnectResult:
    """What was stored (no tokens)."""

    account_provider: str
    account_id: str
    scope: str | None
    has_refresh_token: bool
    expires_at: datetime | None


class CallbackListener:
    """A loopback HTTP server that waits for the request to `/callback` carrying `state`."""

    def __init__(self, state: str, fixed_uri: str | None = None, path: str = CALLBACK_PATH) -> None:
        self.port = 0
        self.path = path
        self._fixed_uri = fixed_uri
        self._state = state
        self._server: asyncio.Server | None = None
        self._result: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    @classmethod
    async def start(
        cls, state: str, port: int = 0, host: str = "127.0.0.1", *, redirect_uri: str | None = None
    ) -> CallbackListener:
        """Listen on `host:port`, or on the loopback host, port and path of `redirect_uri`."""
        path = CALLBACK_PATH
        if redirect_uri is not None:
            host, port, path = parse_loopback_redirect(redirect_uri)
        listener = cls(state, redirect_uri, path)
        try:
            listener._server = await asyncio.start_server(listener._handle, host, port)
        except OSError as exc:
            raise PermanentError(
                f"cannot listen on {host}:{port} for the OAuth redirect: {exc.strerror}"
            ) from None
        listener.port = listener._server.sockets[0].getsockname()[1]
        return listener

    @property
    def redirect_uri(self) -> str:
        return self._fixed_uri or f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    async def wait(self, timeout: float) -> dict[str, str]:
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), timeout)
        except TimeoutError:
            raise PermanentError(
                f"no authorization arrived within {timeout:g}s at {self.redirect_uri}; if the "
                "browser showed redirect_uri_mismatch, register this URI exactly in the OAuth "
                "app or set OAUTH_REDIRECT_URI (--redirect-uri) to one it has registered; "
                "then run `ingestion connect` again"
            ) from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1")
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.split()
            target = urlsplit(parts[1]) if len(parts) >= 2 else None
            if target is None or parts[0] != "GET" or target.path != self.path:
                self._respond(writer, 404, "Not found.")
            elif self._result.done():
                self._respond(writer, 409, "This sign-in was already completed.")
            else:
                params = dict(parse_qsl(target.query))
                if not hmac.compare_digest(params.get("state", "").encode(), self._state.encode()):
                    self._respond(
                        writer, 400, "This redirect does not belong to the running sign-in."
                    )
                    await writer.drain()
                    return
                ok = "code" in params and "error" not in params
                message = "Authorization received." if ok else "Authorization was not granted."
                self._respond(writer, 200, message)
                self._result.set_result(params)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _respond(writer: asyncio.StreamWriter, status: int, message: str) -> None:
        body = _PAGE.format(message=message).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )


def _account_id_from(id_token: str | None) -> str | None:
    """The OpenID subject of an ID token the token endpoint returned to us directly over TLS
    (OpenID Connect Core §3.1.3.7 lets a client skip signature checks in that case)."""
    if not id_token or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return str(sub) if sub else None


async def connect_account(
    settings: Settings,
    db: Database,
    http: httpx.AsyncClient,
    *,
    provider: str,
    user_id: str,
    port: int = 0,
    redirect_uri: str | None = None,
    open_browser: bool = True,
    timeout: float = 300.0,
    announce: Callable[[str], None] = print,
    clock: Clock | None = None,
) -> ConnectResult:
    """Run the flow for `provider` (gmail | calendar | github | twitter) and store the tokens.

    `redirect_uri` (else `OAUTH_REDIRECT_URI`) fixes the redirect URI; `port` is then unused.

    Raises `ConfigurationError` without a client id, `PermanentError` when consent is refused,
    the state does not match, no redirect arrives in `timeout` seconds or the token endpoint
    refuses the code, `RetryableError` when the token endpoint fails or cannot be reached.
    """
    clock = clock or SystemClock()
    account_provider = account_provider_of(provider)
    endpoints = auth_for(account_provider)
    client_id, _ = client_credentials(settings, endpoints)
    state = generate_token(32)
    fixed = redirect_uri or settings.oauth_redirect_uri
    listener = await CallbackListener.start(state, port, redirect_uri=fixed)
    try:
        verifier = generate_token(64) if endpoints.pkce else None
        pkce = (
            {
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
            }
            if verifier
            else {}
        )
        url = prepare_grant_uri(
            str(getattr(settings, endpoints.auth_url_setting)),
            client_id=client_id,
            response_type="code",
            redirect_uri=listener.redirect_uri,
            scope=" ".join(endpoints.scopes),
            state=state,
            **pkce,
            **dict(endpoints.extra_authorize_params),
        )
        announce(url)
        if open_browser:
            await asyncio.to_thread(webbrowser.open, url)
        params = await listener.wait(timeout)
    finally:
        await listener.close()
    if params.get("error"):
        detail = params.get("error_description") or params["error"]
        raise PermanentError(f"{account_provider} authorization was not granted: {detail}")
    if not params.get("code"):
        raise PermanentError("the redirect carried no authorization code")
    form = dict(
        parse_qsl(
            prepare_token_request(
                "authorization_code",
                code=params["code"],
                redirect_uri=listener.redirect_uri,
                code_verifier=verifier,
            )
        )
    )
    grant = await _exchange(http, settings, endpoints, form, clock)
    async with db.session() as session:
        account = await save_account(
            session,
            user_id=user_id,
            provider_id=account_provider,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            expires_at=grant.expires_at,
            refresh_token_expires_at=grant.refresh_token_expires_at,
            scope=grant.scope or " ".join(endpoints.scopes),
            account_id=_account_id_from(grant.id_token),
            cipher=TokenCipher.from_settings(settings),
        )
        return ConnectResult(
            account_provider=account_provider,
            account_id=account.account_id,
            scope=account.scope,
            has_refresh_token=bool(account.refresh_token),
            expires_at=account.access_token_expires_at,
        )


async def _exchange(
    http: httpx.AsyncClient,
    settings: Settings,
    endpoints: OAuthEndpoints,
    form: dict[str, str],
    clock: Clock,
) -> TokenGrant:
    """Trade the code for tokens (one try: a code is single-use)."""
    name = endpoints.account_provider
    try:
        return await post_token_request(http, settings, endpoints, form, clock.now())
    except DeadGrant as refused:
        raise PermanentError(
            f"the {name} token endpoint refused the authorization code ({refused}); "
            "run `ingestion connect` again"
        ) from None
    except TransientTokenError as exc:
        raise RetryableError(
            f"the {name} token endpoint failed ({exc}); run `ingestion connect` again later"
        ) from None
