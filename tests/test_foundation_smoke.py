from __future__ import annotations

from tests.conftest import run_cli


def test_unknown_provider_exits_2_with_one_line(base_env: dict[str, str]) -> None:
    result = run_cli("sync", "nope", "--user", "u1", env=base_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown provider 'nope'; expected one of gmail, calendar, github, twitter"
    ]
