"""The one typed settings object; the only module that reads the environment.

Every variable of the configuration table (design §4) is a field here, named in lower case and
read from the upper-case environment variable or a `.env` file in the working directory.
Invalid values are refused when `Settings()` is built; `describe_error` turns pydantic's error
into the single line the CLI prints (variable name and what is wrong, never the value of a secret).
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "API_KEY_MIN_LENGTH",
    "PROVIDER_NAMES",
    "Settings",
    "describe_error",
    "is_loopback_host",
    "normalize_database_url",
    "parse_better_auth_secrets",
    "parse_loopback_redirect",
    "secret_from_environment",
]

#: Every provider the service knows; the registry maps each to its implementation.
PROVIDER_NAMES: tuple[str, ...] = ("gmail", "calendar", "github", "twitter")

DEFAULT_DATABASE_URL = "sqlite:///./.ingestion/ingestion.db"
DEFAULT_CRON = "*/15 * * * *"
#: Shortest `INGESTION_API_KEY` accepted: 32 characters (e.g. `openssl rand -hex 16`).
API_KEY_MIN_LENGTH = 32


def normalize_database_url(url: str) -> str:
    """Return a SQLAlchemy URL for the async driver we ship.

    Accepts `postgres://`, `postgresql://`, `postgresql+asyncpg://`, `postgresql+psycopg://`
    and `sqlite:///path`; PostgreSQL always runs on psycopg 3, SQLite on aiosqlite.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected a URL such as postgresql://user@host/db or sqlite:///path")
    base = scheme.split("+", 1)[0].lower()
    if base in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ValueError(f"unsupported database scheme {scheme!r} (use postgresql:// or sqlite://)")


#: What JavaScript's `String.prototype.trim` and `parseInt` skip (WhiteSpace and LineTerminator).
_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_INT = re.compile(r"[+-]?[0-9]+")


def js_parse_int(text: str) -> int | None:
    """JavaScript's `parseInt(text, 10)` for the integers Better Auth accepts: leading space and
    a sign skipped, digits read up to the first non-digit; None where it gives NaN (and for
    more than 15 digits, beyond the integers a JavaScript number holds exactly)."""
    match = _JS_INT.match(text.lstrip(_JS_SPACE))
    if match is None or len(match.group().lstrip("+-")) > 15:
        return None
    return int(match.group())


def parse_better_auth_secrets(value: str) -> tuple[tuple[int, str], ...]:
    """Parse `BETTER_AUTH_SECRETS` exactly as better-auth 1.7 does (`parseSecretsEnv` and
    `validateSecretsArray`): comma-separated `<version>:<secret>` entries, each trimmed, split
    at the first colon, the version read like `parseInt` and non-negative, the secret trimmed
    and not empty, no version twice. The first entry is the current one.

    Error messages name the entry's position or version, never a secret.
    """
    entries: list[tuple[int, str]] = []
    seen: set[int] = set()
    for index, raw in enumerate(value.split(","), start=1):
        entry = raw.strip(_JS_SPACE)
        version_text, colon, secret = entry.partition(":")
        if not colon:
            raise ValueError(f'entry {index} is not of the form "<version>:<secret>"')
        version = js_parse_int(version_text)
        if version is None or version < 0:
            raise ValueError(f"entry {index}: the version must be a non-negative integer")
        secret = secret.strip(_JS_SPACE)
        if not secret:
            raise ValueError(f"entry {index}: empty secret for version {version}")
        if version in seen:
            raise ValueError(f"version {version} appears twice")
        seen.add(version)
        entries.append((version, secret))
    return tuple(entries)


_TOPIC = re.compile(r"projects/[a-z][a-z0-9.:-]{1,100}/topics/[A-Za-z][A-Za-z0-9._~+%-]{2,254}")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def secret_from_environment(name: str) -> str | None:
    """The value of the environment variable `name` (a token handed to a command without
    putting it on the command line); None when unset. Raises ValueError for a bad name."""
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"{name[:40]!r} is not an environment variable name")
    return os.environ.get(name)


