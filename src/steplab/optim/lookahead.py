"""Lookahead (Zhang, Lucas, Ba, Hinton 2019) as a ``torch.optim.Optimizer``.

The wrapper shares the inner optimizer's ``param_groups``, ``state`` and
``defaults`` objects (:mod:`steplab.optim.lookahead_protocol`), so LR
schedulers, hyperparameter edits, ``GradScaler`` and ``add_param_group`` act on
one set of groups. Its own state lives in torch's protocol (see
:mod:`steplab.optim.lookahead_state`): slow weights in each parameter's state,
settings and the step counter in each group. This module is the algorithm:
step, sync and the slow-weight views.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from steplab.errors import SpecError
from steplab.optim.closure import evaluate_closure
from steplab.optim.interpolate import run_sync
from steplab.optim.lookahead_fused import fused_sync_step, inner_problem
from steplab.optim.lookahead_protocol import LookaheadProtocol
from steplab.optim.lookahead_state import (
    PULLBACK_MODES,
    SLOW_KEYS,
    check_pullback,
    check_settings,
    is_initialising_step,
    local_optimizer,
    local_tensor,
    momentum_buffer_name,
)
from steplab.optim.lookahead_sync import SLOW_FORMS, plan_group, slow_buffer

__all__ = ["PULLBACK_MODES", "Lookahead", "momentum_buffer_name"]

_SLOW = frozenset(SLOW_KEYS)


class Lookahead(LookaheadProtocol):
    r"""Lookahead around any torch optimizer, exactly as Algorithm 1 of the paper.

    Slow weights φ start as the parameters at their first step (φ₀ = θ₀). Each
    ``step`` runs one inner step on the fast weights θ; after every k inner
    steps::

        φ ← φ + α (θ − φ)        # slow weights move toward the fast ones
        θ ← φ                     # fast weights restart from the slow ones

    so the first sync happens at step k. ``pullback`` says what happens to the
    inner optimizer's state at a sync: ``"none"`` keeps it; ``"reset"`` clears
    each parameter's inner state so the inner optimizer re-initialises it lazily
    (Adam's step count and moments included: the paper's "resetting");
    ``"pullback"`` interpolates the momentum-like buffer m (SGD's
    ``momentum_buffer``, the Adam family's ``exp_avg``) like the weights:
    m ← m_slow + α (m − m_slow), m_slow ← m.

    State lives where torch keeps optimizer state, so DCP, ZeRO and any
    framework carry it: ``state[p]["slow_param"]`` (and ``"slow_momentum"``),
    and ``lookahead_k/alpha/pullback/step`` in every parameter group. It works
    on FSDP2's ``DTensor`` parameters (each rank syncs its local shard), as the
    local optimizer of a ``ZeroRedundancyOptimizer`` and around one (then the
    slow weights of each rank's shard live in ZeRO's local optimizer).

    Args:
        optimizer: the inner (fast) optimizer.
        k: inner steps per sync, an integer >= 1.
        alpha: slow step size α in (0, 1].
        pullback: ``"none"``, ``"reset"`` or ``"pullback"``.
        slow: ``"fp32"`` keeps the slow weights in each parameter's dtype;
            ``"bf16"`` keeps them in bfloat16 (half the memory): a sync computes
            θ ← φ + α(θ − φ) in the parameter's dtype and stores φ ← bf16(θ),
            so the fast weights keep full precision.

    Raises:
        SpecError: a bad argument, or ``pullback`` other than ``"none"`` with an
            inner optimizer that keeps no momentum-like buffer.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
        >>> la = Lookahead(torch.optim.SGD([w], lr=0.1), k=2, alpha=0.5)
        >>> for _ in range(2):
        ...     la.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     _ = la.step()
        >>> w.detach()  # θ after 2 SGD steps is 0.64·θ₀; φ = θ₀ + 0.5(0.64θ₀ − θ₀)
        tensor([ 0.8200, -0.8200])
        >>> sorted(la.state[w]), la.param_groups[0]["lookahead_step"]
        (['slow_param'], 2)

    References:
        Zhang, Lucas, Ba, Hinton. "Lookahead Optimizer: k steps forward, 1 step
        back." NeurIPS 2019, arXiv:1907.08610.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        k: int = 5,
        alpha: float = 0.5,
        pullback: str = "none",
        slow: str = "fp32",
    ) -> None:
        if slow not in SLOW_FORMS:
            raise SpecError(f"slow: got {slow!r}, expected one of {', '.join(SLOW_FORMS)}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise SpecError(
                f"optimizer: got {type(optimizer).__name__}, expected a torch.optim.Optimizer"
            )
        check_settings(k, alpha, pullback)
        for group in optimizer.param_groups:
            check_pullback(optimizer, group, pullback)
        self._share(optimizer)  # its groups, state and defaults become this wrapper's
        self._settings = {"lookahead_k": int(k), "lookahead_alpha": float(alpha),
                          "lookahead_pullback": pullback, "lookahead_slow": slow}
        for group in self.param_groups:
            for key, value in {**self._settings, "lookahead_step": 0}.items():
                group.setdefault(key, value)
        # an inner optimizer that builds its state eagerly (Adagrad) gets slow weights
        # now, so engines that only look at existing state (DCP) see them
        self._add_slow([p for _, params in self._local_groups() for p in params
                        if self._local_state().get(p)])

    @classmethod
    def factory(cls, optimizer_class: Callable[..., torch.optim.Optimizer], *, k: int = 5,
                alpha: float = 0.5, pullback: str = "none") -> Callable[..., Lookahead]:
        """A constructor ``(params, **kwargs) -> Lookahead(optimizer_class(params, **kwargs))``.

        For code that builds the optimizer itself from a class, such as
        ``ZeroRedundancyOptimizer(params, optimizer_class=...)``, which then
        gives each rank a Lookahead over its shard.

        Args:
            optimizer_class: the inner optimizer's class (or any such callable).
            k: inner steps per sync.
            alpha: slow step size.
            pullback: ``"none"``, ``"reset"`` or ``"pullback"``.

        Returns:
            The constructor.

        Raises:
            SpecError: bad k, alpha or pullback (checked now, not at first use).

        Example:
            >>> make = Lookahead.factory(torch.optim.SGD, k=3)
            >>> make([torch.nn.Parameter(torch.ones(2))], lr=0.1).k
            3
        """
        check_settings(k, alpha, pullback)

        def build(params: Any, **kwargs: Any) -> Lookahead:
            return cls(optimizer_class(params, **kwargs), k=k, alpha=alpha, pullback=pullback)

        build.__name__ = f"Lookahead_{getattr(optimizer_class, '__name__', 'optimizer')}"
        return build

    def _group_value(self, key: str) -> Any:
        groups = self.param_groups
        return groups[0][key] if groups else self._settings.get(key, 0)

    def _set_all(self, key: str, value: Any) -> None:
        for group in self.param_groups:
            group[key] = value

    @property
    def k(self) -> int:
        """Inner steps per sync (of the first group; each group keeps its own)."""
        return int(self._group_value("lookahead_k"))

    @property
    def alpha(self) -> float:
        """The slow step size α (of the first group)."""
        return float(self._group_value("lookahead_alpha"))

    @property
    def pullback(self) -> str:
        """What a sync does to the inner state (of the first group)."""
        return str(self._group_value("lookahead_pullback"))

    @property
    def la_step(self) -> int:
        """Inner steps taken (the first group's ``lookahead_step``); setting sets every group's."""
        return int(self._group_value("lookahead_step"))

    @la_step.setter
    def la_step(self, value: int) -> None:
        self._set_all("lookahead_step", int(value))

    @property
    def slow_state(self) -> dict[Tensor, dict[str, Tensor]]:
        """Each local parameter's Lookahead buffers (a new dict of the state's own tensors)."""
        state = self._local_state()
        out: dict[Tensor, dict[str, Tensor]] = {}
        for _, params in self._local_groups():
            for p in params:
                slow = {k: v for k, v in state.get(p, {}).items() if k in _SLOW}
                if slow:
                    out[p] = slow
        return out

    def __repr__(self) -> str:
        inner = type(self.optimizer).__name__
        return f"Lookahead({inner}, k={self.k}, alpha={self.alpha}, pullback={self.pullback!r})"

    def _add_slow(self, params: list[Tensor], values: dict[Tensor, Tensor] | None = None
                  ) -> None:
        """Give ``params`` slow weights: ``values[p]`` or their current values (φ₀ = θ₀)."""
        if not params:
            return
        state, pullback, low = self._local_state(), {}, {}
        for group, group_params in self._local_groups():
            for p in group_params:
                pullback[p] = group["lookahead_pullback"]
                low[p] = group.get("lookahead_slow") == "bf16"
        with torch.no_grad():
            for p in params:
                buffers = state.setdefault(p, {})
                slow = p.detach().clone() if values is None else values[p]
                buffers["slow_param"] = slow.to(torch.bfloat16) if low.get(p) else slow
                if pullback.get(p) == "pullback":  # the slow momentum starts at zero
                    buffers["slow_momentum"] = torch.zeros_like(p)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer with this Lookahead's settings.

        Its step counter starts at the current one, so it syncs with the other
        groups; its slow weights are taken at its first step.

        Args:
            param_group: a torch param group dict (``{"params": [...], "lr": ...}``);
                ``lookahead_k`` / ``lookahead_alpha`` / ``lookahead_pullback``
                in it override this Lookahead's settings for the group.

        Raises:
            SpecError: bad settings, or ``pullback`` needs a momentum buffer the
                new group lacks.
        """
        group = {**self._settings, "lookahead_step": self.la_step, **param_group}
        merged = {**self.defaults, **group}
        check_settings(merged["lookahead_k"], merged["lookahead_alpha"],
                       merged["lookahead_pullback"], "param_group.lookahead_")
        if merged["lookahead_pullback"] != "none" and momentum_buffer_name(
                self.optimizer, merged) is None:
            raise SpecError(
                f"param_group: momentum={merged.get('momentum', 'n/a')} keeps no momentum-like"
                f" buffer, expected one for pullback={merged['lookahead_pullback']!r}"
            )
        self.optimizer.add_param_group(group)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One inner step; every k-th step of a group also syncs its slow and fast weights.

        Args:
            closure: re-evaluates the model and returns the loss; called once.

        Returns:
            The closure's loss, or None without a closure.
        """
        state = self._local_state()
        params = [p for _, ps in self._local_groups() for p in ps]
        fused, loss = self._fused_step(closure, state, params)
        if fused:
            return loss
        if fused is None:  # the fused step was tried: the closure ran already
            closure = None
        fresh, bare = [], {}
        for p in params:
            buffers = state.get(p)
            if not buffers or "slow_param" not in buffers:
                fresh.append(p)
            elif buffers.keys() <= _SLOW:  # inner state cleared: let it re-initialise lazily
                bare[p] = state.pop(p)
        initialising = len(fresh) == len(params) and is_initialising_step(
            self.param_groups, params)
        if fresh:
            with torch.no_grad():
                before = {p: p.detach().clone() for p in fresh}
        try:
            inner_loss = self.optimizer.step(closure)
            loss = loss if fused is None else inner_loss
        finally:
            for p, buffers in bare.items():
                state.setdefault(p, {}).update(buffers)
        if fresh:
            self._add_slow(fresh, before)
        if initialising:
            return loss
        due = []
        for group in self.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % group["lookahead_k"] == 0:
                due.append(group)
        if due:
            self.sync(due)
        return loss

    def _fused_step(self, closure: Callable[[], float] | None, state: Any, params: list[Tensor]
                    ) -> tuple[bool | None, float | None]:
        """A k-th step of every group in one fused pass, where it can be (``lookahead_fused``).

        Returns ``(True, loss)`` when taken, ``(None, loss)`` when tried (the
        closure ran) but not taken, ``(False, None)`` when not due or possible.
        """
        due = all((g["lookahead_step"] + 1) % g["lookahead_k"] == 0 for g in self.param_groups)
        if not due or inner_problem(self.optimizer) is not None or any(
                "slow_param" not in state.get(p, {}) for p in params):
            return False, None
        loss = evaluate_closure(closure)
        if not fused_sync_step(self.optimizer, state, self._local_groups()):
            return None, loss
        for group, group_params in self._local_groups():
            group["lookahead_step"] += 1
            _reset_inner(state, group, group_params)
        return True, loss

    @torch.no_grad()
    def sync(self, groups: list[dict[str, Any]] | None = None) -> None:
        """Move slow weights toward the fast ones and restart the fast ones from them.

        ``step`` calls this for each group every k steps; calling it yourself
        adds an extra outer step (timm's ``sync_lookahead`` does this at epoch
        ends, which the paper does not). Every tensor is checked before any is
        changed, so a failure leaves no group half-synced. Under ZeRO each rank
        syncs its shard, then the updated shards are broadcast.

        Args:
            groups: the parameter groups to sync (default: all).

        Raises:
            StateMismatchError: a slow buffer does not match its tensor.
        """
        chosen = self.param_groups if groups is None else groups
        work = [(g, ps, i) for i, (g, ps) in enumerate(self._local_groups())
                if any(g is c for c in chosen)]
        state = self._local_state()
        plans = [(g, ps, plan_group(self.optimizer, state, g, ps,
                                    self._sync_cache.setdefault(str(i), {})))
                 for g, ps, i in work]
        for group, params, blocks in plans:
            for plan in blocks:
                run_sync(plan, float(group["lookahead_alpha"]))
            _reset_inner(state, group, params)
        if local_optimizer(self.optimizer) is not self.optimizer:
            self.optimizer._sync_params()  # type: ignore[attr-defined]  # ZeRO: broadcast shards

    def _all_params(self) -> tuple[list[Tensor], list[Tensor]]:
        """(parameters with slow weights, their slow weights), this process's shards."""
        slow = self.slow_state
        params = [p for p in slow if "slow_param" in slow[p]]
        state = self._local_state()
        return [local_tensor(p) for p in params], [
            local_tensor(slow_buffer(state, p, "slow_param")) for p in params]

    @contextlib.contextmanager
    def slow_weights(self) -> Iterator[None]:
        """Put the slow weights into the parameters for the block, then restore the fast ones.

        Parameters that have not stepped yet are their own slow weights.

        Example:
            >>> w = torch.nn.Parameter(torch.ones(2))
            >>> la = Lookahead(torch.optim.SGD([w], lr=0.5), k=5)
            >>> w.grad = torch.ones(2); _ = la.step()
            >>> with la.slow_weights():
            ...     print(w.detach())
            tensor([1., 1.])
            >>> w.detach()
            tensor([0.5000, 0.5000])
        """
        params, slows = self._all_params()
        with torch.no_grad():
            fast = [p.clone() for p in params]
            torch._foreach_copy_(params, slows)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, fast)

    @torch.no_grad()
    def load_slow_weights(self) -> None:
        """Copy the slow weights into the parameters for good: how to end training on them.

        Call it after the last step, before evaluating or saving the model. (A
        run whose step count is a multiple of k already ends on them.)
        """
        params, slows = self._all_params()
        torch._foreach_copy_(params, slows)


def _reset_inner(state: Any, group: dict[str, Any], params: list[Tensor]) -> None:
    """``pullback="reset"``: clear each parameter's inner state so it re-initialises lazily."""
    if group["lookahead_pullback"] == "reset":
        for p in params:
            buffers = state.get(p, {})
            for key in [k for k in buffers if k not in _SLOW]:
                del buffers[key]
