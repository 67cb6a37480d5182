"""A faithful local emulator of the parts of X's API v2 the twitter provider reads.

Shaped on the official OpenAPI description (the types shipped in npm `twitter-api-sdk`, checked
by `tests/test_twitter_emulator.py`) and on X's documented paging rules:

- `GET /2/users/me`, `GET /2/users/{id}/tweets`, `/mentions` and `/liked_tweets`;
- `since_id` / `until_id` are exclusive bounds and win over `start_time` / `end_time`;
  `liked_tweets` has neither (likes come newest-liked first);
- `max_results` must be 5..100 (else 400 problem+json naming the parameter), default 10;
  unknown parameters and unknown `tweet.fields` / `expansions` / `media.fields` / `user.fields`
  / `exclude` values are refused the same way; `exclude=retweets,replies` filters posts;
- only the newest `reachable[timeline]` posts can be reached (3,200 for a user's posts, 800 for
  mentions), whatever the paging;
- answers are `{data, includes, meta}` with `meta.result_count`, `newest_id`, `oldest_id` (not on
  likes), `next_token` (absent on the last page) and `previous_token`; `data` and `includes`
  are absent when nothing matched;
- only the requested `tweet.fields` / `user.fields` / `media.fields` are returned besides the
  defaults (`id`, `text`, `edit_history_tweet_ids`; `id`, `name`, `username`; `media_key`,
  `type`), `text` is HTML-escaped as X does (`&amp;`, `&lt;`, `&gt;`);
- every answer carries `x-rate-limit-limit`, `-remaining`, `-reset` (epoch seconds) for the
  caller's 15-minute window of that endpoint; an exhausted window answers 429 problem+json;
- a token not in `tokens` answers 401 problem+json.

The state is scriptable (posts, likes, clock offset, per-endpoint limits, injected faults) and
keeps a request log, for tests and benchmarks.
"""

from __future__ import annotations

import base64
import html
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "ALLOWED_VALUES",
    "DEFAULT_LIMITS",
    "LoggedRequest",
    "TwitterState",
    "create_app",
    "days_ago",
]

PROBLEM = "application/problem+json"
WINDOW_SECONDS = 900

#: Per-user requests per 15-minute window, as X documents them for user-context tokens.
DEFAULT_LIMITS: dict[str, int] = {"me": 75, "tweets": 900, "mentions": 300, "likes": 75}
DEFAULT_REACHABLE: dict[str, int | None] = {"tweets": 3200, "mentions": 800, "likes": None}

#: Values each list parameter accepts (the description's `*Parameter` enums; `note_tweet` is
#: newer than it). Anything else is a 400 naming the parameter, as X answers.
ALLOWED_VALUES: dict[str, frozenset[str]] = {
    "tweet.fields": frozenset(
        [
            "attachments",
            "author_id",
            "context_annotations",
            "conversation_id",
            "created_at",
            "edit_controls",
            "edit_history_tweet_ids",
            "entities",
            "geo",
            "id",
            "in_reply_to_user_id",
            "lang",
            "non_public_metrics",
            "organic_metrics",
            "possibly_sensitive",
            "promoted_metrics",
            "public_metrics",
            "referenced_tweets",
            "reply_settings",
            "source",
            "text",
            "withheld",
            "note_tweet",
        ]
    ),
    "expansions": frozenset(
        [
            "attachments.media_keys",
            "attachments.poll_ids",
            "author_id",
            "edit_history_tweet_ids",
            "entities.mentions.username",
            "geo.place_id",
            "in_reply_to_user_id",
            "referenced_tweets.id",
            "referenced_tweets.id.author_id",
        ]
    ),
    "media.fields": frozenset(
        [
            "alt_text",
            "duration_ms",
            "height",
            "media_key",
            "non_public_metrics",
            "organic_metrics",
            "preview_image_url",
            "promoted_metrics",
            "public_metrics",
            "type",
            "url",
            "variants",
            "width",
        ]
    ),
    "user.fields": frozenset(
        [
            "created_at",
            "description",
            "entities",
            "id",
            "location",
            "name",
            "pinned_tweet_id",
            "profile_image_url",
            "protected",
            "public_metrics",
            "url",
            "username",
            "verified",
            "withheld",
        ]
    ),
    "exclude": frozenset({"replies", "retweets"}),
}
_DEFAULT_TWEET_FIELDS = ("id", "text", "edit_history_tweet_ids")
_DEFAULT_USER_FIELDS = ("id", "name", "username")
_DEFAULT_MEDIA_FIELDS = ("media_key", "type")


