"""What `ingestion status --json` and `GET /v1/status` show: one document for both.

Per connected account and provider: sync status, last successful sync, item counts, last
error, whether a person must reconnect; then queue figures and recent runs. No token appears.
A removed or disconnected pair (`ingestion.forget`) shows its removal as its status, with a
`removal` block (reason, when its records are purged, how many were); a pair whose removal
still has work left is listed even when nothing else of it remains.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ingestion.clock import utcnow
from ingestion.config import PROVIDER_NAMES
from ingestion.providers.registry import account_provider_of
from ingestion.push.store import ChannelStore
from ingestion.storage.accounts import list_accounts
from ingestion.storage.db import Database
from ingestion.storage.removals import Removals, RemovalView
from ingestion.storage.state import StateView, SyncStateStore

__all__ = ["QueueStatsFn", "gather_status"]

QueueStatsFn = Callable[[], Awaitable[dict[str, Any]]]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


async def gather_status(
    db: Database, queue_stats: QueueStatsFn | None = None, *, runs: int = 20
) -> dict[str, Any]:
    store = SyncStateStore(db)
    async with db.session() as session:
        accounts = await list_accounts(session)
    states = {(s.user_id, s.provider): s for s in await store.all()}
    removals = {(r.user_id, r.provider): r for r in await Removals(db).all()}
    providers_of: dict[str, list[str]] = {}
    for name in PROVIDER_NAMES:
        providers_of.setdefault(account_provider_of(name), []).append(name)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for account in accounts:
        for provider in providers_of.get(account.provider_id, []):
            key = (account.user_id, provider)
            if key in seen:
                continue
            seen.add(key)
            state = states.get(key) or StateView.empty(*key)
            rows.append(_row(state, account.provider_id, removals.get(key)))
    for key, state in states.items():
        if key not in seen:
            seen.add(key)
            rows.append(_row(state, None, removals.get(key)))
    for key, removal in removals.items():
        if key not in seen and removal.settled_at is None:
            rows.append(_row(StateView.empty(*key), None, removal))
    rows.sort(key=lambda r: (r["userId"], r["provider"]))
    # Push (ingestion.push): `active`, `expired` (polling is back on the cron) or `off`.
    pushed = await ChannelStore(db).statuses(utcnow())
    for row in rows:
        row["push"] = pushed.get((row["userId"], row["provider"]), "off")
    queue: dict[str, Any] = await queue_stats() if queue_stats else {"kind": "none"}
    recent = [
        {
            "id": r.id,
            "jobId": r.job_id,
            "userId": r.user_id,
            "provider": r.provider,
            "startedAt": _iso(r.started_at),
            "finishedAt": _iso(r.finished_at),
            "status": r.status,
            "fetched": r.fetched,
            "upserted": r.upserted,
            "deleted": r.deleted,
            # Items stored with defects / not stored at all (`ingestion.providers.items`).
            "defective": int(r.details.get("defective") or 0),
            "skipped": int(r.details.get("skipped") or 0),
            "error": r.error,
        }
        for r in await store.recent_runs(runs)
    ]
    return {"accounts": rows, "queue": queue, "recentRuns": recent}


def _row(
    state: StateView, account_provider: str | None, removal: RemovalView | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "userId": state.user_id,
        "provider": state.provider,
        "accountProvider": account_provider,
        "connected": account_provider is not None,
        "status": state.status,
        "lastSyncTime": _iso(state.last_sync_time),
        "itemsFetched": state.items_fetched,
        "itemsUpserted": state.items_upserted,
        "itemsDeleted": state.items_deleted,
        "lastError": state.last_error,
        "reauthRequired": state.status == "reauth_required",
        "updatedAt": _iso(state.updated_at),
    }
    if removal is not None:
        row["status"] = removal.reason
        row["removal"] = removal.as_json()
    return row
