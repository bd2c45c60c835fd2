"""The study spec: defaults, TOML round trip, validation with one clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomllib

from steplab.errors import SpecError
from steplab.study.spec import DEFAULT_OPTIMIZERS, StudySpec
from steplab.study.spec_load import (
    default_study_spec,
    load_study_spec,
    quick_study_spec,
    split_names,
)


def test_default_study_has_power_and_judges_the_lookahead_claim() -> None:
    spec = default_study_spec()
    assert spec.tasks == ("mnist1d-cnn",)
    assert spec.optimizers == DEFAULT_OPTIMIZERS
    assert {"lookahead(momentum)", "lookahead(adam)", "adam", "sgd"} <= set(spec.optimizers)
    assert spec.seeds >= 8
    assert set(spec.trajectories) == {"rosenbrock", "rastrigin", "beale"}
    claims = {(c.optimizer, c.baseline, c.quantity, c.at_least, c.at_most) for c in spec.claims}
    assert ("lookahead(adam)", "adam", "steps_to_target", 0.3, 0.5) in claims
    assert all("Lookahead converges 30-50% faster" in c.text for c in spec.claims)
    assert spec.selection == "auto"  # resolves to steps_to_target: what the claim is about


def test_quick_preset_is_smaller_than_the_default() -> None:
    quick, full = quick_study_spec(), default_study_spec()
    assert len(quick.optimizers) * quick.budget * quick.steps < (  # type: ignore[operator]
        len(full.optimizers) * full.budget * full.steps  # type: ignore[operator]
    )


def test_toml_round_trip_gives_an_equal_spec_and_hash() -> None:
    spec = StudySpec(
        optimizers=("adam", "lookahead(adam, k=5)"),
        seeds=2,
        steps=50,
        targets=(("mnist1d-cnn", 0.8),),
    )
    again = StudySpec.from_dict(tomllib.loads(spec.to_toml())["study"])
    assert again == spec
    assert again.spec_hash == spec.spec_hash


def test_spec_hash_changes_with_any_field() -> None:
    base = StudySpec()
    assert base.replace(seeds=4).spec_hash != base.spec_hash
    assert base.replace(steps=10).spec_hash != base.spec_hash


def test_load_reads_a_study_table_and_applies_overrides(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(
        '[study]\noptimizers = ["adam", "sgd"]\nseeds = 2\nbudget = 3\n'
        'targets = { "mnist1d-cnn" = 0.75 }\n'
    )
    spec = load_study_spec(path, seeds=4)
    assert spec.optimizers == ("adam", "sgd")
    assert (spec.seeds, spec.budget) == (4, 3)
    assert spec.targets == (("mnist1d-cnn", 0.75),)


def test_load_accepts_top_level_keys(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('tasks = ["mnist1d-mlp"]\nsteps = 20\n')
    spec = load_study_spec(path)
    assert spec.tasks == ("mnist1d-mlp",) and spec.steps == 20


def test_the_documented_example_file_loads() -> None:
    example = Path(__file__).parents[2] / "examples" / "study.toml"
    spec = load_study_spec(example)
    assert spec.optimizers and spec.seeds >= 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"seeds": 0}, "seeds"),
        ({"budget": 0}, "budget"),
        ({"optimizers": ()}, "optimizers"),
        ({"tasks": ()}, "tasks"),
        ({"steps": -5}, "steps"),
        ({"lr_span": 1.0}, "lr_span"),
        ({"search": "random"}, "search"),
        ({"optimizers": ("adam", "adam")}, "optimizers"),
        ({"targets": (("mnist1d-mlp", 0.5),)}, "targets"),
    ],
)
def test_bad_fields_raise_a_spec_error_naming_the_field(changes: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        StudySpec(**changes)
    message = str(err.value)
    assert message.startswith(f"{field}:") and "\n" not in message


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text("[study]\nseed = 3\n")
    with pytest.raises(SpecError, match="did you mean 'seeds'"):
        load_study_spec(path)


def test_missing_and_invalid_files_raise_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_study_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nseeds = ")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_study_spec(bad)


def test_split_names_keeps_commas_inside_parentheses() -> None:
    assert split_names("sgd,lookahead(adam(lr=0.01), k=5)") == (
        "sgd",
        "lookahead(adam(lr=0.01), k=5)",
    )



@pytest.mark.parametrize("text", ["adam,,sgd", " , ", "", "adam,", ",adam"])
def test_an_empty_item_in_a_name_list_is_an_error_not_dropped(text: str) -> None:
    """Issue 11: ``--optimizers "adam,,sgd"`` silently dropped the empty item."""
    with pytest.raises(SpecError, match=r"^optimizers: got .*empty; expected comma-separated"):
        split_names(text, "optimizers")


def test_keys_both_at_top_level_and_under_study_are_an_error(tmp_path: Path) -> None:
    """Issue 11: the top-level keys were silently ignored."""
    path = tmp_path / "s.toml"
    path.write_text('seeds = 5\n[study]\ntasks = ["beale"]\n')
    with pytest.raises(SpecError, match=r"both at the top level \(seeds\) and under \[study\]"):
        load_study_spec(path)
    path.write_text('[study]\ntasks = ["beale"]\nseeds = 5\n')
    assert load_study_spec(path).seeds == 5


def test_the_starting_point_depends_on_what_is_given(tmp_path: Path) -> None:
    assert load_study_spec(None) == default_study_spec()
    assert load_study_spec(None, quick=True) == quick_study_spec()
    assert load_study_spec(None, quick=True, seeds=4).optimizers == quick_study_spec().optimizers
    # other tasks: each task's own steps, batch size and target, not MNIST-1D's
    own = load_study_spec(None, tasks=("beale",))
    assert own.steps is None and own.batch_size is None and own.targets == ()


def test_a_spec_with_claims_and_margins_round_trips_through_its_toml_file(tmp_path: Path) -> None:
    spec = default_study_spec().replace(margins={"final": 0.02}, level=0.9, tuning_repeats=2)
    path = tmp_path / "study.toml"
    path.write_text(spec.to_toml())
    again = load_study_spec(path)
    assert again == spec and again.spec_hash == spec.spec_hash
    assert dict(again.margins) == {"final": 0.02, "steps_to_target": 0.1}
    assert len(again.claims) == 2


@pytest.mark.parametrize(
    ("claim", "needle"),
    [
        ({"optimizer": "a", "baseline": "b", "quantity": "speed", "at_least": 0.3}, "quantity"),
        ({"optimizer": "a", "baseline": "b", "quantity": "final"}, "at_least nor at_most"),
        ({"optimizer": "a", "baseline": "b", "quantity": "final", "at_least": 0.5,
          "at_most": 0.1}, "at_least 0.5 > at_most"),
        ({"optimizer": "a", "baseline": "b", "quantity": "final", "at_leest": 0.1}, "at_leest"),
    ],
)
def test_a_bad_claim_is_one_clear_line(claim: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        StudySpec(claims=(claim,))
