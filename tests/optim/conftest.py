"""Shared fixtures for the optim tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run each test on one intra-op thread, restoring the setting afterwards.

    The tensors here are tiny: on a shared, oversubscribed CPU, waking a second
    thread for every fused kernel costs far more than the work itself.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
