"""The CLI boundary: bad input of any kind ends in exit 2 and one line, never a traceback.

The generated test discovers every subcommand (nested ones too) from the parser,
so a subcommand added later is covered without touching this file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steplab import checkpoint
from steplab.cli import build_parser, main
from steplab.cli.boundary import iter_commands

# -- helpers ------------------------------------------------------------------------------------


class _Accepted(BaseException):
    """Raised by the alarm: the command took the bad input and started working."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise _Accepted(f"still running after {seconds} s: the bad input was accepted")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _run(argv: list[str], cwd: Path, seconds: float = 20.0) -> tuple[int, str, str]:
    """``main(argv)`` in this process, in ``cwd``; returns (code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(), _time_limit(seconds):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
            except _Accepted as exc:
                raise AssertionError(f"{argv}: {exc}") from None
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def _assert_one_error_line(code: int, out: str, err: str, argv: list[str]) -> None:
    assert code == 2, f"{argv}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{argv}:\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], f"{argv}:\n{err}"
    assert errors[0].startswith("steplab"), f"{argv}:\n{err}"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("boundary")
    afile = root / "afile"
    afile.write_bytes(b"\x00\x01 neither TOML, JSON, a checkpoint nor a task\n")
    model = torch.nn.Linear(2, 2)
    ckpt = checkpoint.save(root / "ckpt", model=model, optimizer=torch.optim.Adam(
        model.parameters()), step=1)
    return {"root": root, "afile": afile, "ckpt": ckpt}


# -- generated bad arguments for every subcommand ------------------------------------------------

_PARSER = build_parser()
_LEAVES = [p for p in iter_commands(_PARSER) if p.get_default("func") is not None]
_SKIP = {"help", "debug", "version"}
#: values that are valid for a required option, so the other options get looked at
_VALID = {"task": "beale", "optimizer": "adam"}
_BAD_INT = ["-1", "-7", "99999999999999999999", "-99999999999999999999", "1.5", "abc", "", "1e3"]
_BAD_FLOAT = ["nan", "inf", "-inf", "-1", "-0.5", "abc", "", "1e999"]


def _value_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if a.dest not in _SKIP and a.nargs != 0 and not a.dest.startswith("_")
            and not isinstance(a, argparse._SubParsersAction)]


def _bad_values(action: argparse.Action, places: dict[str, Path]) -> list[str]:
    if action.choices is not None:
        return ["nope", ""]
    if action.type is int:
        return _BAD_INT
    if action.type is float:
        return _BAD_FLOAT
    afile = str(places["afile"])
    if action.dest == "data_dir":  # may name a text file (byte-lm reads one)
        return ["", "   ", afile + "/sub", "/proc/x/y"]
    return ["", "   ", afile, afile + "/sub", "/proc/x/y"]


@st.composite
def _bad_argv(draw: st.DrawFn, places: dict[str, Path]) -> list[str]:
    parser = draw(st.sampled_from(_LEAVES))
    actions = _value_actions(parser)
    flags = [a for a in parser._actions if a.nargs == 0 and a.dest not in _SKIP]
    argv = parser.prog.split()[1:]
    chosen = draw(st.lists(st.sampled_from(actions), min_size=1, max_size=2,
                           unique_by=lambda a: a.dest)) if actions else []
    for action in actions:
        if action in chosen:
            value = draw(st.sampled_from(_bad_values(action, places)))
        elif action.required and action.dest in _VALID:
            value = _VALID[action.dest]
        elif action.required:
            value = draw(st.sampled_from(_bad_values(action, places)))
        else:
            continue
        if action.option_strings:
            argv.append(f"{action.option_strings[-1]}={value}")
        else:
            argv.append(value)
    argv += [f.option_strings[-1] for f in flags if draw(st.booleans())]
    return argv


def test_every_subcommand_is_found_from_the_parser() -> None:
    names = {p.prog for p in _LEAVES}
    assert {"steplab train", "steplab compare", "steplab tune", "steplab lr-find",
            "steplab inspect", "steplab tasks", "steplab optimizers"} <= names


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_generated_bad_arguments_end_in_exit_2_and_one_line(
    data: st.DataObject, places: dict[str, Path]
) -> None:
    argv = data.draw(_bad_argv(places), label="argv")
    code, out, err = _run(argv, places["root"], seconds=8.0)
    _assert_one_error_line(code, out, err, argv)
    assert out == "", f"{argv}: printed {out!r}"


# -- the list, one by one ----------------------------------------------------------------


def _cases(places: dict[str, Path]) -> dict[str, list[str]]:
    afile = str(places["afile"])
    cuda = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    return {
        "out under /proc": ["train", "--task", "beale", "--out", "/proc/x"],
        "out under a file": ["train", "--task", "beale", "--out", f"{afile}/sub"],
        "compare out is a file": ["compare", "--quick", "--out", afile],
        "lr-find out is a file": ["lr-find", "--task", "beale", "--out", afile],
        "a cuda device torch cannot use": ["train", "--task", "beale", "--device", cuda],
        "a seed beyond 64 bits": ["train", "--task", "beale", "--seed", "99999999999999999999"],
    }


@pytest.mark.parametrize("case", ["out under /proc", "out under a file", "compare out is a file",
                                  "lr-find out is a file", "a cuda device torch cannot use",
                                  "a seed beyond 64 bits"])
def test_the_reported_tracebacks_are_one_line_now(case: str, places: dict[str, Path]) -> None:
    argv = _cases(places)[case]
    code, out, err = _run(argv, places["root"])
    _assert_one_error_line(code, out, err, argv)
    flag = argv[-2] if argv[-2].startswith("--") else "--out"
    assert f"error: {flag}:" in err or f"error: argument {flag}:" in err, err  # the typed flag


def test_tune_without_optuna_names_the_extra(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "optuna" or m.startswith("optuna.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the tune extra were not installed
    argv = ["tune", "--task", "beale", "--trials", "2", "--out", str(places["root"] / "t")]
    code, out, err = _run(argv, places["root"])
    _assert_one_error_line(code, out, err, argv)
    assert "pip install 'steplab[tune]'" in err and "optuna" in err


def test_ray_backend_without_ray_names_the_extra(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)
    argv = ["tune", "--task", "beale", "--backend", "ray", "--out", str(places["root"] / "t")]
    code, out, err = _run(argv, places["root"])
    _assert_one_error_line(code, out, err, argv)
    assert "pip install 'steplab[ray]'" in err


def _raise(exc: BaseException) -> Any:
    def run(args: argparse.Namespace) -> int:
        raise exc
    return run


def test_an_unexpected_exception_is_one_line_with_a_hint_and_debug_shows_the_traceback(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import steplab.cli.optimizers as command

    monkeypatch.setattr(command, "run", _raise(ZeroDivisionError("division by zero\nmore")))
    code, out, err = _run(["optimizers"], places["root"])
    _assert_one_error_line(code, out, err, ["optimizers"])
    assert "unexpected ZeroDivisionError: division by zero" in err and "--debug" in err
    for argv in (["optimizers", "--debug"], ["--debug", "optimizers"]):
        code, out, err = _run(argv, places["root"])
        assert code == 2 and "Traceback" in err and "ZeroDivisionError" in err
        assert err.splitlines()[-1].startswith("steplab optimizers: error: unexpected")


def test_ctrl_c_still_exits_130(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import steplab.cli.optimizers as command

    monkeypatch.setattr(command, "run", _raise(KeyboardInterrupt()))
    code, _, err = _run(["optimizers"], places["root"])
    assert code == 130 and err.strip() == "steplab optimizers: interrupted"


def test_warnings_print_their_message_only(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import steplab.cli.optimizers as command

    def run(args: argparse.Namespace) -> int:
        warnings.warn("checkpoint step-00000003 is damaged", stacklevel=1)
        return 0

    monkeypatch.setattr(command, "run", run)
    code, _, err = _run(["optimizers"], places["root"])
    assert code == 0
    assert err == "steplab optimizers: warning: checkpoint step-00000003 is damaged\n"


def test_messages_name_the_flag_the_user_typed(places: dict[str, Path]) -> None:
    argv = ["train", "--task", "beale", "--clip-norm", "-1"]
    code, _, err = _run(argv, places["root"])
    assert code == 2 and "error: --clip-norm: got -1.0" in err, err
    argv = ["train", "--task", "beale", "--steps", "10", "--warmup-steps", "10"]
    code, _, err = _run(argv, places["root"])
    assert code == 2 and "error: --warmup-steps:" in err and "warmup_steps" not in err, err


def test_no_flag_help_claims_a_default_of_true_or_false() -> None:
    """``--no-monitor`` said ``(default: True)``; every subcommand's help is checked."""
    for sub in iter_commands(_PARSER):
        text = sub.format_help()
        assert "(default: True)" not in text and "(default: False)" not in text, sub.prog


# -- a few real processes: the interpreter's own traceback printing is what they check ----------


def _steplab(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "steplab", *args], capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_a_real_process_prints_one_line_and_exits_2() -> None:
    """The interpreter's own traceback printing is out of play in-process; check it once."""
    argv = ["train", "--task", "beale", "--seed", "99999999999999999999"]
    proc = _steplab(*argv)
    _assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, argv)


def test_a_closed_stdout_pipe_ends_quietly(places: dict[str, Path]) -> None:
    """``steplab inspect --json | head``: the reader goes away; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "steplab", "inspect", "--json",
                             str(places["ckpt"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child writes anything: its first write hits EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == "", err
