"""The autouse fixture in conftest.py: no test sees the caller's settings or `./.env`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ingestion.config import Settings
from tests.conftest import REPO

LEAK = "http://127.0.0.1:9/leaked-memory-engine"


def test_settings_see_nothing_of_the_caller() -> None:
    """Run in-process; `test_a_caller_with_settings_and_a_dotenv_leaks_nothing` runs it from a
    folder holding a `.env` and with the settings exported."""
    assert Path.cwd() != REPO
    assert not Path(".env").exists()
    assert "MEMORY_ENGINE_URL" not in os.environ
    settings = Settings()
    assert settings.memory_engine_url is None
    assert settings.redis_url is None
    assert settings.database_url.startswith("sqlite")
    assert settings.plugins == ""
    assert settings.sqlite_path is not None
    assert settings.sqlite_path.resolve().is_relative_to(Path.cwd().resolve())


def test_a_caller_with_settings_and_a_dotenv_leaks_nothing(tmp_path: Path) -> None:
    caller = tmp_path / "caller"
    caller.mkdir()
    (caller / ".env").write_text(f"MEMORY_ENGINE_URL={LEAK}\nREDIS_URL=redis://127.0.0.1:9/0\n")
    env = {
        **os.environ,
        "MEMORY_ENGINE_URL": LEAK,
        "memory_engine_url": LEAK,
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/leak",
        "INGESTION_PLUGINS": "leaked.plugin",
    }
    target = f"{Path(__file__).resolve()}::test_settings_see_nothing_of_the_caller"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            target,
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(REPO),
            "-c",
            str(REPO / "pyproject.toml"),
        ],
        cwd=caller,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
