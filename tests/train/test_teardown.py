"""A rank that joined a gloo group ends with its own exit code, not SIGABRT (train.teardown).

Regression: one full test run in three lost a 2-rank run to "terminate called
without an active exception" after the run had finished (gloo worker threads
releasing tensors during the interpreter's teardown). ``teardown_rank.py``
provokes the race; unremedied, 3 of 8 such ranks aborted (in another run 5 of 20).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

_RANK = Path(__file__).with_name("teardown_rank.py")
_LAUNCHES = 4  # 8 ranks per remedy; unremedied, all 8 survive with probability ~0.1


@pytest.mark.parametrize("mode", ["exit_process", "hook"])
def test_ranks_that_end_mid_release_exit_zero(mode: str, tmp_path: Path) -> None:
    failures = []
    for launch in range(_LAUNCHES):
        store = tmp_path / f"store-{launch}"
        ranks = [subprocess.Popen([sys.executable, str(_RANK), str(rank), str(store), mode],
                                  stderr=subprocess.PIPE, text=True) for rank in range(2)]
        for rank, proc in enumerate(ranks):
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                for other in ranks:
                    other.kill()
                raise
            if proc.returncode != 0:
                failures.append(f"launch {launch} rank {rank}: exit {proc.returncode}: "
                                f"{err[-300:]}")
    assert not failures, "\n".join(failures)


_MAIN = """
import runpy, sys
import steplab.cli
from steplab.train import teardown

teardown.mark_joined()  # as join() does in a rank (no group needed for the exit path)
how = sys.argv[1]

def main(argv=None):
    if how == "return":
        return 5
    if how == "raise":
        raise ValueError("a bug")
    raise SystemExit(None if how == "none" else int(how))

steplab.cli.main = main
runpy.run_module("steplab", run_name="__main__")
"""


@pytest.mark.parametrize(("how", "code"), [("return", 5), ("3", 3), ("none", 0), ("raise", 1)])
def test_python_m_steplab_in_a_rank_keeps_the_exit_code(how: str, code: int) -> None:
    """`python -m steplab` in a process that joined a group ends through exit_process with the
    code it would have had: main's return value, sys.exit's code, 1 and a traceback for a bug."""
    proc = subprocess.run([sys.executable, "-c", _MAIN, how], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == code, proc.stderr
    assert ("ValueError: a bug" in proc.stderr) == (how == "raise")
