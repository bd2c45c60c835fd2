"""A small training loop that checkpoints and resumes, for the resume and crash tests.

It uses everything a bit-exact resume needs: dropout (torch RNG), data shuffled
by a seeded ``torch.Generator`` (its state and the position go into ``extra``),
a warmup-then-cosine LR schedule, and a GradScaler whose huge initial scale
overflows now and then (skipped steps and backoff, so its state matters).

Run as a script: ``python state_resume_loop.py ROOT SPEC STEPS`` prints the
parameters' SHA-256 when done.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steplab import checkpoint
from steplab.optim import create_optimizer
from steplab.state import capture_generator, params_sha256, restore_generator

N_SAMPLES, BATCH, EVERY = 96, 16, 4


def build(spec: str) -> tuple[nn.Module, Any, Any, Any]:
    gen = torch.Generator().manual_seed(1234)
    width = 512 if "state=" in spec else 16  # lean state quantises tensors of >= 4096 elements
    model = nn.Sequential(nn.Linear(8, width), nn.Tanh(), nn.Dropout(0.2), nn.Linear(width, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    opt = create_optimizer(spec, model)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[5])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**124, growth_interval=3)
    return model, opt, sched, scaler


def train(root: str | Path, spec: str, steps: int, progress: Any = None,
          blocking: bool = False) -> str:
    """Train ``steps`` steps, resuming from ``root``'s latest checkpoint; return the params hash."""
    torch.set_num_threads(1)
    data_gen = torch.Generator().manual_seed(7)
    x = torch.randn(N_SAMPLES, 8, generator=data_gen)
    y = torch.randint(0, 3, (N_SAMPLES,), generator=data_gen)
    model, opt, sched, scaler = build(spec)
    torch.manual_seed(99)
    order_gen = torch.Generator().manual_seed(3)
    step, index, perm = 0, 0, torch.randperm(N_SAMPLES, generator=order_gen)
    ckpt = checkpoint.Checkpointer(root, every=EVERY, keep_last=2)
    latest = ckpt.latest()
    if latest is not None:
        result = checkpoint.load(latest, model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                                 restore_rng=True)
        step, index = result.step, result.extra["index"]
        perm = torch.tensor(result.extra["perm"])
        restore_generator(order_gen, result.extra["order_gen"])
    with warnings.catch_warnings():
        # the GradScaler skips the first steps (overflow): the scheduler steps before the optimizer
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        _loop(model, opt, sched, scaler, ckpt, (x, y), order_gen, [step, index], perm, steps,
              progress, blocking)
    ckpt.close()
    return params_sha256(model)


def _loop(model: nn.Module, opt: Any, sched: Any, scaler: Any, ckpt: checkpoint.Checkpointer,
          data: tuple[torch.Tensor, torch.Tensor], order_gen: torch.Generator, position: list[int],
          perm: torch.Tensor, steps: int, progress: Any, blocking: bool) -> None:
    (x, y), (step, index) = data, position
    while step < steps:
        batch = perm[index : index + BATCH]
        # x64: near the initial scale of 2**124 some steps overflow, so the scaler backs off
        loss = 64.0 * nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        step, index = step + 1, index + BATCH
        if index >= N_SAMPLES:
            index, perm = 0, torch.randperm(N_SAMPLES, generator=order_gen)
        extra = {"index": index, "perm": perm.tolist(), "order_gen": capture_generator(order_gen)}
        ckpt.maybe_save(step, model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                        extra=extra, blocking=blocking)
        if progress is not None:
            progress.value = step


if __name__ == "__main__":
    print(train(sys.argv[1], sys.argv[2], int(sys.argv[3])))
