"""Errors that steplab raises for people to read.

Every kind carries a message that names the field, the value and what was
expected, so the CLI can print it as one line and exit with code 2 (3 for
:class:`PeerLostError`, which a launcher must tell from a rank's own failure).

>>> from steplab.errors import SpecError, SteplabError
>>> err = SpecError("lr: got -1.0, expected a number > 0")
>>> isinstance(err, SteplabError) and isinstance(err, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "MissingDependencyError",
    "PeerLostError",
    "SpecError",
    "StateMismatchError",
    "SteplabError",
]


class SteplabError(Exception):
    """Base class of every error steplab raises on purpose.

    The message is one line meant for a person: what is wrong (field, value)
    and what was expected.
    """

    #: the CLI's exit code when this error ends a command
    exit_code: int = 2


class SpecError(SteplabError, ValueError):
    """A bad optimizer, task, schedule or study spec, or a bad hyperparameter."""


class CheckpointError(SteplabError):
    """A checkpoint that is missing, corrupt, incomplete, unsafe or incompatible."""


class StateMismatchError(SteplabError):
    """Parameter names or shapes of saved state disagree with the model or optimizer."""


class PeerLostError(SteplabError):
    """Another rank of a distributed run stopped answering: this rank is not the one that failed.

    Its own exit code (3) lets the launcher name the rank that failed first
    instead of one that reacted to it in the same poll.
    """

    exit_code = 3


class MissingDependencyError(SteplabError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""
