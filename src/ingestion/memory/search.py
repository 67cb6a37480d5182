"""Full-text search over the embedded memory store (`ingestion search`).

SQLite uses the FTS5 index of migration 0002 (porter stemming, ranked by bm25 with the title
weighted above the content); PostgreSQL uses the generated `tsvector` column and its GIN index
(English configuration, ranked by `ts_rank`). Both promise the same thing:

- a query is a list of words, every one of which (common English words aside) must occur,
  stemmed, in the title or content;
  punctuation and operators are ignored, so any text a person types is a valid query;
- hits come best match first (then most recent), at most `limit`, each with a plain-text
  snippet of the content around the match.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, column, func, literal_column, select, table, text

from ingestion.storage.db import Database
from ingestion.storage.models import MemoryRow

__all__ = ["SearchHit", "query_terms", "search_key", "search_memories"]

_WORD = re.compile(r"\w+", re.UNICODE)
_SNIPPET_WORDS = 24
_FTS = table("ingestion_memories_fts", column("rowid"))
#: English words too common to narrow a search; PostgreSQL's `english` configuration drops
#: these (and more) itself, SQLite's tokenizer does not.
_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "she",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "will",
        "with",
        "you",
        "your",
    ]
)


@dataclass(frozen=True)
class SearchHit:
    id: str
    title: str | None
    source: str
    type: str
    occurred_at: datetime
    url: str | None
    snippet: str

    def as_json(self) -> dict[str, Any]:
        """The `ingestion search --json` element: {id, title, source, type, occurredAt, url,
        snippet}."""
        return {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "type": self.type,
            "occurredAt": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "url": self.url,
            "snippet": self.snippet,
        }


def search_key(record_id: str) -> int:
    """The stable 63-bit integer that keys a record in the SQLite full-text index."""
    return int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big") >> 1


def query_terms(query: str) -> list[str]:
    """The words of a query (letters, digits and underscores; everything else separates)."""
    return [word.lower() for word in _WORD.findall(query)]


async def search_memories(
    db: Database,
    query: str,
    *,
    user_id: str | None = None,
    source: str | None = None,
    limit: int = 20,
) -> list[SearchHit]:
    """Memories matching every word of `query`, best first; empty when it has no words."""
    terms = query_terms(query)
    if not terms or limit < 1:
        return []
    if db.kind == "sqlite":
        statement = _sqlite_statement(terms, user_id, source, limit)
    else:
        statement = _postgres_statement(query, user_id, source, limit)
    async with db.session() as session:
        rows = (await session.execute(statement)).all()
    return [
        SearchHit(
            id=row.id,
            title=row.title,
            source=row.source,
            type=row.type,
            occurred_at=row.occurred_at,
            url=row.url,
            snippet=_tidy(row.snippet),
        )
        for row in rows
    ]


def _filtered(statement: Select[Any], user_id: str | None, source: str | None) -> Select[Any]:
    if user_id is not None:
        statement = statement.where(MemoryRow.user_id == user_id)
    if source is not None:
        statement = statement.where(MemoryRow.source == source)
    return statement


def _sqlite_statement(
    terms: list[str], user_id: str | None, source: str | None, limit: int
) -> Select[Any]:
    terms = [term for term in terms if term not in _STOP_WORDS] or terms
    # Every term quoted: FTS5 reads it as a plain string, never as an operator.
    match = " ".join('"' + term.replace('"', '""') + '"' for term in terms)
    score = func.bm25(literal_column("ingestion_memories_fts"), 4.0, 1.0)
    snippet = func.snippet(literal_column("ingestion_memories_fts"), 1, "", "", "…", _SNIPPET_WORDS)
    statement = (
        select(
            MemoryRow.id,
            MemoryRow.title,
            MemoryRow.source,
            MemoryRow.type,
            MemoryRow.occurred_at,
            MemoryRow.url,
            snippet.label("snippet"),
        )
        .select_from(_FTS)
        .join(MemoryRow, MemoryRow.search_key == _FTS.c.rowid)
        .where(text("ingestion_memories_fts MATCH :match").bindparams(match=match))
    )
    return (
        _filtered(statement, user_id, source)
        .order_by(score, MemoryRow.occurred_at.desc())
        .limit(limit)
    )


def _postgres_statement(
    query: str, user_id: str | None, source: str | None, limit: int
) -> Select[Any]:
    # plainto_tsquery parses the text as documents are parsed (so `v2.0` stays one token) and
    # ignores every operator character: any text is a valid query.
    tsquery = func.plainto_tsquery(literal_column("'english'::regconfig"), query)
    vector: ColumnElement[Any] = literal_column("ingestion_memories.search_vector")
    rank = func.ts_rank(vector, tsquery)
    matching = _filtered(
        select(MemoryRow.id.label("id"), rank.label("rank")).where(vector.op("@@")(tsquery)),
        user_id,
        source,
    )
    best = matching.order_by(rank.desc(), MemoryRow.occurred_at.desc()).limit(limit).subquery()
    # The headline is computed for the few best rows only (it re-parses the content).
    headline = func.ts_headline(
        literal_column("'english'::regconfig"),
        MemoryRow.content,
        tsquery,
        f"MaxFragments=1, MaxWords={_SNIPPET_WORDS}, MinWords={_SNIPPET_WORDS // 2}, "
        'StartSel="", StopSel="", FragmentDelimiter=" … "',
    )
    return (
        select(
            MemoryRow.id,
            MemoryRow.title,
            MemoryRow.source,
            MemoryRow.type,
            MemoryRow.occurred_at,
            MemoryRow.url,
            headline.label("snippet"),
        )
        .join(best, best.c.id == MemoryRow.id)
        .order_by(best.c.rank.desc(), MemoryRow.occurred_at.desc())
    )


def _tidy(snippet: str | None) -> str:
    """A snippet on one line."""
    return " ".join((snippet or "").split())
