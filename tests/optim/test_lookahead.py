"""Lookahead: paper-exact sync, one set of groups, exact resume, pullback, errors."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from steplab.errors import SpecError, StateMismatchError
from steplab.optim import Lookahead, create_optimizer, reference


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 5, generator=g), torch.randn(16, 2, generator=g)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, start: int = 0) -> None:
    x, y = _data()
    for i in range(start, start + steps):
        opt.zero_grad()
        xb = x + 0.01 * i  # a different batch each step
        nn.functional.mse_loss(model(xb), y).backward()
        opt.step()


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_first_sync_happens_at_step_k_not_at_step_one() -> None:
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    la = Lookahead(torch.optim.SGD([w], lr=0.1), k=3, alpha=0.5)
    fast = w.detach().clone()
    for step in range(1, 4):
        w.grad = torch.ones(2)
        la.step()
        fast = fast - 0.1
        if step < 3:
            assert torch.equal(w.detach(), fast), f"synced early at step {step}"
    phi = torch.tensor([1.0, -2.0]) + 0.5 * (fast - torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(w.detach(), phi)
    torch.testing.assert_close(la.slow_state[w]["slow_param"], phi)
    assert la.la_step == 3


@pytest.mark.parametrize("pullback", ["none", "reset", "pullback"])
@pytest.mark.parametrize("inner", ["momentum(lr=0.05)", "adam(lr=0.01)"])
def test_trajectory_matches_algorithm_1_reference(inner: str, pullback: str) -> None:
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=(4, 3))
    noise = rng.normal(size=(23, 4, 3))
    p = nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    la = create_optimizer(f"lookahead({inner}, k=4, alpha=0.7, pullback={pullback})", [p])
    name = inner.split("(")[0]
    key = "momentum_buffer" if name == "momentum" else "exp_avg"
    ref = reference.Lookahead(
        reference.for_name(name, lr=float(inner.split("=")[1][:-1])),
        theta0,
        k=4,
        alpha=0.7,
        pullback=pullback,
        momentum_key=key,
    )
    theta = theta0
    for t in range(23):
        p.grad = 0.2 * p.detach() + torch.tensor(noise[t])
        la.step()
        theta = ref.step(theta, 0.2 * theta + noise[t])
    np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-9, atol=1e-10)


def test_groups_and_state_are_the_inner_objects_before_and_after_load() -> None:
    model = _model()
    la = create_optimizer("lookahead(adamw, k=3)", model)
    assert isinstance(la, Lookahead)
    groups, state = la.param_groups, la.state
    assert groups is la.optimizer.param_groups and state is la.optimizer.state
    assert la.defaults is la.optimizer.defaults
    _train(model, la, 4)
    la.load_state_dict(la.state_dict())
    assert la.param_groups is groups is la.optimizer.param_groups
    assert la.state is state is la.optimizer.state
    la.optimizer.load_state_dict(la.optimizer.state_dict())  # the inner rebinding its list
    assert la.param_groups is la.optimizer.param_groups


def test_scheduler_on_wrapper_drives_inner_lr_after_load() -> None:
    model = _model()
    la = create_optimizer("lookahead(sgd(lr=0.1), k=2)", model)
    sched = torch.optim.lr_scheduler.StepLR(la, step_size=1, gamma=0.5)
    _train(model, la, 1)
    sched.step()
    la.load_state_dict(la.state_dict())
    _train(model, la, 1, start=1)
    sched.step()
    assert [g["lr"] for g in la.optimizer.param_groups] == pytest.approx([0.025, 0.025])
    la.param_groups[0]["lr"] = 0.3  # a hyperparameter edit on the wrapper
    assert la.optimizer.param_groups[0]["lr"] == 0.3


def test_add_param_group_gives_new_params_slow_weights_from_their_value_at_first_step() -> None:
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.full((2,), 5.0))
    la = Lookahead(torch.optim.SGD([a], lr=0.1, momentum=0.9), k=2, pullback="pullback")
    a.grad = torch.ones(3)
    la.step()
    la.add_param_group({"params": [b], "lr": 0.5})
    assert la.param_groups[-1]["lookahead_step"] == 1  # syncs with the other group
    assert la.param_groups[-1]["lookahead_pullback"] == "pullback"
    b.grad = torch.ones(2)
    la.step()  # the sync at step 2 covers b too: φ₀ = 5, θ = 4.5, φ = 4.75
    torch.testing.assert_close(b.detach(), torch.full((2,), 5.0 - 0.25))
    torch.testing.assert_close(la.state[b]["slow_param"], torch.full((2,), 4.75))
    assert la.optimizer.param_groups[-1]["params"] == [b]


def test_add_param_group_without_momentum_under_pullback_raises() -> None:
    la = Lookahead(
        torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.9), pullback="pullback"
    )
    with pytest.raises(SpecError, match="momentum=0"):
        la.add_param_group({"params": [nn.Parameter(torch.ones(2))], "momentum": 0.0})


def _roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


@pytest.mark.parametrize(
    "spec",
    [
        "lookahead(adamw(lr=0.01), k=5)",
        "lookahead(adam(lr=0.01), k=5, pullback=reset)",
        "lookahead(nesterov(lr=0.05), k=5, alpha=0.8, pullback=pullback)",
        "lookahead(adam(lr=0.01, foreach=True), k=3, pullback=pullback)",
    ],
)
def test_resume_mid_cycle_is_bit_exact(spec: str) -> None:
    model_a = _model()
    opt_a = create_optimizer(spec, model_a)
    _train(model_a, opt_a, 17)

    model_b = _model()
    opt_b = create_optimizer(spec, model_b)
    _train(model_b, opt_b, 7)  # stops mid-cycle
    saved_model, saved_opt = _roundtrip(model_b.state_dict()), _roundtrip(opt_b.state_dict())
    model_c = _model(seed=123)  # fresh model and optimizer, different init
    opt_c = create_optimizer(spec, model_c)
    model_c.load_state_dict(saved_model)
    opt_c.load_state_dict(saved_opt)
    _train(model_c, opt_c, 10, start=7)
    for pa, pc in zip(model_a.parameters(), model_c.parameters(), strict=True):
        assert torch.equal(pa, pc)


def test_state_dict_layout_matches_the_contract() -> None:
    model = _model()
    la = create_optimizer("lookahead(momentum, k=4, alpha=0.6, pullback=pullback)", model)
    _train(model, la, 2)
    state = _roundtrip(la.state_dict())
    assert "lookahead" not in state and set(state) == {"state", "param_groups"}
    for group in state["param_groups"]:
        settings = tuple(group[f"lookahead_{k}"] for k in ("k", "alpha", "pullback", "step"))
        assert settings == (4, 0.6, "pullback", 2)
    params = [p for g in la.param_groups for p in g["params"]]
    assert sorted(state["state"]) == list(range(len(params)))
    assert set(state["state"][0]) == {"momentum_buffer", "slow_param", "slow_momentum"}


def test_slow_weights_beside_inner_state_leave_adams_lazy_init_alone() -> None:
    model = _model()
    la = create_optimizer("lookahead(adam, k=2)", model)
    assert len(la.state) == 0  # nothing before the first step, as for Adam itself
    _train(model, la, 1)
    for p in model.parameters():
        assert set(la.state[p]) == {"step", "exp_avg", "exp_avg_sq", "slow_param"}
        assert float(la.state[p]["step"]) == 1.0


def test_load_casts_slow_weights_to_each_parameters_dtype() -> None:
    model = _model()
    la = create_optimizer("lookahead(sgd, k=3)", model)
    _train(model, la, 2)
    state = la.state_dict()
    model64 = _model().double()
    la64 = create_optimizer("lookahead(sgd, k=3)", model64)
    la64.load_state_dict(state)
    assert isinstance(la64, Lookahead)
    for p in model64.parameters():
        assert la64.slow_state[p]["slow_param"].dtype == torch.float64
    for _ in range(1):  # the next sync (step 3) runs on float64
        la64.zero_grad()
        model64(torch.ones(4, 5, dtype=torch.float64)).sum().backward()
        la64.step()
    assert la64.la_step == 3


def test_load_rejects_a_plain_or_mismatched_state_dict() -> None:
    model = _model()
    la = create_optimizer("lookahead(sgd, k=3)", model)
    plain = create_optimizer("sgd", model)
    with pytest.raises(StateMismatchError, match="lookahead"):
        la.load_state_dict(plain.state_dict())
    _train(model, la, 1)
    state = la.state_dict()
    state["state"][0]["slow_param"] = torch.zeros(7)
    with pytest.raises(StateMismatchError, match="shape"):
        la.load_state_dict(state)


def test_pullback_interpolates_only_buffers_the_inner_optimizer_uses() -> None:
    model = _model()
    la = create_optimizer("lookahead(adamw, k=2, pullback=pullback)", model)
    _train(model, la, 4)
    for p in model.parameters():
        assert set(la.state[p]) == {"step", "exp_avg", "exp_avg_sq", "slow_param", "slow_momentum"}
        assert torch.equal(la.state[p]["exp_avg"], la.slow_state[p]["slow_momentum"])


def test_reset_clears_inner_state_and_adam_reinitialises_with_step_one() -> None:
    model = _model()
    la = create_optimizer("lookahead(adam, k=3, pullback=reset)", model)
    _train(model, la, 3)
    assert all(set(la.state[p]) == {"slow_param"} for p in model.parameters())
    _train(model, la, 1, start=3)
    assert all(float(la.state[p]["step"]) == 1.0 for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(
    "inner, mode",
    [
        (lambda ps: torch.optim.SGD(ps, lr=0.1), "pullback"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1), "reset"),
        (lambda ps: torch.optim.Adagrad(ps), "pullback"),
    ],
)
def test_pullback_without_a_momentum_buffer_raises_naming_both(
    inner: Callable[[list[torch.Tensor]], torch.optim.Optimizer], mode: str
) -> None:
    opt = inner([nn.Parameter(torch.ones(2))])
    with pytest.raises(
        SpecError, match=rf"pullback: got '{mode}' with optimizer {type(opt).__name__}"
    ):
        Lookahead(opt, pullback=mode)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"k": 0}, "k"),
        ({"k": 2.5}, "k"),
        ({"k": True}, "k"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": "half"}, "alpha"),
        ({"pullback": "pull"}, "pullback"),
    ],
)
def test_bad_arguments_raise_spec_error_naming_argument(kwargs: dict[str, Any], field: str) -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1)
    with pytest.raises(SpecError, match=rf"^{field}: got .*expected"):
        Lookahead(opt, **kwargs)


def test_non_optimizer_raises_spec_error() -> None:
    with pytest.raises(SpecError, match=r"optimizer: got list, expected a torch\.optim\.Optimizer"):
        Lookahead([nn.Parameter(torch.ones(2))])  # type: ignore[arg-type]


def test_closure_is_called_once_and_its_loss_returned() -> None:
    model = _model()
    la = create_optimizer("lookahead(sgd)", model)
    x, y = _data()
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        la.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    loss = la.step(closure)
    assert len(calls) == 1 and isinstance(loss, torch.Tensor)


def test_grad_scaler_steps_and_skips_non_finite_steps() -> None:
    model = _model()
    la = create_optimizer("lookahead(adamw(lr=0.01), k=2)", model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = _data()
    before = _params(model)
    scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
    scaler.step(la)
    scaler.update()
    assert la.la_step == 1 and not torch.equal(before[0], model[0].weight)
    la.zero_grad()
    scaler.scale(nn.functional.mse_loss(model(x * float("inf")), y)).backward()
    after_one = _params(model)
    scaler.step(la)  # non-finite gradients: the step is skipped
    scaler.update()
    assert la.la_step == 1
    assert all(torch.equal(a, b) for a, b in zip(after_one, model.parameters(), strict=True))


def test_parameters_without_grad_are_skipped_by_inner_and_still_synced() -> None:
    used, unused = nn.Parameter(torch.ones(2)), nn.Parameter(torch.full((2,), 3.0))
    la = Lookahead(torch.optim.Adam([used, unused], lr=0.1), k=2)
    for _ in range(4):
        used.grad = torch.ones(2)
        la.step()
    assert torch.equal(unused.detach(), torch.full((2,), 3.0))
    assert torch.equal(la.slow_state[unused]["slow_param"], torch.full((2,), 3.0))
    assert set(la.state[unused]) == {"slow_param"}  # no inner state


def test_slow_weights_context_swaps_in_and_restores_fast_weights() -> None:
    model = _model()
    la = create_optimizer("lookahead(sgd(lr=0.1), k=5)", model)
    assert isinstance(la, Lookahead)
    initial = _params(model)
    _train(model, la, 2)
    fast = _params(model)
    with la.slow_weights():
        assert all(torch.equal(a, b) for a, b in zip(initial, model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(fast, model.parameters(), strict=True))
    la.load_slow_weights()
    assert all(torch.equal(a, b) for a, b in zip(initial, model.parameters(), strict=True))


def test_sync_handles_mixed_dtypes_in_one_optimizer() -> None:
    a = nn.Parameter(torch.ones(3, dtype=torch.float32))
    b = nn.Parameter(torch.ones(3, dtype=torch.float64))
    la = Lookahead(torch.optim.SGD([a, b], lr=0.1, foreach=True), k=1, alpha=0.5)
    a.grad, b.grad = torch.ones(3), torch.ones(3, dtype=torch.float64)
    la.step()
    torch.testing.assert_close(a.detach(), torch.full((3,), 0.95))
    torch.testing.assert_close(b.detach(), torch.full((3,), 0.95, dtype=torch.float64))


def test_step_hooks_and_state_dict_hooks_run_on_the_wrapper() -> None:
    model = _model()
    la = create_optimizer("lookahead(sgd)", model)
    seen: list[str] = []
    la.register_step_pre_hook(lambda opt, args, kwargs: seen.append("pre"))
    la.register_step_post_hook(lambda opt, args, kwargs: seen.append("post"))
    la.register_state_dict_post_hook(lambda opt, sd: seen.append("sd") or None)
    _train(model, la, 1)
    la.state_dict()
    assert seen == ["pre", "post", "sd"]


def test_deepcopy_keeps_groups_shared_and_slow_weights() -> None:
    model = _model()
    la = create_optimizer("lookahead(adam, k=2)", model)
    _train(model, la, 1)
    twin = copy.deepcopy(la)
    assert isinstance(twin, Lookahead)
    assert twin.param_groups is twin.optimizer.param_groups
    assert len(twin.slow_state) == len(list(model.parameters()))


def test_works_with_a_torch_compiled_model() -> None:
    # aot_eager runs dynamo and AOTAutograd (what changes the parameters' autograd
    # path) without inductor's C++ build, which takes over a minute on this CPU
    model = _model()
    compiled = torch.compile(model, backend="aot_eager")
    la = create_optimizer("lookahead(adamw(lr=0.01), k=2)", model)
    x, y = _data()
    losses = []
    for _ in range(4):
        la.zero_grad()
        loss = nn.functional.mse_loss(compiled(x), y)
        loss.backward()
        la.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert la.la_step == 4


def test_reset_clears_the_state_of_an_optimizer_without_momentum() -> None:
    """Adagrad has no momentum to interpolate, but its accumulator can be reset."""
    w = nn.Parameter(torch.ones(3))
    la = Lookahead(torch.optim.Adagrad([w], lr=0.1), k=2, pullback="reset")
    for step in range(1, 5):
        la.zero_grad()
        (w**2).sum().backward()
        la.step()
        assert ("sum" in la.state[w]) == (step % 2 == 1)  # cleared at each sync, rebuilt lazily


def test_slow_weights_follow_a_dtype_change_after_construction() -> None:
    """model.double() after building the optimizer: the next sync moves the slow copies."""
    model = nn.Linear(3, 2)
    la = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=1,
                   pullback="pullback")
    model.double()
    model(torch.randn(4, 3, dtype=torch.float64)).sum().backward()
    la.step()
    for p in model.parameters():
        assert la.slow_state[p]["slow_param"].dtype == torch.float64
        assert torch.equal(la.slow_state[p]["slow_param"], p.detach())
