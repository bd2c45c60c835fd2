"""Ending a process that joined a torch.distributed process group, without a crash at exit.

torch's gloo backend runs each collective on a worker thread of the process
group. When a collective finishes, its worker releases the tensors it held;
a tensor whose Python object is gone by then (the output of a collective the
caller dropped, as FSDP's and DTensor's gathers do) needs the GIL to be freed.
If the main thread has meanwhile reached the interpreter's teardown, Python
ends any thread that asks for the GIL, here mid-destructor, and the C++
runtime aborts the process: SIGABRT, "terminate called without an active
exception", after the run itself succeeded (pytorch/pytorch#179291 describes
the same teardown race). While anything still holds the process group (a
wrapped model does), ``destroy_process_group`` leaves its worker threads
running, so leaving the group does not prevent it. On 2 busy cores it ended
about one full test run in three.

Two remedies:

- :func:`exit_process` (the ``steplab`` CLI in a rank, and any script that
  owns its process): flush the output and end the process at once, with no
  interpreter teardown for a worker thread to trip over. Certain.
- An exit hook that :func:`mark_joined` registers (library use, e.g.
  :func:`steplab.train.fit` under the user's own ``torchrun``): at exit, before
  the teardown, leave the group, collect garbage (a model's reference cycles
  can hold the last reference to the group; freeing it joins the worker
  threads) and release the GIL for a moment so a worker waiting on it can
  finish. This narrows the window; only :func:`exit_process` closes it.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import sys
import time
from typing import NoReturn

import torch.distributed as dist

__all__ = ["exit_process", "joined", "mark_joined"]

_SETTLE_S = 0.05  # the GIL left free at exit for a worker thread still releasing tensors
_joined = False


def joined() -> bool:
    """True once this process has joined a process group through steplab."""
    return _joined


def mark_joined() -> None:
    """Record that this process joined a process group; the first call registers the exit hook."""
    global _joined
    if not _joined:
        _joined = True
        atexit.register(_settle)


def _leave_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _settle() -> None:
    """Exit hook: leave the group, free what holds it, let its worker threads finish."""
    _leave_group()
    gc.collect()
    time.sleep(_SETTLE_S)


def exit_process(code: int) -> NoReturn:
    """End this process now with ``code``, after flushing its output (module docstring).

    Leaves the process group, flushes ``logging``, standard output and standard
    error, then calls ``os._exit``: ``atexit`` hooks and the interpreter's
    teardown do not run, so files the caller opened must be closed first.
    """
    try:
        _leave_group()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # closed, or its reader is gone
                stream.flush()
        os._exit(code)
