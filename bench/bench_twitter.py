"""X provider throughput: a full sync of one account through the X emulator, then a quiet one.

    uv run python bench/bench_twitter.py [--posts N] [--mentions N] [--likes N]

The account has `--posts` own posts (default 3,200: all X lets a timeline reach), `--mentions`
(default 800, the mentions timeline's reach) and `--likes` (default 1,000); one post in ten has
media, one in twenty is a long post. The sync engine runs in process with the memory engine
emulator as its sink (the production path: HTTP batches of at most 100). Prints a markdown table
and writes it to bench/results/twitter.md. Bounded: well under two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.emulators.memory_engine import MemoryEngineState  # noqa: E402
from tests.emulators.memory_engine import create_app as engine_app  # noqa: E402
from tests.emulators.server import serve  # noqa: E402
from tests.emulators.twitter import TwitterState, create_app, days_ago  # noqa: E402

from ingestion.config import Settings  # noqa: E402
from ingestion.logs import configure_logging  # noqa: E402
from ingestion.services import Services  # noqa: E402
from ingestion.storage.accounts import save_account  # noqa: E402

ME, OTHER = "100", "200"
TOKEN = "bench-token"
TIMEOUT_SECONDS = 110.0


def seed(state: TwitterState, posts: int, mentions: int, likes: int) -> int:
    state.add_user(ME, "alice")
    state.add_user(OTHER, "bob")
    state.tokens[TOKEN] = ME
    total = posts + mentions + likes
    for i in range(total):
        age = (total - i) / 24  # one post an hour, oldest first
        media = [("photo", f"https://pbs.twimg.com/media/{i}.jpg")] if i % 10 == 0 else []
        note = ("a long post " * 60) if i % 20 == 0 else None
        if i < posts:
            state.add_tweet(
                ME, f"post {i} about things", created_at=days_ago(age), media=media, note_text=note
            )
        elif i < posts + mentions:
            state.add_tweet(
                OTHER, f"@alice question {i}", mentions=[ME], created_at=days_ago(age), media=media
            )
        else:
            state.like(
                ME,
                state.add_tweet(OTHER, f"likeable {i}", created_at=days_ago(age), note_text=note),
            )
    return total


async def run(args: argparse.Namespace) -> str:
    x_state = TwitterState()
    total = seed(x_state, args.posts, args.mentions, args.likes)
    x_state.limits = dict.fromkeys(x_state.limits, 100_000)
    engine_state = MemoryEngineState()
    x_server = serve(create_app(x_state))
    engine_server = serve(engine_app(engine_state))
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=f"sqlite:///{folder}/bench.db",
                twitter_api_url=f"{x_server.url}/2",
                memory_engine_url=engine_server.url,
                twitter_page_budget=1000,
                log_level="warning",
            )
            configure_logging(settings)
            services = await Services.open(settings)
            try:
                async with services.db.session() as session:
                    await save_account(
                        session, user_id="u1", provider_id="twitter", access_token=TOKEN
                    )
                for label in ("full sync", "incremental, nothing new"):
                    x_state.log.clear()
                    started = time.perf_counter()
                    summary = await services.engine.run("twitter", "u1")
                    seconds = time.perf_counter() - started
                    requests = len(x_state.log)
                    rows.append((label, summary.fetched, summary.upserted, requests, seconds))
            finally:
                await services.aclose()
    finally:
        x_server.stop()
        engine_server.stop()
    assert len(engine_state.ids("u1")) == total, "every post must reach the memory engine"

    lines = [
        "# X provider benchmark",
        "",
        f"One account: {args.posts} own posts, {args.mentions} mentions, {args.likes} likes "
        f"({total} posts), through the X emulator into the memory engine emulator "
        f"(Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        "| run | posts fetched | upserted | requests | seconds | posts/s | requests/post |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, fetched, upserted, requests, seconds in rows:
        rate = f"{fetched / seconds:,.0f}" if fetched else "n/a"
        per_post = f"{requests / fetched:.4f}" if fetched else "n/a"
        cells = [label, fetched, upserted, requests, f"{seconds:.2f}", rate, per_post]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "Requests are pages of 100 (X's largest) plus one `/users/me` on the first sync; the "
        "quiet run costs one request per timeline (a `since_id` page for posts and mentions, a "
        "10-post probe for likes) and upserts nothing. Wall time includes both emulators, "
        "which run in the same process (and GIL) as the sync.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=3200)
    parser.add_argument("--mentions", type=int, default=800)
    parser.add_argument("--likes", type=int, default=1000)
    args = parser.parse_args()
    table = asyncio.run(asyncio.wait_for(run(args), TIMEOUT_SECONDS))
    print(table)
    out = ROOT / "bench" / "results" / "twitter.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)


if __name__ == "__main__":
    main()
