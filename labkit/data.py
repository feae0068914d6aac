"""Loaders for the course's data sets in ``datasets/``, checksums verified on every load."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class DataError(RuntimeError):
    """A data set file is missing, corrupted or unknown."""


def datasets_dir() -> Path:
    """The ``datasets/`` folder of the course (``LABKIT_DATASETS`` overrides it)."""
    if os.environ.get("LABKIT_DATASETS"):
        return Path(os.environ["LABKIT_DATASETS"])
    return Path(__file__).resolve().parent.parent / "datasets"


def verified_path(name: str, folder: Path | None = None) -> Path:
    """Path of a data file whose SHA256 matches ``SHA256SUMS``, or a ``DataError``."""
    folder = folder or datasets_dir()
    sums = folder / "SHA256SUMS"
    path = folder / name
    if not sums.exists():
        raise DataError(f"{sums} is missing: the course files are incomplete (git checkout?)")
    expected = dict(
        reversed(line.split(maxsplit=1)) for line in sums.read_text().splitlines() if line.strip()
    )
    if name not in expected:
        raise DataError(f"{name} is not listed in {sums}")
    if not path.exists():
        raise DataError(f"{path} is missing; rebuild it with `python datasets/build.py`")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected[name]:
        raise DataError(
            f"{path} is corrupted (SHA256 {actual[:12]}…, expected {expected[name][:12]}…); "
            "restore it with `git checkout -- datasets` or `python datasets/build.py`"
        )
    return path


@dataclass
class Dataset:
    """Features ``X`` (DataFrame), integer labels ``y`` and the names of the labels."""

    X: pd.DataFrame
    y: pd.Series
    target_names: list[str]
    card: str

    def __repr__(self) -> str:
        return f"<Dataset {self.X.shape[0]} rows, {self.X.shape[1]} features, classes {self.target_names}>"


def load_breast_cancer(folder: Path | None = None) -> Dataset:
    """Breast cancer Wisconsin (diagnostic): 569 tumours, 30 features, malignant or benign."""
    folder = folder or datasets_dir()
    frame = pd.read_csv(verified_path("breast_cancer.csv", folder))
    target_names = ["malignant", "benign"]
    y = frame.pop("diagnosis").map({n: i for i, n in enumerate(target_names)}).rename("target")
    card = (folder / "breast_cancer.md").read_text() if (folder / "breast_cancer.md").exists() else ""
    return Dataset(X=frame, y=y.astype(int), target_names=target_names, card=card)