@dataclass
class LoggedRequest:
    method: str
    path: str
    params: dict[str, str]
    status: int
    endpoint: str


@dataclass
class _Window:
    started: float
    used: int = 0


@dataclass
class TwitterState:
    """Everything the emulated API knows. Mutate it from tests; it is thread-safe enough for
    one emulator thread and one test thread (a lock guards the request path)."""

    #: access token -> user id
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: tweet id -> full tweet object (every field; answers keep only the requested ones)
    tweets: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: user id -> liked tweet ids, most recently liked first
    likes: dict[str, list[str]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    reachable: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_REACHABLE))
    #: seconds added to the wall clock (tests move time to reset windows)
    clock_offset: float = 0.0
    #: statuses to answer to the next requests, in order (fault injection: 429, 500, 503...)
    faults: list[int] = field(default_factory=list)
    #: pagination tokens issued before this epoch are refused with 400 (token expiry)
    tokens_valid_after: float = 0.0
    log: list[LoggedRequest] = field(default_factory=list)
    #: The app's post-read usage cap for the period (None = no cap), posts read so far, and
    #: when the period ends (epoch seconds; None = not before the test says so).
    usage_cap: int | None = None
    usage_used: int = 0
    usage_period_end: float | None = None
    #: access token -> requests it may still serve before X stops accepting it
    expiring: dict[str, int] = field(default_factory=dict)
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    _next_id: int = 1_800_000_000_000_000_000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- scripting -------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_offset

    def add_user(self, user_id: str, username: str, *, name: str | None = None) -> None:
        self.users[user_id] = {
            "id": user_id,
            "name": name or username.title(),
            "username": username,
        }
        self.likes.setdefault(user_id, [])

    def add_tweet(
        self,
        author_id: str,
        text: str,
        *,
        created_at: datetime | None = None,
        mentions: Sequence[str] = (),
        urls: Sequence[tuple[str, str]] = (),
        media: Sequence[tuple[str, str]] = (),
        note_text: str | None = None,
        referenced: Sequence[tuple[str, str]] = (),
        metrics: dict[str, int] | None = None,
    ) -> str:
        """Post a tweet; ids grow with time like Snowflake ids. Returns its id.

        `mentions` are user ids, `urls` (t.co, expanded) pairs that must appear in the text,
        `media` (type, url) pairs, `referenced` (type, tweet id) pairs, `note_text` a long post.
        """
        self._next_id += 1_000_000
        tweet_id = str(self._next_id)
        created = created_at or datetime.now(UTC)
        entities: dict[str, Any] = {}
        if mentions:
            entities["mentions"] = []
            for uid in mentions:
                username = self.users[uid]["username"]
                start = text.find(f"@{username}")
                entities["mentions"].append(
                    {
                        "start": max(start, 0),
                        "end": max(start, 0) + len(username) + 1,
                        "username": username,
                        "id": uid,
                    }
                )
        url_entities = [_url_entity(text, short, long) for short, long in urls]
        media_keys: list[str] = []
        for index, (kind, url) in enumerate(media):
            key = f"{3 if kind == 'photo' else 7}_{tweet_id}{index}"
            item: dict[str, Any] = {"media_key": key, "type": kind, "width": 1200, "height": 800}
            if kind == "photo":
                item["url"] = url
            else:
                item["preview_image_url"] = url
                item["duration_ms"] = 12_000
            self.media[key] = item
            media_keys.append(key)
            short = f"https://t.co/m{tweet_id[-6:]}{index}"
            text = f"{text} {short}"
            entity = _url_entity(text, short, f"https://x.com/u/status/{tweet_id}/photo/1")
            entity["media_key"] = key
            url_entities.append(entity)
        if url_entities:
            entities["urls"] = url_entities
        tweet: dict[str, Any] = {
            "id": tweet_id,
            "text": html.escape(text, quote=False),
            "edit_history_tweet_ids": [tweet_id],
            "author_id": author_id,
            "conversation_id": tweet_id,
            "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "lang": "en",
            "public_metrics": metrics
            or {
                "retweet_count": 0,
                "reply_count": 0,
                "like_count": 0,
                "quote_count": 0,
                "bookmark_count": 0,
                "impression_count": 0,
            },
        }
        if entities:
            tweet["entities"] = entities
        if media_keys:
            tweet["attachments"] = {"media_keys": media_keys}
        if referenced:
            tweet["referenced_tweets"] = [{"type": t, "id": i} for t, i in referenced]
            for kind, target in referenced:
                if kind == "replied_to" and target in self.tweets:
                    tweet["conversation_id"] = self.tweets[target]["conversation_id"]
                    tweet["in_reply_to_user_id"] = self.tweets[target]["author_id"]
        if note_text is not None:
            tweet["note_tweet"] = {"text": html.escape(note_text, quote=False)}
        self.tweets[tweet_id] = tweet
        return tweet_id

    def like(self, user_id: str, tweet_id: str) -> None:
        self.likes.setdefault(user_id, []).insert(0, tweet_id)

    def expire_after(self, token: str, requests: int) -> None:
        """`token` serves `requests` more requests, then answers 401 (it expired or was
        revoked early)."""
        self.expiring[token] = requests

    def exhaust(self, user_id: str, endpoint: str) -> None:
        """Use up the user's current window of `endpoint` (another client spent it)."""
        window = self._window(user_id, endpoint)
        window.used = self.limits[endpoint]

    def requests_to(self, endpoint: str) -> list[LoggedRequest]:
        return [r for r in self.log if r.endpoint == endpoint and r.status == 200]

    # --- internals -------------------------------------------------------------------------
    def _window(self, user_id: str, endpoint: str) -> _Window:
        now = self.now()
        window = self._windows.get((user_id, endpoint))
        if window is None or now >= window.started + WINDOW_SECONDS:
            window = _Window(started=now)
            self._windows[(user_id, endpoint)] = window
        return window


