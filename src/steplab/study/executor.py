"""Run training runs in parallel: a local process pool or Ray, one function for both.

Every run is ``execute_run(config, run_dir)`` in a worker with one torch
thread. The local pool uses the ``forkserver`` start method (``spawn`` where
that is missing) so that no worker inherits the parent's torch threads; Ray
runs the same function as a remote task with one CPU. :func:`run_jobs` keeps
exactly as many runs in flight as there are workers, so the progress display
knows what each worker is doing, and lets the caller add runs as results
arrive (the seed runs of an optimizer follow its search).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from steplab.errors import SpecError

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "RunJob",
    "execute_run",
    "make_executor",
    "run_jobs",
]


#: modules the fork server imports once (torch._dynamo alone takes seconds)
_PRELOAD = ["torch", "torch._dynamo", "steplab.train", "steplab.tasks", "steplab.optim"]


@dataclass(frozen=True)
class RunJob:
    """One training run to execute.

    Attributes:
        config: ``TrainConfig.to_dict()`` of the run.
        run_dir: its content-addressed directory ``<out>/runs/<run_id>``.
        label: what a person sees in the progress display.
        tag: free data the scheduler gives back with the result.
        tasks: cloudpickled user tasks (``register_task`` in the parent) the
            worker registers before training (None: built-in tasks only).
    """

    config: dict[str, Any]
    run_dir: str
    label: str
    tag: tuple[str, ...] = field(default=())
    tasks: bytes | None = None


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _register_shipped(tasks: bytes) -> None:
    """Register the parent's user tasks here (bytes the parent made for this study)."""
    import cloudpickle

    from steplab.tasks import register_task

    for task in cloudpickle.loads(tasks):
        register_task(task, replace=True)


