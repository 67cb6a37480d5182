"""Google's OAuth facts, shared by Gmail and Calendar (one Google account serves both).

- Token endpoint `GOOGLE_TOKEN_URL`: form POST with `client_id` and `client_secret` in the body.
  A refresh answers `{access_token, expires_in, scope, token_type}` and usually no new
  `refresh_token`: the old one stays valid and is kept (Google does not rotate).
- A revoked or expired grant answers 400 `invalid_grant`. A wrong OAuth app answers 401
  `invalid_client` ("The OAuth client was not found.", "Unauthorized") or 400 `invalid_request`
  ("client_secret is missing.", "Could not determine client ID from request."): both are the
  app's configuration, never a dead grant.
- Any loopback port is accepted as redirect URI only for a Desktop-app client; a
  Web-application client needs the exact registered URI (`OAUTH_REDIRECT_URI`), else the consent
  page shows "Error 400: redirect_uri_mismatch" and the token endpoint answers 400
  `redirect_uri_mismatch`.
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
    client_error_codes=frozenset({"invalid_request"}),
)
