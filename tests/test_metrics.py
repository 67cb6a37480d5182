"""Prometheus metrics: names, scrape-time gauges, and multi-process mode across real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingestion import metrics
from ingestion.api import create_app
from ingestion.config import Settings
from ingestion.errors import ConfigurationError
from ingestion.providers.base import FetchOptions
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.models import SyncStateRow
from ingestion.storage.overview import aggregate
from tests.conftest import run_cli
from tests.emulators.github import GitHubState, seed_activity
from tests.emulators.github import create_app as create_github
from tests.emulators.server import serve

METRIC_NAMES = (
    "ingestion_jobs_total",
    "ingestion_items_total",
    "ingestion_api_requests_total",
    "ingestion_api_request_seconds",
    "ingestion_api_retries_total",
    "ingestion_rate_limit_wait_seconds_total",
    "ingestion_token_refreshes_total",
    "ingestion_sync_duration_seconds",
    "ingestion_queue",
    "ingestion_cursor_age_seconds",
)


def test_every_metric_is_in_the_exposition() -> None:
    text = metrics.exposition().decode()
    for name in METRIC_NAMES:
        help_name = name.removesuffix("_total")
        assert f"# HELP {help_name}" in text, name


async def test_refresh_gauges_sets_queue_figures_and_cursor_age_summary(sqlite_url: str) -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    services = await Services.open(Settings(database_url=sqlite_url))
    try:
        async with services.db.session() as session:
            for user, ago in (("a", 60), ("b", 600), ("c", 120), ("d", None), ("e", 30)):
                session.add(
                    SyncStateRow(
                        user_id=user,
                        provider="github" if user == "e" else "twitter",
                        status="ok" if ago else "idle",
                        cursor={},
                        last_sync_time=now - timedelta(seconds=ago) if ago else None,
                    )
                )
        async with services.db.session() as session:
            found = await aggregate(session)  # in SQL: grouped scan, median at an offset
    finally:
        await services.aclose()
    assert found.counts == {"twitter": {"ok": 3, "idle": 1}, "github": {"ok": 1}}
    metrics.refresh_gauges(
        {
            "kind": "redis",
            "length": 7,
            "pending": 2,
            "notMeasuredHere": None,
            "deadLetters": 1,
            "oldestPendingSeconds": 12.5,
        },
        found.cursor_ages(now),
    )
    text = metrics.exposition().decode()
    assert 'ingestion_queue{figure="length"} 7.0' in text
    assert 'ingestion_queue{figure="pending"} 2.0' in text
    assert 'ingestion_queue{figure="dead_letters"} 1.0' in text
    assert 'ingestion_queue{figure="oldest_pending_seconds"} 12.5' in text
    assert 'figure="not_measured_here"' not in text  # None: no sample
    assert 'figure="kind"' not in text
    assert 'ingestion_cursor_age_seconds{provider="twitter",stat="max"} 600.0' in text
    assert 'ingestion_cursor_age_seconds{provider="twitter",stat="median"} 120.0' in text
    assert 'ingestion_cursor_age_seconds{provider="twitter",stat="min"} 60.0' in text
    assert 'ingestion_cursor_age_seconds{provider="github",stat="median"} 30.0' in text


def test_multiproc_dir_only_in_settings_is_refused(tmp_path: Path) -> None:
    # This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR.
    assert not metrics.multiprocess_enabled()
    with pytest.raises(ConfigurationError, match="process environment"):
        metrics.check_multiprocess(Settings(prometheus_multiproc_dir=tmp_path))
    metrics.check_multiprocess(Settings())


WRITER = """
import sys
from ingestion import metrics
assert metrics.multiprocess_enabled()
metrics.JOBS.labels(provider="github", outcome="succeeded").inc(int(sys.argv[1]))
metrics.ITEMS.labels(provider="github", action="upserted").inc(10)
metrics.SYNC_DURATION.labels(provider="github", status="ok").observe(0.3)
"""

READER = """
import sys
from ingestion import metrics
sys.stdout.write(metrics.exposition().decode())
"""


def _python(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_counts_of_several_processes_are_summed(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count in ("2", "3"):
        writer = _python(WRITER, count, env=env)
        assert writer.returncode == 0, writer.stderr
    reader = _python(READER, env=env)
    assert reader.returncode == 0, reader.stderr
    text = reader.stdout
    assert 'ingestion_jobs_total{outcome="succeeded",provider="github"} 5.0' in text
    assert 'ingestion_items_total{action="upserted",provider="github"} 20.0' in text
    assert 'ingestion_sync_duration_seconds_count{provider="github",status="ok"} 2.0' in text


def test_api_command_refuses_a_missing_multiproc_dir(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**base_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}
    result = run_cli("api", "--port", "0", env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: PROMETHEUS_MULTIPROC_DIR: {tmp_path / 'missing'} is not a directory"
    ]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _delta(
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    after: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    """How much the samples of `name` whose labels include `labels` moved, summed."""
    wanted = set(labels.items())
    return sum(
        value - before.get(key, 0.0)
        for key, value in after.items()
        if key[0] == name and wanted <= key[1]
    )


async def test_a_sync_moves_the_counters_served_on_metrics(tmp_path: Path) -> None:
    """Values, not only names: a real sync against the GitHub emulator, scraped from /metrics
    before and after, moves each counter by what the sync did."""
    github = GitHubState()
    github.add_user("mona", token="gho_metrics")
    seed_activity(github, "mona", repos=2, commits_per_repo=3, issues_per_repo=2)
    server = serve(create_github(github))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'metrics.db'}",
        github_api_url=server.url,
        github_rate_limit_reserve=0,
    )
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            await save_account(
                session, user_id="m1", provider_id="github", access_token="gho_metrics"
            )
        transport = httpx.ASGITransport(app=create_app(services, None))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:

            async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
                answer = await http.get("/metrics")
                assert answer.status_code == 200
                return _samples(answer.text)

            before = await scrape()
            served = len(github.log)
            first = await services.engine.run("github", "m1", FetchOptions())
            after = await scrape()
            assert first.upserted > 0
            items = "ingestion_items_total"
            assert _delta(before, after, items, provider="github", action="upserted") == (
                first.upserted
            )
            assert _delta(before, after, items, provider="github", action="fetched") == (
                first.fetched
            )
            assert _delta(before, after, "ingestion_jobs_total", provider="github") == 1
            duration = "ingestion_sync_duration_seconds_count"
            assert _delta(before, after, duration, provider="github", status="ok") == 1
            requests = "ingestion_api_requests_total"
            made = len(github.log) - served
            assert _delta(before, after, requests, provider="github") == made
            assert _delta(before, after, requests, provider="github", status="200") == (
                github.count(status=200) - sum(1 for r in github.log[:served] if r.status == 200)
            )

            # Nothing changed upstream: conditional requests answer 304, nothing is upserted.
            second = await services.engine.run("github", "m1", FetchOptions())
            again = await scrape()
            assert second.upserted == 0
            assert _delta(after, again, items, provider="github", action="upserted") == 0
            assert _delta(after, again, requests, provider="github", status="304") > 0
            assert _delta(after, again, duration, provider="github", status="ok") == 1
    finally:
        await services.aclose()
        server.stop()
