"""The shared HTTP client against hostile answers: bounded bodies (gzip bombs, unasked codings,
endless streams), bounded JSON depth (whole answers and Gmail batch parts), no cookies across
users, the token kept to the API's origin, and hostile wait headers clamped."""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ingestion.config import Settings
from ingestion.errors import PermanentError, RateLimited
from ingestion.memory.http_sink import HttpMemorySink
from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import FetchOptions
from ingestion.providers.gmail.client import GmailApi, Unreadable
from ingestion.providers.http import ApiClient
from ingestion.providers.twitter.client import classify as twitter_classify
from ingestion.retry_after import MAX_WAIT_SECONDS, parse_reset_epoch, parse_retry_after
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.transport import loads_json
from tests.emulators.github import GitHubState, create_app, seed_activity
from tests.emulators.hostile import Recorder, hostile_app, rewrite_links
from tests.emulators.server import RunningServer, serve

CAP = 1024 * 1024


class StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    async def access_token(self) -> str:
        return self.token

    async def refresh_after_unauthorized(self, rejected_token: str) -> str:
        return self.token


@pytest.fixture(scope="module")
def hostile() -> Iterator[RunningServer]:
    server = serve(hostile_app(bomb_megabytes=100))
    yield server
    server.stop()


@pytest.fixture
async def services(tmp_path: Path, hostile: RunningServer) -> AsyncIterator[Services]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'ingestion.db'}",
        http_max_response_bytes=CAP,
        memory_engine_url=hostile.url,
    )
    opened = await Services.open(settings)
    yield opened
    await opened.aclose()


def api(services: Services, server: RunningServer, token: str = "token-a") -> ApiClient:  # noqa: S107
    return ApiClient(
        provider="github",
        http=services.http,
        tokens=StaticToken(token),
        base_url=server.url,
        attempts=1,
    )


async def test_a_100_mb_gzip_bomb_fails_clearly_quickly_and_in_bounded_memory(
    services: Services, hostile: RunningServer
) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PermanentError, match="larger than HTTP_MAX_RESPONSE_BYTES"):
            await api(services, hostile).request("GET", "/bomb/gzip", endpoint="bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, elapsed
    assert peak < 16 * CAP, peak  # the cap plus buffers, never the 100 MB


async def test_an_endless_plain_body_stops_at_the_cap(
    services: Services, hostile: RunningServer
) -> None:
    with pytest.raises(PermanentError, match=r"127\.0\.0\.1/big is larger than"):
        await api(services, hostile).request("GET", "/big?mb=20", endpoint="big")


async def test_a_coding_that_was_not_asked_for_is_refused(
    services: Services, hostile: RunningServer
) -> None:
    with pytest.raises(PermanentError, match="Content-Encoding 'br'"):
        await api(services, hostile).request("GET", "/bomb/br", endpoint="br")


async def test_json_nested_1000_deep_is_a_clear_error_not_a_recursion_error(
    services: Services, hostile: RunningServer
) -> None:
    with pytest.raises(PermanentError, match="nested deeper than 512 levels"):
        await api(services, hostile).request("GET", "/deep?depth=1000", endpoint="deep")
    # Just within the bound it parses.
    response = await api(services, hostile).request("GET", "/deep?depth=500", endpoint="deep")
    assert response.json() is not None


async def test_a_deep_part_of_a_gmail_batch_is_one_unreadable_message(
    services: Services, hostile: RunningServer
) -> None:
    """The batch's other message is read; the deep one is `Unreadable` (skipped and counted by
    the provider), never a RecursionError for the whole batch."""
    gmail = GmailApi(
        http=services.http,
        tokens=StaticToken("t"),
        base_url=hostile.url,
        quota_units_per_minute=60_000,
        concurrency=1,
        batch_size=10,
    )
    good, deep = await gmail.get_messages(["m0", "m1"])
    assert isinstance(good, dict)
    assert good["id"] == "m0"
    assert isinstance(deep, Unreadable)
    assert deep.reason == "gmail message m1: JSON nested deeper than 512 levels"


async def test_the_memory_engine_answer_is_bounded_too(
    services: Services, hostile: RunningServer
) -> None:
    sink = HttpMemorySink(services.settings, services.db, services.http, attempts=1)
    sink.base_url = f"{hostile.url}/bomb/gzip?"
    record = MemoryRecord.build(
        source="github",
        user_id="u",
        source_id="o/r#1",
        type="issue",
        title="t",
        content="c",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(PermanentError, match="larger than HTTP_MAX_RESPONSE_BYTES"):
        await sink.upsert("u", [record])


async def test_a_cookie_set_for_one_user_is_never_sent_with_another(
    services: Services, hostile: RunningServer
) -> None:
    first = await api(services, hostile, "token-a").request("GET", "/set-cookie", endpoint="a")
    assert first.status_code == 200
    echoed = (await api(services, hostile, "token-b").request("GET", "/echo", endpoint="b")).json()
    assert echoed["authorization"] == "Bearer token-b"
    assert echoed["cookie"] is None
    assert not services.http.cookies


async def test_an_off_origin_url_is_refused_before_the_token_is_sent(
    services: Services, hostile: RunningServer
) -> None:
    elsewhere = Recorder()
    other = serve(elsewhere)
    try:
        client = api(services, hostile)
        for url in (f"{other.url}/steal", f"{other.url.replace('http', 'https')}/x"):
            with pytest.raises(PermanentError, match="refusing to follow a URL on"):
                await client.request("GET", url, endpoint="next")
        # Same origin, absolute: fine.
        same = await client.request("GET", f"{hostile.url}/echo", endpoint="same")
        assert same.status_code == 200
    finally:
        other.stop()
    assert elsewhere.requests == []


async def test_github_link_to_another_origin_is_never_followed_with_the_token(
    tmp_path: Path,
) -> None:
    """A GitHub answer whose `Link: rel="next"` points at another host: the sync fails with a
    clear error and the other host never sees a request (nor the token)."""
    elsewhere = Recorder()
    other = serve(elsewhere)
    state = GitHubState()
    state.add_user("mona", token="gho_mona")
    seed_activity(state, "mona", repos=1, commits_per_repo=25, issues_per_repo=3)
    github = serve(rewrite_links(create_app(state), other.url))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'ingestion.db'}",
        github_api_url=github.url,
        github_page_size=10,
        github_rate_limit_reserve=0,
    )
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            await save_account(session, user_id="u1", provider_id="github", access_token="gho_mona")
        with pytest.raises(
            PermanentError, match=r"refusing to follow a URL on http://127\.0\.0\.1"
        ):
            await services.engine.run("github", "u1", FetchOptions())
    finally:
        await services.aclose()
        github.stop()
        other.stop()
    assert elsewhere.requests == []


