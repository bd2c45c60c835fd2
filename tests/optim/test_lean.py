"""Lean optimizer state (state=bf16/int8/int4): update rule, chunking, memory, load, Kahan."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import steplab.optim.lean as lean
import steplab.optim.lean_chunks as lean_chunks
from steplab.errors import SpecError
from steplab.optim import create_optimizer, reference
from steplab.optim.lean import LeanAdam, LeanSGD
from steplab.optim.reference_lean import LeanReference

STEPS = 40
NAMES = ["adam", "adamw", "amsgrad", "momentum", "nesterov"]
KINDS = ["bf16", "int8", "int4"]


def _problem(shapes: list[tuple[int, ...]], seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    thetas = [rng.normal(size=s).astype(np.float32) for s in shapes]
    noises = [(rng.normal(size=(STEPS, *s)) * 10.0 ** rng.uniform(-3, 0, size=s))
              .astype(np.float32) for s in shapes]
    return thetas, noises


@settings(max_examples=12, deadline=None)
# drift 2.4e-3 = 2.4 lr over 40 steps, which failed the old int8 bound of 2 lr (CI flake):
# one code on the other side of a rounding boundary early on, then free-running apart
@example(name="nesterov", kind="int8", lr=1e-3, wd=0.1, big=(3, 1500), seed=4100, min_size=4096)
@given(name=st.sampled_from(NAMES), kind=st.sampled_from(KINDS),
       lr=st.sampled_from([1e-3, 1e-2]), wd=st.sampled_from([0.0, 0.1]),
       big=st.sampled_from([(64, 80), (4096,), (3, 1500)]), seed=st.integers(0, 2**16),
       min_size=st.sampled_from([4096, 0]))
def test_lean_update_agrees_with_numpy_reference_over_many_steps(
        name: str, kind: str, lr: float, wd: float, big: tuple[int, ...], seed: int,
        min_size: int) -> None:
    """Free-running for 40 steps: the torch path and the reference stay within a few
    quantisation steps of each other (with ``min_size=0`` the 7-element tensor is
    quantised too); teacher-forced, each step's codes agree."""
    shapes = [big, (7,)]
    thetas, noises = _problem(shapes, seed)
    params = [torch.nn.Parameter(torch.tensor(t)) for t in thetas]
    hyper: dict[str, Any] = {"lr": lr, "weight_decay": wd, "state": kind}
    if kind != "bf16":
        hyper["min_size"] = min_size
    opt = create_optimizer(name, params, **hyper)
    rules = [reference.for_name(name, **hyper) for _ in shapes]
    assert all(isinstance(r, LeanReference) for r in rules)
    thetas64 = [t.astype(np.float64) for t in thetas]
    for t in range(STEPS):
        for p, noise in zip(params, noises, strict=True):
            p.grad = 0.1 * p.detach() + torch.tensor(noise[t])
        opt.step()
        thetas64 = [rule.step(th, 0.1 * th + noise[t])
                    for rule, th, noise in zip(rules, thetas64, noises, strict=True)]
    # a wrong rule drifts by about lr per step (40 lr here); quantisation alone moves a
    # free-running trajectory by up to a few lr (int8: 0.73% of a block's absmax per code)
    tol = {"bf16": 1e-2, "int8": 1e-1, "int4": 3e-1}[kind]
    for p, th in zip(params, thetas64, strict=True):
        drift = np.abs(p.detach().numpy() - th).max()
        assert drift <= tol * lr * STEPS, (name, kind, drift)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["adamw", "amsgrad", "nesterov"])
def test_one_step_from_the_same_state_gives_the_reference_codes(name: str, kind: str) -> None:
    """Teacher forcing: from torch's own state, one reference step reproduces the stored
    form exactly except for elements within float rounding of a code boundary."""
    rng = np.random.default_rng(3)
    p = torch.nn.Parameter(torch.tensor(rng.normal(size=(96, 64)).astype(np.float32)))
    opt = create_optimizer(name, [p], lr=1e-2, state=kind)
    rule = reference.for_name(name, lr=1e-2, state=kind)
    assert isinstance(rule, LeanReference)
    for _ in range(5):
        p.grad = torch.tensor(rng.normal(size=p.shape).astype(np.float32))
        theta = p.detach().numpy().astype(np.float64)
        rule.state = {}
        rule.inner.state = {}
        for key, value in opt.state[p].items():
            if key == "step":
                rule.inner.state["step"] = int(value.item())
            elif key.endswith("_codes") and kind == "int4":
                raw = value.numpy()
                rule.state[key] = np.stack([raw >> 4, raw & 15], axis=1).ravel()[: p.numel()]
            elif key.endswith("_codes"):
                rule.state[key] = value.numpy().copy()
            else:
                rule.state[key] = value.float().numpy().copy()
        expected = rule.step(theta, p.grad.numpy().astype(np.float64))
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
        for key, value in opt.state[p].items():
            if key == "step":
                continue
            got = value.numpy().ravel() if key.endswith("_codes") else value.float().numpy().ravel()
            if key.endswith("_codes") and kind == "int4":
                raw = value.numpy()
                got = np.stack([raw >> 4, raw & 15], axis=1).ravel()[: p.numel()]
            want = np.asarray(rule.state[key]).ravel()
            if key.endswith("_absmax"):  # float32 kernel vs float64 reference arithmetic
                np.testing.assert_allclose(got, want, rtol=1e-5)
                continue
            agree = np.mean(got == want)
            assert agree >= 0.995, (key, agree)


