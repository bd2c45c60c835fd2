"""Lookahead (Zhang, Lucas, Ba, Hinton 2019) as a ``torch.optim.Optimizer``.

The wrapper shares the inner optimizer's ``param_groups``, ``state`` and
``defaults`` objects, so LR schedulers, hyperparameter edits, ``GradScaler``
and ``add_param_group`` act on one set of groups. Slow weights live in
``slow_state``, apart from the inner per-parameter state, so Adam's lazy
initialisation is untouched.
"""

from __future__ import annotations

import contextlib
import numbers
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from steplab.errors import SpecError, StateMismatchError
from steplab.optim.interpolate import lerp_and_copy_

__all__ = ["PULLBACK_MODES", "Lookahead", "momentum_buffer_name"]

#: what happens to the inner optimizer's state at each sync
PULLBACK_MODES: tuple[str, ...] = ("none", "reset", "pullback")

_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


def momentum_buffer_name(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> str | None:
    """Name of the momentum-like buffer ``optimizer`` keeps for ``group``, or None.

    SGD and RMSprop keep ``momentum_buffer`` when ``momentum != 0``; the Adam
    family (Adam, AdamW, NAdam, RAdam, Adamax) keeps ``exp_avg``.

    >>> p = torch.zeros(2, requires_grad=True)
    >>> momentum_buffer_name(torch.optim.Adam([p]), {})
    'exp_avg'
    >>> momentum_buffer_name(torch.optim.SGD([p]), {"momentum": 0.0}) is None
    True
    """
    adam_family = (
        torch.optim.Adam,
        torch.optim.AdamW,
        torch.optim.NAdam,
        torch.optim.RAdam,
        torch.optim.Adamax,
    )
    if isinstance(optimizer, adam_family):
        return "exp_avg"
    if isinstance(optimizer, (torch.optim.SGD, torch.optim.RMSprop)) and group.get("momentum"):
        return "momentum_buffer"
    return None


def _check_args(optimizer: object, k: object, alpha: object, pullback: object) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise SpecError(
            f"optimizer: got {type(optimizer).__name__}, expected a torch.optim.Optimizer"
        )
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 1:
        raise SpecError(f"k: got {k!r}, expected an integer >= 1")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not 0.0 < float(alpha) <= 1.0
    ):
        raise SpecError(f"alpha: got {alpha!r}, expected a number in (0, 1]")
    if pullback not in PULLBACK_MODES:
        raise SpecError(f"pullback: got {pullback!r}, expected one of {', '.join(PULLBACK_MODES)}")
    if pullback == "none":
        return
    for group in optimizer.param_groups:
        no_momentum = momentum_buffer_name(optimizer, group) is None
        stateless = isinstance(optimizer, torch.optim.SGD) and not group.get("momentum")
        if no_momentum if pullback == "pullback" else stateless:
            raise SpecError(
                f"pullback: got {pullback!r} with optimizer {type(optimizer).__name__}"
                f"(momentum={group.get('momentum', 'n/a')}), which keeps no "
                f"{'momentum-like buffer' if pullback == 'pullback' else 'state to reset'};"
                " expected pullback='none' (or an optimizer with momentum / exp_avg)"
            )


