"""The event loop every command runs on: uvloop where it is installed, else asyncio's own.

uvloop (libuv under the standard `asyncio` interface) cut the Gmail backfill's client CPU by
about a sixth (bench/results/gmail.md); the queue and the HTTP API measured the same on either
loop (redis-py's and the ASGI stack's own costs dominate there). It does not exist on Windows;
`EVENT_LOOP=asyncio` forces the standard library's loop anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ingestion.errors import ConfigurationError

__all__ = ["loop_factory"]


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `asyncio.Runner` (`None` = the standard library's loop)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "EVENT_LOOP=uvloop but uvloop is not installed (it does not exist on Windows)"
            ) from None
        return None
    return uvloop.new_event_loop
