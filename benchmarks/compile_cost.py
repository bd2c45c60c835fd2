"""What the single-pass compiled steps cost to start, and what they do to ``steplab compare``.

1. First step of SinglePassRMSprop / SinglePassNAdam in a fresh process: with an
   empty cache directory (cold: inductor generates and compiles C++), then again
   in a second process on the same directory (warm: the kernel is loaded), next
   to torch's own first step in the same kind of process.
2. A small ``steplab compare`` study of RMSprop and NAdam (the default study's task) with
   ``STEPLAB_COMPILE=never`` (torch's path: the behaviour before the compiled
   steps existed), ``auto`` (the default) and ``always`` (compile even for small
   models, on a cold cache): wall time of each, interleaved over repeats.

Run::

    nice -n 5 .venv/bin/python benchmarks/compile_cost.py             # ~5-10 min on 2 cores
    nice -n 5 .venv/bin/python benchmarks/compile_cost.py --part start
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

_CHILD = """
import json, resource, sys, time
start = time.perf_counter()
import torch
from torch._dynamo.utils import counters
from steplab.optim import create_optimizer
torch.set_num_threads(1)
p = torch.nn.Parameter(torch.randn(1000, 1000))
p.grad = torch.randn(1000, 1000)
opt = create_optimizer(sys.argv[1], [p])
for _ in range(int(sys.argv[2])):  # untimed steps before the one measured
    opt.step()
def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the compiler processes waited for
    return usage.ru_utime + usage.ru_stime
cpu0, kids0, t0 = time.process_time(), children_cpu(), time.perf_counter()
opt.step()
first, cpu = time.perf_counter() - t0, time.process_time() - cpu0
print(json.dumps({"class": type(opt).__name__, "first": first,
                  "cpu": cpu + children_cpu() - kids0,
                  "cache_hits": counters["inductor"]["fxgraph_cache_hit"]}))
