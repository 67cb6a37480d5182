"""Bounds every transform keeps on hostile input: caps on what one item may make us process,
the per-item time budget, and HTML made safe for a converter.

Anyone can send a user an email, invite them to an event or mention them: every field is
attacker-controlled. The promises kept here, for every provider:

- **Bounded input.** One item's text is processed up to `TEXT_MAX_CHARS` characters per body
  (HTML up to `HTML_MAX_CHARS` before conversion, one header value up to `HEADER_MAX_CHARS`);
  what lies beyond is not read, and the record's content ends with its usual cut marker,
  counting the characters left out (`MemoryRecord.build(content_omitted=…)`).
- **Linear work.** Nothing here or in the transforms backtracks: every scan moves forward.
- **A time budget.** A transform runs under a deadline (`ingestion.providers.items` sets it);
  a costly step asks `over_budget()` first and, past the deadline, takes its cheap fallback
  (`strip_tags` instead of a converter, no quote trimming), so the item is still stored with
  what could be extracted.
"""

from __future__ import annotations

import functools
import html
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from ingestion.errors import MalformedItem

__all__ = [
    "HEADER_MAX_CHARS",
    "HTML_MAX_CHARS",
    "TEXT_MAX_CHARS",
    "cap",
    "defang_html",
    "feed_within_budget",
    "item_transform",
    "over_budget",
    "set_deadline",
    "strip_tags",
]

#: Characters of one body (a MIME text part, a description, an issue body…) a transform reads.
#: Ten times what a record keeps (`CONTENT_MAX_CHARS`), so trimming quotes still has room.
TEXT_MAX_CHARS = 1_000_000
#: Characters of HTML handed to the HTML-to-text converter (about 0.2 s of conversion here).
HTML_MAX_CHARS = 300_000
#: Characters of HTML fed to a converter between two looks at the time budget.
HTML_FEED_CHARS = 16_384
#: Characters of one header value handed to the e-mail header parser.
HEADER_MAX_CHARS = 20_000

#: The deadline (`time.monotonic()`) of the item being transformed in this thread, if any.
_DEADLINE: ContextVar[float | None] = ContextVar("ingestion_item_deadline", default=None)

# A tag whose name starts with a letter and that closes before the next "<": the scan from one
# "<" stops at the next "<" or ">", so a whole search is linear.
_TAG = re.compile(r"<[^<>]*>")
_OPEN_ELSEWHERE = re.compile(r"<(?=[^<>]*(?:<|\Z))")
_SPACES = re.compile(r"[ \t]+")
_BLANKS = re.compile(r"\n{3,}")


P = ParamSpec("P")
R = TypeVar("R")

#: What a transform's own code raises on an input of an unexpected shape or value.
_SHAPE_ERRORS = (
    ValueError,  # also UnicodeError
    TypeError,
    LookupError,  # KeyError, IndexError
    AttributeError,
    ArithmeticError,  # OverflowError
    RecursionError,
)


def item_transform(fn: Callable[P, R]) -> Callable[P, R]:
    """Marks a transform's entry point: an input it cannot handle raises `MalformedItem`
    (naming the original error), never a bare `KeyError` or `ValueError`."""

    @functools.wraps(fn)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except _SHAPE_ERRORS as exc:
            raise MalformedItem(f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    return checked


def set_deadline(deadline: float | None) -> object:
    """Set this thread's item deadline; returns the token to give `reset_deadline`."""
    return _DEADLINE.set(deadline)


def reset_deadline(token: object) -> None:
    _DEADLINE.reset(token)  # type: ignore[arg-type]


def over_budget() -> bool:
    """True once the current item has used its time budget: costly steps take their fallback."""
    deadline = _DEADLINE.get()
    return deadline is not None and time.monotonic() > deadline


def cap(text: str, limit: int = TEXT_MAX_CHARS) -> tuple[str, int]:
    """`text` cut to `limit` characters, and how many were left out."""
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def defang_html(markup: str) -> str:
    """HTML cut to `HTML_MAX_CHARS` and rewritten so a parser's work stays linear.

    Python's `html.parser` (below 3.12.11 and 3.13.4, CPython gh-135462) rescans the rest of
    the input for every `<` that never closes, and for unterminated comments and declarations:
    30 KB of `<a ` took 5.8 s. So comments, declarations and processing instructions are removed
    (an unterminated one takes the rest of the input with it) and every other `<` that is not
    closed by a `>` before the next `<` becomes text (`&lt;`).
    """
    markup, _ = cap(markup, HTML_MAX_CHARS)
    out: list[str] = []
    position = 0
    while True:
        start = markup.find("<!", position)
        pi = markup.find("<?", position)
        if pi != -1 and (start == -1 or pi < start):
            start = pi
        if start == -1:
            out.append(markup[position:])
            break
        out.append(markup[position:start])
        if markup.startswith("<!--", start):
            end = markup.find("-->", start + 4)
            position = -1 if end == -1 else end + 3
        else:
            end = markup.find(">", start + 2)
            position = -1 if end == -1 else end + 1
        if position == -1:
            break
    return _OPEN_ELSEWHERE.sub("&lt;", "".join(out))


def feed_within_budget(feed: Callable[[str], object], markup: str) -> str:
    """Feed `markup` to an incremental parser (`HTMLParser.feed`) in chunks while the item is
    within its time budget; returns what was not fed ("" when all of it was), for the caller to
    add through `strip_tags`. So even a converter's work stops near the deadline."""
    for start in range(0, len(markup), HTML_FEED_CHARS):
        if start and over_budget():
            return markup[start:]
        feed(markup[start : start + HTML_FEED_CHARS])
    return ""


def strip_tags(markup: str) -> str:
    """Cheap, linear text of HTML: tags dropped, entities decoded, blank runs collapsed (the
    fallback of a converter past the time budget, or when the converter fails)."""
    text = _TAG.sub(" ", defang_html(markup))
    text = html.unescape(text)
    text = "\n".join(line.strip() for line in _SPACES.sub(" ", text).split("\n"))
    return _BLANKS.sub("\n\n", text).strip()
