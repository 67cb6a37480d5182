"""`ingestion run` keeps answering while it syncs a mailbox of hostile messages: the transforms
run off the event loop, so `/healthz` answers within a second throughout, and every message is
stored."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import adversarial
from tests.conftest import INGESTION, run_cli
from tests.emulators import free_port
from tests.emulators import gmail as gmail_emulator
from tests.emulators.gmail import GmailState
from tests.emulators.server import RunningServer, serve
from tests.queue_helpers import sync_wait_for

USER = "u1"
TOKEN = "ya29.hostile-run"

BODIES = [
    (adversarial.wrote_lines, "plain"),
    (adversarial.attribution_line, "plain"),
    (adversarial.on_wrote_line, "plain"),
    (adversarial.quote_wall, "plain"),
    (adversarial.unclosed_tags, "html"),
    (lambda: adversarial.big_text()[:2_000_000], "plain"),
    *[(adversarial.nested_html, "html")] * 6,
    *[(adversarial.html_tables, "html")] * 12,
]


def _raw(index: int, body: str, subtype: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Mallory <mallory@example.com>"
    message["To"] = "you@example.com"
    message["Subject"] = f"hostile {index}"
    message.set_content(body, subtype=subtype, cte="base64")
    return message.as_bytes()


@pytest.fixture
def gmail() -> Iterator[tuple[GmailState, RunningServer]]:
    state = GmailState()
    state.add_user(USER, TOKEN)
    for index, (body, subtype) in enumerate(BODIES):
        state.add_message(USER, _raw(index, body(), subtype))
    server = serve(gmail_emulator.create_app(state))
    yield state, server
    server.stop()


def _runs(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = client.get("/v1/status").json()["recentRuns"]
    return [r for r in runs if r["jobId"] == job_id and r["status"] != "running"]


@pytest.mark.slow
def test_healthz_answers_within_a_second_while_hostile_mail_syncs(
    base_env: dict[str, str], tmp_path: Path, gmail: tuple[GmailState, RunningServer]
) -> None:
    _, server = gmail
    env = {**base_env, "GMAIL_API_URL": server.url, "SHUTDOWN_GRACE_PERIOD": "5"}
    added = run_cli("accounts", "add", "gmail", "--user", USER, "--access-token", TOKEN, env=env)
    assert added.returncode == 0, added.stderr
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*INGESTION, "run"],
            env={**env, "API_PORT": str(port)},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def healthy() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            sync_wait_for(healthy, timeout=30)
            requested = client.post("/v1/sync", json={"provider": "gmail", "userId": USER})
            assert requested.status_code == 202, requested.text
            job_id = requested.json()["jobId"]

            latencies: list[float] = []
            done = threading.Event()

            def probe() -> None:  # /healthz every 50 ms, on its own connection
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as prober:
                    while not done.is_set():
                        started = time.perf_counter()
                        assert prober.get("/healthz").status_code == 200
                        latencies.append(time.perf_counter() - started)
                        time.sleep(0.05)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            try:
                finished = sync_wait_for(lambda: _runs(client, job_id), timeout=90)
            finally:
                done.set()
                prober.join(timeout=15)
            [run] = finished
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert run["status"] == "ok", log.read_text()[-3000:]
    assert run["upserted"] == len(BODIES)
    assert run["skipped"] == 0
    assert len(latencies) > 5
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
