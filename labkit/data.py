"""Loaders for the course's data sets in ``datasets/``, checksums verified on every load."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labkit import course


class DataError(RuntimeError):
    """A data set file is missing, corrupted or unknown."""


def datasets_dir() -> Path:
    """The ``datasets/`` folder of the course (found by ``labkit.course``; ``LABKIT_COURSE`` sets it)."""
    return course.datasets()


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


def load_adult(folder: Path | None = None) -> Dataset:
    """UCI Adult census income, a documented 5,000-row subset: 13 columns, income above $50K or not.

    ``X`` keeps the census's columns, numbers as integers and categories as strings (``sex`` and ``race``
    included: they are the sensitive attributes of a fairness audit); ``y`` is 1 for ``>50K``.
    """
    folder = folder or datasets_dir()
    frame = pd.read_csv(verified_path("adult.csv", folder))
    target_names = ["<=50K", ">50K"]
    y = frame.pop("income").map({n: i for i, n in enumerate(target_names)}).rename("target")
    card = (folder / "adult.md").read_text() if (folder / "adult.md").exists() else ""
    return Dataset(X=frame, y=y.astype(int), target_names=target_names, card=card)


# -- Lab 07: digits and seeded outliers ------------------------------------------------------------
# The 8x8 digits ship with scikit-learn (no download). Digits 0-7 are the "known" classes a model is
# trained on; 8 and 9 are held out as novel classes. Every perturbation is seeded, so a lab's numbers
# repeat, and documented in datasets/digits.md.

KNOWN_DIGITS = tuple(range(8))
DIGIT_PARTS = ("train", "test", "novel")
DIGIT_OUTLIER_KINDS = ("noise", "mask", "novel", "photo")
TABULAR_CORRUPTIONS = ("unit", "shuffle")


@dataclass
class Images:
    """Grey-scale images ``(n, 8, 8)`` with values in [0, 1] (1 = full ink) and their integer labels."""

    images: np.ndarray
    labels: np.ndarray
    card: str = ""

    @property
    def X(self) -> np.ndarray:
        """The images as rows of 64 pixels, the shape most models take."""
        return self.images.reshape(len(self.images), -1)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"<Images {len(self)} of 8x8, labels {sorted(set(self.labels.tolist()))}>"


def load_digits(part: str = "train") -> Images:
    """scikit-learn's 8x8 handwritten digits, scaled to [0, 1].

    ``part``: ``"train"`` (two thirds of the digits 0-7), ``"test"`` (the other third; the split is fixed,
    seed 0, stratified by digit) or ``"novel"`` (every 8 and 9, never used for training).
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if part not in DIGIT_PARTS:
        raise ValueError(f"part must be one of {DIGIT_PARTS}, not {part!r}")
    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    card_path = datasets_dir() / "digits.md"
    card = card_path.read_text() if card_path.exists() else ""
    known = np.isin(labels, KNOWN_DIGITS)
    if part == "novel":
        return Images(images[~known], labels[~known], card)
    train, test = train_test_split(np.flatnonzero(known), test_size=1 / 3, random_state=0,
                                   stratify=labels[known])
    chosen = np.sort(train if part == "train" else test)
    return Images(images[chosen], labels[chosen], card)


