"""Torch's optimizer protocol for :class:`~steplab.optim.Lookahead`.

Lookahead wraps an inner optimizer but has no groups, state or defaults of its
own: it shares the inner optimizer's objects, so LR schedulers, ``GradScaler``
and hyperparameter edits act on one set of groups. This module holds that
sharing (the properties, hook tables, pickling) and the state-dict round trip,
which migrates steplab's older Lookahead layout and keeps bf16 slow copies in
bf16. The algorithm itself (step, sync, slow weights) is in
:mod:`steplab.optim.lookahead`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from steplab.optim.lookahead_state import check_loadable, local_optimizer, migrate_state_dict
from steplab.optim.lookahead_sync import keep_bf16

__all__ = ["LookaheadProtocol"]

_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


class LookaheadProtocol(torch.optim.Optimizer):
    """An optimizer that shares an inner optimizer's groups, state and defaults.

    The base of :class:`~steplab.optim.Lookahead`; not meant to be used alone.
    ``torch.optim.Optimizer.__init__`` would re-add the inner groups, so
    :meth:`_share` sets up torch's hook machinery by hand instead.

    Args:
        optimizer: the inner optimizer whose objects are shared.
    """

    optimizer: torch.optim.Optimizer
    _sync_cache: dict[str, dict[str, Any]]

    def _share(self, optimizer: torch.optim.Optimizer) -> None:
        """Become a view of ``optimizer``: hook tables of our own, its groups and state."""
        for name in _HOOK_DICTS:
            setattr(self, name, OrderedDict())
        self._patch_step_function()
        self._warned_capturable_if_run_uncaptured = True
        self.optimizer = optimizer
        self._sync_cache = {}  # block views reused by each sync

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

    def _local_state(self) -> Any:
        """The state dict that holds this process's per-parameter buffers."""
        return local_optimizer(self.optimizer).state

    def _local_groups(self) -> list[tuple[dict[str, Any], list[Tensor]]]:
        """Each group's settings with the parameters whose state this process holds."""
        local = local_optimizer(self.optimizer)
        if local is self.optimizer:
            return [(g, list(g["params"])) for g in self.param_groups]
        return [(g, list(lg["params"]))
                for g, lg in zip(self.param_groups, local.param_groups, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict, which holds all of Lookahead's state.

        Slow buffers sit in ``state[i]`` beside the inner buffers; settings and
        the step counter in each ``param_groups[j]``. Everything loads with
        ``torch.load(weights_only=True)``. Under ZeRO, call the inner
        ``consolidate_state_dict()`` first, as for ZeRO itself.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state: dict[str, Any] = self.optimizer.state_dict()
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state)
            if result is not None:
                state = result
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (or one in steplab's older layout, migrated).

        Groups and state stay the same shared objects. Slow buffers are cast to
        each parameter's device and dtype by torch; k, alpha, pullback and the
        step counter are taken from the dict, as torch takes group
        hyperparameters from it.

        Args:
            state_dict: from :meth:`state_dict` (by keyword too, as DCP calls it).

        Raises:
            StateMismatchError: the dict is not a Lookahead's, or its slow
                buffers do not match the parameters.
            SpecError: its k, alpha or pullback are invalid.
        """
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        state_dict = migrate_state_dict(state_dict)
        check_loadable(state_dict, self.param_groups)
        groups, state = self.optimizer.param_groups, self.optimizer.state
        self.optimizer.load_state_dict(state_dict)
        # torch's load_state_dict rebinds both: put the new contents into the shared objects
        groups[:], self.optimizer.param_groups = self.optimizer.param_groups, groups
        new_state = dict(self.optimizer.state)
        state.clear()
        state.update(new_state)
        self.optimizer.state = state
        keep_bf16(self.param_groups, state)  # torch cast a bf16 slow copy to the param's dtype
        self._sync_cache.clear()
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)
