"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from steplab.tasks import registry


@pytest.fixture(autouse=True)
def _task_registry_restored() -> Iterator[None]:
    """Tasks a test registers are gone after it, so no test sees another's toy tasks
    (the order tests share a worker in changes with pytest-xdist's scheduling)."""
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
