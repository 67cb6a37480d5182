"""A tiny provider for token tests: one authenticated `GET /user` per sync, one record.

It syncs with the GitHub account (`account_provider = "github"`) so the token service refreshes
through GitHub's OAuth facts, and calls `{GITHUB_API_URL}/user` through `ApiClient` (so a 401
goes through `refresh_after_unauthorized`). `ProbeApi` is the matching API emulator: it accepts
exactly the Bearer tokens in `tokens`, which `link` keeps in step with the OAuth emulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ingestion.config import Settings
from ingestion.memory.record import MemoryRecord
from ingestion.providers.base import SyncContext, SyncPage
from ingestion.providers.http import ApiClient, api_error

__all__ = ["ProbeApi", "ProbeProvider", "create_probe_app"]


class ProbeProvider:
    name: ClassVar[str] = "github"
    account_provider: ClassVar[str] = "github"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def sync(self, ctx: SyncContext) -> AsyncIterator[SyncPage]:
        client = ApiClient(
            provider=self.name,
            http=ctx.http,
            tokens=ctx.tokens,
            base_url=self.settings.github_api_url,
        )
        response = await client.request("GET", "/user", endpoint="user")
        if response.status_code != 200:
            raise api_error(self.name, "user", response)
        login = response.json()["login"]
        record = MemoryRecord.build(
            source="github",
            user_id=ctx.user_id,
            source_id=f"probe/{login}#1",
            type="issue",
            title="probe",
            content=f"seen as {login}",
            occurred_at=ctx.clock.now(),
        )
        yield SyncPage(state={"login": login}, upserts=[record], fetched=1)


@dataclass
class ProbeApi:
    """Bearer token -> login of the emulated user; anything else answers GitHub's 401."""

    tokens: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    unauthorized: int = 0

    def link(self, user: str):  # type: ignore[no-untyped-def]
        """An `on_token` callback for `OAuthState`: the new token works, the old one stops."""

        def on_token(new: str, old: str | None) -> None:
            self.tokens[new] = user
            if old is not None:
                self.tokens.pop(old, None)

        return on_token


def create_probe_app(api: ProbeApi) -> Starlette:
    async def user(request: Request) -> JSONResponse:
        api.requests += 1
        header = request.headers.get("authorization", "")
        login = (
            api.tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        )
        if login is None:
            api.unauthorized += 1
            return JSONResponse(
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
                status_code=401,
            )
        return JSONResponse({"login": login, "id": 1})

    return Starlette(routes=[Route("/user", user)])
