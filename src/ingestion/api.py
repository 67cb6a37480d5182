"""The HTTP API (design §8): health, readiness, metrics, sync trigger, status, status page.

- `GET /healthz`: 200 while the process runs.
- `GET /readyz`: 200 when the database and the queue answer; 503 naming what does not.
- `GET /metrics`: Prometheus text (every process on the host in multiprocess mode).
- `POST /v1/sync` `{"provider", "userId", "options"?}`: 202 `{"jobId", "coalesced"}`, plus
  `"widening"` (`merged` | `follow-up` | `covered`, see `queue.base.Widening`) when a coalesced
  request asked for a full sync; 422 bad input, 404 no such account, 409 the pair was removed,
  503 no queue in this process.
- `GET /v1/status` (`?limit=&cursor=&provider=&status=`): exactly `ingestion status --json` with
  the same options: one keyset page of pairs, `nextCursor`, the `aggregate` block; 422 for a bad
  parameter.
- `GET /v1/accounts/{userId}`: sync state per provider of one user (no token); 404 unknown.
- `DELETE /v1/accounts/{userId}/{provider}` (`?purge=true`): `ingestion accounts remove`; 200 with
  what was done, 202 when a running job still holds the pair (the removal finishes in the
  background), 422 unknown provider, 503 when the memory engine refused the purge (it resumes).
- `DELETE /v1/users/{userId}`: `ingestion users forget`; 200 with counts (202 as above).
- `POST /v1/dlq/retry` `{"ids"?: [...]}`: `{"retried": n}` (all dead letters without `ids`).
- `GET /`: the status page for people (`ingestion.web`).

Every request first passes `ingestion.api_guard.RequestGuard` (Host allow-list, same-origin
state changes, the API key, JSON bodies of bounded size, security headers): with
`INGESTION_API_KEY` set, every `/v1` route and the status page need `Authorization: Bearer <key>`,
else 401. The status page then answers with a sign-in form (no data); its script keeps the key in
the tab's sessionStorage and loads the page with it. `/healthz`, `/readyz` and `/metrics` stay
open, as probes and scrapers expect. Ids and strings from a request are checked before any
storage sees them: 422 with a message when invalid, 404 when unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import structlog
import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ingestion import metrics
from ingestion.api_guard import RequestGuard
from ingestion.config import PROVIDER_NAMES, Settings
from ingestion.errors import IngestionError, MalformedJob, describe_unexpected
from ingestion.forget import Forgetter
from ingestion.providers.registry import account_provider_of
from ingestion.push import ChannelStore, summarize
from ingestion.push.routes import push_routes
from ingestion.queue.base import JobQueue, is_entry_id
from ingestion.queue.jobs import Job, options_from_json
from ingestion.services import Services
from ingestion.status import (
    AggregateCache,
    InvalidStatusQuery,
    QueueStatsFn,
    StatusQuery,
    gather_status,
    row_of,
)
from ingestion.storage.accounts import account_exists, find_account
from ingestion.storage.removals import Removals
from ingestion.storage.state import SyncStateStore
from ingestion.web import (
    ATTENTION_LIMIT,
    ROW_LIMIT,
    STATIC_DIR,
    render_login_page,
    render_status_page,
)

__all__ = ["create_app", "run_api", "serve"]

log = structlog.get_logger("ingestion.api")

#: How long /readyz waits for the database or the queue before calling it unreachable.
READY_TIMEOUT = 3.0

#: Longest user id accepted (the width of the state tables' `user_id` column).
USER_ID_MAX = 255
#: Most dead-letter ids one retry request may name.
DLQ_IDS_MAX = 1000


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def user_id_problem(value: object) -> str | None:
    """Why `value` is not a user id we can look up (None when it is fine).

    A user id is text of 1 to 255 characters, encodable as UTF-8 (no lone surrogate) and free
    of control characters (PostgreSQL refuses NUL in text).
    """
    if not isinstance(value, str) or not value.strip():
        return "userId must be a non-empty string"
    if len(value) > USER_ID_MAX:
        return f"userId must be at most {USER_ID_MAX} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "userId must be valid Unicode text (it contains a lone surrogate)"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "userId must not contain control characters"
    return None


class _Api:
    """The route handlers, bound to one process's services and (optional) queue."""

    def __init__(self, services: Services, queue: JobQueue | None) -> None:
        self.services = services
        self.queue = queue
        self._key_required = services.settings.ingestion_api_key is not None
        self.forgetter = Forgetter.of(services)
        #: One grouped scan serves every status request and scrape within a few seconds.
        self.aggregates = AggregateCache()

    @property
    def queue_stats(self) -> QueueStatsFn | None:
        """The queue figures for the status document; an unreachable queue says so in them."""
        queue = self.queue
        if queue is None:
            return None

        async def stats() -> dict[str, Any]:
            try:
                return await asyncio.wait_for(queue.stats(), READY_TIMEOUT)
            except Exception as exc:
                return {"kind": queue.kind, "error": f"queue unreachable: {type(exc).__name__}"}

        return stats

    # --- probes -------------------------------------------------------------------------
    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        checks: dict[str, str] = {}

        async def database() -> None:
            async with self.services.db.session() as session:
                await session.execute(text("SELECT 1"))

        checks["database"] = await _check(database)
        if self.queue is None:
            checks["queue"] = "none in this process"
        else:
            checks["queue"] = await _check(self.queue.ping)
        ready = all(v in ("ok", "none in this process") for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", **checks},
            status_code=200 if ready else 503,
        )

    async def metrics(self, _request: Request) -> Response:
        """Counters as they are; the queue and cursor-age gauges from the queue's figures and
        the cached aggregate (computed in SQL, never a read of every row per scrape)."""
        stats = await self.queue_stats() if self.queue_stats else None
        found = await self.aggregates.get(self.services.db)
        metrics.refresh_gauges(stats, found.cursor_ages(datetime.now(UTC)))
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    # --- /v1 ----------------------------------------------------------------------------
    async def sync(self, request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            return _problem(422, "the body must be a JSON object")
        if not isinstance(body, dict):
            return _problem(422, "the body must be a JSON object")
        provider = body.get("provider")
        if provider not in PROVIDER_NAMES:
            return _problem(
                422, f"provider must be one of {', '.join(PROVIDER_NAMES)} (got {provider!r:.40})"
            )
        user_id = body.get("userId")
        problem = user_id_problem(user_id)
        if problem is not None:
            return _problem(422, problem)
        assert isinstance(user_id, str)
        try:
            options = options_from_json(body.get("options"))
        except MalformedJob as exc:
            return _problem(422, str(exc))
        account_provider = account_provider_of(provider)
        async with self.services.db.read() as connection:  # one indexed read, autocommit
            account_id = await account_exists(connection, user_id, account_provider)
        if account_id is None:
            return _problem(
                404, f"user {user_id!r:.80} has no connected {account_provider} account"
            )
        if await Removals(self.services.db).stopped(user_id, provider, account_id):
            return _problem(
                409,
                f"{provider} was removed for this user; `ingestion accounts add` or `connect` "
                "resumes it",
            )
        if self.queue is None:
            return _problem(
                503,
                "no job queue runs in this process: set REDIS_URL for `ingestion api`, "
                "or use `ingestion run`",
            )
        try:
            result = await self.queue.enqueue(
                Job(provider=provider, user_id=user_id, options=options)
            )
        except Exception as exc:
            log.warning("enqueue failed", provider=provider, error=describe_unexpected(exc))
            return _problem(503, f"the queue did not accept the job: {type(exc).__name__}")
        log.info(
            "sync requested",
            provider=provider,
            user_id=user_id,
            job_id=result.job_id,
            coalesced=result.coalesced,
            widening=result.widening,
        )
        answer: dict[str, Any] = {"jobId": result.job_id, "coalesced": result.coalesced}
        if result.widening is not None:
            answer["widening"] = result.widening
        return JSONResponse(answer, status_code=202)

    async def status(self, request: Request) -> Response:
        try:
            query = StatusQuery.of(dict(request.query_params))
        except InvalidStatusQuery as exc:
            return _problem(422, str(exc))
        return JSONResponse(
            await gather_status(
                self.services.db, self.queue_stats, query=query, aggregates=self.aggregates
            )
        )

    async def account(self, request: Request) -> Response:
        """The rows `/v1/status` has for one user, read by key (not by scanning everyone)."""
        user_id = request.path_params["user_id"]
        problem = user_id_problem(user_id)
        if problem is not None:
            return _problem(422, problem)
        rows = await self._rows_of_user(user_id)
        if not rows:
            return _problem(404, f"no connected account or sync state for user {user_id!r:.80}")
        return JSONResponse({"userId": user_id, "providers": rows})

    async def _rows_of_user(self, user_id: str) -> list[dict[str, Any]]:
        store = SyncStateStore(self.services.db)
        connected: set[str] = set()
        async with self.services.db.session() as session:
            for account_provider in sorted({account_provider_of(p) for p in PROVIDER_NAMES}):
                if await find_account(session, user_id, account_provider) is not None:
                    connected.add(account_provider)
        rows: list[dict[str, Any]] = []
        removals = Removals(self.services.db)
        for provider in sorted(PROVIDER_NAMES):
            account_provider = account_provider_of(provider)
            state = await store.load(user_id, provider)
            removal = await removals.get(user_id, provider)
            pending = removal is not None and removal.settled_at is None
            if account_provider not in connected and state.updated_at is None and not pending:
                continue
            row = row_of(
                state, account_provider if account_provider in connected else None, removal
            )
            row["push"] = summarize(
                await ChannelStore(self.services.db).of_user(provider, user_id),
                datetime.now(UTC),
            )
            rows.append(row)
        return rows

    async def remove_account(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        provider = request.path_params["provider"]
        problem = user_id_problem(user_id)
        if problem is not None:
            return _problem(422, problem)
        if provider not in PROVIDER_NAMES:
            return _problem(
                422, f"provider must be one of {', '.join(PROVIDER_NAMES)} (got {provider!r:.40})"
            )
        purge = request.query_params.get("purge", "false").lower()
        if purge not in ("true", "false", "1", "0"):
            return _problem(422, "purge must be true or false")
        try:
            report = await self.forgetter.remove(provider, user_id, purge=purge in ("true", "1"))
        except IngestionError as exc:
            return _problem(503, f"removal recorded, not finished (it resumes): {exc}")
        answer = report.as_json()
        return JSONResponse(answer, status_code=202 if report.pending else 200)

    async def forget_user(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        problem = user_id_problem(user_id)
        if problem is not None:
            return _problem(422, problem)
        try:
            result = await self.forgetter.forget_user(user_id)
        except IngestionError as exc:
            return _problem(503, f"forgetting recorded, not finished (it resumes): {exc}")
        answer = result.as_json()
        return JSONResponse(answer, status_code=202 if answer["pending"] else 200)

    async def dlq_retry(self, request: Request) -> Response:
        ids: list[str] | None = None
        raw = await request.body()
        if raw.strip():
            try:
                body = await request.json()
            except (ValueError, RecursionError):
                return _problem(422, "the body must be a JSON object")
            if not isinstance(body, dict):
                return _problem(422, "the body must be a JSON object")
            given = body.get("ids")
            if given is not None:
                if not isinstance(given, list) or not all(isinstance(i, str) for i in given):
                    return _problem(422, "ids must be a list of dead-letter ids")
                if not given or len(given) > DLQ_IDS_MAX:
                    return _problem(422, f"ids must name 1 to {DLQ_IDS_MAX} dead letters")
                bad = next((i for i in given if not is_entry_id(i)), None)
                if bad is not None:
                    return _problem(
                        422,
                        f"{bad[:40]!r} is not a dead-letter id (they look like 1767225600000-0)",
                    )
                ids = list(dict.fromkeys(given))
        if self.queue is None:
            return _problem(503, "no job queue runs in this process")
        retried = await self.queue.retry_dead(ids)
        log.info("dead letters retried", count=retried)
        if ids is not None and retried == 0:
            return _problem(404, "no dead letter has any of those ids")
        return JSONResponse({"retried": retried})

    # --- the page -----------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        """The aggregate, then the pairs needing attention (`error`, `reauth_required`), then one
        page of every pair (`?cursor=` for the next); `?user=ID` shows that user's pairs only.
        Never the whole table."""
        params = request.query_params
        search = (params.get("user") or "").strip()[:255]
        try:
            query = StatusQuery(limit=0 if search else ROW_LIMIT, cursor=params.get("cursor"))
        except InvalidStatusQuery as exc:
            return _problem(422, str(exc))
        db = self.services.db
        document = await gather_status(
            db, self.queue_stats, query=query, aggregates=self.aggregates
        )
        attention: list[dict[str, Any]] = []
        if search:
            document["accounts"] = await self._rows_of_user(search)
        elif query.cursor is None:
            for status in ("error", "reauth_required"):
                wanted = StatusQuery(limit=ATTENTION_LIMIT, status=status)
                attention += (await gather_status(db, None, query=wanted, runs=0))["accounts"]
        html = render_status_page(
            document,
            key_required=self._key_required,
            queue_available=self.queue is not None,
            now=datetime.now(UTC),
            attention=attention,
            search=search,
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    def login_page(self) -> str:
        return render_login_page()


async def _check(probe: Callable[[], Awaitable[Any]]) -> str:
    try:
        await asyncio.wait_for(probe(), READY_TIMEOUT)
    except TimeoutError:
        return f"error: no answer within {READY_TIMEOUT:g}s"
    except Exception as exc:
        # The class only: /readyz is open to anyone, and a driver's message can name hosts,
        # users or a statement's values.
        return f"error: {type(exc).__name__}"
    return "ok"


def create_app(services: Services, queue: JobQueue | None) -> Starlette:
    """The API of one process; `queue` None = no queue here (`POST /v1/sync` answers 503)."""
    api = _Api(services, queue)
    return Starlette(
        middleware=[
            Middleware(RequestGuard, settings=services.settings, login_page=api.login_page)
        ],
        routes=[
            Route("/", api.page),
            Route("/healthz", api.healthz),
            Route("/readyz", api.readyz),
            Route("/metrics", api.metrics),
            Route("/v1/sync", api.sync, methods=["POST"]),
            Route("/v1/status", api.status),
            Route("/v1/accounts/{user_id}", api.account),
            Route("/v1/dlq/retry", api.dlq_retry, methods=["POST"]),
            Route(
                "/v1/accounts/{user_id}/{provider}",
                api.remove_account,
                methods=["DELETE"],
            ),
            Route("/v1/users/{user_id}", api.forget_user, methods=["DELETE"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
            # Push routes check their sender's signature, never the API key (is_self_authenticated).
            *push_routes(services, queue),
        ],
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        # API_PORT=0 binds any free port: this line says which (supervisors and tests read it).
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        log.info("api listening", url=f"http://{_url_host(host)}:{port}", host=host, port=port)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_api(settings: Settings) -> None:
    """`ingestion api`: the HTTP API alone, until SIGINT/SIGTERM.

    With REDIS_URL the API enqueues on the Redis queue that the deployment's workers consume;
    without it there is no queue in this process and `POST /v1/sync` answers 503.
    """
    from ingestion.queue import RedisJobQueue
    from ingestion.services import install_stop_signals

    metrics.check_multiprocess(settings)
    stop = asyncio.Event()
    install_stop_signals(stop)
    from ingestion.queue.locks import RedisSyncLock

    queue = RedisJobQueue(settings) if settings.redis_url else None
    lock = (
        RedisSyncLock(queue.redis, queue.keys, settings.job_visibility_timeout) if queue else None
    )
    services = await Services.open(settings, lock=lock)
    try:
        log.info(
            "ingestion api starting",
            database=settings.database_kind,
            queue=queue.kind if queue else "none",
            api=f"http://{settings.api_host}:{settings.api_port}",
            api_key=settings.ingestion_api_key is not None,
            allowed_hosts=list(settings.api_host_names),
        )
        await serve(create_app(services, queue), settings.api_host, settings.api_port, stop)
        log.info("ingestion api stopped")
    finally:
        await services.aclose()
        if queue is not None:
            await queue.aclose()


async def serve(app: Starlette, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` until `stop` is set; raises `OSError` when the port cannot be bound."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = _Server(config)

    async def watch() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(watch())
    try:
        await server.serve()
        if not server.started:
            raise OSError(f"could not listen on {host}:{port}")
    finally:
        watcher.cancel()