def _url_entity(text: str, short: str, long: str) -> dict[str, Any]:
    start = text.find(short)
    return {
        "start": max(start, 0),
        "end": max(start, 0) + len(short),
        "url": short,
        "expanded_url": long,
        "display_url": long.split("://", 1)[-1][:24],
    }


def _problem(
    status: int, title: str, detail: str, type_: str = "about:blank", **extra: Any
) -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": type_, "status": status, **extra}


def _invalid(parameter: str, value: str, message: str) -> dict[str, Any]:
    return {
        "errors": [{"parameters": {parameter: [value]}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }


def _encode_token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.b32encode(raw).decode().rstrip("=").lower()


def _decode_token(token: str) -> dict[str, Any] | None:
    try:
        padded = token.upper() + "=" * (-len(token) % 8)
        value: dict[str, Any] = json.loads(base64.b32decode(padded))
    except (ValueError, json.JSONDecodeError):
        return None
    return value


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _fields(request: Request, name: str, defaults: tuple[str, ...]) -> set[str]:
    asked = {f for f in request.query_params.get(name, "").split(",") if f}
    return asked | set(defaults)


def _pick(obj: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k in wanted}


def create_app(state: TwitterState) -> Starlette:
    """The emulated API under `/2` (set `TWITTER_API_URL` to `{server}/2`)."""

    def guarded(endpoint: str, handler: Callable[[Request, str], Response]) -> Callable[..., Any]:
        async def route(request: Request) -> Response:
            with state._lock:
                response = _guarded(request, endpoint, handler)
                state.log.append(
                    LoggedRequest(
                        request.method,
                        request.url.path,
                        dict(request.query_params),
                        response.status_code,
                        endpoint,
                    )
                )
                return response

        return route

    def _guarded(
        request: Request, endpoint: str, handler: Callable[[Request, str], Response]
    ) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if token in state.expiring:
            if state.expiring[token] <= 0:
                state.tokens.pop(token, None)
            state.expiring[token] -= 1
        user_id = state.tokens.get(token)
        if user_id is None:
            return JSONResponse(
                _problem(401, "Unauthorized", "Unauthorized"), status_code=401, media_type=PROBLEM
            )
        window = state._window(user_id, endpoint)
        limit = state.limits[endpoint]
        reset = int(window.started + WINDOW_SECONDS)
        if state.usage_period_end is not None and state.now() >= state.usage_period_end:
            state.usage_used, state.usage_period_end = 0, None
        if state.usage_cap is not None and state.usage_used >= state.usage_cap:
            # The app's usage cap: 429 with X's `UsageCapExceededProblem` while the window
            # headers still show requests left (bodies quoted in public reports, e.g. tweepy
            # users' "429 Too Many Requests - Usage cap exceeded: Monthly product cap").
            return JSONResponse(
                {
                    "title": "UsageCapExceeded",
                    "detail": "Usage cap exceeded: Monthly product cap",
                    "type": "https://api.twitter.com/2/problems/usage-capped",
                    "period": "Monthly",
                    "scope": "Product",
                },
                status_code=429,
                media_type=PROBLEM,
                headers={
                    "x-rate-limit-limit": str(limit),
                    "x-rate-limit-remaining": str(limit - window.used),
                    "x-rate-limit-reset": str(reset),
                },
            )
        if state.faults:
            status = state.faults.pop(0)
            if status == 429:
                window.used = limit
            else:
                return JSONResponse(
                    _problem(status, HTTPStatus(status).phrase, HTTPStatus(status).phrase),
                    status_code=status,
                    media_type=PROBLEM,
                )
        if window.used >= limit:
            headers = {
                "x-rate-limit-limit": str(limit),
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": str(reset),
            }
            return JSONResponse(
                _problem(429, "Too Many Requests", "Too Many Requests"),
                status_code=429,
                media_type=PROBLEM,
                headers=headers,
            )
        window.used += 1
        response = handler(request, user_id)
        if state.usage_cap is not None and response.status_code == 200:
            data = json.loads(bytes(response.body)).get("data")
            state.usage_used += len(data) if isinstance(data, list) else 1
        response.headers["x-rate-limit-limit"] = str(limit)
        response.headers["x-rate-limit-remaining"] = str(limit - window.used)
        response.headers["x-rate-limit-reset"] = str(reset)
        return response

    def me(request: Request, user_id: str) -> Response:
        user = _pick(state.users[user_id], _fields(request, "user.fields", _DEFAULT_USER_FIELDS))
        return JSONResponse({"data": user})

    def timeline(kind: str) -> Callable[[Request, str], Response]:
        def handler(request: Request, _caller: str) -> Response:
            return _timeline(request, kind)

        return handler

    def _timeline(request: Request, kind: str) -> Response:
        user_id = request.path_params["id"]
        params = request.query_params
        if user_id not in state.users:
            return JSONResponse(
                {
                    "errors": [
                        {
                            "value": user_id,
                            "detail": f"Could not find user with id: [{user_id}].",
                            "title": "Not Found Error",
                            "resource_type": "user",
                            "parameter": "id",
                            "resource_id": user_id,
                            "type": "https://api.twitter.com/2/problems/resource-not-found",
                        }
                    ]
                }
            )
        allowed = {
            "max_results",
            "pagination_token",
            "tweet.fields",
            "expansions",
            "media.fields",
            "user.fields",
            "poll.fields",
            "place.fields",
        }
        if kind != "likes":
            allowed |= {"since_id", "until_id", "start_time", "end_time"}
        if kind == "tweets":
            allowed.add("exclude")
        for name in params:
            if name not in allowed:
                return JSONResponse(
                    _invalid(
                        name,
                        params[name],
                        f"The query parameter [{name}] is not one of [{','.join(sorted(allowed))}]",
                    ),
                    status_code=400,
                    media_type=PROBLEM,
                )
        for name, allowed_values in ALLOWED_VALUES.items():
            for value in filter(None, params.get(name, "").split(",")):
                if value not in allowed_values:
                    message = (
                        f"The `{name}` query parameter value [{value}] is not one of "
                        f"[{','.join(sorted(allowed_values))}]"
                    )
                    return JSONResponse(
                        _invalid(name, value, message), status_code=400, media_type=PROBLEM
                    )
        raw_max = params.get("max_results", "10")
        if not raw_max.isdigit() or not 5 <= int(raw_max) <= 100:
            return JSONResponse(
                _invalid(
                    "max_results",
                    raw_max,
                    f"The `max_results` query parameter value [{raw_max}] is not between 5 and 100",
                ),
                status_code=400,
                media_type=PROBLEM,
            )
        page_size = int(raw_max)
        ids = _timeline_ids(kind, user_id)
        excluded = set(filter(None, params.get("exclude", "").split(",")))
        if excluded:
            kinds = {"retweets": "retweeted", "replies": "replied_to"}
            dropped = {kinds[e] for e in excluded}
            ids = [
                i
                for i in ids
                if not any(
                    r["type"] in dropped for r in state.tweets[i].get("referenced_tweets", [])
                )
            ]
        if kind != "likes":
            since, until = params.get("since_id"), params.get("until_id")
            start = _parse_time(params["start_time"]) if "start_time" in params else None
            end = _parse_time(params["end_time"]) if "end_time" in params else None
            if since:
                ids = [i for i in ids if int(i) > int(since)]
            elif start:
                ids = [i for i in ids if _created(i) >= start]
            if until:
                ids = [i for i in ids if int(i) < int(until)]
            elif end:
                ids = [i for i in ids if _created(i) <= end]
        offset = 0
        if "pagination_token" in params:
            decoded = _decode_token(params["pagination_token"])
            if (
                decoded is None
                or decoded.get("k") != kind
                or float(decoded.get("t", 0)) < state.tokens_valid_after
            ):
                value = params["pagination_token"]
                return JSONResponse(
                    _invalid(
                        "pagination_token",
                        value,
                        f"The `pagination_token` query parameter value [{value}] is not valid",
                    ),
                    status_code=400,
                    media_type=PROBLEM,
                )
            after = str(decoded["after"])
            if kind == "likes":
                offset = ids.index(after) + 1 if after in ids else len(ids)
            else:
                ids = [i for i in ids if int(i) < int(after)]
        page = ids[offset : offset + page_size]
        more = len(ids) > offset + page_size
        meta: dict[str, Any] = {"result_count": len(page)}
        body: dict[str, Any] = {}
        if page:
            body["data"] = [_render(request, state.tweets[i]) for i in page]
            includes = _includes(request, page)
            if includes:
                body["includes"] = includes
            if kind != "likes":
                meta["newest_id"] = page[0]
                meta["oldest_id"] = page[-1]
            if more:
                meta["next_token"] = _encode_token({"k": kind, "after": page[-1], "t": state.now()})
        if "pagination_token" in params and page:
            meta["previous_token"] = _encode_token({"k": kind, "before": page[0], "t": state.now()})
        body["meta"] = meta
        return JSONResponse(body)

    def _timeline_ids(kind: str, user_id: str) -> list[str]:
        if kind == "likes":
            ids = [i for i in state.likes.get(user_id, []) if i in state.tweets]
        elif kind == "tweets":
            ids = sorted(
                (t["id"] for t in state.tweets.values() if t["author_id"] == user_id),
                key=int,
                reverse=True,
            )
        else:
            ids = sorted(
                (
                    t["id"]
                    for t in state.tweets.values()
                    if any(
                        m.get("id") == user_id for m in t.get("entities", {}).get("mentions", [])
                    )
                ),
                key=int,
                reverse=True,
            )
        cap = state.reachable.get(kind)
        return ids[:cap] if cap is not None else ids

    def _created(tweet_id: str) -> datetime:
        value = _parse_time(state.tweets[tweet_id]["created_at"])
        assert value is not None
        return value

    def _render(request: Request, tweet: dict[str, Any]) -> dict[str, Any]:
        return _pick(tweet, _fields(request, "tweet.fields", _DEFAULT_TWEET_FIELDS))

    def _includes(request: Request, page: list[str]) -> dict[str, Any]:
        expansions = set(filter(None, request.query_params.get("expansions", "").split(",")))
        user_fields = _fields(request, "user.fields", _DEFAULT_USER_FIELDS)
        media_fields = _fields(request, "media.fields", _DEFAULT_MEDIA_FIELDS)
        tweets = [state.tweets[i] for i in page]
        includes: dict[str, list[dict[str, Any]]] = {}
        referenced: list[dict[str, Any]] = []
        if "referenced_tweets.id" in expansions:
            seen: set[str] = set()
            for tweet in tweets:
                for ref in tweet.get("referenced_tweets", []):
                    if ref["id"] in state.tweets and ref["id"] not in seen:
                        seen.add(ref["id"])
                        referenced.append(state.tweets[ref["id"]])
            if referenced:
                includes["tweets"] = [_render(request, t) for t in referenced]
        author_ids: list[str] = []
        if "author_id" in expansions:
            author_ids += [t["author_id"] for t in tweets]
        if "referenced_tweets.id.author_id" in expansions:
            author_ids += [t["author_id"] for t in referenced]
        users = [
            _pick(state.users[u], user_fields)
            for u in dict.fromkeys(author_ids)
            if u in state.users
        ]
        if users:
            includes["users"] = users
        if "attachments.media_keys" in expansions:
            keys = [k for t in tweets for k in t.get("attachments", {}).get("media_keys", [])]
            media = [_pick(state.media[k], media_fields) for k in dict.fromkeys(keys)]
            if media:
                includes["media"] = media
        return includes

    routes = [
        Route("/2/users/me", guarded("me", me)),
        Route("/2/users/{id}/tweets", guarded("tweets", timeline("tweets"))),
        Route("/2/users/{id}/mentions", guarded("mentions", timeline("mentions"))),
        Route("/2/users/{id}/liked_tweets", guarded("likes", timeline("likes"))),
    ]
    return Starlette(routes=routes)


def days_ago(days: float) -> datetime:
    """A creation time `days` before now (test data helper)."""
    return datetime.now(UTC) - timedelta(days=days)
