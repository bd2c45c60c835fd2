"""Capture and restore every random number generator a training run reads.

A resumed run draws the same dropout masks, augmentations and shuffles as an
uninterrupted one only if every generator it reads is restored: Python's
:mod:`random`, NumPy's global generator, torch's CPU generator and, when CUDA is
in use, each CUDA device's generator. The states are stored as plain JSON
(binary states as base64) so a checkpoint manifest can hold them and nothing
needs to be unpickled to read them back.

>>> import random, torch
>>> state = capture_rng()
>>> a = (random.random(), torch.rand(1).item())
>>> restore_rng(state)
>>> a == (random.random(), torch.rand(1).item())
True
"""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

from steplab.errors import CheckpointError

__all__ = ["capture_generator", "capture_rng", "restore_generator", "restore_rng"]

_FORMAT = "steplab.rng/1"


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(field: str, text: Any) -> torch.Tensor:
    if not isinstance(text, str):
        raise CheckpointError(f"rng.{field}: got {type(text).__name__}, expected a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise CheckpointError(f"rng.{field}: not valid base64 ({exc})") from None
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def capture_generator(generator: torch.Generator) -> str:
    """Return the state of one ``torch.Generator`` as a base64 string.

    Use it to store a data-order generator in a checkpoint's ``extra``.

    Args:
        generator: a CPU generator, e.g. the one that shuffles the data.

    Returns:
        The generator's state, base64-encoded.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> s = capture_generator(g)
        >>> x = torch.randperm(5, generator=g)
        >>> restore_generator(g, s)
        >>> torch.equal(x, torch.randperm(5, generator=g))
        True
    """
    return _b64(generator.get_state())


def restore_generator(generator: torch.Generator, state: str) -> None:
    """Set a ``torch.Generator`` to a state from :func:`capture_generator`.

    Raises:
        CheckpointError: if ``state`` is not a valid generator state.
    """
    try:
        generator.set_state(_unb64("generator", state))
    except RuntimeError as exc:
        raise CheckpointError(f"rng.generator: not a valid generator state ({exc})") from None


def capture_rng() -> dict[str, Any]:
    """Capture the Python, NumPy and torch (CPU and CUDA) RNG states.

    Returns:
        A JSON-serialisable dict: ``{"format", "python", "numpy", "torch",
        "cuda"}``; ``"cuda"`` is a list with one state per device, empty when
        CUDA is not initialised (capturing never initialises CUDA).

    Example:
        >>> sorted(capture_rng())
        ['cuda', 'format', 'numpy', 'python', 'torch']
    """
    version, mt_state, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda: list[str] = []
    initialised = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    if initialised:
        cuda = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return {
        "format": _FORMAT,
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
        "numpy": {
            "name": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": _b64(torch.get_rng_state()),
        "cuda": cuda,
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore RNG states captured by :func:`capture_rng`.

    Args:
        state: the dict :func:`capture_rng` returned (e.g. read from a manifest).

    Raises:
        CheckpointError: if ``state`` is malformed; nothing is changed then.
    """
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"rng.format: got {got!r}, expected {_FORMAT!r}")
    try:
        py = state["python"]
        py_state = (int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"])
        npy = state["numpy"]
        np_state = (
            str(npy["name"]),
            np.asarray(npy["keys"], dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
        torch_state = _unb64("torch", state["torch"])
        cuda_states = [_unb64("cuda", s) for s in state.get("cuda", [])]
        rng = random.Random()
        rng.setstate(py_state)  # validate before touching the global generators
        np.random.RandomState().set_state(np_state)
        torch.Generator().set_state(torch_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"rng: malformed RNG state ({type(exc).__name__}: {exc})") from None
    random.setstate(py_state)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