def perturb_digits(images: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A perturbed copy of ``images`` (``(n, 8, 8)`` or ``(n, 64)``, values in [0, 1]), same shape.

    ``"noise"``: Gaussian noise with standard deviation 0.35 on every pixel, clipped to [0, 1] (a bad sensor).
    ``"mask"``: a 4x4 square at a random place set to full ink (a blot on the scan).
    """
    array = np.array(images, dtype=np.float32)
    if array.ndim not in (2, 3) or array.shape[-1] not in (8, 64):
        raise ValueError(f"images must have shape (n, 8, 8) or (n, 64), not {array.shape}")
    shape = array.shape
    square = array.reshape(-1, 8, 8)
    rng = np.random.default_rng(seed)
    if kind == "noise":
        square = np.clip(square + rng.normal(0, 0.35, size=square.shape), 0, 1)
    elif kind == "mask":
        for image, (row, col) in zip(square, rng.integers(0, 5, size=(len(square), 2)), strict=True):
            image[row : row + 4, col : col + 4] = 1.0
    else:
        raise ValueError(f"kind must be 'noise' or 'mask', not {kind!r}")
    return square.astype(np.float32).reshape(shape)


def photo_patches(n: int, seed: int) -> np.ndarray:
    """``n`` images of another kind: 8x8 grey patches of scikit-learn's two sample photos, scaled to [0, 1]."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = []
    for photo in load_sample_images().images:
        grey = photo.mean(axis=2)
        h, w = (grey.shape[0] // 4) * 4, (grey.shape[1] // 4) * 4
        photos.append(grey[:h, :w].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3)))  # 4x4 block means
    patches = np.empty((n, 8, 8), dtype=np.float32)
    for i, which in enumerate(rng.integers(0, len(photos), size=n)):
        photo = photos[which]
        row, col = rng.integers(0, photo.shape[0] - 8), rng.integers(0, photo.shape[1] - 8)
        patch = photo[row : row + 8, col : col + 8]
        patches[i] = (patch - patch.min()) / max(float(np.ptp(patch)), 1e-9)
    return patches


def digit_outliers(kind: str, n: int, seed: int) -> np.ndarray:
    """``n`` outlier images ``(n, 8, 8)`` of one kind, drawn with ``seed``.

    ``"noise"`` and ``"mask"`` perturb digits of the test part (see ``perturb_digits``); ``"novel"`` draws
    8s and 9s; ``"photo"`` cuts patches from photos (``photo_patches``).
    """
    if kind not in DIGIT_OUTLIER_KINDS:
        raise ValueError(f"kind must be one of {DIGIT_OUTLIER_KINDS}, not {kind!r}")
    rng = np.random.default_rng(seed)
    if kind == "photo":
        return photo_patches(n, seed)
    source = load_digits("novel" if kind == "novel" else "test").images
    chosen = source[rng.choice(len(source), size=n, replace=n > len(source))]
    return chosen if kind == "novel" else perturb_digits(chosen, kind, int(rng.integers(2**32)))


def corrupt_rows(X, kind: str, seed: int) -> np.ndarray:
    """A corrupted copy of the rows of ``X`` (2-D, numeric), as data pipelines break them.

    ``"unit"``: in each row one random feature is recorded in a unit ten times smaller (multiplied by 10).
    ``"shuffle"``: each row is stitched from other rows, every feature taken from a random row of ``X``:
    every value is ordinary on its own, only the combination is impossible (a join on the wrong key).
    """
    array = np.array(X, dtype=np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"X must be 2-D with at least 2 rows, not shape {array.shape}")
    rng = np.random.default_rng(seed)
    n, d = array.shape
    if kind == "unit":
        array[np.arange(n), rng.integers(0, d, size=n)] *= 10
    elif kind == "shuffle":
        array = array[rng.integers(0, n, size=(n, d)), np.arange(d)]
    else:
        raise ValueError(f"kind must be one of {TABULAR_CORRUPTIONS}, not {kind!r}")
    return array


# -- Drift scenarios (lab 06) ------------------------------------------------------------------------------------

DRIFT_KINDS = ("none", "instrument", "population", "gradual", "concept", "referral")
DRIFT_TYPES = {"none": "none", "instrument": "covariate", "population": "label", "gradual": "covariate",
               "concept": "concept", "referral": "covariate"}
