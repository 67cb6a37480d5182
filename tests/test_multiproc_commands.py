"""`ingestion worker`, `scheduler` and `run` refuse a misconfigured PROMETHEUS_MULTIPROC_DIR
with one line and exit status 2, as `ingestion api` does, before touching the queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("command", ["worker", "scheduler", "run"])
def test_long_running_commands_refuse_a_missing_multiproc_dir(
    base_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "missing"
    # Redis on a port nobody listens on: the check must come first.
    env = {
        **base_env,
        "PROMETHEUS_MULTIPROC_DIR": str(missing),
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "API_PORT": "0",
    }
    result = run_cli(command, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: PROMETHEUS_MULTIPROC_DIR: {missing} is not a directory"
    ]


def test_run_refuses_a_multiproc_dir_given_only_in_dotenv(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (tmp_path / ".env").write_text(f"PROMETHEUS_MULTIPROC_DIR={directory}\n")
    result = run_cli("run", env={**base_env, "API_PORT": "0"}, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: PROMETHEUS_MULTIPROC_DIR must be set in the process environment (not only in .env)"
    ]
