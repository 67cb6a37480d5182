"""Reference emulator of the memory engine's HTTP API (design §6), for tests and benchmarks.

- `POST /memories/batch` `{"memories": [record, …]}`: every record is validated (the record
  model, `id` = `{source}:{userId}:{sourceId}`, `contentHash` recomputed); at most
  `max_batch` (100) records per request, else 400; upsert by id. A record resent with the same
  `contentHash` counts as a duplicate.
- `POST /memories/delete` `{"userId", "ids"}`: removes the user's records (absent ids are fine).
- With `api_key` set, anything but `Authorization: Bearer <api_key>` gets 401.
- Errors are `{"error": "<message>"}`.

The state is inspectable (`records`, `upserts`, `duplicates`, `deleted`, `requests`) and
scriptable: `fail_next(status, times, retry_after=…, message=…)` answers the next requests with
an error, `drop_next(times)` closes the connection without an answer. It is shared with the
server thread, so every access goes through one lock.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ingestion.memory.record import MemoryRecord, content_hash, record_id

__all__ = ["Fault", "LoggedRequest", "MemoryEngineState", "create_app"]


@dataclass
class Fault:
    """An injected answer for the next `times` requests (status 0 = drop the connection)."""

    status: int
    times: int
    retry_after: str | None = None
    message: str = "injected failure"
    paths: tuple[str, ...] = ("/memories/batch", "/memories/delete")
    #: Matching requests to let through before the fault starts.
    skip: int = 0


@dataclass(frozen=True)
class LoggedRequest:
    path: str
    status: int
    #: Records (batch) or ids (delete) in the request; 0 when the body was unreadable.
    count: int
    size: int
    authorization: str | None


@dataclass
class MemoryEngineState:
    api_key: str | None = None
    max_batch: int = 100
    #: Refuse bodies above this many bytes with 413 (None = no limit).
    max_body_bytes: int | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Accepted upserts per record id (resends included).
    upserts: Counter[str] = field(default_factory=Counter)
    #: Upserts per id whose contentHash equalled the stored one.
    duplicates: Counter[str] = field(default_factory=Counter)
    deleted: list[str] = field(default_factory=list)
    requests: list[LoggedRequest] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- scripting -----------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: float | str | None = None,
        message: str = "injected failure",
        path: str | None = None,
        skip: int = 0,
    ) -> None:
        """Answer `times` requests (to `path`, or any) with `status`, after letting `skip`
        through."""
        paths = (path,) if path else ("/memories/batch", "/memories/delete")
        after = None if retry_after is None else str(retry_after)
        with self.lock:
            self.faults.append(Fault(status, times, after, message, paths, skip))

    def drop_next(self, times: int = 1, *, path: str | None = None, skip: int = 0) -> None:
        """Close the connection of `times` requests without answering (after `skip`)."""
        self.fail_next(0, times, path=path, skip=skip)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def reset(self) -> None:
        """Back to an empty engine with default settings (a server reused across tests)."""
        with self.lock:
            self.api_key = None
            self.max_batch = 100
            self.max_body_bytes = None
            self.records.clear()
            self.upserts.clear()
            self.duplicates.clear()
            self.deleted.clear()
            self.requests.clear()
            self.faults.clear()

    # --- inspection ----------------------------------------------------------------------------

    def ids(self, user_id: str | None = None) -> set[str]:
        with self.lock:
            return {k for k, r in self.records.items() if user_id in (None, r["userId"])}

    def batch_requests(self) -> list[LoggedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == "/memories/batch"]

    def accepted_batches(self) -> list[LoggedRequest]:
        return [r for r in self.batch_requests() if 200 <= r.status < 300]

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if path in fault.paths and fault.skip > 0:
                fault.skip -= 1
                return None
            if path in fault.paths and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _check_record(raw: object) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(raw, dict):
        return None, "each memory must be an object"
    try:
        record = MemoryRecord.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return None, f"invalid memory {raw.get('id')!r}: {where}: {first['msg']}"
    if record.id != record_id(record.source, record.user_id, record.source_id):
        return None, f"memory id {record.id!r} is not source:userId:sourceId"
    if record.content_hash != content_hash(record.title, record.content, record.metadata):
        return None, f"memory {record.id!r}: contentHash does not match title/content/metadata"
    return raw, None


def create_app(state: MemoryEngineState) -> Any:
    """The Starlette app, wrapped so that injected connection drops really drop."""

    async def handle(request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        auth = request.headers.get("authorization")
        fault: Fault | None = request.scope.get(_FAULT)

        def logged(status: int, count: int = 0) -> None:
            with state.lock:
                state.requests.append(LoggedRequest(path, status, count, len(body), auth))

        if state.api_key is not None and auth != f"Bearer {state.api_key}":
            logged(401)
            return _error(401, "missing or invalid API key")
        if fault is not None:
            logged(fault.status)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return _error(fault.status, fault.message, headers)
        if state.max_body_bytes is not None and len(body) > state.max_body_bytes:
            logged(413)
            return _error(413, f"request body over {state.max_body_bytes} bytes")
        try:
            payload = json.loads(body)
        except ValueError:
            logged(400)
            return _error(400, "body is not JSON")
        if not isinstance(payload, dict):
            logged(400)
            return _error(400, "body must be a JSON object")
        if path == "/memories/batch":
            return _batch(payload, logged)
        return _delete(payload, logged)

    def _batch(payload: dict[str, Any], logged: Any) -> Response:
        memories = payload.get("memories")
        if not isinstance(memories, list):
            logged(400)
            return _error(400, "memories must be an array")
        if len(memories) > state.max_batch:
            logged(400, len(memories))
            return _error(400, f"at most {state.max_batch} memories per batch, got {len(memories)}")
        checked = []
        for raw in memories:
            record, problem = _check_record(raw)
            if problem is not None:
                logged(400, len(memories))
                return _error(400, problem)
            checked.append(record)
        with state.lock:
            for record in checked:
                assert record is not None
                key = record["id"]
                old = state.records.get(key)
                if old is not None and old["contentHash"] == record["contentHash"]:
                    state.duplicates[key] += 1
                state.records[key] = record
                state.upserts[key] += 1
        logged(200, len(checked))
        return JSONResponse({"upserted": len(checked)})

    def _delete(payload: dict[str, Any], logged: Any) -> Response:
        user_id, ids = payload.get("userId"), payload.get("ids")
        if not isinstance(user_id, str) or not user_id:
            logged(400)
            return _error(400, "userId is required")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            logged(400)
            return _error(400, "ids must be an array of strings")
        removed = 0
        with state.lock:
            for key in ids:
                record = state.records.get(key)
                if record is not None and record["userId"] == user_id:
                    del state.records[key]
                    state.deleted.append(key)
                    removed += 1
        logged(200, len(ids))
        return JSONResponse({"deleted": removed})

    app = Starlette(
        routes=[
            Route("/memories/batch", handle, methods=["POST"]),
            Route("/memories/delete", handle, methods=["POST"]),
        ]
    )
    return _Faults(app, state)


_FAULT = "memory_engine.fault"


class _Faults:
    """ASGI wrapper that picks the injected fault of each request. A drop (status 0) starts an
    answer and abandons it, so the client sees the connection close mid-response (a network
    failure, not an HTTP status); other faults are answered by the app after the auth check."""

    def __init__(self, app: Any, state: MemoryEngineState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.state.lock:
            fault = self.state._take_fault(scope["path"])
        if fault is not None and fault.status == 0:
            auth = dict(scope["headers"]).get(b"authorization")
            with self.state.lock:
                self.state.requests.append(
                    LoggedRequest(scope["path"], 0, 0, 0, auth.decode() if auth else None)
                )
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1000")],
                }
            )
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            return
        scope[_FAULT] = fault
        await self.app(scope, receive, send)
