"""The `ingestion` command line (design §3).

Each command builds the settings once (a bad value stops it with one line and exit 2), opens
what it needs, and closes it. Bad arguments also exit 2 with one line; a failed sync exits 1.
Expected failures (the database or Redis unreachable, a write the database refuses, an error
the service raised) end in one line on stderr and exit 1, never a traceback; nothing printed
quotes a driver's message (it can carry a row's tokens).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ingestion.config import (
    PROVIDER_NAMES,
    Settings,
    describe_error,
    parse_loopback_redirect,
    secret_from_environment,
)
from ingestion.errors import (
    ConfigurationError,
    IngestionError,
    MalformedJob,
    describe_unexpected,
    safe_traceback,
)
from ingestion.logs import configure_logging
from ingestion.loop import loop_factory

if TYPE_CHECKING:  # imported where used: the CLI starts without the services' modules
    from ingestion.forget import Forgetter

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="ingestion",
    help="Keeps Gmail, Calendar, GitHub and X data mirrored into a memory engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
accounts_app = typer.Typer(help="Connected accounts.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-lettered jobs.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="Users: forgetting everything of one.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(users_app, name="users")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ACCOUNT_PROVIDERS = ("google", "github", "twitter")
#: A token option's value that means "read it from standard input".
STDIN = "-"
#: Longest user id the service's tables hold.
USER_ID_MAX = 255


class UsageFailure(Exception):
    """Bad arguments or configuration: one line on stderr, exit status 2."""


def fail(message: str) -> NoReturn:
    raise UsageFailure(message)


def describe_failure(exc: BaseException) -> str | None:
    """One line for a failure a command can expect (None: a bug, shown with its trace)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

    kind = describe_unexpected(exc).removeprefix("unexpected ")
    if isinstance(exc, IngestionError):
        return str(exc)
    if isinstance(exc, IntegrityError):
        return (
            f"the database refused the write ({kind}): a row like it exists already or it "
            "breaks one of the database's rules"
        )
    if isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return f"cannot use the database ({kind}): is it running, and is DATABASE_URL right?"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return f"cannot reach Redis ({kind}): is it running, and is REDIS_URL right?"
    if isinstance(exc, ConnectionError):
        return f"a connection failed ({kind})"
    return None


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        fail(describe_error(exc))
    configure_logging(settings)
    return settings


def run_async(settings: Settings, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            return runner.run(factory())
    except ConfigurationError as exc:
        fail(str(exc))


def check_provider(name: str) -> str:
    if name not in PROVIDER_NAMES:
        fail(f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}")
    return name


def check_user(user_id: str) -> str:
    if not user_id.strip() or len(user_id) > USER_ID_MAX:
        fail(f"user id must be 1 to {USER_ID_MAX} characters")
    return user_id


def parse_when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option}: not an ISO-8601 date or time: {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=_json_default, indent=2) + "\n")


async def with_services(
    settings: Settings,
    body: Callable[[Any], Awaitable[T]],
    *,
    migrate: bool | None = None,
    sync_lock: bool = False,
) -> T:
    """Open the process's services around `body`.

    `sync_lock`: with REDIS_URL set, syncs take the same per-(provider, user) Redis lock as the
    workers, so a foreground sync never runs beside a worker's job for the same pair.
    """
    from ingestion.services import Services, load_plugins

    load_plugins(settings)
    queue = None
    lock = None
    if sync_lock and settings.redis_url:
        from ingestion.queue import RedisJobQueue
        from ingestion.queue.locks import RedisSyncLock

        queue = RedisJobQueue(settings)
        lock = RedisSyncLock(queue.redis, queue.keys, settings.job_visibility_timeout)
    services = await Services.open(settings, migrate=migrate, lock=lock)
    try:
        return await body(services)
    finally:
        await services.aclose()
        if queue is not None:
            await queue.aclose()


# --- run, worker, scheduler, api --------------------------------------------------------------


@app.command()
def run() -> None:
    """Scheduler + worker + HTTP API in one process (the main job)."""
    from ingestion.app import run_service

    settings = load_settings()
    exposure = settings.api_exposure_error()
    if exposure:
        fail(exposure)
    run_async(settings, lambda: run_service(settings))


# --- sync ---------------------------------------------------------------------------------------


