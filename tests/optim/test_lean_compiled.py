"""bf16 moments: the chunked pure path's merged copies, and the compiled single-pass step."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import steplab.optim.lean as lean
from steplab.optim import compiler
from steplab.optim.lean import LeanAdam
from steplab.optim.lean_compiled import bf16_adam_update

#: 18 chunks of 8,192 and a tail: crosses a 16-chunk view group; plus a tiny tensor
SHAPES = [(140_000,), (7,)]
CASES = [
    {"decoupled": True, "weight_decay": 0.1},
    {"decoupled": False, "weight_decay": 0.1, "maximize": True},
    {"decoupled": True, "amsgrad": True},
]


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]


def _grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=gen) * 10.0 ** (step % 3 - 2) for s in SHAPES]


def _run(opt: LeanAdam, params: list[torch.nn.Parameter], steps: int) -> None:
    for t in range(steps):
        for p, g in zip(params, _grads(t), strict=True):
            p.grad = g.clone()
        opt.step()


def _whole_tensor_step(params: list[torch.Tensor], moments: list[list[torch.Tensor]],
                       step: torch.Tensor, opts: dict[str, Any], t: int) -> None:
    """The rule the chunked path implements: widen all of m/v, torch's fused kernel, round."""
    step.add_(1)
    fused = torch._fused_adamw_ if opts["decoupled"] else torch._fused_adam_
    for p, g, bufs in zip(params, _grads(t), moments, strict=True):
        wide = [b.float() for b in bufs]
        fused([p], [g], wide[:1], wide[1:2], wide[2:], [step], amsgrad=opts["amsgrad"],
              lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=opts["weight_decay"], eps=1e-8,
              maximize=opts["maximize"], grad_scale=None, found_inf=None)
        for b, w in zip(bufs, wide, strict=True):
            b.copy_(w)  # round to nearest even


@pytest.mark.parametrize("case", CASES)
def test_chunked_bf16_path_is_the_whole_tensor_rule_bit_for_bit(
        case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """One ``_foreach_copy_`` writes chunk i back and widens chunk i+1: order matters."""
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    opts = {"amsgrad": False, "maximize": False, "weight_decay": 0.0, **case}
    ours = _params()
    opt = LeanAdam(ours, lr=1e-2, state="bf16", **opts)
    assert not opt._compile and opt._chunk() == 8192
    theirs = [p.detach().clone() for p in _params()]
    n = 3 if opts["amsgrad"] else 2
    moments = [[torch.zeros(s, dtype=torch.bfloat16) for _ in range(n)] for s in SHAPES]
    step = torch.tensor(0.0)
    _run(opt, ours, 4)
    for t in range(4):
        _whole_tensor_step(theirs, moments, step, opts, t)
    names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")[:n]
    for p, q, bufs in zip(ours, theirs, moments, strict=True):
        assert torch.equal(p.detach(), q)
        for name, b in zip(names, bufs, strict=True):
            assert torch.equal(opt.state[p][name], b), name


@pytest.mark.parametrize("case", CASES)
def test_compiled_bf16_step_matches_the_chunked_path(
        case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Same state layout; parameters and moments bit-equal but for the few elements where
    a float32 difference (inductor may contract a multiply-add) tipped a moment across a
    bf16 rounding boundary: those stay within one bf16 ulp, their parameter within one
    ulp's share of a step."""
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    compiled_params, pure_params = _params(), _params()
    compiled = LeanAdam(compiled_params, lr=1e-2, state="bf16", **case)
    assert compiled._compile
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    pure = LeanAdam(pure_params, lr=1e-2, state="bf16", **case)
    _run(compiled, compiled_params, 5)
    _run(pure, pure_params, 5)
    assert lean.BF16_ADAM_KERNEL.failure is None
    for p, q in zip(compiled_params, pure_params, strict=True):
        gap = (p - q).abs().detach()
        assert (gap <= 1e-6).float().mean() >= 0.999  # a tipped moment moves its element
        assert gap.max() <= 1e-2 * 2**-6  # by at most about a bf16 ulp of one step (η)
        ours, theirs = compiled.state[p], pure.state[q]
        assert sorted(ours) == sorted(theirs)
        for key, value in ours.items():
            assert value.dtype == theirs[key].dtype, key
            if key != "step":
                torch.testing.assert_close(value.float(), theirs[key].float(),
                                           rtol=2**-7, atol=0)
                assert (value == theirs[key]).float().mean() >= 0.999, key
    restored = LeanAdam(_params(), lr=1e-2, state="bf16", **case)
    restored.load_state_dict(compiled.state_dict())  # checkpoints move between the paths
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"],
                       compiled.state[compiled_params[0]]["exp_avg"])


def _failing_backend(gm: Any, example_inputs: Any) -> Any:
    raise RuntimeError("compiler exploded on purpose")


def test_a_failed_compile_takes_the_chunked_path_with_one_warning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler, "BACKEND", _failing_backend)
    kernel = compiler.CompiledKernel("adam(state=bf16)", bf16_adam_update, hp_index=4,
                                     read_only=(1,), wide_lowp=True)
    monkeypatch.setattr(lean, "BF16_ADAM_KERNEL", kernel)
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    ours, theirs = _params(), _params()
    a = LeanAdam(ours, lr=1e-2, state="bf16", decoupled=True)
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    b = LeanAdam(theirs, lr=1e-2, state="bf16", decoupled=True)
    with pytest.warns(RuntimeWarning, match="could not be compiled .*compiler exploded") as seen:
        _run(a, ours, 2)
    assert len(seen) == 1
    _run(b, theirs, 2)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(a, ours, 1)  # no second warning


def test_bf16_parameters_keep_the_compensated_chunked_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    w = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
    opt = LeanAdam([w], lr=1e-4, state="bf16", decoupled=True)
    w.grad = torch.ones(4096, dtype=torch.bfloat16)
    opt.step()
    assert "kahan_comp" in opt.state[w] and lean.bf16_adam_call(
        w, opt.state[w], torch.zeros(9), False) is None


def test_wide_tiling_patch_is_scoped_and_skipped_where_inductor_differs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor.codegen import cpp

    original = cpp.TilingSelect.select_tiling
    with compiler._wide_lowp_tiling():
        assert cpp.TilingSelect.select_tiling is not original
    assert cpp.TilingSelect.select_tiling is original
    monkeypatch.delattr(cpp, "get_loop_body_lowp_fp")  # another torch's internals
    with compiler._wide_lowp_tiling():
        assert cpp.TilingSelect.select_tiling is original
