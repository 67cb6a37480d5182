"""The provider registry: the only place that maps a provider name to its implementation.

One line per provider. The worker dispatches `{name}:fetch` jobs through it and the scheduler
enqueues every registered provider on its `{NAME}_SYNC_CRON` schedule.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ingestion.config import PROVIDER_NAMES, Settings
from ingestion.providers.base import OAuthEndpoints, Provider

__all__ = ["AUTH", "REGISTRY", "account_provider_of", "auth_for", "create_provider", "register"]

ProviderFactory = Callable[[Settings], Provider]

#: name -> (Better Auth providerId of its account, "module:Class" imported on first use).
REGISTRY: dict[str, tuple[str, str]] = {
    "gmail": ("google", "ingestion.providers.gmail.provider:GmailProvider"),
    "calendar": ("google", "ingestion.providers.calendar.provider:CalendarProvider"),
    "github": ("github", "ingestion.providers.github.provider:GitHubProvider"),
    "twitter": ("twitter", "ingestion.providers.twitter.provider:TwitterProvider"),
}

#: Better Auth providerId -> "module:ATTR" of its `OAuthEndpoints` (the provider's `auth.py`).
AUTH: dict[str, str] = {
    "google": "ingestion.providers.gmail.auth:GOOGLE_OAUTH",
    "github": "ingestion.providers.github.auth:GITHUB_OAUTH",
    "twitter": "ingestion.providers.twitter.auth:TWITTER_OAUTH",
}

_overrides: dict[str, ProviderFactory] = {}


def register(name: str, factory: ProviderFactory) -> None:
    """Replace a provider's implementation (tests register instrumented providers)."""
    _overrides[name] = factory


def _load(name: str) -> ProviderFactory:
    if name in _overrides:
        return _overrides[name]
    if name not in REGISTRY:
        raise KeyError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}")
    module_name, _, attr = REGISTRY[name][1].partition(":")
    factory: ProviderFactory = getattr(importlib.import_module(module_name), attr)
    return factory


def create_provider(name: str, settings: Settings) -> Provider:
    return _load(name)(settings)


def account_provider_of(name: str) -> str:
    """The Better Auth `providerId` whose account a provider syncs with."""
    if name not in REGISTRY:
        raise KeyError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}")
    return REGISTRY[name][0]


def auth_for(account_provider: str) -> OAuthEndpoints:
    """The OAuth facts (endpoint settings, scopes, client authentication) of an account kind."""
    if account_provider not in AUTH:
        raise KeyError(
            f"unknown account provider {account_provider!r}; expected one of {', '.join(AUTH)}"
        )
    module_name, _, attr = AUTH[account_provider].partition(":")
    endpoints: OAuthEndpoints = getattr(importlib.import_module(module_name), attr)
    return endpoints
