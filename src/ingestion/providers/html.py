"""HTML to readable text: the one place where a provider's HTML becomes plain text.

Callers (Gmail bodies, Calendar descriptions) only know `html_to_text`; the library behind it
is an implementation detail. Chosen by measurement on the real corpora
(bench/bench_html.py, bench/results/html.md): `selectolax` (MIT) with its Lexbor engine, an
HTML5 parser as browsers have, at tens of MB/s; a thin layer on top gives the layout a reader
expects. Guarantees:

- the words a reader sees are kept; `script`, `style`, `head`, `template`, `noscript` and `svg`
  contents and every tag are dropped, entities are decoded, images are left out (so no
  `data:` base64 reaches the text);
- block elements (paragraphs, divisions, headings, lists, tables) stand apart by a blank line,
  list items, table rows and `<br>` end a line, table cells are separated by a space, runs of
  blank lines collapse to one;
- a link whose address differs from its text reads `text (https://…)`; only `http`, `https`
  and `mailto` addresses are shown (never `javascript:`);
- hostile input stays cheap: the HTML5 tree builder costs time proportional to depth times tags,
  so a document nested deeper than `MAX_DEPTH` (by a linear pre-scan) is reduced to its text
  by a linear tag stripper instead of being parsed; nothing raises on any input.
"""

from __future__ import annotations

import html as html_lib
import re

from selectolax.lexbor import LexborHTMLParser

from ingestion.providers.limits import over_budget

__all__ = ["MAX_DEPTH", "html_to_text"]

#: Nesting (by the pre-scan) above which the document is not parsed as a tree.
MAX_DEPTH = 1000

_DROPPED = ["script", "style", "head", "template", "noscript", "svg", "title"]
_BLOCKS = (
    "address,article,aside,blockquote,caption,center,dd,details,dialog,div,dl,dt,fieldset,"
    "figcaption,figure,footer,form,h1,h2,h3,h4,h5,h6,header,hr,main,nav,ol,p,pre,section,"
    "summary,table,tbody,tfoot,thead,ul"
)
#: Elements that end a line without a blank one around them.
_LINES = "br,li,tr,dt,dd"
_CELLS = "td,th"
_LINK_SCHEMES = ("http://", "https://", "mailto:")
#: Elements that never nest (void) or close themselves implicitly: not counted as depth.
_FLAT = frozenset(
    {
        *("area", "base", "br", "col", "colgroup", "embed", "hr", "img", "input", "link"),
        *("meta", "param", "source", "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th"),
        *("tbody", "thead", "tfoot", "option", "optgroup", "rb", "rt", "rp", "caption"),
    }
)
# `[^<>]` keeps every scan from running past the next tag: linear on any input.
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*)[^<>]*?(/?)>")
_SKIPPED_OPEN = re.compile(r"<(script|style|head|template|noscript|svg|title)\b[^<>]*>", re.I)
_BREAK = re.compile(
    r"</?(?:br|p|div|li|tr|h[1-6]|table|ul|ol|blockquote|pre|hr|section|article)\b[^<>]*>",
    re.I,
)
_ANY_TAG = re.compile(r"<[^<>]*>")
_BLANK_RUNS = re.compile(r"\n{3,}")


def html_to_text(markup: str) -> str:
    """Readable plain text of an HTML document or fragment (see the module docstring)."""
    if not markup or not markup.strip():
        return ""
    if "<" not in markup:  # no element at all: only entities to decode
        return _tidy(html_lib.unescape(markup))
    try:
        # Past the item's time budget (`ingestion.providers.items`), or nested too deep for a
        # tree, only the tags are stripped: linear either way.
        if over_budget() or _depth(markup) > MAX_DEPTH:
            return _stripped(markup)
        return _rendered(markup)
    except Exception:  # the parser refused the input: keep the words anyway
        return _stripped(markup)


def _depth(markup: str) -> int:
    """The deepest nesting of elements that stay open, by one linear scan of the tags."""
    depth = deepest = 0
    for match in _TAG.finditer(markup):
        closing, name, self_closing = match.groups()
        if self_closing or name.lower() in _FLAT:
            continue
        if closing:
            depth = max(0, depth - 1)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def _rendered(markup: str) -> str:
    tree = LexborHTMLParser(markup)
    tree.strip_tags(_DROPPED)
    root = tree.body or tree.root
    if root is None:
        return ""
    for link in root.css("a[href]"):
        href = (link.attributes.get("href") or "").strip()
        if not href.lower().startswith(_LINK_SCHEMES):
            continue
        text = " ".join(link.text(deep=True).split())
        address = href[7:] if href.lower().startswith("mailto:") else href
        if not text:
            link.insert_after(f" {href} ")
        elif address not in text:
            link.insert_after(f" ({address}) ")
    for cell in root.css(_CELLS):
        cell.insert_after(" ")
    for block in root.css(_BLOCKS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    for line in root.css(_LINES):
        line.insert_after("\n")
    return _tidy(root.text(deep=True, separator=""))


def _stripped(markup: str) -> str:
    """Linear fallback: drop invisible elements and tags, decode entities."""
    text = _BREAK.sub("\n", _without_invisible(markup))
    text = _ANY_TAG.sub("", text)
    return _tidy(html_lib.unescape(text))


def _without_invisible(markup: str) -> str:
    """The markup without the contents of script, style and the like (one pass)."""
    lowered = markup.lower()
    kept: list[str] = []
    position = 0
    while (found := _SKIPPED_OPEN.search(markup, position)) is not None:
        kept.append(markup[position : found.start()])
        end = lowered.find(f"</{found.group(1).lower()}", found.end())
        if end < 0:  # never closed: the rest is its content, as a browser reads it
            return "".join(kept)
        position = lowered.find(">", end)
        position = len(markup) if position < 0 else position + 1
        kept.append(" ")
    kept.append(markup[position:])
    return "".join(kept)


def _tidy(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.replace("\r", "\n").split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
