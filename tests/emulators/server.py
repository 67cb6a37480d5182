"""Run an ASGI app on a free loopback port in a background thread (tests and benchmarks).

`serve` binds port 0 and reads back the port the kernel gave it, so parallel tests never race
for a port. `free_port()` (a port that was free a moment ago) is kept for the benchmarks only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

__all__ = ["RunningServer", "free_port", "serve"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningServer:
    url: str
    port: int
    server: _ThreadServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(app: Any, *, port: int | None = None) -> RunningServer:
    """Start `app` on 127.0.0.1 (any free port unless given); returns once it accepts."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port or 0,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"emulator did not start on port {port or 0}")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(url=f"http://127.0.0.1:{port}", port=port, server=server, thread=thread)
