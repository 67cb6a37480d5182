"""Calendar syncs with the Google account: its OAuth facts are Google's, kept in `gmail.auth`."""

from __future__ import annotations

from ingestion.providers.gmail.auth import GOOGLE_OAUTH, GOOGLE_SCOPES

__all__ = ["GOOGLE_OAUTH", "GOOGLE_SCOPES"]
