"""Which implementation each rule takes on this machine, and why.

torch's fused kernels are picked wherever they exist (see
:data:`steplab.optim.factory.FASTEST_IMPLEMENTATION`). RMSprop and NAdam have
none; for them steplab's single-pass compiled step
(:mod:`steplab.optim.single_pass`) is taken when it pays for its compile:

* ``STEPLAB_COMPILE=never`` never compiles; ``always`` compiles for any size;
  ``auto`` (the default) compiles once the optimizer holds at least
  :data:`MIN_COMPILED_ELEMENTS` parameter elements.
* without a compiler for the parameters' device (no C++ compiler on CPU, no
  Triton on GPU) torch's path is taken.

Why a size and not a timer: the compile is paid once per process (about 3 s
of CPU with a warm on-disk cache, about 13 s cold, measured by
``benchmarks/compile_cost.py``), the saving per step about 0.7 ns per
parameter element on CPU. Below a million elements a run would need
many thousands of steps to win back even the warm-cache start, so small
models (every built-in task, the default ``steplab compare`` study) keep
torch's path and start at once. A rule that switched paths when a background
compile finished would make a run's result depend on timing; a size threshold
keeps "same spec, same machine, same result".

>>> single_pass_choice("adam", 10**7)
(False, 'torch has a fused kernel')
"""

from __future__ import annotations

import os

from steplab.optim.compiler import compiler_problem

__all__ = [
    "COMPILE_ENV",
    "MIN_COMPILED_ELEMENTS",
    "MIN_MEAN_TENSOR_ELEMENTS",
    "SINGLE_PASS_RULES",
    "auto_size_problem",
    "compile_choice",
    "fused_step_choice",
    "single_pass_choice",
]

#: environment variable: ``auto`` (default), ``always`` or ``never``
COMPILE_ENV = "STEPLAB_COMPILE"
#: parameter elements from which ``auto`` takes the compiled step
MIN_COMPILED_ELEMENTS = 1_000_000
#: mean elements per tensor from which ``auto`` compiles: a compiled call costs about
#: 30 us of Python per tensor against torch foreach's ~15 us, which the single pass
#: wins back only on larger tensors (RMSprop and NAdam on one CPU thread: compiled 1.6x
#: and 1.0x torch foreach at 4,096 elements per tensor, 0.6x and 0.8x at 16,384)
MIN_MEAN_TENSOR_ELEMENTS = 8192
#: rules that have a single-pass compiled step
SINGLE_PASS_RULES: tuple[str, ...] = ("rmsprop", "nadam")
_MODES = ("auto", "always", "never")


def compile_mode() -> str:
    """The ``STEPLAB_COMPILE`` setting, ``"auto"`` when unset or unknown.

    Returns:
        ``"auto"``, ``"always"`` or ``"never"``.
    """
    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    return mode if mode in _MODES else "auto"


def single_pass_choice(name: str, elements: int, device_type: str = "cpu", tensors: int = 1
                       ) -> tuple[bool, str]:
    """Whether ``create_optimizer`` takes the compiled single-pass step, and why.

    Args:
        name: the registry name (``"rmsprop"``).
        elements: parameter elements the optimizer will hold.
        device_type: where they live (``"cpu"``, ``"cuda"``).
        tensors: how many tensors hold them.

    Returns:
        ``(take_it, reason)``; the reason is one short phrase.

    Example:
        >>> import os
        >>> os.environ.get("STEPLAB_COMPILE", "auto") != "auto" or single_pass_choice(
        ...     "rmsprop", 1000)[1] == "below 1M parameter elements the compile does not pay"
        True
    """
    if name not in SINGLE_PASS_RULES:
        return False, "torch has a fused kernel" if name not in ("gd", "sgd") else "one foreach op"
    return compile_choice(elements, device_type, tensors)


def auto_size_problem(elements: int, tensors: int = 1) -> str | None:
    """Why ``auto`` does not compile for ``elements`` in ``tensors`` tensors, or None.

    >>> auto_size_problem(10**7, tensors=10**4).startswith("tensors of under 8,192 elements")
    True
    >>> auto_size_problem(10**7, tensors=20) is None
    True
    """
    if elements < MIN_COMPILED_ELEMENTS:
        return f"below {MIN_COMPILED_ELEMENTS / 1e6:g}M parameter elements the compile does not pay"
    if elements < MIN_MEAN_TENSOR_ELEMENTS * max(tensors, 1):
        return (f"tensors of under {MIN_MEAN_TENSOR_ELEMENTS:,} elements on average: "
                "the per-tensor cost of a compiled call does not pay")
    return None


def compile_choice(elements: int, device_type: str = "cpu", tensors: int = 1
                   ) -> tuple[bool, str]:
    """Whether a compiled kernel over ``elements`` parameter elements pays here, and why.

    The rule every compiled step follows: ``STEPLAB_COMPILE=never`` never,
    ``always`` always, ``auto`` from :data:`MIN_COMPILED_ELEMENTS` elements in
    tensors of :data:`MIN_MEAN_TENSOR_ELEMENTS` on average; never without a
    compiler for the device.

    Args:
        elements: parameter elements the optimizer holds.
        device_type: where they live.
        tensors: how many tensors hold them.

    Returns:
        ``(take_it, reason)``; the reason is one short phrase.

    Example:
        >>> import os
        >>> os.environ.get("STEPLAB_COMPILE", "auto") != "auto" or compile_choice(10**7)
        (True, '>= 1M parameter elements')
    """
    mode = compile_mode()
    if mode == "never":
        return False, f"{COMPILE_ENV}=never"
    small = auto_size_problem(elements, tensors) if mode == "auto" else None
    if small is not None:  # before importing inductor
        return False, small
    problem = compiler_problem(device_type)
    if problem is not None:
        return False, problem
    if mode == "always":
        return True, f"{COMPILE_ENV}=always"
    return True, f">= {MIN_COMPILED_ELEMENTS / 1e6:g}M parameter elements"