"""


#: what bench_start measures: the spec and how many untimed steps come before the timed one
#: (Lookahead's first step only takes its slow copy; with k=1 its second is a k-th step)
STARTS = {"rmsprop": ("rmsprop", 0), "nadam": ("nadam", 0),
          "lookahead(adamw) k-th step": ("lookahead(adamw, k=1)", 1)}


def _child(spec: str, env: dict[str, str], before: int = 0) -> dict[str, float | str]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, spec, str(before)], env=env, capture_output=True,
        text=True, check=True,
    )
    result: dict[str, float | str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_start(args: argparse.Namespace, console: Console) -> list[dict[str, object]]:
    """First step in a new process: torch's path, cold compile, warm second process.

    CPU seconds (this process and the compiler processes it waited for) are the
    figure to read on a shared machine; wall seconds are shown beside them.
    """
    table = Table(title="first optimizer step in a new process (1M params): CPU s / wall s")
    for col in ("rule", "torch's path", "compiled, cold cache", "compiled, 2nd process"):
        table.add_column(col, justify="right")
    rows: list[dict[str, object]] = []
    base = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    for name in args.starts:
        spec, before = STARTS[name]
        runs: dict[str, list[dict[str, float | str]]] = {"torch": [], "cold": [], "warm": []}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="steplab-cache-") as cache:
                env = {**base, "STEPLAB_CACHE_DIR": cache, "STEPLAB_COMPILE": "always"}
                runs["cold"].append(_child(spec, env, before))
                runs["warm"].append(_child(spec, env, before))
                runs["torch"].append(_child(spec, {**env, "STEPLAB_COMPILE": "never"}, before))
        row: dict[str, object] = {"rule": name}
        cells = []
        for kind, results in runs.items():
            cpu = statistics.median(float(r["cpu"]) for r in results)
            wall = statistics.median(float(r["first"]) for r in results)
            row[f"{kind}_cpu_s"], row[f"{kind}_wall_s"] = cpu, wall
            row[f"{kind}_cache_hits"] = [r["cache_hits"] for r in results]
            cells.append(f"{cpu:.2f} / {wall:.2f}")
        rows.append(row)
        table.add_row(name, *cells)
    console.print(table)
    return rows


_STUDY = """[study]
tasks = ["mnist1d-cnn"]
optimizers = ["rmsprop", "nadam"]
budget = {budget}
seeds = 2
steps = {steps}
trajectories = []
claims = []
"""


def _compare(mode: str, out: Path, cache: str, args: argparse.Namespace) -> float:
    """Wall seconds of one small study (the default study's task) under STEPLAB_COMPILE=mode."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env.update(STEPLAB_COMPILE=mode, STEPLAB_CACHE_DIR=cache)
    spec = out.with_suffix(".toml")
    spec.write_text(_STUDY.format(budget=args.budget, steps=args.steps))
    command = [sys.executable, "-m", "steplab", "compare", str(spec), "--workers", "2",
               "--quiet", "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"steplab compare ({mode}) failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def bench_compare(args: argparse.Namespace, console: Console) -> dict[str, float]:
    """Wall time of the same small study per STEPLAB_COMPILE mode, interleaved repeats."""
    samples: dict[str, list[float]] = {"never": [], "auto": [], "always": []}
    with tempfile.TemporaryDirectory(prefix="steplab-compare-") as tmp:
        for repeat in range(args.repeats):
            for mode in samples:
                cache = tempfile.mkdtemp(dir=tmp)  # always a cold cache
                samples[mode].append(_compare(mode, Path(tmp) / f"{mode}{repeat}", cache, args))
    medians = {mode: statistics.median(s) for mode, s in samples.items()}
    table = Table(
        title=f"steplab compare, mnist1d-cnn, rmsprop+nadam, budget {args.budget}, 2 seeds, "
        f"{args.steps} steps, 2 workers: wall s (median of {args.repeats})"
    )
    for col in ("STEPLAB_COMPILE", "wall s", "vs never (torch's path)"):
        table.add_column(col, justify="right")
    for mode, value in medians.items():
        table.add_row(mode, f"{value:.1f}", f"{value / medians['never']:.2f}x")
    console.print(table)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--part", choices=("all", "start", "compare"), default="all",
                        help="which tables to measure")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="repeats (median reported)")
    parser.add_argument("--budget", type=int, default=2, help="lr trials per optimizer")
    parser.add_argument("--steps", type=int, default=100, help="steps per compare run")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--starts", nargs="*", default=list(STARTS), choices=list(STARTS),
                        help="which first steps --part start measures")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the start table into docs/benchmarks.md's generated "
                        "compile-cost block")
    args = parser.parse_args()
    console = Console()
    results: dict[str, object] = {}
    if args.part in ("all", "start"):
        results["start"] = bench_start(args, console)
    if args.part in ("all", "compare"):
        results["compare"] = bench_compare(args, console)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    if args.write_docs and "start" in results:
        console.print(f"wrote {_write_docs(results['start'], args)}")


def _write_docs(rows: list[dict[str, object]], args: argparse.Namespace) -> Path:
    """The first-step table as a generated block of docs/benchmarks.md."""
    from datetime import datetime, timezone

    from docblock import write_block

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    command = " ".join(["nice -n 5 .venv/bin/python benchmarks/compile_cost.py", *sys.argv[1:]])
    lines = [
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, median of {args.repeats}, load "
        f"average {load} on {os.cpu_count()} cores (wall seconds include waiting for the cores):",
        "", f"    {command}", "",
        "| first step in a new process (1M params): CPU s / wall s | torch's path "
        "| compiled, cold cache | compiled, second process (warm cache) |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [f"{row[f'{k}_cpu_s']:.2f} / {row[f'{k}_wall_s']:.2f}"
                 for k in ("torch", "cold", "warm")]
        lines.append(f"| {row['rule']} | " + " | ".join(cells) + " |")
    return write_block("benchmarks.md", "compile-cost", "benchmarks/compile_cost.py",
                       "\n".join(lines))


if __name__ == "__main__":
    main()
