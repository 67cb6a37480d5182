"""`ingestion run` on embedded defaults really syncs: no REDIS_URL, DATABASE_URL or
MEMORY_ENGINE_URL, so SQLite lands in ./.ingestion, the queue is in-process and memories go to
the embedded store.

Against the GitHub emulator: an account added with `ingestion accounts add`, a sync asked for with
`POST /v1/sync` runs on the in-process worker, `GET /v1/status` shows it, `ingestion search` in
another process finds what it stored, and a seconds-level cron tick syncs again by itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestion.queue.jobs import Job
from tests.conftest import INGESTION, announced_port_in_file, run_cli
from tests.emulators.github import GitHubState, create_app, seed_activity
from tests.emulators.server import RunningServer, serve
from tests.queue_helpers import sync_wait_for

TOKEN = "gho_embedded_run_token"
USER = "newcomer"


@pytest.fixture
def github() -> Iterator[tuple[GitHubState, RunningServer]]:
    state = GitHubState()
    state.add_user("mona", token=TOKEN)
    [repo, *_] = seed_activity(state, "mona", repos=1, commits_per_repo=3, issues_per_repo=2)
    state.add_issue(repo, "Flamingo migration stalls on Tuesdays", user="mona")
    server = serve(create_app(state))
    yield state, server
    server.stop()


def _status(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _ok_runs(client: httpx.Client) -> list[dict[str, Any]]:
    return [
        r
        for r in _status(client)["recentRuns"]
        if r["userId"] == USER and r["provider"] == "github" and r["status"] == "ok"
    ]


def test_run_on_embedded_defaults_syncs_on_request_and_on_schedule(
    base_env: dict[str, str], tmp_path: Path, github: tuple[GitHubState, RunningServer]
) -> None:
    _state, server = github
    env = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
    env.update(
        {
            "GITHUB_API_URL": server.url,
            # croniter's sixth field is seconds: a tick every three seconds.
            "GITHUB_SYNC_CRON": "* * * * * */3",
            "SCHEDULE_JITTER_SECONDS": "0.2",
            "SHUTDOWN_GRACE_PERIOD": "10",
        }
    )
    added = run_cli(
        "accounts", "add", "github", "--user", USER, "--access-token", TOKEN, env=env, cwd=tmp_path
    )
    assert added.returncode == 0, added.stderr
    assert (tmp_path / ".ingestion" / "ingestion.db").exists()

    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*INGESTION, "run"],
            env={**env, "API_PORT": "0"},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        port = announced_port_in_file(log, proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            def healthy() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            sync_wait_for(healthy, timeout=30)

            # (a) A sync on request, run by the in-process worker.
            requested = client.post("/v1/sync", json={"provider": "github", "userId": USER})
            assert requested.status_code == 202, requested.text
            job_id = requested.json()["jobId"]
            [first] = sync_wait_for(
                lambda: [r for r in _ok_runs(client) if r["jobId"] == job_id], timeout=20
            )
            assert first["upserted"] > 0
            [row] = [a for a in _status(client)["accounts"] if a["provider"] == "github"]
            assert row["userId"] == USER
            assert row["status"] == "ok"
            assert row["itemsUpserted"] > 0
            assert row["lastSyncTime"] is not None

            found = run_cli("search", "flamingo", "--user", USER, "--json", env=env, cwd=tmp_path)
            assert found.returncode == 0, found.stderr
            hits = json.loads(found.stdout)
            assert [h["title"] for h in hits] == ["Flamingo migration stalls on Tuesdays"]
            assert hits[0]["source"] == "github"

            # (b) The schedule syncs again by itself, incrementally.
            later = sync_wait_for(
                lambda: [r for r in _ok_runs(client) if r["id"] > first["id"]], timeout=15
            )
            assert later[0]["jobId"] != job_id
            assert later[0]["upserted"] == 0  # nothing changed upstream
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    output = log.read_text()
    assert code == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "ingestion service stopped" for line in lines)
    assert TOKEN not in output


async def test_in_process_queue_forgets_ticks_older_than_two_days(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ingestion.queue import local

    queue = local.LocalJobQueue()
    now = local.time.time()
    old = int(now) - 3 * 86400
    assert await queue.enqueue_tick(Job("github", "u"), old, 0.0) == "enqueued"
    assert await queue.enqueue_tick(Job("github", "u"), old, 0.0) == "duplicate"
    # An hour later the next tick prunes what is older than two days: the old tick is forgotten
    # (the pair's job is still queued, so it coalesces instead of being refused as a duplicate).
    monkeypatch.setattr(local.time, "time", lambda: now + 3600)
    assert await queue.enqueue_tick(Job("github", "u"), int(now), 0.0) == "coalesced"
    assert await queue.enqueue_tick(Job("github", "u"), old, 0.0) == "coalesced"
    assert await queue.enqueue_tick(Job("github", "u"), int(now), 0.0) == "duplicate"
