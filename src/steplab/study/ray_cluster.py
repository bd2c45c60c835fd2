"""Start or join a Ray cluster safely, for the comparison and tuning executors.

A local Ray is started on demand with the dashboard off and every server bound
to 127.0.0.1; ``address`` joins an existing cluster instead.
"""

from __future__ import annotations

import os
from typing import Any

from steplab.errors import SpecError

__all__ = ["ensure_ray"]


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Make sure this process is connected to Ray and return the ``ray`` module.

    Args:
        address: an existing cluster (``"auto"`` or ``"ray://host:port"``); None
            starts a local one.
        num_cpus: CPUs a local cluster may use (default: all of this machine's).

    Returns:
        The imported ``ray`` module, initialised.

    Raises:
        SpecError: Ray is not installed, or the cluster at ``address`` cannot be reached.
    """
    try:
        import ray
    except ImportError as exc:
        raise SpecError(
            "executor: 'ray' needs Ray; install it with pip install 'steplab[ray]'"
        ) from exc
    if ray.is_initialized():
        return ray
    # Workers inherit this: one torch thread per worker, like the local pool.
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "ignore_reinit_error": True,
        "runtime_env": {"env_vars": env},
        "configure_logging": False,
    }
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SpecError(
            f"address: could not connect to Ray at {address!r} ({exc}); "
            "expected a running cluster (start one with `ray start --head`) or no --address"
        ) from exc
    return ray
