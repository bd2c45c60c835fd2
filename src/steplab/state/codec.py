"""Turn state dicts into JSON plus a flat table of tensors, and back.

Scheduler, GradScaler and optimizer state dicts mix numbers, strings, lists,
tuples, dicts with integer keys and tensors. :func:`encode` replaces every
tensor by ``{"__tensor__": key}`` (collecting the tensor under ``key`` for the
safetensors file), a tuple by ``{"__tuple__": [...]}`` and a dict with
non-string keys by ``{"__items__": [[key, value], ...]}``, so
:func:`decode` gives back an equal structure with the same Python types.
Anything else (a function, a module) is refused: a checkpoint holds data, not
code.

>>> import torch
>>> tensors: list[tuple[str, torch.Tensor]] = []
>>> doc = encode({"betas": (0.9, 0.99), "state": {0: torch.ones(1)}}, ["opt"], tensors)
>>> doc["state"], [k for k, _ in tensors]
({'__items__': [[0, {'__tensor__': 'opt/state/0'}]]}, ['opt/state/0'])
>>> decode(doc, dict(tensors))["betas"]
(0.9, 0.99)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from steplab.errors import CheckpointError

__all__ = ["decode", "encode"]

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_SCALARS = (bool, int, float, str, type(None))


def _default_key(path: list[str]) -> str:
    return "/".join(path)


def encode(
    value: Any,
    path: list[str],
    tensors: list[tuple[str, torch.Tensor]],
    key_of: Callable[[list[str]], str] = _default_key,
) -> Any:
    """Encode ``value`` as JSON, appending its tensors to ``tensors``.

    Args:
        value: a state dict or any nesting of dicts, lists, tuples, scalars, tensors.
        path: where ``value`` sits (names the tensors and the errors).
        tensors: receives ``(key, tensor)`` pairs.
        key_of: builds a tensor's key from its path.

    Returns:
        A JSON-serialisable value.

    Raises:
        CheckpointError: for a value of a type a checkpoint cannot hold.
    """
    if isinstance(value, torch.Tensor):
        key = key_of(path)
        tensors.append((key, value))
        return {_TENSOR: key}
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v, [*path, str(i)], tensors, key_of) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, [*path, str(i)], tensors, key_of) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: encode(v, [*path, k], tensors, key_of) for k, v in value.items()}
        items = []
        for k, v in value.items():
            if not isinstance(k, _SCALARS):
                raise CheckpointError(f"{'.'.join(path)}: dict key {k!r} cannot be stored")
            items.append([k, encode(v, [*path, str(k)], tensors, key_of)])
        return {_ITEMS: items}
    raise CheckpointError(
        f"{'.'.join(path) or 'value'}: a {type(value).__name__} cannot be stored in a checkpoint; "
        "expected tensors, numbers, strings, lists, tuples or dicts"
    )


def decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Invert :func:`encode`, taking tensors from ``tensors`` by key.

    Raises:
        CheckpointError: if a referenced tensor is absent or the structure is malformed.
    """
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (marker, inner), = value.items()
        if marker == _TENSOR:
            if not isinstance(inner, str) or inner not in tensors:
                raise CheckpointError(f"manifest: tensor {inner!r} is not in tensors.safetensors")
            return tensors[inner]
        if marker == _TUPLE and isinstance(inner, list):
            return tuple(decode(v, tensors) for v in inner)
        if marker == _ITEMS and isinstance(inner, list):
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in inner):
                raise CheckpointError("manifest: malformed __items__ entry")
            return {k: decode(v, tensors) for k, v in inner}
    return {k: decode(v, tensors) for k, v in value.items()}
