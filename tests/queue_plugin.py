"""INGESTION_PLUGINS=tests.queue_plugin: the scripted provider replaces `github` in a process."""

from __future__ import annotations

from ingestion.providers.registry import register
from tests.queue_scripted_provider import PROVIDER, ScriptedProvider

register(PROVIDER, ScriptedProvider)
