"""GitHub: commits, issues and pull requests of the connected account (see `provider.py`)."""
