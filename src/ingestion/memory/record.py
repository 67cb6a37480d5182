"""The memory record: what every synced item becomes (design §6).

Guarantees kept here, for every provider:

- `id` is `{source}:{userId}:{sourceId}`: the same item always gets the same id, so a resend
  after a retry or a crash is an idempotent upsert, never a duplicate.
- `content` is plain UTF-8 text: invalid bytes and lone surrogates replaced by U+FFFD, line
  ends normalised to `\n`, NUL and every other control character (C0, DEL, C1; newline and tab
  kept) and the noncharacters U+FFFE/U+FFFF removed, and at most `CONTENT_MAX_CHARS` (100,000)
  characters *including* the marker `[… N more characters not stored]` that ends a cut body.
- `title` is one line (whitespace runs collapsed) of at most `TITLE_MAX_CHARS` characters.
- `metadata` holds plain JSON values only (datetimes as ISO-8601 UTC, strings cleaned of
  surrogates and control characters, NaN/infinity as null), so it always serialises and hashes
  the same way. The keys each record type carries are typed in `ingestion.memory.metadata`.
- `contentHash` is sha256 over a canonical JSON of title, content and metadata, so the engine
  (and our own sink) can skip unchanged re-sends.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from pydantic.alias_generators import to_camel

__all__ = [
    "CONTENT_MAX_CHARS",
    "TITLE_MAX_CHARS",
    "MemoryRecord",
    "RecordType",
    "Source",
    "clean_text",
    "clean_title",
    "content_hash",
    "record_id",
    "to_utc",
]

#: Upper bound of `content`, in characters, marker included (about 100 KB of text: a long email
#: thread or a commit with its bounded diff fits; a whole mailbox export does not). At most
#: 400 KB of UTF-8, so one record always fits a request to the memory engine.
CONTENT_MAX_CHARS = 100_000
#: Upper bound of `title`, in characters.
TITLE_MAX_CHARS = 1_000

Source = Literal["gmail", "calendar", "github", "twitter"]
RecordType = Literal["email", "event", "commit", "issue", "pull_request", "tweet"]

# C0 controls except tab and newline (carriage returns are normalised first), DEL, C1 controls,
# and the noncharacters U+FFFE/U+FFFF.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
#: Anything `clean_text` rewrites: a control character (carriage return included), a
#: noncharacter, a surrogate.
_UNCLEAN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")
#: Room kept for the cut marker, so a cut body stays within the limit.
_MARKER_ROOM = 48


def record_id(source: str, user_id: str, source_id: str) -> str:
    """The stable id of an item: `{source}:{userId}:{sourceId}`."""
    return f"{source}:{user_id}:{source_id}"


def clean_text(
    value: str | bytes | None, *, limit: int = CONTENT_MAX_CHARS, omitted: int = 0
) -> str:
    """Plain, valid UTF-8 text without control characters, at most `limit` characters.

    A longer text is cut and ends with `[… N more characters not stored]`; the marker counts
    towards `limit`. `omitted` characters already left out by the caller (an input cap) are
    added to N, and a text they were cut from always ends with the marker.
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if len(value) > 4 * limit:  # far more than is kept: clean only what can be kept
        omitted += len(value) - 4 * limit
        value = value[: 4 * limit]
    if _UNCLEAN.search(value) is not None:  # one scan; most texts need no rewrite
        value = _SURROGATES.sub("\ufffd", value)
        value = value.replace("\r\n", "\n").replace("\r", "\n")
        value = _CONTROL.sub("", value)
    if len(value) > limit or omitted > 0:
        keep = min(len(value), max(0, limit - _MARKER_ROOM))
        marker = f"\n[… {len(value) - keep + omitted} more characters not stored]"
        value = f"{value[:keep]}{marker}"[:limit]
    return value


def clean_title(value: str | bytes | None) -> str | None:
    """One line of clean text (whitespace runs collapsed), at most `TITLE_MAX_CHARS`."""
    if value is None:
        return None
    text = _WHITESPACE.sub(" ", clean_text(value, limit=10 * TITLE_MAX_CHARS)).strip()
    if len(text) > TITLE_MAX_CHARS:
        text = text[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return text


def to_utc(value: datetime) -> datetime:
    """`value` in UTC (naive = UTC); an instant beyond year 1 or 9999 in UTC (year 1 with a
    positive offset) is clamped to `datetime.min`/`max` instead of raising `OverflowError`."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if value.year < 5000 else datetime.max
        return edge.replace(tzinfo=UTC)


def _iso_utc(value: datetime) -> str:
    return to_utc(value).isoformat().replace("+00:00", "Z")


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
        metadata: Mapping[str, Any] | None = None,
        content_omitted: int = 0,
    ) -> MemoryRecord:
        """A record with its derived fields; `content` may be text or raw bytes (any encoding
        errors are replaced). A naive `occurred_at` is taken as UTC (one out of range in UTC is
        clamped). `content_omitted` counts characters of the item's text a transform did not
        read (an input cap, `ingestion.providers.limits`): the cut marker includes them.

        Raises `ValueError` for an empty `user_id` or `source_id` (they make up the id).
        """
        if not user_id or not source_id:
            raise ValueError("a memory record needs a non-empty user_id and source_id")
        title_text = clean_title(title)
        body = clean_text(content, omitted=content_omitted)
        meta = _jsonable(metadata or {})
        return cls(
            id=record_id(source, user_id, source_id),
            user_id=user_id,
            source=source,
            source_id=source_id,
            type=type,
            title=title_text,
            content=body,
            url=(url or "").strip() or None,
            occurred_at=to_utc(occurred_at),
            metadata=meta,
            content_hash=content_hash(title_text, body, meta),
        )

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to the memory engine."""
        return self.model_dump(mode="json", by_alias=True)

    def wire_json(self) -> bytes:
        """`to_wire()` as compact UTF-8 JSON, encoded in one step (no dict in between)."""
        return self.__pydantic_serializer__.to_json(self, by_alias=True)


def content_hash(title: str | None, content: str, metadata: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON (sorted keys, no spaces) of title, content, metadata."""
    canonical = json.dumps(
        {"title": title, "content": content, "metadata": metadata},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _jsonable(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON values, so it always serialises and hashes the same way."""
    result: dict[str, Any] = _plain(dict(metadata))
    return result


def _plain(value: object) -> Any:
    kind = type(value)
    if kind is str:  # the common case first; exact types skip the isinstance chain
        return _plain_str(value)  # type: ignore[arg-type]
    if kind is dict:
        return {_plain_str(str(k)): _plain(v) for k, v in value.items()}  # type: ignore[attr-defined]
    if kind is list:
        return [_plain(v) for v in value]  # type: ignore[attr-defined]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _plain_str(value)
    if isinstance(value, datetime):
        return _iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return _plain(value.decode("utf-8", errors="replace"))
    if isinstance(value, Mapping):
        return {_plain_str(str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="json", by_alias=True))
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON")


def _plain_str(value: str) -> str:
    if value.isascii() and value.isprintable():  # nothing to clean: no scan, no copy
        return value
    return _CONTROL.sub("", _SURROGATES.sub("\ufffd", value).replace("\r\n", "\n"))
