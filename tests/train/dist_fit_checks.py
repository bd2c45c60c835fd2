"""Worker code for the 2-process training tests (spawned by ``test_train_distributed.py``).

Importing this module registers ``tiny-dropout``: a small classifier with
dropout on synthetic data, so the random streams of every rank matter.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from steplab import checkpoint
from steplab.optim import Lookahead
from steplab.optim.lookahead_state import local_tensor
from steplab.tasks import TaskData, register_task
from steplab.tasks.base import ClassificationTask, Target
from steplab.train import TrainConfig, fit
from steplab.train.teardown import exit_process


@dataclass
class Tiny(ClassificationTask):
    """4 classes from 8 features; a 2-layer net, with dropout when ``p`` > 0."""

    name: str = "tiny"
    description: str = "synthetic 4-class data, small MLP (tests)"
    p: float = 0.0
    target: Target = field(default_factory=lambda: Target("test_accuracy", 0.9, "max"))
    default_batch_size: int = 16
    default_steps: int = 20
    default_lr: float | None = 0.01

    def load_data(self, data_dir: str | None = None) -> TaskData:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(320, 8, generator=g)
        y = (x[:, :2] > 0).long() @ torch.tensor([1, 2])
        return TaskData(x[:256], y[:256], x[256:288], y[256:288], x[288:], y[288:])

    def build_model(self, generator: torch.Generator) -> nn.Module:
        model = nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Dropout(self.p), nn.Linear(5, 4))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
        return model


register_task(Tiny(), replace=True)
register_task(Tiny(name="tiny-dropout", p=0.3), replace=True)


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {"task": "tiny", "optimizer": "lookahead(adamw, k=3)",
                            "steps": 12, "batch_size": 16, "monitor": False,
                            "tensorboard": False, "eval_every": 12}
    return TrainConfig(**(base | kw))


def slow_hash(opt: torch.optim.Optimizer) -> str:
    digest = hashlib.sha256()
    if isinstance(opt, Lookahead):
        for slow in opt.slow_state.values():
            digest.update(local_tensor(slow["slow_param"]).detach().numpy().tobytes())
    return digest.hexdigest()


def params(model: nn.Module) -> list[list[float]]:
    out = []
    for p in model.parameters():
        value = p.detach()
        value = value.full_tensor() if hasattr(value, "full_tensor") else value
        out.append(value.flatten().tolist())
    return out


def _join(rank: int, world: int, store: Path) -> None:
    """The group ``join`` finds already up (from a file store: no port to pick and lose)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)


def fit_worker(rank: int, world: int, out: str) -> None:
    """``fit`` under ddp, zero and fsdp on this rank; write params, summary, slow-weight hash."""
    import steplab.train.loop as loop

    seen: dict[str, Any] = {}
    original = loop._Loop.finish

    def finish(self: Any, status: str) -> dict[str, Any]:
        seen["slow"] = slow_hash(self.s.optimizer)
        seen["params"] = params(self.s.model)  # FSDP2: gathered while the group is up
        return original(self, status)

    loop._Loop.finish = finish  # type: ignore[method-assign]
    for parallel in ("ddp", "zero", "fsdp"):
        _join(rank, world, Path(out) / f"store-{parallel}")
        result = fit(config(parallel=parallel), Path(out) / parallel, progress=False)
        facts = {"summary": result.summary, "params": seen["params"], "slow": seen["slow"]}
        (Path(out) / f"{parallel}-rank{rank}.json").write_text(json.dumps(facts))
    rng_worker(rank, world, out)  # the same processes: one start-up for all checks


def _alone(rank: int, out: str) -> list[str | None]:
    """Rank 0 calls each save alone (rank 1 never does): one clear error each, no hang."""
    from steplab.errors import CheckpointError
    from steplab.state.sharded import save_sharded

    errors: list[str | None] = []
    if rank == 0:
        os.environ["STEPLAB_COLLECTIVE_TIMEOUT"] = "1"
        for save in (checkpoint.save, save_sharded):
            try:
                save(Path(out) / f"alone-{save.__module__}", model=nn.Linear(3, 2), step=1)
                errors.append(None)
            except CheckpointError as exc:
                errors.append(str(exc))
    dist.barrier()
    return errors


def rng_worker(rank: int, world: int, out: str) -> None:
    """Items 5 and 6: all ranks save to one path; each rank gets its own random streams back."""
    _join(rank, world, Path(out) / "store-rng")
    torch.manual_seed(1000 + rank)
    model = nn.Linear(3, 2)
    error = None
    try:
        path = checkpoint.save(Path(out) / "shared", model=model, step=3)
    except Exception as exc:  # the regression: rank 1 raised FileNotFoundError
        error, path = f"{type(exc).__name__}: {exc}", Path(out) / "shared"
    expected = torch.rand(4).tolist()  # what this rank draws after the save
    torch.manual_seed(99)  # scramble
    dist.barrier()
    result = checkpoint.load(path, model=nn.Linear(3, 2), restore_rng=True)
    again = torch.rand(4).tolist()
    facts = {"error": error, "expected": expected, "after_load": again,
             "restored": list(result.restored), "alone": _alone(rank, out)}
    (Path(out) / f"rng-rank{rank}.json").write_text(json.dumps(facts))
    exit_process(0)  # leaves the group; no interpreter teardown for gloo to abort
