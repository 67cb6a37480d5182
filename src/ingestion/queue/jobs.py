"""The job model and its wire form on the stream (design §5).

An entry has `type` (`{provider}:fetch`) and `payload` (JSON text
`{"userId": "…", "options": {"maxResults"?, "since"?, "forceFullSync"?}}`); the service adds
`attempt` and `enqueuedAt` of its own and accepts entries that have only the two contract fields.
`Job.from_fields` refuses anything else with a `MalformedJob` that says exactly what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ingestion.config import PROVIDER_NAMES
from ingestion.errors import MalformedJob

__all__ = [
    "RERUN_FLAG",
    "WIDENING_FLAGS",
    "Job",
    "JobOptions",
    "options_from_json",
    "options_to_json",
    "widened",
    "widening_flags",
]

#: Options that make a job do more than the job it may be coalesced into (wire names). A
#: coalesced request carrying one is recorded by the queue, never dropped.
WIDENING_FLAGS = ("forceFullSync",)
#: Not an option but a widening request of its own: "something changed just now, read after
#: it" (a push notification). A job that has not started covers it; a running one never does
#: (its reads may predate the change), so it becomes one plain follow-up run. Never carried
#: in a payload: BEGIN drops it, the follow-up job has no option for it.
RERUN_FLAG = "rerun"


@dataclass(frozen=True)
class JobOptions:
    """The `options` of a job (design §5), validated: the queue's own type, so the queue knows
    nothing of providers. The worker hands them to the sync engine as the providers'
    `FetchOptions` (`ingestion.worker.fetch_options`)."""

    max_results: int | None = None
    since: datetime | None = None
    force_full_sync: bool = False


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def options_from_json(raw: Any) -> JobOptions:
    """Validate the `options` object of a payload or an API request."""
    if raw is None:
        return JobOptions()
    if not isinstance(raw, dict):
        raise MalformedJob("options must be a JSON object")
    unknown = sorted(set(raw) - {"maxResults", "since", "forceFullSync"})
    if unknown:
        raise MalformedJob(f"unknown option(s): {', '.join(unknown)}")
    max_results = raw.get("maxResults")
    if max_results is not None and (
        not isinstance(max_results, int) or isinstance(max_results, bool) or max_results < 1
    ):
        raise MalformedJob("options.maxResults must be a positive integer")
    since_raw = raw.get("since")
    since: datetime | None = None
    if since_raw is not None:
        if not isinstance(since_raw, str):
            raise MalformedJob("options.since must be an ISO-8601 string")
        try:
            since = datetime.fromisoformat(since_raw.replace("Z", "+00:00"))
        except ValueError:
            raise MalformedJob(f"options.since is not ISO-8601: {since_raw[:40]!r}") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    force = raw.get("forceFullSync", False)
    if not isinstance(force, bool):
        raise MalformedJob("options.forceFullSync must be true or false")
    return JobOptions(max_results=max_results, since=since, force_full_sync=force)


def options_to_json(options: JobOptions) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if options.max_results is not None:
        result["maxResults"] = options.max_results
    if options.since is not None:
        result["since"] = options.since.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if options.force_full_sync:
        result["forceFullSync"] = True
    return result


def widening_flags(options: JobOptions) -> list[str]:
    """The `WIDENING_FLAGS` that `options` sets."""
    return ["forceFullSync"] if options.force_full_sync else []


def widened(options: JobOptions, flags: Iterable[str]) -> JobOptions:
    """`options` with the widening `flags` applied (unknown names are ignored)."""
    if "forceFullSync" in set(flags) and not options.force_full_sync:
        return replace(options, force_full_sync=True)
    return options


@dataclass(frozen=True)
class Job:
    """One sync request for one (provider, user)."""

    provider: str
    user_id: str
    options: JobOptions = field(default_factory=JobOptions)
    #: 1 for the first try; the worker increments it on each retry.
    attempt: int = 1
    #: Stream entry id once read from the queue (or an in-process id).
    id: str = ""
    #: Stable id across retries (`jobId` field); the first entry id for entries without one.
    job_id: str = ""
    #: Times the job was deferred by a rate limit or a busy sync lock (not failed attempts).
    deferrals: int = 0

    @property
    def type(self) -> str:
        return f"{self.provider}:fetch"

    def payload(self) -> str:
        return json.dumps(
            {"userId": self.user_id, "options": options_to_json(self.options)},
            separators=(",", ":"),
        )

    def to_fields(self) -> dict[str, str]:
        fields = {
            "type": self.type,
            "payload": self.payload(),
            "attempt": str(self.attempt),
            "enqueuedAt": datetime.now(UTC).isoformat(),
        }
        if self.job_id:
            fields["jobId"] = self.job_id
        if self.deferrals:
            fields["deferrals"] = str(self.deferrals)
        return fields

    @classmethod
    def from_fields(
        cls,
        fields: Mapping[str, str] | Mapping[bytes, bytes] | Mapping[str | bytes, str | bytes],
        *,
        entry_id: str = "",
    ) -> Job:
        """Parse a stream entry; raise `MalformedJob` naming what is wrong."""
        data = {
            (k if isinstance(k, str) else _text(k)): (v if isinstance(v, str) else _text(v))
            for k, v in fields.items()
        }
        job_type = data.get("type")
        if not job_type:
            raise MalformedJob("entry has no 'type' field")
        provider, sep, action = job_type.partition(":")
        if not sep or action != "fetch" or provider not in PROVIDER_NAMES:
            raise MalformedJob(
                f"unknown job type {job_type[:60]!r}; expected one of "
                + ", ".join(f"{p}:fetch" for p in PROVIDER_NAMES)
            )
        raw_payload = data.get("payload")
        if raw_payload is None:
            raise MalformedJob("entry has no 'payload' field")
        try:
            payload = json.loads(raw_payload)
        except ValueError as exc:
            raise MalformedJob(f"payload is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise MalformedJob("payload must be a JSON object")
        user_id = payload.get("userId")
        if not isinstance(user_id, str) or not user_id.strip():
            raise MalformedJob("payload has no 'userId' (a non-empty string)")
        options = options_from_json(payload.get("options"))
        try:
            attempt = max(1, int(data.get("attempt", "1")))
        except ValueError:
            attempt = 1
        try:
            deferrals = max(0, int(data.get("deferrals", "0")))
        except ValueError:
            deferrals = 0
        return cls(
            provider=provider,
            user_id=user_id,
            options=options,
            attempt=attempt,
            id=entry_id,
            job_id=data.get("jobId") or entry_id,
            deferrals=deferrals,
        )