def _finished(path: Path) -> bool:
    """The run directory holds a readable ``summary.json``."""
    try:
        json.loads((path / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def execute_run(
    config: dict[str, Any], run_dir: str, tasks: bytes | None = None
) -> dict[str, Any]:
    """Train one run in this process and return its summary.

    A directory left by an interrupted run (no readable ``summary.json``) is cleared
    and the run starts over. A diverged run returns its summary like any
    other; an exception becomes ``{"status": "failed", "error": ...}`` so one
    broken run never stops a study (nothing is cached for it). A user task
    that cannot be loaded here is different: the summary carries ``"fatal"``
    and the study stops at once (every run would fail the same way).

    Args:
        config: ``TrainConfig.to_dict()``.
        run_dir: output directory of the run.
        tasks: user tasks from the parent process (:class:`RunJob`'s ``tasks``).

    Returns:
        The run's ``summary.json`` content plus ``cpu_seconds`` (CPU time of the run).
    """
    import torch

    from steplab.train import TrainConfig, fit

    if tasks is not None:
        try:
            _register_shipped(tasks)
        except Exception as exc:  # reported to the parent as one line, see the docstring
            return {"status": "failed", "fatal": True, "error": (
                f"task: a task registered with register_task could not be loaded in a worker "
                f"process ({type(exc).__name__}: {exc}); expected it defined in an importable "
                "module or in the script/notebook that calls run_study"
            )}
    torch.set_num_threads(1)
    path = Path(run_dir)
    if path.exists() and not _finished(path):
        shutil.rmtree(path)
    cpu = time.process_time()
    try:
        result = fit(TrainConfig.from_dict(config), path, resume=False, progress=False)
    except Exception as exc:  # a failed run is reported, not raised: see the docstring
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    # CPU seconds of the whole run (evaluations and writing included), for the benchmarks
    return {**result.summary, "cpu_seconds": time.process_time() - cpu}


class Executor(Protocol):
    """Where runs execute: ``capacity`` runs at a time."""

    capacity: int

    def submit(self, job: RunJob) -> Any:
        """Start ``job``; return a handle."""

    def wait_any(self, handles: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
        """Block until at least one handle is done; return ``(handle, summary)`` pairs."""

    def close(self, cancel: bool = False) -> None:
        """Release the workers."""


class LocalExecutor:
    """A process pool on this machine, one torch thread per worker.

    Args:
        workers: number of processes (None: all cores).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.capacity = max(1, workers or os.cpu_count() or 1)
        method = (
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # imported once in the fork server, so every worker starts warm
            context.set_forkserver_preload(_PRELOAD)
        self._pool = ProcessPoolExecutor(
            self.capacity, mp_context=context, initializer=_worker_init
        )

    def submit(self, job: RunJob) -> Future[dict[str, Any]]:
        """Start ``job`` in a worker process."""
        return self._pool.submit(execute_run, job.config, job.run_dir, job.tasks)

    def wait_any(self, handles: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
        """Wait for the first finished runs; a dead worker gives a ``failed`` summary."""
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            try:
                out.append((fut, fut.result()))
            except BrokenProcessPool as exc:
                out.append((fut, {"status": "failed", "fatal": True, "error": (
                    f"workers: a worker process died ({exc}); when run_study is called from a "
                    "script, expected the call under 'if __name__ == \"__main__\":' (workers "
                    "import the script), and enough memory for every worker"
                )}))
        return out

    def close(self, cancel: bool = False) -> None:
        """Shut the pool down (cancelling queued runs when ``cancel``)."""
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


class RayExecutor:
    """Ray remote tasks with one CPU each, on a local Ray or the cluster at ``address``.

    Args:
        address: an existing cluster (None: start a local Ray on demand).
        workers: CPUs of a local Ray (None: all cores).
    """

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        from steplab.study.ray_cluster import ensure_ray

        self._ray = ensure_ray(address, workers)
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        self.capacity = max(1, min(cpus, workers) if workers else cpus)
        self._remote = self._ray.remote(num_cpus=1)(execute_run)

    def submit(self, job: RunJob) -> Any:
        """Start ``job`` as a Ray task."""
        return self._remote.remote(job.config, job.run_dir, job.tasks)

    def wait_any(self, handles: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
        """Wait for the first finished Ray tasks."""
        ready, _ = self._ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as exc:  # a lost worker or node is a failed run, not a crash
                out.append((ref, {"status": "failed", "error": f"ray: {exc}"}))
        return out

    def close(self, cancel: bool = False) -> None:
        """Leave Ray running (it is shared with the rest of the process)."""


def make_executor(kind: str, workers: int | None = None, address: str | None = None) -> Executor:
    """Build the executor named ``kind`` (``"local"`` or ``"ray"``).

    Raises:
        SpecError: an unknown kind or a bad worker count.
    """
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise SpecError(f"workers: got {workers!r}, expected an integer >= 1")
    if kind == "local":
        if address:
            raise SpecError(f"address: got {address!r}, expected it only with executor 'ray'")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address, workers)
    raise SpecError(f"executor: got {kind!r}, expected 'local' or 'ray'")


OnDone = Callable[[RunJob, dict[str, Any]], Iterable[RunJob]]


def run_jobs(
    executor: Executor, jobs: Iterable[RunJob], on_done: OnDone, total: int, progress: bool = True
) -> None:
    """Execute ``jobs`` (and those ``on_done`` returns) with ``executor.capacity`` in flight.

    Args:
        executor: where runs execute.
        jobs: the runs known at the start, longest first for a short makespan.
        on_done: called with each finished job and its summary; returns new jobs,
            which go to the front of the queue.
        total: the number of runs expected in all (for the progress bar).
        progress: show the overall bar and what each worker is doing.
    """
    queue = list(jobs)
    running: dict[Any, tuple[RunJob, int]] = {}
    free_slots = list(range(executor.capacity))
    with ProgressDisplay(total, executor.capacity, enabled=progress) as display:
        try:
            while queue or running:
                while queue and free_slots:
                    job, slot = queue.pop(0), free_slots.pop(0)
                    running[executor.submit(job)] = (job, slot)
                    display.start(slot, job.label)
                for handle, summary in executor.wait_any(list(running)):
                    job, slot = running.pop(handle)
                    free_slots.append(slot)
                    free_slots.sort()
                    display.finish(slot, summary.get("status", "failed"))
                    queue[0:0] = on_done(job, summary)  # follow-ups first: they are the long runs
        except BaseException:
            executor.close(cancel=True)
            raise
    executor.close()


class ProgressDisplay:
    """An overall bar (runs done, ETA) and one line per worker saying what it runs.

    Args:
        total: runs to execute.
        workers: number of worker lines.
        enabled: False shows nothing (tests, ``--quiet``).
    """

    def __init__(self, total: int, workers: int, enabled: bool = True) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not enabled,
            transient=False,
        )
        self._overall = self._progress.add_task("runs", total=total)
        self._slots = [
            self._progress.add_task(f"  worker {i + 1}: idle", total=None, start=False)
            for i in range(workers)
        ]
        self._counts: dict[str, int] = {}

    def __enter__(self) -> ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def start(self, slot: int, label: str) -> None:
        """Show that worker ``slot`` now runs ``label``."""
        task = self._slots[slot]
        self._progress.reset(task, total=None, description=f"  worker {slot + 1}: {label}")
        self._progress.start_task(task)

    def finish(self, slot: int, status: str) -> None:
        """Count a finished run of worker ``slot``."""
        self._counts[status] = self._counts.get(status, 0) + 1
        tally = ", ".join(f"{n} {s}" for s, n in sorted(self._counts.items()))
        self._progress.update(self._overall, advance=1, description=f"runs ({tally})")
        self._progress.update(self._slots[slot], description=f"  worker {slot + 1}: idle")
