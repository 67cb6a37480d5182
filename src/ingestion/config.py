"""The one typed settings object; the only module that reads the environment.

Every variable of the configuration table (design §4) is a field here, named in lower case and
read from the upper-case environment variable or a `.env` file in the working directory.
Invalid values are refused when `Settings()` is built; `describe_error` turns pydantic's error
into the single line the CLI prints (variable name and what is wrong, never the value of a secret).
"""

from __future__ import annotations

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
    "PROVIDER_NAMES",
    "Settings",
    "describe_error",
    "normalize_database_url",
    "parse_better_auth_secrets",
]

#: Every provider the service knows; the registry maps each to its implementation.
PROVIDER_NAMES: tuple[str, ...] = ("gmail", "calendar", "github", "twitter")

DEFAULT_DATABASE_URL = "sqlite:///./.ingestion/ingestion.db"
DEFAULT_CRON = "*/15 * * * *"


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


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return value.rstrip("/")


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
    #: A rate-limited job is deferred (not counted as a failed attempt) at most this many times.
    job_max_deferrals: int = Field(50, ge=0)
    #: Comma-separated module names imported at start-up by `worker`, `scheduler` and `run`:
    #: the way to add or replace providers through `providers.registry.register`.
    plugins: str = Field("", validation_alias=AliasChoices("INGESTION_PLUGINS", "plugins"))
    http_timeout: float = Field(30.0, gt=0)

    # --- HTTP API ------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    ingestion_api_key: SecretStr | None = None
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

    # --- X / Twitter ---------------------------------------------------------------------------
    #: Comma-separated subset of `tweets,mentions,likes`.
    twitter_timelines: str = "tweets,mentions,likes"
    twitter_page_budget: int = Field(50, ge=1)
    #: Requests left unused in each X rate window: the sync defers itself to the window's reset
    #: when only this many remain (0 = stop just before X would answer 429).
    twitter_rate_limit_reserve: int = Field(0, ge=0)

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
        "memory_engine_url",
        "google_oidc_certs_url",
    )
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _check_http_url(value)

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

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