@app.command()
def sync(
    provider: Annotated[str, typer.Argument(help="gmail | calendar | github | twitter")],
    user: Annotated[str, typer.Option("--user", help="User id")],
    full: Annotated[bool, typer.Option("--full", help="Ignore the cursor: full sync")] = False,
    since: Annotated[str | None, typer.Option("--since", help="ISO-8601 lower bound")] = None,
    max_results: Annotated[
        int | None, typer.Option("--max-results", min=1, help="Stop after N items")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """One sync in the foreground, without the queue."""
    from ingestion.providers.base import FetchOptions

    check_provider(provider)
    options = FetchOptions(
        max_results=max_results, since=parse_when(since, "--since"), force_full_sync=full
    )
    settings = load_settings()

    async def body(services: Any) -> Any:
        from ingestion.progress import SyncProgress

        with SyncProgress(enabled=not as_json and sys.stderr.isatty(), label=provider) as bar:
            try:
                return await services.engine.run(provider, user, options, progress=bar.update)
            except ConfigurationError:
                raise  # exit 2, one line naming the variable
            except IngestionError as exc:
                return exc

    result = run_async(settings, lambda: with_services(settings, body, sync_lock=True))
    if isinstance(result, IngestionError):
        if as_json:
            print_json(
                {"provider": provider, "userId": user, "status": "error", "error": str(result)}
            )
        else:
            err.print(f"sync failed: {result}", markup=False, highlight=False)
        raise typer.Exit(1)
    if result.status == "removed":
        message = (
            f"{provider} for user {user} was removed (`ingestion accounts remove`, `users forget`, "
            "or a disconnect in the product); `accounts add` or `connect` resumes it"
        )
        if as_json:
            print_json(result.as_json())
        else:
            err.print(message, markup=False, highlight=False)
        raise typer.Exit(1)
    if as_json:
        print_json(result.as_json())
        return
    table = Table(title=f"{provider} sync for {user}", show_header=True)
    # Items stored with defects or skipped (`ingestion.providers.items`), shown when there are.
    problems = [k for k in ("defective", "skipped") if result.stats.get(k)]
    for column in ("fetched", "upserted", "deleted", "pages", "seconds", *problems):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.fetched),
        str(result.upserted),
        str(result.deleted),
        str(result.pages),
        f"{result.seconds:.2f}",
        *(str(result.stats[k]) for k in problems),
    )
    out.print(table)


# --- accounts ----------------------------------------------------------------------------------


def read_token(value: str | None, env_name: str | None, option: str) -> str | None:
    """A token from `--OPTION -` (standard input), `--OPTION-env NAME` or `--OPTION VALUE`."""
    if value is not None and env_name is not None:
        fail(f"{option}: give a value or {option}-env, not both")
    if env_name is not None:
        try:
            token = secret_from_environment(env_name)
        except ValueError as exc:
            fail(f"{option}-env: {exc}")
        if token is None:
            fail(f"{option}-env: the environment variable {env_name} is not set")
    elif value == STDIN:
        # At a terminal: a prompt that does not echo; otherwise whatever is piped in.
        token = (
            getpass.getpass(f"{option.removeprefix('--')}: ")
            if sys.stdin.isatty()
            else sys.stdin.read()
        ).strip()
    else:
        token = value
    if token is None:
        return None
    if not token or len(token) > 16_384 or any(c.isspace() or ord(c) < 32 for c in token):
        fail(f"{option}: expected one token of 1 to 16384 characters without spaces")
    return token


@accounts_app.command("add")
def accounts_add(
    provider: Annotated[str, typer.Argument(help="gmail | calendar | github | twitter")],
    user: Annotated[str, typer.Option("--user", help="User id")],
    access_token: Annotated[
        str | None,
        typer.Option(
            "--access-token",
            help="Access token; `-` reads it from standard input (keeps it out of the "
            "process list and shell history)",
        ),
    ] = None,
    access_token_env: Annotated[
        str | None,
        typer.Option("--access-token-env", help="Name of an environment variable holding it"),
    ] = None,
    refresh_token: Annotated[
        str | None, typer.Option("--refresh-token", help="Refresh token; `-` = standard input")
    ] = None,
    refresh_token_env: Annotated[
        str | None,
        typer.Option("--refresh-token-env", help="Name of an environment variable holding it"),
    ] = None,
    expires_at: Annotated[str | None, typer.Option("--expires-at", help="ISO-8601")] = None,
    scope: Annotated[str | None, typer.Option("--scope")] = None,
) -> None:
    """Store a connected account (personal access tokens, tests, standalone use)."""
    from ingestion.providers.registry import account_provider_of
    from ingestion.storage.accounts import save_account
    from ingestion.storage.encryption import TokenCipher

    check_provider(provider)
    if [access_token, refresh_token].count(STDIN) == 2:
        fail("only one of --access-token and --refresh-token can read standard input")
    if access_token is None and access_token_env is None:
        fail("give --access-token - (standard input), --access-token-env NAME or --access-token")
    access = read_token(access_token, access_token_env, "--access-token")
    assert access is not None
    refresh = read_token(refresh_token, refresh_token_env, "--refresh-token")
    expiry = parse_when(expires_at, "--expires-at")
    settings = load_settings()
    account_provider = account_provider_of(provider)

    async def body(services: Any) -> str:
        from ingestion.storage.removals import Removals

        await Removals(services.db).lift(user, provider)
        async with services.db.session() as session:
            account = await save_account(
                session,
                user_id=user,
                provider_id=account_provider,
                access_token=access,
                refresh_token=refresh,
                expires_at=expiry,
                scope=scope,
                cipher=TokenCipher.from_settings(settings),
            )
            return str(account.id)

    account_id = run_async(settings, lambda: with_services(settings, body))
    out.print(
        f"stored {account_provider} account {account_id} for user {user}",
        markup=False,
        highlight=False,
    )


