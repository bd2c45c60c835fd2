"""One rank of the teardown race (``test_teardown.py``): ``teardown_rank.py RANK STORE MODE``.

Runs collectives whose outputs it drops at once (as FSDP's and DTensor's gathers
do), keeps a reference to the group (as a wrapped model does), and ends at
once: gloo's worker threads are still releasing those outputs, and need the
GIL for it, when the interpreter's teardown starts. A long switch interval
keeps the GIL with the main thread until then, so without a remedy about one
rank in four died with SIGABRT ("terminate called without an active
exception"). MODE picks the remedy: ``exit_process`` or ``hook`` (the exit
hook ``mark_joined`` registers).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from steplab.train import teardown

_HELD: list[object] = []  # the group, referenced until exit (as a wrapped model in a global is)


def main(rank: int, store: str, mode: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    if mode == "hook":
        teardown.mark_joined()
    sys.setswitchinterval(100.0)  # the main thread keeps the GIL until it blocks
    for _ in range(20):
        works = [dist.all_reduce(torch.ones(1000), async_op=True) for _ in range(4)]
        works[-1].wait()
        del works  # the outputs' last references are the workers'
    _HELD.append(dist.group.WORLD)  # still referenced when the exit hook runs
    if mode == "exit_process":
        teardown.exit_process(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
