"""The checks' mutation score per lab: mutants of the solutions, killed by their checks (tests/mutants.py).

A figure, beside the test that enforces it (tests/test_mutants.py): a new check that is weak shows here at once
as a low score. Runtime answers are judged on one seed, as in the test.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure() -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import mutants
    from test_mutants import RUNTIME_FOLDERS

    verdicts, here = [], os.getcwd()
    with tempfile.TemporaryDirectory(prefix="labkit-mutants-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.chdir(scratch)  # a mutant may write files: never in the repository
        try:
            for exercise in mutants.exercises():
                if exercise.kind == "function":
                    state = (__import__(mutants.STATE_FROM[exercise.name]).state()
                             if exercise.name in mutants.STATE_FROM else None)
                    found = mutants.judge(exercise, mutants.namespace(exercise, state))
                elif exercise.kind == "runtime":
                    found = mutants.judge_runtime(exercise, RUNTIME_FOLDERS[exercise.name])
                else:
                    continue
                verdicts += found
                print(f"{exercise.name}: {sum(not v.survived for v in found)}/{len(found)} killed", flush=True)
        finally:
            with contextlib.suppress(OSError):
                os.chdir(here)
    listed = mutants.equivalents()
    return {"per_lab": mutants.score(verdicts, listed),
            "unlisted_survivors": [f"{v.exercise}: {v.mutant}" for v in verdicts
                                   if v.survived and (v.exercise, v.mutant) not in listed]}


def show(report: dict) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import mutants

    mutants.show(report["per_lab"])
    for survivor in report["unlisted_survivors"]:
        print(f"  survived: {survivor}")
