"""Optimizer step time: steplab's choice vs torch's default and torch's fastest flags.

About 8M float32 parameters in 20 tensors on the CPU, gradients fixed. For each
rule, every variant runs a few steps per repeat; repeats are interleaved (the
variants' order shuffles every repeat) and we report medians, so background
load hits all variants alike. Ratios are against the fastest torch variant
measured in the same run. Run::

    .venv/bin/python benchmarks/optimizer_step.py            # full (~2 min)
    .venv/bin/python benchmarks/optimizer_step.py --quick    # short check
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from steplab.optim import OPTIMIZERS, create_optimizer
from steplab.optim.factory import FASTEST_IMPLEMENTATION
from steplab.optim.interpolate import lerp_and_copy_
from steplab.optim.paths import COMPILE_ENV, fused_step_choice, single_pass_choice
from steplab.optim.single_pass import SinglePassNAdam, SinglePassRMSprop
from steplab.optim.sync_kernel import compiled_sync

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
NAMES = [name for name in OPTIMIZERS if name != "lookahead"]


def _params(numel: int, tensors: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    side = int((numel / tensors) ** 0.5)
    params: list[torch.Tensor] = []
    for _ in range(tensors):
        p = torch.nn.Parameter(torch.randn(side, side, generator=gen))
        p.grad = torch.randn(side, side, generator=gen) * 1e-2
        params.append(p)
    return params


def _torch_variants(name: str) -> dict[str, Factory]:
    """torch.optim as a user builds it by default, and with each implementation flag."""
    info = OPTIMIZERS[name]
    cls = getattr(torch.optim, info.torch_class.rsplit(".", 1)[1])
    accepted = inspect.signature(cls.__init__).parameters
    hyper = {k: v for k, v in info.defaults.items() if k in accepted}  # not steplab's state=
    flags: dict[str, dict[str, bool]] = {
        "default": {},
        "for-loop": {"foreach": False},
        "foreach": {"foreach": True},
    }
    if "fused" in cls.__init__.__code__.co_varnames:
        flags["fused"] = {"fused": True}
    return {label: (lambda ps, f=f: cls(ps, **hyper, **f)) for label, f in flags.items()}


def _implementation(opt: torch.optim.Optimizer) -> str:
    if isinstance(opt, (SinglePassRMSprop, SinglePassNAdam)):
        return "compiled"
    if opt.defaults.get("fused"):
        return "fused"
    return "foreach" if opt.defaults.get("foreach") else "for-loop"


def _steplab_path(name: str, numel: int) -> str:
    """The path create_optimizer takes for this rule and size on CPU."""
    if single_pass_choice(name, numel)[0]:
        return "compiled"
    impl = FASTEST_IMPLEMENTATION[name]
    return "for-loop" if impl == "compiled" else impl


class _Copy:
    """A pseudo-optimizer whose step is ``dst.copy_(src)`` over numel float32 elements.

    Timed among the optimizers, it gives the machine's copy bandwidth in the same
    repeats: 8 bytes moved per element (read 4, write 4).
    """

    def __init__(self, numel: int) -> None:
        self.src, self.dst = torch.randn(numel), torch.empty(numel)

    def step(self) -> None:
        self.dst.copy_(self.src)


def bytes_per_element(name: str) -> int:
    """Bytes a float32 step must move per parameter element: read θ, g and state, write θ, state."""
    return 12 + 2 * OPTIMIZERS[name].bytes_per_param


def _pytorch_optimizer_variant(name: str) -> Factory | str | None:
    """pytorch-optimizer's class for a rule: a factory, ``"torch's"`` if it re-exports torch's."""
    if importlib.util.find_spec("pytorch_optimizer") is None:
        return None
    import pytorch_optimizer

    info = OPTIMIZERS[name]
    cls_name = info.torch_class.rsplit(".", 1)[1]
    theirs = getattr(pytorch_optimizer, cls_name, None)
    if theirs is None:
        return None
    if theirs is getattr(torch.optim, cls_name, None):
        return "torch's"
    accepted = inspect.signature(theirs.__init__).parameters
    hyper = {k: v for k, v in info.defaults.items() if k in accepted}
    return lambda ps: theirs(ps, **hyper)


