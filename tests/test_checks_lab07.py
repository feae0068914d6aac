"""Checks of lab 07: right answers pass on every seed, typical wrong ones fail on every seed with the right
message, placeholders are not attempted.

A PCA, a linear autoencoder with the interface of the lab's tf.keras VAE (``encoder.predict`` returning the
code's mean and log-variance, ``decoder.predict``), stands in for the VAE here, which keeps TensorFlow out of
these tests; the solution notebook runs the check on the real VAE under nbval, and tests/test_grading.py through
the grader's proxies.
"""

import json
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
from scipy.stats import chi2
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed

from labkit.checks import check
from labkit.data import load_digits

RUNTIME = Path(__file__).resolve().parent.parent / "labs" / "runtimes" / "outlier_guard.py"


# -- exercise 1 -------------------------------------------------------------------------------------


LAB_FOLDS = KFold(5, shuffle=True, random_state=0)


class Mahalanobis:  # the solution of exercise 1: the threshold from out-of-fold distances
    def __init__(self, X_ref, fpr=0.05, folds=LAB_FOLDS):
        X_ref = np.asarray(X_ref, dtype=float)
        held_out = np.empty(len(X_ref))
        for learn, scored in folds.split(X_ref):
            self.mean = X_ref[learn].mean(axis=0)
            self.inverse = np.linalg.pinv(np.cov(X_ref[learn], rowvar=False))
            held_out[scored] = self.score(X_ref[scored])
        self.threshold = float(np.quantile(held_out, 1 - fpr))
        self.mean = X_ref.mean(axis=0)
        self.inverse = np.linalg.pinv(np.cov(X_ref, rowvar=False))

    def score(self, X):
        centred = np.asarray(X, dtype=float) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.inverse, centred))

    def predict(self, X):
        scores = self.score(X)
        return {"data": {"instance_score": scores, "is_outlier": scores > self.threshold}, "meta": {}}


class ZScore(Mahalanobis):
    """One feature at a time: blind to broken correlations."""

    def score(self, X):
        spread = np.sqrt(np.diag(np.linalg.pinv(self.inverse)))
        return np.abs((np.asarray(X) - self.mean) / spread).max(axis=1)


class ChiSquareThreshold(Mahalanobis):
    """The textbook threshold, right only for Gaussian data."""

    def __init__(self, X_ref, fpr=0.05):
        super().__init__(X_ref, fpr)
        self.threshold = float(np.sqrt(chi2.ppf(1 - fpr, np.shape(X_ref)[1])))


class FlagsAsList(Mahalanobis):
    def predict(self, X):
        scores = self.score(X)
        return {"data": {"instance_score": scores.tolist(), "is_outlier": (scores > self.threshold).tolist()}}


class NoDict(Mahalanobis):
    def predict(self, X):
        return self.score(X) > self.threshold


class Placeholder:
    def __init__(self, X_ref, fpr=0.05):
        raise NotImplementedError("Replace this line with your code")


def test_mahalanobis_passes():
    assert_passes_on_every_seed("07.mahalanobis", Mahalanobis)


@pytest.mark.parametrize("folds", [KFold(5, shuffle=True, random_state=7), KFold(10, shuffle=True, random_state=0)],
                         ids=["other split", "10 folds"])
def test_other_held_out_splits_pass_too(folds):
    assert_passes_on_every_seed("07.mahalanobis", lambda X_ref, fpr: Mahalanobis(X_ref, fpr, folds), seeds=range(5))


class OwnRowsThreshold(Mahalanobis):
    """The lab before its correction: the threshold from the distances of the rows the detector learned from."""

    def __init__(self, X_ref, fpr=0.05):
        super().__init__(X_ref, fpr)
        self.threshold = float(np.quantile(self.score(np.asarray(X_ref, dtype=float)), 1 - fpr))


class FixedRate(Mahalanobis):
    """Ignores the fpr argument: the 5 % of the lab's example."""

    def __init__(self, X_ref, fpr=0.05):
        super().__init__(X_ref, 0.05)


class QuantileOfFpr(Mahalanobis):
    """The fpr quantile instead of the 1 - fpr one: flags nearly everything."""

    def __init__(self, X_ref, fpr=0.05):
        super().__init__(X_ref, fpr)
        self.threshold = float(np.quantile(self.score(X_ref), fpr))


