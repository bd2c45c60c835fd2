"""A background writer that runs at most one save at a time.

The training thread stages a checkpoint (tensors copied to CPU buffers), then
hands the write to this writer and goes on. A new save first waits for the
one in flight, so at most one copy of the state is staged at once. An error
in the background is kept and raised by the next call (``submit``, ``wait``
or ``check``), never lost.

>>> from pathlib import Path
>>> writer = BackgroundWriter()
>>> pending = writer.submit(lambda: Path("done"))
>>> pending.wait()
PosixPath('done')
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["BackgroundWriter", "PendingSave"]


class PendingSave:
    """A save running in the background; :meth:`wait` returns its path or raises its error."""

    def __init__(self, job: Callable[[], Path]) -> None:
        self._job = job
        self._path: Path | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="steplab-checkpoint", daemon=False)

    def _run(self) -> None:
        try:
            self._path = self._job()
        except BaseException as exc:  # kept and re-raised on the caller's thread
            self._error = exc

    def start(self) -> PendingSave:
        """Start the write thread."""
        self._thread.start()
        return self

    def done(self) -> bool:
        """True once the write has finished (successfully or not)."""
        return not self._thread.is_alive()

    def wait(self) -> Path:
        """Block until written; return the checkpoint path or raise the write's error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._path is not None
        return self._path


class BackgroundWriter:
    """Runs save jobs on a background thread, one at a time; errors surface on the next call."""

    def __init__(self) -> None:
        self._pending: PendingSave | None = None
        self._lock = threading.Lock()

    def wait(self) -> Path | None:
        """Wait for the save in flight; return its path, raise its error (once)."""
        with self._lock:
            pending, self._pending = self._pending, None
        return None if pending is None else pending.wait()

    def check(self) -> None:
        """Raise the error of a finished background save, if any, without blocking."""
        with self._lock:
            pending = self._pending
            if pending is None or not pending.done():
                return
            self._pending = None
        pending.wait()

    def submit(self, job: Callable[[], Path]) -> PendingSave:
        """Wait for the previous save (raising its error), then start ``job`` in the background."""
        self.wait()
        pending = PendingSave(job).start()
        with self._lock:
            self._pending = pending
        return pending
