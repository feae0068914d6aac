"""Rebuild the course's data sets from what installed packages ship (no download).

    python datasets/build.py

writes the CSV files next to this script and refreshes SHA256SUMS.
"""

import hashlib
from pathlib import Path

from sklearn.datasets import load_breast_cancer

HERE = Path(__file__).resolve().parent


def build_breast_cancer() -> Path:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = frame["diagnosis"].map(dict(enumerate(bunch.target_names)))
    path = HERE / "breast_cancer.csv"
    # float_format=None writes the shortest repr, which reads back to the same floats.
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def write_sums(paths: list[Path]) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(paths)]
    (HERE / "SHA256SUMS").write_text("".join(lines))


if __name__ == "__main__":
    built = [build_breast_cancer()]
    write_sums(built)
    for p in built:
        print(f"wrote {p.relative_to(HERE.parent)}")
