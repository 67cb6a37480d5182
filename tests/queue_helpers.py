"""Helpers shared by the queue, worker and scheduler tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ingestion.config import Settings
from ingestion.queue.base import Consumer
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.worker import Worker, engine_runner
from tests.conftest import INGESTION


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


def sync_wait_for(
    check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


async def add_accounts(services: Services, users: list[str], provider_id: str = "github") -> None:
    async with services.db.session() as session:
        for user in users:
            await save_account(
                session, user_id=user, provider_id=provider_id, access_token=f"token-{user}"
            )


@asynccontextmanager
async def running_worker(
    settings: Settings, consumer: Consumer, services: Services, **kwargs: Any
) -> AsyncIterator[Worker]:
    """A worker running in this event loop until the block ends (then stopped gracefully)."""
    worker = Worker(settings, consumer, engine_runner(services.engine), **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


REPO = Path(__file__).resolve().parent.parent


def queue_env(base_env: dict[str, str], **values: str) -> dict[str, str]:
    """Environment for a worker/scheduler process running the scripted test provider."""
    env = dict(base_env)
    env.update(
        {
            "INGESTION_PLUGINS": "tests.queue_plugin",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            "LOG_FORMAT": "json",
        }
    )
    env.update(values)
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `ingestion ARGS` with its output in `log` (a file, so no pipe can fill up)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*INGESTION, *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )


def log_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines written so far (other lines are skipped)."""
    result = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                result.append(json.loads(line))
    return result


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)
