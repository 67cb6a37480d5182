"""OAuth authorization and token endpoints of Google, GitHub and X, as faithful as tests need.

Routes (mount the settings on them: `OAuthState.settings_env(url)` gives the variables):

- `GET  /google/auth`, `POST /google/token`
- `GET  /github/login/oauth/authorize`, `POST /github/login/oauth/access_token`
- `GET  /twitter/i/oauth2/authorize`, `POST /twitter/2/oauth2/token`

Token endpoints behave like the real ones (see /work/shared/providers.md):

- Google: form POST, client id and secret in the body; a refresh returns a new access token and
  NO refresh token (the old one stays valid); a revoked/unknown one answers
  400 `{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}`;
  a wrong app answers 401 `invalid_client` or 400 `invalid_request`; a code exchanged with
  another redirect URI answers 400 `redirect_uri_mismatch`. The client is a Desktop app (any
  loopback redirect port) or, with `google_client_type = "web"`, a Web application that takes
  only its registered `google_redirect_uris`: any other gets Google's error page, no redirect.
- GitHub: form POST with id and secret; JSON only with `Accept: application/json` (else
  form-encoded); expiring tokens ROTATE: the old refresh token and the old access token stop
  working; a spent one answers **200** `{"error": "bad_refresh_token", ...}`.
- X: confidential clients must use HTTP Basic, public clients send `client_id`; refresh tokens are
  single-use and ROTATE; a spent one answers 400 `{"error": "invalid_request",
  "error_description": "Value passed for the token was invalid."}`.

The authorization endpoints implement scripted consent: `consent_user` is the person who logs
in and `consent_decision` is "approve" or "deny"; they answer 302 to the `redirect_uri` with
`code` and `state` (or `error=access_denied`). Codes are single-use and check PKCE (S256).

Scripting: `issue(provider, user)` seeds a grant (for `accounts add`), `revoke`, `fail_next`
(e.g. 503 twice), `lose_next_answer` (rotate, then never answer: the client times out),
`delay` (widen race windows), `hold_refreshes` / `open_gate` (keep a refresh in flight while
a test watches the others wait), `on_token(new_access, old_access)` to link a provider emulator,
and `calls` / `token_calls(provider)` to count what was asked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["Grant", "OAuthState", "create_app"]

PROVIDERS = ("google", "github", "twitter")
EXPIRES_IN = {"google": 3599, "github": 28800, "twitter": 7200}
TOKEN_PREFIX = {"google": ("ya29.", "1//"), "github": ("ghu_", "ghr_"), "twitter": ("xat_", "xrt_")}
GITHUB_ERROR_URI = (
    "https://docs.github.com/apps/managing-oauth-apps/"
    "troubleshooting-oauth-app-access-token-request-errors"
)


@dataclass
class Grant:
    """One live authorization: the current access token and refresh token of a user."""

    provider: str
    user: str
    scope: str
    access_token: str
    refresh_token: str | None


@dataclass
class _Fault:
    status: int
    body: Any
    headers: dict[str, str]
    times: int


@dataclass
class _Code:
    provider: str
    user: str
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str | None
    method: str | None
    params: dict[str, str]


@dataclass
class OAuthState:
    """Inspectable, scriptable state of the emulated authorization servers."""

    #: provider -> (client_id, client_secret or None for a public client)
    clients: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: {
            "google": ("google-client", "google-secret"),
            "github": ("github-client", "github-secret"),
            "twitter": ("twitter-client", "twitter-secret"),
        }
    )
    #: GitHub OAuth App tokens that never expire (no refresh token) instead of expiring ones.
    github_classic_tokens: bool = False
    #: "desktop" (any loopback redirect port) or "web" (only `google_redirect_uris`).
    google_client_type: str = "desktop"
    google_redirect_uris: set[str] = field(default_factory=set)
    consent_user: str = "person"
    consent_decision: str = "approve"
    #: Seconds every token request waits before answering (widens race windows).
    delay: float = 0.0
    on_token: Callable[[str, str | None], None] | None = None
    #: (provider, grant_type) -> requests received (including failed and faulted ones).
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Query parameters of every authorization request, for assertions.
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    grants: dict[str, Grant] = field(default_factory=dict)  # refresh token -> grant
    access_tokens: dict[str, Grant] = field(default_factory=dict)
    spent: set[str] = field(default_factory=set)
    _faults: dict[str, list[_Fault]] = field(default_factory=dict)
    _lose: dict[str, int] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _released: threading.Event = field(default_factory=threading.Event)
    _gate: threading.Event | None = None
    #: Refresh requests currently held at the gate.
    held: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- scripting ---------------------------------------------------------------------------

    def settings_env(self, url: str, providers: tuple[str, ...] = PROVIDERS) -> dict[str, str]:
        """Environment variables pointing the service at this emulator (with client ids)."""
        env: dict[str, str] = {}
        paths = {
            "google": ("/google/auth", "/google/token"),
            "github": ("/github/login/oauth/authorize", "/github/login/oauth/access_token"),
            "twitter": ("/twitter/i/oauth2/authorize", "/twitter/2/oauth2/token"),
        }
        for provider in providers:
            auth, token = paths[provider]
            client_id, secret = self.clients[provider]
            prefix = provider.upper()
            env[f"{prefix}_AUTH_URL"] = url + auth
            env[f"{prefix}_TOKEN_URL"] = url + token
            env[f"{prefix}_CLIENT_ID"] = client_id
            if secret:
                env[f"{prefix}_CLIENT_SECRET"] = secret
        return env

    def issue(self, provider: str, user: str, scope: str = "") -> Grant:
        """Create a live grant (as if the user had consented); returns its tokens."""
        with self._lock:
            return self._new_grant(provider, user, scope, refresh=True)

    def revoke(self, refresh_token: str) -> None:
        """The user revoked the app: the refresh token (and its access token) stop working."""
        with self._lock:
            grant = self.grants.pop(refresh_token, None)
            if grant is not None:
                self.access_tokens.pop(grant.access_token, None)
            self.spent.add(refresh_token)

    def fail_next(
        self,
        provider: str,
        status: int,
        *,
        times: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next `times` token requests of `provider` answer `status` (and do nothing)."""
        with self._lock:
            self._faults.setdefault(provider, []).append(
                _Fault(status, body, dict(headers or {}), times)
            )

    def lose_next_answer(self, provider: str, times: int = 1) -> None:
        """The next `times` refreshes rotate the tokens, then never answer (the client times
        out): the new refresh token is lost to the client, the old one is spent."""
        with self._lock:
            self._lose[provider] = self._lose.get(provider, 0) + times

    def hold_refreshes(self) -> None:
        """Refresh requests wait (before doing anything) until `open_gate()`."""
        self._gate = threading.Event()

    def open_gate(self) -> None:
        if self._gate is not None:
            self._gate.set()

    def release(self) -> None:
        """Let held requests finish (call before stopping the server)."""
        self._released.set()
        self.open_gate()

    def token_calls(self, provider: str, grant_type: str = "refresh_token") -> int:
        return self.calls[(provider, grant_type)]

    # --- internals -----------------------------------------------------------------------------

    def _new_grant(self, provider: str, user: str, scope: str, *, refresh: bool) -> Grant:
        access_prefix, refresh_prefix = TOKEN_PREFIX[provider]
        grant = Grant(
            provider=provider,
            user=user,
            scope=scope,
            access_token=access_prefix + secrets.token_urlsafe(24),
            refresh_token=refresh_prefix + secrets.token_urlsafe(24) if refresh else None,
        )
        self.access_tokens[grant.access_token] = grant
        if grant.refresh_token:
            self.grants[grant.refresh_token] = grant
        return grant

    def _rotate(self, grant: Grant) -> tuple[Grant, str]:
        """Issue a new access token (and, where the provider rotates, a new refresh token)."""
        old_access = grant.access_token
        access_prefix, refresh_prefix = TOKEN_PREFIX[grant.provider]
        grant.access_token = access_prefix + secrets.token_urlsafe(24)
        self.access_tokens[grant.access_token] = grant
        if grant.provider in ("github", "twitter"):
            # Rotation: the old refresh token is spent, and (GitHub) the old access token dies.
            assert grant.refresh_token is not None
            self.grants.pop(grant.refresh_token, None)
            self.spent.add(grant.refresh_token)
            grant.refresh_token = refresh_prefix + secrets.token_urlsafe(24)
            self.grants[grant.refresh_token] = grant
            self.access_tokens.pop(old_access, None)
        return grant, old_access


