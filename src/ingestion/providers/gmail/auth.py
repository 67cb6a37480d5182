"""Google's OAuth facts, shared by Gmail and Calendar (one Google account serves both).

- Token endpoint `GOOGLE_TOKEN_URL`: form POST with `client_id` and `client_secret` in the body.
  A refresh answers `{access_token, expires_in, scope, token_type}` and usually no new
  `refresh_token`: the old one stays valid and is kept (Google does not rotate).
- A revoked or expired grant answers 400 `invalid_grant`.
- Consent asks for both read-only scopes at once, with `access_type=offline` and
  `prompt=consent` so that Google returns a refresh token on every connect.
"""

from __future__ import annotations

from ingestion.providers.base import OAuthEndpoints

__all__ = ["GOOGLE_OAUTH", "GOOGLE_SCOPES"]

#: Read-only mail and calendar, and the OpenID subject that names the Google account.
GOOGLE_SCOPES: tuple[str, ...] = (
    "openid",
    "email",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/calendar.readonly",
)

GOOGLE_OAUTH = OAuthEndpoints(
    account_provider="google",
    auth_url_setting="google_auth_url",
    token_url_setting="google_token_url",
    client_id_setting="google_client_id",
    client_secret_setting="google_client_secret",
    scopes=GOOGLE_SCOPES,
    extra_authorize_params={
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    },
    token_endpoint_auth_method="client_secret_post",
    rotates_refresh_token=False,
    pkce=True,
)
