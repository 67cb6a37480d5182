"""The real better-auth package, driven from the tests through `tests/betterauth/oracle.mjs`.

`install()` runs `tests/betterauth/install.sh` (pinned by package-lock.json, cached under
tests/.cache/better-auth; `.ci/run` runs the same script). `BetterAuthNode.call` starts Node
with the Better Auth secrets in its environment, as the product's server would have them, and
returns one answer per request (see oracle.mjs).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "betterauth"
#: Where install.sh puts the package (BETTER_AUTH_CACHE overrides, for both).
CACHE = Path(os.environ.get("BETTER_AUTH_CACHE") or ROOT / "tests" / ".cache" / "better-auth")
PINNED = json.loads((HERE / "package.json").read_text())["dependencies"]["better-auth"]


class BetterAuthError(Exception):
    """Better Auth refused: its message."""


def install() -> str | None:
    """Install the pinned package; None on success, else why it could not be installed."""
    try:
        result = subprocess.run(
            ["bash", str(HERE / "install.sh")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        # npm's first lines say what failed (code, FetchError); the rest is a stack trace.
        return f"install.sh exited {result.returncode}: {' | '.join(lines[:4])}"
    return None


@dataclass(frozen=True)
class BetterAuthNode:
    version: str = PINNED

    def call(
        self,
        requests: list[tuple[str, str]],
        *,
        secret: str | None = None,
        secrets: str | None = None,
    ) -> tuple[list[str | BetterAuthError], dict[str, Any]]:
        """Run `requests` ([(op, value)]) in one Node process with BETTER_AUTH_SECRET and
        BETTER_AUTH_SECRETS set as given; answers (a string or the error) and the parsed
        secret configuration. Raises `BetterAuthError` when Better Auth refuses the secrets."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BETTER_AUTH_") and k not in ("AUTH_SECRET", "NODE_ENV")
        }
        if secret is not None:
            env["BETTER_AUTH_SECRET"] = secret
        if secrets is not None:
            env["BETTER_AUTH_SECRETS"] = secrets
        result = subprocess.run(
            ["node", str(HERE / "oracle.mjs"), str(CACHE)],
            input=json.dumps([{"op": op, "value": value} for op, value in requests]),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        answers = json.loads(result.stdout)
        if "configError" in answers[0]:
            raise BetterAuthError(answers[0]["configError"])
        *results, config = answers
        return [a["ok"] if "ok" in a else BetterAuthError(a["error"]) for a in results], config[
            "config"
        ]

    def values(self, requests: list[tuple[str, str]], **secrets: str | None) -> list[str]:
        """Like `call`, asserting that every request succeeded."""
        answers, _ = self.call(requests, **secrets)
        for answer in answers:
            assert isinstance(answer, str), answer
        return [str(a) for a in answers]