class DiagonalOnly(Mahalanobis):
    """Each feature divided by its variance: the covariances left out."""

    def __init__(self, X_ref, fpr=0.05):
        X_ref = np.asarray(X_ref, dtype=float)
        self.mean, self.inverse = X_ref.mean(axis=0), np.diag(1 / X_ref.var(axis=0))
        self.threshold = float(np.quantile(self.score(X_ref), 1 - fpr))


class NoScoreMethod:
    """Right, but its distance is called distance(), and the lab's next cells call score()."""

    def __init__(self, X_ref, fpr=0.05):
        self.fitted = Mahalanobis(X_ref, fpr)
        self.threshold = self.fitted.threshold

    def distance(self, X):
        return self.fitted.score(X)

    def predict(self, X):
        scores = self.distance(X)
        return {"data": {"instance_score": scores, "is_outlier": scores > self.threshold}, "meta": {}}


class NoThreshold(Mahalanobis):
    def __init__(self, X_ref, fpr=0.05):
        super().__init__(X_ref, fpr)
        self.cut = self.threshold
        del self.threshold

    def predict(self, X):
        scores = self.score(X)
        return {"data": {"instance_score": scores, "is_outlier": scores > self.cut}, "meta": {}}


class LastFoldFit(Mahalanobis):
    """Scores new rows with the fit of the last fold (four fifths of the rows): the final fit forgotten."""

    def __init__(self, X_ref, fpr=0.05):
        super().__init__(X_ref, fpr)
        X_ref = np.asarray(X_ref, dtype=float)
        learn, _ = list(LAB_FOLDS.split(X_ref))[-1]
        self.mean = X_ref[learn].mean(axis=0)
        self.inverse = np.linalg.pinv(np.cov(X_ref[learn], rowvar=False))


class SquaredWithBiasedCovariance(Mahalanobis):
    """The squared distance with a ddof-0 covariance and its threshold: another right answer."""

    def __init__(self, X_ref, fpr=0.05):
        super().__init__(X_ref, fpr)
        n = len(X_ref)
        self.inverse = self.inverse * (n - 1) / n
        self.threshold = float(np.quantile(self._held_out_squared(np.asarray(X_ref, dtype=float)), 1 - fpr))

    def _held_out_squared(self, X_ref):
        held_out = np.empty(len(X_ref))
        for learn, scored in LAB_FOLDS.split(X_ref):
            centred = X_ref[scored] - X_ref[learn].mean(axis=0)
            inverse = np.linalg.pinv(np.cov(X_ref[learn], rowvar=False, ddof=0))
            held_out[scored] = np.einsum("ij,jk,ik->i", centred, inverse, centred)
        return held_out

    def score(self, X):
        return super().score(X) ** 2


def test_a_squared_distance_with_a_biased_covariance_passes_too():
    assert_passes_on_every_seed("07.mahalanobis", SquaredWithBiasedCovariance, seeds=range(3))


@pytest.mark.parametrize("answer, words", [
    (LastFoldFit, "fit of every reference row"),
    (OwnRowsThreshold, "not on the reference rows' own distances"),
    (ZScore, "inverse covariance"),
    (ChiSquareThreshold, "new clean rows"),
    (FixedRate, "new clean rows"),
    (QuantileOfFpr, "new clean rows"),
    (DiagonalOnly, "inverse covariance"),
    (NoScoreMethod, "score method"),
    (NoThreshold, "threshold attribute"),
], ids=["last fold's fit", "own rows", "z-score", "chi-square threshold", "fixed rate", "fpr quantile", "diagonal",
        "no score",
        "no threshold"])
def test_mahalanobis_mistakes_fail_on_every_seed(answer, words):
    assert_fails_on_every_seed("07.mahalanobis", answer, words)


def test_mahalanobis_accepts_plain_lists():
    assert check("07.mahalanobis", FlagsAsList, seed=1).passed


@pytest.mark.parametrize("answer, words", [
    (ZScore, "inverse covariance"),
    (ChiSquareThreshold, "new clean rows"),
    (NoDict, "return a dict like alibi-detect's"),
    (lambda X, fpr: 3, "returned 3"),
    ("MahalanobisDetector", "should be a function"),
], ids=["z-score", "chi-square threshold", "no dict", "not a detector", "a string"])
def test_mahalanobis_fails_wrong_answers(answer, words):
    for seed in range(3):
        feedback = check("07.mahalanobis", answer, seed=seed)
        assert feedback.status == "failed"
        assert words in feedback.message, feedback.message


