"""GitHub benchmark: full sync and unchanged re-sync, beside Meltano's tap-github.

    uv run python bench/bench_github.py [--repos 20] [--commits 5000] [--issues 5000]

One emulator (tests/emulators/github.py) runs in a child process, seeded with `--repos`
repositories holding `--commits` commits (3-5 files each, with patches) and `--issues` issues
and pull requests (40 % PRs, 30 % with comments). Then, against the very same emulator:

1. ours: `SyncEngine.run("github")` in this process (embedded SQLite store), a full sync, then
   an unchanged re-sync;
2. peer: Meltano's tap-github (PyPI `meltanolabs-tap-github`, bench dependency group, pointed at
   the emulator with `api_url_base`) syncing the same repositories' `issues`, `commits` and
   `commit_diffs` (the commit details), then again with the state it emitted.

Requests and rate-limit units are counted by the emulator (a 304 costs no unit). Results are
printed as markdown and written to bench/results/github.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.emulators.github import GitHubState, create_app, seed_activity  # noqa: E402
from tests.emulators.server import free_port  # noqa: E402

TOKEN = "gho_bench_token"
#: The account's next token (as after a GitHub App user token's 8-hour rotation): the ETags
#: the first token received do not match under it (see the emulator).
ROTATED_TOKEN = "gho_bench_token_rotated"
RUNS = ("full sync", "unchanged re-sync", "re-sync after token rotation")
RESULTS = ROOT / "bench" / "results" / "github.md"
#: tap-github validates personal tokens against the hard-coded https://api.github.com/rate_limit;
#: this launcher sends that one call to the emulator too (nothing leaves the machine).
TAP_LAUNCHER = """
import os, requests
_get = requests.get
def _local(url, *args, **kwargs):
    if url.startswith("https://api.github.com/"):
        url = os.environ["BENCH_GITHUB_API"] + url[len("https://api.github.com"):]
    return _get(url, *args, **kwargs)
