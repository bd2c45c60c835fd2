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

Why a size and not a timer: the compile is paid once per process (about 1-3 s
of CPU with a warm on-disk cache, 10-60 s cold), the saving per step is about
1 ns per parameter element on CPU. Below a million elements a run would need
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

__all__ = ["COMPILE_ENV", "MIN_COMPILED_ELEMENTS", "SINGLE_PASS_RULES", "single_pass_choice"]

#: environment variable: ``auto`` (default), ``always`` or ``never``
COMPILE_ENV = "STEPLAB_COMPILE"
#: parameter elements from which ``auto`` takes the compiled step
MIN_COMPILED_ELEMENTS = 1_000_000
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


def single_pass_choice(name: str, elements: int, device_type: str = "cpu") -> tuple[bool, str]:
    """Whether ``create_optimizer`` takes the compiled single-pass step, and why.

    Args:
        name: the registry name (``"rmsprop"``).
        elements: parameter elements the optimizer will hold.
        device_type: where they live (``"cpu"``, ``"cuda"``).

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
    mode = compile_mode()
    if mode == "never":
        return False, f"{COMPILE_ENV}=never"
    problem = compiler_problem(device_type)
    if problem is not None:
        return False, problem
    if mode == "always":
        return True, f"{COMPILE_ENV}=always"
    if elements < MIN_COMPILED_ELEMENTS:
        limit = f"{MIN_COMPILED_ELEMENTS / 1e6:g}M"
        return False, f"below {limit} parameter elements the compile does not pay"
    return True, f">= {MIN_COMPILED_ELEMENTS / 1e6:g}M parameter elements"