_PAYS = (f"compiled from {MIN_COMPILED_ELEMENTS / 1e6:g}M elements in tensors of "
         f"{MIN_MEAN_TENSOR_ELEMENTS:,}+ on average, where it pays")

#: the two model sizes `steplab optimizers` reports a path for
SMALL_MODEL, LARGE_MODEL = 100_000, 10_000_000


def implementation_paths(device_type: str = "cpu") -> dict[str, dict[str, str]]:
    """Per rule, the implementation ``create_optimizer`` takes here for a small and a large model.

    Args:
        device_type: where the parameters would live.

    Returns:
        ``{name: {"small": path, "large": path, "why": reason}}`` for every rule;
        paths are ``"fused"``, ``"foreach"``, ``"for-loop"`` or ``"compiled"``
        (for lookahead: ``"inner, then sync"`` or ``"fused k-th step"``, its
        Adam/AdamW k-th step and sync in one compiled pass; for the rows
        ``"state=bf16"`` and ``"state=int8/int4"``: ``"compiled"`` or ``"chunked"``);
        small is 100k float32 elements, large 10M.

    Example:
        >>> implementation_paths()["adamw"]
        {'small': 'fused', 'large': 'fused', 'why': 'torch has a fused kernel'}
    """
    from steplab.optim.factory import FASTEST_IMPLEMENTATION

    paths: dict[str, dict[str, str]] = {}
    for name, impl in FASTEST_IMPLEMENTATION.items():
        torch_path = "for-loop" if impl == "compiled" else impl
        if device_type != "cpu" and torch_path == "for-loop":
            torch_path = "foreach"
        small, _ = single_pass_choice(name, SMALL_MODEL, device_type)
        large, why = single_pass_choice(name, LARGE_MODEL, device_type)
        if small != large:
            why = _PAYS
        paths[name] = {
            "small": "compiled" if small else torch_path,
            "large": "compiled" if large else torch_path,
            "why": why,
        }
    paths["lookahead"] = _lookahead_path(device_type)
    paths.update(_lean_paths(device_type))
    return paths


def _lean_paths(device_type: str) -> dict[str, dict[str, str]]:
    """The lean-state variants of the Adam family (``state=bf16/int8/int4``)."""
    small, _ = compile_choice(SMALL_MODEL, device_type)
    large, why = compile_choice(LARGE_MODEL, device_type)
    chunked = "chunked"
    if small != large:
        why = _PAYS
    return {
        "state=bf16": {
            "small": "compiled" if small else chunked,
            "large": "compiled" if large else chunked,
            "why": f"adam/adamw/amsgrad: one compiled pass over θ, g and the bf16 moments "
            f"({why}); else, and for momentum/nesterov, torch ops over cache-sized chunks",
        },
        "state=int8/int4": {
            "small": chunked, "large": chunked,
            "why": "block-wise codes decoded and re-encoded by plain torch ops over "
            "cache-sized chunks (no compiler needed)",
        },
    }


def fused_step_choice(elements: int, device_type: str = "cpu", tensors: int = 1
                      ) -> tuple[bool, str]:
    """Whether Lookahead(Adam/AdamW) fuses its k-th step with the sync here, and why.

    :func:`compile_choice`'s rule. On CPU the fused k-th step measured 1.12x
    fused AdamW over whole k=5 cycles against 1.21x for torch's step then the
    blocked sync (8M elements in 20 tensors, ``docs/benchmarks.md``), once a
    compiled invocation covered 8 tensors; before that, one invocation per
    tensor made it no faster and ``auto`` kept CPU unfused.

    Args:
        elements: parameter elements the Lookahead holds.
        device_type: where they live.
        tensors: how many tensors hold them.

    Returns:
        ``(take_it, reason)``.

    Example:
        >>> import os
        >>> os.environ.get("STEPLAB_COMPILE", "auto") != "auto" or fused_step_choice(10**4)
        (False, 'below 1M parameter elements the compile does not pay')
    """
    return compile_choice(elements, device_type, tensors)


def _lookahead_path(device_type: str) -> dict[str, str]:
    """Lookahead's path: the k-th step fused with the sync around Adam/AdamW where it pays."""
    unfused = "inner, then sync"
    small, _ = fused_step_choice(SMALL_MODEL, device_type)
    large, why = fused_step_choice(LARGE_MODEL, device_type)
    if not large:
        return {"small": unfused, "large": unfused, "why": why}
    if small != large:
        why = _PAYS
    return {
        "small": "fused k-th step" if small else unfused,
        "large": "fused k-th step",
        "why": f"around adam/adamw/amsgrad the k-th step and the sync are one compiled pass"
        f" (36 bytes/element, not 28 + 16), {why}; other inner rules: inner, then sync",
    }
