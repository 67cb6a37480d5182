"""One refresh request to an OAuth token endpoint, and what its answer means.

Provider-neutral: the provider's `OAuthEndpoints` (its `auth.py`) names the settings, the
client authentication and the extra headers. The answer is sorted into three outcomes:

- a `TokenGrant` (new access token, maybe a new refresh token, expiries);
- `TransientTokenError`: 5xx, 408, 429, `server_error`, `temporarily_unavailable`, or a network
  failure: worth another try;
- `DeadGrant`: any other refusal (`invalid_grant`, `bad_refresh_token` even with status 200,
  X's `invalid_request` for a spent token, a bare 400/401): the refresh token will never work again.

A refusal of the client itself (`invalid_client`, `unauthorized_client`,
`incorrect_client_credentials`, and the provider's own `client_error_codes` such as Google's
`invalid_request`) is a `ConfigurationError` naming the client id and secret variables:
reconnecting cannot fix a wrong app, so the grant is kept. `redirect_uri_mismatch` is one too,
naming `OAUTH_REDIRECT_URI`.
Messages carry the provider's error code and description, never a token or a secret.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx

from ingestion.config import Settings
from ingestion.errors import ConfigurationError
from ingestion.providers.base import OAuthEndpoints
from ingestion.providers.http import parse_retry_after

__all__ = [
    "DeadGrant",
    "TokenGrant",
    "TransientTokenError",
    "client_credentials",
    "interpret_token_answer",
    "post_token_request",
    "request_refresh",
    "setting_name",
    "token_url",
]

_TRANSIENT_ERRORS = frozenset({"server_error", "temporarily_unavailable", "slow_down"})
_CLIENT_ERRORS = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "incorrect_client_credentials",
        "redirect_uri_mismatch",
    }
)
_DESCRIPTION_LIMIT = 200


class TransientTokenError(Exception):
    """The token endpoint failed in a way another try may fix.

    `lost_answer`: the request may have reached the endpoint but no answer came back (a read
    timeout, a dropped connection), so a rotating provider may have spent the refresh token.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, lost_answer: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.lost_answer = lost_answer


