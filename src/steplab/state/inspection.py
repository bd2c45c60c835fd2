"""See what an optimizer keeps: buffers, sizes and summary statistics per parameter.

For every parameter the report lists the buffers the optimizer keeps
(``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ``sum``, Lookahead's
``slow_param``, ...) with dtype and bytes, and three statistics:

- ``mean_abs_m`` = mean |m| of the first moment / momentum buffer;
- ``rms_v`` = sqrt(mean(v²)) of the second-moment buffer;
- for adaptive rules, percentiles (5, 50, 95) of the effective per-element
  step size ``lr / (sqrt(v_hat) + eps)``, where ``v_hat = v / (1 - beta2^t)``
  for the Adam family (``max_exp_avg_sq`` under AMSGrad), ``v_hat = v`` for
  RMSprop (``v - g_avg²`` when centered), and for AdaGrad
  ``lr / (1 + (t - 1) lr_decay) / (sqrt(sum) + eps)`` (torch's update rules).

Totals give state bytes, parameter bytes and their ratio (Adam ~2, Lookahead(Adam) ~3).

>>> import torch
>>> model = torch.nn.Linear(10, 10)
>>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
>>> model(torch.ones(2, 10)).sum().backward(); opt.step()
>>> report = inspect(opt, model)
>>> round(report.ratio, 2), report.params[0].name, report.params[0].buffers[0].name
(2.02, 'weight', 'step')
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from torch import nn

from steplab.errors import CheckpointError
from steplab.optim import OPTIMIZERS
from steplab.optim.lean_buffers import read_buffer
from steplab.optim.lookahead_state import SLOW_KEYS
from steplab.state.codec import decode
from steplab.state.manifest import MANIFEST, open_checkpoint
from steplab.state.named import FORMAT, migrate_named, named_state_dict, named_state_dict_for
from steplab.state.tensorfile import read_tensors

__all__ = [
    "BufferInfo",
    "ParamState",
    "StateReport",
    "decoded_buffers",
    "effective_step_size",
    "inspect",
    "inspect_checkpoint",
    "report_from_named",
    "resolve_checkpoint",
]

FIRST_MOMENT = frozenset({"exp_avg", "momentum_buffer", "grad_avg"}).union(
    *(info.first_moment for info in OPTIMIZERS.values()))
SECOND_MOMENT = frozenset({"exp_avg_sq", "square_avg", "sum"}).union(
    *(info.second_moment for info in OPTIMIZERS.values()))
_SAMPLE = 1 << 20  # percentiles of bigger tensors use an evenly strided sample


@dataclass(frozen=True)
class BufferInfo:
    """One state buffer: name, dtype, shape and bytes (0 for a plain Python number)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    bytes: int


@dataclass(frozen=True)
class ParamState:
    """The optimizer state of one parameter and its summary statistics (None when absent)."""

    name: str
    group: int
    shape: tuple[int, ...]
    dtype: str
    param_bytes: int
    buffers: tuple[BufferInfo, ...]
    step: float | None
    mean_abs_m: float | None
    rms_v: float | None
    step_size: dict[str, float] | None

    @property
    def state_bytes(self) -> int:
        """Bytes of all this parameter's buffers."""
        return sum(b.bytes for b in self.buffers)


