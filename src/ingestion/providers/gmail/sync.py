"""The Gmail cursor: what `ingestion_sync_state.metadata` holds between syncs.

Two modes:

- `backfill`: a first (or forced) sync in progress. `historyId` is the mailbox's history id read
  from the profile *before* the first page was listed, so every change made while the backfill
  runs is replayed by the first incremental sync. `query` is the exact `q` of the listing (its
  `after:` bound is fixed when the backfill starts, so page tokens stay valid on resume),
  `pageToken` the next page to list (None = the first one) and `count` how many messages were
  accepted so far.
- `incremental`: the backfill is done; the next sync reads `history.list` from `historyId`.

The wire form is a plain JSON object (camelCase) and every page's state is complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BACKFILL", "INCREMENTAL", "Backfill", "GmailCursor"]

BACKFILL: Literal["backfill"] = "backfill"
INCREMENTAL: Literal["incremental"] = "incremental"


@dataclass(frozen=True)
class Backfill:
    query: str
    page_token: str | None = None
    count: int = 0
    #: The cap of this backfill (the job's `maxResults`), None = the whole window.
    limit: int | None = None


@dataclass(frozen=True)
class GmailCursor:
    mode: Literal["backfill", "incremental"]
    history_id: str
    backfill: Backfill | None = None

    @classmethod
    def parse(cls, state: Mapping[str, Any]) -> GmailCursor | None:
        """The stored cursor, or None when there is none (or it is not one we understand)."""
        history_id = state.get("historyId")
        mode = state.get("mode", INCREMENTAL if history_id else None)
        if not history_id or mode not in (BACKFILL, INCREMENTAL):
            return None
        if mode == INCREMENTAL:
            return cls(INCREMENTAL, str(history_id))
        raw = state.get("backfill")
        if not isinstance(raw, Mapping) or not raw.get("query"):
            return None
        limit = raw.get("limit")
        return cls(
            BACKFILL,
            str(history_id),
            Backfill(
                query=str(raw["query"]),
                page_token=raw.get("pageToken") or None,
                count=int(raw.get("count") or 0),
                limit=int(limit) if limit is not None else None,
            ),
        )

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"mode": self.mode, "historyId": self.history_id}
        if self.backfill is not None:
            state["backfill"] = {
                "query": self.backfill.query,
                "pageToken": self.backfill.page_token,
                "count": self.backfill.count,
                "limit": self.backfill.limit,
            }
        return state
