"""A progress bar for `ingestion sync` in a terminal (items so far, rate, pages)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

if TYPE_CHECKING:
    from ingestion.providers.base import SyncPage
    from ingestion.sync import SyncSummary

__all__ = ["SyncProgress"]


class SyncProgress:
    """Context manager; `update` is the sync engine's progress callback. Disabled = no output."""

    def __init__(self, *, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.label = label
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> SyncProgress:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} items/s · {task.fields[pages]} pages"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, rate=0.0, pages=0)
        return self

    def update(self, summary: SyncSummary, page: SyncPage) -> None:
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        self._progress.update(
            self._task,
            completed=summary.fetched,
            total=page.total_estimate,
            rate=summary.fetched / elapsed if elapsed > 0 else 0.0,
            pages=summary.pages,
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
