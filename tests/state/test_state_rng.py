"""RNG capture/restore and parameter hashes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from steplab.errors import CheckpointError
from steplab.state import capture_rng, params_sha256, restore_rng


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_restore_rng_replays_python_numpy_and_torch_after_a_json_round_trip() -> None:
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    state = json.loads(json.dumps(capture_rng()))
    first = _draw()
    _draw()
    restore_rng(state)
    assert _draw() == first


def test_malformed_rng_state_is_refused_and_changes_nothing() -> None:
    state = capture_rng()
    state["torch"] = "not base64!"
    before = capture_rng()
    with pytest.raises(CheckpointError, match=r"rng\.torch: not valid base64"):
        restore_rng(state)
    with pytest.raises(CheckpointError, match=r"rng\.format"):
        restore_rng({"format": "other"})
    assert capture_rng() == before


def test_params_sha256_sees_every_bit_and_dtype() -> None:
    model = nn.Linear(3, 2)
    digest = params_sha256(model)
    with torch.no_grad():
        model.bias[0] = torch.nextafter(model.bias[0], torch.tensor(1e9))
    assert params_sha256(model) != digest
    assert params_sha256(model.double()) != params_sha256(model.float())
