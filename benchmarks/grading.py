"""Measure the grader's throughput: grade copies of a solution notebook as ``labkit grade`` does, with the
sandbox and without it, side by side.

    .venv/bin/python benchmarks/grading.py [--lab 01] [--count 8] [--workers 2] [--rounds 2]

``benchmarks/run.py --only grading`` runs it with the defaults. Each round grades ``count`` copies without the
sandbox, then with it (alternating, so that a change in the machine's load hits both); the figures are the
medians over the rounds. Prints notebooks per minute (wall time of the whole run, worker start-up included),
the p50/p95 seconds per notebook (from kernel start to the last verdict, over every notebook of every round)
and what the sandbox costs in throughput; run alone, it writes them to benchmarks/results/grading-labNN.json
with a description of the machine. Goals for lab 01 on 2 cores with ``--workers 2``: at least 20 notebooks per
minute, and a sandbox that costs at most 10 %. A figure, not a test.
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
GOAL_SANDBOX_COST = 0.10  # at most this share of the throughput


def _grade_copies(lab: Lab, count: int, workers: int, sandboxed: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        submissions = Path(tmp) / "submissions"
        submissions.mkdir()
        for i in range(count):
            shutil.copy(lab.solution, submissions / f"student{i:03d}.ipynb")
        start = time.monotonic()
        results = grade([submissions], lab, Path(tmp) / "out", workers=workers, options=Options(sandbox=sandboxed),
                        progress=False)
        wall = time.monotonic() - start
    return {"wall_s": wall, "seconds": [r.seconds for r in results], "statuses": {r.status for r in results},
            "full_marks": sum(r.score == r.max_score for r in results)}


def measure(lab_number: str = "01", count: int = 8, workers: int = 2, rounds: int = 2) -> dict:
    """Grade ``count`` copies of the lab's solution with ``workers`` processes, without and with the sandbox,
    ``rounds`` times each, alternating."""
    lab = Lab.find(lab_number, ROOT / "labs" / "solutions")
    load_before = os.getloadavg()
    runs = {"plain": [], "sandboxed": []}
    for _ in range(rounds):
        for mode in runs:
            runs[mode].append(_grade_copies(lab, count, workers, sandboxed=mode == "sandboxed"))
    report = {"load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "lab": lab.number, "notebooks": count, "workers": workers, "rounds": rounds,
              "goal_per_minute": GOAL_PER_MINUTE, "goal_sandbox_cost": GOAL_SANDBOX_COST}
    for mode, done in runs.items():
        seconds = [s for run in done for s in run["seconds"]]
        report[mode] = {
            "notebooks_per_minute": round(float(np.median([count / run["wall_s"] * 60 for run in done])), 1),
            "wall_s": [round(run["wall_s"], 1) for run in done],
            "p50_s": round(float(np.percentile(seconds, 50)), 1),
            "p95_s": round(float(np.percentile(seconds, 95)), 1),
            "statuses": sorted(set().union(*(run["statuses"] for run in done))),
            "full_marks": sum(run["full_marks"] for run in done),
        }
    plain, boxed = report["plain"]["notebooks_per_minute"], report["sandboxed"]["notebooks_per_minute"]
    report["sandbox_cost"] = round(1 - boxed / plain, 3) if plain else None
    return report


def show(report: dict) -> None:
    print(f"lab {report['lab']}: {report['notebooks']} notebooks x {report['rounds']} rounds, {report['workers']} "
          f"workers; load average before {report['load_average_before']}, after {report['load_average_after']} "
          "(a shared machine: the figures are noisy)")
    print(f"{'':10} {'per minute':>10} {'p50 s':>6} {'p95 s':>6}  full marks  statuses")
    for mode in ("plain", "sandboxed"):
        row = report[mode]
        print(f"{mode:10} {row['notebooks_per_minute']:>10} {row['p50_s']:>6} {row['p95_s']:>6}  "
              f"{row['full_marks']:>4}/{report['notebooks'] * report['rounds']:<5}  {row['statuses']}")
    print(f"the sandbox costs {report['sandbox_cost']:.1%} of the throughput (goal: at most "
          f"{report['goal_sandbox_cost']:.0%}); goal {GOAL_PER_MINUTE} notebooks per minute")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="01")
    parser.add_argument("--count", type=int, default=8, help="notebooks to grade (copies of the solution)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode, alternating")
    args = parser.parse_args()
    report = {"machine": machine(), **measure(args.lab, args.count, args.workers, args.rounds)}
    show(report)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"grading-lab{report['lab']}.json").write_text(json.dumps(report, indent=2) + "\n")
    complete = report["notebooks"] * report["rounds"]
    return 0 if all(report[mode]["full_marks"] == complete for mode in ("plain", "sandboxed")) else 1


if __name__ == "__main__":
    sys.exit(main())
