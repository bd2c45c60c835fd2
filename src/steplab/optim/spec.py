"""Optimizer spec strings: ``"lookahead(adamw(lr=3e-4, betas=(0.9, 0.99)), k=5)"``.

Grammar (a small recursive-descent parser; nothing is evaluated)::

    spec   := call
    call   := NAME [ "(" [ arg ("," arg)* [","] ] ")" ]
    arg    := NAME "=" value | call          # a call only as lookahead's inner
    value  := NUMBER | STRING | True | False | NAME | tuple
    tuple  := "(" [ value ("," value)* [","] ] ")"

Names are case-insensitive; a bare NAME as a value is a string
(``pullback=reset``). Every name and keyword is checked against
:data:`~steplab.optim.registry.OPTIMIZERS`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steplab.errors import SpecError
from steplab.optim.registry import OPTIMIZERS

__all__ = ["OptimizerSpec", "SpecValue", "parse_spec"]

#: a hyperparameter value a spec may carry
SpecValue = float | int | bool | str | tuple[Any, ...]

_TOKEN = re.compile(
    r"\s*(?:(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<string>'[^']*'|\"[^\"]*\")"
    r"|(?P<punct>[(),=]))"
)


def _format_value(value: SpecValue) -> str:
    if isinstance(value, tuple):
        inner = ", ".join(_format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, str):
        bare = value.isidentifier() and value not in ("True", "False")
        return value if bare else repr(value)
    return repr(value)


def _hint(word: str, choices: list[str]) -> str:
    prefixed = [c for c in choices if len(c) > 1 and word.lower().startswith(c)]
    if prefixed:  # 'lrate' means 'lr' more likely than the closer-spelled 'state'
        return f" (did you mean '{max(prefixed, key=len)}'?)"
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _elsewhere(key: str, name: str) -> str:
    """Point at the rules that do take ``key`` (``sgd(momentum=0.9)`` -> the ``momentum`` rule).

    Example:
        >>> print(_elsewhere("betas", "sgd"))
         ('betas' belongs to the rules adam, adamw, amsgrad, nadam: write adam(betas=...))
    """
    owners = [n for n, info in OPTIMIZERS.items() if n != name and key in info.accepts()]
    if not owners:
        return ""
    first = key if key in owners else owners[0]  # a rule named after it reads best
    return f" ({key!r} belongs to the rules {', '.join(owners)}: write {first}({key}=...))"


@dataclass(frozen=True)
class OptimizerSpec:
    """A parsed optimizer spec: a name, its hyperparameters and an optional inner spec.

    Attributes:
        name: a registry name (``"adamw"``, ``"lookahead"``...).
        kwargs: the hyperparameters the spec sets (defaults are not filled in).
        inner: the wrapped spec for ``lookahead``, else None.

    Example:
        >>> spec = parse_spec("lookahead(adamw(lr=3e-4), k=5)")
        >>> str(spec.with_overrides(lr=1e-3))
        'lookahead(adamw(lr=0.001), k=5)'
        >>> spec.innermost.name
        'adamw'
    """

    name: str
    kwargs: Mapping[str, SpecValue] = field(default_factory=dict)
    inner: OptimizerSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", dict(sorted(dict(self.kwargs).items())))

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.kwargs.items()), self.inner))

    def __str__(self) -> str:
        args = [str(self.inner)] if self.inner is not None else []
        args += [f"{k}={_format_value(v)}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(args)})" if args else self.name

    @property
    def innermost(self) -> OptimizerSpec:
        """The innermost spec (the one that takes gradient steps)."""
        return self if self.inner is None else self.inner.innermost

    def with_overrides(self, **overrides: SpecValue) -> OptimizerSpec:
        """Return a copy with ``overrides`` merged into the innermost optimizer's kwargs.

        Raises:
            SpecError: an override the innermost optimizer does not accept.
        """
        if self.inner is not None:
            return OptimizerSpec(self.name, self.kwargs, self.inner.with_overrides(**overrides))
        info = OPTIMIZERS[self.name]
        for key in overrides:
            if key not in info.accepts():
                raise SpecError(
                    f"{key}: not a hyperparameter of {self.name}{_hint(key, list(info.accepts()))};"
                    f" expected one of {', '.join(info.accepts())}"
                )
        return OptimizerSpec(self.name, {**self.kwargs, **overrides}, None)


class _Parser:
    """Recursive-descent parser over the token list of one spec string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, column)
        pos = 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.lastgroup is None:
                column = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
                self.fail(column, f"unexpected character {text[column - 1]!r}")
            assert match is not None and match.lastgroup is not None
            self.tokens.append(
                (match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup) + 1)
            )
            pos = match.end()
        self.i = 0

    def fail(self, column: int, message: str) -> None:
        raise SpecError(f"optimizer spec {self.text!r} at column {column}: {message}")

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.text) + 1)

    def take(self, kind: str, text: str | None = None, what: str = "") -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] != kind or (text is not None and tok[1] != text):
            found = "the end" if tok[0] == "end" else repr(tok[1])
            self.fail(tok[2], f"expected {what or repr(text)}, found {found}")
        self.i += 1
        return tok

    def call(self) -> OptimizerSpec:
        _, raw, column = self.take("name", what="an optimizer name")
        name = raw.lower()
        if name not in OPTIMIZERS:
            self.fail(
                column,
                f"unknown optimizer {raw!r}{_hint(name, list(OPTIMIZERS))};"
                f" expected one of {', '.join(OPTIMIZERS)}",
            )
        kwargs: dict[str, SpecValue] = {}
        inner: OptimizerSpec | None = None
        if self.peek()[1] == "(" and self.peek()[0] == "punct":
            self.i += 1
            while self.peek()[1] != ")":
                tok = self.peek()
                is_kw = (
                    tok[0] == "name"
                    and self.i + 1 < len(self.tokens)
                    and self.tokens[self.i + 1][1] == "="
                )
                if is_kw:
                    self.keyword(name, kwargs)
                elif name == "lookahead" and inner is None and tok[0] == "name":
                    inner = self.call()
                else:
                    self.fail(
                        tok[2],
                        "expected keyword=value"
                        if name != "lookahead" or inner
                        else "expected an inner optimizer",
                    )
                if self.peek()[1] != ")":
                    self.take("punct", ",", "',' or ')'")
            self.take("punct", ")")
        if name == "lookahead" and inner is None:
            self.fail(column, "lookahead needs an inner optimizer, e.g. lookahead(adamw, k=5)")
        return OptimizerSpec(name, kwargs, inner)

    def keyword(self, name: str, kwargs: dict[str, SpecValue]) -> None:
        _, key, column = self.take("name")
        accepts = list(OPTIMIZERS[name].accepts())
        if key not in accepts:
            self.fail(
                column,
                f"unknown hyperparameter {key!r} for {name}{_hint(key, accepts)};"
                f" expected one of {', '.join(accepts)}{_elsewhere(key, name)}",
            )
        if key in kwargs:
            self.fail(column, f"hyperparameter {key!r} given twice")
        self.take("punct", "=")
        kwargs[key] = self.value()

    def value(self) -> SpecValue:
        kind, text, column = self.peek()
        self.i += 1
        if kind == "number":
            is_int = re.fullmatch(r"[+-]?\d+", text) is not None
            return int(text) if is_int else float(text)
        if kind == "string":
            return text[1:-1]
        if kind == "name":
            return {"True": True, "False": False}.get(text, text)
        if (kind, text) == ("punct", "("):
            items: list[SpecValue] = []
            while self.peek()[1] != ")":
                items.append(self.value())
                if self.peek()[1] != ")":
                    self.take("punct", ",", "',' or ')'")
            self.take("punct", ")")
            return tuple(items)
        self.i -= 1
        self.fail(column, "expected a value")
        raise AssertionError("unreachable")


