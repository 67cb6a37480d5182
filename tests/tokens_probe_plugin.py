"""INGESTION_PLUGINS module for token tests: `github` syncs run the probe provider."""

from ingestion.providers.registry import register
from tests.tokens_probe import ProbeProvider

register("github", ProbeProvider)
