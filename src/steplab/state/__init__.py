"""Optimizer state you can see, move and trust.

- :func:`inspect`: what each parameter's optimizer state holds and how big it is.
- :func:`named_state_dict` / :func:`load_named_state_dict`: state keyed by
  parameter name, surviving added, removed, reordered or regrouped parameters.
- :func:`transfer`: carry state to a changed model for fine-tuning.
- :mod:`steplab.checkpoint`: atomic, hashed, pickle-free checkpoints.
- :func:`capture_rng` / :func:`restore_rng`, :func:`params_sha256`: what
  bit-exact resume needs.
"""

from __future__ import annotations

from steplab.state.hashing import params_sha256, tensor_sha256
from steplab.state.inspection import StateReport, inspect, inspect_checkpoint
from steplab.state.named import NamedLoadReport, load_named_state_dict, named_state_dict
from steplab.state.rng import capture_generator, capture_rng, restore_generator, restore_rng
from steplab.state.transfer import POLICIES, TransferReport, transfer

__all__ = [
    "POLICIES",
    "NamedLoadReport",
    "StateReport",
    "TransferReport",
    "capture_generator",
    "capture_rng",
    "inspect",
    "inspect_checkpoint",
    "load_named_state_dict",
    "named_state_dict",
    "params_sha256",
    "restore_generator",
    "restore_rng",
    "tensor_sha256",
    "transfer",
]
