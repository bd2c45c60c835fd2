"""Test hooks for the processes ``steplab train --nproc 2`` starts in ``test_train_crash.py``.

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``; the crash
tests put this directory there, so the launcher and every rank it starts run
this file. It does nothing unless ``STEPLAB_CRASH_DIR`` is set. Then:

- every process registers the ``tiny-dropout`` task (``dist_fit_checks``);
- each rank writes its pid to ``$STEPLAB_CRASH_DIR/pid-rank<r>`` and, once it
  has joined the process group, the addresses every listening TCP socket of
  its own and of the launcher is bound to (``listen-rank<r>.json``);
- ``STEPLAB_CRASH_STALL_AT=<step>``: every rank stops before training that
  step, touches ``stalled-rank<r>`` and sleeps until it is killed;
- ``STEPLAB_CRASH_STALL_SAVE=<n>:<rank>``: that rank stops in the middle of
  writing its file of the n-th checkpoint save (after the first data chunk is
  on disk), touches ``stalled-save`` and sleeps until it is killed;
- ``STEPLAB_CRASH_RAISE_AT=<step>:<rank>``: that rank raises ``ValueError``
  (a bug of its own) before training that step;
- ``STEPLAB_CRASH_GLOBAL_ORDER=1``: the negative control. Each epoch's data
  order is drawn from the global torch random stream instead of the loader's
  own generator (as a loader without its own generator does), so it depends on
  the random state when the epoch starts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

_DIR = os.environ.get("STEPLAB_CRASH_DIR")


def _stall(flag: Path) -> None:
    flag.touch()
    while True:  # until the test's SIGKILL
        time.sleep(1)


def _listening(pid: int) -> list[str]:
    """``address:port`` of each listening TCP socket that process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.append(f"{_address(address)}:{int(port, 16)}")
    return found


def _address(hexa: str) -> str:
    raw = bytes.fromhex(hexa)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1].hex() for i in range(0, 16, 4)]  # /proc stores 32-bit words
    return ":".join("".join(words)[i:i + 4] for i in range(0, 32, 4))


def _install(out: Path) -> None:
    import dist_fit_checks  # noqa: F401  # registers tiny-dropout

    if "WORLD_SIZE" not in os.environ:
        return  # the launcher
    rank = int(os.environ["RANK"])
    (out / f"pid-rank{rank}").write_text(str(os.getpid()))
    import steplab.train.distributed as distributed
    import steplab.train.session as session

    join = distributed.join

    def joined(*args: Any, **kwargs: Any) -> Any:
        world = join(*args, **kwargs)
        facts = {"master_addr": os.environ.get("MASTER_ADDR"),
                 "master_port": os.environ.get("MASTER_PORT"),
                 "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
                 "rank": _listening(os.getpid()), "launcher": _listening(os.getppid())}
        (out / f"listen-rank{rank}.json").write_text(json.dumps(facts))
        return world

    session.join = joined  # type: ignore[assignment]
    if os.environ.get("STEPLAB_CRASH_STALL_AT"):
        _stall_at(out, rank, int(os.environ["STEPLAB_CRASH_STALL_AT"]))
    if os.environ.get("STEPLAB_CRASH_STALL_SAVE"):
        nth, who = (int(v) for v in os.environ["STEPLAB_CRASH_STALL_SAVE"].split(":"))
        if rank == who:
            _stall_save(out, nth)
    if os.environ.get("STEPLAB_CRASH_RAISE_AT"):
        step, who = (int(v) for v in os.environ["STEPLAB_CRASH_RAISE_AT"].split(":"))
        if rank == who:
            _raise_at(step)
    if os.environ.get("STEPLAB_CRASH_GLOBAL_ORDER") == "1":
        import torch

        from steplab.train.batches import BatchStream

        def from_global(self: BatchStream, epoch: int) -> torch.Tensor:
            return torch.randperm(self.n).to(self.device)

        BatchStream._permutation = from_global  # type: ignore[method-assign]


def _stall_at(out: Path, rank: int, step: int) -> None:
    import steplab.train.loop as loop

    train_step = loop._Loop.train_step

    def stalling(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.step + 1 == step:
            _stall(out / f"stalled-rank{rank}")
        return train_step(self, *args, **kwargs)

    loop._Loop.train_step = stalling  # type: ignore[method-assign]


def _raise_at(step: int) -> None:
    import steplab.train.loop as loop

    train_step = loop._Loop.train_step

    def raising(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.step + 1 == step:
            raise ValueError(f"injected failure before step {step}")
        return train_step(self, *args, **kwargs)

    loop._Loop.train_step = raising  # type: ignore[method-assign]


def _stall_save(out: Path, nth: int) -> None:
    import steplab.state.sharded as sharded
    import steplab.state.tensorfile as tensorfile

    write_tensors, write_all = sharded.write_tensors, tensorfile._write_all
    saves, writes = [0], [0]  # write_tensors calls (saves); _write_all calls in the n-th

    def counting(*args: Any, **kwargs: Any) -> Any:
        saves[0] += 1
        return write_tensors(*args, **kwargs)

    def partial(fd: int, view: memoryview) -> None:
        write_all(fd, view)
        if saves[0] == nth:
            writes[0] += 1
            if writes[0] == 2:  # the header, then one chunk of data: mid-file
                os.fsync(fd)
                _stall(out / "stalled-save")

    sharded.write_tensors = counting  # type: ignore[assignment]
    tensorfile._write_all = partial  # type: ignore[assignment]


if _DIR:
    _install(Path(_DIR))
