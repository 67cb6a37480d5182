"""`ingestion sync` shows a progress bar in a terminal, and none with --json or off a terminal.

The sync runs in a real process on a pseudo-terminal, with a slow test provider registered
through INGESTION_PLUGINS.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
from pathlib import Path

import pytest

from ingestion.config import Settings
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from tests.conftest import INGESTION, run_cli

#: Three CLI processes; their start-up dominates on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PLUGIN = """
import asyncio
from datetime import datetime, timezone

from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import SyncPage
from ingestion.providers.registry import register


class SlowProvider:
    name = "github"
    account_provider = "github"

    def __init__(self, settings):
        self.settings = settings

    async def sync(self, ctx):
        for page in range(4):
            await asyncio.sleep(0.3)
            records = [
                MemoryRecord.build(
                    source="github", user_id=ctx.user_id, source_id=f"o/r#{page * 10 + i}",
                    type="issue", title=f"issue {page * 10 + i}", content="body",
                    occurred_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                )
                for i in range(10)
            ]
            yield SyncPage(state={"page": page}, upserts=records, fetched=10, total_estimate=40)


register("github", SlowProvider)
"""


def _env(base_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "slow_provider_plugin.py").write_text(PLUGIN)
    env = {
        **base_env,
        "INGESTION_PLUGINS": "slow_provider_plugin",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), base_env.get("PYTHONPATH", "")]),
        "COLUMNS": "120",
        "TERM": "xterm-256color",
    }
    asyncio.run(_add_account(env["DATABASE_URL"]))
    return env


async def _add_account(database_url: str) -> None:
    services = await Services.open(Settings(database_url=database_url), migrate=True)
    try:
        async with services.db.session() as session:
            await save_account(session, user_id="u1", provider_id="github", access_token="t")
    finally:
        await services.aclose()


def _sync_on_a_terminal(env: dict[str, str], *extra: str) -> tuple[int, str, str]:
    """Run `ingestion sync github --user u1 EXTRA` with stderr on a pseudo-terminal."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*INGESTION, "sync", "github", "--user", "u1", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.stdout is not None
    stdout = process.stdout.read().decode()
    process.stdout.close()
    os.close(leader)
    code = process.wait(timeout=120)
    return code, stdout, b"".join(chunks).decode(errors="replace")


def test_sync_shows_a_bar_only_on_a_terminal_without_json(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(base_env, tmp_path)
    code, stdout, terminal = _sync_on_a_terminal(env)
    assert code == 0, terminal
    assert "items/s" in terminal
    assert "pages" in terminal
    assert "/40" in terminal  # items so far out of the provider's estimate
    assert "github sync for u1" in stdout
    assert "40" in stdout

    code, stdout, terminal = _sync_on_a_terminal(env, "--json", "--full")
    assert code == 0, terminal
    assert "items/s" not in terminal
    summary = json.loads(stdout)
    assert summary["fetched"] == 40
    assert summary["pages"] == 4

    # Off a terminal (stderr is a pipe): the summary table, no bar.
    result = run_cli("sync", "github", "--user", "u1", "--full", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "items/s" not in result.stderr
    assert "github sync for u1" in result.stdout
