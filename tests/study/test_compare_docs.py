"""Audit item 8: numbers in docs/compare.md come from a script's real run, not a hand copy."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _block(text: str, name: str) -> str:
    found = re.search(
        rf"<!-- BEGIN generated:{name} -->\n(.*?)<!-- END generated:{name} -->", text, re.S
    )
    assert found is not None, name
    return found.group(1)


def _script() -> object:
    spec = importlib.util.spec_from_file_location(
        "update_compare_docs", ROOT / "scripts" / "update_compare_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_blocks_name_their_command_and_date() -> None:
    compare = (ROOT / "docs" / "compare.md").read_text()
    for name in ("default-study", "calibration"):
        block = _block(compare, name)
        assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC by `python scripts/", block)
    bench = _block((ROOT / "docs" / "benchmarks.md").read_text(), "compare-wall-time")
    assert re.search(r"Measured \d{4}-\d\d-\d\d .* by `benchmarks/compare_wall_time.py", bench)


def test_the_calibration_table_in_the_docs_is_what_a_fresh_run_gives() -> None:
    quoted = _block((ROOT / "docs" / "compare.md").read_text(), "calibration")
    fresh = _script().calibration_block(4000)  # type: ignore[attr-defined]
    table = [line for line in fresh.splitlines() if line.startswith("|")]
    assert table and table == [line for line in quoted.splitlines() if line.startswith("|")]
