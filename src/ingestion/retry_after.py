"""Reading "later": `Retry-After` (every API and the memory engine) and rate-limit reset epochs
(`x-ratelimit-reset` on GitHub, `x-rate-limit-reset` on X).

Every value is hostile: a wait that is not a finite, non-negative number (`inf`, `nan`, `-5`,
garbage) is ignored (None: the caller uses its own backoff), and a finite one is clamped to
`MAX_WAIT_SECONDS`, so no job, marker or lock can be parked for ever by one header.
"""

from __future__ import annotations

import email.utils
import math
import time
from datetime import UTC

__all__ = ["MAX_WAIT_SECONDS", "clamp_wait", "parse_reset_epoch", "parse_retry_after"]

#: The longest wait any header may ask for: one day. GitHub's and X's windows reset within an
#: hour (X's longest published window is 24 hours); the worker defers at most
#: `JOB_MAX_DEFER_SECONDS` at a time on top of this.
MAX_WAIT_SECONDS = 86_400.0
#: Longest header value read (a delta or an HTTP-date is a few dozen characters).
_MAX_HEADER_CHARS = 64


def clamp_wait(seconds: float | None) -> float | None:
    """`seconds` within [0, MAX_WAIT_SECONDS]; None for a value that is no number of seconds."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_WAIT_SECONDS)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date, RFC 9110 §10.2.3).

    A negative delta is no valid header (RFC 9110 allows only non-negative integers): ignored.
    """
    if not value or len(value) > _MAX_HEADER_CHARS:
        return None
    value = value.strip()
    if value[:1].isdigit() or value[:1] in "+-.":
        number = _number(value)
        return clamp_wait(number) if number is not None and number >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return clamp_wait(when.timestamp() - current)


def parse_reset_epoch(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds until a reset given as epoch seconds, plus one second of margin.

    A past reset waits the margin only; a value that is no finite number, or a negative epoch,
    is ignored (None).
    """
    if not value or len(value) > _MAX_HEADER_CHARS:
        return None
    reset = _number(value.strip())
    if reset is None or reset < 0:
        return None
    current = now if now is not None else time.time()
    return clamp_wait(max(0.0, reset - current) + 1.0)
