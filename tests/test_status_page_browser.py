"""The status page in real headless Chromium, served by a real `ingestion api` process.

PostgreSQL and Redis are real; the API runs with INGESTION_API_KEY, so the page shows a sign-in
form (and no data) until the key is typed; then it loads with the key and its buttons work.
Screenshots go to `test-artifacts/` (desktop and phone widths).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ingestion.config import Settings
from ingestion.queue import Keys
from ingestion.services import Services
from ingestion.storage.accounts import save_account
from ingestion.storage.state import SyncStateStore
from tests.conftest import INGESTION, announced_port_in_file

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
API_KEY = "browser-test-key-of-at-least-32-characters"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
    "--mute-audio",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing: run .ci/setup-browser.sh (Debian chromium)",
    ),
]


async def _seed(settings: Settings) -> None:
    """alice and bob, each with Google, GitHub and X accounts, in a few states."""
    services = await Services.open(settings, migrate=True)
    try:
        async with services.db.session() as session:
            for user in ("alice", "bob"):
                for provider_id in ("google", "github", "twitter"):
                    await save_account(
                        session, user_id=user, provider_id=provider_id, access_token=f"t-{user}"
                    )
        store = SyncStateStore(services.db)
        for user, provider, fetched, status, error in (
            ("alice", "gmail", 1240, "ok", None),
            ("alice", "calendar", 85, "ok", None),
            ("alice", "github", 312, "ok", None),
            ("alice", "twitter", 40, "error", "twitter GET /2/users/:id/tweets: HTTP 503"),
            ("bob", "gmail", 98, "ok", None),
            ("bob", "twitter", 0, "reauth_required", "twitter refresh: invalid_request"),
        ):
            run = await store.begin(user, provider, f"job-{user}-{provider}")
            await store.checkpoint(
                user, provider, run, {"c": 1}, fetched=fetched, upserted=fetched, deleted=0
            )
            await store.finish(user, provider, run, status, error=error)
    finally:
        await services.aclose()


@pytest.fixture
def api_process(
    pg_url: str, redis_url: str, namespace: str, base_env: dict[str, str], tmp_path: Path
) -> Iterator[str]:
    settings = Settings(database_url=pg_url, redis_url=redis_url, redis_namespace=namespace)
    asyncio.run(_seed(settings))
    dead = redis.Redis.from_url(redis_url)
    dead.xadd(
        Keys(namespace).dead,
        {
            "type": "github:fetch",
            "payload": '{"userId": "bob"}',
            "error": "github: HTTP 500",
            "failedAt": "2026-01-01T00:00:00Z",
        },
    )
    dead.close()
    env = {
        **base_env,
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": namespace,
        "INGESTION_API_KEY": API_KEY,
    }
    log = (tmp_path / "api.log").open("w")
    process = subprocess.Popen(
        [*INGESTION, "api", "--port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        port = announced_port_in_file(tmp_path / "api.log", process, timeout=150)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 150  # process start-up on a busy 2-core machine
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            assert time.monotonic() < deadline, "the API did not start within 150 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _stream_jobs(redis_url: str, namespace: str) -> list[tuple[str, str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [
            (fields["type"], json.loads(fields["payload"])["userId"])
            for _, fields in client.xrange(Keys(namespace).stream)
        ]
    finally:
        client.close()


def test_status_page_in_chromium(api_process: str, redis_url: str, namespace: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(api_process)
            # Without the key: the sign-in form, nothing of any user.
            expect(page).to_have_title("ingestion · sign in")
            expect(page.locator("#key-form")).to_be_visible()
            assert page.locator("#accounts").count() == 0
            assert "alice" not in page.content()
            page.screenshot(path=str(ARTIFACTS / "status-page-sign-in.png"), full_page=True)

            page.fill("#api-key", API_KEY)
            page.click("#key-form button[type=submit]")
            expect(page).to_have_title("ingestion · status")
            rows = page.locator("#accounts tbody tr")
            expect(rows).to_have_count(8)  # 2 users x 4 providers
            expect(page.locator("#key-state")).to_have_text("signed in with the API key")
            for user in ("alice", "bob"):
                for provider in ("gmail", "calendar", "github", "twitter"):
                    row = page.locator(f'tr[data-user="{user}"][data-provider="{provider}"]')
                    expect(row).to_be_visible()
            alice_gmail = page.locator('tr[data-user="alice"][data-provider="gmail"]')
            expect(alice_gmail.locator(".badge")).to_have_text("ok")
            expect(alice_gmail.locator("td.num")).to_have_text("1240")
            bob_twitter = page.locator('tr[data-user="bob"][data-provider="twitter"]')
            expect(bob_twitter).to_contain_text("reconnect")
            expect(bob_twitter).to_contain_text("invalid_request")
            expect(page.locator("#queue")).to_contain_text("dead letters")
            expect(page.locator("#runs tbody tr")).to_have_count(6)
            assert _stream_jobs(redis_url, namespace) == []

            sync_button = page.locator(
                'button[data-action="sync"][data-user="bob"][data-provider="github"]'
            )
            page.evaluate("document.body.dataset.marker = 'before'")
            sync_button.click()
            expect(page.locator("#flash")).to_contain_text("Queued: github for bob")
            assert _stream_jobs(redis_url, namespace) == [("github:fetch", "bob")]
            # The page refreshes itself a few seconds after an action, with the key: still the
            # full page (a new body, not the sign-in form), the message kept.
            expect(page.locator("body[data-marker]")).to_have_count(0, timeout=15000)
            expect(page).to_have_title("ingestion · status")
            expect(page.locator("#accounts tbody tr")).to_have_count(8)
            expect(page.locator("#flash")).to_contain_text("Queued: github for bob")
            page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)

            # A wrong key is refused by the API and forgotten by the page.
            page.evaluate("sessionStorage.setItem('ingestion-api-key', 'wrong')")
            page.locator(
                'button[data-action="sync"][data-user="alice"][data-provider="calendar"]'
            ).click()
            expect(page.locator("#flash")).to_contain_text("The API key was refused")
            assert len(_stream_jobs(redis_url, namespace)) == 1

            # The Content-Security-Policy blocked nothing the page needs.
            assert not [m for m in console if "Content Security Policy" in m], console

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.goto(api_process)
            phone.fill("#api-key", API_KEY)
            phone.click("#key-form button[type=submit]")
            expect(phone.locator("#accounts tbody tr")).to_have_count(8)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
            phone.screenshot(path=str(ARTIFACTS / "status-page-phone.png"), full_page=False)
        finally:
            browser.close()
