"""The README's example is real code: it runs as written and its claims hold."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    match = re.search(r"## Example\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its ## Example python block"
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    ratio = float(capsys.readouterr().out.split()[-1])
    assert ratio == pytest.approx(3.0, abs=0.1)  # Lookahead(AdamW): two moments + slow weights
    assert (tmp_path / "ckpt" / "step-100" / "manifest.json").is_file()


def test_readme_quickstart_gives_exactly_the_two_commands() -> None:
    text = README.read_text()
    quick = text.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["make demo", "make test"]
