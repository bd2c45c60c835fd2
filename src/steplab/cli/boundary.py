"""Where the CLI meets the person: every way a command ends is an exit code and one line.

:func:`run_command` runs a subcommand's ``func`` and turns what escapes it
into an exit code and at most one line on stderr, ``steplab <cmd>: error: ...``:

- a :class:`~steplab.errors.SteplabError` (bad input, a damaged file): its
  message, with a field name the user typed as a flag shown as that flag
  (``clip_norm: ...`` becomes ``--clip-norm: ...``); exit 2 (3 for a rank of a
  distributed run whose peer stopped answering, so the launcher can tell the
  rank that failed from the ones that reacted);
- a missing optional dependency: which extra to install; exit 2;
- an ``OSError`` (a path that cannot be read or written): the path and the
  reason; exit 2;
- anything else (a bug): its type and first line, and a hint to rerun with
  ``--debug`` for the traceback; exit 2;
- Ctrl-C: ``interrupted``, exit 130;
- a reader that closed stdout (``steplab inspect --json | head``): nothing
  more is printed and the exit code is 1, as the Python documentation's
  "Note on SIGPIPE" recommends.

With ``--debug`` the traceback is printed before the line. Warnings are
printed as ``steplab <cmd>: warning: <message>`` (without the Python source
line); ``--debug`` keeps Python's own format. Argument errors are one line
too (:class:`Parser`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TextIO

from steplab.errors import SteplabError
from steplab.extras import missing_extra_message

__all__ = [
    "HelpFormatter",
    "Parser",
    "bounded_int",
    "finish_parsers",
    "finite_float",
    "iter_commands",
    "run_command",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every option's help, except on on/off flags (``--no-monitor``), where
    ``(default: True)`` would describe the hidden variable, not the flag."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0:  # store_true / store_false / help
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (and exit 2), hint included."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see `<prog> --help`)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def iter_commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every subcommand parser under ``parser``, nested ones too (``checkpoint read``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                yield sub
                yield from iter_commands(sub)


_INT64 = 2**63


def bounded_int(text: str) -> int:
    """argparse type: an integer that fits in 64 bits (torch's counters and seeds).

    Example:
        >>> bounded_int("12")
        12
        >>> bounded_int("99999999999999999999")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: got '99999999999999999999', expected an integer below 2**63
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer") from None
    if not -_INT64 < value < _INT64:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer below 2**63")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan, inf, or 1e999).

    Example:
        >>> finite_float("1e-3")
        0.001
        >>> finite_float("inf")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: got 'inf', expected a finite number
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"got {text!r}, expected a finite number")
    return value


def _guard_types(parser: argparse.ArgumentParser) -> None:
    """Plain ``int``/``float`` options get the bounded parsers (new subcommands too)."""
    for action in parser._actions:
        if action.type is int:
            action.type = bounded_int
        elif action.type is float:
            action.type = finite_float


def finish_parsers(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand ``--debug``, the :class:`HelpFormatter`, the
    bounded number parsers, and remember each one (for its name in messages)."""
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print the Python traceback")
    parser.formatter_class = HelpFormatter
    for sub in iter_commands(parser):
        sub.formatter_class = HelpFormatter
        _guard_types(sub)
        if "--debug" not in sub._option_string_actions:
            # SUPPRESS: a subcommand must not reset a --debug given before it
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="on an error, also print the Python traceback")
        sub.set_defaults(_steplab_parser=sub)


def _flag_for(message: str, parser: argparse.ArgumentParser | None,
              argv: Sequence[str]) -> str:
    """``field: ...`` -> ``--field: ...`` when the user typed that option's flag."""
    field, sep, rest = message.partition(":")
    if not sep or parser is None or not field.isidentifier():
        return message
    for action in parser._actions:
        if action.dest == field and action.option_strings:
            typed = [f for f in action.option_strings
                     if any(a == f or a.startswith(f + "=") for a in argv)]
            if typed:
                return f"{typed[0]}:{rest}"
    return message


def _os_error(exc: OSError) -> str:
    where = " -> ".join(repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}: {reason}" if where else reason


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _unexpected(exc: BaseException, name: str) -> str:
    detail = _one_line(str(exc))
    kind = type(exc).__name__
    return (f"unexpected {kind}" + (f": {detail}" if detail else "")
            + f"; rerun with --debug for the traceback and report it (`{name} --debug ...`)")


@contextlib.contextmanager
def _warnings_as_lines(name: str, debug: bool) -> Iterator[None]:
    """Show each warning as one ``<name>: warning: <message>`` line on stderr."""
    with warnings.catch_warnings():
        if not debug:
            def show(message: Warning | str, category: type[Warning], filename: str,
                     lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
                text = " ".join(str(message).split())
                print(f"{name}: warning: {text}", file=sys.stderr if file is None else file)

            warnings.showwarning = show
        yield


def _quiet_broken_pipe() -> int:
    """stdout's reader is gone: send what Python still flushes at exit to /dev/null."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 1


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                name: str, argv: Sequence[str]) -> int:
    """Run ``func(args)``; return its exit code, or the boundary's (module docstring).

    Args:
        func: the subcommand's function.
        args: the parsed arguments (``args.debug``: print tracebacks).
        name: the command as the user typed it, e.g. ``"steplab train"``.
        argv: the arguments as given, to tell which flags the user typed.

    Returns:
        The exit code: ``func``'s own, 2 for an error (a :class:`SteplabError`'s own
        ``exit_code``: 3 for a lost peer), 130 for Ctrl-C, 1 for a closed stdout.
    """
    debug = bool(getattr(args, "debug", False))
    parser = getattr(args, "_steplab_parser", None)
    message: str | None = None
    caught: BaseException | None = None
    try:
        with _warnings_as_lines(name, debug):
            code = func(args)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except SteplabError as exc:
        caught, message = exc, _flag_for(_one_line(str(exc)), parser, argv)
    except ModuleNotFoundError as exc:
        caught = exc
        message = missing_extra_message(exc.name or "", name) or _unexpected(exc, name)
    except OSError as exc:
        caught, message = exc, _os_error(exc)
    except Exception as exc:
        caught, message = exc, _unexpected(exc, name)
    if debug:
        traceback.print_exception(caught)
    print(f"{name}: error: {message}", file=sys.stderr)
    return caught.exit_code if isinstance(caught, SteplabError) else 2


def command_name(args: argparse.Namespace, fallback: str) -> str:
    """``"steplab <cmd> [<sub>]"``: the prog of the subcommand that parsed ``args``."""
    parser: Any = getattr(args, "_steplab_parser", None)
    return str(parser.prog) if parser is not None else fallback
