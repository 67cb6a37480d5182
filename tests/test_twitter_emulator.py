"""The X emulator against X's official description and documented paging rules.

The description is the OpenAPI-generated `openapi-types.d.ts` shipped in npm `twitter-api-sdk`
(X's own SDK), reference material fetched by `uv run python -m tests.reference`. Keys the
emulator sends must be keys the description declares, except the few X added after that SDK
snapshot (listed in `NEWER_THAN_DESCRIPTION`, each checked to be still absent from it). The
PyPI `xdk` models were not used: they rename wire fields (`note_post`, `post.fields`), so they
do not describe what X sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests import reference
from tests.emulators.server import serve
from tests.emulators.twitter import ALLOWED_VALUES, TwitterState, create_app, days_ago

#: Added by X after the SDK's description was generated (documented in X's data dictionary).
NEWER_THAN_DESCRIPTION = {
    "Tweet": {"note_tweet"},
    "public_metrics": {"bookmark_count", "impression_count"},
}
FIELDS = {
    "tweet.fields": "created_at,author_id,conversation_id,public_metrics,entities,attachments,"
    "referenced_tweets,lang,note_tweet",
    "expansions": "attachments.media_keys,author_id,referenced_tweets.id,"
    "referenced_tweets.id.author_id",
    "media.fields": "type,url,preview_image_url",
    "user.fields": "username",
}
HEADERS = {"Authorization": "Bearer good"}


def _description() -> str:
    folder = reference.require("twitter-api-sdk")
    return (folder / "dist" / "gen" / "openapi-types.d.ts").read_text()


class Description:
    """Property names of the schemas in `openapi-types.d.ts` (components["schemas"])."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def _block(self, name: str, indent: int = 8) -> tuple[str, list[str]]:
        pad = " " * indent
        head = re.compile(rf"^{pad}{re.escape(name)}\??: (.*)$")
        for index, line in enumerate(self.lines):
            match = head.match(line)
            if match and (match.group(1).endswith("{") or match.group(1).endswith(";")):
                if not match.group(1).endswith("{"):
                    return match.group(1), []
                body = []
                for inner in self.lines[index + 1 :]:
                    if re.match(rf"^{pad}\}}", inner):
                        break
                    body.append(inner)
                return match.group(1), body
        raise KeyError(name)

    def keys(self, name: str, *path: str) -> dict[str, bool]:
        """`{key: required}` of a schema, or of a nested object along `path`."""
        head, body = self._block(name)
        indent = 12
        for part in path:
            sub = Description("\n".join(body))
            head, body = sub._block(part, indent)
            indent += 4
        result: dict[str, bool] = {}
        for base in re.findall(r'components\["schemas"\]\["(\w+)"\] &', head):
            result.update(self.keys(base))
        for line in body:
            match = re.match(rf'^ {{{indent}}}"?([\w.]+)"?(\??):', line)
            if match:
                result[match.group(1)] = match.group(2) != "?"
        return result


@pytest.fixture(scope="module")
def description() -> Description:
    return Description(_description())


@pytest.fixture
def state() -> TwitterState:
    s = TwitterState()
    s.add_user("1", "alice")
    s.add_user("2", "bob")
    s.tokens["good"] = "1"
    return s


@pytest.fixture
def client(state: TwitterState) -> Iterator[httpx.Client]:
    server = serve(create_app(state))
    try:
        with httpx.Client(base_url=server.url) as http:
            yield http
    finally:
        server.stop()


def _rich_timeline(state: TwitterState) -> None:
    original = state.add_tweet("2", "bob said & so on", created_at=days_ago(2))
    state.add_tweet("1", "hi @bob", mentions=["2"], media=[("photo", "https://p/1.jpg")])
    state.add_tweet(
        "1", "clip", media=[("video", "https://p/2.jpg"), ("animated_gif", "https://p/3.jpg")]
    )
    state.add_tweet("1", "see https://t.co/a", urls=[("https://t.co/a", "https://example.com")])
    state.add_tweet("1", "RT @bob: bob said", referenced=[("retweeted", original)])
    state.add_tweet("1", "long…", note_text="long " * 100)
    for i in range(5):
        state.add_tweet("1", f"@bob again {i}", mentions=["2"])


def _check(keys: set[str], described: dict[str, bool], newer: set[str], where: str) -> None:
    unknown = keys - set(described) - newer
    assert not unknown, f"{where}: keys not in the official description: {sorted(unknown)}"
    missing = {k for k, required in described.items() if required} - keys
    assert not missing, f"{where}: required keys missing: {sorted(missing)}"