@dataclass(frozen=True)
class StateReport:
    """What an optimizer keeps, per parameter and in total; renders as rich tables."""

    optimizer: str
    params: tuple[ParamState, ...]
    groups: tuple[dict[str, Any], ...]
    source: str = ""

    @property
    def state_bytes(self) -> int:
        """Bytes of every buffer of every parameter."""
        return sum(p.state_bytes for p in self.params)

    @property
    def param_bytes(self) -> int:
        """Bytes of the parameters themselves."""
        return sum(p.param_bytes for p in self.params)

    @property
    def bytes_per_param(self) -> float:
        """State bytes per parameter element (Adam 8, ``state=int8`` about 2.03)."""
        numel = sum(math.prod(p.shape) for p in self.params)
        return self.state_bytes / numel if numel else 0.0

    @property
    def ratio(self) -> float:
        """State bytes per parameter byte (Adam about 2, Lookahead(Adam) about 3)."""
        return self.state_bytes / self.param_bytes if self.param_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (totals included)."""
        return {"optimizer": self.optimizer, "source": self.source, "state_bytes": self.state_bytes,
                "param_bytes": self.param_bytes, "ratio": self.ratio,
                "bytes_per_param": self.bytes_per_param,
                "groups": list(self.groups), "params": [asdict(p) for p in self.params]}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield _param_table(self)
        yield _summary_table(self)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _param_table(report: StateReport) -> Table:
    where = f" ({report.source})" if report.source else ""
    table = Table(title=f"optimizer state: {report.optimizer}{where}")
    for column in ("parameter", "shape", "buffers", "state", "mean|m|", "rms v",
                   "step size p5 / p50 / p95"):
        table.add_column(column, justify="left" if column in ("parameter", "buffers") else "right")
    for p in report.params:
        sizes = p.step_size
        steps = "-" if sizes is None else " / ".join(_fmt(sizes.get(k)) for k in sizes)
        table.add_row(p.name, "x".join(map(str, p.shape)) or "()",
                      ", ".join(f"{b.name} {b.dtype}" for b in p.buffers) or "(none yet)",
                      _size(p.state_bytes), _fmt(p.mean_abs_m), _fmt(p.rms_v), steps)
    return table


def _summary_table(report: StateReport) -> Table:
    table = Table(title="totals and groups", show_header=False)
    table.add_row("state bytes", _size(report.state_bytes))
    table.add_row("parameter bytes", _size(report.param_bytes))
    table.add_row("state / parameters", f"{report.ratio:.2f}x")
    table.add_row("state bytes per parameter", f"{report.bytes_per_param:.3g}")
    for i, group in enumerate(report.groups):
        table.add_row(f"group {i}", ", ".join(f"{k}={v}" for k, v in group.items()))
    return table


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def _number(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def _percentiles(x: torch.Tensor) -> dict[str, float]:
    flat = x.detach().reshape(-1).double()
    if flat.numel() > _SAMPLE:
        flat = flat[:: flat.numel() // _SAMPLE + 1]
    q = torch.quantile(flat, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return {k: v for k, v in zip(("p5", "p50", "p95"), q.tolist(), strict=True)
            if math.isfinite(v)}


def effective_step_size(
    buffers: Mapping[str, Any], group: Mapping[str, Any]
) -> torch.Tensor | None:
    """Per-element effective step size ``lr / (sqrt(v_hat) + eps)`` of an adaptive rule.

    Args:
        buffers: one parameter's optimizer state (``exp_avg_sq``, ``square_avg``, ``sum``, ...).
        group: its parameter group (``lr``, ``eps``, ``betas``, ``amsgrad``, ``lr_decay``).

    Returns:
        A float64 tensor shaped like the parameter, or None for a non-adaptive rule
        (or one that has not stepped yet).

    Example:
        >>> v = torch.full((2,), 4.0)
        >>> effective_step_size({"square_avg": v}, {"lr": 0.1, "eps": 0.0}).tolist()
        [0.05, 0.05]
    """
    lr, eps, t = _number(group.get("lr", 0.0)), _number(group.get("eps", 0.0)), buffers.get("step")
    if "exp_avg_sq" in buffers and "betas" in group and t is not None:
        v = buffers["max_exp_avg_sq"] if group.get("amsgrad") and "max_exp_avg_sq" in buffers \
            else buffers["exp_avg_sq"]
        step, beta2 = _number(t), float(group["betas"][1])
        v_hat = v.double() / (1.0 - beta2**step) if step > 0 else v.double()
    elif "square_avg" in buffers:
        v_hat = buffers["square_avg"].double()
        if "grad_avg" in buffers:
            v_hat = v_hat - buffers["grad_avg"].double() ** 2
    elif "sum" in buffers and t is not None:
        lr = lr / (1.0 + (_number(t) - 1.0) * float(group.get("lr_decay", 0.0)))
        v_hat = buffers["sum"].double()
    else:
        return None
    out: torch.Tensor = lr / (v_hat.detach().clamp_min(0).sqrt() + eps)
    return out


def _step_size(buffers: Mapping[str, Any], group: Mapping[str, Any]) -> dict[str, float] | None:
    """Percentiles of lr / (sqrt(v_hat) + eps) for adaptive rules, else None."""
    sizes = effective_step_size(buffers, group)
    return None if sizes is None else _percentiles(sizes)


def _buffer_info(name: str, value: Any) -> BufferInfo:
    if isinstance(value, torch.Tensor):
        return BufferInfo(name, str(value.dtype).removeprefix("torch."), tuple(value.shape),
                          value.numel() * value.element_size())
    return BufferInfo(name, type(value).__name__, (), 0)


def _moment_stats(buffers: Mapping[str, Any]) -> tuple[float | None, float | None]:
    m = next((buffers[k] for k in sorted(FIRST_MOMENT) if isinstance(buffers.get(k), torch.Tensor)),
             None)
    v = next((buffers[k] for k in sorted(SECOND_MOMENT)
              if isinstance(buffers.get(k), torch.Tensor)), None)
    mean_abs_m = None if m is None or not m.numel() else m.detach().abs().double().mean().item()
    rms_v = None if v is None or not v.numel() else v.detach().double().pow(2).mean().sqrt().item()
    return _finite(mean_abs_m), _finite(rms_v)


def _finite(x: float | None) -> float | None:
    """None for a missing or non-finite statistic, so that ``to_dict`` stays strict JSON."""
    return x if x is not None and math.isfinite(x) else None


def decoded_buffers(buffers: Mapping[str, Any], numel: int) -> dict[str, Any]:
    """``buffers`` with lean state's codes and scales decoded to float32 moments (statistics)."""
    out = dict(buffers)
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"):
        if name not in out and f"{name}_codes" in out:
            out[name] = read_buffer(out, name, numel)
    return out