@accounts_app.command("remove")
def accounts_remove(
    provider: Annotated[str, typer.Argument(help="gmail | calendar | github | twitter")],
    user: Annotated[str, typer.Option("--user", help="User id")],
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Also delete every record delivered for this pair from the memory engine",
        ),
    ] = False,
    delete_account: Annotated[
        bool,
        typer.Option(
            "--delete-account",
            help="Also DELETE the product's Better Auth account row (its tokens). Without it "
            "the service never deletes that row. Gmail and Calendar share the Google "
            "account: remove the other one first.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Stop syncing the pair at once and drop its state; --purge also deletes its records.

    A queued or running job of the pair ends without writing; the scheduler skips it until
    `accounts add` or `connect` stores tokens again. Idempotent: running it again finishes an
    interrupted purge.
    """
    check_provider(provider)
    check_user(user)
    settings = load_settings()

    result = _with_forgetter(
        settings,
        lambda forgetter: forgetter.remove(
            provider, user, purge=purge, delete_account=delete_account
        ),
        failed="remove failed",
        stopped="the pair is stopped",
    )
    if as_json:
        print_json(result.as_json())
        return
    parts = [f"removed {provider} for user {user}"]
    if result.purge:
        parts.append(f"{result.purged} record(s) deleted from the memory engine")
    elif result.kept:
        parts.append(f"{result.kept} delivered record(s) kept (purge with --purge)")
    if result.account_deleted:
        parts.append("account row deleted")
    if result.pending:
        parts.append(
            "a running job still holds the pair: `ingestion run` / `worker` finish the removal, "
            "or run this command again"
        )
    out.print("; ".join(parts), markup=False, highlight=False)


def _with_forgetter(
    settings: Settings,
    call: Callable[[Forgetter], Awaitable[Any]],
    *,
    failed: str,
    stopped: str,
) -> Any:
    """`call(forgetter)` with the services of one command (the sync lock taken as a worker
    takes it); a removal that could not finish ends the command with exit code 1 and one line
    saying what is already stopped and how to finish."""

    async def body(services: Any) -> Any:
        from ingestion.forget import Forgetter

        try:
            return await call(Forgetter.of(services))
        except IngestionError as exc:
            return exc

    result = run_async(settings, lambda: with_services(settings, body, sync_lock=True))
    if isinstance(result, IngestionError):
        err.print(
            f"{failed}: {result} ({stopped}; run the command again to finish)",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)
    return result


@users_app.command("forget")
def users_forget(
    user: Annotated[str, typer.Argument(help="User id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON")] = False,
) -> None:
    """Every provider of the user removed and purged, and the user's sync history; idempotent.

    The product's Better Auth rows are kept (they are the product's to delete).
    """
    check_user(user)
    settings = load_settings()

    result = _with_forgetter(
        settings,
        lambda forgetter: forgetter.forget_user(user),
        failed="forget failed",
        stopped="syncing is stopped",
    )
    document = result.as_json()
    if as_json:
        print_json(document)
        return
    per_provider = ", ".join(
        f"{name} {report['purged']}" for name, report in document["providers"].items()
    )
    out.print(
        f"forgot user {user}: {document['deleted']} record(s) deleted"
        + (f" ({per_provider})" if per_provider else "")
        + f", {document['runs']} sync run(s) removed"
        + (
            "; a running job still holds a pair: it finishes in the background"
            if document["pending"]
            else ""
        ),
        markup=False,
        highlight=False,
    )


@accounts_app.command("list")
def accounts_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Connected accounts (tokens are never printed)."""
    from ingestion.storage.accounts import list_accounts

    settings = load_settings()

    async def body(services: Any) -> Any:
        async with services.db.session() as session:
            return await list_accounts(session)

    accounts = run_async(settings, lambda: with_services(settings, body))
    rows = [
        {
            "id": a.id,
            "userId": a.user_id,
            "provider": a.provider_id,
            "accountId": a.account_id,
            "scope": a.scope,
            "refreshToken": a.has_refresh_token,
            "accessTokenExpiresAt": a.access_token_expires_at,
            "updatedAt": a.updated_at,
        }
        for a in accounts
    ]
    if as_json:
        print_json(rows)
        return
    table = Table(show_header=True)
    for column in ("user", "provider", "account", "scope", "refresh token", "expires"):
        table.add_column(column)
    for row in rows:
        expires = row["accessTokenExpiresAt"]
        table.add_row(
            row["userId"],
            row["provider"],
            row["accountId"],
            row["scope"] or "",
            "yes" if row["refreshToken"] else "no",
            _json_default(expires) if expires else "never",
        )
    out.print(table)


# --- connect -------------------------------------------------------------------------------------


@app.command()
def connect(
    provider: Annotated[str, typer.Argument(help="gmail | calendar | github | twitter")],
    user: Annotated[str, typer.Option("--user", help="User id")],
    port: Annotated[
        int,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            help="Loopback port of the redirect URI http://127.0.0.1:PORT/callback "
            "(0 = any free port; use the port registered for the OAuth app where required)",
        ),
    ] = 0,
    redirect_uri: Annotated[
        str | None,
        typer.Option(
            "--redirect-uri",
            help="Exact redirect URI registered for the OAuth app, a loopback URL such as "
            "http://127.0.0.1:8765/callback (needed for Google Web-application clients and X; "
            "default OAUTH_REDIRECT_URI)",
        ),
    ] = None,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Only print the consent URL")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for consent")
    ] = 300.0,
) -> None:
    """OAuth authorization-code flow (PKCE) on a loopback redirect; stores the tokens."""
    from ingestion.connect import connect_account

    check_provider(provider)
    settings = load_settings()
    if redirect_uri is not None:
        try:
            parse_loopback_redirect(redirect_uri)
        except ValueError as exc:
            fail(f"--redirect-uri: {exc}")

    def announce(url: str) -> None:
        out.print("Open this URL to grant access:", markup=False, highlight=False)
        out.print(url, markup=False, highlight=False, soft_wrap=True)
        sys.stdout.flush()

    async def body(services: Any) -> Any:
        from ingestion.storage.removals import Removals

        try:
            connected = await connect_account(
                settings,
                services.db,
                services.http,
                provider=provider,
                user_id=user,
                port=port,
                redirect_uri=redirect_uri,
                open_browser=not no_browser,
                timeout=timeout,
                announce=announce,
            )
        except ConfigurationError:
            raise
        except IngestionError as exc:
            return exc
        await Removals(services.db).lift(user, provider)
        return connected

    result = run_async(settings, lambda: with_services(settings, body, sync_lock=True))
    if isinstance(result, IngestionError):
        err.print(f"connect failed: {result}", markup=False, highlight=False)
        raise typer.Exit(1)
    expires = _json_default(result.expires_at) if result.expires_at else "never"
    out.print(
        f"connected {result.account_provider} account {result.account_id} for user {user} "
        f"(scope: {result.scope or 'none'}; refresh token: "
        f"{'yes' if result.has_refresh_token else 'no'}; expires: {expires})",
        markup=False,
        highlight=False,
    )


