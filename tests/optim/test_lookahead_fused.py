"""Lookahead(Adam/AdamW)'s fused k-th step: the NumPy reference, torch's results for
non-finite values, torch's state layout, bit-exact resume, checkpoints across paths, and
the unfused path wherever the fused one does not apply.

Compiles three small graphs once per cache (plain, amsgrad, pullback; amsgrad with pullback
is their composition and left uncompiled here to keep the suite short on a cold cache).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steplab.optim import Lookahead, compiler, create_optimizer, lookahead, lookahead_fused
from steplab.optim import reference as ref

STEPS = 12
SHAPES = st.lists(
    st.lists(st.integers(1, 6), min_size=1, max_size=2).map(tuple), min_size=1, max_size=3
)
EDGES = [math.inf, -math.inf, math.nan, 0.0, -0.0, 1e-40, -3e-42, 1.0, -2.5, 1e20, -1e30, 3e38]
EDGY = st.sampled_from(EDGES) | st.floats(-10, 10, width=32)


class Spy:
    """Counts the k-th steps the fused path took."""

    def __init__(self) -> None:
        self.taken = 0
        self.tried = 0


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    seen, real = Spy(), lookahead.fused_sync_step

    def counting(*args: Any) -> bool:
        taken = real(*args)
        seen.tried += 1
        seen.taken += int(taken)
        return taken

    monkeypatch.setattr(lookahead, "fused_sync_step", counting)
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    yield seen


def _grads(params: list[torch.Tensor], t: int) -> None:
    gen = torch.Generator().manual_seed(100 + t)
    for p in params:
        p.grad = 0.1 * p.detach() + torch.randn(p.shape, generator=gen)


def _run(spec: str, params: list[torch.Tensor], start: int, stop: int,
         opt: torch.optim.Optimizer | None = None) -> torch.optim.Optimizer:
    opt = create_optimizer(spec, params) if opt is None else opt
    for t in range(start, stop):
        _grads(params, t)
        opt.step()
    return opt


def _params(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(5, 7), (33,), (1,), ()]]


@pytest.mark.parametrize(
    ("inner", "pullbacks"),
    [("adamw", ["none", "reset"]), ("amsgrad", ["none"]), ("adam", ["pullback"])],
)
def test_fused_kth_step_agrees_with_the_reference(inner: str, pullbacks: list[str],
                                                  spy: Spy) -> None:
    @settings(max_examples=6, deadline=None)
    @given(lr=st.floats(1e-3, 0.05), wd=st.sampled_from([0.0, 0.01, 0.1]),
           betas=st.tuples(st.sampled_from([0.0, 0.9]), st.sampled_from([0.9, 0.999])),
           eps=st.sampled_from([1e-8, 1e-3]), k=st.integers(1, 4), alpha=st.floats(0.1, 1.0),
           pullback=st.sampled_from(pullbacks), shapes=SHAPES, seed=st.integers(0, 2**16))
    def check(lr: float, wd: float, betas: tuple[float, float], eps: float, k: int,
              alpha: float, pullback: str, shapes: list[tuple[int, ...]], seed: int) -> None:
        rng = np.random.default_rng(seed)
        thetas = [rng.normal(size=s) for s in shapes]
        noise = [rng.normal(size=(STEPS, *s)) for s in shapes]
        params = [torch.nn.Parameter(torch.tensor(t, dtype=torch.float32)) for t in thetas]
        # two groups: the second with its own lr and no weight decay
        hypers = [{"lr": lr, "weight_decay": wd, "betas": betas, "eps": eps},
                  {"lr": lr / 2, "weight_decay": 0.0, "betas": betas, "eps": eps}]
        groups = [{"params": params[:1], **hypers[0]}, {"params": params[1:], **hypers[1]}]
        opt = create_optimizer(f"lookahead({inner}, k={k}, alpha={alpha}, pullback={pullback})",
                               groups)
        rules = [ref.Lookahead(ref.for_name(inner, **hypers[min(i, 1)]), th, k=k, alpha=alpha,
                               pullback=pullback) for i, th in enumerate(thetas)]
        taken = spy.taken
        for t in range(STEPS):
            for p, n in zip(params, noise, strict=True):
                p.grad = 0.1 * p.detach() + torch.tensor(n[t], dtype=torch.float32)
            opt.step()
            thetas = [r.step(th, 0.1 * th + n[t])
                      for r, th, n in zip(rules, thetas, noise, strict=True)]
        # the fused step ran (a reset every step re-initialises Adam's state: never fused)
        assert spy.taken > taken or (pullback == "reset" and k == 1)
        for p, th in zip(params, thetas, strict=True):
            np.testing.assert_allclose(p.detach().numpy(), th, rtol=1e-4, atol=2e-5)

    check()


def _same(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """Same infinities and NaNs in the same places; finite values to float32 tolerance."""
    assert torch.equal(ours.isnan(), theirs.isnan()), what
    assert torch.equal(ours.isinf() & (ours > 0), theirs.isinf() & (theirs > 0)), what
    assert torch.equal(ours.isinf() & (ours < 0), theirs.isinf() & (theirs < 0)), what
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, equal_nan=True, msg=what)


@pytest.mark.parametrize("pullback", ["none", "pullback"])
def test_non_finite_and_subnormal_values_match_the_unfused_step(
    pullback: str, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    @settings(max_examples=20, deadline=None)
    @given(inner=st.sampled_from(["adam", "adamw"]), wd=st.sampled_from([0.0, 0.1]),
           maximize=st.booleans(), theta=st.lists(EDGY, min_size=1, max_size=40),
           data=st.data())
    def check(inner: str, wd: float, maximize: bool, theta: list[float],
              data: st.DataObject) -> None:
        n = len(theta)
        grads = [data.draw(st.lists(EDGY, min_size=n, max_size=n)) for _ in range(4)]
        spec = (f"lookahead({inner}(lr=0.5, weight_decay={wd}, maximize={maximize}, "
                f"foreach=False), k=2, pullback={pullback})")
        results = []
        for mode in ("always", "never"):
            monkeypatch.setenv("STEPLAB_COMPILE", mode)
            p = torch.nn.Parameter(torch.tensor(theta))
            opt = create_optimizer(spec, [p])
            for grad in grads:
                p.grad = torch.tensor(grad)
                opt.step()
            results.append((p.detach(), opt.state[p]))
        (ours, ours_state), (theirs, theirs_state) = results
        _same(ours, theirs, "parameter")
        assert sorted(ours_state) == sorted(theirs_state)
        for key, value in theirs_state.items():
            _same(ours_state[key], value, key)

    taken = spy.taken
    check()
    assert spy.taken > taken


def test_state_layout_resume_and_checkpoints_across_paths(
    spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = "lookahead(adamw(lr=0.01, weight_decay=0.1), k=3)"
    straight = _params()
    _run(spec, straight, 0, 10)
    assert spy.taken == 3
    first = _params()
    opt = _run(spec, first, 0, 5)
    saved = copy.deepcopy(opt.state_dict())
    for mode in ("always", "never"):  # back on the fused path: bit-exact; on torch's: close
        monkeypatch.setenv("STEPLAB_COMPILE", mode)
        resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
        again = create_optimizer(spec, resumed)
        again.load_state_dict(copy.deepcopy(saved))
        _run(spec, resumed, 5, 10, again)
        for p, q in zip(straight, resumed, strict=True):
            if mode == "always":
                assert torch.equal(p, q)
            else:
                torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    torch_state = _run(spec, _params(), 0, 10).state_dict()
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    fused_state = _run(spec, _params(), 0, 10).state_dict()
    assert fused_state["param_groups"] == torch_state["param_groups"]
    for index, buffers in torch_state["state"].items():
        assert sorted(fused_state["state"][index]) == sorted(buffers)
        for key, value in buffers.items():
            mine = fused_state["state"][index][key]
            assert (mine.dtype, mine.shape) == (value.dtype, value.shape), key
            torch.testing.assert_close(mine, value, rtol=1e-5, atol=1e-6)


def test_a_fused_step_invalidates_a_parameter_saved_for_backward(spy: Spy) -> None:
    w = torch.nn.Parameter(torch.randn(16))
    la = create_optimizer("lookahead(adamw, k=2)", [w])
    w.grad = torch.ones(16)
    la.step()
    loss = (w * w).sum()
    before = w._version
    la.step()
    assert spy.taken == 1 and w._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_closure_runs_once_and_parameters_without_grad_are_only_synced(spy: Spy) -> None:
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.full((3,), 2.0))
    la = Lookahead(torch.optim.AdamW([used, unused], lr=0.1), k=2)
    calls = []

    def closure() -> float:
        calls.append(1)
        used.grad = torch.ones(3)
        return 1.5

    for _ in range(4):
        assert la.step(closure) == 1.5
    assert len(calls) == 4 and spy.taken == 2
    assert torch.equal(unused.detach(), torch.full((3,), 2.0))
    assert set(la.state[unused]) == {"slow_param"} and la.state[used]["step"].item() == 4.0


def _hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    return None


class _MyAdamW(torch.optim.AdamW):
    """A subclass may change step (ZeroRedundancyOptimizer is another class altogether)."""


@pytest.mark.parametrize(
    "case", ["bf16 slow", "step hook", "sgd", "grad scaler", "auto, small", "subclass"])
def test_what_cannot_fuse_takes_the_unfused_path(
    case: str, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(params: list[torch.Tensor]) -> Lookahead:
        adamw = _MyAdamW if case == "subclass" else torch.optim.AdamW
        inner: torch.optim.Optimizer = (torch.optim.SGD(params, lr=0.1, momentum=0.9)
                                        if case == "sgd" else adamw(params, lr=0.1, fused=True))
        if case == "step hook":
            inner.register_step_pre_hook(_hook)
        if case == "grad scaler":
            inner.grad_scale = torch.ones(())  # type: ignore[attr-defined]
        return Lookahead(inner, k=2, slow="bf16" if case == "bf16 slow" else "fp32")

    if case == "auto, small":
        monkeypatch.setenv("STEPLAB_COMPILE", "auto")
    ours = _params()
    _run("", ours, 0, 4, build(ours))
    assert spy.taken == 0
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    theirs = _params()
    _run("", theirs, 0, 4, build(theirs))
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)


def test_grad_scaler_skipped_steps_leave_the_cycle_as_the_unfused_path(
    spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = []
    for mode in ("always", "never"):
        monkeypatch.setenv("STEPLAB_COMPILE", mode)
        params = _params()
        la = create_optimizer("lookahead(adamw(lr=0.01), k=2)", params)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
        for t in range(6):
            _grads(params, t)
            if t == 3:  # the k-th step's gradients overflow: the whole step is skipped
                params[0].grad[0, 0] = math.inf
            scale = scaler.scale(torch.ones(()))  # as scaler.scale(loss).backward() would
            for p in params:
                p.grad.mul_(scale)  # type: ignore[union-attr]
            scaler.step(la)
            scaler.update()
        results.append((params, la.la_step))
    assert spy.taken == 2 and results[0][1] == results[1][1] == 5
    for p, q in zip(results[0][0], results[1][0], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _failing_backend(gm: Any, example_inputs: Any) -> Any:
    raise RuntimeError("no compiler here")


def test_a_failed_compile_falls_back_with_one_warning(
    spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiler, "BACKEND", _failing_backend)
    kernel = compiler.CompiledKernel("lookahead(adam) k-th", lookahead_fused.adam_sync_update,
                                     hp_index=5, read_only=(1,))
    monkeypatch.setattr(lookahead_fused, "FUSED_KERNEL", kernel)
    spec = "lookahead(adamw(lr=0.01), k=2)"
    ours = _params()
    with pytest.warns(RuntimeWarning, match="k-th step could not be compiled") as seen:
        opt = _run(spec, ours, 0, 4)
    assert len(seen) == 1 and spy.tried == 2 and spy.taken == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(spec, ours, 4, 6, opt)
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    theirs = _params()
    _run(spec, theirs, 0, 6)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)


def test_auto_fuses_from_the_threshold_on_every_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from steplab.optim.paths import MIN_COMPILED_ELEMENTS, fused_step_choice

    monkeypatch.setenv("STEPLAB_COMPILE", "auto")
    monkeypatch.setattr("steplab.optim.paths.compiler_problem", lambda device: None)
    assert fused_step_choice(10**8, "cpu", tensors=20)[0] is True  # 1.12x vs 1.21x measured
    assert fused_step_choice(10**8, "cpu", tensors=10**5)[0] is False  # 1,000-element tensors
    assert fused_step_choice(MIN_COMPILED_ELEMENTS - 1, "cpu")[0] is False
    assert fused_step_choice(MIN_COMPILED_ELEMENTS, "cuda")[0] is True
    assert fused_step_choice(MIN_COMPILED_ELEMENTS - 1, "cuda")[0] is False
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    assert fused_step_choice(10, "cpu") == (True, "STEPLAB_COMPILE=always")
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    assert fused_step_choice(10**9, "cuda")[0] is False


def test_new_shapes_and_step_counts_reuse_one_graph(spy: Spy) -> None:
    from torch._dynamo.utils import counters

    _run("lookahead(adamw, k=1)", _params(), 0, 2)  # the plain variant is compiled (or loaded)
    graphs = counters["stats"]["unique_graphs"]
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(7,), (1,), (31, 3), (4096,), ()]]
    _run("lookahead(adamw(weight_decay=0.3), k=1, alpha=0.7)", params, 0, 4)
    assert spy.taken >= 4
    assert counters["stats"]["unique_graphs"] == graphs  # no recompile for sizes or hyperparameters