def parse_spec(spec: str) -> OptimizerSpec:
    """Parse an optimizer spec string into an :class:`OptimizerSpec`.

    ``str()`` of the result is the canonical form (kwargs sorted, floats as
    Python writes them), which parses back to an equal spec.

    Args:
        spec: e.g. ``"adam"``, ``"adamw(lr=3e-4, betas=(0.9, 0.99))"`` or
            ``"lookahead(nesterov(lr=0.1), k=5, alpha=0.5, pullback=pullback)"``.

    Returns:
        The parsed spec.

    Raises:
        SpecError: a syntax error, an unknown optimizer or hyperparameter; the
            message gives the column and a "did you mean" hint.

    Example:
        >>> str(parse_spec("LookAhead( adamw(weight_decay=0.05, lr=3e-4) , k=5)"))
        'lookahead(adamw(lr=0.0003, weight_decay=0.05), k=5)'
        >>> parse_spec("adamw(lr=)")
        Traceback (most recent call last):
        ...
        steplab.errors.SpecError: optimizer spec 'adamw(lr=)' at column 10: expected a value
    """
    if not isinstance(spec, str):
        raise SpecError(f"optimizer spec: got {type(spec).__name__}, expected a string")
    parser = _Parser(spec)
    result = parser.call()
    kind, text, column = parser.peek()
    if kind != "end":
        parser.fail(column, f"unexpected {text!r} after the spec")
    return result
