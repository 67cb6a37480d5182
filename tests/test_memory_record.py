"""The memory record: stable ids, canonical hashes, clean and bounded content."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ingestion.memory.record import (
    CONTENT_MAX_CHARS,
    TITLE_MAX_CHARS,
    MemoryRecord,
    clean_text,
)

WHEN = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))


def build(**overrides: object) -> MemoryRecord:
    fields: dict[str, object] = {
        "source": "gmail",
        "user_id": "u1",
        "source_id": "18c2f",
        "type": "email",
        "title": "Quarterly plan",
        "content": "Hello team",
        "occurred_at": WHEN,
        "url": "https://mail.google.com/mail/u/0/#all/18c2f",
        "metadata": {"threadId": "t1", "labels": ["INBOX"]},
    }
    fields.update(overrides)
    return MemoryRecord.build(**fields)  # type: ignore[arg-type]


def test_id_is_deterministic_and_the_wire_form_is_camel_case() -> None:
    record = build()
    assert record.id == "gmail:u1:18c2f"
    assert build().id == record.id
    wire = record.to_wire()
    assert set(wire) == {
        "id",
        "userId",
        "source",
        "sourceId",
        "type",
        "title",
        "content",
        "url",
        "occurredAt",
        "metadata",
        "contentHash",
    }
    assert wire["occurredAt"] == "2026-03-01T07:30:00Z"
    assert MemoryRecord.model_validate(wire) == record


def test_content_hash_covers_title_content_and_metadata_only() -> None:
    base = build()
    assert build(occurred_at=WHEN + timedelta(days=1)).content_hash == base.content_hash
    assert build(url=None).content_hash == base.content_hash
    assert build(title="Other").content_hash != base.content_hash
    assert build(content="Hello team!").content_hash != base.content_hash
    assert build(metadata={"threadId": "t2", "labels": ["INBOX"]}).content_hash != (
        base.content_hash
    )
    # Key order of the metadata does not matter.
    assert build(metadata={"labels": ["INBOX"], "threadId": "t1"}).content_hash == (
        base.content_hash
    )


def test_control_characters_and_invalid_bytes_are_cleaned() -> None:
    raw = b"line one\r\nline\x00 two\x07\x1b[31m\xff\xfe end\ttab\x85"
    record = build(content=raw, title="Sub\x00ject\r\n  folded")
    assert record.content == "line one\nline two[31m\ufffd\ufffd end\ttab\ufffd"
    assert record.title == "Subject folded"
    assert clean_text("a\x7fb\x9fc\ud800d\ufffe") == "abc\ufffdd"
    # What is left always encodes as UTF-8 and round-trips through JSON.
    encoded = json.dumps(record.to_wire(), ensure_ascii=False).encode("utf-8")
    assert MemoryRecord.model_validate(json.loads(encoded)) == record


def test_metadata_becomes_plain_json() -> None:
    record = build(
        metadata={
            "when": datetime(2026, 1, 1, 12, tzinfo=UTC),
            "score": float("nan"),
            "tags": ("a", "b"),
            "raw": b"bytes\xff",
            "nested": {"nul": "x\x00y"},
        }
    )
    assert record.metadata == {
        "when": "2026-01-01T12:00:00Z",
        "score": None,
        "tags": ["a", "b"],
        "raw": "bytes\ufffd",
        "nested": {"nul": "xy"},
    }
    with pytest.raises(TypeError):
        build(metadata={"bad": object()})


def test_huge_bodies_are_cut_within_the_limit_with_a_marker() -> None:
    body = "word " * 60_000  # 300,000 characters
    record = build(content=body)
    assert len(record.content) <= CONTENT_MAX_CHARS
    assert record.content.endswith("more characters not stored]")
    kept = record.content.rsplit("\n[…", 1)[0]
    assert body.startswith(kept)
    dropped = int(record.content.rsplit("[… ", 1)[1].split()[0])
    assert len(kept) + dropped == len(body)
    exact = "x" * CONTENT_MAX_CHARS
    assert build(content=exact).content == exact
    long_title = build(title="t" * (TITLE_MAX_CHARS * 3)).title
    assert long_title is not None
    assert len(long_title) == TITLE_MAX_CHARS
    assert long_title.endswith("…")


def test_naive_times_are_utc_and_ids_need_their_parts() -> None:
    assert build(occurred_at=datetime(2026, 1, 1, 8)).to_wire()["occurredAt"] == (
        "2026-01-01T08:00:00Z"
    )
    assert build(title=None, content=None).title is None
    with pytest.raises(ValueError, match="source_id"):
        build(source_id="")


def test_characters_a_transform_did_not_read_are_counted_in_the_cut_marker() -> None:
    assert clean_text("short", omitted=7).endswith("[… 7 more characters not stored]")
    text = clean_text("x" * 200_000, omitted=1_000)
    assert len(text) <= CONTENT_MAX_CHARS
    kept = text.index("\n[…")
    assert text.endswith(f"[… {200_000 - kept + 1_000} more characters not stored]")
    # Far more than can be kept is not even cleaned, but still counted.
    huge = clean_text("y" * 1_000_000)
    assert huge.endswith(f"[… {1_000_000 - huge.index(chr(10))} more characters not stored]")


def test_an_instant_outside_the_utc_calendar_is_clamped_not_an_error() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    late = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    for when, edge in ((early, datetime.min), (late, datetime.max)):
        record = MemoryRecord.build(
            source="twitter", user_id="u", source_id="1", type="tweet", title=None,
            content="x", occurred_at=when, metadata={"at": when},
        )  # fmt: skip
        assert record.occurred_at == edge.replace(tzinfo=UTC)
        assert record.to_wire()["occurredAt"].startswith(str(edge.year).zfill(4))
