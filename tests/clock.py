"""A clock for tests whose dates must not age: `now` starts at a fixed moment and moves on
with real time; `sleep` and `monotonic` are the real ones (so pacing and timeouts still work).

Give it to `Services.open(..., clock=AnchoredClock(NOW))` and write the test's dates relative
to `NOW`: the test then reads the same on any day it is run.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

__all__ = ["AnchoredClock"]


class AnchoredClock:
    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("the anchor must be timezone-aware")
        self.at = at
        self._started = time.monotonic()

    def now(self) -> datetime:
        return self.at + timedelta(seconds=time.monotonic() - self._started)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
