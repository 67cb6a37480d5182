"""What can go wrong in a sync, sorted by what the worker should do about it.

::

    IngestionError
    ├── RetryableError        try the job again later (5xx, network, a sink outage)
    │   └── RateLimited       try again at `retry_after` (quota or rate window exhausted)
    ├── ReauthRequired        the account's grant is dead: mark it, do not retry
    └── PermanentError        retrying cannot help (bad input, a 4xx the engine refused)
        ├── MalformedJob      a stream entry that is not a valid job (dead-lettered at once)
        ├── MalformedItem     one provider item no record can be made of (skipped, counted;
        │                     the sync goes on: `ingestion.providers.items`)
        └── ConfigurationError a setting or an OAuth app is missing or wrong

Raise the most specific class where the failure is understood; the worker handles each class
in one place (`worker.py`). Messages are shown to operators: say what happened and what to do,
and never include a token or a secret.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "IngestionError",
    "MalformedItem",
    "MalformedJob",
    "PermanentError",
    "RateLimited",
    "ReauthRequired",
    "RetryableError",
]


class IngestionError(Exception):
    """Base of every error the service raises on purpose."""


class RetryableError(IngestionError):
    """A transient failure: the job is retried with backoff.

    `retry_after` (seconds), when known, is the earliest moment a retry can succeed.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """A quota or rate window is exhausted; the job is deferred to `retry_after`.

    Raising it after some pages were accepted is safe: their cursor is already committed,
    so the deferred job resumes where this one stopped.
    """


class ReauthRequired(IngestionError):
    """The refresh token was revoked, expired or already spent: a person must reconnect."""


class PermanentError(IngestionError):
    """Retrying will not help; the job fails (and is dead-lettered) with this message."""


class MalformedJob(PermanentError):
    """A queue entry that cannot be parsed into a job."""


class MalformedItem(PermanentError):
    """One item from a provider that no record can be made of (a field of the wrong type, an
    impossible value). Transforms raise nothing else on bad input; the item guard skips and
    counts the item and the sync goes on."""


class ConfigurationError(PermanentError):
    """A setting is missing or invalid (for example no OAuth client for a refresh)."""
