"""``steplab train --nproc N``: start N training processes on this machine with torch's launcher.

The processes are started by ``torch.distributed.run`` (what ``torchrun``
runs), with a rendezvous on 127.0.0.1, each running ``python -m steplab
train`` with the same options; each joins the process group from the
environment (:func:`steplab.train.distributed.join`). Across machines, run
``torchrun --nnodes ... -m steplab train ...`` yourself: the training code is
the same.

If a process dies, torch's launcher stops the others; :func:`launch` then
raises one :class:`~steplab.errors.SteplabError` naming the rank and how it
ended.
"""

from __future__ import annotations

import os
import signal
import socket

from steplab.errors import SpecError, SteplabError

__all__ = ["launch", "launched"]


def launched() -> bool:
    """True inside a process that torch's launcher started (``WORLD_SIZE`` is set)."""
    return "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _how(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def launch(train_args: list[str], nproc: int) -> None:
    """Run ``steplab train <train_args>`` in ``nproc`` processes; return when all have ended.

    Args:
        train_args: the ``steplab train`` options for every process (without ``--nproc``).
        nproc: number of processes, >= 1.

    Raises:
        SpecError: ``nproc`` < 1.
        SteplabError: a process failed; the message names the first failed rank.
    """
    if nproc < 1:
        raise SpecError(f"nproc: got {nproc}, expected an integer >= 1")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args([
        "--nnodes=1", f"--nproc-per-node={nproc}", "--max-restarts=0",
        "--rdzv-backend=static", "--master-addr=127.0.0.1", f"--master-port={_free_port()}",
        "--node-rank=0", "--monitor-interval=0.5",
        "-m", "steplab", "train", *train_args,
    ])
    try:
        run(args)  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items())
        raise SteplabError(
            f"rank {rank} of {nproc} {_how(failure.exitcode)}; the run was stopped"
            " (the last complete checkpoint, if any, still loads: rerun with --resume)"
        ) from None
