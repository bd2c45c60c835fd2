"""Save and load training checkpoints: atomic, hashed, keyed by name, never pickled.

:func:`save` writes a checkpoint directory (see :mod:`steplab.state.manifest`)
into a temporary directory beside the target, fsyncs the files and the
directory, and renames it into place; an existing checkpoint at the target is
first renamed aside and removed only after the new one is in place, so a
crash at any moment leaves a good checkpoint. :func:`load` checks everything
(format, manifest hash, header, tensor hashes, names, shapes) before it
changes the model or the optimizer.

>>> import tempfile, torch
>>> from torch import nn
>>> model = nn.Linear(2, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> root = tempfile.mkdtemp()
>>> path = save(root + "/ckpt", model=model, optimizer=opt, step=7, extra={"epoch": 1})
>>> result = load(path, model=nn.Linear(2, 2), optimizer=None)
>>> result.step, result.extra, result.restored
(7, {'epoch': 1}, ('model',))
>>> load(path, model=nn.Linear(2, 2), restore_rng=True).restored  # resuming training
('model', 'rng')
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import nn

from steplab.errors import CheckpointError, StateMismatchError
from steplab.state.codec import decode, encode
from steplab.state.manifest import (
    CHECKSUM,
    FORMAT,
    MANIFEST,
    TENSORS,
    manifest_digest,
    open_checkpoint,
)
from steplab.state.named import (
    NamedLoadReport,
    check_named_state_dict,
    load_named_state_dict,
    named_state_dict,
)
from steplab.state.names import canonical_module, clean_name
from steplab.state.ranks import arrive, barrier, consolidate, gather_rng, process_group, rank_rng
from steplab.state.rng import capture_rng
from steplab.state.rng import restore_rng as _restore_rng
from steplab.state.tensorfile import DTYPE_NAMES, read_tensors, write_tensors
from steplab.state.writer import BackgroundWriter, PendingSave

__all__ = ["LoadResult", "load", "save"]

_WRITER = BackgroundWriter()  # serves save(blocking=False) outside a Checkpointer
_Stateful = Any  # an object with state_dict() / load_state_dict() (scheduler, GradScaler)


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load` restored, and what it skipped.

    Attributes:
        step: the step the checkpoint was saved at.
        extra: the user's ``extra`` dict (data position, counters, best metrics).
        restored: which parts were restored, from ``("model", "optimizer",
            "scheduler", "scaler", "rng")``.
        manifest: the full manifest, for anything else.
        loaded: model keys (parameters and buffers) that took the saved values.
        missing: model keys the checkpoint does not hold; they kept their values.
        unexpected: saved model keys the model does not have; not used.
        shape_mismatched: keys on both sides with different shapes; they kept their values.
        optimizer: the optimizer's own report (names loaded, fresh, unused), or None.
    """

    step: int
    extra: dict[str, Any]
    restored: tuple[str, ...]
    manifest: dict[str, Any]
    loaded: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    shape_mismatched: tuple[str, ...] = ()
    optimizer: NamedLoadReport | None = None

    @property
    def skipped(self) -> tuple[str, ...]:
        """Model keys left at their values from before the load (missing, then mismatched)."""
        return self.missing + self.shape_mismatched


def _tensor_key(path: list[str]) -> str:
    if path[:1] == ["state"]:
        return "optim/" + "/".join(path[1:])
    if path[:2] == ["lookahead", "slow"]:
        return "lookahead/" + "/".join(path[2:])
    return "optim-meta/" + "/".join(path)