def _samples(variants: dict[str, Factory], args: argparse.Namespace) -> dict[str, list[float]]:
    """Milliseconds per step of each variant in every repeat, repeats interleaved.

    All variants step the same parameter tensors (each keeps its own state),
    so allocation and memory placement of the parameters cannot favour one.
    """
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    params = _params(args.numel, args.tensors, seed=0)
    built = {}
    for label, factory in variants.items():
        opt = factory(params)
        for _ in range(5):  # lazy state initialisation, warm-up and compiles are not timed
            opt.step()
        built[label] = opt
    samples: dict[str, list[float]] = {label: [] for label in built}
    order = list(built)
    for _ in range(args.repeats):
        random.shuffle(order)
        for label in order:
            opt = built[label]
            start = clock()
            for _ in range(args.steps):
                opt.step()
            samples[label].append((clock() - start) * 1e3 / args.steps)
    return samples


def _time_variants(variants: dict[str, Factory], args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds per step of each variant (see :func:`_samples`)."""
    return {label: statistics.median(s) for label, s in _samples(variants, args).items()}


def bench_rules(args: argparse.Namespace, console: Console) -> list[dict[str, object]]:
    """Per rule: steplab vs torch's fastest flag vs pytorch-optimizer, and vs the memory floor."""
    table = Table(
        title=f"optimizer step, {args.numel / 1e6:.0f}M float32 params in "
        f"{args.tensors} tensors, {args.clock} ms/step (median of {args.repeats})"
    )
    for col in ("rule", "path", "steplab", "torch fastest", "p-opt", "vs fastest", "vs floor"):
        table.add_column(col, justify="right")
    rows: list[dict[str, object]] = []
    for name in args.names:
        variants = _torch_variants(name)
        variants["steplab"] = lambda ps, n=name: create_optimizer(n, ps)
        variants["copy"] = lambda ps: _Copy(args.numel)  # type: ignore[misc,return-value]
        theirs = _pytorch_optimizer_variant(name)
        if callable(theirs):
            variants["pytorch-optimizer"] = theirs
        ms = _time_variants(variants, args)
        torch_ms = {
            k: v for k, v in ms.items() if k not in ("steplab", "copy", "pytorch-optimizer")
        }
        fastest = min(torch_ms, key=lambda k: torch_ms[k])
        floor = ms["copy"] * bytes_per_element(name) / 8
        row = {
            "rule": name,
            "path": _steplab_path(name, args.numel),
            "steplab_ms": ms["steplab"],
            "torch_fastest_ms": torch_ms[fastest],
            "torch_fastest_flag": fastest,
            "pytorch_optimizer": ms.get(
                "pytorch-optimizer", theirs if isinstance(theirs, str) else None
            ),
            "vs_fastest": ms["steplab"] / torch_ms[fastest],
            "vs_floor": ms["steplab"] / floor,
            "floor_ms": floor,
        }
        rows.append(row)
        p_opt = row["pytorch_optimizer"] if not callable(row["pytorch_optimizer"]) else None
        table.add_row(
            name,
            str(row["path"]),
            f"{ms['steplab']:.1f}",
            f"{torch_ms[fastest]:.1f} {fastest}",
            f"{p_opt:.1f}" if isinstance(p_opt, float) else str(p_opt or "-"),
            f"{row['vs_fastest']:.2f}x",
            f"{row['vs_floor']:.2f}x",
        )
    console.print(table)
    console.print(
        "floor: bytes a step must move (read θ, g, state; write θ, state) at the copy_ "
        "bandwidth measured in the same repeats. Targets: rmsprop and nadam <= 0.6x torch's "
        "fastest; every rule <= 1.3x its floor. p-opt: pytorch-optimizer ('torch's': it "
        "re-exports torch's class)."
    )
    return rows


class _InMode:
    """A steplab optimizer stepped under one ``STEPLAB_COMPILE`` mode, whatever the default."""

    def __init__(self, opt: torch.optim.Optimizer, mode: str) -> None:
        self.opt, self.mode = opt, mode

    def step(self) -> None:
        before = os.environ.get(COMPILE_ENV)
        os.environ[COMPILE_ENV] = self.mode
        try:
            self.opt.step()
        finally:
            if before is None:
                os.environ.pop(COMPILE_ENV, None)
            else:
                os.environ[COMPILE_ENV] = before


def _spread(values: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.3f}-{q3:.3f}"


def bench_lookahead(args: argparse.Namespace, console: Console) -> list[dict[str, object]]:
    """Lookahead(adamw, k=5) against fused AdamW, as ratios paired within each repeat."""
    spec = "lookahead(adamw, k=5)"
    fused_default = fused_step_choice(args.numel)[0]
    paths = {"inner, then sync": "never", "fused k-th step, compiled": "always"}
    variants: dict[str, Factory] = {"fused AdamW": lambda ps: torch.optim.AdamW(ps, fused=True)}
    for path, mode in paths.items():
        default = " (default here)" if (mode == "always") == fused_default else ""
        variants[f"steplab {spec}: {path}{default}"] = (
            lambda ps, m=mode: _InMode(create_optimizer(spec, ps), m))  # type: ignore[misc]
    if importlib.util.find_spec("pytorch_optimizer") is not None:
        from pytorch_optimizer import Lookahead as KozistrLookahead

        variants["pytorch_optimizer Lookahead(AdamW fused, k=5)"] = lambda ps: KozistrLookahead(
            torch.optim.AdamW(ps, fused=True), k=5, alpha=0.5
        )
    args.steps = 5  # one whole Lookahead cycle per sample
    samples = _samples(variants, args)
    base = samples["fused AdamW"]
    table = Table(title=f"Lookahead overhead, ms/step over whole k=5 cycles ({args.repeats} "
                  "repeats; ratio: median of the ratios paired within each repeat)")
    for col in ("optimizer", "ms/step", "vs fused AdamW", "spread (q1-q3)", "target"):
        table.add_column(col, justify="right")
    rows: list[dict[str, object]] = []
    for label, values in samples.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        row = {"optimizer": label, "ms": statistics.median(values),
               "ratio": statistics.median(ratios), "spread": _spread(ratios)}
        rows.append(row)
        target = "<= 1.12x" if label.endswith("(default here)") else ""
        table.add_row(label, f"{row['ms']:.2f}", f"{row['ratio']:.3f}x", str(row["spread"]),
                      target)
    console.print(table)
    if "pytorch_optimizer Lookahead(AdamW fused, k=5)" not in variants:
        console.print("pytorch_optimizer is not installed: its Lookahead was not measured.")
    return rows


def _copy_ms(args: argparse.Namespace) -> list[float]:
    """Milliseconds of copy_ over all parameters' elements (8 bytes moved each), repeats."""
    copy = _Copy(args.numel)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    samples = []
    for _ in range(args.repeats):
        start = clock()
        copy.step()
        samples.append((clock() - start) * 1e3)
    return samples


def bench_sync(args: argparse.Namespace, console: Console) -> list[dict[str, object]]:
    """The Lookahead sync alone: blocked foreach and the compiled pass vs whole-tensor foreach."""
    fast = [p.detach() for p in _params(args.numel, args.tensors, seed=1)]
    slow = [t.clone() for t in fast]
    cache: dict[str, object] = {}  # Lookahead keeps one, so its block views are built once

    def whole() -> None:
        torch._foreach_lerp_(slow, fast, 0.5)
        torch._foreach_copy_(fast, slow)

    pairs = list(zip(fast, slow, strict=True))
    variants = {
        "whole-tensor foreach": whole,
        "steplab blocked (CPU default)": lambda: lerp_and_copy_(fast, slow, 0.5, cache),
        "steplab compiled one pass": lambda: compiled_sync(pairs, 0.5),
    }
    for run in variants.values():
        run()  # the compiled kernel is built (or loaded from the cache) here, untimed
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    samples: dict[str, list[float]] = {label: [] for label in variants}
    order = list(variants)
    for _ in range(args.repeats):
        random.shuffle(order)
        for label in order:
            start = clock()
            variants[label]()
            samples[label].append((clock() - start) * 1e3)
    ms = {label: statistics.median(s) for label, s in samples.items()}
    floor = statistics.median(_copy_ms(args)) * 2  # 16 bytes per element: two copies' worth
    table = Table(title="one Lookahead sync (lerp + copy over all parameters), ms")
    for col in ("implementation", "ms", "vs whole-tensor", "vs floor"):
        table.add_column(col, justify="right")
    rows: list[dict[str, object]] = []
    for label, value in ms.items():
        base = ms["whole-tensor foreach"]
        rows.append({"implementation": label, "ms": value, "vs_whole": value / base,
                     "vs_floor": value / floor})
        table.add_row(label, f"{value:.1f}", f"{value / base:.2f}x", f"{value / floor:.2f}x")
    console.print(table)
    return rows


def write_roofline(results: dict[str, list[dict[str, object]]], args: argparse.Namespace) -> Path:
    """Write the measured tables into docs/benchmarks.md's generated roofline block."""
    from docblock import write_block

    command = " ".join(["nice -n 5 .venv/bin/python benchmarks/optimizer_step.py", *sys.argv[1:]])
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"{args.numel / 1e6:g}M float32 parameters in {args.tensors} tensors, "
        f"{args.threads} thread(s), {args.clock} clock, {args.repeats} interleaved repeats, "
        f"load average {load} (1/5/15 min) on {os.cpu_count()} cores:",
        "",
        f"    {command}",
        "",
    ]
    lines += _markdown_tables(results)
    return write_block("benchmarks.md", "roofline", "benchmarks/optimizer_step.py",
                       "\n".join(lines))


