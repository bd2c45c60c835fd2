"""Compile plain tensor update code once, cache it on disk, and fall back when that fails.

A :class:`CompiledKernel` wraps a function written as ordinary in-place tensor
code (``exp_avg.copy_(...)``) and hands it to ``torch.compile`` (inductor: C++
with OpenMP on CPU, Triton on GPU), which fuses it into one loop that reads
each input once and writes each output once. Callers pass 1-D views, compiled
with dynamic shapes and without the usual 0/1 size specialisation, so one graph
serves every tensor size: a model never triggers a recompile by its shapes. The
graph runs :data:`GROUP_SIZE` calls at once (the last group padded with scratch
calls), so a model of many tensors pays the compiled call's Python cost once per
group, not once per tensor.

The compiled code is cached by inductor's FX graph and AOTAutograd caches. Unless
a person set ``TORCHINDUCTOR_CACHE_DIR``, steplab's kernels are compiled with it
pointing at ``$STEPLAB_CACHE_DIR/inductor`` (default ``~/.cache/steplab/inductor``),
which survives reboots, unlike inductor's default under ``/tmp``: a second
process loads the kernel instead of compiling it. Other code's ``torch.compile``
keeps its own directory.

If compiling fails (no C++ compiler, no Triton, an inductor error) the kernel
reports it once with a ``RuntimeWarning`` and says so from then on; callers
then take torch's own path.

>>> import os
>>> str(cache_dir()).endswith("steplab") or "STEPLAB_CACHE_DIR" in os.environ
True
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
import types
import warnings
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CACHE_ENV",
    "GROUP_SIZE",
    "CompiledKernel",
    "cache_dir",
    "compiler_problem",
    "inductor_cache_dir",
]

#: environment variable naming steplab's cache directory
CACHE_ENV = "STEPLAB_CACHE_DIR"
#: calls one compiled invocation runs (padded with scratch calls): the Python cost of a
#: compiled call (about 30 µs: guards, wrappers) is paid once per group instead of once
#: per tensor, which measured 14% of an 8M-element RMSprop step over 20 tensors
GROUP_SIZE = 8
#: the torch.compile backend of kernels created from now on (a test swaps in one that
#: fails, to check the fallback; kernels already made keep theirs)
BACKEND: str | Callable[..., Any] = "inductor"


def cache_dir() -> Path:
    """steplab's on-disk cache: ``$STEPLAB_CACHE_DIR``, else ``~/.cache/steplab``.

    Returns:
        The directory (not created here).
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "steplab"


def inductor_cache_dir() -> Path:
    """Where steplab's kernels are cached: the user's ``TORCHINDUCTOR_CACHE_DIR``, else ours.

    torch sets ``TORCHINDUCTOR_CACHE_DIR`` to its ``/tmp`` default the first time
    any optimizer is built, so that value counts as unset.

    Returns:
        ``$TORCHINDUCTOR_CACHE_DIR`` when a person chose it, else
        ``cache_dir() / "inductor"``.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return Path(chosen)
    return cache_dir() / "inductor"


@contextlib.contextmanager
def _inductor_cache() -> Iterator[None]:
    """Point inductor's caches at :func:`inductor_cache_dir` while we compile."""
    path = inductor_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


@functools.lru_cache(maxsize=8)
def compiler_problem(device_type: str) -> str | None:
    """Why kernels cannot be compiled for a device type, or None when they can.

    Args:
        device_type: ``"cpu"``, ``"cuda"``, ...

    Returns:
        A short reason (``"no C++ compiler found"``) or None.

    Example:
        >>> compiler_problem("meta")
        'inductor does not generate code for meta tensors'
    """
    if device_type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as exc:  # inductor raises several kinds when none is found
            return f"no C++ compiler found ({type(exc).__name__})"
        return None
    if device_type in ("cuda", "xpu"):
        from torch.utils._triton import has_triton

        return None if has_triton() else "triton is not installed"
    return f"inductor does not generate code for {device_type} tensors"


def _reason(exc: BaseException) -> str:
    """One line naming what went wrong inside a compile (dynamo wraps the cause)."""
    inner = getattr(exc, "inner_exception", None) or exc
    lines = str(inner).strip().splitlines() or [""]
    return f"{type(inner).__name__}: {lines[0][:200]}"


