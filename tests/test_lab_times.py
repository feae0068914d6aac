"""The times that README.md and labs/README.md publish are the estimates of benchmarks/lab_times.py."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import lab_times  # noqa: E402


def published(path: Path, pattern: str) -> dict[str, int]:
    return {lab: int(minutes) for lab, minutes in re.findall(pattern, path.read_text(), flags=re.M)}


def test_readme_times_are_the_estimates():
    estimated = lab_times.estimates()
    readme = published(ROOT / "README.md", r"^\| \[(\d\d) · .*\| (\d+) min \|$")
    labs = published(ROOT / "labs" / "README.md", r"^\| `(\d\d)_\w+\.ipynb` \|.*\| (\d+) min \|")
    assert readme == estimated, "run benchmarks/lab_times.py and copy its minutes into README.md"
    assert labs == estimated, "run benchmarks/lab_times.py and copy its minutes into labs/README.md"


def test_the_estimate_grows_with_what_a_lab_asks():
    small = {"words": 1500, "given_lines": 150, "exercises": 2, "solution_lines": 10}
    assert lab_times.minutes(small) == 40  # 10 + 10 + 10 + 5 + 2 = 37, up to 40
    assert lab_times.minutes({**small, "exercises": 4, "solution_lines": 40}) > lab_times.minutes(small)
