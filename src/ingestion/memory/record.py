"""The memory record: what every synced item becomes (design §6).

Guarantees kept here, for every provider:

- `id` is `{source}:{userId}:{sourceId}`: the same item always gets the same id, so a resend
  after a retry or a crash is an idempotent upsert, never a duplicate.
- `content` is plain UTF-8 text: invalid bytes replaced, NUL and other control characters
  (except newline and tab) removed, at most `CONTENT_MAX_CHARS` characters; a cut body ends with
  a marker saying how much was left out.
- `contentHash` is sha256 over a canonical JSON of title, content and metadata, so the engine
  (and our own sink) can skip unchanged re-sends.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from pydantic.alias_generators import to_camel

__all__ = [
    "CONTENT_MAX_CHARS",
    "MemoryRecord",
    "RecordType",
    "Source",
    "clean_text",
    "record_id",
]

#: Upper bound of `content`, in characters (about 100 KB of text: a long email thread or a
#: commit with its bounded diff fits; a whole mailbox export does not).
CONTENT_MAX_CHARS = 100_000

Source = Literal["gmail", "calendar", "github", "twitter"]
RecordType = Literal["email", "event", "commit", "issue", "pull_request", "tweet"]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def record_id(source: str, user_id: str, source_id: str) -> str:
    """The stable id of an item: `{source}:{userId}:{sourceId}`."""
    return f"{source}:{user_id}:{source_id}"


def clean_text(value: str | bytes | None, *, limit: int = CONTENT_MAX_CHARS) -> str:
    """Plain, valid UTF-8 text without control characters, cut at `limit` with a marker."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    value = _SURROGATES.sub("\ufffd", value)
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = _CONTROL.sub("", value)
    if len(value) > limit:
        dropped = len(value) - limit
        value = f"{value[:limit]}\n[… {dropped} more characters not stored]"
    return value


def _iso_utc(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class MemoryRecord(BaseModel):
    """One item as the memory engine receives it (camelCase on the wire).

    Build records with `MemoryRecord.build(...)`, which derives `id` and `contentHash` and
    cleans `content`; validate incoming JSON with `MemoryRecord.model_validate`.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    id: str
    user_id: str
    source: Source
    source_id: str
    type: RecordType
    title: str | None
    content: str
    url: str | None = None
    occurred_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    content_hash: str

    @field_serializer("occurred_at")
    def _serialize_occurred_at(self, value: datetime) -> str:
        return _iso_utc(value)

    @classmethod
    def build(
        cls,
        *,
        source: Source,
        user_id: str,
        source_id: str,
        type: RecordType,
        title: str | None,
        content: str | bytes | None,
        occurred_at: datetime,
        url: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> MemoryRecord:
        clean_title = clean_text(title, limit=1000) if title is not None else None
        body = clean_text(content)
        meta = _jsonable(metadata or {})
        if occurred_at.tzinfo is None:
            occurred_at = occurred_at.replace(tzinfo=UTC)
        return cls(
            id=record_id(source, user_id, source_id),
            user_id=user_id,
            source=source,
            source_id=source_id,
            type=type,
            title=clean_title,
            content=body,
            url=url,
            occurred_at=occurred_at.astimezone(UTC),
            metadata=meta,
            content_hash=content_hash(clean_title, body, meta),
        )

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to the memory engine."""
        return self.model_dump(mode="json", by_alias=True)


def content_hash(title: str | None, content: str, metadata: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"title": title, "content": content, "metadata": metadata},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _jsonable(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON values (datetimes as ISO-8601 UTC), so hashes are stable."""
    result: dict[str, Any] = json.loads(json.dumps(metadata, default=_json_default))
    return result


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON")
