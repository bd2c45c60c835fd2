"""The registry: built-ins by name, suggestions, user tasks, import paths."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from steplab.errors import SpecError
from steplab.tasks import Task, describe_tasks, get_task, list_tasks, register_task

BUILTINS = [
    "mnist1d-logreg",
    "mnist1d-mlp",
    "mnist1d-cnn",
    "digits-mlp",
    "rosenbrock",
    "rastrigin",
    "beale",
    "mnist",
    "cifar10",
]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "tasks.md"


def test_every_builtin_is_listed_and_satisfies_the_protocol() -> None:
    assert list_tasks()[: len(BUILTINS)] == BUILTINS
    for name in BUILTINS:
        task = get_task(name)
        assert isinstance(task, Task)
        assert task.name == name
        assert task.default_steps > 0 and task.default_batch_size > 0


def test_unknown_task_suggests_the_closest_name() -> None:
    with pytest.raises(SpecError, match="task: got 'rosenbrok'; did you mean 'rosenbrock'"):
        get_task("rosenbrok")
    with pytest.raises(SpecError, match="expected one of mnist1d-logreg"):
        get_task("imagenet")


def test_info_of_every_builtin_has_the_listed_fields() -> None:
    # Only the built-ins: other test modules register toy tasks of their own in this process.
    infos = [info for info in describe_tasks() if info["name"] in BUILTINS]
    assert {info["name"] for info in infos} == set(BUILTINS)
    for info in infos:
        assert set(info) >= {"name", "description", "sizes", "n_params", "target", "defaults"}
        assert set(info["defaults"]) == {"optimizer", "batch_size", "steps", "lr"}
        assert info["target"]["mode"] in ("max", "min")


def test_info_sizes_match_the_loaded_data() -> None:
    for name in BUILTINS:
        if name in ("mnist", "cifar10"):
            continue  # their sizes are the standard datasets'; files are tested apart
        task = get_task(name)
        assert task.info()["sizes"] == task.load_data().sizes(), name


class _Quadratic:
    """A minimal duck-typed task: no base class, just the protocol's members."""

    description = "a 1-D quadratic"
    target = get_task("beale").target
    default_batch_size = 1
    default_steps = 5
    default_lr = 0.1
    trajectory = False

    def __init__(self, name: str) -> None:
        self.name = name

    def load_data(self, data_dir: str | None = None) -> Any:
        return get_task("beale").load_data()

    def build_model(self, generator: torch.Generator) -> torch.nn.Module:
        return torch.nn.Linear(1, 1)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output**2).mean()

    def metrics(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
        return {"loss": float(self.loss(model(x), y))}

    def info(self) -> dict:
        return {"name": self.name}


def test_register_task_adds_a_duck_typed_task_and_refuses_a_second_one() -> None:
    task = _Quadratic("test-registry-quadratic")
    assert register_task(task) is task
    assert get_task("test-registry-quadratic") is task
    assert "test-registry-quadratic" in list_tasks()
    with pytest.raises(SpecError, match="already registered"):
        register_task(_Quadratic("test-registry-quadratic"))
    other = _Quadratic("test-registry-quadratic")
    assert register_task(other, replace=True) is other
    assert get_task("test-registry-quadratic") is other


def test_a_task_whose_info_is_partial_is_still_listed() -> None:
    """CI regression: a registered duck-typed task whose info() gave only its name made
    `steplab tasks` fail with "unexpected KeyError: 'sizes'" in every later test."""
    from steplab.cli import main

    register_task(_Quadratic("test-registry-partial-info"))
    info = next(i for i in describe_tasks() if i["name"] == "test-registry-partial-info")
    assert info["sizes"] is None and info["n_params"] == 2
    assert info["defaults"] == {"optimizer": "adam", "batch_size": 1, "steps": 5, "lr": 0.1}
    assert info["description"] == "a 1-D quadratic"
    assert main(["tasks"]) == 0


def test_register_task_names_the_missing_members() -> None:
    class Half:
        name = "half"

        def load_data(self, data_dir: str | None = None) -> None: ...

    with pytest.raises(SpecError, match="without description, target, default_batch_size"):
        register_task(Half())  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="task name ' spaced '"):
        register_task(_Quadratic(" spaced "))


def test_get_task_imports_module_attribute_paths(tmp_path: Path) -> None:
    module = tmp_path / "steplab_test_user_tasks.py"
    module.write_text(
        "from steplab.tasks import get_task\n"
        "TASK = get_task('rosenbrock')\n"
        "def factory():\n    return get_task('beale')\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        assert get_task("steplab_test_user_tasks:TASK").name == "rosenbrock"
        assert get_task("steplab_test_user_tasks:factory").name == "beale"
        with pytest.raises(SpecError, match="could not be imported"):
            get_task("steplab_test_user_tasks:missing")
        with pytest.raises(SpecError, match="could not be imported"):
            get_task("no_such_module_here:TASK")
    finally:
        sys.path.remove(str(tmp_path))


def test_the_user_task_example_in_the_docs_runs() -> None:
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "register_task(" in b)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(example, str(DOCS), "exec"), namespace)
    task = get_task(namespace["task"].name)
    data = task.load_data()
    model = task.build_model(torch.Generator().manual_seed(0))
    loss = task.loss(model(data.x_train), data.y_train)
    loss.backward()
    assert set(task.metrics(model, data.x_val, data.y_val)) >= {"loss"}
    assert task.info()["name"] == task.name


def test_a_task_module_in_the_working_directory_is_found_by_the_steplab_script(
    tmp_path: Path,
) -> None:
    """Issue 11: ``--task module:attr`` needed PYTHONPATH=. with the ``steplab`` script."""
    (tmp_path / "my_tasks_here.py").write_text(
        "from steplab.tasks import get_task\nTASK = get_task('beale')\n")
    script = Path(sys.executable).with_name("steplab")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(script), "tasks", "my_tasks_here:TASK", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["name"] == "beale"
