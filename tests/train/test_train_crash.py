"""Real crashes of ``steplab train --nproc 2`` (see ``crash_runs``): SIGKILL of the launcher.

The uninterrupted run is the reference for the resumed one; the two go side
by side in one module fixture, so their waits (start-up, rendezvous, exit)
overlap. The negative control and the rank killed mid-save are in
``test_train_crash_controls.py`` (another file, so ``make test`` can run it
on its other worker).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import crash_runs as runs
import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available() or sys.platform != "linux",
    reason="needs torch.distributed with gloo, on Linux (kill -9, /proc)")


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run and, beside it, the run whose launcher is killed, then resumed."""
    root = tmp_path_factory.mktemp("crash")
    whole_run = runs.start(root / "whole" / "hooks", root / "whole" / "run")
    resumed = runs.killed_and_resumed(root / "killed", runs.stalling(root / "killed"))
    summary, whole = runs.uninterrupted(root / "whole", whole_run)
    return {"root": root, "summary": summary, "whole": whole, "stdout": summary.pop("_stdout"),
            "resumed": resumed}


def test_resume_after_sigkill_of_the_launcher_is_bit_exact_at_world_size_2(
        crash: dict[str, Any]) -> None:
    resumed = crash["resumed"]
    assert resumed["ranks_died_with_launcher"]  # no rank trains on alone
    assert not resumed["summary_before"]  # the kill really was mid-run
    assert resumed["left"] == ["step-00000005", "step-00000010"]
    assert resumed["outcome"] == crash["whole"]
    assert resumed["outcome"]["rows"][:6] == resumed["rows_before"]  # steps 11-12 redone exactly
    assert crash["whole"]["steps"] == 24 and len(crash["whole"]["rows"]) >= 12


def test_nproc_run_prints_one_summary_with_the_world_and_only_rank_zero_writes(
        crash: dict[str, Any]) -> None:
    summary = crash["summary"]
    assert summary["world_size"] == 2 and summary["parallel"] == "fsdp"
    assert summary["global_batch_size"] == 16 and summary["per_rank_batch_size"] == 8
    assert crash["stdout"].count('"run_id"') == 1  # rank 0 alone prints
    run = crash["root"] / "whole" / "run"
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    steps = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(steps))  # one writer: no step logged twice


def test_nproc_rendezvous_and_every_listening_socket_are_on_127_0_0_1(
        crash: dict[str, Any]) -> None:
    """Item 6: torch's store listened on every interface; gloo on the host's address."""
    for rank in range(2):
        facts = json.loads((crash["root"] / "whole" / "hooks" / f"listen-rank{rank}.json")
                           .read_text())
        assert facts["master_addr"] == "127.0.0.1"
        assert facts["launcher"] == [f"127.0.0.1:{facts['master_port']}"]  # the store alone
        assert facts["rank"] and all(a.startswith("127.0.0.1:") for a in facts["rank"])
        assert facts["gloo_ifname"] in ("lo", "lo0")
