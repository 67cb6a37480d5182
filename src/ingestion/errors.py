"""What can go wrong in a sync, sorted by what the worker should do about it.

::

    IngestionError
    ├── RetryableError        try the job again later (5xx, network, a sink outage)
    │   └── RateLimited       try again at `retry_after` (quota or rate window exhausted)
    │       └── QuotaExhausted a long quota (X's monthly usage cap) is spent: no call until then
    ├── ReauthRequired        the account's grant is dead: mark it, do not retry
    └── PermanentError        retrying cannot help (bad input, a 4xx the engine refused)
        ├── MalformedJob      a stream entry that is not a valid job (dead-lettered at once)
        ├── MalformedItem     one provider item no record can be made of (skipped, counted;
        │                     the sync goes on: `ingestion.providers.items`)
        └── ConfigurationError a setting or an OAuth app is missing or wrong

Raise the most specific class where the failure is understood; the worker handles each class
in one place (`worker.py`). Messages are shown to operators: say what happened and what to do,
and never include a token or a secret.

Any other exception is a surprise whose message the service did not write: a driver's error
can quote a row (tokens, mail text), a library's can quote its input. `describe_unexpected`
and `safe_traceback` are what may be persisted, shown or logged about it: class names and
code locations, never the message.
"""

from __future__ import annotations

import traceback

from ingestion.retry_after import clamp_wait

__all__ = [
    "ConfigurationError",
    "IngestionError",
    "MalformedItem",
    "MalformedJob",
    "PermanentError",
    "QuotaExhausted",
    "RateLimited",
    "ReauthRequired",
    "RetryableError",
    "describe",
    "describe_unexpected",
    "safe_traceback",
]


class IngestionError(Exception):
    """Base of every error the service raises on purpose."""


class RetryableError(IngestionError):
    """A transient failure: the job is retried with backoff.

    `retry_after` (seconds), when known, is the earliest moment a retry can succeed. It is
    clamped to `retry_after.MAX_WAIT_SECONDS`; a value that is no finite number is dropped
    (None), so no error can park a job for ever.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = clamp_wait(retry_after)


class RateLimited(RetryableError):
    """A quota or rate window is exhausted; the job is deferred to `retry_after`.

    Raising it after some pages were accepted is safe: their cursor is already committed,
    so the deferred job resumes where this one stopped.
    """


class QuotaExhausted(RateLimited):
    """A provider's long-period quota is spent (X's monthly usage cap): the account's status
    becomes `quota_exhausted` and no call is made until `retry_after` (the cap's reset)."""


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


def describe(exc: BaseException) -> str:
    """What may be shown or kept of `exc`: the service's own message for an `IngestionError`
    (written by the service, never quoting data), else `describe_unexpected(exc)`."""
    return str(exc) if isinstance(exc, IngestionError) else describe_unexpected(exc)


def describe_unexpected(exc: BaseException) -> str:
    """`unexpected IntegrityError (CheckViolation)`: the class (and a database driver's error
    class) of an exception the service did not raise on purpose; never its message."""
    orig = getattr(exc, "orig", None)
    inner = f" ({type(orig).__name__})" if isinstance(orig, BaseException) else ""
    return f"unexpected {type(exc).__name__}{inner}"


def safe_traceback(exc: BaseException) -> str:
    """Where `exc` was raised (file, line, function and source line per frame, causes
    included) without any exception message: what a log may keep of a surprise."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"{frames}{describe_unexpected(current).removeprefix('unexpected ')}\n")
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return "(caused by)\n".join(parts)
