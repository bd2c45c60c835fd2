"""The runs of the crash tests: ``steplab train --nproc 2`` started, stalled, killed, resumed.

Each run is the real CLI: torch's launcher and 2 gloo ranks on this machine,
training ``tiny-dropout`` (dropout, so every rank's random streams matter)
under FSDP2 with sharded checkpoints. ``crashsite/sitecustomize.py`` (on the
runs' ``PYTHONPATH``) registers the task and holds a run at a chosen point,
so the SIGKILL lands where a test says; the kill itself is a real ``kill -9``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ARGS = ["--task", "tiny-dropout", "--optimizer", "lookahead(adamw, k=3)", "--steps", "24",
        "--batch-size", "16", "--parallel", "fsdp", "--checkpoint-every", "5", "--quiet",
        "--json", "--no-tensorboard", "--no-monitor", "--nproc", "2"]
STALL = 14  # killed before training step 14: after the step-10 checkpoint and the step-12
#              evaluation, mid-epoch 0 (16 steps an epoch)


def start(hooks: Path, out: Path, resume: bool = False, **env: str) -> subprocess.Popen[str]:
    """Start the run in a process group of its own (the launcher leads it)."""
    hooks.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "STEPLAB_CRASH_DIR": str(hooks),
               "PYTHONPATH": os.pathsep.join([str(HERE / "crashsite"), str(HERE),
                                              *filter(None, [os.environ.get("PYTHONPATH")])]),
               **env}
    command = [sys.executable, "-m", "steplab", "train", *ARGS, "--out", str(out)]
    return subprocess.Popen([*command, *(["--resume"] if resume else [])], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait for the run to end: its exit code, stdout and stderr."""
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


def wait_for(*flags: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until every flag file exists (the run reached its stall point)."""
    deadline = time.monotonic() + 240
    while not all(f.exists() for f in flags):
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {flags}: {proc.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, f"never reached {flags}"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone(hooks: Path) -> bool:
    """Wait (up to 20 s) until the ranks' processes have died; True when they have."""
    pids = [int((hooks / f"pid-rank{r}").read_text()) for r in range(2)]
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


def parse_summary(stdout: str) -> dict[str, Any]:
    """The summary ``--json`` printed."""
    found: dict[str, Any] = json.loads(stdout[stdout.index("{"):])
    return found


def outcome(run: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """What must be bit-equal: final weights, final and best metrics, every logged row."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"sha": summary["final_params_sha256"], "steps": summary["steps"],
            "metrics": summary["metrics"], "best": summary["best_metrics"],
            "rows": [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]}


def uninterrupted(root: Path, proc: subprocess.Popen[str]) -> tuple[dict[str, Any],
                                                                     dict[str, Any]]:
    """Wait for an uninterrupted run: its summary (with ``_stdout``) and its outcome."""
    code, out, err = finish(proc)
    assert code == 0, err[-2000:]
    summary = parse_summary(out)
    return {**summary, "_stdout": out}, outcome(root / "run", summary)


def stalling(root: Path, **env: str) -> subprocess.Popen[str]:
    """Start a run that stops before step :data:`STALL` and waits there to be killed."""
    return start(root / "hooks", root / "run", STEPLAB_CRASH_STALL_AT=str(STALL), **env)


def killed_and_resumed(root: Path, proc: subprocess.Popen[str], **env: str) -> dict[str, Any]:
    """kill -9 the launcher's process group mid-run, then ``--resume``; the resumed outcome."""
    hooks, run = root / "hooks", root / "run"
    wait_for(hooks / "stalled-rank0", hooks / "stalled-rank1", proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    facts: dict[str, Any] = {"ranks_died_with_launcher": gone(hooks)}
    facts["left"] = sorted(p.name for p in (run / "checkpoints").iterdir())
    facts["summary_before"] = (run / "summary.json").exists()
    facts["rows_before"] = outcome(run, {"final_params_sha256": None, "steps": None,
                                         "metrics": None, "best_metrics": None})["rows"]
    code, out, err = finish(start(root / "hooks-resume", run, resume=True, **env))
    assert code == 0, err[-2000:]
    facts["outcome"] = outcome(run, parse_summary(out))
    return facts


def kill_rank_mid_save(root: Path, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Rank 1 stalled halfway through its file of the step-10 save: kill -9 it; what is left."""
    hooks, run = root / "hooks", root / "run"
    wait_for(hooks / "stalled-save", proc=proc)
    tmp = [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-step-00000010")]
    partial = len(tmp) == 1 and (tmp[0] / "rank-00001.safetensors").exists()
    os.kill(int((hooks / "pid-rank1").read_text()), signal.SIGKILL)
    code, _, err = finish(proc)
    return {"partial": partial, "code": code, "err": err, "run": run}
