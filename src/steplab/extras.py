"""Optional dependencies: which extra installs each, and a clear error when one is missing.

``steplab`` itself needs only torch, numpy and a few small packages; search
needs Optuna (``pip install 'steplab[tune]'``) and cluster execution needs Ray
(``pip install 'steplab[ray]'``). :func:`require` imports such a module or
raises :class:`~steplab.errors.MissingDependencyError` saying which extra to
install, and the CLI turns a stray ``ModuleNotFoundError`` for one of them
into the same line.

>>> require("json").__name__
'json'
>>> EXTRAS["optuna"]
'tune'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from steplab.errors import MissingDependencyError

__all__ = ["EXTRAS", "missing_extra_message", "require"]

#: top-level module -> the ``steplab[...]`` extra that installs it
EXTRAS: dict[str, str] = {"optuna": "tune", "ray": "ray"}


def missing_extra_message(module: str, purpose: str = "this") -> str | None:
    """The one-line message for a missing optional module, or None if it is no extra's.

    Example:
        >>> print(missing_extra_message("optuna.samplers", "steplab tune"))  # doctest: +ELLIPSIS
        steplab tune needs optuna, which is not installed; install it with pip install ...
    """
    top = module.split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return (f"{purpose} needs {top}, which is not installed; "
            f"install it with pip install 'steplab[{extra}]'")


def require(module: str, purpose: str = "this") -> ModuleType:
    """Import ``module``; if it (an optional dependency) is missing, say which extra installs it.

    Args:
        module: e.g. ``"optuna"`` or ``"ray.tune"``.
        purpose: what needs it, for the message (``"steplab tune"``, ``"--backend ray"``).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module (or a package it needs) is not installed.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc.name or module, purpose) or missing_extra_message(
            module, purpose)
        if message is None:
            raise
        raise MissingDependencyError(message) from None
