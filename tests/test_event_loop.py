"""`EVENT_LOOP`: every command runs on uvloop where it is installed, asyncio's loop on request,
and a wrong value stops start-up with one line naming the setting."""

from __future__ import annotations

import sys

import pytest

from ingestion.errors import ConfigurationError
from ingestion.loop import loop_factory
from tests.conftest import run_cli


def test_auto_picks_uvloop_where_it_is_installed() -> None:
    import uvloop

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows: the import fails
    assert loop_factory("auto") is None
    with pytest.raises(ConfigurationError, match="EVENT_LOOP=uvloop but uvloop is not installed"):
        loop_factory("uvloop")


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_a_command_runs_on_either_loop(base_env: dict[str, str], choice: str) -> None:
    result = run_cli("status", "--json", env={**base_env, "EVENT_LOOP": choice})
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_wrong_event_loop_stops_start_up_naming_it(base_env: dict[str, str]) -> None:
    result = run_cli("status", env={**base_env, "EVENT_LOOP": "trio"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "EVENT_LOOP" in lines[0]