class DeadGrant(Exception):
    """The token endpoint refused the refresh token for good (`error` is its code)."""

    def __init__(self, error: str, description: str | None) -> None:
        detail = f"{error}: {description}" if description else error
        super().__init__(detail)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class TokenGrant:
    """What a token endpoint issued. `refresh_token` is None when none came back."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    refresh_token_expires_at: datetime | None
    scope: str | None
    id_token: str | None

    @classmethod
    def from_answer(cls, body: Mapping[str, Any], now: datetime) -> TokenGrant:
        def expiry(key: str) -> datetime | None:
            value = body.get(key)
            try:
                seconds = float(value) if value not in (None, "") else None
            except (TypeError, ValueError):
                seconds = None
            return now + timedelta(seconds=seconds) if seconds and seconds > 0 else None

        scope = body.get("scope")
        if isinstance(scope, list):
            scope = " ".join(str(s) for s in scope)
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=str(body["refresh_token"]) if body.get("refresh_token") else None,
            expires_at=expiry("expires_in"),
            refresh_token_expires_at=expiry("refresh_token_expires_in"),
            scope=str(scope) if scope else None,
            id_token=str(body["id_token"]) if body.get("id_token") else None,
        )


def setting_name(field_name: str) -> str:
    """The environment variable of a settings field (`github_client_id` -> `GITHUB_CLIENT_ID`)."""
    return field_name.upper()


def token_url(settings: Settings, endpoints: OAuthEndpoints) -> str:
    return str(getattr(settings, endpoints.token_url_setting))


def client_credentials(settings: Settings, endpoints: OAuthEndpoints) -> tuple[str, str | None]:
    """The OAuth app's client id and secret (None for a public client).

    Raises `ConfigurationError` naming the variable when the client id is not set.
    """
    client_id = getattr(settings, endpoints.client_id_setting)
    if not client_id:
        raise ConfigurationError(
            f"{setting_name(endpoints.client_id_setting)} is not set: the "
            f"{endpoints.account_provider} OAuth app is needed to refresh or connect an account"
        )
    secret = getattr(settings, endpoints.client_secret_setting)
    secret_value = secret.get_secret_value() if secret is not None else None
    return str(client_id), secret_value or None


def _body(response: httpx.Response) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "")
    text = response.text
    if "application/x-www-form-urlencoded" in content_type:
        return dict(parse_qsl(text))
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _client_refused(
    endpoints: OAuthEndpoints | None, error: str, description: str | None
) -> ConfigurationError:
    detail = error + (f": {description}" if description else "")
    if error == "redirect_uri_mismatch":
        return ConfigurationError(
            f"OAUTH_REDIRECT_URI: the OAuth client does not accept this redirect URI ({detail}); "
            "register it exactly in the app, or set OAUTH_REDIRECT_URI (or --redirect-uri) to "
            "the one registered"
        )
    if endpoints is None:
        names = "the OAuth client id and secret settings"
    else:
        names = (
            f"{setting_name(endpoints.client_id_setting)} / "
            f"{setting_name(endpoints.client_secret_setting)}"
        )
    return ConfigurationError(
        f"{names}: the token endpoint refused the OAuth client ({detail}); "
        "check the app's client id, secret and type"
    )


def interpret_token_answer(
    response: httpx.Response, now: datetime, endpoints: OAuthEndpoints | None = None
) -> TokenGrant:
    """Sort a token endpoint's answer (see the module docstring). Raises on failure."""
    status = response.status_code
    body = _body(response)
    error = str(body["error"]) if body.get("error") else None
    description = body.get("error_description")
    description = str(description)[:_DESCRIPTION_LIMIT] if description else None
    label = f"HTTP {status}" + (f" {error}" if error else "")
    if status in (408, 429) or status >= 500 or error in _TRANSIENT_ERRORS:
        raise TransientTokenError(
            label, retry_after=parse_retry_after(response.headers.get("retry-after"))
        )
    extra = endpoints.client_error_codes if endpoints is not None else frozenset()
    if error is not None and (error in _CLIENT_ERRORS or error in extra):
        raise _client_refused(endpoints, error, description)
    if error or status >= 400:
        raise DeadGrant(error or f"HTTP {status}", description)
    if not body.get("access_token"):
        raise TransientTokenError(f"HTTP {status} without an access_token")
    return TokenGrant.from_answer(body, now)


async def post_token_request(
    http: httpx.AsyncClient,
    settings: Settings,
    endpoints: OAuthEndpoints,
    form: Mapping[str, str],
    now: datetime,
) -> TokenGrant:
    """POST one token request (`form` without client credentials) and sort the answer.

    The client authenticates as the provider wants: HTTP Basic or id and secret in the form,
    or only `client_id` for a public client. Network failures (including a timeout after
    `TOKEN_REQUEST_TIMEOUT` seconds) become `TransientTokenError`.
    """
    client_id, secret = client_credentials(settings, endpoints)
    body = dict(form)
    headers = {"Accept": "application/json", **endpoints.token_request_headers}
    if secret and endpoints.token_endpoint_auth_method == "client_secret_basic":  # noqa: S105
        pair = f"{client_id}:{secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        body["client_id"] = client_id
        if secret:
            body["client_secret"] = secret
    try:
        response = await http.post(
            token_url(settings, endpoints),
            data=body,
            headers=headers,
            timeout=settings.token_request_timeout,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise TransientTokenError(f"could not connect ({type(exc).__name__})") from None
    except httpx.TimeoutException as exc:
        raise TransientTokenError(
            f"no answer within {settings.token_request_timeout:g}s ({type(exc).__name__})",
            lost_answer=True,
        ) from None
    except httpx.TransportError as exc:
        raise TransientTokenError(
            f"the connection failed before the answer ({type(exc).__name__})", lost_answer=True
        ) from None
    return interpret_token_answer(response, now, endpoints)


async def request_refresh(
    http: httpx.AsyncClient,
    settings: Settings,
    endpoints: OAuthEndpoints,
    refresh_token: str,
    now: datetime,
) -> TokenGrant:
    """POST `grant_type=refresh_token` once (see `post_token_request`)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await post_token_request(http, settings, endpoints, form, now)
