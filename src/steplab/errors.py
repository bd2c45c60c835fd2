"""Errors that steplab raises for people to read.

Every kind carries a message that names the field, the value and what was
expected, so the CLI can print it as one line and exit with code 2.

>>> from steplab.errors import SpecError, SteplabError
>>> err = SpecError("lr: got -1.0, expected a number > 0")
>>> isinstance(err, SteplabError) and isinstance(err, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "MissingDependencyError",
    "SpecError",
    "StateMismatchError",
    "SteplabError",
]


class SteplabError(Exception):
    """Base class of every error steplab raises on purpose.

    The message is one line meant for a person: what is wrong (field, value)
    and what was expected.
    """


class SpecError(SteplabError, ValueError):
    """A bad optimizer, task, schedule or study spec, or a bad hyperparameter."""


class CheckpointError(SteplabError):
    """A checkpoint that is missing, corrupt, incomplete, unsafe or incompatible."""


class StateMismatchError(SteplabError):
    """Parameter names or shapes of saved state disagree with the model or optimizer."""


class MissingDependencyError(SteplabError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""