def test_mahalanobis_placeholder_is_not_attempted():
    assert check("07.mahalanobis", Placeholder).status == "not_attempted"
    assert check("07.mahalanobis").status == "not_attempted"


# -- exercise 2 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pca():
    return PCA(8, random_state=0).fit(load_digits("train").X)


class Net:
    """A network with Keras' predict(x, verbose=0)."""

    def __init__(self, function):
        self.function = function

    def predict(self, x, verbose=0):
        return self.function(np.asarray(x, dtype=float))


class LinearVAE:
    """A PCA as the lab's VAE: encoder.predict gives [mean code, log-variance], decoder.predict the image."""

    def __init__(self, pca):
        self.encoder = Net(lambda x: [pca.transform(x), np.full((len(x), pca.n_components_), -2.0)])
        self.decoder = Net(pca.inverse_transform)


@pytest.fixture(scope="module")
def vae(pca):
    return LinearVAE(pca)


def state():
    """What the notebook's run makes and the VAE score's solution uses (for tests/mutants.py): a linear VAE and
    its deterministic reconstruction from the mean code, as the notebook's ``reconstruct``."""
    vae = LinearVAE(PCA(8, random_state=0).fit(load_digits("train").X))

    def reconstruct(rows):
        return vae.decoder.predict(vae.encoder.predict(np.asarray(rows, dtype=float))[0])

    return {"vae": vae, "reconstruct": reconstruct}


def pca_scorer(pca):
    def outlier_score(rows):
        rows = np.asarray(rows)
        return ((rows - pca.inverse_transform(pca.transform(rows))) ** 2).mean(axis=1)

    return outlier_score


def vae_scorer(vae, sample=False, error=lambda d: d ** 2, code=0):
    """The solution, and mistakes: a random code, another error, the log-variance as the code."""
    def outlier_score(rows):
        rows = np.asarray(rows, dtype=float)
        z_mean, z_log_var = vae.encoder.predict(rows)
        z = [z_mean, z_log_var][code]
        if sample:
            z = z_mean + np.exp(0.5 * z_log_var) * np.random.default_rng().normal(size=z_mean.shape)
        return error(rows - vae.decoder.predict(z)).mean(axis=1)

    return outlier_score


def test_vae_score_passes_on_every_seed(vae):
    assert_passes_on_every_seed("07.vae_score", (vae_scorer(vae), vae))
    feedback = check("07.vae_score", (vae_scorer(vae), vae), seed=0)
    assert "noise" in feedback.message and "photo" in feedback.message


def test_a_sum_over_pixels_is_the_same_score(vae):
    def summed(rows):
        return 64 * vae_scorer(vae)(rows)

    assert check("07.vae_score", (summed, vae), seed=1).passed


def test_vae_score_mistakes_fail_on_every_seed(vae):
    other_pca = PCA(16, random_state=0).fit(load_digits("train").X)
    score = vae_scorer(vae)
    cases = {
        "not your VAE's reconstruction error": pca_scorer(other_pca),  # another detector, not the VAE
        "second call": vae_scorer(vae, sample=True),  # a random code
        "not your vae's": vae_scorer(vae, error=np.abs),  # absolute, not squared, differences
        "higher scores must": lambda rows: -score(rows),  # upside down
        "": lambda rows: np.asarray(rows).mean(axis=1),  # ink, not shape: a low AUC or not the VAE's error
    }
    for words, answer in cases.items():
        messages = assert_fails_on_every_seed("07.vae_score", (answer, vae))
        assert all(words.lower() in m.lower() for m in messages), (words, messages[0])


def test_vae_score_odd_answers_fail(vae, pca):
    score = vae_scorer(vae)
    cases = {
        "(outlier_score, vae)": score,  # the score alone, without the VAE
        "expected 500 scores": (lambda rows: score(rows)[:10], vae),
        "NaN or infinite": (lambda rows: np.full(len(rows), np.nan), vae),
        "one number per row": (lambda rows: "high", vae),
        "trained VAE": (score, pca),  # not a VAE
        "should be a function": ("outlier_score", vae),
    }
    for words, answer in cases.items():
        feedback = check("07.vae_score", answer, seed=4)
        assert feedback.status == "failed", words
        assert words.lower() in feedback.message.lower(), feedback.message


