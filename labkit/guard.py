"""Lab 09's pipeline stages in numpy: a classifier of digits, then the detectors of labs 06-08 around it.

One ``Pipeline`` holds every stage the capstone serves, and the runtime ``labs/runtimes/guarded_service.py``
chains them in one MLServer model (MLServer has no inference graphs). The checks of lab 09 run the same code
on a hidden week, so that what the service reports and what the checks expect cannot differ.

Stages, in the order a request meets them:

- **outlier** (lab 07): the mean squared error of an autoencoder's reconstruction; above ``outlier_threshold``
  the row is flagged;
- **adversarial** (lab 08): the KL divergence between the classifier's probabilities on the row and on its
  reconstruction (Vacanti and Klaise, 2020); above ``adversarial_threshold`` the row is flagged;
- **model**: the classifier's probabilities, its class and its confidence (the largest probability);
- **drift** (lab 06): ``DriftWindow`` keeps the last ``size`` rows that no detector flagged and tests them
  against the reference rows with a two-sample Kolmogorov-Smirnov test per feature and a Bonferroni
  correction, as alibi-detect's ``KSDrift`` does (scipy's ``ks_2samp``, ``ks_min_pvalue``; with scipy's default
  method, exact at these sample sizes, where ``KSDrift`` asks for the asymptotic one); the features are the 16
  means of the 2x2-pixel blocks of each image (``block_means``), which are continuous where single pixels are
  mostly 0.

Rows: the classifier and the autoencoder learn from lab 07's train part; its test part is split three ways
(``digit_parts``): ``reference`` rows set the thresholds (quantiles of the scores, as in labs 07 and 08) and
calibrate CBPE; the week's traffic is drawn from ``week`` rows and tomorrow's from ``tomorrow`` rows, which no
detector, no estimator and no model has seen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labkit.adversarial import DenseNet, _activate

N_PIXELS = 64


def block_means(X) -> np.ndarray:
    """The means of the 16 blocks of 2x2 pixels of each 8x8 image (a 4x4 grid), one row per image."""
    images = np.asarray(X, dtype=np.float64).reshape(-1, 8, 8)
    return images.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16)


def _forward(layers, x) -> np.ndarray:
    for kernel, bias, activation in layers:
        x = _activate(activation, x @ kernel + bias)
    return x


def sklearn_layers(mlp) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The dense layers of a fitted scikit-learn ``MLPClassifier`` or ``MLPRegressor``."""
    hidden = {"identity": "linear", "logistic": "sigmoid"}.get(mlp.activation, mlp.activation)
    out = {"identity": "linear", "logistic": "sigmoid"}.get(mlp.out_activation_, mlp.out_activation_)
    n = len(mlp.coefs_)
    return [(np.asarray(k, np.float64), np.asarray(b, np.float64), out if i == n - 1 else hidden)
            for i, (k, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True))]


@dataclass
class Scores:
    """Everything the stages say about a batch of rows, one value per row."""

    probabilities: np.ndarray
    predict: np.ndarray
    confidence: np.ndarray
    outlier_score: np.ndarray
    is_outlier: np.ndarray
    adversarial_score: np.ndarray
    is_adversarial: np.ndarray