@pytest.mark.parametrize("name", ["adam", "adamw", "amsgrad", "momentum", "nesterov"])
def test_state_fp32_through_the_lean_path_is_torchs_fused_rule_bit_for_bit(name: str) -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(70, 90))
    b = torch.nn.Parameter(a.detach().clone())
    fused = create_optimizer(name, [a], lr=1e-2, weight_decay=0.1, fused=True)
    leaned = lean.create_lean(name, [{"params": [b]}], {
        **{k: v for k, v in fused.defaults.items()
           if k in ("lr", "betas", "eps", "weight_decay", "amsgrad", "momentum", "dampening",
                    "nesterov", "maximize")}, "state": "fp32"})
    for _ in range(10):
        g = torch.randn(70, 90)
        a.grad, b.grad = g.clone(), g.clone()
        fused.step()
        leaned.step()
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_result_does_not_depend_on_the_chunk_size(kind: str, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    chunks = []

    def run(fraction: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        monkeypatch.setattr(lean_chunks, "PEAK_FRACTION", fraction)
        monkeypatch.setattr(lean_chunks, "_SIZING_FRACTION", fraction)
        monkeypatch.setattr(lean_chunks, "_MIN_CHUNK", 256)
        torch.manual_seed(1)
        p = torch.nn.Parameter(torch.randn(300, 67))  # 20,100: an odd last chunk
        opt = LeanAdam([p], lr=1e-2, state=kind)
        for _ in range(4):
            p.grad = torch.randn_like(p)
            opt.step()
        chunks.append(opt._chunk())
        return p.detach(), opt.state[p]

    p1, s1 = run(0.001)
    p2, s2 = run(10.0)
    assert chunks[0] == 256 and chunks[1] >= p1.numel()  # many chunks, then one
    assert torch.equal(p1, p2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_peak_scratch_of_a_step_is_within_five_percent_of_the_state() -> None:
    """At the benchmark's size (4M parameters in large tensors)."""
    model = torch.nn.Sequential(torch.nn.Linear(2048, 1024), torch.nn.Linear(1024, 2048))
    for kind in KINDS:
        opt = LeanAdam(model.parameters(), state=kind)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        assert opt.workspace_bytes() <= lean.PEAK_FRACTION * opt.state_bytes()


def test_state_dict_round_trip_keeps_dtypes_and_bits() -> None:
    torch.manual_seed(2)
    model = torch.nn.Linear(128, 64).to(torch.bfloat16)
    opt = LeanAdam(model.parameters(), lr=1e-3, state="int8")
    for _ in range(3):
        model(torch.randn(4, 128, dtype=torch.bfloat16)).float().pow(2).sum().backward()
        opt.step()
    saved = opt.state_dict()
    again = LeanAdam(model.parameters(), lr=1e-3, state="int8")
    again.load_state_dict(saved)
    for p in model.parameters():
        for key, value in opt.state[p].items():
            assert again.state[p][key].dtype == value.dtype, key
            assert torch.equal(again.state[p][key], value), key
    assert opt.state[model.weight]["exp_avg_absmax"].dtype == torch.float32
    assert opt.state[model.weight]["kahan_comp"].dtype == torch.bfloat16


def test_fp32_adamw_state_loads_into_int8_by_re_encoding() -> None:
    torch.manual_seed(4)
    p = torch.nn.Parameter(torch.randn(64, 128))
    dense = torch.optim.AdamW([p], lr=1e-3)
    p.grad = torch.randn_like(p)
    dense.step()
    lean_opt = LeanAdam([p], lr=1e-3, decoupled=True, state="int8")
    lean_opt.load_state_dict(dense.state_dict())
    m = lean.read_buffer(lean_opt.state[p], "exp_avg", p.numel())
    assert m is not None
    exact = dense.state[p]["exp_avg"].reshape(-1)
    absmax = exact.abs().view(-1, 256).amax(dim=1).repeat_interleave(256)
    assert bool(((m - exact).abs() <= 0.01 * absmax).all())


def test_bf16_parameters_accumulate_updates_below_one_ulp_with_compensation() -> None:
    """lr·update is ~1/20 of a bf16 ulp of 1.0: plain bf16 never moves, Kahan tracks fp32."""
    start = torch.ones(8192)
    ref = torch.nn.Parameter(start.clone())
    low = torch.nn.Parameter(start.clone().bfloat16())
    plain = torch.nn.Parameter(start.clone().bfloat16())
    opts = [LeanSGD([ref], lr=4e-4, momentum=0.5, state="bf16"),
            LeanSGD([low], lr=4e-4, momentum=0.5, state="bf16"),
            torch.optim.SGD([plain], lr=4e-4, momentum=0.5)]
    for _ in range(200):
        for p, o in zip((ref, low, plain), opts, strict=True):
            p.grad = torch.ones_like(p)
            o.step()
    assert torch.equal(plain.detach(), torch.ones_like(plain))  # every update rounded away
    comp = opts[1].state[low]["kahan_comp"].float()
    assert torch.allclose(low.detach().float() + comp, ref.detach(), rtol=0, atol=1e-4)
    assert abs(float(low.detach()[0]) - float(ref.detach()[0])) < 2 ** -8


def test_bad_state_and_flags_are_one_clear_error() -> None:
    w = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(SpecError, match="state: got 'int2', expected one of fp32, bf16"):
        create_optimizer("adamw(state=int2)", [w])
    with pytest.raises(SpecError, match="fused: not used with state=int8"):
        create_optimizer("adamw(state=int8, fused=True)", [w])
    with pytest.raises(SpecError, match="unknown hyperparameter 'state' for nadam"):
        create_optimizer("nadam(state=int8)", [w])


def test_spec_round_trips_and_small_tensors_stay_fp32() -> None:
    model = torch.nn.Linear(100, 100)
    opt = create_optimizer("adamw(state=int4)", model)
    assert str(opt.steplab_spec) == "adamw(state=int4)" and isinstance(opt, LeanAdam)
    model(torch.ones(1, 100)).sum().backward()
    opt.step()
    assert sorted(opt.state[model.bias]) == ["exp_avg", "exp_avg_sq", "step"]
    assert opt.state[model.weight]["exp_avg_codes"].numel() == 5000


def test_min_size_zero_quantises_every_tensor_and_is_validated() -> None:
    model = torch.nn.Linear(100, 100)
    opt = create_optimizer("adamw(state=int4, min_size=0)", model)
    assert str(opt.steplab_spec) == "adamw(min_size=0, state=int4)"
    model(torch.ones(1, 100)).sum().backward()
    opt.step()
    assert sorted(opt.state[model.bias]) == ["exp_avg_absmax", "exp_avg_codes",
                                             "exp_avg_sq_absmax", "exp_avg_sq_codes", "step"]
    assert opt.state[model.bias]["exp_avg_codes"].numel() == 50
    one = torch.nn.Parameter(torch.ones(1))  # one element: codes could not tell their width
    one.grad = torch.ones(1)
    single = LeanAdam([one], state="int8", min_size=0)
    single.step()
    assert single.state[one]["exp_avg"].dtype == torch.float32
    w = torch.nn.Parameter(torch.zeros(4))
    for spec, message in [
            ("adamw(state=int8, min_size=-1)", "min_size: got -1, expected an integer >= 0"),
            ("adamw(state=int8, min_size=2.5)", "min_size: got 2.5, expected an integer >= 0"),
            ("adamw(min_size=0)", "min_size: only used with state=int8 or state=int4, got "
                                  "state=fp32"),
            ("adamw(state=bf16, min_size=0)", "min_size: only used with state=int8")]:
        with pytest.raises(SpecError, match=message.replace("(", r"\(")):
            create_optimizer(spec, [w])
    with pytest.raises(SpecError, match="min_size: got True, expected an integer >= 0"):
        LeanSGD([w], state="int8", min_size=True)  # type: ignore[arg-type]


def test_int8_second_moment_never_rounds_a_small_gradient_to_a_huge_step() -> None:
    """Regression (memory preset, lr 0.01): a second moment 1e-10 of its block's absmax
    decoded to 0, so m / (sqrt(0) + eps) moved a weight by ~lr * 1e2 and mnist1d-cnn
    diverged on 5 of 10 seeds with min_size=0."""
    grad = torch.full((256,), 1e-5)
    grad[0] = 1.0
    p = torch.nn.Parameter(torch.zeros(256))
    opt = create_optimizer("adamw", [p], lr=0.01, weight_decay=0.0, state="int8", min_size=0)
    for _ in range(3):
        p.grad = grad.clone()
        opt.step()
    assert p.detach().abs().max() <= 3 * 0.01 * 1.01  # Adam moves each weight <= lr per step


def test_a_negative_second_moment_in_loaded_state_is_one_clear_error() -> None:
    """An fp32 state whose exp_avg_sq holds a negative value is corrupt (a second moment is
    a mean of squares); re-encoding it into 8 bits would quantise a block maximum that is
    not its largest magnitude, so the load refuses it in one line."""
    w = torch.nn.Parameter(torch.ones(4096))
    source = torch.optim.AdamW([w])
    w.grad = torch.ones(4096)
    source.step()
    saved = source.state_dict()
    saved["state"][0]["exp_avg_sq"][7] = -1.0
    opt = create_optimizer("adamw", [w], state="int8")
    with pytest.raises(ValueError, match=r"exp_avg_sq: got a negative value \(-1\) in the "
                                         r"loaded state; a second moment is >= 0"):
        opt.load_state_dict(saved)
