"""Checks of Lookahead under torch.distributed, run in 2 spawned gloo processes.

Each check runs on both ranks and returns a dict of facts; rank 0 writes them to
``<out>/<check>.json`` for the tests in ``test_lookahead_distributed.py`` to
assert. A check that raises records the error instead, so one failure does not
hide the others.
"""

from __future__ import annotations

import io
import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.optim import ZeroRedundancyOptimizer

from steplab.optim import Lookahead
from steplab.train.teardown import exit_process

STEPS = 6


def model_5_rows(seed: int = 0) -> nn.Module:
    """A small net with a 5-row layer: uneven shards on 2 ranks."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))


def batch(step: int) -> torch.Tensor:
    """The same global batch on every rank (so averaged gradients equal one process's)."""
    return torch.randn(8, 3, generator=torch.Generator().manual_seed(100 + step))


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, start: int = 0) -> None:
    for step in range(start, start + steps):
        opt.zero_grad()
        model(batch(step)).pow(2).mean().backward()
        opt.step()


def lookahead_adamw(params: Any, pullback: str = "pullback", **kwargs: Any) -> Lookahead:
    return Lookahead(torch.optim.AdamW(params, lr=0.05, **kwargs), k=3, alpha=0.5,
                     pullback=pullback)


def reference(steps: int, pullback: str = "pullback") -> tuple[nn.Module, Lookahead]:
    """The same run in one process, no sharding."""
    model = model_5_rows()
    opt = lookahead_adamw(model.parameters(), pullback)
    train(model, opt, steps)
    return model, opt


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    pairs = zip(a, b, strict=True)
    return max(float((full(x).detach() - y.detach()).abs().max()) for x, y in pairs)


def check_fsdp2(rank: int) -> dict[str, Any]:
    """Item 1: fully_shard + Lookahead syncs on local shards; DCP carries its state (item 2)."""
    from torch.distributed.fsdp import fully_shard

    model = model_5_rows()
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    opt = lookahead_adamw(model.parameters())
    train(model, opt, STEPS)
    ref_model, ref_opt = reference(STEPS)
    state = opt.state[model[0].weight]
    osd = get_optimizer_state_dict(model, opt)
    fresh = model_5_rows(seed=1)
    for layer in (fresh[0], fresh[2]):
        fully_shard(layer)
    fully_shard(fresh)
    fresh_opt = lookahead_adamw(fresh.parameters())
    before = fresh_opt.la_step
    template = get_optimizer_state_dict(fresh, fresh_opt)  # DCP's zero-lr initialising step
    after_template = fresh_opt.la_step
    set_optimizer_state_dict(fresh, fresh_opt, optim_state_dict=osd)
    loaded = fresh_opt.state[fresh[0].weight]
    return {
        "param_diff": max_diff(list(model.parameters()), list(ref_model.parameters())),
        "slow_diff": max_diff(
            [opt.state[p]["slow_param"] for p in model.parameters()],
            [ref_opt.state[p]["slow_param"] for p in ref_model.parameters()]),
        "slow_is_dtensor": type(state["slow_param"]).__name__ == "DTensor",
        "local_rows": int(state["slow_param"].to_local().shape[0]),
        "step": opt.la_step,
        "dcp_keys": sorted(osd["state"]["0.weight"]),
        "template_keys": sorted(template["state"]["0.weight"]),
        "template_step_before_after": [before, after_template],
        "loaded_step": fresh_opt.la_step,
        "loaded_slow_equal": bool(torch.equal(full(loaded["slow_param"]),
                                              full(state["slow_param"]))),
        "loaded_momentum_equal": bool(torch.equal(full(loaded["slow_momentum"]),
                                                  full(state["slow_momentum"]))),
    }


def check_zero_factory(rank: int) -> dict[str, Any]:
    """Item 3: ZeRO with a Lookahead factory: consolidate, save, load keeps counter and slow."""
    model = model_5_rows()
    zero = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=Lookahead.factory(
        torch.optim.AdamW, k=3, pullback="pullback"), lr=0.05)
    train(model, zero, 16)
    zero.consolidate_state_dict(to=0)
    buffer = io.BytesIO()
    if rank == 0:
        torch.save(zero.state_dict(), buffer)
    payload = [buffer.getvalue()]
    dist.broadcast_object_list(payload, src=0)
    saved = torch.load(io.BytesIO(payload[0]), weights_only=True)
    fresh_model = model_5_rows(seed=1)
    fresh = ZeroRedundancyOptimizer(fresh_model.parameters(), optimizer_class=Lookahead.factory(
        torch.optim.AdamW, k=3, pullback="pullback"), lr=0.05)
    fresh.load_state_dict(saved)
    ref_model, ref_opt = reference(16)
    ref_slow = {id(p): ref_opt.state[q]["slow_param"]
                for p, q in zip(fresh_model.parameters(), ref_model.parameters(), strict=True)}
    local = fresh.optim
    assert isinstance(local, Lookahead)
    slow_ok = all(torch.equal(local.state[p]["slow_param"], ref_slow[id(p)])
                  for p in local.slow_state)
    return {
        "saved_steps": sorted({g["lookahead_step"] for g in saved["param_groups"]}),
        "loaded_step": local.la_step,
        "loaded_slow_equal_reference": slow_ok,
        "local_params_with_slow": len(local.slow_state),
        "param_diff": max_diff(list(model.parameters()), list(ref_model.parameters())),
    }


def check_lookahead_around_zero(rank: int) -> dict[str, Any]:
    """Item 4: Lookahead(ZeRO(...)): reset and pullback act on the local optimizer's buffers."""
    out: dict[str, Any] = {}
    for pullback in ("reset", "pullback"):
        model = model_5_rows()
        zero = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW,
                                       lr=0.05)
        la = Lookahead(zero, k=3, alpha=0.5, pullback=pullback)
        train(model, la, STEPS)
        ref_model, _ = reference(STEPS, pullback)
        local_state = zero.optim.state
        local_params = [p for g in zero.optim.param_groups for p in g["params"]]
        if pullback == "reset":
            ok = all(set(local_state[p]) == {"slow_param"} for p in local_params)
        else:
            ok = all(torch.equal(local_state[p]["exp_avg"], local_state[p]["slow_momentum"])
                     for p in local_params)
        out[pullback] = {
            "param_diff": max_diff(list(model.parameters()), list(ref_model.parameters())),
            "local_buffers_ok": ok,
            "local_params": len(local_params),
            "wrapper_state_empty": len(zero.state) == 0,
        }
    return out


CHECKS: dict[str, Callable[[int], dict[str, Any]]] = {
    "fsdp2": check_fsdp2,
    "zero_factory": check_zero_factory,
    "lookahead_around_zero": check_lookahead_around_zero,
}


def worker(rank: int, world: int, store: str, out: str) -> None:
    """Entry point for ``torch.multiprocessing.spawn``."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    for name, check in CHECKS.items():
        try:
            result: dict[str, Any] = {"ok": True, **check(rank)}
        except Exception:  # recorded for the test to show
            result = {"ok": False, "error": traceback.format_exc()}
        dist.barrier()
        if rank == 0:
            (Path(out) / f"{name}.json").write_text(json.dumps(result))
    exit_process(0)  # leaves the group; no interpreter teardown for gloo to abort
