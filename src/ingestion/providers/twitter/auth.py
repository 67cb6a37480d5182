"""X (Twitter) OAuth 2.0 facts.

- Authorization code flow with PKCE (required); `offline.access` yields a refresh token.
- Token endpoint `TWITTER_TOKEN_URL`: form POST. Confidential clients authenticate with
  `Authorization: Basic base64(client_id:client_secret)`; public clients (no secret) send
  `client_id` in the body.
- Access tokens last 2 hours. Refresh tokens are single-use and ROTATE; reusing one answers 400
  `invalid_request` ("Value passed for the token was invalid.") or `invalid_grant`.
"""

from __future__ import annotations

from ingestion.providers.base import OAuthEndpoints

__all__ = ["TWITTER_OAUTH"]

TWITTER_OAUTH = OAuthEndpoints(
    account_provider="twitter",
    auth_url_setting="twitter_auth_url",
    token_url_setting="twitter_token_url",
    client_id_setting="twitter_client_id",
    client_secret_setting="twitter_client_secret",
    scopes=("tweet.read", "users.read", "like.read", "offline.access"),
    token_endpoint_auth_method="client_secret_basic",
    rotates_refresh_token=True,
    pkce=True,
)
