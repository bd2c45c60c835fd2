"""Worker code for the sharded-checkpoint tests: FSDP2, ZeRO and DDP runs on 2 gloo ranks.

Every rank sees the same batch, so the averaged gradients equal one process's
exactly and a 2-rank run is bit-equal to a 1-process run of the same setup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from steplab.optim import Lookahead
from steplab.state.sharded import save_sharded
from steplab.state.sharded_load import load_sharded
from steplab.train.teardown import exit_process

MODES = ("fsdp", "zero", "ddp")


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))  # 5 rows: uneven shards


def inner_factory(mode: str) -> Any:
    if mode == "ddp":
        return lambda params, **kw: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return lambda params, **kw: torch.optim.AdamW(params, lr=0.02)


def lookahead(mode: str, params: Any) -> Lookahead:
    return Lookahead(inner_factory(mode)(params), k=3, alpha=0.5, pullback="pullback")


def build(mode: str, distributed: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model and optimizer of ``mode``; plain ones for one process."""
    model = net()
    if not distributed:
        return model, lookahead(mode, model.parameters())
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model[0])
        fully_shard(model[2])
        fully_shard(model)
        return model, lookahead(mode, model.parameters())
    wrapped = nn.parallel.DistributedDataParallel(model)
    if mode == "zero":
        from torch.distributed.optim import ZeroRedundancyOptimizer

        def local(params: Any, **_: Any) -> Lookahead:
            return lookahead(mode, params)

        return wrapped, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=local)
    return wrapped, lookahead(mode, model.parameters())


def train(model: nn.Module, opt: torch.optim.Optimizer, start: int, steps: int) -> None:
    for step in range(start, start + steps):
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def full_params(model: nn.Module) -> list[list[float]]:
    out = []
    for p in model.parameters():
        v = p.detach()
        v = v.full_tensor() if hasattr(v, "full_tensor") else v
        out.append(v.flatten().tolist())
    return out


def worker(rank: int, out: str) -> None:
    """At world size 2, each mode: the uninterrupted run (4 steps, save, 5 more steps), then
    the world-size-1 checkpoint loaded and 5 steps on. Rank 0 writes both parameter sets."""
    # a file store: no port to pick and lose to another process before rank 0 binds it
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    uninterrupted, resumed = {}, {}
    for mode in MODES:
        model, opt = build(mode, True)
        train(model, opt, 0, 4)
        save_sharded(Path(out) / f"{mode}-ws2", model=model, optimizer=opt, step=4,
                     extra={"mode": mode})
        train(model, opt, 4, 5)
        uninterrupted[mode] = full_params(model)
        model, opt = build(mode, True)
        meta = load_sharded(Path(out) / f"{mode}-ws1", model=model, optimizer=opt)
        train(model, opt, int(meta["step"]), 5)
        resumed[mode] = full_params(model)
    if rank == 0:
        (Path(out) / "uninterrupted.json").write_text(json.dumps(uninterrupted))
        (Path(out) / "resumed-ws2.json").write_text(json.dumps(resumed))
    exit_process(0)  # leaves the group; no interpreter teardown for gloo to abort
