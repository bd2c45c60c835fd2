"""Seeing inside a run: the optimizer-state monitor, TensorBoard files, run plots, landscapes.

This room reads runs and checkpoints and never the other way round: ``train``
calls :class:`RunWatch` while it trains, the CLI exposes the rest
(``steplab plot``, ``steplab landscape``).

- :class:`StateMonitor`: moments, effective step sizes, update ratios and
  Lookahead's slow-fast gap every N steps, as optimizer hooks for any loop.
- :class:`RunBoard`: TensorBoard event files (tensorboardX), rank 0 only.
"""

from __future__ import annotations

from steplab.observe.run_watch import RunWatch
from steplab.observe.state_monitor import Row, StateMonitor
from steplab.observe.tensorboard import RunBoard, open_board, scalar_tags

__all__ = ["Row", "RunBoard", "RunWatch", "StateMonitor", "open_board", "scalar_tags"]