# --- status --------------------------------------------------------------------------------------


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    limit: Annotated[int | None, typer.Option(help="Pairs per page (0-1000; default 500)")] = None,
    cursor: Annotated[str | None, typer.Option(help="nextCursor of the previous page")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider")] = None,
    state: Annotated[
        str | None,
        typer.Option("--status", help="Only this status (idle, running, ok, error, …)"),
    ] = None,
) -> None:
    """Per user and provider (one page): status, last sync, items, last error; the aggregate
    over every pair; queue figures. `--json` prints what `GET /v1/status` answers."""
    from ingestion.status import InvalidStatusQuery, StatusQuery, gather_status

    settings = load_settings()
    try:
        query = StatusQuery(limit=limit, cursor=cursor, provider=provider, status=state)
    except InvalidStatusQuery as exc:
        fail(str(exc))

    async def body(services: Any) -> Any:
        from ingestion.queue import queue_stats_for

        return await gather_status(services.db, queue_stats_for(settings), query=query)

    document = run_async(settings, lambda: with_services(settings, body))
    if as_json:
        print_json(document)
        return
    table = Table(title="sync status", show_header=True)
    for column in ("user", "provider", "status", "last sync", "items", "push", "last error"):
        table.add_column(column)
    for row in document["accounts"]:
        table.add_row(
            row["userId"],
            row["provider"],
            row["status"],
            row["lastSyncTime"] or "never",
            str(row["itemsUpserted"]),
            row.get("push", "off"),
            (row["lastError"] or "")[:80],
        )
    out.print(table)
    if document["nextCursor"]:
        out.print(f"next page: --cursor {document['nextCursor']}", markup=False, highlight=False)
    counts = document["aggregate"]["counts"]
    for name in sorted(counts):
        figures = ", ".join(f"{k}={v}" for k, v in sorted(counts[name].items()))
        out.print(f"{name}: {figures}", markup=False, highlight=False)
    queue = document["queue"]
    out.print(
        "queue: " + ", ".join(f"{k}={v}" for k, v in queue.items()), markup=False, highlight=False
    )


