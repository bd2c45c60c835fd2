"""Distributed training and checkpoint benchmark (issue 10).

1. Steps/s of ``steplab train`` on mnist1d-cnn with 1 and 2 processes at the
   same global batch (``steps_per_s`` from summary.json: the training loop
   only, launcher start-up excluded).
2. In 2 gloo processes with an FSDP2 model and Lookahead(AdamW) state:
   steplab's distributed save vs steplab's single-process save of the same
   state (one process, same tensors) vs torch DCP's own ``dcp.save`` of the
   same sharded state; and the time an async distributed save blocks the
   caller vs a blocking one. Medians of interleaved repeats; ratios only.

Usage: ``.venv/bin/python benchmarks/distributed.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from docblock import write_block
from rich.console import Console
from rich.table import Table
from torch import nn

from steplab import checkpoint
from steplab.optim import Lookahead
from steplab.state.sharded import save_sharded


def _model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width + 1))


def _optimizer(model: nn.Module) -> Lookahead:
    opt = Lookahead(torch.optim.AdamW(model.parameters(), lr=1e-3), k=5)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, model[0].in_features)).pow(2).mean().backward()
        opt.step()
    return opt


def _save_worker(rank: int, port: int, width: int, repeats: int, out: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = _model(width)
    fully_shard(model[0])
    fully_shard(model[2])
    fully_shard(model)
    opt = _optimizer(model)
    root = Path(out)
    times: dict[str, list[float]] = {"sharded": [], "dcp": [], "async_blocked": []}
    for i in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        save_sharded(root / f"s{i}", model=model, optimizer=opt, step=i)
        times["sharded"].append(time.perf_counter() - start)
        dist.barrier()
        msd, osd = get_state_dict(model, opt)
        start = time.perf_counter()
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(root / f"d{i}"))
        times["dcp"].append(time.perf_counter() - start)
        dist.barrier()
        start = time.perf_counter()
        pending = save_sharded(root / f"a{i}", model=model, optimizer=opt, step=i,
                               blocking=False)
        times["async_blocked"].append(time.perf_counter() - start)
        assert not isinstance(pending, Path)
        pending.wait()
    if rank == 0:
        (root / "times.json").write_text(json.dumps(times))
    dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def save_times(width: int, repeats: int) -> dict[str, float]:
    """Median seconds of each kind of save (the single-process one measured here)."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_save_worker, args=(_port(), width, repeats, out), nprocs=2)
        times = json.loads((Path(out) / "times.json").read_text())
        model = _model(width)
        opt = _optimizer(model)
        times["single"] = []
        for i in range(repeats):
            start = time.perf_counter()
            checkpoint.save(Path(out) / f"one{i}", model=model, optimizer=opt, step=i)
            times["single"].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def steps_per_s(nproc: int, steps: int, threads: int | None = None) -> float:
    """``steps_per_s`` of one mnist1d-cnn run at global batch 128 on ``nproc`` processes.

    torch's launcher gives each process one intra-op thread (``OMP_NUM_THREADS=1``);
    ``threads`` sets that for the single process too (None: torch's default, all cores).
    """
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "steplab", "train", "--task", "mnist1d-cnn", "--steps",
           str(steps), "--batch-size", "128", "--no-monitor", "--no-tensorboard", "--quiet",
           "--json", "--eval-every", str(steps), "--nproc", str(nproc)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    return float(summary["steps_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    steps, repeats, width = (100, 3, 1024) if args.quick else (300, 5, 2048)
    runs: dict[str, list[float]] = {"1": [], "1x1": [], "2": []}
    for _ in range(repeats):  # interleaved, so load from other work hits all alike
        runs["1"].append(steps_per_s(1, steps))
        runs["1x1"].append(steps_per_s(1, steps, threads=1))
        runs["2"].append(steps_per_s(2, steps))
    speed = {k: statistics.median(v) for k, v in runs.items()}
    rows = _rows(speed, save_times(width, repeats))
    console = Console()
    table = Table(title=f"distributed (2 cores, gloo): {time.strftime('%Y-%m-%d')}")
    for col in ("measure", "value", "ratio", "target"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    state_mb = 4 * (2 * width * width + width + 1) * 4 / 1e6
    note = (f"state: {state_mb:.0f} MB (weights, exp_avg, exp_avg_sq, slow_param);"
            f" {repeats} repeats, medians")
    console.print(note)
    command = "benchmarks/distributed.py" + (" --quick" if args.quick else "")
    body = "\n".join([
        f"`.venv/bin/python {command}`, {time.strftime('%Y-%m-%d')}; {note}.", "",
        "| measure | value | ratio | target |", "| --- | --- | --- | --- |",
        *(f"| {' | '.join(r)} |" for r in rows)])
    write_block("benchmarks.md", "distributed", "benchmarks/distributed.py", body)


def _rows(speed: dict[str, float], saves: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """The table: training speed at 1 and 2 processes, then the saves, with their targets."""
    single, sharded = saves["single"], saves["sharded"]

    def verdict(ratio: float, target: float) -> str:
        return f"<= {target}x: {'**yes**' if ratio <= target else '**no**'}"

    return [
        ("mnist1d-cnn, 1 process, torch's default threads", f"{speed['1']:.1f} steps/s", "", ""),
        ("mnist1d-cnn, 1 process, 1 thread", f"{speed['1x1']:.1f} steps/s", "1.00x", ""),
        ("mnist1d-cnn, 2 processes x 1 thread (DDP, torch's launcher)",
         f"{speed['2']:.1f} steps/s", f"{speed['2'] / speed['1x1']:.2f}x", "report"),
        ("steplab single-process save of the same state", f"{single * 1e3:.0f} ms", "1.00x", ""),
        ("steplab distributed save (2 ranks)", f"{sharded * 1e3:.0f} ms",
         f"{sharded / single:.2f}x single", verdict(sharded / single, 1.5)),
        ("torch DCP `dcp.save` (2 ranks)", f"{saves['dcp'] * 1e3:.0f} ms",
         f"ours {sharded / saves['dcp']:.2f}x DCP", verdict(sharded / saves["dcp"], 1.2)),
        ("async distributed save, time the caller is blocked",
         f"{saves['async_blocked'] * 1e3:.0f} ms",
         f"{saves['async_blocked'] / sharded:.2f}x blocking",
         verdict(saves["async_blocked"] / sharded, 0.25)),
    ]


if __name__ == "__main__":
    main()
