"""The one-pass compiled Lookahead sync: same result as the blocked foreach sync, used by
Lookahead where chosen, and torch's foreach ops (one warning) when compiling fails."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from steplab.optim import compiler, create_optimizer, reference, sync_kernel
from steplab.optim.interpolate import lerp_and_copy_
from steplab.optim.sync_kernel import SYNC_KERNEL, compiled_sync, sync_choice


def _pairs(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 7), (1,), (), (300,), (2, 3, 4)]
    fast = [torch.randn(s, generator=gen) for s in shapes]
    slow = [torch.randn(s, generator=gen) for s in shapes]
    fast.append(torch.randn(4, 6, generator=gen).t())  # non-contiguous: runs eagerly
    slow.append(torch.randn(6, 4, generator=gen))
    return fast, slow


def test_compiled_sync_matches_the_blocked_foreach_sync() -> None:
    fast, slow = _pairs(0)
    fast2, slow2 = [t.clone() for t in fast], [t.clone() for t in slow]
    assert compiled_sync(list(zip(fast, slow, strict=True)), 0.3)
    lerp_and_copy_(fast2, slow2, 0.3)
    for f, s, s2 in zip(fast, slow, slow2, strict=True):
        assert torch.equal(f, s)  # fast restarts exactly from slow
        torch.testing.assert_close(s, s2, rtol=1e-6, atol=1e-7)
    assert SYNC_KERNEL.compile_seconds  # the compiled kernel, not a fallback, did the work


def test_sync_choice_keeps_the_blocked_sync_on_cpu_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEPLAB_COMPILE", "auto")
    assert sync_choice(10**9, "cpu") == (False, "blocked foreach is one pass on CPU")
    assert sync_choice(10, "cuda")[0] is False
    assert sync_choice(10**7, "cuda")[0] is True
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    assert sync_choice(10**9, "cuda")[0] is False


def test_lookahead_on_the_compiled_sync_agrees_with_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(3, 4))
    noise = rng.normal(size=(30, 3, 4))
    p = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float32))
    opt = create_optimizer("lookahead(momentum(lr=0.05), k=3, alpha=0.4)", [p])
    hyper: dict[str, Any] = {"lr": 0.05, "momentum": 0.9}
    ref = reference.Lookahead(reference.for_name("momentum", **hyper), theta, k=3, alpha=0.4)
    for t in range(30):
        p.grad = 0.1 * p.detach() + torch.tensor(noise[t], dtype=torch.float32)
        opt.step()
        theta = ref.step(theta, 0.1 * theta + noise[t])
    np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-4, atol=2e-5)


def _failing_backend(gm: Any, example_inputs: Any) -> Any:
    raise RuntimeError("no compiler today")


def test_a_failed_sync_compile_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compiler, "BACKEND", _failing_backend)
    fresh = compiler.CompiledKernel("lookahead sync", sync_kernel.sync_update, hp_index=2)
    monkeypatch.setattr(sync_kernel, "SYNC_KERNEL", fresh)
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    fast, slow = _pairs(1)
    fast2, slow2 = [t.clone() for t in fast], [t.clone() for t in slow]
    with pytest.warns(RuntimeWarning, match="lookahead sync step could not be compiled") as seen:
        lerp_and_copy_(fast, slow, 0.5)
        lerp_and_copy_(fast, slow, 0.5)
    assert len(seen) == 1
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    lerp_and_copy_(fast2, slow2, 0.5)
    lerp_and_copy_(fast2, slow2, 0.5)
    for a, b in zip(fast + slow, fast2 + slow2, strict=True):
        assert torch.equal(a, b)
