"""`steplab tasks` and `steplab optimizers` stay readable at 80 columns and in a pipe (issue 11)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from rich.cells import cell_len

from steplab.cli import main
from steplab.optim import OPTIMIZERS
from steplab.tasks import describe_tasks


def _printed(argv: list[str]) -> str:
    out = io.StringIO()  # not a terminal: rich lays it out as a pipe
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def _words(text: str) -> str:
    return " ".join(text.split())


def _cells(command: str) -> list[list[str]]:
    if command == "tasks":
        return [[i["name"], i["description"], f"{i['n_params']:,}", i["target"]["metric"]]
                for i in describe_tasks()]
    return [[o.name, o.rule, ", ".join(o.buffers) or "-"] for o in OPTIMIZERS.values()]


@pytest.mark.parametrize("command", ["tasks", "optimizers"])
@pytest.mark.parametrize("columns", ["80", None])
def test_listing_at_80_columns_and_piped_shows_every_cell_whole(
    command: str, columns: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: every column was cut to "…" in an 80-column terminal and in a pipe."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)  # a pipe: rich assumes 80
    else:
        monkeypatch.setenv("COLUMNS", columns)
    text = _printed([command])
    assert "…" not in text
    assert max(cell_len(line.rstrip()) for line in text.splitlines()) <= 80  # display cells
    flat = _words(text)
    for row in _cells(command):
        for cell in row:
            assert _words(cell) in flat, (cell, text)


@pytest.mark.parametrize("command", ["tasks", "optimizers"])
def test_wide_terminal_still_gets_the_table(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = _printed([command])
    assert "┃ name" in text and "…" not in text


def test_json_listings_are_complete() -> None:
    tasks = json.loads(_printed(["tasks", "--json"]))
    assert tasks == json.loads(json.dumps(describe_tasks()))
    optimizers = json.loads(_printed(["optimizers", "--json"]))
    expected = json.loads(json.dumps([o.to_dict() for o in OPTIMIZERS.values()]))
    listed = [{k: v for k, v in o.items() if not k.startswith("cpu_path")} for o in optimizers]
    assert listed == expected
