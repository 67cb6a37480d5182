"""Push notifications: Gmail (Cloud Pub/Sub), Calendar (watch channels), GitHub (webhooks).

A notification never syncs anything by itself: it enqueues the same coalesced incremental sync
a cron tick would, so every guarantee of the sync (no loss, no duplicate, cursor after
acceptance, one sync per pair) holds. Polling stays as the safety net: a pair whose channels
are healthy is polled every `PUSH_POLL_INTERVAL` instead of on the cron schedule, and falls
back to the cron schedule by itself when a channel expires or fails.

- `ingestion.push.routes.push_routes(services, queue)`: the routes `api.create_app` mounts;
  `is_self_authenticated(path)` tells an API-key check to leave them to their own signatures.
- `PushChannels`: the sync engine's after-sync hook (watch, renew, stop channels) and
  `stop(user_id, provider)`, for account removal (`ingestion.push.channels`).
- `ChannelStore` / `summarize`: channels and the push status `active | expired | off`.
"""

from ingestion.push.channels import PushChannels
from ingestion.push.store import ChannelStore, PushStatus, summarize

__all__ = [
    "PUSH_PREFIX",
    "ChannelStore",
    "PushChannels",
    "PushStatus",
    "is_self_authenticated",
    "summarize",
]

#: Every push route lives under this prefix (design §8).
PUSH_PREFIX = "/v1/push/"


def is_self_authenticated(path: str) -> bool:
    """True for the push routes: they check their sender's signature, never the API key."""
    return path.startswith(PUSH_PREFIX)
