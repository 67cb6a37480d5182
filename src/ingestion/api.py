"""The HTTP API (design §8): health, readiness, metrics, sync trigger, status, status page."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["create_app", "serve"]


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    return Starlette(routes=[Route("/healthz", healthz)])


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