@contextlib.contextmanager
def _wide_lowp_tiling() -> Iterator[None]:
    """While compiling, tile CPU loops that load bf16/fp16 by that type's lane count.

    Inductor tiles a loop by the float32 lane count (16 on AVX-512) unless every
    node of the fused loop loads the low-precision type; a loop that also
    computes on float32 parameters then moves bf16 data in half registers,
    with masked loads and stores, which measured twice as slow as the full-width
    loop on this machine's AVX-512 CPU (benchmarks/lean_state.py). Float32
    values are then carried in pairs of registers, as inductor does for its
    all-bf16 loops; only the vector width changes, not the arithmetic. Where
    inductor's internals differ (another torch version) nothing is patched.
    """
    try:
        from torch._inductor import cpu_vec_isa
        from torch._inductor.codegen import cpp
        select = cpp.TilingSelect.select_tiling
        lowp_of = cpp.get_loop_body_lowp_fp
        bodies_of = cpp._get_loop_body  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        yield
        return

    def select_tiling(self: Any, fn_list: Any, var_sizes_list: Any) -> Any:
        factors, indices, stats = select(self, fn_list, var_sizes_list)
        bodies = bodies_of(fn_list)  # type: ignore[no-untyped-call]
        lowp = [d for d in {lowp_of(body)[0] for body in bodies} if d is not None]
        if factors and len(lowp) == 1:
            wide = cpu_vec_isa.pick_vec_isa().nelements(dtype=lowp[0])
            factors = [max(f, wide) for f in factors]
        return factors, indices, stats

    cpp.TilingSelect.select_tiling = select_tiling  # type: ignore[method-assign]
    try:
        yield
    finally:
        cpp.TilingSelect.select_tiling = select  # type: ignore[method-assign]


def _static(t: torch.Tensor) -> torch.Tensor:
    torch._dynamo.mark_static(t, 0)
    return t


def _grouped(fn: Callable[..., None], arity: int, hp_index: int) -> Callable[..., None]:
    """``fn`` over GROUP_SIZE calls, as a function with a code object of its own.

    The calls come without their hyperparameters, which are the rows of one stacked
    tensor (calls sharing a hyperparameter tensor would otherwise be aliased inputs,
    a recompile). Dynamo keeps its compiled graphs, and its recompile limit, per code
    object: one shared by every kernel would reach the limit across kernels.
    """
    width = arity - 1

    def grouped(hps: torch.Tensor, *args: Any) -> None:
        for i in range(GROUP_SIZE):
            call = list(args[i * width:(i + 1) * width])
            call.insert(hp_index, hps[i])
            fn(*call)

    code = grouped.__code__.replace(co_name=f"grouped_{fn.__name__}")
    return types.FunctionType(code, grouped.__globals__, code.co_name, None,
                              grouped.__closure__)


