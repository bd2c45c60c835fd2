"""The default and ``--quick`` studies, and reading a study spec from TOML and flags.

>>> load_study_spec(None, quick=True) == quick_study_spec()
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from steplab.errors import SpecError
from steplab.study.spec import LOOKAHEAD_CLAIM_TEXT, StudySpec
from steplab.study.verdicts.decide import Claim

__all__ = ["default_study_spec", "load_study_spec", "quick_study_spec", "split_names"]


def _lookahead_claims(pairs: tuple[tuple[str, str], ...]) -> tuple[Claim, ...]:
    return tuple(
        Claim(la, inner, "steps_to_target", 0.30, 0.50, None, f"{LOOKAHEAD_CLAIM_TEXT} ({la})")
        for la, inner in pairs
    )


def default_study_spec() -> StudySpec:
    """The study ``steplab compare`` runs with no arguments.

    MNIST-1D CNN; SGD, momentum, RMSprop, Adam, Lookahead(momentum) and
    Lookahead(Adam); 6 learning rates each, log-spaced (x6.3 apart) over
    ``c/100 .. 100c`` around each rule's sensible default ``c``, chosen by
    steps to the target on validation (what the claim is about); 10 fresh
    paired seeds; 600 steps of batch 64, evaluated every 50 and the target
    checked every 6; target test accuracy 0.80 (the task's own 0.90 takes
    thousands of steps); the claim "Lookahead converges 30-50% faster" for
    both Lookaheads; paths on Rosenbrock, Rastrigin and Beale (3 lrs, 200
    steps). About 3 minutes on 2 idle CPU cores (``docs/compare.md``).

    >>> default_study_spec().seeds
    10
    """
    return StudySpec(
        steps=600,
        budget=6,
        seeds=10,
        batch_size=64,
        lr_span=100.0,
        eval_every=50,
        targets=(("mnist1d-cnn", 0.80),),
        claims=_lookahead_claims(
            (("lookahead(adam)", "adam"), ("lookahead(momentum)", "momentum"))
        ),
        trajectory_steps=200,
        trajectory_budget=3,
    )


def quick_study_spec() -> StudySpec:
    """The ``--quick`` preset: under a minute on 2 idle CPU cores.

    SGD, Adam and Lookahead(Adam) on MNIST-1D, 3 lr trials (``c/30, c, 30c``),
    5 fresh seeds, 300-step runs, target test accuracy 0.70, the Lookahead
    claim (5 pairs cannot decide a time-to-target claim: a smoke test, not
    evidence), Rosenbrock paths only.

    >>> quick_study_spec().optimizers
    ('sgd', 'adam', 'lookahead(adam)')
    """
    return StudySpec(
        optimizers=("sgd", "adam", "lookahead(adam)"),
        seeds=5,
        budget=3,
        steps=300,
        batch_size=64,
        lr_span=30.0,
        eval_every=30,
        targets=(("mnist1d-cnn", 0.70),),
        claims=_lookahead_claims((("lookahead(adam)", "adam"),)),
        trajectories=("rosenbrock",),
        trajectory_steps=200,
        trajectory_budget=4,
    )


def split_names(text: str, field: str = "names") -> tuple[str, ...]:
    """Split a comma-separated list of names at top-level commas (not inside parentheses).

    An empty list or an empty item (``"adam,,sgd"``) is an error, never dropped silently.

    >>> split_names("adam, lookahead(adam, k=5),sgd")
    ('adam', 'lookahead(adam, k=5)', 'sgd')
    >>> split_names("adam,,sgd", "optimizers")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    steplab.errors.SpecError: optimizers: got 'adam,,sgd', item 2 is empty; ...
    """
    names, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            names.append(current.strip())
            current = ""
        else:
            current += char
    names.append(current.strip())
    for index, name in enumerate(names, start=1):
        if not name:
            where = "it is empty" if len(names) == 1 else f"item {index} is empty"
            raise SpecError(f"{field}: got {text!r}, {where}; expected comma-separated names")
    return tuple(names)


def load_study_spec(
    path: str | Path | None = None, *, quick: bool = False, **overrides: Any
) -> StudySpec:
    """Read a study spec from a TOML file and/or ``overrides``.

    The starting point: :func:`quick_study_spec` when ``quick``; else
    :func:`default_study_spec` when neither a file nor ``tasks`` is given (its
    steps, batch size and targets are sized for MNIST-1D); else
    ``StudySpec()``, whose runs use each task's own defaults.

    Args:
        path: a TOML file (keys at the top level or under ``[study]``), or None.
        quick: start from the ``--quick`` preset.
        **overrides: field values that replace the file's (None values are ignored).

    Returns:
        The validated :class:`StudySpec`.

    Raises:
        SpecError: the file is missing, unreadable or not TOML, or a field is bad.

    >>> load_study_spec(None, seeds=2).steps, load_study_spec(None, tasks=("beale",)).steps
    (600, None)
    """
    given = _read_toml(Path(path)) if path is not None else {}
    given.update({k: v for k, v in overrides.items() if v is not None})
    if quick:
        base = quick_study_spec()
    elif path is None and "tasks" not in given:
        base = default_study_spec()
    else:
        base = StudySpec()
    data = base.to_dict()
    if "targets" not in given and "tasks" in given:  # the preset's targets follow its tasks
        data["targets"] = [pair for pair in data["targets"] if pair[0] in given["tasks"]]
    data.update(given)
    return StudySpec.from_dict(data)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError(
            f"spec: cannot read {str(path)!r} ({reason}); expected a TOML file"
        ) from exc
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec: {str(path)!r} is not valid TOML ({exc})") from exc
    study = table.pop("study", None)
    if study is None:
        return table
    if not isinstance(study, dict):
        raise SpecError(f"spec: [study] in {str(path)!r} must be a table")
    if table:  # keys above [study] would be silently overridden or ignored: say so
        raise SpecError(
            f"spec: {str(path)!r} has keys both at the top level ({', '.join(sorted(table))}) "
            "and under [study]; expected all of them in one place"
        )
    return study
