"""Configuration: every invalid variable stops any command with exit 2 and one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.config import Settings, normalize_database_url
from tests.conftest import run_cli

INVALID = [
    ("DATABASE_URL", "mysql://root@localhost/db", "unsupported database scheme"),
    ("DATABASE_URL", "not a url", "expected a URL"),
    ("REDIS_URL", "http://localhost:6379", "expected redis://"),
    ("MEMORY_ENGINE_URL", "localhost:8001", "http:// or https://"),
    ("GMAIL_API_URL", "ftp://example.com", "http:// or https://"),
    ("GITHUB_API_URL", "https://", "http:// or https://"),
    ("GMAIL_SYNC_CRON", "*/15 * *", "not a valid cron expression"),
    ("TWITTER_SYNC_CRON", "61 * * * *", "not a valid cron expression"),
    ("LOG_LEVEL", "verbose", "Input should be"),
    ("LOG_FORMAT", "xml", "Input should be"),
    ("WORKER_CONCURRENCY", "many", "valid integer"),
    ("WORKER_CONCURRENCY", "0", "greater than or equal to 1"),
    ("JOB_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
    ("API_PORT", "70000", "less than or equal to 65535"),
    ("JOB_VISIBILITY_TIMEOUT", "-5", "greater than or equal to 1"),
    ("BACKFILL_DAYS", "a year", "valid integer"),
    ("TWITTER_TIMELINES", "tweets,retweets", "unknown timeline"),
    ("JOB_MAX_DEFER_SECONDS", "inf", "finite number"),
    ("JOB_MAX_DEFER_SECONDS", "100000", "less than or equal to 86400"),
    ("HTTP_MAX_RESPONSE_BYTES", "100", "greater than or equal to 65536"),
    ("SYNC_RUNS_KEEP", "0", "greater than or equal to 1"),
    ("DEAD_LETTER_MAX_AGE_DAYS", "nan", "finite number"),
    ("GMAIL_PUBSUB_TOPIC", "gmail-topic", "projects/PROJECT/topics/TOPIC"),
    ("PUBLIC_BASE_URL", "http://ingest.example.com", "https://"),
    ("PUBLIC_BASE_URL", "https://ingest.example.com/?x=1", "without query"),
    ("GITHUB_WEBHOOK_SECRET", "short", "at least 16"),
    ("PUSH_POLL_INTERVAL", "86400", "less than or equal to 43200"),
    ("GOOGLE_OIDC_CERTS_URL", "file:///etc/certs", "http:// or https://"),
]


@pytest.mark.parametrize(("variable", "value", "message"), INVALID)
def test_invalid_variable_gives_one_line_and_exit_2(
    base_env: dict[str, str], variable: str, value: str, message: str
) -> None:
    env = {**base_env, variable: value, "GITHUB_CLIENT_SECRET": "s3cr3t-client-value"}
    result = run_cli("status", env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: configuration error: {variable}: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert "s3cr3t-client-value" not in result.stderr + result.stdout


def test_bad_setting_stops_every_command(base_env: dict[str, str]) -> None:
    env = {**base_env, "CALENDAR_SYNC_CRON": "whenever"}
    for args in (
        ["run"],
        ["accounts", "list"],
        ["sync", "github", "--user", "u"],
        ["db", "upgrade"],
    ):
        result = run_cli(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().startswith("error: configuration error: CALENDAR_SYNC_CRON")


def test_dotenv_file_in_working_directory_is_read(base_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GITHUB_SYNC_CRON=every now and then\n")
    env = {k: v for k, v in base_env.items() if k != "GITHUB_SYNC_CRON"}
    result = run_cli("status", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "GITHUB_SYNC_CRON" in result.stderr


def test_defaults_match_the_documented_table(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "MEMORY_ENGINE_URL", "LOG_FORMAT", "API_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite:///./.ingestion/ingestion.db"
    assert settings.redis_url is None
    assert settings.memory_engine_url is None
    assert settings.gmail_api_url == "https://gmail.googleapis.com"
    assert settings.calendar_api_url == "https://www.googleapis.com/calendar/v3"
    assert settings.google_token_url == "https://oauth2.googleapis.com/token"
    assert settings.github_api_url == "https://api.github.com"
    assert settings.github_token_url == "https://github.com/login/oauth/access_token"
    assert settings.twitter_api_url == "https://api.x.com/2"
    assert settings.twitter_token_url == "https://api.x.com/2/oauth2/token"
    for provider in ("gmail", "calendar", "github", "twitter"):
        assert settings.cron_for(provider) == "*/15 * * * *"
    assert settings.worker_concurrency == 4
    assert settings.job_visibility_timeout == 300
    assert settings.job_max_attempts == 5
    assert settings.shutdown_grace_period == 30
    assert settings.backfill_days == 365
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8080)
    assert settings.log_level == "info"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
    ],
)
def test_database_url_spellings(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_secrets_are_not_in_the_settings_repr() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        google_client_secret="google-very-secret",
        memory_engine_api_key="engine-key-123",
        ingestion_api_key="api-key-456-of-at-least-32-characters",
    )
    text = repr(settings) + str(settings.model_dump())
    for secret in ("google-very-secret", "engine-key-123", "api-key-456-of-at-least-32-characters"):
        assert secret not in text


def test_gmail_push_needs_its_audience_and_service_account(base_env: dict[str, str]) -> None:
    env = {**base_env, "GMAIL_PUBSUB_TOPIC": "projects/p-1/topics/gmail"}
    result = run_cli("status", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: configuration error: GMAIL_PUSH_AUDIENCE: must be set with GMAIL_PUBSUB_TOPIC "
        "(push deliveries are verified)"
    )
    env["GMAIL_PUSH_AUDIENCE"] = "https://ingest.example.com/v1/push/gmail"
    result = run_cli("status", env=env)
    assert result.returncode == 2
    assert "GMAIL_PUSH_SERVICE_ACCOUNT: must be set" in result.stderr
