"""Content hashes of tensors and of a model's parameters.

The hash covers the raw bytes only (native byte order, C-contiguous), so two
tensors hash equal exactly when they are bit-identical with the same dtype
and element count.

>>> import torch
>>> tensor_sha256(torch.zeros(2)) == tensor_sha256(torch.zeros(2))
True
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["params_sha256", "tensor_bytes", "tensor_sha256"]


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """Return a read-only byte view of a CPU tensor (a copy only if not contiguous).

    Args:
        tensor: any CPU tensor, of any dtype (bfloat16 and float8 included).

    Returns:
        A ``memoryview`` of the tensor's bytes in C order.

    Example:
        >>> len(tensor_bytes(torch.ones(3, dtype=torch.bfloat16)))
        6
    """
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    array: np.ndarray[Any, np.dtype[np.uint8]] = flat.view(torch.uint8).numpy()
    return memoryview(array.data)


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's bytes; the tensor is moved to the CPU if needed."""
    return hashlib.sha256(tensor_bytes(tensor.detach().cpu())).hexdigest()


def params_sha256(model: nn.Module) -> str:
    """SHA-256 over the parameters' bytes, in ``named_parameters()`` order.

    Every parameter is made contiguous and moved to the CPU first, so the hash
    depends only on the values, dtypes and order. Resume tests and the training
    loop's ``final_params_sha256`` use it.

    Args:
        model: the module whose parameters to hash.

    Returns:
        64 hex digits.

    Example:
        >>> m = nn.Linear(2, 1)
        >>> params_sha256(m) == params_sha256(m)
        True
    """
    digest = hashlib.sha256()
    for _, param in model.named_parameters():
        digest.update(tensor_bytes(param.detach().cpu()))
    return digest.hexdigest()
