"""TensorBoard event files for a run: scalars of every ``metrics.jsonl`` row, moment histograms.

:class:`RunBoard` writes through tensorboardX's event-file writer (numpy and
protobuf only, not the full tensorboard package; one event per row, written on
its background thread) into the run directory itself, so
``tensorboard --logdir runs/`` shows each run under its directory name. Tags:

============================  ==========================================================
``loss/train``, ``loss/val``  ``train_loss``, ``val_loss``, ``test_loss``
``metrics/<name>``            other evaluated metrics (``val_accuracy``, ...)
``lr``                        the first group's learning rate
``monitor/<name>``            ``grad_norm``, ``update_ratio``
``grad_norm/<layer>``         per-layer gradient norms
``state/<statistic>``         the state monitor's overall series
``state/<layer>/<statistic>`` the state monitor's per-layer series
``moments/<layer>/<buffer>``  histograms of first/second-moment buffers
============================  ==========================================================

Under several processes (``torch.distributed`` initialised) only rank 0
writes: :func:`open_board` returns None elsewhere. On resume the writer purges
events at and after the resumed step, so TensorBoard shows no step twice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from steplab.state.inspection import FIRST_MOMENT, SECOND_MOMENT
from steplab.state.names import inner_of

__all__ = ["RunBoard", "is_writer_rank", "open_board", "scalar_tags"]

_SKIP = {"step", "wall_time", "params", "layers"}


def is_writer_rank() -> bool:
    """True unless ``torch.distributed`` is initialised and this process is not rank 0."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def _tag(key: str) -> str:
    if key == "train_loss" or key.endswith("_loss"):
        return f"loss/{key.removesuffix('_loss')}"
    if key == "lr":
        return "lr"
    if key in ("grad_norm", "update_ratio"):
        return f"monitor/{key}"
    return f"metrics/{key}"


def scalar_tags(row: Mapping[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one ``metrics.jsonl`` row, by tag (None values dropped).

    Example:
        >>> scalar_tags({"step": 3, "train_loss": 0.5, "lr": 0.1, "val_accuracy": 0.9,
        ...              "state": {"m_norm": 2.0, "layers": {"w": {"m_norm": 2.0}}}})
        {'loss/train': 0.5, 'lr': 0.1, 'metrics/val_accuracy': 0.9, 'state/m_norm': 2.0, \
'state/w/m_norm': 2.0}
    """
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in _SKIP or value is None:
            continue
        if key == "layer_grad_norms":
            out |= {f"grad_norm/{n}": float(v) for n, v in value.items() if v is not None}
        elif key == "state":
            out |= {f"state/{k}": float(v) for k, v in value.items()
                    if k != "layers" and v is not None}
            for layer, stats in value.get("layers", {}).items():
                out |= {f"state/{layer}/{k}": float(v) for k, v in stats.items() if v is not None}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[_tag(key)] = float(value)
    return out


class RunBoard:
    """An open TensorBoard event file in a run directory.

    Args:
        logdir: the run directory.
        purge_step: on resume, the step training continues from; events logged
            at or after it by the interrupted run are hidden by TensorBoard.
        flush_secs: how often the background writer flushes (a running run is
            readable this many seconds behind).
    """

    def __init__(self, logdir: str | os.PathLike[str], purge_step: int | None = None,
                 flush_secs: int = 10) -> None:
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.writer import FileWriter

        self._writer = FileWriter(str(logdir), flush_secs=flush_secs)
        if purge_step is not None:  # as SummaryWriter(purge_step=...) does
            self._writer.add_event(Event(step=purge_step, file_version="brain.Event:2"))
            self._writer.add_event(Event(step=purge_step,
                                         session_log=SessionLog(status=SessionLog.START)))

    def log_row(self, row: Mapping[str, Any]) -> None:
        """Write every scalar of a ``metrics.jsonl`` row at its ``step``, as one event."""
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=value)
                  for tag, value in scalar_tags(row).items()]
        if values:
            self._writer.add_summary(Summary(value=values), int(row["step"]))

    def log_moments(self, step: int, optimizer: torch.optim.Optimizer,
                    names: Sequence[str], params: Sequence[torch.Tensor]) -> None:
        """Write histograms of each parameter's first- and second-moment buffers."""
        from tensorboardX.summary import histogram

        state = inner_of(optimizer).state
        for name, p in zip(names, params, strict=True):
            for key, value in state.get(p, {}).items():
                moment = key in FIRST_MOMENT or key in SECOND_MOMENT
                if moment and isinstance(value, torch.Tensor) and value.numel():
                    data = value.detach().float().cpu().numpy().ravel()
                    self._writer.add_summary(
                        histogram(f"moments/{name}/{key}", data, 64), step)

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def open_board(logdir: str | os.PathLike[str], purge_step: int | None = None) -> RunBoard | None:
    """A :class:`RunBoard` on rank 0 (or without ``torch.distributed``); None on other ranks."""
    return RunBoard(logdir, purge_step) if is_writer_rank() else None
