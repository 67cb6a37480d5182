"""The operator surface's security, one test per promise (README "Security").

The HTTP API runs in-process through ASGI against real SQLite or PostgreSQL; configuration,
`accounts add` and `api` run as real CLI processes; `connect` runs its real loopback listener
against the OAuth emulator. Every test here failed before the promise was kept.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import structlog
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ingestion.api import create_app
from ingestion.config import Settings
from ingestion.connect import connect_account
from ingestion.providers import registry
from ingestion.queue.jobs import Job
from ingestion.queue.local import LocalJobQueue
from ingestion.services import Services
from ingestion.storage.accounts import find_account, save_account
from ingestion.storage.state import SyncStateStore
from ingestion.worker import Worker, engine_runner
from tests.conftest import INGESTION, run_cli
from tests.emulators.oauth import OAuthState
from tests.emulators.server import free_port
from tests.tokens_probe import ProbeApi, ProbeProvider

ROOT = Path(__file__).resolve().parents[1]
KEY = "k" * 16 + "-security-test-key-0123456789"
LOCAL = "http://127.0.0.1:8080"
#: A non-loopback bind address (every interface), as an operator exposing the API writes it.
EVERYWHERE = "0.0.0.0"  # noqa: S104

pytestmark = pytest.mark.timeout(240)


async def open_services(database_url: str, **values: Any) -> Services:
    return await Services.open(
        Settings(_env_file=None, database_url=database_url, redis_url=None, **values),  # type: ignore[call-arg]
        migrate=True,
    )


async def seed(services: Services, user: str = "alice") -> None:
    async with services.db.session() as session:
        await save_account(session, user_id=user, provider_id="github", access_token="ghp_seed")
    store = SyncStateStore(services.db)
    run = await store.begin(user, "github", "job-1")
    await store.finish(user, "github", run, "error", error="github: HTTP 503")


def client(services: Services, base_url: str = LOCAL) -> httpx.AsyncClient:
    app = create_app(services, None)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
async def keyed(sqlite_url: str) -> AsyncIterator[Services]:
    services = await open_services(sqlite_url, ingestion_api_key=KEY)
    await seed(services)
    yield services
    await services.aclose()


@pytest.fixture
async def open_api(sqlite_url: str) -> AsyncIterator[Services]:
    services = await open_services(sqlite_url)
    await seed(services)
    yield services
    await services.aclose()


# --- the status page and the key -------------------------------------------------------------


async def test_status_page_needs_the_key_when_one_is_set(keyed: Services) -> None:
    """Without the key: a sign-in form, 401, and nothing of any user; with it: the page."""
    async with client(keyed) as http:
        anonymous = await http.get("/")
        wrong = await http.get("/", headers={"Authorization": f"Bearer {KEY[:-1]}x"})
        good = await http.get("/", headers={"Authorization": f"Bearer {KEY}"})
    for refused in (anonymous, wrong):
        assert refused.status_code == 401
        assert 'id="key-form"' in refused.text
        assert "alice" not in refused.text
        assert "HTTP 503" not in refused.text
    assert good.status_code == 200
    assert 'data-user="alice"' in good.text
    assert "HTTP 503" in good.text


async def test_status_page_without_a_key_only_on_a_loopback_bind(sqlite_url: str) -> None:
    exposed = await open_services(sqlite_url, api_host=EVERYWHERE, api_allow_unauthenticated=True)
    try:
        await seed(exposed)
        async with client(exposed) as http:
            page = await http.get("/")
            api = await http.get("/v1/status")  # explicitly allowed without a key
        assert page.status_code == 403
        assert "INGESTION_API_KEY" in page.json()["error"]
        assert "alice" not in page.text
        assert api.status_code == 200
    finally:
        await exposed.aclose()
    local = await open_services(sqlite_url, api_host="127.0.0.1")
    try:
        async with client(local) as http:
            assert (await http.get("/")).status_code == 200
    finally:
        await local.aclose()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "INGESTION_API_KEY: is set but empty"), ("short-key", "at least 32 characters")],
)
def test_empty_and_short_api_keys_stop_start_up(
    base_env: dict[str, str], value: str, expected: str
) -> None:
    result = run_cli("status", env={**base_env, "INGESTION_API_KEY": value}, cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "INGESTION_API_KEY" in lines[0]
    assert expected in lines[0]
    if value:
        assert value not in result.stderr


def test_non_loopback_bind_without_a_key_refuses_to_start(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    port = str(free_port())
    refused = run_cli("api", "--host", EVERYWHERE, "--port", port, env=base_env, cwd=ROOT)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "API_HOST" in lines[0]
    assert "API_ALLOW_UNAUTHENTICATED" in lines[0]
    # An explicit opt-out starts it.
    env = {**base_env, "API_ALLOW_UNAUTHENTICATED": "true"}
    log = tmp_path / "api.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*INGESTION, "api", "--host", EVERYWHERE, "--port", port],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=20)


# --- what a browser on another site can do --------------------------------------------------


async def test_post_routes_take_json_only(open_api: Services) -> None:
    async with client(open_api) as http:
        plain = await http.post(
            "/v1/sync",
            content=json.dumps({"provider": "github", "userId": "alice"}),
            headers={"Content-Type": "text/plain"},
        )
        empty = await http.post("/v1/dlq/retry")
        form = await http.post("/v1/dlq/retry", data={"ids": "1-0"})
        as_json = await http.post("/v1/sync", json={"provider": "github", "userId": "alice"})
    for refused in (plain, empty, form):
        assert refused.status_code == 415
        assert "application/json" in refused.json()["error"]
    assert as_json.status_code == 503  # it reached the route: no queue in this process


async def test_foreign_host_is_refused(sqlite_url: str) -> None:
    services = await open_services(sqlite_url, api_allowed_hosts="ingestion.internal")
    try:
        await seed(services)
        async with client(services, "http://rebound.attacker.example:8080") as http:
            status = await http.get("/v1/status")
            page = await http.get("/")
            probe = await http.get("/healthz")
        assert status.status_code == 421
        assert page.status_code == 421
        assert "alice" not in status.text + page.text
        assert probe.status_code == 200  # probes answer any Host
        for base in ("http://ingestion.internal", "http://localhost:8080", "http://[::1]:8080"):
            async with client(services, base) as http:
                assert (await http.get("/v1/status")).status_code == 200, base
        # Behind a TLS-terminating proxy the page's origin is https://name and Host is name.
        async with client(services, "http://ingestion.internal") as http:
            proxied = await http.post(
                "/v1/sync",
                json={"provider": "github", "userId": "alice"},
                headers={"Origin": "https://ingestion.internal"},
            )
        assert proxied.status_code == 503  # reached the route: no queue in this process
    finally:
        await services.aclose()


async def test_foreign_origin_cannot_change_anything(open_api: Services) -> None:
    body = {"provider": "github", "userId": "alice"}
    async with client(open_api) as http:
        foreign = await http.post("/v1/sync", json=body, headers={"Origin": "http://evil.test"})
        null = await http.post("/v1/dlq/retry", json={}, headers={"Origin": "null"})
        other_port = await http.post(
            "/v1/sync", json=body, headers={"Origin": "http://127.0.0.1:9999"}
        )
        cross_site = await http.post(
            "/v1/sync", json=body, headers={"Sec-Fetch-Site": "cross-site"}
        )
        own = await http.post("/v1/sync", json=body, headers={"Origin": LOCAL})
        reading = await http.get("/v1/status", headers={"Origin": "http://evil.test"})
    for refused in (foreign, null, other_port, cross_site):
        assert refused.status_code == 403
        assert "cross-origin" in refused.json()["error"]
    assert own.status_code == 503  # the page's own origin reaches the route
    assert reading.status_code == 200  # no CORS header: the browser keeps it from the page
    assert "access-control-allow-origin" not in reading.headers


async def test_html_carries_a_strict_content_security_policy(keyed: Services) -> None:
    async with client(keyed) as http:
        login = await http.get("/")
        page = await http.get("/", headers={"Authorization": f"Bearer {KEY}"})
    for answer in (login, page):
        policy = answer.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["default-src"] == "'none'"
        assert "unsafe" not in policy
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
        # The policy forbids inline script: every script of the page is a file of its own.
        assert re.findall(r"<script(?![^>]*\bsrc=)", answer.text) == []
        assert not re.search(r"\son[a-z]+=", answer.text)  # no inline event handlers


# --- API input (issue 14) -------------------------------------------------------------------


async def test_invalid_ids_and_strings_are_422_and_bodies_are_bounded(sqlite_url: str) -> None:
    services = await open_services(sqlite_url, api_max_body_bytes=4096)
    queue = LocalJobQueue()
    try:
        await seed(services)
        app = create_app(services, queue)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as http:
            surrogate = await http.post(
                "/v1/sync",
                content=b'{"provider": "github", "userId": "\\ud800"}',
                headers={"Content-Type": "application/json"},
            )
            nul = await http.post("/v1/sync", json={"provider": "github", "userId": "a\x00b"})
            long = await http.post("/v1/sync", json={"provider": "github", "userId": "u" * 300})
            path_nul = await http.get("/v1/accounts/a%00b")
            deep = await http.post(
                "/v1/sync", content=b"[" * 4000, headers={"Content-Type": "application/json"}
            )
            bad_id = await http.post("/v1/dlq/retry", json={"ids": ["not-an-id"]})
            unknown_id = await http.post("/v1/dlq/retry", json={"ids": ["1-0"]})
            big = await http.post(
                "/v1/sync", json={"provider": "github", "userId": "alice", "pad": "x" * 5000}
            )

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(10):
                    yield b" " * 1000

            streamed = await http.post(
                "/v1/sync", content=chunks(), headers={"Content-Type": "application/json"}
            )
        assert surrogate.status_code == 422
        assert "surrogate" in surrogate.json()["error"]
        assert nul.status_code == 422
        assert "control characters" in nul.json()["error"]
        assert long.status_code == 422
        assert path_nul.status_code == 422
        assert deep.status_code == 422
        assert bad_id.status_code == 422
        assert "not a dead-letter id" in bad_id.json()["error"]
        assert unknown_id.status_code == 404
        assert big.status_code == 413
        assert streamed.status_code == 413
        assert (await queue.stats())["length"] == 0
    finally:
        await services.aclose()


# --- errors carry no data --------------------------------------------------------------------


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """Structured logs of this process, rendered as in production (JSON, tracebacks too)."""
    buffer = io.StringIO()
    saved = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
        cache_logger_on_first_use=False,
    )
    yield buffer
    structlog.configure(**saved)


def test_a_failing_insert_shows_its_token_nowhere(
    pg_url: str,
    base_env: dict[str, str],
    probe: tuple[ProbeApi, str],
    monkeypatch: pytest.MonkeyPatch,
    log_buffer: io.StringIO,
) -> None:
    """A row the database refuses is quoted whole in PostgreSQL's error (DETAIL: Failing row
    contains …) and in SQLAlchemy's (parameters): neither reaches stderr, the logs, lastError,
    the status JSON and page, or the dead letters."""
    api, probe_url = probe
    token = "ghp_SECRET" + os.urandom(8).hex()
    env = {**base_env, "DATABASE_URL": pg_url}
    assert run_cli("db", "upgrade", env=env, cwd=ROOT).returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                'ALTER TABLE account ADD CONSTRAINT no_secret CHECK ("accessToken" <> {})'
            ).format(sql.Literal(token))
        )
        conn.execute(
            "ALTER TABLE ingestion_memories ADD CONSTRAINT no_secret "
            "CHECK (content NOT LIKE '%SECRET%')"
        )

    # 1. The CLI: the account INSERT fails; one line, no token, no traceback.
    added = subprocess.run(
        [*INGESTION, "accounts", "add", "github", "--user", "alice", "--access-token", "-"],
        input=token + "\n",
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert added.returncode == 1
    assert token not in added.stdout + added.stderr
    assert "Traceback" not in added.stderr
    lines = added.stderr.strip().splitlines()
    assert len(lines) == 1, added.stderr
    assert "the database refused the write" in lines[0]
    assert "CheckViolation" in lines[0]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE account DROP CONSTRAINT no_secret")

    # 2. A worker's sync: the record (it quotes the token) cannot be stored.
    monkeypatch.setitem(registry._overrides, "github", ProbeProvider)
    api.tokens[token] = token  # the probe's record content is "seen as <login>"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=pg_url,
        github_api_url=probe_url,
        job_max_attempts=1,
    )

    async def through_worker() -> tuple[list[Any], str, str, str]:
        queue = LocalJobQueue()
        services = await Services.open(settings, lock=queue.sync_lock())
        try:
            async with services.db.session() as session:
                await save_account(
                    session, user_id="alice", provider_id="github", access_token=token
                )
            worker = Worker(settings, queue, engine_runner(services.engine), concurrency=1)
            await queue.enqueue(Job("github", "alice"))
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            for _ in range(600):
                if (await queue.stats())["deadLetters"]:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await task
            dead = await queue.dead_letters()
            app = create_app(services, queue)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as http:
                status = (await http.get("/v1/status")).text
                account = (await http.get("/v1/accounts/alice")).text
                page = (await http.get("/")).text
            return dead, status, account, page
        finally:
            await services.aclose()

    dead, status, account, page = asyncio.run(through_worker())
    assert len(dead) == 1
    assert "IntegrityError" in dead[0].error
    assert "CheckViolation" in dead[0].error
    assert "IntegrityError" in json.loads(account)["providers"][0]["lastError"]
    logs = log_buffer.getvalue()
    assert "sync crashed" in logs
    assert "local_store.py" in logs  # where it happened is kept (a trace without messages)
    for place, shown in (
        ("dead letters", json.dumps([d.error for d in dead])),
        ("status JSON", status),
        ("account JSON", account),
        ("status page", page),
        ("logs", logs),
    ):
        assert token not in shown, place
        assert "Failing row" not in shown, place


async def test_database_errors_never_quote_bound_values(sqlite_url: str) -> None:
    services = await open_services(sqlite_url)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with services.db.session() as session:
                await session.execute(
                    text("INSERT INTO ingestion_no_such_table VALUES (:v)"), {"v": "ghp_bound"}
                )
        assert "ghp_bound" not in str(caught.value)
        assert "parameters hidden" in str(caught.value)
    finally:
        await services.aclose()


def test_cli_failures_are_one_line(base_env: dict[str, str]) -> None:
    """The database down, a duplicate account and a bad flag: one line each, no traceback."""
    port = free_port()  # nothing listens there
    down = run_cli(
        "status", env={**base_env, "DATABASE_URL": f"postgresql://u@127.0.0.1:{port}/x"}, cwd=ROOT
    )
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert down.stderr.strip().splitlines() == [
        "error: cannot use the database (OperationalError (OperationalError)): is it running, "
        "and is DATABASE_URL right?"
    ]
    # A product user already owns the e-mail address `accounts add` gives a new user row.
    assert run_cli("db", "upgrade", env=base_env, cwd=ROOT).returncode == 0
    path = base_env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute(
            'INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt") '
            "VALUES ('u-other', 'Other', 'alice@ingestion.local', 0, '2026-01-01', '2026-01-01')"
        )
    duplicate = subprocess.run(
        [*INGESTION, "accounts", "add", "github", "--user", "alice", "--access-token", "-"],
        input="ghp_duplicate_secret\n",
        env=base_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip().splitlines() == [
        "error: the database refused the write (IntegrityError (IntegrityError)): a row like "
        "it exists already or it breaks one of the database's rules"
    ]
    bad_flag = run_cli(
        "accounts", "add", "github", "--user", "u", "--access-token-env", "NOT SET", env=base_env
    )
    assert bad_flag.returncode == 2
    assert len(bad_flag.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad_flag.stderr
    bad_id = run_cli(
        "dlq", "retry", "0-0; FLUSHALL", env={**base_env, "REDIS_URL": "redis://127.0.0.1:1"}
    )
    assert bad_id.returncode == 2
    assert bad_id.stderr.strip().splitlines() == [
        "error: '0-0; FLUSHALL' is not a dead-letter id (they look like 1767225600000-0)"
    ]


# --- tokens without argv ---------------------------------------------------------------------


def test_tokens_come_from_stdin_or_a_named_variable(base_env: dict[str, str]) -> None:
    access = "ghp_from_stdin_" + os.urandom(6).hex()
    refresh = "ghr_from_env_" + os.urandom(6).hex()
    env = {**base_env, "MY_REFRESH": refresh}
    added = subprocess.run(
        [
            *INGESTION,
            "accounts",
            "add",
            "github",
            "--user",
            "alice",
            "--access-token",
            "-",
            "--refresh-token-env",
            "MY_REFRESH",
        ],
        input=access + "\n",
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    assert access not in added.stdout + added.stderr

    async def stored() -> tuple[str | None, str | None]:
        services = await Services.open(
            Settings(_env_file=None, database_url=base_env["DATABASE_URL"]),  # type: ignore[call-arg]
        )
        try:
            async with services.db.session() as session:
                account = await find_account(session, "alice", "github")
                assert account is not None
                return account.access_token, account.refresh_token
        finally:
            await services.aclose()

    assert asyncio.run(stored()) == (access, refresh)
    missing = run_cli(
        "accounts", "add", "github", "--user", "bob", "--access-token-env", "NOPE", env=env
    )
    assert missing.returncode == 2
    assert "NOPE is not set" in missing.stderr


# --- connect ---------------------------------------------------------------------------------


async def test_connect_ignores_a_forged_callback_then_takes_the_real_one(
    sqlite_url: str, oauth: tuple[OAuthState, str]
) -> None:
    state, url = oauth
    values = {k.lower(): v for k, v in state.settings_env(url).items()}
    settings = Settings(_env_file=None, database_url=sqlite_url, **values)  # type: ignore[call-arg]
    services = await Services.open(settings)
    port = free_port()
    answers: dict[str, int] = {}

    def person(consent_url: str) -> None:
        callback = f"http://127.0.0.1:{port}/callback"
        # An attacker's page fires first: an error, then a code of its own, wrong state.
        answers["forged error"] = httpx.get(
            callback, params={"error": "access_denied", "state": "forged"}
        ).status_code
        answers["forged code"] = httpx.get(
            callback, params={"code": "attacker-code", "state": "forged"}
        ).status_code
        answers["no state"] = httpx.get(callback, params={"code": "x"}).status_code
        redirect = httpx.get(consent_url, follow_redirects=False).headers["location"]
        answers["real"] = httpx.get(redirect).status_code

    def announce(consent_url: str) -> None:
        threading.Thread(target=person, args=(consent_url,), daemon=True).start()

    try:
        result = await connect_account(
            settings,
            services.db,
            services.http,
            provider="github",
            user_id="alice",
            port=port,
            open_browser=False,
            timeout=60,
            announce=announce,
        )
        assert answers == {"forged error": 400, "forged code": 400, "no state": 400, "real": 200}
        assert result.account_provider == "github"
        assert state.token_calls("github", "authorization_code") == 1
        async with services.db.session() as session:
            account = await find_account(session, "alice", "github")
        (grant,) = state.grants.values()
        assert account is not None
        assert account.access_token == grant.access_token
    finally:
        await services.aclose()


# --- URLs ------------------------------------------------------------------------------------


def test_plain_http_urls_only_for_loopback(base_env: dict[str, str]) -> None:
    for host in ("127.0.0.1:9", "localhost", "[::1]:9"):
        Settings(_env_file=None, github_token_url=f"http://{host}/token")  # type: ignore[call-arg]
    # The memory engine is the deployment's own service on its own network.
    Settings(_env_file=None, memory_engine_url="http://memory-engine:8001")  # type: ignore[call-arg]
    refused = run_cli(
        "status", env={**base_env, "GITHUB_TOKEN_URL": "http://github.example/token"}, cwd=ROOT
    )
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "GITHUB_TOKEN_URL" in lines[0]
    assert "loopback" in lines[0]
