"""Audit item 9: a task registered in the parent reaches the workers, or the study stops at once.

Before, workers did not have it: every run failed with "SpecError: task 'xor-mlp' ..." and
the study returned a report of NaN rows. The docs' snippet died with BrokenProcessPool.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from steplab.errors import SpecError
from steplab.study.compare import run_study, shipped_tasks
from steplab.study.spec import StudySpec
from steplab.tasks import get_task, register_task

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(optimizers=("adam", "sgd"), seeds=2, budget=1, steps=20, eval_every=10,
            trajectories=())

NOTEBOOK = """
import copy, json, sys
from steplab.study import StudySpec, run_study
from steplab.tasks import get_task, register_task

class NotebookTask(type(get_task("mnist1d-logreg"))):  # defined in __main__, as in a notebook
    pass

task = copy.copy(get_task("mnist1d-logreg"))
task.__class__ = NotebookTask
task.name = "xor-logreg"
register_task(task)
spec = StudySpec(tasks=("xor-logreg",), optimizers=("adam", "sgd"), seeds=2, budget=1,
                 steps=20, eval_every=10, trajectories=())
result = run_study(spec, sys.argv[1], workers=1, progress=False)
print(json.dumps([r.final.mean for r in result.analysis.rows]))
"""


def test_a_task_defined_in_python_c_runs_in_the_workers(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NOTEBOOK, str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    finals = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(finals) == 2 and all(0.0 < f <= 1.0 for f in finals)


def test_the_docs_snippet_runs_as_written_in_a_script(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "compare.md").read_text()
    code = re.search(r"<!-- snippet: run_study -->\n```python\n(.*?)```", text, re.S)
    assert code is not None
    script = tmp_path / "study_script.py"
    script.write_text(code.group(1))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "report.html" in done.stdout and "sgd vs adam final" in done.stdout


class _Unpicklable:
    def __init__(self) -> None:
        base = get_task("mnist1d-logreg")
        self.__dict__.update(base.__dict__)
        self.name = "locked-task"
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(get_task("mnist1d-logreg"), name)


def test_an_unpicklable_registered_task_fails_at_once_with_one_line(tmp_path: Path) -> None:
    register_task(_Unpicklable(), replace=True)  # type: ignore[arg-type]
    spec = StudySpec(tasks=("locked-task",), **TINY)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="'locked-task' registered with register_task") as err:
        run_study(spec, tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


class _FailsInWorkers(type(get_task("mnist1d-logreg"))):  # type: ignore[misc]
    """Unpickles only in the process that made it, like a class a worker cannot import."""

    def __reduce__(self) -> Any:
        import os

        return (_load_in, (os.getpid(), self.__dict__))


def _load_in(pid: int, state: dict[str, Any]) -> Any:
    import os

    if os.getpid() != pid:
        raise ModuleNotFoundError("No module named 'my_notebook_helpers'")
    task = object.__new__(_FailsInWorkers)
    task.__dict__.update(state)
    return task


def test_a_task_workers_cannot_load_stops_the_study_with_one_line(tmp_path: Path) -> None:
    import copy

    task = copy.copy(get_task("mnist1d-logreg"))
    task.__class__ = _FailsInWorkers
    task.name = "unloadable-task"
    register_task(task, replace=True)
    spec = StudySpec(tasks=("unloadable-task",), **TINY)  # type: ignore[arg-type]
    assert shipped_tasks(spec) is not None
    with pytest.raises(SpecError, match="could not be loaded in a worker process") as err:
        run_study(spec, tmp_path / "out", workers=1, progress=False)
    assert "\n" not in str(err.value) and "my_notebook_helpers" in str(err.value)
    assert not list((tmp_path / "out").glob("report.*"))  # never a report of NaN rows
