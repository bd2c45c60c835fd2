"""``steplab train --nproc N``: start N training processes on this machine with torch's launcher.

The processes are started by ``torch.distributed.run`` (what ``torchrun``
runs), each running ``python -m steplab train`` with the same options; each
joins the process group from the environment
(:func:`steplab.train.distributed.join`). Across machines, run ``torchrun
--nnodes ... -m steplab train ...`` yourself: the training code is the same.

Nothing listens beyond this machine. torch's static rendezvous binds its
store to every interface whatever the master address, so the launcher uses
that rendezvous with its store on a socket it bound to 127.0.0.1 itself (a
free port, chosen by the kernel); gloo and NCCL are pointed at the loopback
interface (``GLOO_SOCKET_IFNAME``, ``NCCL_SOCKET_IFNAME``, unless set).

If a process dies, torch's launcher stops the others; :func:`launch` then
raises one :class:`~steplab.errors.SteplabError` naming the rank that failed
first and how it ended. If the launcher itself is killed (even by SIGKILL),
the kernel kills the processes it started (:func:`follow_launcher`), so none
trains on alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

from steplab.errors import PeerLostError, SpecError, SteplabError

__all__ = ["follow_launcher", "launch", "launched"]

_LAUNCHER = "STEPLAB_LAUNCHER_PID"  # set for the processes launch() starts
_BACKEND = "steplab-loopback"
_PR_SET_PDEATHSIG = 1


def launched() -> bool:
    """True inside a process that torch's launcher started (``WORLD_SIZE`` is set)."""
    return "WORLD_SIZE" in os.environ


def _loopback_interface() -> str:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS)."""
    names = [name for _, name in socket.if_nameindex()]
    return next((n for n in names if n in ("lo", "lo0")), "lo")


_SERVING: list[socket.socket] = []  # the listening socket of the launch in progress


def _create_rendezvous(params: Any) -> Any:
    """torch's static rendezvous for one node, its store served from the bound socket."""
    from torch.distributed import TCPStore  # type: ignore[attr-defined]
    from torch.distributed.elastic.rendezvous import RendezvousInfo
    from torch.distributed.elastic.rendezvous.static_tcp_rendezvous import StaticTCPRendezvous

    sock = _SERVING[-1]

    class Loopback(StaticTCPRendezvous):
        def get_backend(self) -> str:
            return _BACKEND

        def next_rendezvous(self) -> RendezvousInfo:
            if not self._store:  # the store listens on this socket only: 127.0.0.1
                fd = sock.detach()  # the store owns (and closes) it now
                self._store = TCPStore("127.0.0.1", self.master_port, self.world_size, True,
                                       self.timeout, multi_tenant=True,
                                       master_listen_fd=fd, use_libuv=True)
            info: RendezvousInfo = super().next_rendezvous()
            return info

    return Loopback("127.0.0.1", sock.getsockname()[1], 0, 1, params.run_id, 600)


def _register_rendezvous(sock: socket.socket) -> None:
    """Serve the next rendezvous's store from ``sock`` (bound to 127.0.0.1 by the caller)."""
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    _SERVING[:] = [sock]
    rendezvous_handler_registry.register(_BACKEND, _create_rendezvous)


def follow_launcher() -> None:
    """In a process :func:`launch` started: die with the launcher (Linux), even on its SIGKILL.

    torch's launcher starts each rank in a session of its own, so killing the
    launcher's process group leaves the ranks running; this asks the kernel to
    send SIGKILL to this process when its parent dies. Elsewhere it does nothing.
    """
    launcher = os.environ.get(_LAUNCHER)
    if launcher is None:
        return
    try:
        libc: Any = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: no such call
        return
    if os.getppid() != int(launcher):  # the launcher died before the call above
        os._exit(1)


def _how(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@contextlib.contextmanager
def _launch_environment() -> Iterator[None]:
    """The launched processes' extra environment, set only while they run.

    Gloo and NCCL on the loopback interface and one OpenMP thread per process
    (unless the user chose otherwise), and this process's pid for
    :func:`follow_launcher`.
    """
    loopback = _loopback_interface()
    extra = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),  # torch's default,
             # set here so its launcher does not print 4 lines of warning about setting it
             "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", loopback),
             "NCCL_SOCKET_IFNAME": os.environ.get("NCCL_SOCKET_IFNAME", loopback),
             _LAUNCHER: str(os.getpid())}
    before = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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

    with _launch_environment(), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        _register_rendezvous(sock)
        args = get_args_parser().parse_args([
            "--nnodes=1", f"--nproc-per-node={nproc}", "--max-restarts=0",
            f"--rdzv-backend={_BACKEND}", f"--rdzv-endpoint=127.0.0.1:{sock.getsockname()[1]}",
            "--monitor-interval=0.5", "-m", "steplab", "train", *train_args,
        ])
        try:
            run(args)  # type: ignore[no-untyped-call]
        except ChildFailedError as exc:
            rank, failure = _first_failure(exc.failures)
            raise SteplabError(
                f"rank {rank} of {nproc} {_how(failure.exitcode)}; the run was stopped"
                " (the last complete checkpoint, if any, still loads: rerun with --resume)"
            ) from None


def _first_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """The rank that failed on its own, not one that reacted to it.

    Reactions come last: ranks the launcher stopped (SIGTERM) and ranks that
    saw a peer's connection close (exit code 3, :class:`PeerLostError`). Then
    the earliest failure: torch stamps each with the whole second its 0.5 s
    poll noticed it, so one failure noticed a poll earlier comes first (a rank
    killed later may be the launcher's SIGKILL after its SIGTERM grace period).
    Failures noticed in the same second: a rank killed by a signal (SIGKILL,
    SIGABRT, SIGSEGV) before one that exited with a code, then the lowest rank.
    """
    def order(item: tuple[int, Any]) -> tuple[bool, float, bool, int]:
        code = item[1].exitcode
        reacted = code in (-signal.SIGTERM, PeerLostError.exit_code)
        return reacted, item[1].timestamp, code >= 0, item[0]

    return min(failures.items(), key=order)
