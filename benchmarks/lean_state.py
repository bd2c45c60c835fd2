"""Lean optimizer state: ms/step, bytes/param and peak extra memory of AdamW variants.

About 4M float32 parameters in two large tensors (2048x1024 each), gradients
fixed. Variants: torch's fused fp32 AdamW (the baseline), steplab's
``adamw(state=bf16)`` both ways (the compiled single pass, which
``STEPLAB_COMPILE=auto`` takes at this size, and the pure chunked path,
``STEPLAB_COMPILE=never``), ``adamw(state=int8|int4)``, and bitsandbytes' /
torchao's 8-bit AdamW when they import (neither is a steplab dependency). Repeats are interleaved
(order shuffled every repeat) and medians reported, so background load hits
every variant alike; ratios are against fused fp32 in the same run. Two
clocks: the CPU time of the calling thread (``time.thread_time``: what the
step costs, not counting time other processes held the core; with
``--threads 1`` every variant runs on that one thread) and wall time. The
issue's targets (bf16 within 1.3x, int8 within 8x of fused fp32 and faster
than bitsandbytes, peak extra memory <= 5% of the state) are judged on the
CPU-time medians and printed under the table.

Peak extra memory of a step, two ways: the scratch steplab's optimizer
allocates (``workspace_bytes()``, the float32 chunk buffers and the
quantiser's work buffers), and, for every variant, glibc is told to serve every allocation of 4 KiB
or more by mmap and to give freed memory back at once, then the kernel's peak
RSS (VmHWM, reset through /proc/self/clear_refs) minus the RSS before the step
is what the step allocated at its peak (the median of three steps).

bf16 parameters: a least-squares problem whose updates fall below one bf16
ulp, trained with plain bf16 rounding (torch AdamW on bf16 parameters), with
steplab's Kahan-compensated update, and in fp32; and what drawing one random
number per element (stochastic rounding's extra work) costs per step.

Run::

    .venv/bin/python benchmarks/lean_state.py                 # full (~2 min on 2 idle cores)
    .venv/bin/python benchmarks/lean_state.py --quick         # short check
    .venv/bin/python benchmarks/lean_state.py --write-docs    # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from steplab.optim import create_optimizer
from steplab.optim.compiler import compiler_problem
from steplab.optim.lean import LeanAdam
from steplab.optim.lean_buffers import qmap_for
from steplab.optim.lean_compiled import BF16_ADAM_KERNEL
from steplab.optim.paths import COMPILE_ENV
from steplab.optim.quantize import BlockCodec, dequantize_blockwise, quantize_blockwise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docblock import write_block

BASE = "torch AdamW fused fp32"
#: (variant, the most it may take relative to fused fp32 AdamW) from the issue
BF16_COMPILED, BF16_PURE = "steplab adamw(state=bf16) compiled", "steplab adamw(state=bf16) pure"
TARGETS = {BF16_COMPILED: 1.3, BF16_PURE: 1.3, "steplab adamw(state=int8)": 8.0}
Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def _glibc_returns_memory() -> bool:
    """mmap every allocation >= 4 KiB and trim at once, so peak RSS sees each step's scratch."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 4096) and libc.mallopt(m_trim_threshold, 0))


