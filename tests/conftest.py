"""Shared fixtures: real Redis and PostgreSQL (unique names per test), CLI in subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from ingestion.config import Settings
from tests.emulators.oauth import OAuthState, create_app
from tests.emulators.server import serve
from tests.tokens_probe import ProbeApi, create_probe_app

# Subprocesses (the CLI, workers) must be able to cache bytecode: without it every process
# compiles the whole dependency tree again, which costs seconds per process.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
INGESTION = [sys.executable, "-m", "ingestion.cli"]


def _caller_settings() -> set[str]:
    """Names of every environment variable the service reads (its settings, by field and
    alias), and the proxy variables httpx would route the emulators' traffic through."""
    names = {"PROMETHEUS_MULTIPROC_DIR"}
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias] if isinstance(alias, str) else [])
        names.update(str(choice).upper() for choice in choices if isinstance(choice, str))
    return names


_ISOLATED = _caller_settings()
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _scrub(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    return [k for k in environ if k.upper() in _ISOLATED or k.upper() in _PROXIES]


# Module- and session-scoped fixtures run before the per-test fixture below: scrub once here too.
for _name in _scrub(os.environ):
    del os.environ[_name]


@pytest.fixture(autouse=True)
def isolated_from_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs as if started from an empty folder with none of the service's settings:
    no `./.env` of the caller is read and no `MEMORY_ENGINE_URL`, `DATABASE_URL`, … of the
    caller's shell reaches the code under test or the processes it starts. Tests set what they
    need explicitly; `tests.*` stays importable by subprocesses (plugins) through PYTHONPATH."""
    for name in _scrub(os.environ):
        monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    python_path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(REPO), python_path] if python_path else [str(REPO)])
    )


@pytest.fixture
def namespace() -> Iterator[str]:
    """A unique Redis key namespace; every key under it is deleted after the test."""
    ns = f"test-{uuid.uuid4().hex[:10]}"
    yield ns
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{ns}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database, dropped after the test."""
    name = f"ingestion_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ingestion.db'}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied per test (migrating costs about a second here)."""
    from ingestion.config import Settings
    from ingestion.storage.db import upgrade

    path = tmp_path_factory.mktemp("template") / "ingestion.db"
    upgrade(Settings(database_url=f"sqlite:///{path}"))
    return path


@pytest.fixture
def migrated_sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A SQLite database of this test's own, already at the newest migration."""
    path = tmp_path / "ingestion.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a CLI subprocess: no inherited service settings, JSON logs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "REDIS_", "MEMORY_", "GOOGLE_", "GITHUB_", "TWITTER_"))
    }
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'ingestion.db'}",
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `ingestion ARGS` in a real process and capture its output."""
    return subprocess.run(
        [*INGESTION, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def announced_port(lines: Iterable[str], seen: list[str] | None = None) -> int:
    """The port from the service's "api listening" log line (API_PORT=0 binds any free port).

    `lines` is read until that line (a process's text stderr, say); every line read is appended
    to `seen` so the caller can still inspect the whole output."""
    for line in lines:
        if seen is not None:
            seen.append(line)
        if line.startswith("{") and '"api listening"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError("the process ended without announcing its API port")


def announced_port_in_file(log: Path, proc: subprocess.Popen[Any], timeout: float = 60) -> int:
    """`announced_port` for a process that logs to a file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError, FileNotFoundError):
            return announced_port(log.read_text(errors="replace").splitlines())
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no API port announced within {timeout}s")


@pytest.fixture
def oauth() -> Iterator[tuple[OAuthState, str]]:
    """The OAuth emulator (Google, GitHub and X token endpoints): its state and base URL."""
    state = OAuthState()
    server = serve(create_app(state))
    yield state, server.url
    state.release()
    server.stop()


@pytest.fixture
def probe() -> Iterator[tuple[ProbeApi, str]]:
    """A minimal provider API that checks Bearer tokens (see tests/tokens_probe.py)."""
    api = ProbeApi()
    server = serve(create_probe_app(api))
    yield api, server.url
    server.stop()
