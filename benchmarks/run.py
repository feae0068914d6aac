"""The course's budgets and serving figures, measured in one command.

    .venv/bin/python benchmarks/run.py                       # everything
    .venv/bin/python benchmarks/run.py labs/solutions/01_serve_a_model.ipynb --only notebooks
    .venv/bin/python benchmarks/run.py --only serving install

Sections: ``notebooks`` (each solution notebook against the budgets, see notebooks.py), ``serving``
(start-to-ready, one-row latency, throughput with and without adaptive batching, see serving.py),
``grading`` (notebooks graded per minute, see grading.py), ``mutation`` (the checks' mutation score per lab, see
mutation.py) and ``install`` (size of the environment).
It prints tables and writes ``benchmarks/results/latest.json`` (and a dated copy) with a description of the
machine. Timings are figures, not tests: the test command does not run this. Exit status 1 when a notebook is
over budget.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys
from datetime import datetime, UTC
from importlib import metadata
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SECTIONS = ["notebooks", "serving", "grading", "mutation", "install"]
PACKAGES = ["mlserver", "tensorflow", "alibi-detect", "scikit-learn", "numpy", "jupyterlab", "labkit"]


def machine() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def install_size() -> dict:
    """The environment on disk: the whole prefix, and the five largest distributions in it."""

    def size(paths) -> int:
        total = 0
        for path in paths:
            with contextlib.suppress(OSError):  # a file listed in RECORD but gone
                total += path.lstat().st_size
        return total

    prefix = Path(sys.prefix)
    whole = size(p for p in prefix.rglob("*") if p.is_file() and not p.is_symlink())
    by_dist = {}
    for dist in metadata.distributions():
        files = dist.files or []
        by_dist[dist.metadata["Name"]] = size(Path(dist.locate_file(f)) for f in files)
    largest = sorted(by_dist.items(), key=lambda item: -item[1])[:5]
    figures = {"prefix": str(prefix), "total_mb": round(whole / 2**20), "distributions": len(by_dist),
               "largest_mb": {name: round(b / 2**20) for name, b in largest}}
    print(f"environment {figures['prefix']}: {figures['total_mb']} MB in {figures['distributions']} distributions;"
          " largest: " + ", ".join(f"{n} {mb} MB" for n, mb in figures["largest_mb"].items()))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: every solution)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="sections to measure")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    report = {"machine": machine()}
    over_budget = False
    for section in args.only:
        print(f"\n== {section} ==", flush=True)
        if section == "install":
            report[section] = install_size()
            continue
        module = importlib.import_module(section)
        if section == "notebooks":
            paths = args.notebooks or sorted((ROOT / "labs" / "solutions").glob("[0-9][0-9]_*.ipynb"))
            report[section] = module.measure(paths)
            over_budget = any(row["over_budget"] for row in report[section])
        else:
            report[section] = module.measure()
            module.show(report[section])
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"{report['machine']['date'][:19].replace(':', '')}.json").write_text(text)
    print(f"\nwrote {(RESULTS / 'latest.json').relative_to(ROOT)}")
    return 1 if over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
