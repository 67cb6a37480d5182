"""Faithful local emulators of every external API, for tests and benchmarks.

Each emulator is a Starlette app built by a factory with a state object the test can inspect
and script (fault injection, quotas, clocks). `serve(app)` runs one on a free loopback port
in a background thread.
"""

from tests.emulators.server import RunningServer, free_port, serve

__all__ = ["RunningServer", "free_port", "serve"]
