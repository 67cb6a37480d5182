"""GitHub's OAuth facts.

- Token endpoint `GITHUB_TOKEN_URL`: form POST with `client_id`, `client_secret`, and
  `Accept: application/json` (without it the answer is form-encoded).
- Expiring user tokens (GitHub Apps, OAuth Apps that opt in) last 8 hours and come with a
  refresh token (about 6 months) that ROTATES: once used, the old refresh token and the old
  access token stop working.
- A spent or bad refresh token answers `{"error": "bad_refresh_token", ...}`, possibly with
  status 200: an `error` member is a failure whatever the status.
- Classic OAuth App tokens never expire and personal access tokens (stored with
  `accounts add`) have no refresh token: both are used as they are.
"""

from __future__ import annotations

from ingestion.providers.base import OAuthEndpoints

__all__ = ["GITHUB_OAUTH"]

GITHUB_OAUTH = OAuthEndpoints(
    account_provider="github",
    auth_url_setting="github_auth_url",
    token_url_setting="github_token_url",
    client_id_setting="github_client_id",
    client_secret_setting="github_client_secret",
    scopes=("repo", "read:user"),
    token_endpoint_auth_method="client_secret_post",
    token_request_headers={"Accept": "application/json"},
    rotates_refresh_token=True,
    pkce=True,
)
