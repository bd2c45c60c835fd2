"""benchmarks/docblock.py: the one writer of generated blocks in docs/ (every script uses it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _docblock() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docblock", ROOT / "benchmarks" / "docblock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replace_block_appends_then_replaces_only_its_block(tmp_path: Path) -> None:
    docblock = _docblock()
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n<!-- B other -->\nkept\n<!-- E other -->\n")
    docblock.replace_block(page, "<!-- B x -->", "<!-- E x -->", "first", heading="## X")
    assert page.read_text().endswith("## X\n\n<!-- B x -->\nfirst\n<!-- E x -->\n")
    docblock.replace_block(page, "<!-- B x -->", "<!-- E x -->", "second\n")
    text = page.read_text()
    assert "second" in text and "first" not in text and text.count("## X") == 1
    assert "<!-- B other -->\nkept\n<!-- E other -->" in text


def test_replace_block_refuses_a_missing_block_when_told(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("nothing here\n")
    with pytest.raises(SystemExit, match=r"no <!-- B x --> \.\.\. <!-- E x --> block"):
        _docblock().replace_block(page, "<!-- B x -->", "<!-- E x -->", "x", append=False)
    assert page.read_text() == "nothing here\n"


def test_every_script_writes_docs_through_docblock() -> None:
    """No second copy of the marked-block rewriter (issue 13's tidy item)."""
    scripts = [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")]
    writers = [p.name for p in scripts if p.name != "docblock.py"
               and "<!--" in p.read_text() and "docblock" not in p.read_text()]
    assert writers == []