_TEXTURE = ("mean texture", "texture error", "worst texture")
_DRIFT_DEFAULTS = {
    "none": {},
    "instrument": {"features": _TEXTURE, "scale": 1.15, "offset": 0.0},
    "population": {"malignant": 0.6},
    "gradual": {"features": _TEXTURE, "scale": 1.3, "start": 0.3, "end": 0.8},
    "concept": {"feature": "worst area", "quantile": 0.75, "balanced": False},
    "referral": {"feature": "worst area", "quantile": 0.3},
}
_DRIFT_MECHANISMS = {
    "none": "No drift: rows drawn from the same population as the reference.",
    "instrument": "Covariate shift from a recalibrated instrument: the features {features} read {scale}x their "
                  "value plus {offset} of their standard deviation. The labels still follow the tumours.",
    "population": "Change of population (label shift): a clinic that sees more advanced cases; a fraction "
                  "{malignant} of the tumours is malignant, against 0.37 in the data. Each class looks as before.",
    "gradual": "Gradual drift in time order: the features {features} are scaled by a factor that stays 1 until a "
               "fraction {start} of the rows, then grows linearly to {scale} at a fraction {end}, and stays there.",
    "concept": "Concept drift: the inputs do not change, the labels do. A revised guideline labels every benign "
               "tumour whose {feature!r} lies above the {quantile} quantile of benign tumours as malignant.",
    "referral": "Covariate shift by selection: a clinic is referred only the tumours whose {feature!r} reads above "
                "the {quantile} quantile of all tumours. Each keeps its own label, so P(y | x) stays; the share "
                "of malignant tumours rises, because larger tumours are more often malignant.",
}


@dataclass
class DriftScenario:
    """Production rows made from the breast cancer data by one documented, seeded drift mechanism.

    ``X`` (rows x 30 features, float64) and ``y`` (0 = malignant, 1 = benign) are numpy arrays; rows are in time
    order. ``params`` holds every parameter of the mechanism (defaults filled in) and ``description`` says what it
    does in words.
    """

    kind: str
    drift_type: str
    X: np.ndarray
    y: np.ndarray
    params: dict
    seed: int
    description: str
    feature_names: list[str]

    def __repr__(self) -> str:
        return f"<DriftScenario {self.kind!r} ({self.drift_type}), {len(self.y)} rows, seed {self.seed}: {self.params}>"