def is_loopback_host(host: str) -> bool:
    """`localhost` (and its subdomains, RFC 6761), 127.0.0.0/8 and ::1 (brackets allowed)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_http_url(value: str, *, plain_anywhere: bool = False) -> str:
    """An http(s) URL with a host; `http://` only to loopback unless `plain_anywhere`."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.scheme == "http" and not plain_anywhere and not is_loopback_host(parts.hostname):
        raise ValueError(
            "http:// is only allowed for loopback hosts (localhost, 127.0.0.1, ::1): "
            "tokens travel on this connection, use https://"
        )
    return value.rstrip("/")


def parse_loopback_redirect(value: str) -> tuple[str, int, str]:
    """(host, port, path) of a fixed `ingestion connect` redirect URI.

    It must be `http://127.0.0.1:PORT/path`, `http://localhost:PORT/path` or
    `http://[::1]:PORT/path`: the listener runs on this machine, and the URI must be exactly the
    one registered for the OAuth app (Google Web-application clients, X apps).
    """
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(
            "expected a loopback http URL such as http://127.0.0.1:8765/callback "
            "(registered exactly in the OAuth app)"
        )
    if not port or parts.query or parts.fragment:
        raise ValueError(
            "expected an explicit port and no query, e.g. http://127.0.0.1:8765/callback"
        )
    return parts.hostname, port, parts.path or "/"


