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

from tests.conftest import INGESTION
from tests.emulators import free_port


def _start(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [*INGESTION, "run"],
        env={**env, "API_PORT": str(port), "GITHUB_CLIENT_SECRET": "do-not-log-me"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("ingestion run did not serve /healthz within 60 s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_on_embedded_defaults_starts_and_stops_cleanly(
    base_env: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    env = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
    proc, _port = _start(env, tmp_path)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=40)
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
    proc, port = _start(base_env, tmp_path)
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
        proc.communicate(timeout=40)