def test_payload_keys_match_the_official_description(
    client: httpx.Client, state: TwitterState, description: Description
) -> None:
    for schema, newer in NEWER_THAN_DESCRIPTION.items():
        described = (
            description.keys("Tweet") if schema == "Tweet" else description.keys("Tweet", schema)
        )
        assert not newer & set(described), f"{schema}: the description now has {newer}"
    _rich_timeline(state)
    me = client.get("/2/users/me", headers=HEADERS, params={"user.fields": "username"}).json()
    _check(set(me), description.keys("Get2UsersMeResponse"), set(), "users/me")
    _check(set(me["data"]), description.keys("User"), set(), "users/me data")

    for path, schema in [
        ("/2/users/1/tweets", "Get2UsersIdTweetsResponse"),
        ("/2/users/2/mentions", "Get2UsersIdMentionsResponse"),
        ("/2/users/1/liked_tweets", "Get2UsersIdLikedTweetsResponse"),
    ]:
        if "liked" in path:
            for tweet_id in list(state.tweets):
                state.like("1", tweet_id)
        body = client.get(path, headers=HEADERS, params={**FIELDS, "max_results": "5"}).json()
        _check(set(body), description.keys(schema), set(), path)
        _check(set(body["meta"]), description.keys(schema, "meta"), set(), f"{path} meta")
        assert body["meta"]["next_token"]
        _check(set(body["includes"]), description.keys("Expansions"), set(), f"{path} includes")
        for tweet in body["data"] + body["includes"].get("tweets", []):
            _check(set(tweet), description.keys("Tweet"), NEWER_THAN_DESCRIPTION["Tweet"], path)
            metrics = set(tweet["public_metrics"])
            _check(
                metrics,
                description.keys("Tweet", "public_metrics"),
                NEWER_THAN_DESCRIPTION["public_metrics"],
                f"{path} public_metrics",
            )
            entity_base = description.keys("EntityIndicesInclusiveExclusive")
            for url in tweet.get("entities", {}).get("urls", []):
                _check(set(url), {**entity_base, **description.keys("UrlFields")}, set(), "url")
            for mention in tweet.get("entities", {}).get("mentions", []):
                _check(
                    set(mention),
                    {**entity_base, **description.keys("MentionFields")},
                    set(),
                    "mention",
                )
        for user in body["includes"].get("users", []):
            _check(set(user), description.keys("User"), set(), f"{path} users")
        kinds = {"photo": "Photo", "video": "Video", "animated_gif": "AnimatedGif"}
        for media in body["includes"].get("media", []):
            _check(set(media), description.keys(kinds[media["type"]]), set(), f"{path} media")


