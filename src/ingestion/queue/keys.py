"""Every Redis key the service uses, in one place. No key literal elsewhere.

With the default namespace `ingestion` the names are the contract of design §5:
stream `ingestion:jobs`, group `ingestion-workers`, dead letters `ingestion:jobs:dead`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True)
class Keys:
    namespace: str = "ingestion"

    @property
    def stream(self) -> str:
        return f"{self.namespace}:jobs"

    @property
    def group(self) -> str:
        return f"{self.namespace}-workers"

    @property
    def dead(self) -> str:
        return f"{self.namespace}:jobs:dead"

    def dead_index(self, fingerprint: str) -> str:
        """The id of the live dead letter of one (provider, user, error) (`retention`), so a
        repeat replaces it and counts up instead of adding an entry."""
        return f"{self.namespace}:jobs:dead:seen:{fingerprint}"

    @property
    def delayed(self) -> str:
        """Sorted set of jobs waiting for a retry time (score = epoch seconds)."""
        return f"{self.namespace}:jobs:delayed"

    def active(self, provider: str, user_id: str) -> str:
        """Marks a (provider, user) job queued or running, for coalescing."""
        return f"{self.namespace}:active:{provider}:{user_id}"

    def widen(self, provider: str, user_id: str) -> str:
        """Hash of widening options (e.g. `forceFullSync`) asked for by requests coalesced into
        the pair's job and not yet taken by a run: the next run of the pair takes them."""
        return f"{self.namespace}:widen:{provider}:{user_id}"

    def running(self, provider: str, user_id: str) -> str:
        """Hash of the pair's running job: `job` (its id) and the widening options it runs with."""
        return f"{self.namespace}:running:{provider}:{user_id}"

    def sync_lock(self, provider: str, user_id: str) -> str:
        """Held while one sync of (provider, user) runs: one at a time across workers."""
        return f"{self.namespace}:lock:sync:{provider}:{user_id}"

    def token_lock(self, account_id: str) -> str:
        return f"{self.namespace}:lock:token:{account_id}"

    def tick(self, provider: str, user_id: str, tick_epoch: int) -> str:
        """Set once per scheduled tick so several schedulers enqueue it once; lives about one
        cron interval (`retention.tick_ttl`)."""
        return f"{self.namespace}:tick:{provider}:{user_id}:{tick_epoch}"

    def push_seen(self, provider: str, delivery_id: str) -> str:
        """Set (with a TTL) when a push delivery was taken: a replay of it is refused."""
        return f"{self.namespace}:push:seen:{provider}:{delivery_id}"