def _id_token(user: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"iss": "https://accounts.google.com", "sub": f"sub-{user}", "email": f"{user}@x.test"}
    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def _answer(provider: str, grant: Grant, request: Request, *, first: bool) -> Response:
    """The success body each provider sends."""
    if provider == "google":
        body: dict[str, Any] = {
            "access_token": grant.access_token,
            "expires_in": EXPIRES_IN["google"],
            "scope": grant.scope,
            "token_type": "Bearer",
        }
        if first:
            body["refresh_token"] = grant.refresh_token
            body["id_token"] = _id_token(grant.user)
        return JSONResponse(body)
    if provider == "github":
        body = {"access_token": grant.access_token, "scope": grant.scope, "token_type": "bearer"}
        if grant.refresh_token:
            body.update(
                expires_in=EXPIRES_IN["github"],
                refresh_token=grant.refresh_token,
                refresh_token_expires_in=15897600,
            )
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(body)
        return PlainTextResponse(
            urlencode(body), media_type="application/x-www-form-urlencoded; charset=utf-8"
        )
    body = {
        "token_type": "bearer",
        "expires_in": EXPIRES_IN["twitter"],
        "access_token": grant.access_token,
        "scope": grant.scope,
    }
    if grant.refresh_token:
        body["refresh_token"] = grant.refresh_token
    return JSONResponse(body)


