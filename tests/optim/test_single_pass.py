"""The single-pass compiled RMSprop/NAdam steps: one graph for every shape, torch's state
layout, bit-exact resume, checkpoints that move to and from torch's classes, and a
fallback to torch's path (one warning) when compiling fails or no compiler exists.

Compiling costs CI time, so the whole file compiles two small graphs (plain RMSprop and
NAdam), shared with test_reference.py's compiled checks through the process-wide kernels.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._dynamo.utils import counters

from steplab.optim import compiler, create_optimizer, single_pass
from steplab.optim.paths import MIN_COMPILED_ELEMENTS, single_pass_choice
from steplab.optim.single_pass import SinglePassNAdam, SinglePassRMSprop

SHAPES = [(3, 5), (1,), (), (257,), (2, 3, 4), (1, 1)]
Build = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
PAIRS: dict[str, tuple[Build, Build]] = {
    "rmsprop": (
        lambda ps: SinglePassRMSprop(ps, lr=0.01, weight_decay=0.01, foreach=False),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, weight_decay=0.01, foreach=False),
    ),
    "nadam": (
        lambda ps: SinglePassNAdam(ps, lr=0.01, foreach=False),
        lambda ps: torch.optim.NAdam(ps, lr=0.01, foreach=False),
    ),
}


def _params(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]


def _steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], start: int, stop: int) -> None:
    for t in range(start, stop):
        gen = torch.Generator().manual_seed(1000 + t)
        for p in params:
            p.grad = 0.1 * p.detach() + torch.randn(p.shape, generator=gen)
        opt.step()


@pytest.fixture(scope="module", params=list(PAIRS))
def rule(request: pytest.FixtureRequest) -> str:
    """Each rule, its kernel compiled once for the module (tiny tensors)."""
    name = str(request.param)
    params = _params()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests run (the thread count is part of a graph's guards)
    _steps(PAIRS[name][0](params), params, 0, 1)
    torch.set_num_threads(threads)
    return name


def test_every_shape_runs_on_one_graph(rule: str) -> None:
    graphs = counters["stats"]["unique_graphs"]
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(7,), (1,), (31, 3), (4096,), ()]]
    _steps(PAIRS[rule][0](params), params, 0, 3)
    assert counters["stats"]["unique_graphs"] == graphs  # no recompile for new sizes


def test_state_dict_has_torchs_layout(rule: str) -> None:
    ours, theirs = _params(), _params()
    a, b = PAIRS[rule][0](ours), PAIRS[rule][1](theirs)
    _steps(a, ours, 0, 3)
    _steps(b, theirs, 0, 3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for index, buffers in sb["state"].items():
        assert sorted(sa["state"][index]) == sorted(buffers)
        for key, value in buffers.items():
            mine = sa["state"][index][key]
            assert (mine.dtype, mine.shape, mine.device) == (value.dtype, value.shape, value.device)
            if key in ("step", "mu_product"):
                assert torch.equal(mine, value), key  # the scalars are torch's exactly
            else:
                torch.testing.assert_close(mine, value, rtol=1e-5, atol=1e-6)


def test_resume_from_a_state_dict_is_bit_exact(rule: str) -> None:
    straight = _params()
    opt = PAIRS[rule][0](straight)
    _steps(opt, straight, 0, 8)
    resumed = _params()
    first = PAIRS[rule][0](resumed)
    _steps(first, resumed, 0, 4)
    saved = copy.deepcopy(first.state_dict())
    copies = [torch.nn.Parameter(p.detach().clone()) for p in resumed]
    second = PAIRS[rule][0](copies)
    second.load_state_dict(saved)
    _steps(second, copies, 4, 8)
    for p, q in zip(straight, copies, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("direction", ["to torch", "from torch"])
def test_checkpoints_move_between_paths(rule: str, direction: str) -> None:
    ours, theirs = PAIRS[rule]
    make_first, make_second = (ours, theirs) if direction == "to torch" else (theirs, ours)
    params = _params()
    first = make_first(params)
    _steps(first, params, 0, 4)
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    second = make_second(copies)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    _steps(first, params, 4, 8)
    _steps(second, copies, 4, 8)
    for p, q in zip(params, copies, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_non_contiguous_and_complex_parameters_match_torch(rule: str) -> None:
    ours = [torch.nn.Parameter(torch.randn(6, 4).t()), torch.nn.Parameter(torch.randn(3, 2) + 0j)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    assert not ours[0].is_contiguous() and ours[1].is_complex()
    a, b = PAIRS[rule][0](ours), PAIRS[rule][1](theirs)
    for t in range(3):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.full_like(p, 0.1 * (t + 1))
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _failing_backend(gm: Any, example_inputs: Any) -> Any:
    raise RuntimeError("compiler exploded on purpose")


def test_a_failed_compile_falls_back_to_torch_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compiler, "BACKEND", _failing_backend)
    kernel = compiler.CompiledKernel("rmsprop", single_pass.rmsprop_update, hp_index=3)
    monkeypatch.setattr(single_pass, "RMSPROP_KERNEL", kernel)
    ours, theirs = _params(), _params()
    a = SinglePassRMSprop(ours, lr=0.01, momentum=0.5)
    b = torch.optim.RMSprop(theirs, lr=0.01, momentum=0.5, foreach=False)
    with pytest.warns(RuntimeWarning, match="could not be compiled .*compiler exploded") as seen:
        _steps(a, ours, 0, 3)
    assert len(seen) == 1
    _steps(b, theirs, 0, 3)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)  # the fallback is torch's own for-loop step
    assert kernel.failure is not None and "compiler exploded" in kernel.failure
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _steps(a, ours, 3, 4)  # no second warning


def test_no_compiler_keeps_torchs_class(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler() -> None:
        raise RuntimeError("no c++")

    import torch._inductor.cpp_builder as cpp_builder

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    compiler.compiler_problem.cache_clear()
    try:
        take, why = single_pass_choice("rmsprop", 10**8)
        opt = create_optimizer("rmsprop", [torch.nn.Parameter(torch.zeros(3))])
    finally:
        compiler.compiler_problem.cache_clear()
    assert (take, why) == (False, "no C++ compiler found (RuntimeError)")
    assert type(opt) is torch.optim.RMSprop and opt.defaults["foreach"] is False


@pytest.mark.parametrize(
    ("mode", "elements", "expected"),
    [
        ("auto", MIN_COMPILED_ELEMENTS - 1, False),
        ("auto", MIN_COMPILED_ELEMENTS, True),
        ("always", 10, True),
        ("never", 10**9, False),
    ],
)
def test_compiled_path_is_taken_only_where_it_pays(
    mode: str, elements: int, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLAB_COMPILE", mode)
    assert single_pass_choice("nadam", elements)[0] is expected
    meta = [torch.nn.Parameter(torch.empty(elements, device="meta"))]
    assert single_pass_choice("nadam", elements, "meta")[0] is False
    del meta


def test_create_optimizer_picks_the_single_pass_class_and_a_spec_flag_pins_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert type(create_optimizer("rmsprop(momentum=0.9)", params)) is SinglePassRMSprop
    assert type(create_optimizer("nadam", params)) is SinglePassNAdam
    assert type(create_optimizer("nadam(foreach=False)", params)) is torch.optim.NAdam
    lookahead = create_optimizer("lookahead(nadam)", params)
    assert type(lookahead.optimizer) is SinglePassNAdam  # type: ignore[attr-defined]
    monkeypatch.setenv("STEPLAB_COMPILE", "auto")
    assert type(create_optimizer("rmsprop", params)) is torch.optim.RMSprop  # tiny: no compile


def test_a_steplab_checkpoint_resumes_bit_exact_and_opens_on_torchs_path(
    rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steplab.checkpoint import load, save

    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    spec = "rmsprop(lr=0.01)" if rule == "rmsprop" else "nadam(lr=0.01)"

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))

    straight = model()
    opt = create_optimizer(spec, straight)
    _steps(opt, list(straight.parameters()), 0, 6)
    first = model()
    opt = create_optimizer(spec, first)
    _steps(opt, list(first.parameters()), 0, 3)
    save(tmp_path / "ckpt", model=first, optimizer=opt, step=3)
    for mode, expected in (("always", (SinglePassRMSprop, SinglePassNAdam)), ("never", None)):
        monkeypatch.setenv("STEPLAB_COMPILE", mode)
        resumed = model()
        again = create_optimizer(spec, resumed)
        assert expected is None or isinstance(again, expected)
        load(tmp_path / "ckpt", model=resumed, optimizer=again)
        _steps(again, list(resumed.parameters()), 3, 6)
        for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
            if expected is not None:
                assert torch.equal(p, q)  # same path: bit-exact
            else:
                torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)  # torch's path


def test_kernels_cache_under_steplabs_directory_unless_a_person_chose_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("STEPLAB_CACHE_DIR", str(tmp_path / "steplab"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert compiler.inductor_cache_dir() == tmp_path / "steplab" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # torch's own default
    assert compiler.inductor_cache_dir() == tmp_path / "steplab" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compiler.inductor_cache_dir() == tmp_path / "mine"


def test_auto_keeps_torch_for_many_small_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled call costs ~30 us per tensor group: many small tensors stay on torch's path."""
    from steplab.optim.paths import MIN_MEAN_TENSOR_ELEMENTS, compile_choice, single_pass_choice

    monkeypatch.setenv("STEPLAB_COMPILE", "auto")
    elements = 2_000_000
    small = elements // MIN_MEAN_TENSOR_ELEMENTS + 1  # mean just under the limit
    take, why = single_pass_choice("rmsprop", elements, "cpu", tensors=small)
    assert not take and "average" in why
    at_limit = compile_choice(elements, "cpu", tensors=elements // MIN_MEAN_TENSOR_ELEMENTS)
    assert "average" not in at_limit[1]  # from here only the compiler's presence decides
    params = [torch.nn.Parameter(torch.zeros(4096)) for _ in range(300)]  # 1.2M elements
    assert type(create_optimizer("rmsprop", params)) is torch.optim.RMSprop
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    assert single_pass_choice("rmsprop", elements, "cpu", tensors=small)[1] != why
