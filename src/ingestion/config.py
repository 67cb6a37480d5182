"""The one typed settings object; the only module that reads the environment.

Every variable of the configuration table (design §4) is a field here, named in lower case and
read from the upper-case environment variable or a `.env` file in the working directory.
Invalid values are refused when `Settings()` is built; `describe_error` turns pydantic's error
into the single line the CLI prints (variable name and what is wrong, never the value of a secret).
"""

from __future__ import annotations

import sys
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PROVIDER_NAMES", "Settings", "describe_error", "normalize_database_url"]

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
    #: Encrypt tokens written by this service (Fernet key); unset = plain, like Better Auth.
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
    #: Seconds one item's transform may take (`ingestion.providers.items`): past it the item is
    #: stored with what was extracted and counted defective; at five times it is abandoned.
    transform_time_budget: float = Field(0.5, gt=0, le=60)

    # --- HTTP API ------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    ingestion_api_key: SecretStr | None = None
    #: Shared directory for Prometheus multi-process mode (several workers on one host). It must
    #: be in the process environment (prometheus_client reads it at import) and emptied at start.
    prometheus_multiproc_dir: Path | None = None

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
    calendar_past_days: int = Field(365, ge=0)
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
    name = str(first["loc"][0]).upper() if first["loc"] else "configuration"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"configuration error: {name}: {message}"
