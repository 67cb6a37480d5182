"""Migrations on SQLite and PostgreSQL, and coexistence with Better Auth's own tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import run_cli

OUR_TABLES = {
    "ingestion_sync_state",
    "ingestion_sync_runs",
    "ingestion_memories",
    "ingestion_sent_hashes",
    "ingestion_alembic_version",
}

# The schema `prisma migrate` generates for Better Auth's Prisma adapter (PostgreSQL).
BETTER_AUTH_PRISMA_SQL = """
CREATE TABLE "user" (
    "id" TEXT NOT NULL, "name" TEXT NOT NULL, "email" TEXT NOT NULL,
    "emailVerified" BOOLEAN NOT NULL, "image" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL, "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "user_pkey" PRIMARY KEY ("id"));
CREATE TABLE "session" (
    "id" TEXT NOT NULL, "expiresAt" TIMESTAMP(3) NOT NULL, "token" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL, "updatedAt" TIMESTAMP(3) NOT NULL,
    "ipAddress" TEXT, "userAgent" TEXT, "userId" TEXT NOT NULL,
    CONSTRAINT "session_pkey" PRIMARY KEY ("id"));
CREATE TABLE "account" (
    "id" TEXT NOT NULL, "accountId" TEXT NOT NULL, "providerId" TEXT NOT NULL,
    "userId" TEXT NOT NULL, "accessToken" TEXT, "refreshToken" TEXT, "idToken" TEXT,
    "accessTokenExpiresAt" TIMESTAMP(3), "refreshTokenExpiresAt" TIMESTAMP(3),
    "scope" TEXT, "password" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL, "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "account_pkey" PRIMARY KEY ("id"));
CREATE TABLE "verification" (
    "id" TEXT NOT NULL, "identifier" TEXT NOT NULL, "value" TEXT NOT NULL,
    "expiresAt" TIMESTAMP(3) NOT NULL, "createdAt" TIMESTAMP(3), "updatedAt" TIMESTAMP(3),
    CONSTRAINT "verification_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "user_email_key" ON "user"("email");
CREATE UNIQUE INDEX "session_token_key" ON "session"("token");
ALTER TABLE "session" ADD CONSTRAINT "session_userId_fkey" FOREIGN KEY ("userId")
    REFERENCES "user"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "account" ADD CONSTRAINT "account_userId_fkey" FOREIGN KEY ("userId")
    REFERENCES "user"("id") ON DELETE CASCADE ON UPDATE CASCADE;
INSERT INTO "user" VALUES ('usr_1', 'Ada', 'ada@example.com', true, NULL,
    '2026-01-01 10:00:00', '2026-01-01 10:00:00');
INSERT INTO "account" ("id", "accountId", "providerId", "userId", "accessToken", "refreshToken",
    "createdAt", "updatedAt")
    VALUES ('acc_1', '1234', 'google', 'usr_1', 'ya29.product', '1//product-refresh',
    '2026-01-01 10:00:00', '2026-01-01 10:00:00');
"""

SCHEMA_SNAPSHOT_SQL = """
SELECT json_agg(row_to_json(t) ORDER BY t.table_name, t.ordinal_position) FROM (
  SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,
         datetime_precision
  FROM information_schema.columns
  WHERE table_schema = 'public' AND table_name IN ('user', 'account', 'session', 'verification')
) t
UNION ALL
SELECT json_agg(indexdef ORDER BY indexdef) FROM pg_indexes
  WHERE schemaname = 'public' AND tablename IN ('user', 'account', 'session', 'verification')
UNION ALL
SELECT json_agg(conname || ':' || pg_get_constraintdef(oid) ORDER BY conname) FROM pg_constraint
  WHERE conrelid IN ('"user"'::regclass, 'account'::regclass)
"""


def _psycopg(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_on_sqlite_create_every_table(base_env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "nested" / "folder" / "ingestion.db"
    env = {**base_env, "DATABASE_URL": f"sqlite:///{db}"}
    result = run_cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert "at revision" in result.stdout
    assert {"user", "account", *OUR_TABLES} <= _tables(f"sqlite:///{db}")
    again = run_cli("db", "upgrade", env=env)  # idempotent
    assert again.returncode == 0, again.stderr


def test_embedded_default_creates_its_folder_and_migrates_by_itself(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
    result = run_cli("accounts", "list", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".ingestion" / "ingestion.db").exists()


def test_migrations_on_a_fresh_postgresql_database(base_env: dict[str, str], pg_url: str) -> None:
    env = {**base_env, "DATABASE_URL": pg_url}
    result = run_cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert {"user", "account", *OUR_TABLES} <= _tables(pg_url)


def test_postgresql_commands_refuse_an_unmigrated_schema(
    base_env: dict[str, str], pg_url: str
) -> None:
    env = {**base_env, "DATABASE_URL": pg_url}
    result = run_cli("accounts", "list", env=env)
    assert result.returncode == 2
    assert "ingestion db upgrade" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_head_constant_is_alembics_head(sqlite_url: str) -> None:
    """Commands check the schema against `HEAD_REVISION` without Alembic: a new migration
    must move it (else every command would migrate, or refuse, for nothing)."""
    from ingestion.config import Settings
    from ingestion.storage.db import HEAD_REVISION, head_revision

    assert head_revision(Settings(database_url=sqlite_url)) == HEAD_REVISION


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_command_on_a_current_schema_does_not_load_alembic(
    base_env: dict[str, str], sqlite_url: str, pg_url: str, backend: str
) -> None:
    url = sqlite_url if backend == "sqlite" else pg_url
    env = {**base_env, "DATABASE_URL": url}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    probe = (
        "import asyncio, sys\n"
        "from ingestion.config import Settings\n"
        "from ingestion.storage.db import open_database\n"
        "async def main():\n"
        "    db = await open_database(Settings())\n"
        "    await db.dispose()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_better_auth_tables_are_left_untouched_and_shared(
    base_env: dict[str, str], pg_url: str
) -> None:
    with _psycopg(pg_url) as conn:
        conn.execute(BETTER_AUTH_PRISMA_SQL)  # type: ignore[arg-type]
        before = [row[0] for row in conn.execute(SCHEMA_SNAPSHOT_SQL)]  # type: ignore[arg-type]

    env = {**base_env, "DATABASE_URL": f"postgres://{pg_url.split('://', 1)[1]}"}
    result = run_cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr

    with _psycopg(pg_url) as conn:
        after = [row[0] for row in conn.execute(SCHEMA_SNAPSHOT_SQL)]  # type: ignore[arg-type]
        product_row = conn.execute(
            'SELECT "accessToken", "refreshToken" FROM account WHERE id = %s', ("acc_1",)
        ).fetchone()
    assert after == before, "our migrations altered Better Auth's tables"
    assert product_row == ("ya29.product", "1//product-refresh")
    assert _tables(pg_url) >= OUR_TABLES

    added = run_cli(
        "accounts", "add", "github", "--user", "usr_1", "--access-token", "gho_cli_token",
        "--refresh-token", "ghr_cli_refresh", "--expires-at", "2030-01-01T00:00:00Z",
        "--scope", "repo,read:user", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "gho_cli_token" not in added.stdout + added.stderr

    # The product's server reads the row with its own column names and types.
    with _psycopg(pg_url) as conn:
        row = conn.execute(
            'SELECT "accountId", "providerId", "userId", "accessToken", "refreshToken", '
            '"accessTokenExpiresAt", scope, "createdAt" IS NOT NULL, "updatedAt" IS NOT NULL '
            """FROM account WHERE "providerId" = 'github'"""
        ).fetchone()
        users = conn.execute('SELECT count(*) FROM "user"').fetchone()
    assert row is not None
    assert row[1:5] == ("github", "usr_1", "gho_cli_token", "ghr_cli_refresh")
    assert row[5].isoformat() == "2030-01-01T00:00:00"
    assert row[6:] == ("repo,read:user", True, True)
    assert users == (1,), "an existing user must be reused, not duplicated"

    listed = run_cli("accounts", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    accounts = json.loads(listed.stdout)
    assert {(a["userId"], a["provider"]) for a in accounts} == {
        ("usr_1", "google"),
        ("usr_1", "github"),
    }
    for secret in ("gho_cli_token", "ghr_cli_refresh", "ya29.product", "1//product-refresh"):
        assert secret not in listed.stdout


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_accounts_add_and_list_never_print_tokens(base_env: dict[str, str], fmt: str) -> None:
    added = run_cli(
        "accounts", "add", "gmail", "--user", "alice", "--access-token", "ya29.secret-access",
        "--refresh-token", "1//secret-refresh", env=base_env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    again = run_cli(
        "accounts", "add", "calendar", "--user", "alice", "--access-token", "ya29.second",
        env=base_env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    args = ["accounts", "list"] + (["--json"] if fmt == "json" else [])
    listed = run_cli(*args, env=base_env)
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout
    assert "google" in listed.stdout
    for secret in ("ya29.secret-access", "1//secret-refresh", "ya29.second"):
        assert secret not in listed.stdout + listed.stderr
    if fmt == "json":
        rows = json.loads(listed.stdout)
        assert len(rows) == 1, "gmail and calendar share one Google account"
        assert rows[0]["refreshToken"] is False, "the second add replaced the tokens"


def test_accounts_add_rejects_a_bad_expiry(base_env: dict[str, str]) -> None:
    result = run_cli(
        "accounts", "add", "github", "--user", "u", "--access-token", "t",
        "--expires-at", "tomorrow", env=base_env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --expires-at: not an ISO-8601 date or time: 'tomorrow'"


def test_missing_required_option_is_one_line(base_env: dict[str, str]) -> None:
    result = run_cli("sync", "gmail", env=base_env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--user" in lines[0]
