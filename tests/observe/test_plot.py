"""``steplab plot``: runs overlaid as PNG and self-contained HTML, a running run included."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from steplab.cli import main
from steplab.observe.plot import _panels
from steplab.observe.runs import read_run
from steplab.train import TrainConfig, fit


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, spec in (("adam", "adam"), ("la", "lookahead(adam, k=5)")):
        cfg = TrainConfig(task="beale", optimizer=spec, lr=0.01, steps=40, state_every=10,
                          tensorboard=False)
        fit(cfg, root / name, progress=False)
        out.append(root / name)
    return out


def test_html_is_self_contained_and_lists_every_run(runs: list[Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", *map(str, runs), "--out", str(tmp_path / "p.html")]) == 0
    page = (tmp_path / "p.html").read_text()
    assert "<td>adam</td><td>beale</td><td>adam</td><td>completed</td><td>40</td>" in page
    assert "<td>la</td><td>beale</td><td>lookahead(adam, k=5)</td>" in page
    sources = re.findall(r"src='([^']*)'", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert capsys.readouterr().out.strip().endswith("p.html")


def test_panels_follow_what_the_runs_logged(runs: list[Path]) -> None:
    titles = [p.title for p in _panels([read_run(r) for r in runs])]
    assert titles[:2] == ["loss", "distance"]
    assert "Lookahead slow-fast distance" in titles and "effective step size (median)" in titles
    assert "clip fraction" not in titles  # no run clipped


def test_a_run_still_writing_plots_as_far_as_it_got(runs: list[Path], tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(runs[0], live)
    (live / "summary.json").unlink()
    with open(live / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 41, "train_lo')  # a row cut short mid-write
    record = read_run(live)
    assert record.status == "running" and record.rows[-1]["step"] == 40
    assert main(["plot", str(live), str(runs[1]), "--out", str(tmp_path / "live.png")]) == 0
    assert (tmp_path / "live.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_output_suffix_is_one_line_exit_2(runs: list[Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(runs[0]), "--out", str(tmp_path / "p.txt")]) == 2
    err = capsys.readouterr().err
    assert "out: got" in err and ".png" in err and err.count("\n") == 1
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "p.png")]) == 2
