"""Time, injectable: backoff, cron ticks and token expiry all ask a `Clock`.

Production code uses `SystemClock`; tests pass a clock whose `sleep` returns at once and whose
`now` they move by hand, so waits are cut without patching the standard library.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic scale, for measuring intervals."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait; a test clock may return at once."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
