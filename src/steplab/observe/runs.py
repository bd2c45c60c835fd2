"""Read a run directory as it is now: finished, or still being written.

A run directory holds ``config.json``, ``metrics.jsonl`` (appended row by
row while training), ``summary.json`` (written when the run ends) and
``checkpoints/``. :func:`read_run` reads what is there: a torn last row of a
run still writing is skipped, a missing summary means the run is still going
(or was interrupted).

>>> import tempfile, json, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "config.json").write_text(json.dumps({"task": "beale", "optimizer": "adam"}))
>>> _ = (d / "metrics.jsonl").write_text('{"step": 10, "train_loss": 1.5}\\n{"step": 2')
>>> run = read_run(d)
>>> run.status, run.series("train_loss")
('running', ([10.0], [1.5]))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steplab.errors import SpecError

__all__ = ["RunRecord", "read_rows", "read_run"]


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON object rows of a ``metrics.jsonl`` (torn or invalid lines skipped)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows


def _value(row: dict[str, Any], key: str) -> Any:
    """``row[key]``, where ``"state.m_norm"`` reads ``row["state"]["m_norm"]``."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@dataclass(frozen=True)
class RunRecord:
    """One run directory's files.

    Attributes:
        path: the run directory.
        config: ``config.json``.
        rows: ``metrics.jsonl`` rows, in order.
        summary: ``summary.json``, or None while the run is going.
    """

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None

    @property
    def status(self) -> str:
        """The summary's status, or ``"running"`` when there is no summary yet."""
        return str(self.summary["status"]) if self.summary else "running"

    @property
    def label(self) -> str:
        """``<optimizer> (<directory name>)``."""
        return f"{self.config.get('optimizer', '?')} ({self.path.name})"

    def series(self, key: str, x: str = "step") -> tuple[list[float], list[float]]:
        """``(xs, ys)`` of the rows that hold a number under ``key`` (dots reach into dicts)."""
        xs, ys = [], []
        for row in self.rows:
            y, at = _value(row, key), row.get(x)
            if isinstance(y, (int, float)) and isinstance(at, (int, float)):
                xs.append(float(at))
                ys.append(float(y))
        return xs, ys


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_run(path: str | os.PathLike[str]) -> RunRecord:
    """Read a run directory written by ``steplab train`` (finished or still running).

    Raises:
        SpecError: ``path`` is not a directory holding ``metrics.jsonl``.
    """
    root = Path(path)
    if not str(path).strip() or not (root / "metrics.jsonl").is_file():
        raise SpecError(f"run: got {str(root)!r}, expected a run directory holding metrics.jsonl")
    return RunRecord(root, _json(root / "config.json") or {}, read_rows(root / "metrics.jsonl"),
                     _json(root / "summary.json"))
