"""The typed per-type metadata names exactly the keys design §6 requires."""

from __future__ import annotations

from typing import get_type_hints

from ingestion.memory import metadata as m


def test_typed_metadata_matches_the_required_keys() -> None:
    types = {
        "email": m.EmailMetadata,
        "event": m.EventMetadata,
        "commit": m.CommitMetadata,
        "issue": m.IssueMetadata,
        "pull_request": m.PullRequestMetadata,
        "tweet": m.TweetMetadata,
    }
    assert set(types) == set(m.METADATA_KEYS)
    for record_type, typed in types.items():
        assert set(get_type_hints(typed)) == set(m.METADATA_KEYS[record_type]), record_type
