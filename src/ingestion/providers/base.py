"""The provider contract: how a provider fetches, and what it hands back.

A provider is an object with a `sync(ctx)` async generator. It reads only what changed since
the cursor in `ctx.state`, and yields `SyncPage`s. It never talks to the memory engine or the
database: the sync engine (`ingestion.sync`) sends each page's upserts and deletes to the sink,
and only after the sink accepted them stores `page.state` as the new cursor. So:

- a crash or a deferral between pages resumes from the last accepted page;
- every page's `state` must be complete (it replaces the stored metadata) and must describe a
  position at or before the items of the pages still to come;
- re-yielding an item that was already accepted is harmless (ids are stable, upserts idempotent).

Deletions a provider cannot see (an expired cursor forces a full re-enumeration, a calendar that
is gone cannot be listed) are reconciled by the engine, which remembers every record it delivered:
a page may declare that a full enumeration of a `Scope` starts (`enumeration_started`) or is
complete (`enumeration_completed`), or that a scope is gone (`scopes_gone`); see
`ingestion.reconcile`. An enumeration that only checks what still exists (without sending the
items again) reports the `sourceId`s it listed in `seen`.
Only the FIRST page of a fresh enumeration declares its start; pages of a resumed one do not.

A provider raises `ingestion.errors` exceptions: `RateLimited` to defer the job (pages yielded
before are kept), `RetryableError`, `ReauthRequired`, `PermanentError`.

Adding a provider: a folder with auth, client, provider, sync state and transformer, then one line
in `providers/registry.py`. Nothing outside the folder knows the provider's name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import httpx
    import structlog

    from ingestion.clock import Clock
    from ingestion.config import Settings
    from ingestion.memory.record import MemoryRecord
    from ingestion.providers.items import ItemGuard

__all__ = [
    "FetchOptions",
    "OAuthEndpoints",
    "Provider",
    "Scope",
    "SyncContext",
    "SyncPage",
    "TokenSource",
]


@dataclass(frozen=True)
class FetchOptions:
    """The `options` of a job (design §5), already validated."""

    max_results: int | None = None
    since: datetime | None = None
    force_full_sync: bool = False


class TokenSource(Protocol):
    """A valid access token for the account being synced (see `ingestion.tokens`)."""

    async def access_token(self) -> str:
        """The current token, refreshed first when it expires within the safety margin."""
        ...

    async def refresh_after_unauthorized(self, rejected_token: str) -> str:
        """The API answered 401 to `rejected_token`: refresh once (unless another process
        already did) and return the new token. Raises `ReauthRequired` when the grant is dead."""
        ...


@dataclass
class SyncContext:
    """Everything one sync of one (user, provider) may use."""

    user_id: str
    options: FetchOptions
    #: Provider-owned cursor metadata from the last accepted page (historyId, syncToken, ETags,
    #: since_id, backfill checkpoint...). Treat as read-only; yield a new mapping in pages.
    state: Mapping[str, Any]
    last_sync_time: datetime | None
    settings: Settings
    http: httpx.AsyncClient
    tokens: TokenSource
    clock: Clock
    log: structlog.stdlib.BoundLogger
    #: Runs each item's transform off the event loop, in its time budget, isolated: a bad item
    #: is counted (`defective`/`skipped`) and the sync goes on (`ingestion.providers.items`).
    items: ItemGuard


@dataclass(frozen=True)
class Scope:
    """A set of records a provider can enumerate in full: every `sourceId` starting with
    `prefix` (`""` = all of the provider's records), narrowed to records whose `occurredAt` is
    strictly after `since` and strictly before `until` when those are set.

    The bounds must be conservative: a record inside them that still exists must be listed by
    the enumeration, or the engine deletes it when the enumeration completes.
    """

    prefix: str
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class SyncPage:
    """A unit of progress: items to upsert and delete, and the cursor to store afterwards."""

    state: Mapping[str, Any]
    upserts: Sequence[MemoryRecord] = ()
    #: `sourceId`s (not record ids) of items to remove from the memory engine.
    deletes: Sequence[str] = ()
    #: Items read from the API for this page (may be more than upserts: skipped, unchanged).
    fetched: int = 0
    #: Optional estimate of the whole sync's item count, for progress display.
    total_estimate: int | None = None
    #: Optional counters to add to the run history's `details` (e.g. requests, quota used).
    stats: Mapping[str, int] = field(default_factory=dict)
    #: A fresh full enumeration of each scope starts with this page (its upserts included).
    enumeration_started: Sequence[Scope] = ()
    #: Prefixes whose enumeration is complete with this page: once the page is accepted, every
    #: remembered record of the scope the enumeration did not deliver is deleted.
    enumeration_completed: Sequence[str] = ()
    #: Prefixes that can no longer be listed at all: every remembered record under them is
    #: deleted (and any enumeration in progress under them is abandoned).
    scopes_gone: Sequence[str] = ()
    #: `sourceId`s an open enumeration listed without upserting them (a reconciliation pass
    #: that only checks what still exists): they count as delivered by it, so its sweep keeps
    #: them. Ids never delivered are ignored.
    seen: Sequence[str] = ()


@dataclass(frozen=True)
class OAuthEndpoints:
    """What the token service and `ingestion connect` need to know of a provider's OAuth."""

    account_provider: str
    auth_url_setting: str
    token_url_setting: str
    client_id_setting: str
    client_secret_setting: str
    scopes: tuple[str, ...]
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    #: How the client authenticates at the token endpoint when it has a secret:
    #: `client_secret_post` (id and secret in the form) or `client_secret_basic` (HTTP Basic).
    #: A client without a secret is public and sends only `client_id` in the form.
    token_endpoint_auth_method: str = "client_secret_post"  # noqa: S105 (a method name)
    #: Extra headers of every token request (GitHub answers form-encoded without an Accept).
    token_request_headers: Mapping[str, str] = field(default_factory=dict)
    #: Each refresh spends the refresh token and returns a new one (GitHub, X). Without
    #: rotation a refresh answer without `refresh_token` keeps the old one (Google).
    rotates_refresh_token: bool = False
    #: The authorization request carries a PKCE S256 challenge.
    pkce: bool = True
    #: Token endpoint error codes that, for this provider, mean the OAuth app is set up wrong
    #: (on top of `invalid_client`, `unauthorized_client`, `incorrect_client_credentials`):
    #: Google's `invalid_request` ("client_secret is missing.", "Could not determine client
    #: ID from request."), whereas X says `invalid_request` for a spent refresh token.
    client_error_codes: frozenset[str] = frozenset()


class Provider(Protocol):
    #: The provider's name in jobs, schedules and records: `gmail`, `calendar`, ...
    name: ClassVar[str]
    #: Better Auth `"providerId"` of the account it syncs with: `google`, `github`, `twitter`.
    account_provider: ClassVar[str]

    def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        """Fetch what changed since `ctx.state` and yield pages of records."""
        ...
