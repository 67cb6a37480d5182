"""Text bodies Gmail stores apart: fetched so the record keeps the text, not the snippet.

`messages.get` (`format=full`) hands a large text body over as `body.attachmentId` (and its
`size`) without `data`, exactly like a file (MessagePartBody reference: "When present, contains
the ID of an external attachment that can be retrieved in a separate messages.attachments.get
request"). Before a message is transformed, `fill_external_bodies` reads those parts with
`messages.attachments.get` (5 quota units each, paced by the client like every call) and puts
the bytes in as `data`, so the transform reads them as any other body. Guarantees:

- only the bodies the record is made of are fetched: text parts that are not files, and in a
  `multipart/alternative` the HTML only when no plain-text alternative carries text; files are
  never downloaded;
- bounded: a part whose declared size is above `max_bytes` is not fetched (the transform then
  keeps the snippet and reports the defect), and at most `max_parts` parts per message;
- a part that is gone (404) is left as it was; the message copy is changed, never the input.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

__all__ = [
    "MAX_EXTERNAL_BODY_BYTES",
    "MAX_EXTERNAL_PARTS",
    "external_text_parts",
    "fill_external_bodies",
]

#: Largest text body fetched apart (bytes, as Gmail declares its size).
MAX_EXTERNAL_BODY_BYTES = 4 * 1024 * 1024
#: Text parts fetched apart per message at most.
MAX_EXTERNAL_PARTS = 4

Fetch = Callable[[str, str], Awaitable[bytes | None]]


def _headers(part: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(h.get("name") or "").lower(): str(h.get("value") or "")
        for h in part.get("headers") or []
        if isinstance(h, Mapping)
    }


def _is_file(part: Mapping[str, Any]) -> bool:
    disposition = _headers(part).get("content-disposition", "").strip().lower()
    if disposition.startswith("attachment"):
        return True
    inline = not disposition or disposition.startswith("inline")
    return bool(part.get("filename")) and not inline


def _external(part: Mapping[str, Any]) -> bool:
    body = part.get("body") or {}
    return bool(body.get("attachmentId")) and not body.get("data")


def _has_text(part: Mapping[str, Any]) -> bool:
    body = part.get("body") or {}
    return bool(body.get("data")) or bool(body.get("attachmentId"))


def external_text_parts(payload: Mapping[str, Any], depth: int = 0) -> Iterator[dict[str, Any]]:
    """The text parts of a payload tree stored apart that the record is made of."""
    if depth > 20:
        return
    mime = str(payload.get("mimeType") or "").lower()
    children = [c for c in payload.get("parts") or [] if isinstance(c, dict)]
    if mime == "multipart/alternative":
        plain = [
            c for c in children if str(c.get("mimeType")).lower() == "text/plain" and _has_text(c)
        ]
        for child in plain[:1] or children:  # the transform prefers the plain text
            yield from external_text_parts(child, depth + 1)
        return
    if children:
        for child in children:
            yield from external_text_parts(child, depth + 1)
        return
    if mime.startswith("text/") and _external(payload) and not _is_file(payload):
        yield payload  # type: ignore[misc]


async def fill_external_bodies(
    message: dict[str, Any],
    fetch: Fetch,
    *,
    max_bytes: int = MAX_EXTERNAL_BODY_BYTES,
    max_parts: int = MAX_EXTERNAL_PARTS,
) -> tuple[dict[str, Any], list[str]]:
    """The message with its external text bodies filled in, and what was left out (why)."""
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return message, []
    if not any(True for _ in external_text_parts(payload)):
        return message, []
    message = copy.deepcopy(message)
    parts = list(external_text_parts(message["payload"]))
    notes: list[str] = []
    wanted: list[dict[str, Any]] = []
    for part in parts:
        size = int((part.get("body") or {}).get("size") or 0)
        where = f"part {part.get('partId') or '0'}"
        if size > max_bytes:
            notes.append(f"{where}: text body of {size} bytes stored apart, above {max_bytes}")
        elif len(wanted) >= max_parts:
            notes.append(f"{where}: more than {max_parts} text bodies stored apart")
        else:
            wanted.append(part)
    message_id = str(message.get("id"))
    found = await asyncio.gather(
        *(fetch(message_id, str(part["body"]["attachmentId"])) for part in wanted)
    )
    for part, data in zip(wanted, found, strict=True):
        if data is None:
            continue
        data = data[:max_bytes]
        encoded = base64.urlsafe_b64encode(data).decode("ascii")
        part["body"] = {**part["body"], "data": encoded, "size": len(data)}
    return message, notes
