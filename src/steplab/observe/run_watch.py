"""What ``fit`` observes besides its own rows: the optimizer-state monitor and TensorBoard.

The training loop makes one :class:`RunWatch` per run and calls it at four
points: before each step (:meth:`RunWatch.before_step`), before clipping
(:meth:`RunWatch.observe_gradients`), when it writes a ``metrics.jsonl`` row
(:meth:`RunWatch.take_state` adds the monitor's measurement,
:meth:`RunWatch.log` mirrors the row to TensorBoard) and at the end
(:meth:`RunWatch.close`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from steplab.observe.state_monitor import Row, StateMonitor
from steplab.observe.tensorboard import RunBoard, open_board

__all__ = ["RunWatch"]


class RunWatch:
    """The state monitor and the TensorBoard writer of one run (either may be off).

    Args:
        optimizer, model: what is trained.
        state_every: measure the state every this many steps; None: no monitor.
        histogram_every: moment histograms every this many steps (None: ``10 * state_every``).
        clip_norm, clip_value: the loop's clipping (for ``clip_fraction``).
        logdir: the run directory for event files; None: no TensorBoard.
        start_step: steps already done (resume).
        resumed: True when continuing a run (events after ``start_step`` are purged).

    Example:
        >>> model = nn.Linear(2, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> watch = RunWatch(opt, model, state_every=1, logdir=None)
        >>> watch.before_step(0); model(torch.ones(1, 2)).sum().backward(); opt.step()
        >>> sorted(watch.take_state())
        ['layers', 'update_ratio']
        >>> watch.close()
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, *,
                 state_every: int | None, histogram_every: int | None = None,
                 clip_norm: float | None = None, clip_value: float | None = None,
                 logdir: str | os.PathLike[str] | None = None, start_step: int = 0,
                 resumed: bool = False) -> None:
        self.optimizer, self.model = optimizer, model
        self._state: Row | None = None
        self._histogram_step = -1
        self.monitor = None if state_every is None else StateMonitor(
            optimizer, model, every=state_every, clip_norm=clip_norm, clip_value=clip_value,
            on_row=self._keep, start_step=start_step).attach()
        self.histogram_every = histogram_every or 10 * (state_every or 10)
        self.board: RunBoard | None = None
        if logdir is not None:
            self.board = open_board(logdir, purge_step=start_step if resumed else None)
        named = list(model.named_parameters())
        self._names: Sequence[str] = [n for n, _ in named]
        self._params: Sequence[torch.Tensor] = [p for _, p in named]

    def _keep(self, step: int, row: Row) -> None:
        self._state = row

    def before_step(self, step: int) -> None:
        """Tell the monitor which step comes next (steps skipped by a guard still count)."""
        if self.monitor is not None:
            self.monitor.step = step

    def observe_gradients(self) -> None:
        """Record the clip fraction from the raw gradients (call before clipping)."""
        if self.monitor is not None:
            self.monitor.observe_gradients()

    @property
    def has_state(self) -> bool:
        """True when the last step was measured and the row is not taken yet."""
        return self._state is not None

    def take_state(self) -> Row | None:
        """The last measurement (once), for the ``state`` field of the step's row."""
        row, self._state = self._state, None
        return row

    def log(self, row: dict[str, object]) -> None:
        """Mirror a ``metrics.jsonl`` row to TensorBoard; histograms when due."""
        if self.board is None:
            return
        self.board.log_row(row)
        step = int(row["step"])  # type: ignore[call-overload]
        if step % self.histogram_every == 0 and step != self._histogram_step:
            self._histogram_step = step
            self.board.log_moments(step, self.optimizer, self._names, self._params)

    def close(self) -> None:
        """Remove the monitor's hooks and close the event file."""
        if self.monitor is not None:
            self.monitor.detach()
        if self.board is not None:
            self.board.close()
            self.board = None