def drift_scenario(kind: str = "none", size: int = 200, seed: int = 0, *, noise: float = 0.02,
                   folder: Path | None = None, **params) -> DriftScenario:
    """``size`` rows of production data under the drift mechanism ``kind`` (one of ``DRIFT_KINDS``).

    The 569 tumours stand for the population. Every scenario, and the reference set (``kind="none"`` with
    another seed), draws its rows independently from it, with replacement, and multiplies each value by
    ``1 + noise * N(0, 1)``: a measurement error of ``noise`` (2 %) that also makes the values continuous, so that
    tests for continuous data hold their level. The mechanism then changes the rows or the labels; its
    parameters are keyword arguments (see ``DRIFT_PARAMETERS``) and are returned in ``params``:

    - ``"instrument"`` (covariate shift): ``features`` (names), ``scale``, ``offset`` (in standard deviations);
    - ``"population"`` (label shift): ``malignant``, the fraction of malignant tumours;
    - ``"gradual"`` (covariate shift growing in time): ``features``, ``scale``, ``start``, ``end`` (fractions of
      the rows between which the scale grows linearly from 1);
    - ``"concept"`` (concept drift): ``feature``, ``quantile``: benign tumours above that quantile of the benign
      tumours' ``feature`` are labelled malignant; the inputs are drawn as without drift. With ``balanced`` as many
      malignant tumours, those with the smallest ``feature``, are labelled benign, so that the share of each label
      stays exactly as drawn: then only the relation between inputs and labels tells the drift.
    - ``"referral"`` (covariate shift by selection on x): ``feature``, ``quantile``: only rows whose measured
      ``feature`` lies above that quantile of all tumours are kept. Labels follow the tumours, so P(y | x) stays
      and P(x | y) changes within each class, while the share of each label moves too.
    """
    if kind not in DRIFT_KINDS:
        raise ValueError(f"unknown drift kind {kind!r}; choose one of {', '.join(DRIFT_KINDS)}")
    unknown = sorted(set(params) - set(_DRIFT_DEFAULTS[kind]))
    if unknown:
        accepted = ", ".join(_DRIFT_DEFAULTS[kind]) or "none"
        raise ValueError(f"{kind!r} takes no parameter {', '.join(unknown)} (it accepts: {accepted})")
    if int(size) < 1:
        raise ValueError(f"size must be a positive number of rows, not {size!r}")
    size = int(size)
    params = {**_DRIFT_DEFAULTS[kind], **params}
    names, population, labels = _drift_population(folder or datasets_dir())
    rng = np.random.default_rng(seed)

    if kind == "population":
        fraction = float(params["malignant"])
        if not 0 <= fraction <= 1:
            raise ValueError(f"malignant is a fraction between 0 and 1, not {fraction!r}")
        malignant = rng.random(size) < fraction
        rows = np.where(malignant, rng.choice(np.flatnonzero(labels == 0), size),
                        rng.choice(np.flatnonzero(labels == 1), size))
    else:
        rows = rng.integers(0, len(labels), size)
    X = population[rows] * (1 + noise * rng.standard_normal((size, len(names))))
    y = labels[rows].copy()

    if kind == "referral":  # draw more rows the same way and keep those whose reading passes the cut
        quantile = float(params["quantile"])
        if not 0 <= quantile < 0.99:
            raise ValueError(f"quantile is a fraction from 0 to 0.99, not {quantile!r}")
        column = _column(names, params["feature"])
        cut = np.quantile(population[:, column], quantile)
        kept_X, kept_y, kept = [], [], 0
        while kept < size:
            rows = rng.integers(0, len(labels), 4 * size)
            candidates = population[rows] * (1 + noise * rng.standard_normal((len(rows), len(names))))
            referred = candidates[:, column] > cut
            kept_X.append(candidates[referred])
            kept_y.append(labels[rows][referred])
            kept += int(referred.sum())
        X, y = np.concatenate(kept_X)[:size], np.concatenate(kept_y)[:size].copy()

    if kind in ("instrument", "gradual"):
        columns = [_column(names, f) for f in params["features"]]
        if kind == "instrument":
            X[:, columns] = X[:, columns] * params["scale"] + params["offset"] * population[:, columns].std(axis=0)
        else:
            t = np.arange(size) / size
            ramp = np.clip((t - params["start"]) / max(params["end"] - params["start"], 1e-9), 0, 1)
            X[:, columns] *= (1 + (params["scale"] - 1) * ramp)[:, None]
    elif kind == "concept":
        column = _column(names, params["feature"])
        cut = np.quantile(population[labels == 1, column], params["quantile"])
        relabelled = np.flatnonzero((y == 1) & (X[:, column] > cut))
        if params["balanced"]:  # as many malignant tumours, the smallest ones, become benign
            malignant = np.flatnonzero(y == 0)
            # never more than there are malignant tumours to swap: then the largest benign ones only
            relabelled = relabelled[np.argsort(-X[relabelled, column])[: len(malignant)]]
            y[malignant[np.argsort(X[malignant, column])[: len(relabelled)]]] = 1
        y[relabelled] = 0

    shown = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    description = _DRIFT_MECHANISMS[kind].format(**shown)
    if shown.get("balanced"):
        description += (" As many malignant tumours, those with the smallest values, are labelled benign: the share "
                        "of malignant tumours does not change.")
    return DriftScenario(kind=kind, drift_type=DRIFT_TYPES[kind], X=X, y=y, params=shown, seed=seed,
                         description=description, feature_names=names)


DRIFT_PARAMETERS = {kind: dict(values) for kind, values in _DRIFT_DEFAULTS.items()}


@functools.lru_cache(maxsize=4)
def _drift_population(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Feature names, features and labels of the data, loaded (and verified) once per folder."""
    data = load_breast_cancer(folder)
    population = data.X.to_numpy(dtype=float)
    population.flags.writeable = False  # shared between calls: nobody may change it
    labels = data.y.to_numpy()
    labels.flags.writeable = False
    return list(data.X.columns), population, labels


def _column(names: list[str], feature: str) -> int:
    if feature not in names:
        raise ValueError(f"unknown feature {feature!r}; the features are the columns of load_breast_cancer().X")
    return names.index(feature)