def _stage(key: str, t: torch.Tensor, pool: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """A CPU copy the training thread can no longer change (a pooled buffer when one fits)."""
    out = None if pool is None else pool.get(key)
    if out is None or out.shape != t.shape or out.dtype != t.dtype:
        out = torch.empty(t.shape, dtype=t.dtype, device="cpu")  # fresh pages fault on first touch
        if pool is not None:
            pool[key] = out
    return out.copy_(t.detach())


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer | None, scheduler: _Stateful,
              scaler: _Stateful, step: int, rng: bool, extra: dict[str, Any] | None,
              stage: bool, pool: dict[str, torch.Tensor] | None = None
              ) -> tuple[list[tuple[str, torch.Tensor]], dict[str, Any]]:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"step: got {step!r}, expected an integer >= 0")
    try:
        extra_json = json.loads(json.dumps(extra or {}, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"extra: not JSON-serialisable ({exc})") from None
    tensors: list[tuple[str, torch.Tensor]] = []
    model_state = canonical_module(model).state_dict()
    keys = [clean_name(k) for k in model_state]
    tensors.extend((f"model/{k}", v) for k, v in zip(keys, model_state.values(), strict=True))
    body: dict[str, Any] = {
        "format": FORMAT, "checksum": CHECKSUM, "step": step, "created_unix": time.time(),
        "torch_version": torch.__version__,
        "model": {"class": type(canonical_module(model)).__name__, "keys": keys},
        "optimizer": None if optimizer is None else encode(
            named_state_dict(optimizer, model), [], tensors, _tensor_key),
        "scheduler": None if scheduler is None else encode(
            scheduler.state_dict(), ["scheduler"], tensors),
        "scaler": None if scaler is None else encode(scaler.state_dict(), ["scaler"], tensors),
        "rng": capture_rng() if rng else None,
        "extra": extra_json,
    }
    if len({k for k, _ in tensors}) != len(tensors):
        raise CheckpointError("tensors: two tensors share a key; parameter names must be unique")
    if stage:  # the previous save must be done: pooled buffers are overwritten here
        tensors = [(k, _stage(k, t, pool)) for k, t in tensors]
        if pool is not None:
            for stale in set(pool) - {k for k, _ in tensors}:
                del pool[stale]
    return tensors, body


def collect_for_save(optimizer: torch.optim.Optimizer | None, rng: bool
                     ) -> tuple[bool, list[dict[str, Any]] | None]:
    """The collective part of a save in a process group (nothing without one).

    Returns:
        ``(writes, rng_ranks)``: whether this process writes the files (rank 0,
        or the only process), and every rank's RNG states when saving them
        from a process group.
    """
    group = process_group()
    if group is None:
        return True, None
    arrive("checkpoint.save")  # a rank calling save alone fails in one line, not a hang
    rng_ranks = gather_rng() if rng else None
    consolidate(optimizer)
    return group[0] == 0, rng_ranks


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(directory: Path, body: dict[str, Any]) -> None:
    body["manifest_sha256"] = manifest_digest(body)
    fd = os.open(directory / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, json.dumps(body, indent=1).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(target: Path, tensors: list[tuple[str, torch.Tensor]], body: dict[str, Any]) -> Path:
    """Write into a temporary directory beside ``target`` and rename it into place."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = parent / f".tmp-{target.name}-{token}"
    tmp.mkdir()
    try:
        digests = write_tensors(tmp / TENSORS, tensors, {"format": FORMAT}, body["checksum"])
        body["tensors"] = {
            k: {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), CHECKSUM: digests[k]}
            for k, t in tensors
        }
        _write_manifest(tmp, body)
        _fsync_dir(tmp)
        aside = parent / f".old-{target.name}-{token}"
        if target.exists():
            os.replace(target, aside)  # a crash from here on leaves the old one aside, intact
        os.replace(tmp, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in [aside, *parent.glob(f".old-{target.name}-*")]:
        remove_tree(stale)  # also what an earlier interrupted save left aside
    return target


def remove_tree(path: Path) -> None:
    """Delete a checkpoint directory: renamed first, so a crash never leaves half of one."""
    if not path.exists():
        return
    doomed = path.with_name(f".del-{path.name}-{secrets.token_hex(4)}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _check_target(target: Path) -> None:
    if target.exists() and not (target.is_dir() and (target / MANIFEST).is_file()):
        raise CheckpointError(
            f"path: {target} exists and is not a steplab checkpoint; refusing to replace it"
        )


@overload
def save(path: str | os.PathLike[str], *, model: nn.Module,
         optimizer: torch.optim.Optimizer | None = ..., scheduler: _Stateful = ...,
         scaler: _Stateful = ..., step: int = ..., rng: bool = ...,
         extra: dict[str, Any] | None = ..., blocking: Literal[True] = ...) -> Path: ...
@overload
def save(path: str | os.PathLike[str], *, model: nn.Module,
         optimizer: torch.optim.Optimizer | None = ..., scheduler: _Stateful = ...,
         scaler: _Stateful = ..., step: int = ..., rng: bool = ...,
         extra: dict[str, Any] | None = ..., blocking: Literal[False]) -> PendingSave: ...
def save(path: str | os.PathLike[str], *, model: nn.Module,
         optimizer: torch.optim.Optimizer | None = None, scheduler: _Stateful = None,
         scaler: _Stateful = None, step: int = 0, rng: bool = True,
         extra: dict[str, Any] | None = None, blocking: bool = True) -> Path | PendingSave:
    """Save model, optimizer, scheduler, GradScaler, RNG and extras as a checkpoint directory.

    Args:
        path: the checkpoint directory to create (an existing checkpoint there is replaced
            atomically; any other existing path is refused).
        model: its ``state_dict()`` (parameters and buffers), keyed by clean name.
        optimizer: saved as a named state dict (Lookahead slow weights included).
        scheduler: an LR scheduler (anything with ``state_dict``/``load_state_dict``).
        scaler: a ``torch.amp.GradScaler`` (its scale and growth tracker).
        step: the training step, returned by :func:`load`.
        rng: also save the Python, NumPy and torch RNG states.
        extra: a JSON-serialisable dict (data position, counters, best metrics).
        blocking: if False, copy the tensors to CPU buffers now, write them on a
            background thread and return a :class:`PendingSave` at once (at most
            one such save in flight; the next one waits for it).

    In a torch.distributed process group of several processes this is a
    collective (see :mod:`steplab.state.ranks`): every rank calls it with the
    same path, every rank's RNG states are saved, rank 0 alone writes, and
    the other ranks return ``path`` once it is committed (queued, for
    ``blocking=False``).

    Returns:
        The checkpoint path, or a :class:`PendingSave` whose ``wait()`` returns it.

    Raises:
        CheckpointError: for a bad ``step``/``extra``, state that is not data, or a
            target that exists and is not a checkpoint.
    """
    target = Path(path)
    _check_target(target)
    _WRITER.wait()  # at most one save in flight
    writer, rng_ranks = collect_for_save(optimizer, rng)
    if not writer:  # another rank writes: wait until it has committed
        barrier()
        return target
    tensors, body = _snapshot(model, optimizer, scheduler, scaler, step, rng, extra,
                              stage=not blocking)
    if rng_ranks is not None:
        body["rng_ranks"] = rng_ranks
    if blocking:
        committed = _commit(target, tensors, body)
        barrier()
        return committed
    pending = _WRITER.submit(lambda: _commit(target, tensors, body))
    barrier()
    return pending


@dataclass(frozen=True)
class _ModelFit:
    targets: dict[str, torch.Tensor]  # loadable key -> the model's tensor
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]


def _check_model(model: nn.Module, manifest: dict[str, Any], strict: bool) -> _ModelFit:
    module = canonical_module(model)
    current = {clean_name(k): v for k, v in module.state_dict(keep_vars=True).items()}
    saved = manifest["model"].get("keys")
    if not isinstance(saved, list):
        raise CheckpointError(f"{MANIFEST} model.keys: expected a list of names")
    shapes = {k: manifest["tensors"].get(f"model/{k}", {}).get("shape") for k in saved}
    missing = [k for k in current if k not in shapes]
    unexpected = [k for k in saved if k not in current]
    mismatched = [k for k in current if k in shapes and shapes[k] != list(current[k].shape)]
    if strict and (missing or unexpected or mismatched):
        parts = [f"{label} {names[:5]}" for label, names in (
            ("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)
        ) if names]
        raise StateMismatchError(
            f"model: checkpoint does not fit {type(module).__name__}: " + "; ".join(parts))
    targets = {k: v for k, v in current.items() if k in shapes and k not in mismatched}
    return _ModelFit(targets, tuple(missing), tuple(unexpected), tuple(mismatched))


def _names(names: tuple[str, ...], shown: int = 4) -> str:
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _warn_skipped(fit: _ModelFit) -> None:
    """One warning line naming what a non-strict load left as it was."""
    parts = [f"{label}: {_names(names)}" for label, names in (
        ("not in the checkpoint", fit.missing), ("shape differs", fit.mismatched),
    ) if names]
    if fit.missing or fit.mismatched:
        head = (f"checkpoint.load: {len(fit.missing) + len(fit.mismatched)} model weights "
                f"kept their current values ({'; '.join(parts)})")
    else:
        head = "checkpoint.load: every model weight loaded"
    if fit.unexpected:
        head += f"; {len(fit.unexpected)} saved weights unused: {_names(fit.unexpected)}"
    warnings.warn(head, stacklevel=3)


def _require(name: str, obj: object, manifest: dict[str, Any]) -> bool:
    if obj is None:
        return False
    if manifest.get(name) is None:
        raise StateMismatchError(f"{name}: the checkpoint holds no {name} state; pass {name}=None")
    return True


def load(path: str | os.PathLike[str], *, model: nn.Module,
         optimizer: torch.optim.Optimizer | None = None, scheduler: _Stateful = None,
         scaler: _Stateful = None, map_location: str | torch.device | None = None,
         restore_rng: bool = False, verify: bool = True, strict: bool = True) -> LoadResult:
    """Load a checkpoint directory into a model (and optimizer, scheduler, scaler).

    Everything is checked before anything changes. Parameters are matched by
    name, so a model built with its parameters in another order loads
    correctly. Values are copied into the existing parameters, so they take
    the model's device and dtype; optimizer state is cast by the optimizer's
    own ``load_state_dict`` to each parameter's device and dtype.

    With ``strict=False`` whatever does not fit is skipped: the result lists
    it (``missing``, ``unexpected``, ``shape_mismatched``, ``skipped``) and one
    warning line names it, so a renamed layer never silently keeps its
    initial values.

    The process's random streams (Python, NumPy, torch) change only with
    ``restore_rng=True``: pass it when resuming training, where the saved
    streams make the continuation bit-exact; leave it False when loading
    weights to evaluate or fine-tune.

    Args:
        path: a checkpoint directory written by :func:`save`.
        model: receives the saved parameters and buffers.
        optimizer, scheduler, scaler: restored when given (the checkpoint must hold them).
        map_location: device to stage the read tensors on before they are copied in.
        restore_rng: also restore the Python, NumPy and torch RNG states the
            checkpoint saved (False: leave the process's random streams alone); in a
            process group each rank gets its own, none when the world size changed.
        verify: check every tensor's checksum (CRC-32; SHA-256 in format 1
            checkpoints) against the manifest.
        strict: any missing, unexpected or shape-mismatched name is an error;
            False loads what fits and reports (and warns about) the rest.

    Returns:
        A :class:`LoadResult`.

    Raises:
        CheckpointError: missing path, a file (pickles refused unread), corrupt or
            truncated data, an edited manifest, a wrong format version.
        StateMismatchError: the checkpoint does not fit the model or optimizer.
    """
    ckpt = open_checkpoint(path)
    manifest = ckpt.manifest
    fit = _check_model(model, manifest, strict)
    targets = fit.targets
    restored = ["model"]
    want = {n: _require(n, o, manifest) for n, o in
            (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler))}
    if optimizer is not None:  # names and shapes only: the encoded form has them all
        check_named_state_dict(optimizer, model, manifest["optimizer"], strict)
    # checksums are verified while reading; the model's own tensors are written only after
    into = {f"model/{name}": target for name, target in targets.items()}
    tensors = read_tensors(ckpt.tensors_path, ckpt.header,
                           ckpt.expected_digests if verify else None, into)
    if map_location is not None:
        tensors = {k: v if k in into else v.to(map_location) for k, v in tensors.items()}
    try:
        parts = {n: decode(manifest[n], tensors) for n in want if want[n]}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{MANIFEST}: malformed state ({exc})") from None
    with torch.no_grad():
        for name, target in targets.items():
            if tensors[f"model/{name}"] is not target:
                target.copy_(tensors[f"model/{name}"])
    report = None
    if optimizer is not None:
        report = load_named_state_dict(optimizer, model, parts["optimizer"], strict, copy=False)
        restored.append("optimizer")
    for name, obj in (("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            try:
                obj.load_state_dict(parts[name])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CheckpointError(f"{name}: state rejected ({exc})") from None
            restored.append(name)
    if restore_rng and (mine := rank_rng(manifest)) is not None:
        _restore_rng(mine)  # under a process group: this rank's own streams
        restored.append("rng")
    if not strict and (fit.missing or fit.unexpected or fit.mismatched):
        _warn_skipped(fit)
    step: int = manifest["step"]
    return LoadResult(step, dict(manifest["extra"]), tuple(restored), manifest,
                      loaded=tuple(targets), missing=fit.missing, unexpected=fit.unexpected,
                      shape_mismatched=fit.mismatched, optimizer=report)
