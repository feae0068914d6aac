"""How long a lab takes a student, estimated the same way for every lab from its solution notebook.

    .venv/bin/python benchmarks/lab_times.py

The estimate is the sum of
- reading the prose: markdown words at READING_WORDS_PER_MINUTE (technical text with formulas and tables);
- reading and running the given code: its non-blank, non-comment lines outside the solutions at
  CODE_LINES_PER_MINUTE;
- each checked exercise: EXERCISE_MINUTES to understand it and run its check, plus SOLUTION_LINE_MINUTES per
  line of the worked solution (writing, a wrong try, reading the check's message);
- the lab's own run time, top to bottom (at most 2 minutes by the budgets), counted as RUN_MINUTES;
rounded up to 5 minutes. README.md and labs/README.md publish these figures, and a test keeps them equal.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
READING_WORDS_PER_MINUTE = 150
CODE_LINES_PER_MINUTE = 15
EXERCISE_MINUTES = 5
SOLUTION_LINE_MINUTES = 0.5
RUN_MINUTES = 2


def parts(path: Path) -> dict:
    """What the estimate counts in one solution notebook."""
    cells = nbformat.read(path, as_version=4).cells
    words = sum(len(re.findall(r"[A-Za-z0-9']+", c.source)) for c in cells if c.cell_type == "markdown")
    given = solution = checks = 0
    for cell in (c for c in cells if c.cell_type == "code"):
        checks += len(re.findall(r'^check\("', cell.source, flags=re.M))
        inside = False
        for line in cell.source.splitlines():
            if "### BEGIN SOLUTION" in line or "### END SOLUTION" in line:
                inside = "BEGIN" in line
            elif line.strip() and not line.strip().startswith("#"):
                solution += inside
                given += not inside
    return {"words": words, "given_lines": given, "solution_lines": solution, "exercises": checks}


def minutes(counted: dict) -> int:
    total = (counted["words"] / READING_WORDS_PER_MINUTE + counted["given_lines"] / CODE_LINES_PER_MINUTE
             + counted["exercises"] * EXERCISE_MINUTES + counted["solution_lines"] * SOLUTION_LINE_MINUTES
             + RUN_MINUTES)
    return 5 * math.ceil(total / 5)


def estimates() -> dict[str, int]:
    """{"00": minutes, ...} for every solution notebook."""
    return {p.name[:2]: minutes(parts(p)) for p in sorted((ROOT / "labs" / "solutions").glob("[0-9][0-9]_*.ipynb"))}


def main() -> int:
    print(f"{'lab':<32} {'words':>6} {'code':>5} {'exercises':>9} {'solution':>8} {'minutes':>7}")
    for path in sorted((ROOT / "labs" / "solutions").glob("[0-9][0-9]_*.ipynb")):
        counted = parts(path)
        print(f"{path.stem:<32} {counted['words']:>6} {counted['given_lines']:>5} {counted['exercises']:>9} "
              f"{counted['solution_lines']:>8} {minutes(counted):>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