def report_from_named(named: Mapping[str, Any],
                      params: Mapping[str, tuple[str, int]]) -> StateReport:
    """Build a :class:`StateReport` from a named state dict.

    Args:
        named: from :func:`steplab.state.named_state_dict` (or read from a checkpoint).
        params: each parameter's ``(dtype, bytes)``, by name.

    Returns:
        The report, parameters in group order.
    """
    named = migrate_named(named)
    rows: list[ParamState] = []
    for g_index, group in enumerate(named["param_groups"]):
        for name in group["params"]:
            saved = dict(named["state"].get(name, {}))
            buffers = {k: v for k, v in saved.items() if k not in SLOW_KEYS}
            extra = {f"lookahead.{k}": v for k, v in saved.items() if k in SLOW_KEYS}
            infos = tuple(_buffer_info(k, v) for k, v in {**buffers, **extra}.items())
            shape = tuple(named["param_shapes"].get(name, ()))
            decoded = decoded_buffers(buffers, math.prod(shape))
            mean_abs_m, rms_v = _moment_stats(decoded)
            step = buffers.get("step")
            dtype, nbytes = params.get(name, ("?", 0))
            rows.append(ParamState(
                name, g_index, shape, dtype, nbytes, infos,
                None if step is None else _number(step), mean_abs_m, rms_v,
                _step_size(decoded, group)))
    groups = tuple({k: _json_value(v) for k, v in g.items() if k != "params"}
                   for g in named["param_groups"])
    label = str(named.get("spec") or named.get("optimizer"))
    is_la = any("lookahead_step" in g for g in named["param_groups"])
    if is_la and not named.get("spec"):
        label = f"Lookahead({label})"
    return StateReport(label, tuple(rows), groups)