class Lookahead(torch.optim.Optimizer):
    r"""Lookahead around any torch optimizer, exactly as Algorithm 1 of the paper.

    Slow weights φ start as the parameters at construction. Each ``step`` runs
    one inner step on the fast weights θ; after every k inner steps::

        φ ← φ + α (θ − φ)        # slow weights move toward the fast ones
        θ ← φ                     # fast weights restart from the slow ones

    so the first sync happens at step k. ``pullback`` says what happens to the
    inner optimizer's state at a sync: ``"none"`` keeps it; ``"reset"`` clears
    each parameter's state so the inner optimizer re-initialises it lazily
    (Adam's step count and moments included: the paper's "resetting");
    ``"pullback"`` interpolates the momentum-like buffer m (SGD's
    ``momentum_buffer``, the Adam family's ``exp_avg``) like the weights:
    m ← m_slow + α (m − m_slow), m_slow ← m.

    Args:
        optimizer: the inner (fast) optimizer.
        k: inner steps per sync, an integer >= 1.
        alpha: slow step size α in (0, 1].
        pullback: ``"none"``, ``"reset"`` or ``"pullback"``.

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
    ) -> None:
        _check_args(optimizer, k, alpha, pullback)
        # torch.optim.Optimizer.__init__ would re-add the groups; set up its hook
        # machinery by hand and share the inner groups/state/defaults instead.
        for name in _HOOK_DICTS:
            setattr(self, name, OrderedDict())
        self._patch_step_function()
        self._warned_capturable_if_run_uncaptured = True
        self.optimizer = optimizer
        self.k = int(k)
        self.alpha = float(alpha)
        self.pullback = pullback
        self.la_step = 0
        self.slow_state: dict[Tensor, dict[str, Tensor]] = {}
        self._sync_cache: dict[str, dict[str, Any]] = {}  # block views reused by each sync
        for group in self.param_groups:
            self._init_slow(group["params"])

    # The wrapper has no groups or state of its own: these are the inner ones.
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups[:] = groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @state.setter
    def state(self, state: Any) -> None:
        new = dict(state)
        self.optimizer.state.clear()
        self.optimizer.state.update(new)

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, defaults: dict[str, Any]) -> None:
        self.optimizer.defaults = defaults

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sync_cache": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._patch_step_function()

    def __repr__(self) -> str:
        inner = type(self.optimizer).__name__
        return f"Lookahead({inner}, k={self.k}, alpha={self.alpha}, pullback={self.pullback!r})"

    def _init_slow(self, params: list[Tensor]) -> None:
        with torch.no_grad():
            for p in params:
                slow = {"slow_param": p.detach().clone()}
                if self.pullback == "pullback":
                    slow["slow_momentum"] = torch.zeros_like(p)  # momentum starts at zero
                self.slow_state[p] = slow

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer; its parameters get slow weights now.

        Args:
            param_group: a torch param group dict (``{"params": [...], "lr": ...}``).

        Raises:
            SpecError: ``pullback`` needs a momentum buffer the new group lacks.
        """
        merged = {**self.defaults, **param_group}
        if self.pullback != "none" and momentum_buffer_name(self.optimizer, merged) is None:
            raise SpecError(
                f"param_group: momentum={merged.get('momentum', 'n/a')} keeps no momentum-like"
                f" buffer, expected one for pullback={self.pullback!r}"
            )
        self.optimizer.add_param_group(param_group)
        self._init_slow(self.param_groups[-1]["params"])

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One inner step; every k-th step also syncs slow and fast weights.

        Args:
            closure: re-evaluates the model and returns the loss; called once.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss = self.optimizer.step(closure)
        self.la_step += 1
        if self.la_step % self.k == 0:
            self.sync()
        return loss

    def _slow(self, p: Tensor, name: str, like: Tensor | None = None) -> Tensor:
        """A slow buffer of ``p``, moved to ``like``'s (default ``p``'s) device and dtype.

        Parameters moved with ``model.to(...)`` after construction take their
        slow copies along at the next sync instead of failing in the kernel.
        """
        ref = p if like is None else like
        slow: Tensor = self.slow_state[p][name]
        if slow.device != ref.device or slow.dtype != ref.dtype:
            slow = self.slow_state[p][name] = slow.to(device=ref.device, dtype=ref.dtype)
        return slow

    @torch.no_grad()
    def sync(self) -> None:
        """Move slow weights toward the fast ones and restart the fast ones from them.

        ``step`` calls this every k steps; calling it yourself adds an extra
        outer step (timm's ``sync_lookahead`` does this at epoch ends, which the
        paper does not).
        """
        params = [p for g in self.param_groups for p in g["params"]]
        slows = [self._slow(p, "slow_param") for p in params]
        lerp_and_copy_(params, slows, self.alpha, self._sync_cache.setdefault("param", {}))
        if self.pullback == "reset":
            for p in params:
                self.state.pop(p, None)
        elif self.pullback == "pullback":
            bufs, slow_bufs = [], []
            for g in self.param_groups:
                key = momentum_buffer_name(self.optimizer, g)
                for p in g["params"]:
                    buf = self.state.get(p, {}).get(key) if key else None
                    if isinstance(buf, Tensor):
                        bufs.append(buf)
                        slow_bufs.append(self._slow(p, "slow_momentum", like=buf))
            lerp_and_copy_(bufs, slow_bufs, self.alpha, self._sync_cache.setdefault("momentum", {}))

    @contextlib.contextmanager
    def slow_weights(self) -> Iterator[None]:
        """Put the slow weights into the parameters for the block, then restore the fast ones.

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
        params = [p for g in self.param_groups for p in g["params"]]
        with torch.no_grad():
            fast = [p.detach().clone() for p in params]
            torch._foreach_copy_(params, [self.slow_state[p]["slow_param"] for p in params])
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
        params = [p for g in self.param_groups for p in g["params"]]
        torch._foreach_copy_(params, [self.slow_state[p]["slow_param"] for p in params])

    def state_dict(self) -> dict[str, Any]:
        """The inner state dict plus ``"lookahead"``: k, alpha, pullback, step and slow buffers.

        ``"slow"`` is keyed by the same parameter index the inner ``"state"``
        uses (position over all groups in order). Everything loads with
        ``torch.load(weights_only=True)``.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state = self.optimizer.state_dict()
        params = [p for g in self.param_groups for p in g["params"]]
        state["lookahead"] = {
            "k": self.k,
            "alpha": self.alpha,
            "pullback": self.pullback,
            "step": self.la_step,
            "slow": {i: dict(self.slow_state[p]) for i, p in enumerate(params)},
        }
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state)
            if result is not None:
                state = result
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`; groups and state stay the same shared objects.

        Slow buffers are cast to each parameter's device and dtype; k, alpha,
        pullback and the step counter are taken from the dict, as torch takes
        group hyperparameters from it.

        Raises:
            StateMismatchError: the dict has no ``"lookahead"`` entry, or its slow
                buffers do not match the parameters.
            SpecError: its k, alpha or pullback are invalid.
        """
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        la = state_dict.pop("lookahead", None)
        if not isinstance(la, dict):
            raise StateMismatchError(
                "state_dict['lookahead']: missing, expected the dict Lookahead.state_dict() writes"
            )
        _check_args(self.optimizer, la.get("k"), la.get("alpha"), la.get("pullback"))
        slow = self._slow_from_dict(la.get("slow", {}), str(la["pullback"]))
        groups, state = self.optimizer.param_groups, self.optimizer.state
        self.optimizer.load_state_dict(state_dict)
        # torch's load_state_dict rebinds both: put the new contents into the shared objects
        groups[:], self.optimizer.param_groups = self.optimizer.param_groups, groups
        new_state = dict(self.optimizer.state)
        state.clear()
        state.update(new_state)
        self.optimizer.state = state
        self.k, self.alpha, self.pullback = int(la["k"]), float(la["alpha"]), str(la["pullback"])
        self.la_step = int(la.get("step", 0))
        self.slow_state = slow
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _slow_from_dict(
        self, saved: dict[Any, Any], pullback: str
    ) -> dict[Tensor, dict[str, Tensor]]:
        params = [p for g in self.param_groups for p in g["params"]]
        names = ("slow_param", "slow_momentum") if pullback == "pullback" else ("slow_param",)
        slow: dict[Tensor, dict[str, Tensor]] = {}
        for i, p in enumerate(params):
            entry = saved.get(i, saved.get(str(i)))
            if not isinstance(entry, dict) or any(n not in entry for n in names):
                raise StateMismatchError(
                    f"state_dict['lookahead']['slow'][{i}]: missing, expected {' and '.join(names)}"
                    f" for parameter {i} of {len(params)}"
                )
            for n in names:
                if tuple(entry[n].shape) != tuple(p.shape):
                    raise StateMismatchError(
                        f"state_dict['lookahead']['slow'][{i}]['{n}']: shape"
                        f" {tuple(entry[n].shape)}, expected {tuple(p.shape)}"
                    )
            slow[p] = {
                n: entry[n].detach().to(device=p.device, dtype=p.dtype, copy=True) for n in names
            }
        return slow
