"""Parameter groups built from a model: weight decay only where it belongs.

Weight decay on biases and normalisation weights shrinks offsets and scales
toward zero for no benefit (the common practice of BERT, GPT-2 and nanoGPT);
:func:`named_param_groups` puts every parameter with ``ndim <= 1`` in a group
with ``weight_decay=0.0``. Pass your own ``no_decay`` to change that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

__all__ = ["NoDecayRule", "is_no_decay", "named_param_groups"]

#: decides from (name, parameter) whether a parameter is exempt from weight decay
NoDecayRule = Callable[[str, Tensor], bool]


def is_no_decay(name: str, param: Tensor) -> bool:
    """Default rule: biases and norm weights (every parameter with ``ndim <= 1``) get no decay.

    >>> fc = nn.Linear(2, 3)
    >>> is_no_decay("fc.bias", fc.bias), is_no_decay("fc.weight", fc.weight)
    (True, False)
    """
    return param.ndim <= 1


def named_param_groups(
    model: nn.Module, no_decay: NoDecayRule | None = is_no_decay
) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into a decayed and a ``weight_decay=0.0`` group.

    Each group dict has ``"params"`` (tensors) and ``"param_names"`` (their
    ``named_parameters()`` names, the key the state layer uses). Empty groups
    are left out; parameters with ``requires_grad=False`` too.

    Args:
        model: the module whose parameters to group.
        no_decay: ``(name, param) -> bool``; True puts the parameter in the
            no-decay group. None: one group, everything decayed.

    Returns:
        A list of torch param-group dicts.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        >>> [(g["param_names"], g.get("weight_decay")) for g in named_param_groups(model)]
        [(['0.weight'], None), (['0.bias', '1.weight', '1.bias'], 0.0)]
    """
    decay: dict[str, Tensor] = {}
    exempt: dict[str, Tensor] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        target = exempt if no_decay is not None and no_decay(name, param) else decay
        target[name] = param
    groups: list[dict[str, Any]] = []
    if decay:
        groups.append({"params": list(decay.values()), "param_names": list(decay)})
    if exempt:
        groups.append(
            {"params": list(exempt.values()), "param_names": list(exempt), "weight_decay": 0.0}
        )
    return groups
