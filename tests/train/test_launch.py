"""``steplab.train.launch`` without starting processes: which rank a failure names, the environment.

The launcher's real runs (kill -9, sockets on 127.0.0.1) are in ``test_train_crash.py``.
"""

from __future__ import annotations

import os
import signal

import pytest
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

import steplab.train.launch as launch


def test_the_failure_named_is_the_rank_that_died_not_the_one_the_launcher_stopped() -> None:
    """Rank 1 was SIGKILLed; the launcher then SIGTERMed rank 0: the line named rank 0."""
    failures = {0: ProcessFailure(0, 100, -signal.SIGTERM, ""),
                1: ProcessFailure(1, 101, -signal.SIGKILL, "")}
    rank, failure = launch._first_failure(failures)
    assert rank == 1 and launch._how(failure.exitcode) == "was killed by SIGKILL"
    both = {0: ProcessFailure(0, 100, 2, ""), 1: ProcessFailure(1, 101, 2, "")}
    assert launch._first_failure(both)[0] == 0  # the same failure on both: the lowest rank


def test_a_rank_killed_by_a_signal_comes_before_one_that_exited_in_the_same_second() -> None:
    """Rank 1 was SIGKILLed mid-save; rank 0 saw its peer's connection close and exited with
    code 2 within the same second (failure times are whole seconds): the line names rank 1."""
    failures = {0: ProcessFailure(0, 100, 2, ""), 1: ProcessFailure(1, 101, -signal.SIGKILL, "")}
    failures[0].timestamp = failures[1].timestamp
    assert launch._first_failure(failures)[0] == 1
    failures[0].timestamp -= 1  # even when the exit was seen a second earlier
    assert launch._first_failure(failures)[0] == 1


def test_the_launch_environment_points_gloo_at_loopback_and_is_undone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "mine")
    with launch._launch_environment():
        assert os.environ["GLOO_SOCKET_IFNAME"] in ("lo", "lo0")
        assert os.environ["NCCL_SOCKET_IFNAME"] == "mine"  # the user's choice stands
        assert os.environ["STEPLAB_LAUNCHER_PID"] == str(os.getpid())
    assert "GLOO_SOCKET_IFNAME" not in os.environ and "STEPLAB_LAUNCHER_PID" not in os.environ
    assert os.environ["NCCL_SOCKET_IFNAME"] == "mine"


def test_follow_launcher_does_nothing_outside_a_launched_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPLAB_LAUNCHER_PID", raising=False)
    launch.follow_launcher()  # returns; this process is not one launch() started