@pytest.mark.parametrize("after", ["inf", "1e308", "-5", "nan"])
async def test_the_memory_engine_cannot_ask_for_an_unbounded_wait(
    services: Services, hostile: RunningServer, after: str
) -> None:
    sink = HttpMemorySink(services.settings, services.db, services.http, attempts=1)
    sink.base_url = f"{hostile.url}/later?after={after}&"
    record = MemoryRecord.build(
        source="github",
        user_id="u",
        source_id="o/r#1",
        type="issue",
        title="t",
        content="c",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(RateLimited) as caught:
        await sink.upsert("u", [record])
    wait = caught.value.retry_after
    assert wait is None or 0 <= wait <= MAX_WAIT_SECONDS


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "-5", "1e308", "-1e308", "x" * 500])
def test_retry_after_rejects_or_clamps_hostile_values(value: str) -> None:
    parsed = parse_retry_after(value)
    assert parsed is None or 0 <= parsed <= MAX_WAIT_SECONDS
    if value == "1e308":
        assert parsed == MAX_WAIT_SECONDS


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e308", "99999999999999", "-inf"])
def test_reset_epochs_are_rejected_or_clamped(value: str) -> None:
    now = time.time()
    parsed = parse_reset_epoch(value, now=now)
    assert parsed is None or 0 <= parsed <= MAX_WAIT_SECONDS
    # A 429 from X with such a reset is still a rate limit with a finite, bounded wait.
    response = httpx.Response(
        429, headers={"x-rate-limit-reset": value}, request=httpx.Request("GET", "http://x/")
    )
    throttle = twitter_classify(response)
    assert throttle is not None
    assert throttle.retry_after is not None
    assert math.isfinite(throttle.retry_after)
    assert 0 <= throttle.retry_after <= MAX_WAIT_SECONDS


@pytest.mark.parametrize("wait", [math.inf, 1e308, math.nan, -5.0])
def test_an_error_never_carries_an_unbounded_wait(wait: float) -> None:
    after = RateLimited("later", retry_after=wait).retry_after
    assert after is None or 0 <= after <= MAX_WAIT_SECONDS


async def test_a_gmail_message_over_the_cap_is_skipped_and_the_rest_synced(
    tmp_path: Path,
) -> None:
    """Against the Gmail emulator with a 64 KiB cap: batches over the cap are fetched again one
    message at a time; the one message over it is skipped and counted, the sync succeeds."""
    from tests.emulators import gmail as gmail_emulator
    from tests.emulators.gmail import GmailState
    from tests.emulators.gmail_corpus import generated_message

    gmail = GmailState()
    gmail.add_user("u1", "ya29.t")
    ids = [
        gmail.add_message("u1", raw, internal_date=when)
        for raw, when in (generated_message(i, base=datetime.now(UTC)) for i in range(6))
    ]
    huge = (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: huge\r\n"
        b"Content-Type: text/plain\r\n\r\n" + b"all work and no play\r\n" * 8000
    )
    huge_id = gmail.add_message("u1", huge, internal_date=datetime.now(UTC))
    server = serve(gmail_emulator.create_app(gmail))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'ingestion.db'}",
        gmail_api_url=server.url,
        http_max_response_bytes=65_536,
    )
    services = await Services.open(settings)
    try:
        async with services.db.session() as session:
            await save_account(session, user_id="u1", provider_id="google", access_token="ya29.t")
        summary = await services.engine.run("gmail", "u1", FetchOptions())
    finally:
        await services.aclose()
        server.stop()
    assert summary.status == "ok"
    assert summary.upserted == len(ids)
    assert summary.stats["skipped"] == 1
    assert huge_id not in ids


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # JSON's full range: no parser that rounds big integers or refuses lone surrogates.
        (b'{"n": 123456789012345678901234567890}', {"n": 123456789012345678901234567890}),
        (b'{"s": "a\\ud800b"}', {"s": "a\ud800b"}),
        (b'{"x": [1, 2, {"y": "\\u00e9"}]}', {"x": [1, 2, {"y": "é"}]}),
    ],
)
def test_answers_parse_as_json_says_whatever_the_parser(text: bytes, expected: object) -> None:
    assert loads_json(text, what="test") == expected


def test_nan_in_an_answer_parses_as_the_standard_library_reads_it() -> None:
    assert math.isnan(loads_json(b'{"v": NaN}', what="test")["v"])


def test_broken_json_is_still_an_error() -> None:
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        loads_json(b'{"v": ', what="test")
