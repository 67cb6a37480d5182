"""The HTTP API (design §8): health, readiness, metrics, sync trigger, status, status page.

- `GET /healthz`: 200 while the process runs.
- `GET /readyz`: 200 when the database and the queue answer; 503 naming what does not.
- `GET /metrics`: Prometheus text (every process on the host in multiprocess mode).
- `POST /v1/sync` `{"provider", "userId", "options"?}`: 202 `{"jobId", "coalesced"}`, plus
  `"widening"` (`merged` | `follow-up` | `covered`, see `queue.base.Widening`) when a coalesced
  request asked for a full sync; 422 bad input, 404 no such account, 503 no queue in this process.
- `GET /v1/status` (`?limit=&cursor=&provider=&status=`): exactly `ingestion status --json` with
  the same options: one keyset page of pairs, `nextCursor`, the `aggregate` block; 422 for a bad
  parameter.
- `GET /v1/accounts/{userId}`: sync state per provider of one user (no token); 404 unknown.
- `POST /v1/dlq/retry` `{"ids"?: [...]}`: `{"retried": n}` (all dead letters without `ids`).
- `GET /`: the status page for people (`ingestion.web`).

With `INGESTION_API_KEY` set, every `/v1` route needs `Authorization: Bearer <key>` (compared in
constant time), else 401. `/healthz`, `/readyz` and `/metrics` stay open, as probes and scrapers
expect; the status page is viewable (the same figures as `/metrics`, no token) and its buttons
call `/v1` with the key the person typed once (kept in the tab's sessionStorage).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import structlog
import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ingestion import metrics
from ingestion.config import PROVIDER_NAMES, Settings
from ingestion.errors import MalformedJob
from ingestion.providers.registry import account_provider_of
from ingestion.queue.base import JobQueue
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
from ingestion.storage.state import SyncStateStore
from ingestion.web import ATTENTION_LIMIT, ROW_LIMIT, STATIC_DIR, render_status_page

__all__ = ["create_app", "run_api", "serve"]

log = structlog.get_logger("ingestion.api")

#: How long /readyz waits for the database or the queue before calling it unreachable.
READY_TIMEOUT = 3.0

Endpoint = Callable[[Request], Awaitable[Response]]


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Api:
    """The route handlers, bound to one process's services and (optional) queue."""

    def __init__(self, services: Services, queue: JobQueue | None) -> None:
        self.services = services
        self.queue = queue
        key = services.settings.ingestion_api_key
        self._key = key.get_secret_value().encode() if key else None
        #: One grouped scan serves every status request and scrape within a few seconds.
        self.aggregates = AggregateCache()

    # --- protection ---------------------------------------------------------------------
    def protected(self, endpoint: Endpoint) -> Endpoint:
        """Require `Authorization: Bearer <INGESTION_API_KEY>` when a key is configured."""

        async def guarded(request: Request) -> Response:
            if self._key is not None:
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                    given.strip().encode(), self._key
                ):
                    return JSONResponse(
                        {"error": "missing or wrong API key (Authorization: Bearer …)"},
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
            return await endpoint(request)

        return guarded

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
        except ValueError:
            return _problem(422, "the body must be a JSON object")
        if not isinstance(body, dict):
            return _problem(422, "the body must be a JSON object")
        provider = body.get("provider")
        if provider not in PROVIDER_NAMES:
            return _problem(
                422, f"provider must be one of {', '.join(PROVIDER_NAMES)} (got {provider!r:.40})"
            )
        user_id = body.get("userId")
        if not isinstance(user_id, str) or not user_id.strip():
            return _problem(422, "userId must be a non-empty string")
        try:
            options = options_from_json(body.get("options"))
        except MalformedJob as exc:
            return _problem(422, str(exc))
        account_provider = account_provider_of(provider)
        async with self.services.db.read() as connection:  # one indexed read, autocommit
            connected = await account_exists(connection, user_id, account_provider)
        if not connected:
            return _problem(
                404, f"user {user_id!r:.80} has no connected {account_provider} account"
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
            log.warning("enqueue failed", provider=provider, error=str(exc))
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
        for provider in sorted(PROVIDER_NAMES):
            account_provider = account_provider_of(provider)
            state = await store.load(user_id, provider)
            if account_provider not in connected and state.updated_at is None:
                continue
            rows.append(row_of(state, account_provider if account_provider in connected else None))
        return rows

    async def dlq_retry(self, request: Request) -> Response:
        ids: list[str] | None = None
        raw = await request.body()
        if raw.strip():
            try:
                body = await request.json()
            except ValueError:
                return _problem(422, "the body must be a JSON object")
            given = body.get("ids") if isinstance(body, dict) else None
            if given is not None:
                if not isinstance(given, list) or not all(isinstance(i, str) for i in given):
                    return _problem(422, "ids must be a list of dead-letter ids")
                ids = given
        if self.queue is None:
            return _problem(503, "no job queue runs in this process")
        retried = await self.queue.retry_dead(ids)
        log.info("dead letters retried", count=retried)
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
            key_required=self._key is not None,
            queue_available=self.queue is not None,
            now=datetime.now(UTC),
            attention=attention,
            search=search,
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})


async def _check(probe: Callable[[], Awaitable[Any]]) -> str:
    try:
        await asyncio.wait_for(probe(), READY_TIMEOUT)
    except TimeoutError:
        return f"error: no answer within {READY_TIMEOUT:g}s"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


def create_app(services: Services, queue: JobQueue | None) -> Starlette:
    """The API of one process; `queue` None = no queue here (`POST /v1/sync` answers 503)."""
    api = _Api(services, queue)
    guard = api.protected
    return Starlette(
        routes=[
            Route("/", api.page),
            Route("/healthz", api.healthz),
            Route("/readyz", api.readyz),
            Route("/metrics", api.metrics),
            Route("/v1/sync", guard(api.sync), methods=["POST"]),
            Route("/v1/status", guard(api.status)),
            Route("/v1/accounts/{user_id}", guard(api.account)),
            Route("/v1/dlq/retry", guard(api.dlq_retry), methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
    queue = RedisJobQueue(settings) if settings.redis_url else None
    services = await Services.open(settings)
    try:
        log.info(
            "ingestion api starting",
            database=settings.database_kind,
            queue=queue.kind if queue else "none",
            api=f"http://{settings.api_host}:{settings.api_port}",
            api_key=settings.ingestion_api_key is not None,
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
