"""The run directory: ``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/``.

JSON files are written atomically (a temporary file beside the target,
flushed, fsynced, then ``os.replace``), so a reader never sees half a file.
``metrics.jsonl`` is appended to and flushed one row at a time; on resume the
rows after the checkpoint's step are dropped, so no step appears twice.
Non-finite floats are written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any

from steplab.errors import SpecError

__all__ = ["RunDir", "atomic_write_json", "check_out_dir", "make_out_dir", "to_json_value"]

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"
CHECKPOINTS = "checkpoints"


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, AttributeError):
        return "not a JSON object"
    return f"not valid JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc)


def to_json_value(obj: Any) -> Any:
    """Return ``obj`` with NaN/Inf floats replaced by None, tuples by lists.

    Example:
        >>> to_json_value({"a": float("nan"), "b": (1, 2.5)})
        {'a': None, 'b': [1, 2.5]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_json_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_value(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a fsynced temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(to_json_value(obj), fh, indent=2, sort_keys=True, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_out_dir(path: str | os.PathLike[str], option: str = "out") -> Path:
    """Check that ``path`` is, or can become, a directory; touch nothing.

    Args:
        path: the output directory.
        option: the option's name for the message.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        SpecError: ``path`` is empty, a file, under a file, or under a directory
            this process may not write to.

    Example:
        >>> check_out_dir("/proc/version/x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steplab.errors.SpecError: out: got '/proc/version/x', but '/proc/version' is a file; ...
    """
    if not str(path).strip():
        raise SpecError(f"{option}: got {str(path)!r}, expected a directory path")
    root = Path(path)
    if root.exists():
        if not root.is_dir():
            raise SpecError(f"{option}: got {str(root)!r}, which is a file; expected a directory")
        return root
    ancestor = next(p for p in root.absolute().parents if p.exists())
    if not ancestor.is_dir():
        raise SpecError(f"{option}: got {str(root)!r}, but {str(ancestor)!r} is a file; "
                        "expected a path whose parents are directories")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SpecError(f"{option}: got {str(root)!r}, but {str(ancestor)!r} is not writable; "
                        "expected a directory this user can create")
    return root


def make_out_dir(path: str | os.PathLike[str], option: str = "out") -> Path:
    """:func:`check_out_dir`, then create the directory (and its parents).

    Raises:
        SpecError: as :func:`check_out_dir`, or the directory cannot be created
            (``/proc/x``: the reason from the operating system).
    """
    root = check_out_dir(path, option)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"{option}: cannot create {str(root)!r} ({exc.strerror or exc}); "
                        "expected a directory this user can create") from None
    return root


class RunDir:
    """One run's output directory.

    Args:
        root: the directory (``--out``); created by :meth:`start`, not before.
        run_id: the run's id (``TrainConfig.run_id``).
    """

    def __init__(self, root: str | os.PathLike[str], run_id: str) -> None:
        if not str(root).strip():  # Path("") would quietly mean the working directory
            raise SpecError(f"out: got {str(root)!r}, expected a directory path")
        self.root = Path(root)
        self.run_id = run_id
        self._metrics: IO[str] | None = None

    @property
    def checkpoints(self) -> Path:
        """The checkpoint root (``<out>/checkpoints``)."""
        return self.root / CHECKPOINTS

    def check(self, resume: bool) -> bool:
        """Check the directory can hold this run; return True when it already does.

        Touches nothing. Raises ``SpecError`` when ``--out`` holds another run,
        or holds this run and ``resume`` is False, or is a file.
        """
        check_out_dir(self.root)
        config = self.root / CONFIG
        if not config.exists():
            ours = [n for n in (METRICS, SUMMARY, CHECKPOINTS) if (self.root / n).exists()]
            if ours:
                raise SpecError(
                    f"out: got {str(self.root)!r}, which holds {ours[0]} but no {CONFIG}; "
                    "expected an empty directory or one written by `steplab train`"
                )
            return False
        try:
            found = json.loads(config.read_text(encoding="utf-8")).get("run_id")
            if not isinstance(found, str):
                raise ValueError("it has no run_id")
        except (OSError, ValueError, AttributeError) as exc:
            raise SpecError(
                f"out: {str(config)!r} is damaged ({_reason(exc)}); expected the config.json "
                f"of run {self.run_id!r} (move the directory aside to start over)"
            ) from None
        if found != self.run_id:
            raise SpecError(
                f"out: got {str(self.root)!r}, which holds run {found!r}, expected a new "
                f"directory or one holding run {self.run_id!r} (with --resume)"
            )
        if not resume:
            raise SpecError(
                f"out: got {str(self.root)!r}, which already holds run {self.run_id!r}; "
                "expected --resume to continue it, or another directory"
            )
        return True

    def start(self, config: dict[str, Any]) -> None:
        """Create the directory and write ``config.json`` (with ``run_id``)."""
        make_out_dir(self.root)
        atomic_write_json(self.root / CONFIG, {**config, "run_id": self.run_id})

    def read_summary(self) -> dict[str, Any] | None:
        """Return ``summary.json`` when the run already ended, else None."""
        path = self.root / SUMMARY
        if not path.exists():
            return None
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def open_metrics(self, keep_until: int) -> None:
        """Open ``metrics.jsonl`` for appending, first dropping rows with ``step > keep_until``.

        Rows cut short by a crash (not valid JSON) are dropped too.
        """
        path = self.root / METRICS
        rows: list[str] = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and int(row.get("step", -1)) <= keep_until:
                    rows.append(line)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, path)
        self._metrics = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def log(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl`` and flush it to the OS."""
        if self._metrics is not None:
            self._metrics.write(json.dumps(to_json_value(row), allow_nan=False) + "\n")
            self._metrics.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        atomic_write_json(self.root / SUMMARY, summary)

    def close(self) -> None:
        """Close ``metrics.jsonl``."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
