"""X (Twitter) API v2: the user's own posts, mentions and likes (see `provider.py`)."""