def test_vae_score_placeholder_is_not_attempted(vae):
    def outlier_score(rows):
        raise NotImplementedError

    assert check("07.vae_score", (outlier_score, vae)).status == "not_attempted"
    assert check("07.vae_score").status == "not_attempted"


# -- exercise 3 -------------------------------------------------------------------------------------


def brute_force(clean, outliers, cost_alarm, cost_miss, outlier_rate):
    candidates = np.r_[-np.inf, clean, outliers]
    costs = [(1 - outlier_rate) * (clean > t).mean() * cost_alarm + outlier_rate * (outliers <= t).mean() * cost_miss
             for t in candidates]
    return candidates[int(np.argmin(costs))]


def vectorised(clean_scores, outlier_scores, cost_alarm, cost_miss, outlier_rate):
    """The notebook's solution."""
    clean, outliers = np.sort(clean_scores), np.sort(outlier_scores)
    candidates = np.r_[-np.inf, clean, outliers]
    fpr = 1 - np.searchsorted(clean, candidates, side="right") / len(clean)
    missed = np.searchsorted(outliers, candidates, side="right") / len(outliers)
    cost = (1 - outlier_rate) * fpr * cost_alarm + outlier_rate * missed * cost_miss
    return float(candidates[np.argmin(cost)])


@pytest.mark.parametrize("answer", [brute_force, vectorised])
def test_best_threshold_passes(answer):
    assert_passes_on_every_seed("07.best_threshold", answer)


def ignores_the_rate(clean, outliers, cost_alarm, cost_miss, outlier_rate):
    return brute_force(clean, outliers, cost_alarm, cost_miss, 0.5)  # both mistakes weighed alike


def swaps_the_costs(clean, outliers, cost_alarm, cost_miss, outlier_rate):
    return brute_force(clean, outliers, cost_miss, cost_alarm, outlier_rate)


def never_flags_everything(clean, outliers, cost_alarm, cost_miss, outlier_rate):  # no candidate below all
    candidates = np.r_[clean, outliers]
    costs = [(1 - outlier_rate) * (clean > t).mean() * cost_alarm + outlier_rate * (outliers <= t).mean() * cost_miss
             for t in candidates]
    return candidates[int(np.argmin(costs))]


def misses_below_only(clean, outliers, cost_alarm, cost_miss, outlier_rate):  # an outlier AT t counted as caught
    candidates = np.r_[-np.inf, clean, outliers]
    costs = [(1 - outlier_rate) * (clean > t).mean() * cost_alarm + outlier_rate * (outliers < t).mean() * cost_miss
             for t in candidates]
    return candidates[int(np.argmin(costs))]


def alarms_at_or_above(clean, outliers, cost_alarm, cost_miss, outlier_rate):  # a clean row AT t counted as flagged
    candidates = np.r_[-np.inf, clean, outliers]
    costs = [(1 - outlier_rate) * (clean >= t).mean() * cost_alarm + outlier_rate * (outliers <= t).mean() * cost_miss
             for t in candidates]
    return candidates[int(np.argmin(costs))]


def rate_added(clean, outliers, cost_alarm, cost_miss, outlier_rate):  # (1 + rate) for the clean share
    candidates = np.r_[-np.inf, clean, outliers]
    costs = [(1 + outlier_rate) * (clean > t).mean() * cost_alarm + outlier_rate * (outliers <= t).mean() * cost_miss
             for t in candidates]
    return candidates[int(np.argmin(costs))]


@pytest.mark.parametrize("answer", [
    lambda c, o, ca, cm, r: float(np.quantile(c, 0.95)),  # a fixed FPR ignores the costs
    lambda c, o, ca, cm, r: float(np.median(np.r_[c, o])),
    ignores_the_rate,
    swaps_the_costs,
    never_flags_everything,
    misses_below_only,
    alarms_at_or_above,
    rate_added,
], ids=["95th percentile", "median", "ignores the rate", "swaps the costs", "never flags everything",
        "misses below only", "alarms at or above", "rate added"])
def test_best_threshold_mistakes_fail_on_every_seed(answer):
    assert_fails_on_every_seed("07.best_threshold", answer, "costs")


