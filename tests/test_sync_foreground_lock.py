"""A foreground `ingestion sync` takes the workers' per-(provider, user) lock when Redis is set."""

from __future__ import annotations

import redis

from ingestion.queue.keys import Keys
from tests.conftest import run_cli


def test_foreground_sync_does_not_run_beside_a_workers_job(
    base_env: dict[str, str], redis_url: str, namespace: str
) -> None:
    env = {**base_env, "REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace}
    client = redis.Redis.from_url(redis_url)
    try:
        # A worker somewhere holds the lock of (github, alice).
        client.set(Keys(namespace).sync_lock("github", "alice"), "another-worker", px=60_000)
        busy = run_cli("sync", "github", "--user", "alice", "--json", env=env)
        assert busy.returncode == 1, busy.stderr
        assert "already running elsewhere" in busy.stdout
        assert client.get(Keys(namespace).sync_lock("github", "alice")) == b"another-worker"

        # Another user's pair is free: the sync gets past the lock (and fails on the account).
        free = run_cli("sync", "github", "--user", "bob", "--json", env=env)
        assert free.returncode == 1
        assert "no connected github account" in free.stdout
        assert client.get(Keys(namespace).sync_lock("github", "bob")) is None, "lock released"
    finally:
        client.close()