def _params(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for _ in range(2):
        p = torch.nn.Parameter(torch.randn(2048, 1024, generator=gen))
        p.grad = torch.randn(2048, 1024, generator=gen) * 1e-2
        params.append(p)
    return params


def _variants() -> tuple[dict[str, Factory], list[str]]:
    variants: dict[str, Factory] = {
        BASE: lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
    }
    variants[BF16_COMPILED] = lambda ps: _with_compile("always", "adamw(state=bf16)", ps)
    variants[BF16_PURE] = lambda ps: _with_compile("never", "adamw(state=bf16)", ps)
    for kind in ("int8", "int4"):
        variants[f"steplab adamw(state={kind})"] = (
            lambda ps, kind=kind: create_optimizer(f"adamw(state={kind})", ps))
    notes = []
    if compiler_problem("cpu") is not None:
        notes.append(f"{BF16_COMPILED}: no compiler here ({compiler_problem('cpu')}), "
                     "so it ran the pure path")
    try:
        import bitsandbytes as bnb

        probe = _params(9)[:1]
        bnb.optim.AdamW8bit(probe, lr=1e-3).step()
        variants["bitsandbytes AdamW8bit"] = lambda ps: bnb.optim.AdamW8bit(ps, lr=1e-3)
    except Exception as exc:  # not installed, or no CPU kernel in this build
        notes.append(f"bitsandbytes: not measured ({type(exc).__name__}: {str(exc)[:80]})")
    try:
        from torchao.optim import AdamW8bit

        probe = _params(9)[:1]
        AdamW8bit(probe, lr=1e-3).step()
        variants["torchao AdamW8bit"] = lambda ps: AdamW8bit(ps, lr=1e-3)
    except Exception as exc:
        notes.append(f"torchao: not measured ({type(exc).__name__}: {str(exc)[:80]})")
    return variants, notes


def _with_compile(mode: str, spec: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """``create_optimizer(spec)`` under ``STEPLAB_COMPILE=mode`` (read when it is built)."""
    before = os.environ.get(COMPILE_ENV)
    os.environ[COMPILE_ENV] = mode
    try:
        return create_optimizer(spec, params)
    finally:
        if before is None:
            os.environ.pop(COMPILE_ENV)
        else:
            os.environ[COMPILE_ENV] = before


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    total = 0
    for buffers in opt.state.values():
        for value in buffers.values():
            if type(value) is not torch.Tensor and hasattr(value, "__tensor_flatten__"):
                names, _ = value.__tensor_flatten__()  # torchao's quantised tensor subclass
                total += sum(getattr(value, n).numel() * getattr(value, n).element_size()
                             for n in names)
            elif isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _peak_extra(opt: torch.optim.Optimizer, steps: int = 3) -> int | None:
    """Bytes a step allocated at its peak, the median of ``steps`` steps (None where /proc
    cannot reset the peak). One step's reading can include the heap growing for small
    allocations of earlier work (seen: 5.8% once for a step that reads 3.3% alone)."""
    peaks = []
    for _ in range(steps):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return None
        before = _status_kib("VmRSS")
        opt.step()
        peaks.append(max(0, _status_kib("VmHWM") - before) * 1024)
    return int(statistics.median(peaks))


def _speed(variants: dict[str, Factory], repeats: int, steps: int) -> dict[str, dict[str, Any]]:
    built = {name: make(_params(i)) for i, (name, make) in enumerate(variants.items())}
    numel = sum(p.numel() for p in _params(0))
    for opt in built.values():
        opt.step()  # state is created lazily
    rows = {name: {"bytes_per_param": _state_bytes(opt) / numel, "cpu": [], "wall": [],
                   "state_bytes": _state_bytes(opt)} for name, opt in built.items()}
    for name, opt in built.items():
        rows[name]["peak_extra"] = _peak_extra(opt)
        workspace = getattr(opt, "workspace_bytes", None)  # steplab's lean optimizers
        rows[name]["scratch"] = workspace() if workspace is not None else None
    order = list(built)
    for _ in range(repeats):
        random.shuffle(order)
        for name in order:
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(steps):
                built[name].step()
            rows[name]["cpu"].append((time.thread_time() - cpu) / steps * 1e3)
            rows[name]["wall"].append((time.perf_counter() - wall) / steps * 1e3)
    for row in rows.values():
        row["ms"] = statistics.median(row.pop("cpu"))
        row["wall_ms"] = statistics.median(row.pop("wall"))
    return rows


def _median_rows(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each variant's row with its median ms over ``runs`` and every run's ratio to fused."""
    rows = {name: dict(row) for name, row in runs[0].items()}
    for name, row in rows.items():
        for key in ("ms", "wall_ms"):
            row[key] = statistics.median(run[name][key] for run in runs)
        row["ratios"] = [run[name]["ms"] / run[BASE]["ms"] for run in runs]
    return rows


def verdicts(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One line per target of the issue: what was measured and whether it is met
    (with several runs: judged on the median, each run's ratio listed)."""
    base, lines = rows[BASE]["ms"], []
    for name, most in TARGETS.items():
        ratio = rows[name]["ms"] / base
        each = rows[name].get("ratios", [])
        runs = (f"; runs: {', '.join(f'{r:.2f}x' for r in each)}, met in "
                f"{sum(r <= most for r in each)} of {len(each)}" if len(each) > 1 else "")
        lines.append(f"{name}: {ratio:.2f}x fused fp32 (target <= {most}x): "
                     f"{'met' if ratio <= most else 'NOT met'}{runs}")
    ours = rows["steplab adamw(state=int8)"]["ms"]
    for other in (n for n in rows if not n.startswith(("steplab", "torch"))):
        theirs = rows[other]["ms"]
        verdict = "faster" if ours < theirs else "slower"
        lines.append(f"steplab adamw(state=int8) vs {other}: {ours:.1f} vs {theirs:.1f} ms"
                     f" (target for bitsandbytes: faster): {verdict}")
    for name, row in rows.items():
        if name.startswith("steplab") and row["peak_extra"] is not None:
            share = max(row["peak_extra"], row["scratch"] or 0) / row["state_bytes"]
            lines.append(f"{name}: peak extra memory {share:.1%} of the state (target <= 5%): "
                         f"{'met' if share <= 0.05 else 'NOT met'}")
    return lines


def _kahan(steps: int) -> dict[str, float]:
    """Final loss of a least-squares fit with updates below one bf16 ulp, three ways."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 512, generator=gen)
    target = torch.ones(512) + 0.01 * torch.randn(512, generator=gen)
    y = x @ target
    losses = {}
    for label in ("fp32", "bf16 plain", "bf16 Kahan"):
        w = torch.nn.Parameter(torch.ones(512))
        if label != "fp32":
            w = torch.nn.Parameter(w.detach().bfloat16())
        opt = (torch.optim.AdamW([w], lr=1e-4, weight_decay=0.0) if label == "bf16 plain"
               else LeanAdam([w], lr=1e-4, state="bf16", decoupled=True))
        for _ in range(steps):
            opt.zero_grad()
            ((x @ w.float() - y) ** 2).mean().backward()
            opt.step()
        losses[label] = float(((x @ w.detach().float() - y) ** 2).mean())
    return losses


def _errors(numel: int) -> list[dict[str, Any]]:
    """Each map's worst quantisation error: exact (``QuantMap.max_error``), measured on
    ``numel`` moments spread over ten decades, and the least any map of as many levels has."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(numel, generator=gen) * torch.logspace(-8, 2, numel)[torch.randperm(
        numel, generator=gen)]
    rows = []
    for name, bits in (("exp_avg", 8), ("exp_avg_sq", 8), ("exp_avg", 4), ("exp_avg_sq", 4)):
        qmap = qmap_for(name, bits)
        values = x if qmap.signed else x.abs()
        codes, absmax = quantize_blockwise(values, qmap)
        back = dequantize_blockwise(codes, absmax, qmap, numel)
        scale = absmax.repeat_interleave(qmap.block)[:numel]
        measured = float(((back - values).abs() / scale).max())
        levels = torch.unique(qmap.table).numel()
        rows.append({"map": f"{bits}-bit {'signed' if qmap.signed else 'unsigned'} ({name})",
                     "levels": levels, "exact": qmap.max_error, "measured": measured,
                     "least": (2.0 if qmap.signed else 1.0) / (2 * levels)})
    return rows


def _int8_breakdown(repeats: int) -> dict[str, float]:
    """Where an int8 AdamW step's CPU time goes (ms, medians of ``repeats`` steps).

    The step is timed whole, then with parts replaced by no-ops: the codec
    (``BlockCodec.decode`` returns the work area as it is, ``encode`` does
    nothing), then also torch's fused kernel, then the encoder alone. The
    table lookups (``index_select``, all of them in the codec) are summed by
    torch's profiler over the same number of steps.
    """
    opt = create_optimizer("adamw(state=int8)", _params(3))
    opt.step()

    def timed() -> float:
        times = []
        for _ in range(repeats):
            start = time.thread_time()
            opt.step()
            times.append((time.thread_time() - start) * 1e3)
        return statistics.median(times)

    decode, encode, fused = BlockCodec.decode, BlockCodec.encode, torch._fused_adamw_
    whole = timed()
    try:
        BlockCodec.encode = lambda self, pieces: None  # type: ignore[method-assign]
        decoding = timed()
        BlockCodec.decode = lambda self, pieces: self.values  # type: ignore[method-assign]
        kernel = timed()
        torch._fused_adamw_ = lambda *args, **kwargs: None
        loop = timed()
    finally:
        BlockCodec.decode, BlockCodec.encode, torch._fused_adamw_ = decode, encode, fused
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            opt.step()
    lookups = sum(e.self_cpu_time_total for e in prof.key_averages()
                  if e.key == "aten::index_select") / repeats / 1e3
    return {"whole": whole, "loop": loop, "kernel": kernel - loop, "decode": decoding - kernel,
            "encode": whole - decoding, "lookups": lookups}


def _random_draw_ms(numel: int, repeats: int) -> float:
    out = torch.empty(numel, dtype=torch.int32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out.random_(0, 1 << 16)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _error_table(errors: list[dict[str, Any]]) -> list[str]:
    lines = ["Quantisation error per element, as a share of its block's absmax (the issue asks "
             "<= 1%; \"least possible\" is the pigeonhole bound for a map with that many "
             "levels):", "",
             "| map | levels | worst (exact, from the map) | worst measured (1M moments) "
             "| least possible | <= 1% |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for row in errors:
        met = "yes" if row["exact"] <= 0.01 else "no (impossible)" if row["least"] > 0.01 else "no"
        lines.append(f"| {row['map']} | {row['levels']} | {row['exact']:.3%} | "
                     f"{row['measured']:.3%} | {row['least']:.2%} | {met} |")
    return lines


def _breakdown_lines(parts: dict[str, float], base: float) -> list[str]:
    whole = parts["whole"]
    share = {k: f"{parts[k]:.1f} ms ({parts[k] / whole:.0%})"
             for k in ("loop", "kernel", "decode", "encode", "lookups")}
    return [f"Where the int8 step's CPU time goes (one step of the same model timed alone, "
            f"{whole:.1f} ms): the chunk loop itself (views, Python) {share['loop']}, torch's "
            f"fused AdamW kernel over the chunks {share['kernel']}, decoding "
            f"{share['decode']}, encoding {share['encode']}. The table lookups "
            f"(`index_select`, about one per moment and element each way) take "
            f"{share['lookups']} of it: {parts['lookups'] / base:.1f}x a whole fused fp32 "
            "step of the table above on their own."]


def _markdown(rows: dict[str, dict[str, Any]], notes: list[str], kahan: dict[str, float],
              draw_ms: float, command: str, errors: list[dict[str, Any]],
              parts: dict[str, float]) -> str:
    base, wall_base = rows[BASE]["ms"], rows[BASE]["wall_ms"]
    lines = [f"Measured {datetime.date.today().isoformat()} with `{command}`, "
             f"{torch.get_num_threads()} torch thread(s), on this 2-core shared machine "
             f"(medians of interleaved repeats, and over {len(rows[BASE].get('ratios', [1]))}"
             " run(s) of them; other engineers' jobs were running: the "
             "thread's CPU time discounts them, the wall time does not).", "",
             "| optimizer (4.2M params, 2 tensors) | CPU ms/step | vs fused fp32 "
             "| wall ms/step | vs fused fp32 | bytes/param | peak extra RSS / state "
             "| scratch / state |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in rows.items():
        extra, scratch = row["peak_extra"], row["scratch"]
        share = "-" if extra is None else f"{extra / row['state_bytes']:.1%}"
        own = "-" if scratch is None else f"{scratch / row['state_bytes']:.1%}"
        lines.append(f"| {name} | {row['ms']:.1f} | {row['ms'] / base:.2f}x | "
                     f"{row['wall_ms']:.1f} | {row['wall_ms'] / wall_base:.2f}x | "
                     f"{row['bytes_per_param']:.3f} | {share} | {own} |")
    lines += [""] + [f"- {line}" for line in verdicts(rows) + notes]
    lines += ["", *_breakdown_lines(parts, base)]
    lines += ["", *_error_table(errors)]
    lines += ["", "bf16 parameters, least squares with updates below one bf16 ulp "
              "(final mean squared error; lower is better):", "",
              "| fp32 parameters | bf16, plain rounding | bf16, Kahan-compensated |",
              "| ---: | ---: | ---: |",
              f"| {kahan['fp32']:.4g} | {kahan['bf16 plain']:.4g} | {kahan['bf16 Kahan']:.4g} |",
              "", f"Drawing one random number per element for stochastic rounding alone costs "
              f"{draw_ms:.1f} ms per step at this size ({draw_ms / base:.2f}x a whole fused "
              "fp32 AdamW step), on top of the update."]
    return "\n".join(lines)


def main() -> None:
    """Measure, print the table, and optionally write it into docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (default: off)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--runs", type=int, default=1,
                        help="whole measurements, each with fresh optimizers; the table shows "
                             "each variant's median over them and the target lines every "
                             "run's ratio (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=11,
                        help="interleaved repeats of 3 steps each (default: %(default)s)")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the lean-state section of docs/benchmarks.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not _glibc_returns_memory():
        print("note: could not set glibc's mmap threshold; peak memory may be understated")
    variants, notes = _variants()
    repeats, steps = (3, 2) if args.quick else (args.repeats, 3)
    runs = [_speed(variants, repeats, steps) for _ in range(max(1, args.runs))]
    rows = _median_rows(runs)
    if BF16_ADAM_KERNEL.failure is not None:
        notes.append(f"{BF16_COMPILED}: the compile failed ({BF16_ADAM_KERNEL.failure}), "
                     "so it ran the pure path")
    kahan = _kahan(100 if args.quick else 300)
    errors = _errors(1 << 20)
    draw_ms = _random_draw_ms(sum(p.numel() for p in _params(0)), repeats)
    parts = _int8_breakdown(5 if args.quick else 15)
    table = Table(title="lean optimizer state, ~4M parameters (CPU ms of the thread)")
    for col in ("optimizer", "ms/step", "vs fused", "wall ms", "bytes/param", "peak extra"):
        table.add_column(col, justify="left" if col == "optimizer" else "right")
    base = rows[BASE]["ms"]
    for name, row in rows.items():
        extra = row["peak_extra"]
        table.add_row(name, f"{row['ms']:.1f}", f"{row['ms'] / base:.2f}x",
                      f"{row['wall_ms']:.1f}", f"{row['bytes_per_param']:.3f}",
                      "-" if extra is None else f"{extra / row['state_bytes']:.1%}")
    console = Console()
    console.print(table)
    for line in verdicts(rows) + notes + _breakdown_lines(parts, base) + _error_table(errors):
        console.print(line)
    console.print(f"bf16 params, final loss: {kahan}; random draw per step {draw_ms:.1f} ms")
    if args.write_docs:
        flags = " ".join(a for a in ("--quick" if args.quick else "",
                                     f"--threads {args.threads}" if args.threads else "",
                                     f"--runs {args.runs}" if args.runs > 1 else "",
                                     f"--repeats {args.repeats}" if args.repeats != 11 else "")
                         if a)
        command = f".venv/bin/python benchmarks/lean_state.py {flags}".strip()
        write_block("benchmarks.md", "lean_state", "benchmarks/lean_state.py",
                    _markdown(rows, notes, kahan, draw_ms, command, errors, parts))


if __name__ == "__main__":
    main()
