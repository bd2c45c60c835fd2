"""Benchmark steplab checkpoints against torch.save/torch.load and raw safetensors.

The state is a model of about 100M float32 parameters (``--quick``: 10M) with
AdamW state (exp_avg, exp_avg_sq): about 1.2 GB (120 MB). In one run, with
interleaved repeats and medians, it times:

- save: ``steplab.checkpoint.save`` (CRC-32 checksums, fsync, atomic rename)
  vs ``torch.save`` vs ``safetensors.torch.save_file``, with and without an
  fsync of the file: a durable save is the fair comparison for an atomic
  checkpoint, and both ratios are printed;
- load: ``steplab.checkpoint.load`` (with and without checksum verification)
  into a fresh AdamW, vs ``torch.load(weights_only=True)`` +
  ``load_state_dict`` vs ``load_file`` + ``load_state_dict`` into the same
  kind of fresh optimizer (the fair baseline: both must hand the optimizer
  its state) vs ``load_file`` + copying into existing model and optimizer
  tensors vs ``load_file`` alone. Note that ``load_file`` maps the file
  lazily, and an optimizer's ``load_state_dict`` keeps tensors that already
  have the parameter's dtype and device, so in the ``load_state_dict``
  baseline the optimizer state stays file-backed and is read only when
  first touched (the model's tensors are copied): it reads a third of the
  bytes up front. Ratios against it and against ``load_file`` alone are both
  printed;
- resume: each load above (steplab, ``load_file`` + ``load_state_dict``)
  followed by one in-place write to every optimizer state tensor, as the
  first training step after a resume does: the lazily mapped baseline pays
  its deferred page faults and copy-on-write copies there;
- the time the calling thread is blocked by ``Checkpointer.save(blocking=False)``,
  for the first save (staging buffers allocated) and later ones (reused);
- peak extra memory (VmHWM minus RSS before, in a fresh subprocess each, peak
  reset through ``/proc/self/clear_refs``) per operation, over the state size.
  VmHWM also counts file pages mapped while reading (safetensors' load_file,
  steplab's hash verification): page cache, shared and reclaimable, not
  allocations; ``load: steplab, verify=False`` shows the allocations alone.

Ratios are against the strongest baseline measured in the same run.

    .venv/bin/python benchmarks/checkpoint.py [--quick] [--repeats N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file
from torch import nn

from steplab import checkpoint


def build(n_params: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A model of ``n_params`` float32 parameters in 8 tensors, with one AdamW step taken."""
    torch.manual_seed(0)
    model = nn.ParameterList([nn.Parameter(torch.randn(n_params // 8)) for _ in range(8)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    for p in model.parameters():
        p.grad = None
    return model, opt


def fresh_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """A new AdamW with no state, as a resumed run builds before loading."""
    return torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)


def flat_tensors(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The same tensors as one flat dict, for the raw safetensors baseline."""
    out = {f"model/{k}": v for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        for key, value in opt.state[p].items():
            out[f"optim/{i}/{key}"] = value
    return out


def state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes of all tensors a checkpoint holds."""
    return sum(t.numel() * t.element_size() for t in flat_tensors(model, opt).values())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def first_write(opt: torch.optim.Optimizer) -> None:
    """Write every optimizer state tensor once, as the first step after a resume does.

    Lazily mapped state (``load_file``) pays its page faults and copy-on-write
    copies here; state read eagerly has paid them already.
    """
    with torch.no_grad():
        for state in opt.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.dim():
                    value.mul_(1.0)


def operations(model: nn.Module, opt: torch.optim.Optimizer,
               work: Path) -> dict[str, Callable[[], object]]:
    """Each measured operation as a zero-argument callable (save ops first)."""
    flat = flat_tensors(model, opt)
    ours, pt, st = work / "ours", work / "state.pt", work / "state.safetensors"

    def torch_load() -> None:
        loaded = torch.load(pt, weights_only=True)
        model.load_state_dict(loaded["model"])
        fresh_optimizer(model).load_state_dict(loaded["optim"])

    def safetensors_load_state_dict() -> torch.optim.Optimizer:
        """load_file, then the model's and a fresh optimizer's own load_state_dict."""
        loaded = load_file(st)
        model.load_state_dict({k: loaded[f"model/{k}"] for k in model.state_dict()})
        fresh = fresh_optimizer(model)
        groups = opt.state_dict()["param_groups"]
        state = {i: {key: loaded[f"optim/{i}/{key}"] for key in opt.state[p]}
                 for i, p in enumerate(model.parameters())}
        fresh.load_state_dict({"state": state, "param_groups": groups})
        return fresh

    def steplab_load(verify: bool = True) -> torch.optim.Optimizer:
        fresh = fresh_optimizer(model)
        checkpoint.load(ours, model=model, optimizer=fresh, verify=verify)
        return fresh

    def safetensors_load() -> None:
        """load_file maps the file lazily: copy into the live tensors, as a resume must."""
        loaded = load_file(st)
        with torch.no_grad():
            for key, tensor in flat.items():
                tensor.copy_(loaded[key])

    def safetensors_fsync() -> None:
        save_file(flat, st)
        _fsync_file(st)

    return {
        "save: steplab": lambda: checkpoint.save(ours, model=model, optimizer=opt),
        "save: torch.save": lambda: torch.save({"model": model.state_dict(),
                                                "optim": opt.state_dict()}, pt),
        "save: safetensors": lambda: save_file(flat, st),
        "save: safetensors + fsync": safetensors_fsync,
        "load: steplab": steplab_load,
        "load: steplab, verify=False": lambda: steplab_load(verify=False),
        "load: torch.load + load_state_dict": torch_load,
        "load: safetensors": safetensors_load_state_dict,
        "load: load_file + copy into existing tensors": safetensors_load,
        "load: load_file only (lazy)": lambda: load_file(st),
        "resume: steplab": lambda: first_write(steplab_load()),
        "resume: steplab, verify=False": lambda: first_write(steplab_load(verify=False)),
        "resume: safetensors": lambda: first_write(safetensors_load_state_dict()),
    }


def blocked_times(model: nn.Module, opt: torch.optim.Optimizer, work: Path,
                  saves: int) -> tuple[float, list[float], float]:
    """Seconds the caller is blocked by ``Checkpointer.save(blocking=False)``.

    Returns the first save's (staging buffers allocated: fresh pages fault),
    the later ones' (buffers reused), and the median time until written.
    """
    ckpt = checkpoint.Checkpointer(work / "async", every=1, keep_last=1)
    blocked, written = [], []
    for step in range(saves):
        start = time.perf_counter()
        ckpt.save(step, model=model, optimizer=opt, blocking=False)
        blocked.append(time.perf_counter() - start)
        ckpt.wait()
        written.append(time.perf_counter() - start)
    ckpt.close()
    return blocked[0], blocked[1:], statistics.median(written)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def peak_memory_child(n_params: int, op: str, work: str) -> None:
    """In a fresh process: build the state, reset the peak, run ``op``, print extra bytes."""
    model, opt = build(n_params)
    ops = operations(model, opt, Path(work))
    ops["save: steplab, blocking=False"] = lambda: checkpoint.save(
        Path(work) / "async-mem", model=model, optimizer=opt, blocking=False).wait()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    ops[op]()
    print(json.dumps({"extra": (_rss_kib("VmHWM") - before) * 1024}))


def peak_memory(n_params: int, op: str, work: Path) -> int:
    """Extra peak RSS (bytes) of ``op``, measured in a subprocess."""
    out = subprocess.run([sys.executable, __file__, "--child", op, "--params", str(n_params),
                          "--dir", str(work)], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["extra"])


def _table(title: str, rows: list[tuple[str, float, str]], unit: str,
           headers: tuple[str, ...] = ("ratio",)) -> Table:
    table = Table(title=title)
    table.add_column("operation")
    table.add_column(unit, justify="right")
    for header in headers:
        table.add_column(header, justify="right")
    for name, value, ratios in rows:
        table.add_row(name, f"{value:.3f}", *ratios.split("|"))
    return table


def main() -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10M parameters instead of 100M")
    parser.add_argument("--params", type=int, default=None, help="parameter count override")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per operation")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_params = args.params or (10_000_000 if args.quick else 100_000_000)
    if args.child:
        peak_memory_child(n_params, args.child, args.dir)
        return
    work = Path(tempfile.mkdtemp(prefix="steplab-bench-", dir=args.dir))
    try:
        run(n_params, args.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(n_params: int, repeats: int, work: Path) -> None:
    """Measure and print everything for a state of ``n_params`` parameters."""
    console = Console()
    model, opt = build(n_params)
    size = state_bytes(model, opt)
    console.print(f"state: {n_params / 1e6:.0f}M parameters + AdamW state = {size / 2**20:.0f} MiB;"
                  f" torch {torch.__version__}, {os.cpu_count()} CPUs, {repeats} repeats")
    ops = operations(model, opt, work)
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeats):  # interleaved: each repeat runs every operation once
        for name, fn in ops.items():
            times[name].append(_timed(fn))
    med = {name: statistics.median(v) for name, v in times.items()}
    for kind, bases in (("save", ("save: safetensors + fsync", "save: safetensors")),
                        ("load", ("load: safetensors", "load: load_file only (lazy)")),
                        ("resume", ("resume: safetensors",))):
        rows = [(n, t, "|".join(f"{t / med[b]:.2f}x" for b in bases))
                for n, t in med.items() if n.startswith(kind)]
        console.print(_table(f"{kind} time (median of {repeats}, s)", rows, "seconds",
                             tuple(f"vs {b.split(': ')[1]}" for b in bases)))
    save_s = med["save: steplab"]
    first, later, written = blocked_times(model, opt, work, repeats + 1)
    console.print(_table("Checkpointer.save(blocking=False); ratio vs a blocking save", [
        ("caller blocked, first save", first, f"{first / save_s:.2f}x"),
        ("caller blocked, later saves", statistics.median(later),
         f"{statistics.median(later) / save_s:.2f}x"),
        ("until written", written, f"{written / save_s:.2f}x"),
    ], "seconds"))
    mem_ops = ["save: steplab", "save: steplab, blocking=False", "load: steplab",
               "load: steplab, verify=False", "save: torch.save", "save: safetensors",
               "load: torch.load + load_state_dict", "load: safetensors",
               "load: load_file + copy into existing tensors"]
    rows = []
    for name in mem_ops:
        extra = peak_memory(n_params, name, work)
        rows.append((name, extra / 2**20, f"{extra / size:.2f}x of the state"))
    console.print(_table("peak extra memory (MiB, VmHWM - RSS before)", rows, "MiB"))


if __name__ == "__main__":
    main()
