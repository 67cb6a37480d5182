"""`ingestion run` on embedded defaults: starts, says what it runs with, serves /healthz, stops
cleanly on SIGTERM and SIGINT with exit status 0."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import INGESTION, announced_port_in_file


def _start(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start `ingestion run` on API_PORT=0; returns the process, the port it announced in its
    log and the log file (stdout and stderr)."""
    log = cwd / f"run-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*INGESTION, "run"],
            env={**env, "API_PORT": "0", "GITHUB_CLIENT_SECRET": "do-not-log-me"},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        port = announced_port_in_file(log, proc, timeout=60)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return proc, port, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_on_embedded_defaults_starts_and_stops_cleanly(
    base_env: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    env = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
    proc, _port, log = _start(env, tmp_path)
    proc.send_signal(sig)
    proc.wait(timeout=40)
    err = log.read_text()
    assert proc.returncode == 0, err
    assert (tmp_path / ".ingestion" / "ingestion.db").exists()
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    start = next(line for line in lines if line.get("event") == "ingestion service starting")
    assert start["database"] == "sqlite"
    assert start["queue"] == "in-process"
    assert start["sink"] == "embedded"
    assert start["schedules"]["gmail"] == "*/15 * * * *"
    assert any(line.get("event") == "ingestion service stopped" for line in lines)
    assert "do-not-log-me" not in err


def test_run_reports_a_taken_port_in_one_line(base_env: dict[str, str], tmp_path: Path) -> None:
    proc, port, _ = _start(base_env, tmp_path)
    try:
        second = subprocess.run(
            [*INGESTION, "run"],
            env={**base_env, "API_PORT": str(port)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert "Traceback" not in second.stderr
        assert f"127.0.0.1:{port}" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