@pytest.mark.parametrize("answer, words", [
    (lambda c, o, ca, cm, r: float(np.quantile(c, 0.95)), "costs"),  # a fixed FPR ignores the costs
    (lambda c, o, ca, cm, r: float(np.median(np.r_[c, o])), "costs"),
    (lambda c, o, ca, cm, r: float("nan"), "NaN"),
    (lambda c, o, ca, cm, r: [1.0, 2.0], "should be a number"),
], ids=["95th percentile", "median", "nan", "list"])
def test_best_threshold_fails_wrong_answers(answer, words):
    feedback = check("07.best_threshold", answer, seed=0)
    assert feedback.status == "failed"
    assert words in feedback.message, feedback.message


# -- exercise 4 -------------------------------------------------------------------------------------


def write_guard(folder: Path, pca, threshold=None, implementation="outlier_guard.OutlierGuard", npz=True,
                name="digits"):
    """A model folder for the outlier_guard runtime, with PCA as a linear autoencoder."""
    train = load_digits("train")
    folder.mkdir(parents=True)
    shutil.copy(RUNTIME, folder)
    joblib.dump(LogisticRegression(max_iter=2000).fit(train.X, train.labels), folder / "classifier.joblib")
    if npz:
        components, mean = pca.components_, pca.mean_
        np.savez(folder / "autoencoder.npz", kernel_0=components.T, bias_0=-mean @ components.T,
                 kernel_1=components, bias_1=mean, activations=np.array(["linear", "linear"]))
    if threshold is None:
        rows = load_digits("test").X
        threshold = float(np.quantile(pca_scorer(pca)(rows), 0.95))
    settings = {"implementation": implementation,
                "parameters": {"uri": "./classifier.joblib", "extra": {"threshold": threshold}}}
    (folder / "model-settings.json").write_text(json.dumps({"name": name, **settings} if name else settings))
    return str(folder)


@pytest.mark.parametrize("name", ["digits", None])  # without a name, MLServer names the model after its folder
def test_runtime_passes_a_working_guard(tmp_path, pca, name):
    feedback = check("07.runtime", write_guard(tmp_path / "guard_v1", pca, name=name), seed=0)
    assert feedback.status == "passed", feedback.message
    assert "hidden outliers flagged" in feedback.message


# Serving costs seconds per call, so the wrong guards run on 2 seeds, not 20: every call sends clean digits and
# all three kinds of outlier (40 each), so what a guard gets wrong shows on every seed, whatever the seed draws.
SERVER_SEEDS = range(2)


def test_runtime_fails_a_threshold_too_high(tmp_path, pca):
    folder = write_guard(tmp_path / "digits", pca, threshold=1e9)
    assert_fails_on_every_seed("07.runtime", folder, "flags only 0%", seeds=SERVER_SEEDS)


def test_runtime_fails_a_threshold_too_low(tmp_path, pca):
    folder = write_guard(tmp_path / "digits", pca, threshold=0.0)  # every image is an outlier
    assert_fails_on_every_seed("07.runtime", folder, "clean test digits as outliers", seeds=SERVER_SEEDS)


def test_runtime_fails_the_plain_sklearn_runtime(tmp_path, pca):
    folder = write_guard(tmp_path / "digits", pca, implementation="mlserver_sklearn.SKLearnModel")
    feedback = check("07.runtime", folder, seed=0)
    assert feedback.status == "failed"
    assert "lacks the outputs" in feedback.message and "is_outlier" in feedback.message


def test_runtime_fails_a_folder_that_does_not_load(tmp_path, pca):
    feedback = check("07.runtime", write_guard(tmp_path / "digits", pca, npz=False), seed=0)
    assert feedback.status == "failed"
    assert "could not load the model" in feedback.message and "autoencoder.npz" in feedback.message


@pytest.mark.parametrize("answer, words", [
    (None, "as a string"),
    (42, "as a string"),
    ("", "not a model folder"),
    ("/no/such/folder", "not a model folder"),
    ("bad\x00path", "not a model folder"),
])
def test_runtime_fails_what_is_not_a_model_folder(answer, words):
    feedback = check("07.runtime", answer)
    assert feedback.status == "failed"
    assert words in feedback.message, feedback.message


def test_runtime_fails_broken_settings(tmp_path):
    (tmp_path / "model-settings.json").write_text("{not json")
    feedback = check("07.runtime", str(tmp_path))
    assert feedback.status == "failed" and "not a valid JSON object" in feedback.message


def test_runtime_placeholder_is_not_attempted():
    assert check("07.runtime", ...).status == "not_attempted"