class Pipeline:
    """The classifier and its outlier and adversarial detectors (see the module's docstring)."""

    def __init__(self, classifier, autoencoder, outlier_threshold: float, adversarial_threshold: float,
                 reference: np.ndarray):
        self.net = DenseNet(classifier)
        self.autoencoder = [(np.asarray(k, np.float64), np.asarray(b, np.float64), a) for k, b, a in autoencoder]
        self.outlier_threshold = float(outlier_threshold)
        self.adversarial_threshold = float(adversarial_threshold)
        self.reference = np.asarray(reference, dtype=np.float64)  # clean rows for the drift test

    def reconstruct(self, X) -> np.ndarray:
        return np.clip(_forward(self.autoencoder, np.asarray(X, np.float64)), 0, 1)

    def outlier_stage(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Reconstruction error per row, and the reconstruction (the adversarial stage reuses it)."""
        X = np.asarray(X, np.float64)
        recon = self.reconstruct(X)
        return ((X - recon) ** 2).mean(axis=1), recon

    def adversarial_stage(self, probabilities, recon) -> np.ndarray:
        """KL(p(x) || p(reconstruction of x)) per row."""
        q = np.clip(self.net.predict_proba(recon), 1e-12, 1)
        p = np.clip(probabilities, 1e-12, 1)
        return (p * np.log(p / q)).sum(axis=1)

    def score(self, X) -> Scores:
        X = np.asarray(X, np.float64)
        outlier, recon = self.outlier_stage(X)
        probabilities = self.net.predict_proba(X)
        adversarial = self.adversarial_stage(probabilities, recon)
        return Scores(probabilities, probabilities.argmax(axis=1), probabilities.max(axis=1), outlier,
                      outlier > self.outlier_threshold, adversarial, adversarial > self.adversarial_threshold)

    def save(self, folder) -> None:
        """``classifier.npz``, ``autoencoder.npz`` and ``detectors.npz`` (thresholds and reference rows)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, layers in (("classifier", self.net.layers), ("autoencoder", self.autoencoder)):
            arrays = {}
            for i, (kernel, bias, _) in enumerate(layers):
                arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = kernel, bias
            arrays["activations"] = np.array([a for _, _, a in layers])
            np.savez(folder / f"{name}.npz", **arrays)
        np.savez(folder / "detectors.npz", outlier_threshold=self.outlier_threshold,
                 adversarial_threshold=self.adversarial_threshold, reference=self.reference)

    @classmethod
    def load(cls, folder) -> Pipeline:
        from labkit.adversarial import load_dense

        folder = Path(folder)
        with np.load(folder / "detectors.npz", allow_pickle=False) as saved:
            return cls(load_dense(folder / "classifier.npz"), load_dense(folder / "autoencoder.npz"),
                       float(saved["outlier_threshold"]), float(saved["adversarial_threshold"]),
                       saved["reference"])

    def with_classifier(self, classifier) -> Pipeline:
        """The same detectors around another classifier (a retrained or a broken version)."""
        return Pipeline(classifier, self.autoencoder, self.outlier_threshold, self.adversarial_threshold,
                        self.reference)


def ks_statistics(sorted_reference, window) -> np.ndarray:
    """Per feature (column), the two-sample Kolmogorov-Smirnov statistic of ``window`` against the reference (the
    largest gap between the two empirical CDFs, computed as ``scipy.stats.ks_2samp`` does), for all features at
    once. ``sorted_reference``: the reference rows sorted per column (``np.sort(reference, axis=0)``); features
    in [0, 1], as ``block_means`` gives them."""
    window = np.sort(np.asarray(window, np.float64), axis=0)
    (m, k), n = sorted_reference.shape, len(window)
    shift = 4.0 * np.arange(k)  # each feature in its own stretch of the line: one search for all of them
    ref, win = (sorted_reference + shift).ravel(order="F"), (window + shift).ravel(order="F")
    points = np.vstack([sorted_reference, window]) + shift
    below_ref = np.searchsorted(ref, points.ravel(), side="right").reshape(points.shape) - m * np.arange(k)
    below_win = np.searchsorted(win, points.ravel(), side="right").reshape(points.shape) - n * np.arange(k)
    gaps = below_ref / m - below_win / n
    return np.maximum(gaps.max(axis=0), np.clip(-gaps.min(axis=0), 0, 1))


_KS_PVALUES: dict[tuple[int, int, int], float] = {}  # (m, n, statistic * m * n) -> scipy's p-value


def ks_min_pvalue(sorted_reference, window) -> float:
    """The smallest of the per-feature p-values of ``scipy.stats.ks_2samp(reference, window, axis=0)``, with one
    test instead of one per feature: for two fixed sample sizes the p-value only falls as the statistic grows,
    so the smallest p-value is the feature's with the largest statistic. scipy's p-value depends on the two sizes
    and the statistic alone (a multiple of 1 / (m n)), so each is computed once per process."""
    from scipy.stats import ks_2samp

    window = np.asarray(window, np.float64)
    statistics = ks_statistics(sorted_reference, window)
    f = int(np.argmax(statistics))
    m, n = len(sorted_reference), len(window)
    key = (m, n, int(round(statistics[f] * m * n)))
    if key not in _KS_PVALUES:
        if len(_KS_PVALUES) > 100_000:
            _KS_PVALUES.clear()
        _KS_PVALUES[key] = float(ks_2samp(sorted_reference[:, f], window[:, f]).pvalue)
    return _KS_PVALUES[key]


class DriftWindow:
    """A KS drift test on the last ``size`` rows, run every ``every`` rows (the p-value holds in between)."""

    def __init__(self, reference, size: int = 60, every: int = 10):
        self.reference = block_means(reference)
        self._sorted = np.sort(self.reference, axis=0)
        self.size, self.every = int(size), int(every)
        self.rows: list[np.ndarray] = []
        self.seen = 0
        self.p_value = 1.0  # nothing tested yet: no evidence of drift

    def update(self, X) -> float:
        return self.update_features(block_means(X))

    def update_features(self, features) -> float:
        """``update`` on rows already turned into ``block_means``."""
        for row in np.asarray(features, np.float64).reshape(-1, self._sorted.shape[1]):
            self.rows.append(row)
            self.seen += 1
            if len(self.rows) > self.size:
                del self.rows[0]
            if len(self.rows) >= self.size // 2 and self.seen % self.every == 0:
                p = ks_min_pvalue(self._sorted, np.asarray(self.rows))
                self.p_value = float(min(1.0, p * self._sorted.shape[1]))  # Bonferroni over the features
        return self.p_value


PARTS = {"reference": 0.4, "week": 0.4, "tomorrow": 0.2}  # shares of lab 07's test part


@functools.lru_cache(maxsize=1)
def digit_parts() -> dict:
    """Lab 07's test part (digits 0-7 never trained on) split into disjoint parts, stratified by digit, fixed:
    ``reference`` (labelled rows to calibrate on: the detectors' thresholds, CBPE), ``week`` (the week's
    traffic) and ``tomorrow`` (the day after, the canary's traffic). Each is a ``labkit.data.Images``.

    Calibrating and judging on the same rows makes a false-alarm rate of 1 % at a 99th percentile true by
    construction, and an estimate in-sample: the parts keep the two apart, as labs 07 and 08 do.
    """
    from sklearn.model_selection import train_test_split

    from labkit.data import Images, load_digits

    test = load_digits("test")
    rows = np.arange(len(test))
    reference, rest = train_test_split(rows, train_size=PARTS["reference"], random_state=0, stratify=test.labels)
    share = PARTS["week"] / (PARTS["week"] + PARTS["tomorrow"])
    week, tomorrow = train_test_split(rest, train_size=share, random_state=0, stratify=test.labels[rest])
    return {name: Images(test.images[np.sort(part)], test.labels[np.sort(part)], test.card)
            for name, part in (("reference", reference), ("week", week), ("tomorrow", tomorrow))}


def reference_rows():
    """The labelled reference rows (``digit_parts()["reference"]``): thresholds and CBPE are fitted on them."""
    return digit_parts()["reference"]


def fit_pipeline(seed: int = 0, *, hidden: int = 32) -> Pipeline:
    """Fit the classifier (digits 0-7, lab 07's split) and the autoencoder with scikit-learn, a few seconds.

    Thresholds: the 99th percentile of each score on the ``reference`` rows (clean, held out from training,
    ``digit_parts``); the drift test's reference: the training rows. The week's traffic is drawn from other rows.
    The fit is done once per process (the checks fit the same pipeline); each call returns a new ``Pipeline``
    with its own copies of the arrays.
    """
    classifier, autoencoder, outlier, adversarial, reference = _fit(seed, hidden)
    copy = [(k.copy(), b.copy(), a) for k, b, a in classifier], [(k.copy(), b.copy(), a) for k, b, a in autoencoder]
    return Pipeline(*copy, outlier, adversarial, reference.copy())


@functools.lru_cache(maxsize=2)
def _fit(seed: int, hidden: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from labkit.data import load_digits

    train, reference = load_digits("train"), reference_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=300,
                                   random_state=seed).fit(train.X, train.labels)
        # A denoising autoencoder: it learns to undo small changes of every pixel, so that an attack's changes
        # vanish from the reconstruction and the classifier's answer on it differs from its answer on the input.
        rng = np.random.default_rng(seed)
        noisy = np.clip(train.X + 0.2 * rng.choice([-1.0, 1.0], train.X.shape), 0, 1)
        autoencoder = MLPRegressor(hidden_layer_sizes=(32,), activation="relu", max_iter=300,
                                   random_state=seed).fit(np.r_[train.X, noisy], np.r_[train.X, train.X])
    pipeline = Pipeline(sklearn_layers(classifier), sklearn_layers(autoencoder), np.inf, np.inf, train.X)
    scores = pipeline.score(reference.X)
    return (pipeline.net.layers, pipeline.autoencoder, float(np.quantile(scores.outlier_score, 0.99)),
            float(np.quantile(scores.adversarial_score, 0.99)), pipeline.reference)


def fit_classifier(X, y, seed: int = 0, *, hidden: int = 32) -> list:
    """A classifier of the same shape fitted on other rows (to retrain on recent labelled data)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=300,
                              random_state=seed).fit(np.asarray(X), np.asarray(y))
    if len(model.classes_) != 8 or list(model.classes_) != list(range(8)):
        raise ValueError(f"the rows must hold every class 0-7, not {list(model.classes_)}")
    return sklearn_layers(model)


STAGES = ("outlier", "model", "adversarial", "drift")  # the order ``chain`` runs them


class ServerBug(RuntimeError):
    """What the bad deploy's new preprocessing raises on rows with little ink (the server answers 500)."""


def chain(pipeline: Pipeline, drift: DriftWindow, rows, *, fail_below_ink: float | None = None) -> dict:
    """Run one request's rows through every stage, in order, and time each stage.

    Returns plain values per row (``predict``, ``confidence``, ``outlier_score``, ``is_outlier``,
    ``adversarial_score``, ``is_adversarial``), the window's ``drift_p``, and ``stage_ms`` per stage.
    ``fail_below_ink`` is the bad deploy's bug: rows with less total ink make it raise ``ServerBug``.
    Both the served runtime (``labs/runtimes/guarded_service.py``) and the checks call this.
    """
    import time

    rows = np.asarray(rows, np.float64)
    if fail_below_ink is not None and (rows.sum(axis=1) < fail_below_ink).any():
        raise ServerBug("division by zero in the new preprocessing (a row with too little ink)")
    stage_ms = {}
    start = time.perf_counter()
    outlier, recon = pipeline.outlier_stage(rows)
    stage_ms["outlier"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    probabilities = pipeline.net.predict_proba(rows)
    stage_ms["model"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    adversarial = pipeline.adversarial_stage(probabilities, recon)
    stage_ms["adversarial"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    clean = (outlier <= pipeline.outlier_threshold) & (adversarial <= pipeline.adversarial_threshold)
    drift_p = drift.update(rows[clean])  # flagged rows stay out of the drift test: a burst is not drift
    stage_ms["drift"] = (time.perf_counter() - start) * 1000
    return {
        "predict": probabilities.argmax(axis=1).tolist(),
        "confidence": probabilities.max(axis=1).tolist(),
        "outlier_score": outlier.tolist(),
        "is_outlier": (outlier > pipeline.outlier_threshold).tolist(),
        "adversarial_score": adversarial.tolist(),
        "is_adversarial": (adversarial > pipeline.adversarial_threshold).tolist(),
        "drift_p": drift_p,
        "stage_ms": stage_ms,
    }
