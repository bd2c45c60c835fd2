"""Wall time of ``steplab compare`` (what ``make demo`` runs) against the previous default study.

Variants, run one after another in the same invocation (interleaved when
``--repeats`` > 1) on a local pool of ``--workers`` processes:

* ``previous default`` -- the default study of the source tree at ``--old-ref``
  (default ``b009874``: 8 optimizers, 7 lr trials, 3 seeds of which the search
  run was one), run from a ``git archive`` of that commit with this venv;
* ``default`` -- ``steplab compare`` of this tree (the study ``make demo`` runs);
* ``--quick`` -- ``steplab compare --quick`` of this tree.

Every variant starts from an empty ``--out`` (nothing cached). Each line gives
the median wall time and its ratio to the previous default study; the machine
is shared, so read the ratios, not the seconds. ``--json PATH`` writes the
figures for ``scripts/update_compare_docs.py``.

Run: ``.venv/bin/python benchmarks/compare_wall_time.py [--repeats 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def _old_source(ref: str, into: Path) -> Path:
    blob = subprocess.run(
        ["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _run(args: list[str], out: Path, pythonpath: Path | None, workers: int) -> float:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [sys.executable, "-m", "steplab", "compare", *args, "--out", str(out), "--quiet",
           "--workers", str(workers)]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    """Parse the flags, run the variants, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    parser.add_argument("--old-ref", default="b009874", help="commit of the previous default")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--keep", default=None,
        help="copy the first default study's output here (for scripts/update_compare_docs.py)",
    )
    args = parser.parse_args()
    times: dict[str, list[float]] = {"previous default": [], "default": [], "--quick": []}
    with tempfile.TemporaryDirectory() as tmp:
        old = _old_source(args.old_ref, Path(tmp) / "old")
        for r in range(args.repeats):
            for name, flags, path in (
                ("previous default", [], old),
                ("default", [], None),
                ("--quick", ["--quick"], None),
            ):
                out = Path(tmp) / f"{name.strip('-').replace(' ', '_')}-{r}"
                times[name].append(_run(flags, out, path, args.workers))
                if name == "default" and r == 0 and args.keep:
                    shutil.copytree(out, args.keep, dirs_exist_ok=True)
    base = statistics.median(times["previous default"])
    table = Table(title=f"steplab compare wall time, {args.workers} workers (median of "
                  f"{args.repeats})")
    for col in ("study", "seconds", "vs previous default"):
        table.add_column(col, justify="left" if col == "study" else "right")
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append({"study": name, "seconds": median, "ratio": median / base})
        table.add_row(name, f"{median:.0f}", f"{median / base:.2f}x")
    Console().print(table)
    if args.json:
        body = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["benchmarks/compare_wall_time.py", *sys.argv[1:]]),
            "workers": args.workers,
            "repeats": args.repeats,
            "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(body, indent=1) + "\n")


if __name__ == "__main__":
    main()