def _bad_grant(provider: str, what: str) -> Response:
    """Each provider's answer to a spent, revoked or unknown refresh token / code."""
    if provider == "google":
        description = "Token has been expired or revoked." if what == "refresh" else "Bad Request"
        return JSONResponse(
            {"error": "invalid_grant", "error_description": description}, status_code=400
        )
    if provider == "github":
        if what == "refresh":
            error, description = (
                "bad_refresh_token",
                "The refresh token passed is incorrect or expired.",
            )
        else:
            error, description = "bad_verification_code", "The code passed is incorrect or expired."
        return JSONResponse(
            {"error": error, "error_description": description, "error_uri": GITHUB_ERROR_URI}
        )
    thing = "token" if what == "refresh" else "authorization code"
    return JSONResponse(
        {
            "error": "invalid_request",
            "error_description": f"Value passed for the {thing} was invalid.",
        },
        status_code=400,
    )


def _google_client_error(state: OAuthState, form: dict[str, str]) -> Response | None:
    """Google's refusals of the client itself (public reports of oauth2.googleapis.com/token:
    googleapis/google-auth-library-nodejs and nextauthjs/next-auth issues quote each body)."""
    client_id, secret = state.clients["google"]
    if not form.get("client_id"):
        error, description, status = (
            "invalid_request",
            "Could not determine client ID from request.",
            400,
        )
    elif form["client_id"] != client_id:
        error, description, status = "invalid_client", "The OAuth client was not found.", 401
    elif secret is not None and not form.get("client_secret"):
        error, description, status = "invalid_request", "client_secret is missing.", 400
    elif secret is not None and form.get("client_secret") != secret:
        error, description, status = "invalid_client", "Unauthorized", 401
    else:
        return None
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def google_redirect_ok(state: OAuthState, redirect_uri: str) -> bool:
    """Google accepts any loopback port only for Desktop-app clients ("Loopback IP address"
    flow of developers.google.com/identity/protocols/oauth2/native-app); a Web-application
    client needs one of its registered URIs exactly (.../oauth2/web-server,
    "redirect_uri_mismatch")."""
    if state.google_client_type == "web":
        return redirect_uri in state.google_redirect_uris
    parts = urlsplit(redirect_uri)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")


def _client_error(provider: str) -> Response:
    if provider == "google":
        return JSONResponse(
            {"error": "invalid_client", "error_description": "Unauthorized"}, status_code=401
        )
    if provider == "github":
        return JSONResponse(
            {
                "error": "incorrect_client_credentials",
                "error_description": "The client_id and/or client_secret passed are incorrect.",
                "error_uri": GITHUB_ERROR_URI,
            }
        )
    return JSONResponse(
        {"error": "unauthorized_client", "error_description": "Missing valid authorization header"},
        status_code=401,
    )


def _client_ok(state: OAuthState, provider: str, request: Request, form: dict[str, str]) -> bool:
    client_id, secret = state.clients[provider]
    basic = request.headers.get("authorization", "")
    if basic.lower().startswith("basic "):
        try:
            sent_id, _, sent_secret = base64.b64decode(basic[6:]).decode().partition(":")
        except ValueError:
            return False
        return sent_id == client_id and sent_secret == (secret or "")
    if provider == "twitter" and secret:
        return False  # confidential X clients must use HTTP Basic
    if form.get("client_id") != client_id:
        return False
    return secret is None or form.get("client_secret") == secret


