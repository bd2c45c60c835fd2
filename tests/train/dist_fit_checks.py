"""Worker code for the 2-process training tests (spawned by ``test_train_distributed.py``).

Importing this module registers ``tiny-dropout``: a small classifier with
dropout on synthetic data, so the random streams of every rank matter.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
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


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))


def fit_worker(rank: int, world: int, port: int, out: str) -> None:
    """``fit`` under ddp, zero and fsdp on this rank; write params, summary, slow-weight hash."""
    import steplab.train.loop as loop

    seen: dict[str, Any] = {}
    original = loop._Loop.finish

    def finish(self: Any, status: str) -> dict[str, Any]:
        seen["slow"] = slow_hash(self.s.optimizer)
        seen["params"] = params(self.s.model)  # FSDP2: gathered while the group is up
        return original(self, status)

    loop._Loop.finish = finish  # type: ignore[method-assign]
    for offset, parallel in enumerate(("ddp", "zero", "fsdp")):
        _join(rank, world, port + offset)
        result = fit(config(parallel=parallel), Path(out) / parallel, progress=False)
        facts = {"summary": result.summary, "params": seen["params"], "slow": seen["slow"]}
        (Path(out) / f"{parallel}-rank{rank}.json").write_text(json.dumps(facts))


def rng_worker(rank: int, world: int, port: int, out: str) -> None:
    """Items 5 and 6: all ranks save to one path; each rank gets its own random streams back."""
    _join(rank, world, port)
    dist.init_process_group("gloo")
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
             "restored": list(result.restored)}
    (Path(out) / f"rng-rank{rank}.json").write_text(json.dumps(facts))
    dist.destroy_process_group()


def _forget_end(run: Path, keep: int) -> None:
    """What a kill after step ``keep``'s checkpoint leaves: no summary, no later checkpoint."""
    (run / "summary.json").unlink()
    for ck in (run / "checkpoints").iterdir():
        if ck.name.startswith("step-") and int(ck.name.split("-")[1]) > keep:
            import shutil

            shutil.rmtree(ck)


def resume_worker(rank: int, world: int, port: int, out: str) -> None:
    """Bit-exact resume at world size 2 with dropout, and the control without per-rank RNG."""
    import steplab.train.checkpoints as ckpts

    facts: dict[str, Any] = {}
    for i, parallel in enumerate(("ddp", "fsdp")):
        cfg = config(task="tiny-dropout", parallel=parallel, checkpoint_every=6)
        run = Path(out) / parallel
        shas = []
        for attempt in range(3):
            _join(rank, world, port + 3 * i + attempt)
            if attempt:  # rank 0 forgets the end; the other rank waits for it (no group yet)
                flag = Path(out) / f"forgot-{parallel}-{attempt}"
                if rank == 0:
                    _forget_end(run, 6)
                    flag.touch()
                while not flag.exists():
                    time.sleep(0.05)
            if attempt == 2:  # control: resume without restoring each rank's random streams
                original = ckpts.load_latest

                def no_rng(ckpt: Any, s: Any, _orig: Any = original) -> Any:
                    import steplab.state.rng as rng

                    keep = rng.restore_rng
                    rng.restore_rng = lambda state: None  # type: ignore[assignment]
                    ckpts.checkpoint.load.__globals__["_restore_rng"] = rng.restore_rng
                    ckpts.load_sharded.__globals__["_restore_rng"] = rng.restore_rng
                    try:
                        return _orig(ckpt, s)
                    finally:
                        rng.restore_rng = keep
                        ckpts.checkpoint.load.__globals__["_restore_rng"] = keep
                        ckpts.load_sharded.__globals__["_restore_rng"] = keep

                ckpts.load_latest = no_rng  # type: ignore[assignment]
                import steplab.train.loop as loop

                loop.load_latest = no_rng  # type: ignore[attr-defined]
            result = fit(cfg, run, resume=attempt > 0, progress=False)
            shas.append(result.summary["final_params_sha256"])
        facts[parallel] = shas
        import steplab.train.loop as loop

        loop.load_latest = ckpts.load_latest = original  # type: ignore[attr-defined]
    (Path(out) / f"resume-rank{rank}.json").write_text(json.dumps(facts))
