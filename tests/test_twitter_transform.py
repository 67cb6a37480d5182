"""X posts → memory records: text, kinds, links and media (no network)."""

from __future__ import annotations

from typing import Any

from ingestion.providers.twitter.transform import Includes, full_text, kind_of, to_record

ME = "100"


def _post(**fields: Any) -> dict[str, Any]:
    return {
        "id": "1850000000000000001",
        "text": "hello",
        "edit_history_tweet_ids": ["1850000000000000001"],
        "author_id": "200",
        "created_at": "2026-11-01T10:20:30.000Z",
        "conversation_id": "1850000000000000001",
        **fields,
    }


def test_full_text_prefers_the_long_post_and_expands_links() -> None:
    post = _post(
        text="short &amp; cut… https://t.co/cut",
        entities={"urls": [{"url": "https://t.co/cut", "expanded_url": "https://x.com/i/1"}]},
        note_tweet={
            "text": "the whole text &lt;3 https://t.co/one https://t.co/one2",
            "entities": {
                "urls": [
                    {"url": "https://t.co/one", "expanded_url": "https://a.example/1"},
                    {"url": "https://t.co/one2", "expanded_url": "https://b.example/2"},
                ]
            },
        },
    )
    assert full_text(post) == "the whole text <3 https://a.example/1 https://b.example/2"
    assert full_text(_post(text="a &gt; b &amp; c")) == "a > b & c"


def test_kind_is_decided_by_the_post_so_every_timeline_agrees() -> None:
    own = _post(author_id=ME)
    mention = _post(entities={"mentions": [{"start": 0, "end": 6, "username": "Alice", "id": ME}]})
    by_name = _post(entities={"mentions": [{"start": 0, "end": 6, "username": "alice"}]})
    other = _post()
    for timeline in ("tweets", "mentions", "likes"):
        assert kind_of(own, timeline, ME, "alice") == "tweet"
    assert kind_of(mention, "likes", ME, "alice") == "mention"
    assert kind_of(by_name, "likes", ME, "alice") == "mention"
    assert kind_of(other, "mentions", ME, "alice") == "mention"
    assert kind_of(other, "likes", ME, "alice") == "like"


def test_record_shape() -> None:
    includes = Includes.of(
        {
            "users": [
                {"id": "200", "name": "Bob", "username": "bob"},
                {"id": "300", "username": "carol"},
            ],
            "media": [
                {"media_key": "3_1", "type": "photo", "url": "https://p/1.jpg"},
                {
                    "media_key": "16_2",
                    "type": "animated_gif",
                    "preview_image_url": "https://p/2.jpg",
                },
            ],
            "tweets": [{"id": "9", "text": "quoted words", "author_id": "300"}],
        }
    )
    post = _post(
        attachments={"media_keys": ["3_1", "16_2"]},
        referenced_tweets=[{"type": "quoted", "id": "9"}],
        public_metrics={"like_count": 3, "retweet_count": 1, "reply_count": 0, "quote_count": 0},
        lang="en",
    )
    record = to_record(
        post, includes, user_id="u1", account_user_id=ME, account_username="alice", timeline="likes"
    )
    wire = record.to_wire()
    assert wire["id"] == "twitter:u1:1850000000000000001"
    assert wire["sourceId"] == "1850000000000000001"
    assert wire["type"] == "tweet"
    assert wire["title"] is None
    assert wire["url"] == "https://x.com/bob/status/1850000000000000001"
    assert wire["occurredAt"] == "2026-11-01T10:20:30Z"
    assert wire["content"] == "hello\n\nQuoting @carol: quoted words"
    assert wire["metadata"] == {
        "kind": "like",
        "authorId": "200",
        "authorUsername": "bob",
        "conversationId": "1850000000000000001",
        "referencedTweets": [{"type": "quoted", "id": "9"}],
        "publicMetrics": {"like_count": 3, "retweet_count": 1, "reply_count": 0, "quote_count": 0},
        "media": [
            {"mediaKey": "3_1", "type": "photo", "url": "https://p/1.jpg"},
            {"mediaKey": "16_2", "type": "animated_gif", "url": "https://p/2.jpg"},
        ],
        "lang": "en",
    }


def test_unknown_author_still_gets_a_link() -> None:
    record = to_record(
        _post(author_id="999"),
        Includes.of({}),
        user_id="u1",
        account_user_id=ME,
        account_username="alice",
        timeline="likes",
    )
    assert record.url == "https://x.com/i/web/status/1850000000000000001"
    assert record.metadata["authorUsername"] is None
