"""A scripted provider for the queue tests (processes load it through `tests.queue_plugin`).

It stands in for the `github` provider. What a sync does depends on the user id's prefix:

- `ok-…`: one page of two records;
- `slow-…`: `QUEUE_TEST_PAGES` pages of two records, sleeping `QUEUE_TEST_PAGE_SECONDS` before
  each; the cursor is `{"page": n}` so a resumed sync continues after the last accepted page;
- `poison-…`: always a `RetryableError`; `permanent-…`: a `PermanentError`;
  `reauth-…`: `ReauthRequired`; `limited-…`: `RateLimited` with a 0.05 s retry_after;
- `flaky-…`: fails with a `RetryableError` on its first try and succeeds on the retry (tries
  are counted per database, which is unique to each test, so reruns start from zero).
- `farfuture-…` / `forever-…`: `RateLimited` with a retry_after of 1e308 / inf seconds on the
  first try (a hostile reset header), then succeeds.

After each accepted page it touches `{QUEUE_TEST_MARKERS}/{user}.page{n}` (when set), so a
test can wait for "mid-job" as an event rather than a sleep.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from ingestion.config import Settings
from ingestion.errors import PermanentError, RateLimited, ReauthRequired, RetryableError
from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import SyncContext, SyncPage

PROVIDER = "github"
#: (database URL, user) -> tries; the database names the test, so no test sees another's count.
_tries: dict[tuple[str, str], int] = {}


class ScriptedProvider:
    name = PROVIDER
    account_provider = "github"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        user = ctx.user_id
        kind = user.split("-", 1)[0]
        key = (self.settings.database_url, user)
        _tries[key] = tries = _tries.get(key, 0) + 1
        if kind == "poison":
            raise RetryableError("upstream keeps answering 503")
        if kind == "permanent":
            raise PermanentError("repository was deleted")
        if kind == "reauth":
            raise ReauthRequired("refresh token revoked")
        if kind == "limited":
            raise RateLimited("rate window exhausted", retry_after=0.05)
        if kind == "flaky" and tries == 1:
            raise RetryableError("first try fails")
        if kind in ("farfuture", "forever") and tries == 1:
            wait = 1e308 if kind == "farfuture" else float("inf")
            raise RateLimited("the API asked for an absurd wait", retry_after=wait)
        pages, delay = 1, 0.0
        if kind == "slow":
            pages = int(os.environ.get("QUEUE_TEST_PAGES", "4"))
            delay = float(os.environ.get("QUEUE_TEST_PAGE_SECONDS", "0.5"))
        markers = os.environ.get("QUEUE_TEST_MARKERS")
        for page in range(int(ctx.state.get("page", 0)), pages):
            if delay:
                await asyncio.sleep(delay)
            records = [
                MemoryRecord.build(
                    source="github",
                    user_id=user,
                    source_id=f"o/r#{page * 2 + i}",
                    type="issue",
                    title=f"issue {page * 2 + i}",
                    content=f"body of issue {page * 2 + i}",
                    occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
                for i in range(2)
            ]
            yield SyncPage(state={"page": page + 1}, upserts=records, fetched=2)
            if markers:
                Path(markers, f"{user}.page{page + 1}").touch()  # noqa: ASYNC240 (tiny marker file)