def create_app(state: OAuthState) -> Starlette:
    def token_endpoint(provider: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            grant_type = form.get("grant_type", "")
            with state._lock:
                state.calls[(provider, grant_type)] += 1
                faults = state._faults.get(provider, [])
                fault = faults[0] if faults else None
                if fault is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        faults.pop(0)
            if state.delay:
                await asyncio.sleep(state.delay)
            if fault is not None:
                body = fault.body if fault.body is not None else {"error": "server_error"}
                return JSONResponse(body, status_code=fault.status, headers=fault.headers)
            if provider == "google":
                refused = _google_client_error(state, form)
                if refused is not None:
                    return refused
            elif not _client_ok(state, provider, request, form):
                return _client_error(provider)
            if grant_type == "refresh_token":
                return await refresh(provider, request, form)
            if grant_type == "authorization_code":
                return exchange(provider, request, form)
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

        return handle

    async def refresh(provider: str, request: Request, form: dict[str, str]) -> Response:
        gate = state._gate
        if gate is not None:
            state.held += 1
            await asyncio.to_thread(gate.wait, 300)
            state.held -= 1
        with state._lock:
            grant = state.grants.get(form.get("refresh_token", ""))
            if grant is None or grant.provider != provider:
                return _bad_grant(provider, "refresh")
            grant, old_access = state._rotate(grant)
            lose = state._lose.get(provider, 0) > 0
            if lose:
                state._lose[provider] -= 1
        if state.on_token is not None:
            state.on_token(grant.access_token, old_access)
        if lose:
            await asyncio.to_thread(state._released.wait, 30)
            return PlainTextResponse("too late", status_code=504)
        return _answer(provider, grant, request, first=False)

    def exchange(provider: str, request: Request, form: dict[str, str]) -> Response:
        with state._lock:
            code = state._codes.pop(form.get("code", ""), None)
            if (
                provider == "google"
                and code is not None
                and code.redirect_uri != form.get("redirect_uri")
            ):
                return JSONResponse(
                    {"error": "redirect_uri_mismatch", "error_description": "Bad Request"},
                    status_code=400,
                )
            if (
                code is None
                or code.provider != provider
                or code.redirect_uri != form.get("redirect_uri")
                or code.client_id != state.clients[provider][0]
            ):
                return _bad_grant(provider, "code")
            if code.challenge is not None:
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                if code.method != "S256" or expected != code.challenge:
                    return _bad_grant(provider, "code")
            offline = {
                "google": code.params.get("access_type") == "offline",
                "github": not state.github_classic_tokens,
                "twitter": "offline.access" in code.scope.split(),
            }[provider]
            grant = state._new_grant(provider, code.user, code.scope, refresh=offline)
        if state.on_token is not None:
            state.on_token(grant.access_token, None)
        return _answer(provider, grant, request, first=True)

    def authorize(provider: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            params = dict(request.query_params)
            state.authorize_requests.append({"provider": provider, **params})
            redirect_uri = params.get("redirect_uri", "")
            if params.get("client_id") != state.clients[provider][0] or not redirect_uri:
                return PlainTextResponse("invalid client or redirect_uri", status_code=400)
            if provider == "google" and not google_redirect_ok(state, redirect_uri):
                # Google shows an error page and never redirects back.
                return PlainTextResponse(
                    "Error 400: redirect_uri_mismatch\n\nAccess blocked: this app's request "
                    f"is invalid. Request details: redirect_uri={redirect_uri}",
                    status_code=400,
                )
            if params.get("response_type") != "code":
                return PlainTextResponse("unsupported response_type", status_code=400)
            challenge = params.get("code_challenge")
            if provider == "twitter" and not challenge:
                return PlainTextResponse("code_challenge is required", status_code=400)
            separator = "&" if "?" in redirect_uri else "?"
            if state.consent_decision != "approve":
                query = {"error": "access_denied", "state": params.get("state", "")}
                return RedirectResponse(redirect_uri + separator + urlencode(query), 302)
            code = secrets.token_urlsafe(16)
            with state._lock:
                state._codes[code] = _Code(
                    provider=provider,
                    user=state.consent_user,
                    client_id=params["client_id"],
                    redirect_uri=redirect_uri,
                    scope=params.get("scope", ""),
                    challenge=challenge,
                    method=params.get("code_challenge_method"),
                    params=params,
                )
            query = {"code": code, "state": params.get("state", "")}
            return RedirectResponse(redirect_uri + separator + urlencode(query), 302)

        return handle

    return Starlette(
        routes=[
            Route("/google/auth", authorize("google")),
            Route("/google/token", token_endpoint("google"), methods=["POST"]),
            Route("/github/login/oauth/authorize", authorize("github")),
            Route("/github/login/oauth/access_token", token_endpoint("github"), methods=["POST"]),
            Route("/twitter/i/oauth2/authorize", authorize("twitter")),
            Route("/twitter/2/oauth2/token", token_endpoint("twitter"), methods=["POST"]),
        ]
    )
