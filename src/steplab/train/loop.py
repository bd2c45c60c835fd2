"""``fit(config)``: the training loop.

One step, in order: take the next batch (indices into the in-memory split),
forward and loss (under autocast for ``bf16``/``fp16``), one ``loss.item()``
for the divergence check, backward, a finiteness check of the gradients (the
norm from clipping when ``clip_norm`` is set, else one fused check kernel)
that decides whether the optimizer may step, optional value clipping, the
optimizer step, ``zero_grad``, ``scheduler.step()`` (not needed, so not
called, for a constant schedule without warmup). Gradient statistics,
``metrics.jsonl`` rows and the progress bar only happen at log steps;
evaluation every ``eval_every`` steps and at the last; a checkpoint every
``checkpoint_every`` steps, after that step's row and evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steplab.observe import RunWatch
from steplab.optim.lookahead_state import local_tensor
from steplab.state.names import canonical_module
from steplab.state.ranks import barrier
from steplab.train.batches import BatchStream
from steplab.train.checkpoints import load_latest, make_checkpointer, save_checkpoint
from steplab.train.config import TrainConfig
from steplab.train.distributed import agree, all_true, announce, leave, lost_rank_errors, shard
from steplab.train.evaluate import EvalBook, evaluate
from steplab.train.guards import DivergenceWatch, EarlyStopper, FiniteCheck
from steplab.train.monitor import UpdateProbe, layer_grad_norms
from steplab.train.output import to_json_value
from steplab.train.progress import NoProgress, ProgressBar
from steplab.train.session import Session, prepare
from steplab.train.summary import build_summary, state_bytes

__all__ = ["Report", "RunResult", "fit"]

#: ``report(step, metrics)``, called after each periodic evaluation
Report = Callable[[int, dict[str, float]], None]


@dataclass
class RunResult:
    """What :func:`fit` returns.

    Attributes:
        summary: the same dict as ``summary.json``.
        out_dir: the run directory, or None when the run wrote no files.
        model: the trained model (fast weights for Lookahead), or None when
            the run had already ended and was not trained again.
    """

    summary: dict[str, Any]
    out_dir: Path | None
    model: nn.Module | None = None


class _Loop:
    """The state of a run between steps; :meth:`run` trains until the run ends."""

    def __init__(self, s: Session, progress: bool, report: Report | None) -> None:
        cfg = s.config
        self.s, self.cfg, self.report = s, cfg, report
        self.world = s.world
        self.writes = s.world is None or s.world.writes  # only rank 0 writes files
        self.watch = DivergenceWatch(cfg.on_nonfinite, cfg.divergence_factor)
        self.stopper = (
            EarlyStopper(cfg.early_stop_metric, cfg.patience or 5, cfg.min_delta)
            if cfg.early_stop_metric else None
        )
        target = s.task.target
        if cfg.target_value is not None:
            target = dataclasses.replace(target, value=float(cfg.target_value))
        self.book = EvalBook(target)
        self.finite = FiniteCheck(s.data.x_train.device)
        # a constant LR needs no scheduler step (saves a Python call per step)
        self.step_scheduler = cfg.schedule != "constant" or cfg.warmup_steps > 0
        self.batches = BatchStream(len(s.data.x_train), s.plan, cfg.seed, s.data.x_train.device)
        self.step, self.base_time, self.eval_time = 0, 0.0, 0.0
        self.loss_sum, self.loss_count, self.train_loss = 0.0, 0, float("nan")
        self.step_times: list[float] = []
        self.peak_state = 0  # most optimizer-state bytes seen at a log step or the end
        self.stats: dict[str, Any] = {}
        self.reason: str | None = None
        self.report_error: Exception | None = None
        self.ckpt = (make_checkpointer(s, cfg.checkpoint_every, cfg.keep_checkpoints)
                     if cfg.checkpoint_every else None)
        self.observer: RunWatch | None = None
        self.clock = time.perf_counter()

    # -- time, checkpoint, resume --------------------------------------------------------------

    def train_time(self) -> float:
        """Seconds of training so far, evaluation excluded, across resumes."""
        return self.base_time + time.perf_counter() - self.clock - self.eval_time

    def extra(self) -> dict[str, Any]:
        """What resuming needs besides tensors and the data position (JSON; NaN as None)."""
        state: dict[str, Any] = to_json_value({
            "watch": self.watch.state_dict(),
            "stopper": self.stopper.state_dict() if self.stopper else None,
            "book": self.book.state_dict(), "train_time": self.train_time(),
            "loss_sum": self.loss_sum, "loss_count": self.loss_count,
            "train_loss": self.train_loss, "run_id": self.cfg.run_id,
            "peak_state_bytes": self.peak_state,
        })
        return state

    def restore(self) -> None:
        """Continue from the latest checkpoint when there is one; open ``metrics.jsonl``."""
        s = self.s
        found = (load_latest(self.ckpt, s, self.batches) if self.ckpt is not None and s.exists
                 else None)
        if found is not None:
            self.step, extra = found
            self.watch.load_state_dict(extra["watch"])
            if self.stopper is not None and extra["stopper"] is not None:
                self.stopper.load_state_dict(extra["stopper"])
            self.book.load_state_dict(extra["book"])
            self.base_time = float(extra["train_time"])
            self.loss_sum, self.loss_count = float(extra["loss_sum"]), int(extra["loss_count"])
            self.train_loss = float("nan") if extra["train_loss"] is None else extra["train_loss"]
            self.peak_state = int(extra.get("peak_state_bytes", 0))
        if s.run_dir is not None and self.writes:
            s.run_dir.open_metrics(keep_until=self.step)
        if s.run_dir is not None and self.writes and (s.world is None or s.world.parallel == "ddp"):
            cfg = self.cfg  # state statistics need every parameter's state in this process
            self.observer = RunWatch(
                s.optimizer, s.model, state_every=cfg.state_every if cfg.monitor else None,
                histogram_every=cfg.histogram_every, clip_norm=cfg.clip_norm,
                clip_value=cfg.clip_value, logdir=s.run_dir.root if cfg.tensorboard else None,
                start_step=self.step, resumed=s.exists)
        self.clock = time.perf_counter()

    # -- one step --------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        precision = self.cfg.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.s.data.x_train.device.type, dtype=dtype)

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor, log_now: bool) -> str:
        """Run one step; return ``"ok"``, ``"skip"`` or ``"diverged"``."""
        s = self.s
        if self.observer is not None:
            self.observer.before_step(self.step)
        with self.autocast():
            loss = s.task.loss(s.model(xb), yb)
        value = agree(loss.item(), self.world)  # the global batch's loss, the same on all ranks
        verdict = self.watch.check_loss(value)
        if verdict == "ok":
            verdict = self.update(loss, log_now)
            if verdict == "ok":
                self.loss_sum += value
                self.loss_count += 1
        s.optimizer.zero_grad(set_to_none=True)
        if self.step_scheduler:
            s.scheduler.step()
        return verdict

    def update(self, loss: torch.Tensor, log_now: bool) -> str:
        """Backward, check the gradients are finite, clip, step the optimizer."""
        s, cfg, scaler = self.s, self.cfg, self.s.scaler
        if scaler is not None:
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.unscale_(s.optimizer)
        else:
            loss.backward()  # type: ignore[no-untyped-call]
        # statistics of the raw gradients (before clipping), at log steps only
        sharded = self.world is not None and self.world.parallel == "fsdp"
        layers = (layer_grad_norms(s.names, s.params)
                  if log_now and cfg.monitor and not sharded else None)
        if self.observer is not None:
            self.observer.observe_gradients()
        if cfg.clip_norm is not None:  # clipping computes the norm anyway: reuse it
            norm = torch.nn.utils.clip_grad_norm_(s.params, cfg.clip_norm, foreach=True)
            finite = bool(torch.isfinite(norm))
        else:
            finite = self.finite([local_tensor(p.grad) for p in s.params if p.grad is not None])
            finite = all_true(finite, self.world)  # FSDP: each rank sees its own shard
        if not finite:
            if scaler is not None:  # fp16 overflow: GradScaler lowers its scale, step skipped
                scaler.update()
                self.watch.skipped += 1
                return "skip"
            return self.watch.nonfinite("gradient")
        self.watch.grad_ok()
        probe = None
        if layers is not None:
            total = math.sqrt(sum(v * v for v in layers.values()))
            self.stats = {"grad_norm": total, "layer_grad_norms": layers}
            probe = UpdateProbe(s.params)
        if cfg.clip_value is not None:
            torch.nn.utils.clip_grad_value_(s.params, cfg.clip_value, foreach=True)
        if scaler is not None:
            scaler.step(s.optimizer)
            scaler.update()
        else:
            s.optimizer.step()
        if probe is not None:
            self.stats["update_ratio"] = probe.ratio()
        return "ok"

    # -- the loop --------------------------------------------------------------------------

    def batches_of(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.s.data
        while True:
            idx = self.batches.next()
            if idx is None and self.world is not None:  # full batch: each rank its share
                idx = torch.arange(len(d.x_train), device=d.x_train.device)
            if idx is not None:
                idx = shard(idx, self.world)  # this rank's share of the global batch
            yield (d.x_train, d.y_train) if idx is None else (d.x_train[idx], d.y_train[idx])

    def run(self, bar: NoProgress) -> str:
        """Train from ``self.step`` until the run ends; return its status."""
        cfg, s, total = self.cfg, self.s, self.s.plan.total_steps
        log_every = 1 if s.task.trajectory else cfg.log_every
        start, batches = self.step, self.batches_of()
        while self.step < total:
            xb, yb = next(batches)
            log_now = (self.step + 1) % log_every == 0
            t0 = time.perf_counter()
            verdict = self.train_step(xb, yb, log_now)
            self.step_times.append(time.perf_counter() - t0)
            self.step += 1
            if verdict == "diverged":
                self.reason = self.watch.reason
                return "diverged"
            eval_now = self.step % s.eval_every == 0 or self.step == total
            state_now = self.observer is not None and self.observer.has_state
            if log_now or eval_now or state_now:
                metrics = self.log_and_evaluate(log_now, eval_now, bar, start)
                if metrics is not None and self.after_eval(metrics):
                    return "early_stopped"
            if not eval_now and self.target_due():
                self.check_target()
            if self.ckpt is not None and self.step % self.ckpt.every == 0:
                save_checkpoint(self.ckpt, self.step, s, self.extra(), self.batches)
        return "completed"

    def log_and_evaluate(
        self, log_now: bool, eval_now: bool, bar: NoProgress, start: int
    ) -> dict[str, float] | None:
        """Write this step's ``metrics.jsonl`` row (with evaluation metrics when due)."""
        row: dict[str, Any] = {"step": self.step, "wall_time": self.train_time()}
        if log_now:
            if self.loss_count:
                self.train_loss = self.loss_sum / self.loss_count
            self.loss_sum, self.loss_count = 0.0, 0
            lr = float(self.s.optimizer.param_groups[0]["lr"])
            self.peak_state = max(self.peak_state, state_bytes(self.s.optimizer))
            row |= {"train_loss": self.train_loss, "lr": lr, **self.stats}
            self.stats = {}
            if self.s.task.trajectory:
                row["params"] = torch.cat([p.detach().flatten() for p in self.s.params]).tolist()
        if self.observer is not None and (state := self.observer.take_state()) is not None:
            row["state"] = state
        metrics = self.evaluate() if eval_now else None
        self.write_row(row | (metrics or {}))
        if log_now:
            speed = (self.step - start) / max(row["wall_time"] - self.base_time, 1e-9)
            bar.update(self.step, loss=self.train_loss, lr=row["lr"], steps_per_s=speed,
                       metric=self.metric_text())
        return metrics

    def write_row(self, row: dict[str, Any]) -> None:
        """Append a row to ``metrics.jsonl`` and mirror it to TensorBoard."""
        if self.s.run_dir is not None and self.writes:
            self.s.run_dir.log(row)
        if self.observer is not None:
            self.observer.log(row)

    def metric_text(self) -> str:
        metric = self.s.task.target.metric
        value = self.book.last.get(metric)
        return f"{metric} {value:.4g}" if value is not None else ""

    def evaluate(self) -> dict[str, float]:
        """Evaluate the model now and record the metrics (time not counted as training)."""
        t0 = time.perf_counter()
        metrics = evaluate(self.s.task, self.s.model, self.s.optimizer, self.s.data,
                           self.cfg.eval_splits)
        self.eval_time += time.perf_counter() - t0
        self.book.record(self.step, self.train_time(), metrics)
        return metrics

    def target_due(self) -> bool:
        """True when a cheap target check is due (``target_every``, target not met yet)."""
        every = self.cfg.target_every
        return every is not None and self.book.target_step is None and self.step % every == 0

    def check_target(self) -> None:
        """Evaluate the target's split alone; note the step and log a row when it is met."""
        metric = self.book.target.metric
        split = metric.split("_", 1)[0]
        if split not in ("val", "test"):
            return
        t0 = time.perf_counter()
        metrics = evaluate(self.s.task, self.s.model, self.s.optimizer, self.s.data, (split,))
        self.eval_time += time.perf_counter() - t0
        value = metrics.get(metric)
        if value is not None and self.book.target.met_by(value):
            self.book.target_step, self.book.target_time = self.step, self.train_time()
            if self.s.run_dir is not None and self.writes:
                self.s.run_dir.log({"step": self.step, "wall_time": self.train_time(),
                                    metric: value, "target_check": True})

    def after_eval(self, metrics: dict[str, float]) -> bool:
        """Call ``report``; return True when early stopping triggers."""
        if self.report is not None:
            try:
                self.report(self.step, metrics)
            except Exception as exc:
                self.report_error = exc
                raise
        return self.stopper is not None and self.stopper.update(metrics)

    def finish(self, status: str) -> dict[str, Any]:
        """Evaluate at the last step if not done yet, then write ``summary.json``."""
        if status in ("completed", "diverged") and self.book.last_step != self.step:
            metrics = self.evaluate()
            self.write_row({"step": self.step, "wall_time": self.train_time(), **metrics})
        if self.loss_count:
            self.train_loss = self.loss_sum / self.loss_count
        self.peak_state = max(self.peak_state, state_bytes(self.s.optimizer))
        summary = build_summary(self, status)
        if self.s.run_dir is not None and self.writes:
            self.s.run_dir.write_summary(summary)
        return summary


