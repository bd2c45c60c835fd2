"""steplab: optimizers, optimizer state and honest optimizer comparisons for PyTorch.

The top level exports the pieces most users need; the layers
(:mod:`steplab.optim`, :mod:`steplab.state`, :mod:`steplab.tasks`,
:mod:`steplab.train`, :mod:`steplab.study`) hold the rest.
"""

from __future__ import annotations

from steplab.errors import CheckpointError, SpecError, StateMismatchError, SteplabError
from steplab.optim import Lookahead, create_optimizer

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Lookahead",
    "SpecError",
    "StateMismatchError",
    "SteplabError",
    "__version__",
    "create_optimizer",
]