class CompiledKernel:
    """One update function, compiled on first use per (variant, dtype, device).

    Args:
        name: what the kernel computes, for warnings (``"rmsprop"``).
        fn: plain in-place tensor code over 1-D tensors; it must also run eagerly.
            Optional buffers are positional arguments that may be None.
        hp_index: position of the 1-D hyperparameter tensor among ``fn``'s arguments.
        read_only: positions of the other arguments ``fn`` only reads (the
            gradient); every other tensor argument is written in place.
        wide_lowp: on CPU, vectorise loops that load bf16/fp16 with as many
            lanes as a register holds of that type (see :func:`_wide_lowp_tiling`).

    Example:
        >>> def axpy(y, x, a):
        ...     y.copy_(y + a[0] * x)
        >>> kernel = CompiledKernel("axpy", axpy, hp_index=2)
        >>> y = torch.zeros(3)
        >>> kernel.eager(y, torch.ones(3), torch.tensor([2.0]))
        >>> y
        tensor([2., 2., 2.])
    """

    def __init__(
        self, name: str, fn: Callable[..., None], hp_index: int, read_only: tuple[int, ...] = (),
        wide_lowp: bool = False,
    ) -> None:
        self.name = name
        self.wide_lowp = wide_lowp
        self.hp_index = hp_index
        self.read_only = frozenset((hp_index, *read_only))
        self.eager = fn
        self.failure: str | None = None
        #: seconds the first call of each compiled variant took (compile or cache load)
        self.compile_seconds: dict[Hashable, float] = {}
        self._compiled: Callable[..., None] | None = None
        self._warned = False
        self._backend = BACKEND
        self._grouped = _grouped(fn, len(inspect.signature(fn).parameters), hp_index)
        self._pads: dict[Hashable, list[tuple[Any, ...]]] = {}


    def ready(self, key: Hashable, example: tuple[Any, ...], device: torch.device) -> bool:
        """Compile the variant ``key`` by calling it once on ``example`` scratch tensors.

        Args:
            key: identifies the variant (which optional buffers, dtype, device).
            example: arguments shaped like a real call, on scratch tensors.
            device: where the tensors live.

        Returns:
            True when the compiled kernel can be called for this variant; False
            (after one RuntimeWarning per process) when compiling failed.
        """
        if key in self.compile_seconds:
            return True
        if self.failure is None:
            self.failure = compiler_problem(device.type)
        if self.failure is None:
            try:
                start = time.perf_counter()
                self._compile_call(example)
                self.compile_seconds[key] = time.perf_counter() - start
                return True
            except Exception as exc:  # any compiler error means: use torch's path
                self.failure = _reason(exc)
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"steplab: the single-pass {self.name} step could not be compiled "
                f"({self.failure}); using torch's implementation instead",
                RuntimeWarning,
                stacklevel=3,
            )
        return False

    def scratch(self, call: tuple[torch.Tensor | None, ...], size: int = 8
                ) -> tuple[torch.Tensor | None, ...]:
        """Arguments like ``call`` on small scratch tensors (the hyperparameters copied).

        Args:
            call: a real call's positional arguments.
            size: elements of each scratch tensor.

        Returns:
            The same arguments on fresh tensors, safe to update.
        """
        return tuple(
            None
            if t is None
            else _static(t.clone())
            if i == self.hp_index
            else torch.zeros(size, dtype=t.dtype, device=t.device)
            for i, t in enumerate(call)
        )

    def _compile_call(self, example: tuple[Any, ...]) -> None:
        from torch.fx.experimental import _config as fx_config

        if self._compiled is None:
            self._compiled = torch.compile(
                self._grouped, backend=self._backend, dynamic=True, fullgraph=True
            )
        from torch._inductor import config as inductor_config

        # one small kernel: compile it in this process instead of starting a worker pool;
        # size-oblivious: treat every length alike instead of specialising 0 and 1,
        # so the graph traced here (guards included) serves all lengths later
        with (
            _inductor_cache(),
            inductor_config.patch(compile_threads=1),
            fx_config.patch(backed_size_oblivious=True),  # type: ignore[attr-defined]
            _wide_lowp_tiling() if self.wide_lowp else contextlib.nullcontext(),
            torch.no_grad(),
        ):
            # a different length per call: tracing equal lengths would share one symbol
            # ("duck sizing") and guard every call of a group to the same length
            calls = [example, *(self.scratch(example, 9 + i) for i in range(GROUP_SIZE - 1))]
            self._invoke(calls)

    def _invoke(self, calls: list[tuple[Any, ...]]) -> None:
        """One compiled invocation over exactly GROUP_SIZE calls."""
        assert self._compiled is not None, "call ready() before the kernel"
        hps = torch.stack([call[self.hp_index] for call in calls])
        torch._dynamo.mark_static(hps)
        rest = [t for call in calls for i, t in enumerate(call) if i != self.hp_index]
        self._compiled(hps, *rest)

    def run(self, key: Hashable, calls: list[tuple[Any, ...]]) -> None:
        """Run calls of the compiled variant ``key`` (see :meth:`ready`), GROUP_SIZE at a time.

        The last group is padded with calls on small scratch tensors kept per variant.

        Args:
            key: the variant every call belongs to.
            calls: positional arguments of ``fn``, 1-D tensors (flat aliases).
        """
        for start in range(0, len(calls), GROUP_SIZE):
            group = calls[start:start + GROUP_SIZE]
            if len(group) < GROUP_SIZE:
                if key not in self._pads:
                    self._pads[key] = [self.scratch(group[0], 9 + i)
                                       for i in range(GROUP_SIZE - 1)]
                group = group + self._pads[key][:GROUP_SIZE - len(group)]
            self._invoke(group)

    def written(self, call: tuple[Any, ...]) -> list[torch.Tensor]:
        """The tensors among a call's arguments that the kernel updates in place.

        Args:
            call: a call's positional arguments (the real tensors, not aliases).

        Returns:
            Those the kernel writes, for :func:`torch.autograd.graph.increment_version`:
            writes through a flat alias are invisible to autograd's version counters.
        """
        return [t for i, t in enumerate(call) if t is not None and i not in self.read_only]