def fit(
    config: TrainConfig | dict[str, Any],
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    report: Report | None = None,
) -> RunResult:
    """Train one run as ``config`` says; write its files to ``out_dir`` when given.

    Args:
        config: a :class:`TrainConfig` (or its ``to_dict()``).
        out_dir: run directory for ``config.json``, ``metrics.jsonl``,
            ``summary.json`` and ``checkpoints/``; None writes nothing.
        resume: continue the run in ``out_dir`` from its latest checkpoint
            (or return its summary if it already ended).
        progress: draw a rich progress bar on stderr.
        report: ``report(step, metrics)`` after each evaluation; an exception
            it raises ends the run with status ``"pruned"`` (for optuna's
            ``TrialPruned``) or ``"stopped"``, and propagates after
            ``summary.json`` is written.

    Returns:
        A :class:`RunResult` whose ``summary`` is ``summary.json``'s content.

    Raises:
        SpecError: bad input (see :func:`steplab.train.session.prepare`);
            nothing in ``out_dir`` is changed then.

    Example:
        >>> from steplab.train import TrainConfig, fit
        >>> cfg = TrainConfig(task="rosenbrock", optimizer="adam", lr=0.05, steps=50)
        >>> result = fit(cfg, progress=False)
        >>> result.summary["status"], result.summary["steps"]
        ('completed', 50)
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    s = prepare(cfg, out_dir, resume)
    root = s.run_dir.root if s.run_dir is not None else None
    if s.run_dir is not None and s.exists and (done := s.run_dir.read_summary()) is not None:
        leave(s.world)
        return RunResult(done, root, None)
    if s.run_dir is not None and (s.world is None or s.world.writes):
        s.run_dir.start(cfg.to_dict())
    barrier()  # the run directory exists before any rank goes on
    loop = _Loop(s, progress, report)
    try:
        loop.restore()
        announce(s.world, s.plan, s.optimizer, progress and loop.writes)
        show = progress and loop.writes
        bar = ProgressBar(s.plan.total_steps, loop.step, cfg.run_id) if show else NoProgress()
        with bar, lost_rank_errors(s.world):
            try:
                status = loop.run(bar)
            except Exception as exc:
                if exc is not loop.report_error:
                    raise
                loop.finish("pruned" if type(exc).__name__ == "TrialPruned" else "stopped")
                raise
            summary = loop.finish(status)
    finally:
        with contextlib.ExitStack() as closing:  # every close runs even if one raises
            closing.callback(leave, s.world)  # callbacks run last-in first: this one last
            if s.run_dir is not None:
                closing.callback(s.run_dir.close)
            if loop.observer is not None:
                closing.callback(loop.observer.close)
            if loop.ckpt is not None:
                closing.callback(loop.ckpt.close)
    return RunResult(summary, root, canonical_module(s.model))
