"""A rich progress bar for ``fit``: step, loss, metric, lr, steps/s, ETA.

It is drawn on stderr and updated only at log steps, so it costs nothing on
the steps in between. :class:`NoProgress` is the silent stand-in.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

__all__ = ["NoProgress", "ProgressBar"]


class NoProgress:
    """A progress bar that draws nothing.

    Example:
        >>> with NoProgress() as bar:
        ...     bar.update(10, loss=0.5, lr=0.1, steps_per_s=100.0)
    """

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def update(
        self, step: int, *, loss: float, lr: float, steps_per_s: float, metric: str = ""
    ) -> None:
        """Ignore an update."""


class ProgressBar(NoProgress):
    """The rich progress bar of one run.

    Args:
        total: steps in the run.
        start: steps already done (after a resume).
        label: text before the bar (the run id).
    """

    def __init__(self, total: int, start: int = 0, label: str = "train") -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[metric]}  lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} steps/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(
            label, total=total, completed=start, loss="-", metric="", lr="-", speed="-"
        )

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(
        self, step: int, *, loss: float, lr: float, steps_per_s: float, metric: str = ""
    ) -> None:
        """Show the state after ``step`` steps."""
        self._progress.update(
            self._task,
            completed=step,
            loss=f"{loss:.4g}",
            lr=f"{lr:.3g}",
            speed=f"{steps_per_s:.0f}",
            metric=metric,
        )