class Settings(BaseSettings):
    """Configuration of one process. Build it once at start-up and pass it down."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- storage, queue, memory engine -------------------------------------------------------
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    #: Prefix of every Redis key (`{ns}:jobs`, group `{ns}-workers`); tests use a unique one.
    redis_namespace: str = "ingestion"
    memory_engine_url: str | None = None
    memory_engine_api_key: SecretStr | None = None
    memory_batch_size: int = Field(100, ge=1, le=100)
    memory_batch_max_bytes: int = Field(4_000_000, ge=10_000)

    # --- OAuth apps ----------------------------------------------------------------------------
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    github_client_id: str | None = None
    github_client_secret: SecretStr | None = None
    twitter_client_id: str | None = None
    twitter_client_secret: SecretStr | None = None
    #: The exact redirect URI `ingestion connect` uses (a loopback URL registered for the app);
    #: unset = `http://127.0.0.1:PORT/callback` on a free port (Desktop-app clients only).
    oauth_redirect_uri: str | None = None
    #: Refresh an access token when it expires within this many seconds.
    token_refresh_margin: int = Field(300, ge=0)
    #: Seconds one token-endpoint request may take (it runs while the account row is locked).
    token_request_timeout: float = Field(20.0, gt=0)
    #: The product's Better Auth secret(s), read and parsed as Better Auth reads them. When
    #: either is set, token columns are decrypted on read and encrypted on write in Better
    #: Auth's format (`storage/encryption.py`). `BETTER_AUTH_SECRETS` ("2:new,1:old", first =
    #: current) takes precedence; `BETTER_AUTH_SECRET` is then the legacy single secret.
    better_auth_secret: SecretStr | None = None
    better_auth_secrets: SecretStr | None = None
    #: Removed (it never encrypted anything): refused at start with a pointer to the above.
    token_encryption_key: SecretStr | None = None

    # --- provider endpoints --------------------------------------------------------------------
    gmail_api_url: str = "https://gmail.googleapis.com"
    calendar_api_url: str = "https://www.googleapis.com/calendar/v3"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    github_api_url: str = "https://api.github.com"
    github_token_url: str = "https://github.com/login/oauth/access_token"
    github_auth_url: str = "https://github.com/login/oauth/authorize"
    twitter_api_url: str = "https://api.x.com/2"
    twitter_token_url: str = "https://api.x.com/2/oauth2/token"
    twitter_auth_url: str = "https://x.com/i/oauth2/authorize"

    # --- schedules -----------------------------------------------------------------------------
    gmail_sync_cron: str = DEFAULT_CRON
    calendar_sync_cron: str = DEFAULT_CRON
    github_sync_cron: str = DEFAULT_CRON
    twitter_sync_cron: str = DEFAULT_CRON
    #: Scheduled jobs of one tick are spread over this many seconds.
    schedule_jitter_seconds: float = Field(30.0, ge=0)

    # --- worker --------------------------------------------------------------------------------
    worker_concurrency: int = Field(4, ge=1, le=256)
    job_visibility_timeout: int = Field(300, ge=1)
    job_max_attempts: int = Field(5, ge=1)
    shutdown_grace_period: float = Field(30.0, ge=0)
    #: First retry delay of a failed job; doubles each attempt, with jitter.
    job_retry_base_seconds: float = Field(5.0, ge=0)
    job_retry_max_seconds: float = Field(3600.0, ge=0)
    backfill_days: int = Field(365, ge=1)
    #: Seconds a pair whose account the product deleted keeps its records before they are
    #: purged from the memory engine; None (`never`) keeps them. Accepts `never`, seconds, or a
    #: number with a unit: `90s`, `30m`, `12h`, `7d`.
    forget_after_disconnect: float | None = 7 * 86400.0
    #: How often `run` and `worker` look for purges to finish (interrupted, or due).
    forget_interval_seconds: float = Field(60.0, gt=0)
    #: A rate-limited job is deferred (not counted as a failed attempt) at most this many times.
    job_max_deferrals: int = Field(50, ge=0)
    #: Longest single wait of a deferred or retried job, whatever `Retry-After` or a reset
    #: header asked for: the job (and the pair's coalescing marker) wake up by then at the latest.
    job_max_defer_seconds: float = Field(3600.0, gt=0, le=86_400, allow_inf_nan=False)
    #: Dead letters kept: at most this many entries, none older than this many days. A job that
    #: fails again with the same error for the same (provider, user) replaces its dead letter and
    #: counts up (`count`) instead of adding one.
    dead_letter_max_entries: int = Field(10_000, ge=1)
    dead_letter_max_age_days: float = Field(14.0, gt=0, allow_inf_nan=False)
    #: Sync-run history (`ingestion_sync_runs`) kept per (user, provider): the newest this many
    #: runs, and none older than this many days.
    sync_runs_keep: int = Field(50, ge=1)
    sync_runs_max_age_days: float = Field(30.0, gt=0, allow_inf_nan=False)
    #: Comma-separated module names imported at start-up by `worker`, `scheduler` and `run`:
    #: the way to add or replace providers through `providers.registry.register`.
    plugins: str = Field("", validation_alias=AliasChoices("INGESTION_PLUGINS", "plugins"))
    http_timeout: float = Field(30.0, gt=0)
    #: Largest answer body read from a provider API or the memory engine, after gzip/brotli
    #: decoding; a bigger one fails that page or item with a `PermanentError`.
    http_max_response_bytes: int = Field(32 * 1024 * 1024, ge=65_536)
    #: Seconds one item's transform may take (`ingestion.providers.items`): past it the item is
    #: stored with what was extracted and counted defective; at five times it is abandoned.
    transform_time_budget: float = Field(0.5, gt=0, le=60)

    # --- HTTP API ------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    #: 32+ characters when set; unset = no authentication (then only a loopback bind serves
    #: the status page, and a non-loopback `API_HOST` needs `API_ALLOW_UNAUTHENTICATED`).
    ingestion_api_key: SecretStr | None = None
    #: Explicitly serve the `/v1` API without a key on a non-loopback `API_HOST`.
    api_allow_unauthenticated: bool = False
    #: Comma-separated extra `Host` names the API answers to (besides loopback names and
    #: `API_HOST`), e.g. `ingestion.internal,10.0.0.5`; `*.example.com` matches subdomains.
    api_allowed_hosts: str = ""
    #: Largest request body the API reads (413 above it).
    api_max_body_bytes: int = Field(1_000_000, ge=1024, le=100_000_000)
    #: Shared directory for Prometheus multi-process mode (several workers on one host). It must
    #: be in the process environment (prometheus_client reads it at import) and emptied at start.
    prometheus_multiproc_dir: Path | None = None

    # --- push notifications (ingestion.push) ----------------------------------------------------
    #: Cloud Pub/Sub topic Gmail publishes to (`projects/P/topics/T`); unset = Gmail polls only.
    gmail_pubsub_topic: str | None = None
    #: The `aud` claim the push subscription's OIDC token must carry.
    gmail_push_audience: str | None = None
    #: The `email` claim it must carry: the subscription's service account.
    gmail_push_service_account: str | None = None
    #: Where Google's token-signing certificates are read (tests serve their own).
    google_oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    #: The service's public https origin (Calendar channels are addressed to
    #: `{PUBLIC_BASE_URL}/v1/push/calendar`); unset = Calendar polls only. http only on loopback.
    public_base_url: str | None = None
    #: Secret of the GitHub webhooks pointed at `/v1/push/github`; unset = the route answers 404.
    github_webhook_secret: SecretStr | None = None
    #: Polling interval of an account whose push channel is healthy (seconds, default 6 h; at
    #: most 12 h, so a sync renews every Gmail watch at least once a day).
    push_poll_interval: int = Field(6 * 3600, ge=60, le=12 * 3600)

    #: The event loop of every command: `auto` = uvloop where it is installed (not on Windows),
    #: else asyncio's own; `asyncio` forces the standard library's loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    # --- logging -------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["console", "json"] | None = None

    # --- Gmail ---------------------------------------------------------------------------------
    #: Per-user quota budget in Gmail quota units per minute (6,000 for projects created from
    #: May 2026; older projects had 250 units per second). Requests are paced below it.
    gmail_quota_units_per_minute: int = Field(6000, ge=10)
    gmail_fetch_concurrency: int = Field(8, ge=1, le=100)
    #: Messages fetched per call of the batch endpoint (0 or 1 = one messages.get each).
    gmail_batch_size: int = Field(50, ge=0, le=100)
    gmail_page_size: int = Field(100, ge=1, le=500)

    # --- Google Calendar -----------------------------------------------------------------------
    #: First-sync window into the past; unset = `backfill_days` (design §4).
    calendar_past_days: int | None = Field(None, ge=0)
    calendar_future_days: int = Field(365, ge=0)
    calendar_include_hidden: bool = False
    calendar_quota_requests_per_minute: int = Field(600, ge=1)
    #: Events per `events.list` page (the API's maximum, 2500, makes the fewest requests).
    calendar_page_size: int = Field(2500, ge=1, le=2500)

    # --- GitHub --------------------------------------------------------------------------------
    #: Comma-separated `owner/repo` glob patterns; empty allow list = every accessible repo.
    github_repos_allow: str = ""
    github_repos_deny: str = ""
    github_patch_budget_bytes: int = Field(20_000, ge=0)
    github_concurrency: int = Field(4, ge=1, le=32)
    #: Stop and defer the job when fewer than this many requests remain in the window.
    github_rate_limit_reserve: int = Field(50, ge=0)
    #: `per_page` of every GitHub listing (GitHub's maximum is 100).
    github_page_size: int = Field(100, ge=1, le=100)
    #: Issues and PRs of other people's repositories: `participating` (created, assigned,
    #: mentioned, subscribed) or `all` (every issue the token can see: for a member of a large
    #: organisation, every issue of every organisation repository). Own repositories: all.
    github_issues_filter: Literal["participating", "all"] = "participating"

    # --- X / Twitter ---------------------------------------------------------------------------
    #: Comma-separated subset of `tweets,mentions,likes`.
    twitter_timelines: str = "tweets,mentions,likes"
    twitter_page_budget: int = Field(50, ge=1)
    #: Requests left unused in each X rate window: the sync defers itself to the window's reset
    #: when only this many remain (0 = stop just before X would answer 429).
    twitter_rate_limit_reserve: int = Field(0, ge=0)
    #: Each sync re-reads this many recent days of every timeline and forgets the posts and
    #: likes no longer listed (0 = never re-read).
    twitter_reconcile_days: int = Field(30, ge=0, le=3650)
    #: Hours between two such re-reads of one account.
    twitter_reconcile_hours: float = Field(24.0, gt=0)
    #: Day of the month X resets the app's usage cap (the subscription's billing day); unset =
    #: the first of the month (UTC). Past a short month's end it resets on the month's last day.
    twitter_usage_cap_reset_day: int | None = Field(None, ge=1, le=31)

    @field_validator(
        "gmail_api_url",
        "calendar_api_url",
        "google_token_url",
        "google_auth_url",
        "github_api_url",
        "github_token_url",
        "github_auth_url",
        "twitter_api_url",
        "twitter_token_url",
        "twitter_auth_url",
        "google_oidc_certs_url",
    )
    @classmethod
    def _http_url(cls, value: str) -> str:
        """Provider, token and consent URLs carry OAuth tokens and codes: TLS off loopback."""
        return _check_http_url(value)

    @field_validator("memory_engine_url")
    @classmethod
    def _memory_engine_url(cls, value: str | None) -> str | None:
        """The memory engine is the deployment's own service, often on a private network
        (`http://memory-engine:8001`): plain HTTP is the operator's choice there."""
        return None if value in (None, "") else _check_http_url(value, plain_anywhere=True)

    @field_validator("ingestion_api_key")
    @classmethod
    def _api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if not secret.strip():
            raise ValueError(
                "is set but empty: unset it to run without a key, or set 32+ characters"
            )
        if len(secret) < API_KEY_MIN_LENGTH or secret != secret.strip():
            raise ValueError(
                f"must be at least {API_KEY_MIN_LENGTH} characters without surrounding spaces "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        return value

    @field_validator("api_allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: str) -> str:
        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        for name in names:
            if any(c in name for c in "/@ ") or name.count(":") == 1:
                raise ValueError(f"expected host names without scheme or port, got {name!r:.80}")
        return ",".join(names)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix") or (
            parts.scheme != "unix" and not parts.hostname
        ):
            raise ValueError("expected redis://host:port/db, rediss://… or unix://…")
        return value

    @field_validator("gmail_pubsub_topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not _TOPIC.fullmatch(value):
            raise ValueError("expected projects/PROJECT/topics/TOPIC")
        return value

    @field_validator("gmail_push_audience", "gmail_push_service_account")
    @classmethod
    def _optional_text(cls, value: str | None) -> str | None:
        return None if value in (None, "") else value.strip()

    @field_validator("public_base_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and loopback)
        ):
            raise ValueError("expected an https:// URL (http:// only for a loopback host)")
        if parts.query or parts.fragment:
            raise ValueError("expected a base URL without query or fragment")
        return value.rstrip("/")

    @field_validator("github_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("too short: use at least 16 random characters")
        return value

    @model_validator(mode="after")
    def _gmail_push_complete(self) -> Settings:
        if self.gmail_pubsub_topic and not (
            self.gmail_push_audience and self.gmail_push_service_account
        ):
            missing = (
                "GMAIL_PUSH_AUDIENCE"
                if not self.gmail_push_audience
                else "GMAIL_PUSH_SERVICE_ACCOUNT"
            )
            raise ValueError(
                f"{missing}: must be set with GMAIL_PUBSUB_TOPIC (push deliveries are verified)"
            )
        return self

    @field_validator("better_auth_secret", "better_auth_secrets")
    @classmethod
    def _better_auth(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # Better Auth treats an empty variable as unset (`process.env.X || …`).
        if value is None or not value.get_secret_value():
            return None
        if info.field_name == "better_auth_secrets":
            parse_better_auth_secrets(value.get_secret_value())
        return value

    @field_validator("token_encryption_key")
    @classmethod
    def _removed_token_key(cls, value: SecretStr | None) -> None:
        if value is not None:
            raise ValueError(
                "no longer read; tokens are encrypted in Better Auth's format with "
                "BETTER_AUTH_SECRET / BETTER_AUTH_SECRETS (the product's own secrets): unset it"
            )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        normalize_database_url(value)
        return value

    @field_validator(
        "gmail_sync_cron", "calendar_sync_cron", "github_sync_cron", "twitter_sync_cron"
    )
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        return value

    @field_validator("forget_after_disconnect", mode="before")
    @classmethod
    def _duration_or_never(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text == "never":
            return None
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        scale = units.get(text[-1:], 0)
        number = text[:-1] if scale else text
        try:
            seconds = float(number) * (scale or 1)
        except ValueError:
            raise ValueError("expected `never`, seconds, or a duration such as 7d or 12h") from None
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError("expected a duration of zero or more")
        return seconds

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("oauth_redirect_uri")
    @classmethod
    def _redirect_uri(cls, value: str | None) -> str | None:
        if value:
            parse_loopback_redirect(value)
        return value or None

    @field_validator("twitter_timelines")
    @classmethod
    def _timelines(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = sorted(set(names) - {"tweets", "mentions", "likes"})
        if unknown:
            raise ValueError(f"unknown timeline(s) {', '.join(unknown)}; use tweets,mentions,likes")
        return ",".join(names)

    # --- derived -------------------------------------------------------------------------------
    @property
    def better_auth_versions(self) -> tuple[tuple[int, str], ...]:
        """`BETTER_AUTH_SECRETS` as (version, secret) pairs, current first; empty when unset."""
        if self.better_auth_secrets is None:
            return ()
        return parse_better_auth_secrets(self.better_auth_secrets.get_secret_value())

    @cached_property
    def sqlalchemy_url(self) -> str:
        return normalize_database_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def database_kind(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        rest = self.sqlalchemy_url.split(":///", 1)[1] if ":///" in self.sqlalchemy_url else ""
        return Path(rest) if rest and rest != ":memory:" else None

    @property
    def api_is_loopback(self) -> bool:
        """The API listens on a loopback address only."""
        return is_loopback_host(self.api_host)

    @property
    def api_host_names(self) -> tuple[str, ...]:
        """`Host` header names the API answers to (a port is checked separately)."""
        names = ["localhost", "127.0.0.1", "[::1]", "::1"]
        host = self.api_host.strip().lower()
        if host not in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104 (names, not a bind)
            names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
        names.extend(n for n in self.api_allowed_hosts.split(",") if n)
        if self.public_base_url:  # where Google's channels post their notifications
            public = urlsplit(self.public_base_url).hostname
            if public:
                names.append(public.lower())
        return tuple(dict.fromkeys(names))

    def api_exposure_error(self) -> str | None:
        """Why this API must not start (a non-loopback bind without a key), or None."""
        exposed = self.ingestion_api_key is None and not self.api_is_loopback
        if exposed and not self.api_allow_unauthenticated:
            return (
                f"configuration error: API_HOST: {self.api_host} is not a loopback address "
                "and INGESTION_API_KEY is not set: set a key (32+ characters), bind "
                "127.0.0.1, or set API_ALLOW_UNAUTHENTICATED=true"
            )
        return None

    @property
    def resolved_log_format(self) -> str:
        if self.log_format:
            return self.log_format
        return "console" if sys.stderr.isatty() else "json"

    def cron_for(self, provider: str) -> str:
        value: str = getattr(self, f"{provider}_sync_cron")
        return value

    def next_tick(self, provider: str, after: datetime) -> datetime:
        result: datetime = croniter(self.cron_for(provider), after).get_next(datetime)
        return result


def describe_error(error: ValidationError) -> str:
    """One line naming the first bad variable and what is wrong with it (never its value)."""
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["loc"]:
        name = str(first["loc"][0]).upper()
    else:  # a rule over several variables names the one to set first in its message
        name, _, rest = message.partition(": ")
        if not (rest and re.fullmatch(r"[A-Z][A-Z0-9_]+", name)):
            name, rest = "configuration", message
        message = rest
    return f"configuration error: {name}: {message}"