requests.get = _local
from tap_github.tap import TapGitHub
TapGitHub.cli()
"""
PEER_STREAMS = {"repositories", "issues", "commits", "commit_diffs"}


def _serve(port: int, repos: int, commits: int, issues: int, ready: Any) -> None:
    """Child process: seed the emulator and serve it until terminated."""
    import uvicorn

    state = GitHubState(rate_limit=1_000_000)
    state.add_user("mona", token=TOKEN)
    state.tokens[ROTATED_TOKEN] = "mona"
    state.add_user("octocat")
    seed_activity(
        state,
        "mona",
        repos=repos,
        commits_per_repo=commits // repos,
        issues_per_repo=issues // repos,
        pull_ratio=0.4,
        comment_ratio=0.3,
    )
    ready.set()
    uvicorn.run(
        create_app(state), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def emulator_stats(url: str, *, reset: bool = False) -> dict[str, Any]:
    response = httpx.request("DELETE" if reset else "GET", f"{url}/_emulator/stats")
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


# --- ours ------------------------------------------------------------------------------------


async def run_ours(url: str, workdir: Path) -> list[dict[str, Any]]:
    from ingestion.config import Settings
    from ingestion.providers.base import FetchOptions
    from ingestion.services import Services
    from ingestion.storage.accounts import save_account

    settings = Settings(
        database_url=f"sqlite:///{workdir / 'ingestion.db'}",
        github_api_url=url,
        log_level="warning",
        log_format="json",
    )
    services = await Services.open(settings)
    runs = []
    try:
        async with services.db.session() as session:
            await save_account(session, user_id="bench", provider_id="github", access_token=TOKEN)
        for label in RUNS:
            if label == RUNS[2]:
                async with services.db.session() as session:
                    await save_account(
                        session, user_id="bench", provider_id="github", access_token=ROTATED_TOKEN
                    )
            emulator_stats(url, reset=True)
            started = time.perf_counter()
            summary = await services.engine.run("github", "bench", FetchOptions())
            seconds = time.perf_counter() - started
            stats = emulator_stats(url)
            runs.append(
                {
                    "label": label,
                    "seconds": seconds,
                    "items": summary.upserted,
                    "requests": stats["requests"],
                    "units": stats["unitsUsed"],
                    "notModified": stats["notModified"],
                    "byStatus": stats["byStatus"],
                    "byEndpoint": stats.get("byEndpoint", {}),
                }
            )
    finally:
        await services.aclose()
    return runs


# --- peer ------------------------------------------------------------------------------------


def _tap_command() -> list[str]:
    return [sys.executable, "-c", TAP_LAUNCHER]


def run_peer(url: str, repos: list[str], workdir: Path) -> list[dict[str, Any]]:
    config = {
        "auth_token": TOKEN,
        "repositories": repos,
        "start_date": (datetime.now(UTC) - timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "api_url_base": url,
        "metrics_log_level": "WARNING",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "TAP_GITHUB_"))}
    env["BENCH_GITHUB_API"] = url
    config_path = workdir / "tap-config.json"
    config_path.write_text(json.dumps(config))
    discovered = subprocess.run(
        [*_tap_command(), "--config", str(config_path), "--discover"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    catalog = json.loads(discovered.stdout)
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in PEER_STREAMS
    catalog_path = workdir / "tap-catalog.json"
    catalog_path.write_text(json.dumps(catalog))

    runs = []
    state_path: Path | None = None
    for label in ("full sync", "unchanged re-sync"):
        emulator_stats(url, reset=True)
        command = [*_tap_command(), "--config", str(config_path), "--catalog", str(catalog_path)]
        if state_path is not None:
            command += ["--state", str(state_path)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"tap-github failed: {done.stderr[-2000:]}")
        counts: Counter[str] = Counter()
        last_state: Any = None
        for line in done.stdout.splitlines():
            message = json.loads(line)
            if message["type"] == "RECORD":
                counts[message["stream"]] += 1
            elif message["type"] == "STATE":
                last_state = message["value"]
        state_path = workdir / "tap-state.json"
        state_path.write_text(json.dumps(last_state or {}))
        stats = emulator_stats(url)
        runs.append(
            {
                "label": label,
                "seconds": seconds,
                "items": counts["issues"] + counts["commits"],
                "records": dict(counts),
                "requests": stats["requests"],
                "units": stats["unitsUsed"],
                "notModified": stats["notModified"],
                "byStatus": stats["byStatus"],
            }
        )
    return runs


# --- report ----------------------------------------------------------------------------------


def _flags(args: argparse.Namespace) -> str:
    chosen = {"repos": args.repos, "commits": args.commits, "issues": args.issues}
    defaults = {"repos": 20, "commits": 5000, "issues": 5000}
    return "".join(f" --{k} {v}" for k, v in chosen.items() if v != defaults[k])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(
    args: argparse.Namespace,
    ours: list[dict[str, Any]],
    peer: list[dict[str, Any]],
    peer_version: str,
) -> str:
    lines = [
        "# GitHub provider benchmark",
        "",
        f"`uv run python bench/bench_github.py{_flags(args)}` — {args.repos} repositories, "
        f"{args.commits} "
        f"commits with details, {args.issues} issues and pull requests (40 % PRs, 30 % with "
        "comments), one emulator in a child process (tests/emulators/github.py); "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        "| run | seconds | items | items/s | requests | requests/item | rate-limit units | 304s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for who, runs in (("ours", ours), (f"tap-github {peer_version}", peer)):
        for run in runs:
            items = run["items"]
            lines.append(
                f"| {who}: {run['label']} | {run['seconds']:.1f} | {items} | "
                f"{items / run['seconds']:.0f} | {run['requests']} | "
                f"{run['requests'] / items:.2f} | {run['units']} | {run['notModified']} |"
                if items
                else f"| {who}: {run['label']} | {run['seconds']:.1f} | 0 | — | "
                f"{run['requests']} | — | {run['units']} | {run['notModified']} |"
            )
    lines += [
        "",
        "| ratio ours / tap-github | time | requests | rate-limit units |",
        "|---|---:|---:|---:|",
    ]
    for index, label in enumerate(RUNS[:2]):
        a, b = ours[index], peer[index]
        lines.append(
            f"| {label} | {_ratio(a['seconds'], b['seconds'])} | "
            f"{_ratio(a['requests'], b['requests'])} | {_ratio(a['units'], b['units'])} |"
        )
    peer_records = ", ".join(f"{k} {v}" for k, v in sorted(peer[0]["records"].items()))
    lines += [
        "",
        "Notes:",
        "",
        "- Items: ours = records upserted (commits + issues + PRs); tap-github = `issues` + "
        f"`commits` records (all its records in the full sync: {peer_records}).",
        "- Our records hold what the tap does not fetch: PR fields (merged, draft, base/head "
        "refs), issue comments and PR review comments (the conversation in the content), and "
        "the organisation issues the person takes part in (`/issues` with `filter=created`, "
        "`assigned`, `mentioned`, `subscribed`: 9,330 items where the tap, listing every issue "
        "of the repositories, has 10,000). They come from repository-wide listings "
        "(`/pulls?state=all&sort=updated`, `/issues/comments` and `/pulls/comments` with "
        "`since`), read once for the items of a listing page; `/pulls/{n}` and the per-item "
        "comment listings remain only for items those listings cannot vouch for. The tap's "
        "`commit_diffs` asks each commit's `application/vnd.github.v3.diff`; we ask the JSON "
        "detail (files with patches).",
        "- Where our full-sync requests go: "
        + ", ".join(
            f"`{k}` {v}"
            for k, v in sorted(ours[0].get("byEndpoint", {}).items(), key=lambda kv: -kv[1])
        )
        + ".",
        "- Re-sync after a token rotation (GitHub App user tokens expire every 8 hours): ETags "
        "are bound to the token that received them, so every listing page answers 200 and "
        "costs a rate-limit unit; no item's details are fetched again and nothing is re-sent "
        "(the cursor's `seen` and unchanged `pushed_at` vouch for them).",
        "- Re-sync: we ask every listing with `If-None-Match` (304s cost no rate limit) and skip "
        "the commit listing of repositories whose `pushed_at` did not move; tap-github repeats "
        "its listings with `since` = its bookmark (GitHub's `since` is inclusive, so the newest "
        "items, and their diffs, come back).",
        "- tap-github validates its token against the hard-coded `https://api.github.com/rate_limit`;"
        " the bench launcher sends that call to the emulator. It ran from the project's `bench` "
        "dependency group (it resolves together with the service's dependencies).",
        f"- By status, ours full sync: {ours[0]['byStatus']}; re-sync: {ours[1]['byStatus']}; "
        f"tap-github full: {peer[0]['byStatus']}; re-sync: {peer[1]['byStatus']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--commits", type=int, default=5000)
    parser.add_argument("--issues", type=int, default=5000)
    parser.add_argument("--no-write", action="store_true", help="do not update the results file")
    parser.add_argument(
        "--ours-only", action="store_true", help="skip the peer; print our runs (no results file)"
    )
    args = parser.parse_args()

    port = free_port()
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    server = context.Process(
        target=_serve, args=(port, args.repos, args.commits, args.issues, ready), daemon=True
    )
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        if not ready.wait(120):
            raise RuntimeError("the emulator did not start")
        for _ in range(200):
            try:
                emulator_stats(url)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        repos = [f"{'mona' if r % 2 == 0 else 'acme'}/project-{r:02d}" for r in range(args.repos)]
        with tempfile.TemporaryDirectory() as tmp:
            ours = asyncio.run(run_ours(url, Path(tmp)))
            if args.ours_only:
                for run in ours:
                    sys.stdout.write(
                        f"| ours: {run['label']} | {run['seconds']:.1f} s | {run['items']} items "
                        f"| {run['requests']} requests | {run['units']} units | "
                        f"{run['notModified']} 304s | {run['byStatus']} |\n"
                    )
                return
            peer = run_peer(url, repos, Path(tmp))
    finally:
        server.terminate()
        server.join(10)
    from importlib.metadata import version

    text = report(args, ours, peer, version("meltanolabs-tap-github"))
    sys.stdout.write(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
