"""X posts → memory records (design §6): one record per post, `sourceId` = the post id.

- `content` is the full text: a long post's `note_tweet.text` when present, t.co links replaced
  by their expanded URLs, X's HTML escapes (`&amp;`, `&lt;`, `&gt;`) undone. A retweet's content
  is the original's full text (`RT @author: …`); a quote adds the quoted post below.
- `metadata.kind` is decided by the post alone, so every timeline that sees a post gives it the
  same record: `tweet` when the user wrote it, else `mention` when it mentions the user (or came
  from the mentions timeline), else `like`.
- Authors' usernames and media come from the page's `includes`; `url` is the post's web link.
- Hostile input stays cheap: the text is read up to `TEXT_MAX_CHARS` characters and at most
  `MAX_URL_ENTITIES` links are expanded (each expansion scans the text once); a creation time
  outside years 1 to 9999 in UTC is clamped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingestion.memory.record import MemoryRecord
from ingestion.providers.limits import TEXT_MAX_CHARS, cap, item_transform

__all__ = ["Includes", "full_text", "kind_of", "to_record"]

#: The record kind a timeline gives a post when the post itself says nothing stronger.
TIMELINE_KIND: dict[str, str] = {"tweets": "tweet", "mentions": "mention", "likes": "like"}
#: Links expanded per post (a 25,000-character post holds far fewer).
MAX_URL_ENTITIES = 100
#: Characters of one expanded link.
URL_MAX_CHARS = 2_000


@dataclass(frozen=True)
class Includes:
    """A page's expanded objects, by id."""

    users: Mapping[str, Mapping[str, Any]]
    media: Mapping[str, Mapping[str, Any]]
    tweets: Mapping[str, Mapping[str, Any]]

    @classmethod
    def of(cls, includes: Any) -> Includes:
        """The page's `includes`; entries of the wrong shape are ignored (never fails)."""

        def by(key: str, field: str) -> dict[str, Mapping[str, Any]]:
            found = includes.get(key) if isinstance(includes, Mapping) else None
            if not isinstance(found, list):
                return {}
            return {
                str(e[field]): e
                for e in found
                if isinstance(e, Mapping) and e.get(field) is not None
            }

        return cls(
            users=by("users", "id"), media=by("media", "media_key"), tweets=by("tweets", "id")
        )

    def username(self, user_id: str | None) -> str | None:
        user = self.users.get(user_id or "")
        return str(user["username"]) if user and user.get("username") else None


def full_text(tweet: Mapping[str, Any]) -> str:
    """The post's whole text with links expanded and HTML escapes undone."""
    note = tweet.get("note_tweet")
    if isinstance(note, Mapping) and note.get("text"):
        text = str(note["text"])
        urls = list((note.get("entities") or {}).get("urls") or [])
        urls += list((tweet.get("entities") or {}).get("urls") or [])
    else:
        text = str(tweet.get("text") or "")
        urls = list((tweet.get("entities") or {}).get("urls") or [])
    text, _ = cap(text, TEXT_MAX_CHARS)
    urls = [e for e in urls[:MAX_URL_ENTITIES] if isinstance(e, Mapping)]
    for entity in sorted(urls, key=lambda e: len(str(e.get("url", ""))), reverse=True):
        short = entity.get("url")
        expanded = entity.get("unwound_url") or entity.get("expanded_url")
        if not short or not expanded:
            continue
        short, expanded = str(short), str(expanded)[:URL_MAX_CHARS]
        growth = len(expanded) - len(short)
        # Never let expansions grow the text past twice the cap (a one-letter "url" expanded
        # everywhere would otherwise multiply it).
        limit = -1 if growth <= 0 else max(0, 2 * TEXT_MAX_CHARS - len(text)) // growth
        text = text.replace(short, expanded, limit)
    return html.unescape(text)


def _mentions_user(tweet: Mapping[str, Any], user_id: str, username: str | None) -> bool:
    note = tweet.get("note_tweet") or {}
    mentions = list((tweet.get("entities") or {}).get("mentions") or [])
    mentions += list((note.get("entities") or {}).get("mentions") or [])
    for mention in mentions:
        if mention.get("id") == user_id:
            return True
        if username and str(mention.get("username", "")).lower() == username.lower():
            return True
    return False


def kind_of(tweet: Mapping[str, Any], timeline: str, user_id: str, username: str | None) -> str:
    """`tweet` > `mention` > `like`, decided by the post so it is the same from any timeline."""
    if tweet.get("author_id") == user_id:
        return "tweet"
    if timeline == "mentions" or _mentions_user(tweet, user_id, username):
        return "mention"
    return TIMELINE_KIND[timeline]


def _content(tweet: Mapping[str, Any], includes: Includes) -> str:
    refs = {r.get("type"): r.get("id") for r in tweet.get("referenced_tweets") or []}
    retweeted = includes.tweets.get(str(refs.get("retweeted")))
    if retweeted is not None:
        author = includes.username(retweeted.get("author_id")) or "unknown"
        return f"RT @{author}: {full_text(retweeted)}"
    text = full_text(tweet)
    quoted = includes.tweets.get(str(refs.get("quoted")))
    if quoted is not None:
        author = includes.username(quoted.get("author_id")) or "unknown"
        text = f"{text}\n\nQuoting @{author}: {full_text(quoted)}"
    return text


def _media(tweet: Mapping[str, Any], includes: Includes) -> list[dict[str, Any]]:
    result = []
    for key in (tweet.get("attachments") or {}).get("media_keys") or []:
        item = includes.media.get(key, {})
        result.append(
            {
                "mediaKey": key,
                "type": item.get("type"),
                "url": item.get("url") or item.get("preview_image_url"),
            }
        )
    return result


@item_transform
def to_record(
    tweet: Mapping[str, Any],
    includes: Includes,
    *,
    user_id: str,
    account_user_id: str,
    account_username: str | None,
    timeline: str,
) -> MemoryRecord:
    """The memory record of one post seen on `timeline` of the account `account_user_id`."""
    tweet_id = str(tweet["id"])
    author_id = tweet.get("author_id")
    username = includes.username(author_id)
    if username is None and author_id == account_user_id:
        username = account_username
    url = (
        f"https://x.com/{username}/status/{tweet_id}"
        if username
        else f"https://x.com/i/web/status/{tweet_id}"
    )
    created = str(tweet.get("created_at") or "")
    occurred_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
    metadata = {
        "kind": kind_of(tweet, timeline, account_user_id, account_username),
        "authorId": author_id,
        "authorUsername": username,
        "conversationId": tweet.get("conversation_id"),
        "referencedTweets": [
            {"type": r.get("type"), "id": r.get("id")} for r in tweet.get("referenced_tweets") or []
        ],
        "publicMetrics": dict(tweet.get("public_metrics") or {}),
        "media": _media(tweet, includes),
        "lang": tweet.get("lang"),
    }
    return MemoryRecord.build(
        source="twitter",
        user_id=user_id,
        source_id=tweet_id,
        type="tweet",
        title=None,
        content=_content(tweet, includes),
        occurred_at=occurred_at,
        url=url,
        metadata=metadata,
    )
