"""Measure the grader's throughput: grade copies of a solution notebook as ``labkit grade`` does.

    .venv/bin/python benchmarks/grading.py [--lab 01] [--count 8] [--workers 2]

``benchmarks/run.py --only grading`` runs it with the defaults. Prints notebooks per minute (wall time of
the whole run, worker start-up included) and the p50/p95 seconds per notebook (from kernel start to the last
verdict); run alone, it writes them to benchmarks/results/grading-labNN.json with a description of the
machine. The goal for lab 01 on 2 cores with ``--workers 2`` is at least 20 notebooks per minute. A figure,
not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from labkit.grading import Lab, Options, grade

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import machine  # noqa: E402  (the machine description benchmarks/run.py records)

ROOT = Path(__file__).resolve().parent.parent
GOAL_PER_MINUTE = 20


def measure(lab_number: str = "01", count: int = 8, workers: int = 2) -> dict:
    """Grade ``count`` copies of the lab's solution with ``workers`` processes and time the whole run."""
    lab = Lab.find(lab_number, ROOT / "labs" / "solutions")
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        submissions = Path(tmp) / "submissions"
        submissions.mkdir()
        for i in range(count):
            shutil.copy(lab.solution, submissions / f"student{i:03d}.ipynb")
        load_before = os.getloadavg()
        start = time.monotonic()
        results = grade([submissions], lab, Path(tmp) / "out", workers=workers, options=Options(), progress=True)
        wall = time.monotonic() - start
    seconds = [r.seconds for r in results]
    return {
        "load_average_before": [round(x, 2) for x in load_before],
        "lab": lab.number, "notebooks": len(results), "workers": workers,
        "wall_s": round(wall, 1),
        "notebooks_per_minute": round(len(results) / wall * 60, 1),
        "p50_s": round(float(np.percentile(seconds, 50)), 1),
        "p95_s": round(float(np.percentile(seconds, 95)), 1),
        "statuses": sorted({r.status for r in results}),
        "full_marks": sum(r.score == r.max_score for r in results),
        "goal_per_minute": GOAL_PER_MINUTE,
    }


def show(report: dict) -> None:
    print(f"lab {report['lab']}: {report['notebooks']} notebooks in {report['wall_s']} s with {report['workers']} "
          f"workers: {report['notebooks_per_minute']} per minute (goal {GOAL_PER_MINUTE}); per notebook p50 "
          f"{report['p50_s']} s, p95 {report['p95_s']} s; {report['full_marks']} full marks, "
          f"statuses {report['statuses']}; load average before {report['load_average_before']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="01")
    parser.add_argument("--count", type=int, default=8, help="notebooks to grade (copies of the solution)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    report = {"machine": machine(), **measure(args.lab, args.count, args.workers)}
    show(report)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"grading-lab{report['lab']}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["full_marks"] == report["notebooks"] else 1


if __name__ == "__main__":
    sys.exit(main())
