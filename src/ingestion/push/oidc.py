"""Verification of the OIDC token an authenticated Pub/Sub push subscription sends.

Pub/Sub signs a Google OIDC JWT for each push request (`Authorization: Bearer …`); the
subscriber checks its signature against Google's certificates, its issuer, its audience and its
`email` claim (the subscription's service account, with `email_verified`). Source: Cloud Pub/Sub
"Authentication for push subscriptions". Signature, `exp`/`iat` and `aud` are checked by
google-auth (`google.auth.jwt.decode`, as `google.oauth2.id_token.verify_token` does), off the
event loop (RSA is CPU work); the issuer list is google-auth's own (`id_token._GOOGLE_ISSUERS`).

The certificates (`GOOGLE_OIDC_CERTS_URL`, `{kid: PEM certificate}`) are cached for their
`Cache-Control: max-age` (between 1 minute and 1 day); a token naming a key the cache does not
hold makes at most one refetch per `_REFETCH_SECONDS`, so forged key ids cannot turn each request
into a request to Google.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
from google.auth import exceptions as google_exceptions
from google.auth import jwt

__all__ = ["GOOGLE_ISSUERS", "OidcRejected", "OidcVerifier"]

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
#: A Google ID token is about 1 KB; anything far larger is not one.
MAX_TOKEN_CHARS = 8192
_MAX_CERTS_BYTES = 64 * 1024
_REFETCH_SECONDS = 30.0
_DEFAULT_MAX_AGE = 3600.0
_MAX_AGE = re.compile(r"max-age=(\d{1,9})")
#: Seconds of clock difference tolerated on `iat` and `exp`.
CLOCK_SKEW = 10


class OidcRejected(Exception):
    """The token is not acceptable. `outcome` is the metric label; the message never holds
    the token."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class OidcVerifier:
    def __init__(
        self, http: httpx.AsyncClient, certs_url: str, audience: str, service_account: str
    ) -> None:
        self.http = http
        self.certs_url = certs_url
        self.audience = audience
        self.service_account = service_account.lower()
        self._certs: dict[str, str] = {}
        self._fresh_until = 0.0
        self._fetched_at = -_REFETCH_SECONDS
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Mapping[str, Any]:
        """The token's claims when it is Google's, for our audience, from our service account."""
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise OidcRejected("unauthenticated", "the bearer token is not a JWT")
        try:
            kid = jwt.decode_header(token).get("kid")  # type: ignore[no-untyped-call]
        except (ValueError, google_exceptions.GoogleAuthError):
            raise OidcRejected("unauthenticated", "the bearer token is not a JWT") from None
        certs = await self._certs_for(kid if isinstance(kid, str) else None)
        try:
            claims: Mapping[str, Any] = await asyncio.to_thread(
                jwt.decode,
                token,
                certs=certs,
                audience=self.audience,
                clock_skew_in_seconds=CLOCK_SKEW,
            )
        except (ValueError, google_exceptions.GoogleAuthError) as exc:
            raise OidcRejected(*_classify(str(exc))) from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise OidcRejected("forged", "the token was not issued by Google")
        email = claims.get("email")
        if not isinstance(email, str) or email.lower() != self.service_account:
            raise OidcRejected("forbidden", "the token's service account is not the configured one")
        if claims.get("email_verified") is not True:
            raise OidcRejected("forbidden", "the token's email is not verified")
        return claims

    async def _certs_for(self, kid: str | None) -> dict[str, str]:
        async with self._lock:
            now = time.monotonic()
            stale = now >= self._fresh_until
            unknown = kid is not None and kid not in self._certs
            if (stale or unknown) and now - self._fetched_at >= _REFETCH_SECONDS:
                await self._fetch(now)
            elif stale and not self._certs:
                raise OidcRejected("unavailable", "Google's certificates could not be read")
            return dict(self._certs)

    async def _fetch(self, now: float) -> None:
        self._fetched_at = now
        try:
            response = await self.http.get(self.certs_url, timeout=10.0)
        except httpx.HTTPError as exc:
            if not self._certs:
                raise OidcRejected(
                    "unavailable", f"Google's certificates could not be read: {type(exc).__name__}"
                ) from None
            return
        body = response.content
        certs: Any = None
        if response.status_code == 200 and len(body) <= _MAX_CERTS_BYTES:
            try:
                certs = response.json()
            except ValueError:
                certs = None
        if not isinstance(certs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in certs.items()
        ):
            if not self._certs:
                raise OidcRejected(
                    "unavailable",
                    f"Google's certificates could not be read (HTTP {response.status_code})",
                )
            return
        match = _MAX_AGE.search(response.headers.get("cache-control", ""))
        max_age = float(match.group(1)) if match else _DEFAULT_MAX_AGE
        self._certs = certs
        self._fresh_until = now + min(max(max_age, 60.0), 86400.0)


def _classify(message: str) -> tuple[str, str]:
    lowered = message.lower()
    if "expired" in lowered:
        return "expired", "the token has expired"
    if "too early" in lowered:
        return "expired", "the token is not valid yet"
    if "audience" in lowered:
        return "wrong_audience", "the token is for another audience"
    return "forged", "the token's signature does not verify against Google's certificates"
