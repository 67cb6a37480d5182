"""A Gmail message (`format=full`) becomes one `email` memory record.

The `full` format gives the MIME tree as Gmail parsed it: each part's headers, its body with the
transfer encoding already removed (base64url `data`, bytes in the part's own charset), and an
`attachmentId` for attachment parts, whose bytes are never downloaded. Guarantees:

- `title` is the decoded Subject (RFC 2047 encoded words, broken ones kept as text);
- `content` is readable text: text/plain preferred in a multipart/alternative, else the HTML
  made text by `providers/html.py`; parts of a multipart/mixed are joined; a nested
  message/rfc822 is rendered with its own From/Date/Subject; a trailing quoted reply chain
  ("On … wrote:" and `>` lines, "-----Original Message-----") and an RFC 3676 signature are
  trimmed when new text remains above them;
- text bodies are read as UTF-8 (what `format=full` delivers whatever the part declares); the
  declared charset, then Windows-1252, only where the bytes are not valid UTF-8; a wrong or
  unknown charset never fails the message, what is left is decoded with replacement
  characters;
- metadata per design §6: `from` {name, email}, `to`/`cc` lists, `threadId`, `messageId`,
  `labels`, `attachments` [{filename, mimeType, size, attachmentId}];
- `occurredAt` is `internalDate` (epoch milliseconds), the time Gmail received the message;
- everything odd met on the way is listed in `Transformed.defects`; the caller logs them.
  `transform` itself never raises on the content of a message;
- hostile input stays cheap (`ingestion.providers.limits`): each text part is read up to
  `TEXT_MAX_CHARS` characters, HTML up to `HTML_MAX_CHARS`, a header value up to
  `HEADER_MAX_CHARS` (what is left out is counted in the content's cut marker and listed as a
  defect); quote trimming is linear; past the item's time budget HTML is stripped of its tags
  instead of converted and quotes are no longer trimmed.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from ingestion.memory.record import MemoryRecord
from ingestion.providers.html import html_to_text
from ingestion.providers.limits import (
    HEADER_MAX_CHARS,
    HTML_MAX_CHARS,
    TEXT_MAX_CHARS,
    cap,
    item_transform,
    over_budget,
)

__all__ = ["WEB_URL", "Transformed", "decode_base64url", "html_to_text", "transform"]

#: Link to a message in Gmail's web interface (`#all` finds it whatever its labels).
WEB_URL = "https://mail.google.com/mail/u/0/#all/{id}"

_SCHRIEB = re.compile(r"\bschrieb\b")
#: Characters of a header read for its parameters (`charset`…).
PARAMETERS_MAX_CHARS = 4_000
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(Original Message|Forwarded message)\s*-{2,}\s*$", re.I)
_OUTLOOK_FROM = re.compile(r"^\s*From:\s.+$")
_BLANK_RUNS = re.compile(r"\n{3,}")
#: Mail labelled GB2312 or GBK is often GB18030 (their superset): decode it as that.
_SUPERSETS = re.compile(r"(=\?)(?:gb2312|gbk)\?", re.I)
_CHARSET_SUPERSET = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030"}


@dataclass
class Transformed:
    record: MemoryRecord
    defects: list[str] = field(default_factory=list)


def decode_base64url(data: str | None) -> bytes:
    """Bytes of a base64url field, tolerating missing padding and stray characters."""
    if not data:
        return b""
    text = data.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        return base64.b64decode(re.sub(r"[^A-Za-z0-9+/]", "", text) + "==", validate=False)


class _Headers:
    """Case-insensitive access to a part's `[{name, value}]` headers, decoded."""

    def __init__(self, headers: Sequence[Mapping[str, Any]] | None, defects: list[str]) -> None:
        self._values: dict[str, list[str]] = {}
        for header in headers or []:
            name = str(header.get("name") or "")[:200].lower()
            value, left_out = cap(str(header.get("value") or ""), HEADER_MAX_CHARS)
            if left_out:
                defects.append(f"{name} header: {left_out} characters over the cap not read")
            self._values.setdefault(name, []).append(value)
        self._defects = defects

    def raw(self, name: str) -> str | None:
        values = self._values.get(name.lower())
        return values[0] if values else None

    def text(self, name: str) -> str | None:
        """The header's value with RFC 2047 encoded words decoded."""
        value = self.raw(name)
        if value is None:
            return None
        if _plain(value):
            return " ".join(value.split())
        value = _SUPERSETS.sub(lambda m: m.group(1) + "gb18030?", value)
        try:
            return str(policy.default.header_factory(name, value)).strip()
        except Exception as exc:
            self._defects.append(f"{name} header: {type(exc).__name__}")
        try:
            return str(make_header(decode_header(value))).strip()
        except Exception:
            return value.strip()

    def addresses(self, name: str) -> list[dict[str, str]]:
        """`[{name, email}]` of an address header; unparsable entries are kept as the name."""
        values = self._values.get(name.lower())
        if not values:
            return []
        result: list[dict[str, str]] = []
        for value in values:
            if _plain(value) and "(" not in value:
                result.extend(
                    {"name": display, "email": addr}
                    for display, addr in getaddresses([value])
                    if display or addr
                )
                continue
            if _simple_words(value):
                # Encoded words that cannot hide a separator: split as plain text, then decode
                # each name. A sixth of the standard parser's time; the same addresses on the
                # real corpora, except that a name that decodes to an address stays a name
                # (the standard parser made it a second recipient).
                result.extend(
                    {"name": _decode_words(display), "email": addr}
                    for display, addr in getaddresses([value])
                    if display or addr
                )
                continue
            try:
                header: Any = policy.default.header_factory(name, value)
                result.extend(
                    {"name": str(address.display_name or ""), "email": _email_of(address)}
                    for address in header.addresses
                )
                for defect in getattr(header, "defects", ()):
                    self._defects.append(f"{name} header: {type(defect).__name__}")
                continue
            except Exception as exc:
                self._defects.append(f"{name} header: {type(exc).__name__}")
            try:
                found = getaddresses([_decode_words(value)])
            except Exception as exc:  # RecursionError on thousands of nested comments
                self._defects.append(f"{name} header: {type(exc).__name__}")
                found = [(value[:200], "")]
            for display, addr in found:
                if display or addr:
                    result.append({"name": display, "email": addr})
        return result

    def param(self, header: str, key: str) -> str | None:
        value = self.raw(header)
        if value is None:
            return None
        value = value[:PARAMETERS_MAX_CHARS]  # a Content-Type is short; its parser is slow
        if _plain(value) and "*" not in value:
            match = re.search(rf"(?:^|;)\s*{key}\s*=\s*(?:\"([^\"]*)\"|([^\s;]+))", value, re.I)
            return (match.group(1) or match.group(2) or "").strip() if match else None
        try:
            parsed: Any = policy.default.header_factory(header, value)
            found = parsed.params.get(key)
            return str(found) if found is not None else None
        except Exception:
            match = re.search(rf"{key}\s*=\s*\"?([^\";]+)", value, re.I)
            return match.group(1).strip() if match else None


