"""Memory sink throughput: the HTTP sink against the memory engine emulator, and the embedded
store's upsert rate (SQLite, and PostgreSQL when reachable), in one run.

    uv run python bench/bench_sink.py [--records N] [--content-bytes B]

Records go in pages of 100, as the sync engine hands them over. Prints a markdown table and
writes it to bench/results/sink.md. Bounded: a few tens of seconds with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.emulators.server import free_port  # noqa: E402

from ingestion.config import Settings  # noqa: E402
from ingestion.memory.http_sink import HttpMemorySink  # noqa: E402
from ingestion.memory.local_store import LocalMemoryStore  # noqa: E402
from ingestion.memory.record import MemoryRecord  # noqa: E402
from ingestion.storage.db import Database, open_database  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
USER = "bench-user"
PAGE = 100
WORDS = ("meeting", "budget", "release", "review", "offsite", "invoice", "travel", "plan", "notes")


def make_records(n: int, content_bytes: int, *, version: int = 0) -> list[MemoryRecord]:
    records = []
    for i in range(n):
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(content_bytes // 7))
        records.append(
            MemoryRecord.build(
                source="gmail",
                user_id=USER,
                source_id=f"msg-{i:06d}",
                type="email",
                title=f"Message {i} v{version}",
                content=f"{words} (version {version})"[:content_bytes],
                occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                metadata={"threadId": f"t{i // 5}", "labels": ["INBOX"], "messageId": f"<{i}@x>"},
            )
        )
    return records


async def in_pages(
    upsert: Callable[[Sequence[MemoryRecord]], Awaitable[int]], records: list[MemoryRecord]
) -> tuple[int, float]:
    started = time.perf_counter()
    sent = 0
    for start in range(0, len(records), PAGE):
        sent += await upsert(records[start : start + PAGE])
    return sent, time.perf_counter() - started


def row(name: str, records: int, sent: int, seconds: float, requests: int | None) -> str:
    rate = records / seconds if seconds else float("inf")
    per_record = f"{requests / sent:.3f}" if requests is not None and sent else "-"
    reqs = str(requests) if requests is not None else "-"
    return f"| {name} | {records} | {sent} | {seconds:.2f} | {rate:,.0f} | {reqs} | {per_record} |"


EMULATOR = """
import sys, uvicorn
from tests.emulators.memory_engine import MemoryEngineState, create_app
uvicorn.run(create_app(MemoryEngineState()), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning", access_log=False, lifespan="off")
"""


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    """The emulator in its own process, so it does not share this process's GIL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", EMULATOR, str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}/memories/delete", json={"userId": "x", "ids": []}, timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("memory engine emulator did not start")


async def bench_http(records: list[MemoryRecord], db_url: str) -> list[str]:
    process, url = start_emulator()
    db = await open_database(Settings(database_url=db_url), migrate=True)
    rows = []
    try:
        settings = Settings(database_url=db_url, memory_engine_url=url)
        async with httpx.AsyncClient(timeout=30) as http:
            sink = HttpMemorySink(settings, db, http)

            cases = (
                ("HTTP sink: first send", False),
                ("HTTP sink: unchanged", False),
                ("HTTP sink: forced resend", True),
            )
            for name, force in cases:

                async def upsert(page: Sequence[MemoryRecord], force: bool = force) -> int:
                    return await sink.upsert(USER, page, force=force)

                before = sink.requests
                sent, seconds = await in_pages(upsert, records)
                rows.append(row(name, len(records), sent, seconds, sink.requests - before))
    finally:
        await db.dispose()
        process.terminate()
        process.wait(timeout=10)
    return rows


async def bench_store(name: str, db: Database, records: list[MemoryRecord]) -> list[str]:
    store = LocalMemoryStore(db)
    rows = []
    sent, seconds = await in_pages(lambda p: store.upsert(USER, p), records)
    rows.append(row(f"embedded {name}: insert", len(records), sent, seconds, None))
    sent, seconds = await in_pages(lambda p: store.upsert(USER, p), records)
    rows.append(row(f"embedded {name}: unchanged", len(records), sent, seconds, None))
    changed = [r.model_copy() for r in make_records(len(records), 1000, version=1)]
    sent, seconds = await in_pages(lambda p: store.upsert(USER, p), changed)
    rows.append(row(f"embedded {name}: update", len(records), sent, seconds, None))
    started = time.perf_counter()
    for word in WORDS:
        await store.search(f"{word} version", limit=20)
    per_query = (time.perf_counter() - started) / len(WORDS) * 1000
    rows.append(
        f"| embedded {name}: search (20 hits) | - | - | {per_query:.1f} ms/query | - | - | - |"
    )
    return rows


async def bench_postgres(records: list[MemoryRecord]) -> list[str]:
    import psycopg

    name = f"bench_sink_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        return [f"| embedded PostgreSQL: skipped ({type(exc).__name__}) | - | - | - | - | - | - |"]
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        db = await open_database(Settings(database_url=url), migrate=True)
        try:
            return await bench_store("PostgreSQL", db, records)
        finally:
            await db.dispose()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--content-bytes", type=int, default=1000)
    args = parser.parse_args()
    records = make_records(args.records, args.content_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        rows = await bench_http(records, f"sqlite:///{tmp}/http.db")
        sqlite_db = await open_database(
            Settings(database_url=f"sqlite:///{tmp}/store.db"), migrate=True
        )
        try:
            rows += await bench_store("SQLite", sqlite_db, records)
        finally:
            await sqlite_db.dispose()
    rows += await bench_postgres(records)
    table = "\n".join(
        [
            "| case | records | sent | seconds | records/s | requests | requests/record |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    cpus = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (
        "# Memory sink benchmark\n\n"
        f"`uv run python bench/bench_sink.py --records {args.records} "
        f"--content-bytes {args.content_bytes}` on {platform.python_implementation()} "
        f"{platform.python_version()}, {cpus} CPUs (load average {load:.1f} at the end), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n\n"
        f"Records of ~{args.content_bytes} characters of content, handed over in pages of "
        f"{PAGE} like the sync engine does; the HTTP sink posts batches of at most 100 records "
        "to the memory engine emulator (its own process, on loopback; it validates every "
        "record) and "
        "records each accepted hash in SQLite; 'unchanged' is a re-sync where every hash "
        "matches (no request is made). The embedded store writes rows and its full-text index "
        "in the same transaction. The load average is reported because figures taken while "
        "other work shares the CPUs are lower bounds.\n\n"
        f"{table}\n"
    )
    print(text)
    out = ROOT / "bench" / "results" / "sink.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
