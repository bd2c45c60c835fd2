"""Update rules: Lookahead, optimizers by name, parameter groups and NumPy reference oracles.

>>> import torch
>>> from steplab.optim import create_optimizer
>>> opt = create_optimizer("lookahead(adamw(lr=3e-4), k=5)", torch.nn.Linear(3, 1))
>>> type(opt).__name__, opt.k, type(opt.optimizer).__name__
('Lookahead', 5, 'AdamW')
"""

from __future__ import annotations

from steplab.optim import reference
from steplab.optim.factory import FASTEST_IMPLEMENTATION, create_optimizer, inner_optimizer
from steplab.optim.lookahead import PULLBACK_MODES, Lookahead, momentum_buffer_name
from steplab.optim.param_groups import is_no_decay, named_param_groups
from steplab.optim.registry import OPTIMIZERS, OptimizerInfo, optimizer_info
from steplab.optim.spec import OptimizerSpec, parse_spec

__all__ = [
    "FASTEST_IMPLEMENTATION",
    "OPTIMIZERS",
    "PULLBACK_MODES",
    "Lookahead",
    "OptimizerInfo",
    "OptimizerSpec",
    "create_optimizer",
    "inner_optimizer",
    "is_no_decay",
    "momentum_buffer_name",
    "named_param_groups",
    "optimizer_info",
    "parse_spec",
    "reference",
]