def _markdown_tables(results: dict[str, list[dict[str, object]]]) -> list[str]:
    lines: list[str] = []
    if "rules" in results:
        lines += ["| rule | steplab path | steplab ms | torch fastest ms (flag) | vs fastest "
                  "| vs floor |", "| --- | --- | --- | --- | --- | --- |"]
        for r in results["rules"]:
            lines.append(
                f"| {r['rule']} | {r['path']} | {r['steplab_ms']:.2f} | "
                f"{r['torch_fastest_ms']:.2f} ({r['torch_fastest_flag']}) | "
                f"{r['vs_fastest']:.2f}x | {r['vs_floor']:.2f}x |")
        lines.append("")
    if "sync" in results:
        lines += ["| one sync over all parameters | ms | vs whole-tensor foreach | vs floor |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {r['implementation']} | {r['ms']:.2f} | {r['vs_whole']:.2f}x | "
                  f"{r['vs_floor']:.2f}x |" for r in results["sync"]]
        lines.append("")
    if "lookahead" in results:
        lines += ["| optimizer | ms/step over whole k=5 cycles | vs fused AdamW (median of "
                  "paired ratios) | spread (q1-q3) |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['optimizer']} | {r['ms']:.2f} | {r['ratio']:.3f}x | {r['spread']} |"
                  for r in results["lookahead"]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2M params, 7 repeats (default: off)")
    parser.add_argument("--numel", type=int, default=8_000_000, help="total parameters")
    parser.add_argument("--tensors", type=int, default=20, help="number of tensors")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats")
    parser.add_argument("--steps", type=int, default=1, help="steps per timed repeat")
    parser.add_argument("--names", nargs="*", default=NAMES, help="rules to time")
    parser.add_argument(
        "--part",
        choices=("all", "rules", "lookahead"),
        default="all",
        help="which tables to measure",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: steadier timings on a shared machine)",
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: this thread's CPU time (immune to other processes taking "
        "the cores; needs --threads 1); wall: elapsed time",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="replace the generated roofline block of docs/benchmarks.md with these figures",
    )
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread: use --threads 1 or --clock wall")
    torch.set_num_threads(args.threads)
    if args.quick:
        args.numel, args.repeats = 2_000_000, 7
    console = Console()
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clock} clock"
    )
    results: dict[str, list[dict[str, object]]] = {}
    if args.part in ("all", "rules"):
        results["rules"] = bench_rules(args, console)
    if args.part in ("all", "lookahead"):
        results["sync"] = bench_sync(args, console)
        results["lookahead"] = bench_lookahead(args, console)
    if args.write_docs:
        console.print(f"wrote {write_roofline(results, args)}")


if __name__ == "__main__":
    main()