# --- db ------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    from ingestion.storage.db import current_revision, upgrade

    settings = load_settings()
    upgrade(settings)
    out.print(
        f"database ({settings.database_kind}) at revision {current_revision(settings)}",
        markup=False,
        highlight=False,
    )


# --- queue: worker, scheduler, enqueue, dead letters ---------------------------------------------


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, max=256, help="Jobs in flight")
    ] = None,
) -> None:
    """Consume jobs from the Redis queue (needs REDIS_URL) until SIGINT/SIGTERM."""
    from ingestion.worker import serve_worker

    settings = load_settings()
    if not settings.redis_url:
        fail("REDIS_URL is not set: `ingestion worker` consumes the Redis job queue")
    run_async(settings, lambda: serve_worker(settings, concurrency))


@app.command()
def scheduler() -> None:
    """Enqueue sync jobs on each provider's cron schedule (needs REDIS_URL)."""
    from ingestion.scheduler import serve_scheduler

    settings = load_settings()
    if not settings.redis_url:
        fail("REDIS_URL is not set: `ingestion scheduler` enqueues on the Redis job queue")
    run_async(settings, lambda: serve_scheduler(settings))


def _queue_settings() -> Settings:
    settings = load_settings()
    if not settings.redis_url:
        fail("REDIS_URL is not set: the job queue lives in Redis")
    return settings


async def _with_queue(settings: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    from ingestion.queue import redis_queue

    queue = redis_queue(settings)
    try:
        return await body(queue)
    finally:
        await queue.aclose()


@app.command()
def enqueue(
    provider: Annotated[str, typer.Argument(help="gmail | calendar | github | twitter")],
    user: Annotated[str, typer.Option("--user", help="User id")],
    full: Annotated[bool, typer.Option("--full", help="Ignore the cursor: full sync")] = False,
) -> None:
    """Put one sync job on the queue (merged into one already queued or running)."""
    from ingestion.queue.jobs import Job, JobOptions

    check_provider(provider)
    settings = _queue_settings()
    job = Job(provider, user, JobOptions(force_full_sync=full))
    result = run_async(settings, lambda: _with_queue(settings, lambda q: q.enqueue(job)))
    verb = "coalesced into queued job" if result.coalesced else "enqueued job"
    note = {
        "merged": "; it will run as a full sync",
        "follow-up": "; it is running: a full sync follows when it finishes",
        "covered": "; it is already running as a full sync",
    }.get(result.widening or "", "")
    out.print(f"{verb} {result.job_id}{note}", markup=False, highlight=False)


@dlq_app.command("list")
def dlq_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N entries")] = 100,
) -> None:
    """Dead-lettered jobs, oldest first; `count` = times the same (provider, user, error) died."""
    settings = _queue_settings()
    dead = run_async(settings, lambda: _with_queue(settings, lambda q: q.dead_letters(limit)))
    rows = [
        {
            "id": d.id,
            "type": d.type,
            "payload": d.payload,
            "error": d.error,
            "failedAt": d.failed_at,
            "attempts": d.attempts,
            "count": d.count,
        }
        for d in dead
    ]
    if as_json:
        print_json(rows)
        return
    table = Table(title="dead letters", show_header=True)
    for column in ("id", "type", "payload", "attempts", "count", "failed at", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["id"],
            row["type"],
            row["payload"][:60],
            str(row["attempts"]),
            str(row["count"]),
            row["failedAt"],
            row["error"][:100],
        )
    out.print(table)