def test_error_bodies_are_problem_json(
    client: httpx.Client, state: TwitterState, description: Description
) -> None:
    problem = description.keys("Problem")
    bad = client.get("/2/users/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.headers["content-type"].startswith("application/problem+json")
    _check(set(bad.json()), problem, set(), "401")

    for value in ("4", "101", "ten"):
        invalid = client.get("/2/users/1/tweets", headers=HEADERS, params={"max_results": value})
        assert invalid.status_code == 400
        _check(set(invalid.json()), description.keys("InvalidRequestProblem"), set(), "400")
        assert invalid.json()["errors"][0]["parameters"] == {"max_results": [value]}
    since = client.get("/2/users/1/liked_tweets", headers=HEADERS, params={"since_id": "1"})
    assert since.status_code == 400  # liked_tweets has no since_id

    state.clock_offset += 900  # a fresh window: the invalid requests above counted too
    state.limits["tweets"] = 2
    first = client.get("/2/users/1/tweets", headers=HEADERS)
    assert first.headers["x-rate-limit-limit"] == "2"
    assert first.headers["x-rate-limit-remaining"] == "1"
    reset = int(first.headers["x-rate-limit-reset"])
    assert 0 < reset - state.now() <= 900
    assert client.get("/2/users/1/tweets", headers=HEADERS).headers["x-rate-limit-remaining"] == "0"
    limited = client.get("/2/users/1/tweets", headers=HEADERS)
    assert limited.status_code == 429
    assert limited.json() == {
        "title": "Too Many Requests",
        "detail": "Too Many Requests",
        "type": "about:blank",
        "status": 429,
    }
    assert limited.headers["x-rate-limit-reset"] == str(reset)
    assert client.get("/2/users/1/mentions", headers=HEADERS).status_code == 200  # own window
    state.clock_offset += 900
    assert client.get("/2/users/1/tweets", headers=HEADERS).status_code == 200


def test_paging_rules(client: httpx.Client, state: TwitterState) -> None:
    ids = [state.add_tweet("1", f"post {i}", created_at=days_ago(30 - i)) for i in range(12)]
    page = client.get("/2/users/1/tweets", headers=HEADERS, params={"max_results": "5"}).json()
    assert [t["id"] for t in page["data"]] == ids[::-1][:5]
    assert set(page["data"][0]) == {"id", "text", "edit_history_tweet_ids"}  # defaults only
    assert page["meta"]["newest_id"] == ids[-1]
    assert page["meta"]["oldest_id"] == ids[-5]
    assert page["meta"]["result_count"] == 5
    seen = [t["id"] for t in page["data"]]
    while "next_token" in page["meta"]:
        page = client.get(
            "/2/users/1/tweets",
            headers=HEADERS,
            params={"max_results": "5", "pagination_token": page["meta"]["next_token"]},
        ).json()
        seen += [t["id"] for t in page["data"]]
    assert seen == ids[::-1]
    assert "previous_token" in page["meta"]

    newer = client.get("/2/users/1/tweets", headers=HEADERS, params={"since_id": ids[9]}).json()
    assert [t["id"] for t in newer["data"]] == [ids[11], ids[10]]  # since_id is exclusive
    none = client.get("/2/users/1/tweets", headers=HEADERS, params={"since_id": ids[11]}).json()
    assert none == {"meta": {"result_count": 0}}  # no data, no includes, no ids
    window = client.get(
        "/2/users/1/tweets",
        headers=HEADERS,
        params={"until_id": ids[5], "start_time": days_ago(28.5).strftime("%Y-%m-%dT%H:%M:%SZ")},
    ).json()
    assert [t["id"] for t in window["data"]] == [ids[4], ids[3], ids[2]]

    state.tweets.clear()
    many = [state.add_tweet("1", f"p{i}") for i in range(3205)]
    oldest = client.get(
        "/2/users/1/tweets", headers=HEADERS, params={"until_id": many[15], "max_results": "100"}
    ).json()
    assert [t["id"] for t in oldest["data"]] == many[14:4:-1]  # only the newest 3,200 reachable
    assert "next_token" not in oldest["meta"]


def test_requests_are_logged(client: httpx.Client, state: TwitterState) -> None:
    client.get("/2/users/me", headers=HEADERS)
    client.get("/2/users/1/tweets", headers={"Authorization": "Bearer bad"})
    assert [(r.endpoint, r.status) for r in state.log] == [("me", 200), ("tweets", 401)]
    assert state.requests_to("me")[0].path == "/2/users/me"


def test_a_foreign_or_expired_pagination_token_is_refused(
    client: httpx.Client, state: TwitterState
) -> None:
    for i in range(8):
        state.add_tweet("1", f"p{i}")
    token = client.get("/2/users/1/tweets", headers=HEADERS, params={"max_results": "5"}).json()[
        "meta"
    ]["next_token"]
    foreign = client.get("/2/users/1/mentions", headers=HEADERS, params={"pagination_token": token})
    assert foreign.status_code == 400
    state.tokens_valid_after = state.now() + 1
    expired = client.get("/2/users/1/tweets", headers=HEADERS, params={"pagination_token": token})
    assert expired.status_code == 400
    assert "pagination_token" in expired.json()["errors"][0]["message"]


def test_accepted_field_values_are_the_described_ones(
    client: httpx.Client, state: TwitterState, description: Description
) -> None:
    enums = {
        "tweet.fields": "TweetFieldsParameter",
        "expansions": "TweetExpansionsParameter",
        "media.fields": "MediaFieldsParameter",
        "user.fields": "UserFieldsParameter",
    }
    for parameter, enum in enums.items():
        line = next(x for x in description.lines if x.strip().startswith(f"{enum}:"))
        described = set(re.findall(r'"([\w.]+)"', line))
        newer = NEWER_THAN_DESCRIPTION["Tweet"] if parameter == "tweet.fields" else set()
        assert set(ALLOWED_VALUES[parameter]) == described | newer, parameter
    refused = client.get(
        "/2/users/1/tweets", headers=HEADERS, params={"tweet.fields": "created_at,nope"}
    )
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["parameters"] == {"tweet.fields": ["nope"]}

    original = state.add_tweet("2", "bob")
    state.add_tweet("1", "RT @bob: bob", referenced=[("retweeted", original)])
    reply = state.add_tweet("1", "@bob yes", referenced=[("replied_to", original)])
    plain = state.add_tweet("1", "plain")
    only_retweets_out = client.get(
        "/2/users/1/tweets", headers=HEADERS, params={"exclude": "retweets"}
    ).json()
    assert [t["id"] for t in only_retweets_out["data"]] == [plain, reply]
    both_out = client.get(
        "/2/users/1/tweets", headers=HEADERS, params={"exclude": "retweets,replies"}
    ).json()
    assert [t["id"] for t in both_out["data"]] == [plain]