def _plain(value: str) -> bool:
    """ASCII without encoded words: the standard library's slow header parser is not needed."""
    return value.isascii() and "=?" not in value


#: An RFC 2047 encoded word whose text holds only what a word in a phrase may (RFC 2047
#: §5(3): letters, digits, `!*+-/=_`), so no address separator or quote hides inside it.
_SAFE_WORD = re.compile(r"=\?[^?\s]+\?[QqBb]\?[A-Za-z0-9!*+\-/=_]*\?=")


def _simple_words(value: str) -> bool:
    """ASCII address text whose only oddity is such encoded words (no comments, no quotes)."""
    return (
        value.isascii()
        and not any(c in value for c in '("\\')
        and "=?" not in _SAFE_WORD.sub("", value)
    )


def _email_of(address: Any) -> str:
    user = str(address.username or "")
    domain = str(address.domain or "")
    return f"{user}@{domain}" if domain else user


def _decode_words(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def _decode_text(data: bytes, charset: str | None, defects: list[str], where: str) -> str:
    """Text of a body part, never failing.

    `format=full` hands every text body over as UTF-8 whatever charset its headers declare
    (the headers are passed verbatim), so UTF-8 is tried first; the declared charset, then
    Windows-1252, only read bytes that are not valid UTF-8 (a body fetched apart keeps its
    original bytes). A 7-bit ISO-2022 body (escape sequences) is valid UTF-8 yet means nothing
    as such: it is read in its declared charset first.
    """
    declared = _CHARSET_SUPERSET.get(charset.strip().lower(), charset.strip()) if charset else None
    order: list[str] = ["utf-8", *([declared] if declared else []), "windows-1252"]
    if declared and declared.lower().startswith("iso-2022") and b"\x1b" in data:
        order.insert(0, declared)
    tried: set[str] = set()
    for candidate in order:
        if candidate.lower() in tried:
            continue
        tried.add(candidate.lower())
        try:
            return data.decode(candidate)
        except LookupError:
            defects.append(f"{where}: unknown charset {candidate!r}")
        except UnicodeDecodeError:
            if candidate == declared:
                defects.append(f"{where}: body is not valid {candidate}")
    defects.append(f"{where}: undecodable body, invalid bytes replaced")
    return data.decode("utf-8", errors="replace")


@dataclass
class _Walk:
    defects: list[str]
    attachments: list[dict[str, Any]] = field(default_factory=list)
    #: Characters of the bodies not read (over the input caps).
    omitted: int = 0


def _is_attachment(part: Mapping[str, Any], headers: _Headers) -> bool:
    """A part that is a file: `attachment` disposition, or a named part not inline text."""
    disposition = (headers.raw("content-disposition") or "").strip().lower()
    if disposition.startswith("attachment"):
        return True
    inline = not disposition or disposition.startswith("inline")
    inline_text = inline and str(part.get("mimeType")).startswith("text/")
    return bool(part.get("filename")) and not inline_text


def _body(part: Mapping[str, Any], walk: _Walk, depth: int = 0) -> str:
    """Readable text of a part and its children (attachments are only listed)."""
    mime = str(part.get("mimeType") or "text/plain").lower()
    headers = _Headers(part.get("headers"), walk.defects)
    children: list[Mapping[str, Any]] = list(part.get("parts") or [])
    where = f"part {part.get('partId') or '0'}"
    if depth > 20:
        walk.defects.append(f"{where}: MIME nesting deeper than 20, rest skipped")
        return ""
    if mime == "message/rfc822" and children:
        if part.get("filename") or (part.get("body") or {}).get("attachmentId"):
            _note_attachment(part, walk)
        return _forwarded(children[0], walk, depth)
    if _is_attachment(part, headers) and not mime.startswith("multipart/"):
        _note_attachment(part, walk)
        return ""
    if mime.startswith("multipart/"):
        if not children:
            walk.defects.append(f"{where}: {mime} without parts (missing boundary?)")
            return _leaf_text(part, headers, "text/plain", walk, where)
        if mime == "multipart/alternative":
            return _alternative(children, walk, depth)
        texts: list[str] = []
        for index, child in enumerate(children):
            if index and over_budget():
                walk.defects.append(
                    f"{where}: over the time budget, {len(children) - index} parts not read"
                )
                break
            texts.append(_body(child, walk, depth + 1))
        return "\n\n".join(text for text in texts if text.strip())
    if mime.startswith("text/") or mime == "message/rfc822":
        if part.get("filename"):  # inline text that is also a named file
            _note_attachment(part, walk)
        return _leaf_text(part, headers, mime, walk, where)
    if (part.get("body") or {}).get("size"):
        _note_attachment(part, walk)
    return ""


def _alternative(children: list[Mapping[str, Any]], walk: _Walk, depth: int) -> str:
    """text/plain preferred, else the HTML, else the last (richest) readable alternative."""

    def kind(child: Mapping[str, Any]) -> str:
        return str(child.get("mimeType") or "").lower()

    for wanted in ("text/plain", "text/html"):
        for child in children:
            if kind(child) == wanted:
                text = _body(child, walk, depth + 1)
                if text.strip():
                    return text
    for child in reversed(children):
        text = _body(child, walk, depth + 1)
        if text.strip():
            return text
    return ""


def _leaf_text(
    part: Mapping[str, Any], headers: _Headers, mime: str, walk: _Walk, where: str
) -> str:
    body = part.get("body") or {}
    if body.get("attachmentId") and not body.get("data"):
        walk.defects.append(f"{where}: text body stored as an attachment, not fetched")
        return ""
    data = decode_base64url(body.get("data"))
    text = _decode_text(data, headers.param("content-type", "charset"), walk.defects, where)
    html = mime == "text/html" or (mime != "text/plain" and "<html" in text[:2000].lower())
    text, left_out = cap(text, HTML_MAX_CHARS if html else TEXT_MAX_CHARS)
    if left_out:
        walk.omitted += left_out
        walk.defects.append(f"{where}: {left_out} characters over the cap not read")
    return html_to_text(text) if html else text


def _forwarded(inner: Mapping[str, Any], walk: _Walk, depth: int) -> str:
    headers = _Headers(inner.get("headers"), walk.defects)
    lines = ["---------- Forwarded message ----------"]
    for name in ("From", "Date", "Subject", "To"):
        value = headers.text(name)
        if value:
            lines.append(f"{name}: {value}")
    text = _body(inner, walk, depth + 1)
    return "\n".join(lines) + "\n\n" + text


def _note_attachment(part: Mapping[str, Any], walk: _Walk) -> None:
    body = part.get("body") or {}
    name = str(part.get("filename") or "")
    walk.attachments.append(
        {
            "filename": _decode_words(name) if "=?" in name else name,
            "mimeType": str(part.get("mimeType") or "application/octet-stream"),
            "size": int(body.get("size") or 0),
            "attachmentId": body.get("attachmentId"),
        }
    )


def _attribution(line: str) -> bool:
    """ "On … wrote:", "Le … a écrit :", "Am … schrieb …:" (linear: no backtracking)."""
    text = line.strip()
    if len(text) < 3 or text[2].isalnum() or text[2] == "_":
        return False
    head = text[:2]
    if head == "On":
        return text.endswith("wrote:") and len(text) > 8 and _boundary(text, len(text) - 6)
    if not text.endswith(":"):
        return False
    if head == "Le":
        rest = text[:-1].rstrip()
        return rest.endswith("a écrit") and len(rest) > 9 and _boundary(rest, len(rest) - 7)
    if head == "Am":
        return _SCHRIEB.search(text, 3, len(text) - 1) is not None
    return False


def _boundary(text: str, index: int) -> bool:
    before = text[index - 1]
    return not (before.isalnum() or before == "_")


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def trim_quoted(text: str) -> str:
    """Drop a trailing quoted reply chain and signature when new text stays above them.

    One pass from the end finds where the trailing run of quoted (or blank) lines starts, so
    the whole trim is linear in the text."""
    lines = text.replace("\r\n", "\n").split("\n")
    count = len(lines)
    # quoted_from[i]: every line from i on is quoted or blank; nonblank_from[i]: one is not blank.
    quoted_from = [True] * (count + 1)
    nonblank_from = [False] * (count + 1)
    for index in range(count - 1, -1, -1):
        line = lines[index]
        blank = not line.strip()
        quoted_from[index] = quoted_from[index + 1] and (blank or _quoted(line))
        nonblank_from[index] = nonblank_from[index + 1] or not blank
    cut = count
    # An "-----Original Message-----" (Outlook) or "On … wrote:" block followed only by quotes.
    for index, line in enumerate(lines):
        if _ORIGINAL.match(line) and "Forwarded" not in line:
            cut = index
            break
        attribution = (line.rstrip().endswith("wrote:") and index + 1 < count) or _attribution(line)
        if attribution and nonblank_from[index + 1] and quoted_from[index + 1]:
            cut = index
            break
    if cut == count:
        end = count
        while end > 0 and (not lines[end - 1].strip() or _quoted(lines[end - 1])):
            end -= 1
        if end < count and any(_quoted(line) for line in lines[end:]):
            cut = end
    kept = lines[:cut]
    if "-- " in kept:
        signature = len(kept) - 1 - kept[::-1].index("-- ")
        if any(line.strip() for line in kept[:signature]):
            kept = kept[:signature]
    if not any(line.strip() for line in kept):
        return text.strip()
    return _BLANK_RUNS.sub("\n\n", "\n".join(kept)).strip()


def _occurred_at(message: Mapping[str, Any], headers: _Headers) -> datetime:
    internal = message.get("internalDate")
    if internal not in (None, ""):
        try:
            return datetime.fromtimestamp(int(str(internal)) / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):  # OSError: out of the platform's range
            pass
    date = headers.raw("date")
    if date:
        try:
            parsed = parsedate_to_datetime(date)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (TypeError, ValueError):
            pass
    return datetime.fromtimestamp(0, tz=UTC)


@item_transform
def transform(message: Mapping[str, Any], user_id: str, *, body: bool = True) -> Transformed:
    """The memory record of one `format=full` message, and the defects met on the way.

    `body=False` reads only the headers and the snippet (cheap: the fallback of a message whose
    full transform failed or ran out of time)."""
    defects: list[str] = []
    payload: Mapping[str, Any] = message.get("payload") or {}
    headers = _Headers(payload.get("headers"), defects)
    walk = _Walk(defects)
    content = ""
    try:
        if body:
            content = _body(payload, walk)
            if over_budget():
                defects.append("quoted text not trimmed: over the time budget")
            else:
                content = trim_quoted(content)
    except Exception as exc:  # a structure we did not foresee: keep the message, say why
        defects.append(f"body: {type(exc).__name__}: {str(exc)[:200]}")
        content = str(message.get("snippet") or "")
    if not content.strip():
        content = str(message.get("snippet") or "")
    senders = headers.addresses("from")
    metadata: dict[str, Any] = {
        "from": senders[0] if senders else None,
        "to": headers.addresses("to"),
        "cc": headers.addresses("cc"),
        "threadId": message.get("threadId"),
        "messageId": headers.raw("message-id"),
        "labels": list(message.get("labelIds") or []),
        "attachments": walk.attachments,
    }
    record = MemoryRecord.build(
        source="gmail",
        user_id=user_id,
        source_id=str(message["id"]),
        type="email",
        title=headers.text("subject") or "",
        content=content,
        occurred_at=_occurred_at(message, headers),
        url=WEB_URL.format(id=message["id"]),
        metadata=metadata,
        content_omitted=walk.omitted,
    )
    return Transformed(record, defects)