def inspect(optimizer: torch.optim.Optimizer, model: nn.Module | None = None) -> StateReport:
    """Report what ``optimizer`` keeps for each parameter, and how big it is.

    Args:
        optimizer: any ``torch.optim.Optimizer``, a steplab ``Lookahead`` included.
        model: names the parameters; without it, the groups' ``param_names``
            (set by :func:`steplab.optim.create_optimizer`) or ``param_<i>``.

    Returns:
        A :class:`StateReport` (print it with rich, or ``to_dict()`` for JSON).

    Raises:
        StateMismatchError: if ``model`` is given and does not own the optimizer's parameters.
    """
    all_params = [p for group in optimizer.param_groups for p in group["params"]]
    if model is not None:
        named = named_state_dict(optimizer, model)
    else:
        start, group_names = 0, []
        for group in optimizer.param_groups:
            count = len(group["params"])
            names = group.get("param_names") or [f"param_{start + i}" for i in range(count)]
            group_names.append(list(names))
            start += count
        named = named_state_dict_for(optimizer, group_names)
    flat = [n for g in named["param_groups"] for n in g["params"]]
    sizes = {n: (str(p.dtype).removeprefix("torch."), p.numel() * p.element_size())
             for n, p in zip(flat, all_params, strict=True)}
    return report_from_named(named, sizes)


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint, or what ``latest()`` returns for a (sharded) checkpointer's root.

    Raises:
        CheckpointError: a root holding no complete checkpoint.
    """
    if not path.is_dir() or (path / MANIFEST).exists() or (path / "metadata.json").exists():
        return path
    steps = sorted(p for p in path.glob("step-*") if p.is_dir())
    if not steps:
        return path
    from steplab.state.checkpointer import Checkpointer
    from steplab.state.sharded_checkpointer import ShardedCheckpointer
    from steplab.state.sharded_load import is_sharded  # they import this layer's named code

    root = ShardedCheckpointer(path) if is_sharded(steps[-1]) else Checkpointer(path)
    latest = root.latest()
    if latest is None:
        raise CheckpointError(f"path: {path} holds no complete checkpoint")
    return latest


def _inspect_sharded(root: Path) -> StateReport:
    """:func:`inspect_checkpoint` of a distributed checkpoint (its tensors assembled)."""
    from steplab.state.sharded_load import read_sharded  # it imports this layer's named code

    contents = read_sharded(root)
    sizes = {k: (str(t.dtype).removeprefix("torch."), t.numel() * t.element_size())
             for k, t in contents.model.items()}
    shapes = {k: list(t.shape) for k, t in contents.model.items()}
    named = contents.optimizer or {
        "format": FORMAT, "optimizer": "no optimizer state", "state": {},
        "param_shapes": shapes, "param_groups": [{"params": list(shapes)}]}
    if named.get("optimizer") is None:
        named = {**named, "optimizer": "sharded checkpoint"}
    meta = contents.metadata
    return replace(report_from_named(named, sizes),
                   source=f"{root.name}, step {meta['step']}, {meta['world_size']} ranks")


def inspect_checkpoint(path: str | os.PathLike[str]) -> StateReport:
    """Report the optimizer state in a checkpoint on disk, without the model.

    Args:
        path: a checkpoint directory (single-process, or distributed: rank files and
            ``metadata.json``), or a Checkpointer root (its latest good checkpoint).

    Returns:
        A :class:`StateReport`; parameter sizes come from the checkpoint's
        ``model/<name>`` tensors. Without optimizer state, every model tensor is
        listed with no buffers.

    Raises:
        CheckpointError: if the checkpoint is missing, corrupt or not a checkpoint.
    """
    root = resolve_checkpoint(Path(path))
    if root.is_dir() and not (root / MANIFEST).exists() and (root / "metadata.json").exists():
        return _inspect_sharded(root)
    ckpt = open_checkpoint(root)
    tensors = read_tensors(ckpt.tensors_path, ckpt.header, ckpt.expected_digests)
    sizes = {k.removeprefix("model/"): (str(t.dtype).removeprefix("torch."),
                                         t.numel() * t.element_size())
             for k, t in tensors.items() if k.startswith("model/")}
    manifest = ckpt.manifest
    if manifest.get("optimizer") is None:
        shapes = {k.removeprefix("model/"): list(t.shape) for k, t in tensors.items()
                  if k.startswith("model/")}
        named: dict[str, Any] = {"format": FORMAT, "optimizer": "no optimizer state", "state": {},
                                 "param_shapes": shapes, "param_groups": [{"params": list(shapes)}]}
    else:
        named = decode(manifest["optimizer"], tensors)
    try:
        report = report_from_named(named, sizes)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{MANIFEST} optimizer: malformed ({exc})") from None
    return replace(report, source=f"{ckpt.path.name}, step {manifest['step']}")
