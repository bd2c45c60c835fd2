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


def _failures(*codes: int, stamps: tuple[int, ...] = ()) -> dict[int, ProcessFailure]:
    failures = {rank: ProcessFailure(rank, 100 + rank, code, "") for rank, code in enumerate(codes)}
    for rank, stamp in enumerate(stamps or (1000,) * len(codes)):
        failures[rank].timestamp = stamp  # torch stamps the whole second its poll noticed
    return failures


def test_a_rank_that_lost_its_peer_is_never_named_before_the_one_that_failed() -> None:
    """Rank 1 raised (exit 2); rank 0 saw its connection close and exited with code 3 in the
    same poll: the line names rank 1 (it named rank 0 once ranks exited at once)."""
    assert launch._first_failure(_failures(3, 2))[0] == 1
    assert launch._first_failure(_failures(3, -signal.SIGKILL))[0] == 1
    assert launch._first_failure(_failures(3, 2, stamps=(1000, 1001)))[0] == 1


def test_a_signal_death_comes_first_only_among_failures_noticed_in_the_same_second() -> None:
    """Rank 1 SIGKILLed mid-save, rank 0 exiting in the same second: rank 1. A rank that exited
    a poll earlier than one killed by a signal (the launcher's SIGKILL after its SIGTERM grace
    period, 30 s later) failed first: rank 0."""
    assert launch._first_failure(_failures(2, -signal.SIGKILL))[0] == 1
    assert launch._first_failure(_failures(2, -signal.SIGKILL, stamps=(1000, 1030)))[0] == 0


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