@dlq_app.command("retry")
def dlq_retry(
    entry_id: Annotated[str | None, typer.Argument(help="Dead letter id")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every dead letter")] = False,
) -> None:
    """Put a dead job (or all of them) back on the queue as a fresh job."""
    if (entry_id is None) == (not all_):
        fail("give a dead letter ID or --all (not both)")
    from ingestion.queue.base import is_entry_id

    if entry_id is not None and not is_entry_id(entry_id):
        fail(f"{entry_id[:40]!r} is not a dead-letter id (they look like 1767225600000-0)")
    settings = _queue_settings()
    ids = None if all_ else [str(entry_id)]
    moved = run_async(settings, lambda: _with_queue(settings, lambda q: q.retry_dead(ids)))
    if not all_ and moved == 0:
        fail(f"no dead letter with id {entry_id!r}")
    out.print(f"requeued {moved} job(s)", markup=False, highlight=False)


@dlq_app.command("purge")
def dlq_purge() -> None:
    """Delete every dead letter."""
    settings = _queue_settings()
    purged = run_async(settings, lambda: _with_queue(settings, lambda q: q.purge_dead()))
    out.print(f"purged {purged} dead letter(s)", markup=False, highlight=False)


# --- api ---------------------------------------------------------------------------------------


@app.command("api")
def api_command(
    host: Annotated[str | None, typer.Option("--host", help="Bind address (API_HOST)")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="Port (API_PORT)")
    ] = None,
) -> None:
    """The HTTP API alone: health, readiness, metrics, sync trigger, status page."""
    from ingestion.api import run_api

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["api_host"] = host
    if port is not None:
        overrides["api_port"] = port
    settings = load_settings(**overrides)
    exposure = settings.api_exposure_error()
    if exposure:
        fail(exposure)
    try:
        run_async(settings, lambda: run_api(settings))
    except OSError as exc:
        fail(str(exc))


# --- search --------------------------------------------------------------------------------------


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to look for (all must match)")],
    user: Annotated[str | None, typer.Option("--user", help="Only this user's memories")] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="gmail | calendar | github | twitter")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most N hits")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array")] = False,
) -> None:
    """Look inside the embedded memory store: best matches with date, source and a snippet."""
    if source is not None:
        check_provider(source)
    settings = load_settings()
    if settings.memory_engine_url:
        fail(
            "search looks inside the embedded memory store, but MEMORY_ENGINE_URL is set: "
            "memories go to the memory engine"
        )
    from ingestion.memory.search import query_terms, search_memories

    if not query_terms(query):
        fail("search: QUERY has no words to look for")

    async def body(services: Any) -> Any:
        return await search_memories(services.db, query, user_id=user, source=source, limit=limit)

    hits = run_async(settings, lambda: with_services(settings, body))
    if as_json:
        print_json([hit.as_json() for hit in hits])
        return
    if not hits:
        out.print(f"no memories match {query!r}", markup=False, highlight=False)
        return
    from rich.text import Text

    table = Table(show_header=True, show_lines=True)
    for column in ("date", "source", "title", "snippet"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        snippet = Text(hit.snippet)
        snippet.highlight_words(query_terms(query), style="bold", case_sensitive=False)
        title = Text(hit.title or "(no title)")
        if hit.url:
            title.append(f"\n{hit.url}", style="dim")
        table.add_row(
            hit.occurred_at.strftime("%Y-%m-%d %H:%M"), f"{hit.source}/{hit.type}", title, snippet
        )
    out.print(table)


def main() -> None:
    """Entry point: turns usage and configuration errors into one line and exit status 2."""
    try:
        # Without standalone mode click *returns* the code of a `typer.Exit` instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UsageFailure as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except MalformedJob as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.exceptions.TyperException as exc:
        # Usage errors of the CLI parser (missing option, bad value): one line, exit 2.
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        err.print(f"error: {' '.join(str(message).split())}", markup=False, highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:
        line = describe_failure(exc)
        if line is None:  # a bug: where it happened, but never the message (it may quote data)
            err.print(safe_traceback(exc), markup=False, highlight=False, end="")
            line = describe_unexpected(exc)
        err.print(f"error: {line}", markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
