"""Checks of lab 06: the solutions pass, typical mistakes fail with a message that says what to fix."""

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from labkit import check


class KSDetector:  # the solution of exercise 1
    def __init__(self, x_ref, p_val=0.05, correction="bonferroni"):
        self.x_ref, self.p_val, self.correction = np.asarray(x_ref, dtype=float), p_val, correction

    def predict(self, x):
        distance, p_vals = stats.ks_2samp(self.x_ref, np.asarray(x, dtype=float), axis=0)
        d = len(p_vals)
        if self.correction == "bonferroni":
            threshold = self.p_val / d
        else:
            ordered = np.sort(p_vals)
            under = ordered <= self.p_val * np.arange(1, d + 1) / d
            threshold = ordered[under].max() if under.any() else 0.0
        return {"data": {"is_drift": int((p_vals <= threshold).any()) if threshold > 0 else 0, "p_val": p_vals,
                         "distance": distance, "threshold": threshold}, "meta": {}}


class Uncorrected(KSDetector):
    def predict(self, x):
        result = super().predict(x)
        result["data"]["is_drift"] = int((result["data"]["p_val"] < self.p_val).any())
        return result


class MeansOnly(KSDetector):  # a t-test sees a moved mean, not a wider spread
    def predict(self, x):
        p_vals = stats.ttest_ind(self.x_ref, x, axis=0).pvalue
        return {"data": {"is_drift": int((p_vals < self.p_val / len(p_vals)).any()), "p_val": p_vals}}


class NoDict(KSDetector):
    def predict(self, x):
        return super().predict(x)["data"]["is_drift"]


class OnePValue(KSDetector):
    def predict(self, x):
        result = super().predict(x)
        result["data"]["p_val"] = float(result["data"]["p_val"].min())
        return result


def choose_window(powers, max_delay):
    meeting = [n for n, power in powers.items() if power > 0 and n / power <= max_delay]
    return max(meeting) if meeting else None


def performance_drift(correct_ref, correct_new, p_val=0.05, alternative="greater"):
    correct_ref, correct_new = np.asarray(correct_ref, dtype=int), np.asarray(correct_new, dtype=int)
    table = [[correct_ref.sum(), len(correct_ref) - correct_ref.sum()],
             [correct_new.sum(), len(correct_new) - correct_new.sum()]]
    p = stats.fisher_exact(table, alternative=alternative)[1]
    return {"is_drift": int(p < p_val), "p_val": float(p)}


def drift_type(x_ref, y_ref, x_new, y_new):
    level = 0.01
    if KSDetector(x_ref, p_val=level).predict(x_new)["data"]["is_drift"]:
        counts = [np.bincount(y_ref, minlength=2), np.bincount(y_new, minlength=2)]
        return "label" if stats.fisher_exact(counts)[1] < level else "covariate"
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    correct_ref = cross_val_predict(classifier, x_ref, y_ref, cv=5) == y_ref
    correct_new = classifier.fit(x_ref, y_ref).predict(x_new) == y_new
    return "concept" if performance_drift(correct_ref, correct_new, p_val=level)["is_drift"] else "none"


SOLUTIONS = {
    "06.ks_detector": KSDetector,
    "06.window_size": choose_window,
    "06.performance_drift": performance_drift,
    "06.drift_type": drift_type,
}


@pytest.mark.parametrize("name", SOLUTIONS)
@pytest.mark.parametrize("seed", [1, 2])
def test_solutions_pass(name, seed):
    feedback = check(name, SOLUTIONS[name], seed=seed)
    assert feedback.status == "passed", feedback.message
    assert feedback.points == feedback.max_points


def test_fdr_detector_passes_too():
    feedback = check("06.ks_detector", lambda x_ref, p_val: KSDetector(x_ref, p_val, correction="fdr"), seed=3)
    assert feedback.passed, feedback.message


@pytest.mark.parametrize("answer, words", [
    (Uncorrected, "correct for multiple testing"),
    (MeansOnly, "spread grew"),
    (NoDict, "return a dict like alibi-detect's"),
    (OnePValue, "one per feature"),
    (lambda x_ref, p_val: object(), "no predict method"),
])
def test_ks_detector_mistakes(answer, words):
    feedback = check("06.ks_detector", answer, seed=7)
    assert feedback.status == "failed"
    assert words in feedback.message


def smallest_window(powers, max_delay):
    meeting = [n for n, power in powers.items() if power > 0 and n / power <= max_delay]
    return min(meeting) if meeting else None


@pytest.mark.parametrize("answer, words", [
    (smallest_window, "largest window"),
    (lambda powers, max_delay: max(powers), "exceeds the target"),
    (lambda powers, max_delay: "big", "(an int), or None"),
    (lambda powers, max_delay: choose_window(powers, max_delay) or min(powers), "return None"),
])
def test_window_size_mistakes(answer, words):
    feedback = check("06.window_size", answer, seed=4)
    assert feedback.status == "failed"
    assert words in feedback.message


@pytest.mark.parametrize("answer, words", [
    (lambda a, b, p_val: performance_drift(a, b, p_val, alternative="two-sided"), "one-sided"),
    (lambda a, b, p_val: {"is_drift": 1, "p_val": 0.0}, "did not change"),
    (lambda a, b, p_val: {"is_drift": 0, "p_val": 1.0}, "drops of accuracy"),
    (lambda a, b, p_val: True, "return a dict"),
])
def test_performance_drift_mistakes(answer, words):
    feedback = check("06.performance_drift", answer, seed=5)
    assert feedback.status == "failed"
    assert words in feedback.message


@pytest.mark.parametrize("answer, words", [
    (lambda *arrays: "none", "classified right"),
    (lambda *arrays: "data drift", "return one of"),
])
def test_drift_type_mistakes(answer, words):
    feedback = check("06.drift_type", answer, seed=6)
    assert feedback.status == "failed"
    assert words in feedback.message


@pytest.mark.parametrize("name", SOLUTIONS)
def test_placeholders_are_not_attempted(name):
    def placeholder(*args, **kwargs):
        raise NotImplementedError("Replace this line with your code")

    class Placeholder:
        def __init__(self, *args, **kwargs):
            raise NotImplementedError

    assert check(name, ...).status == "not_attempted"
    assert check(name, Placeholder if name == "06.ks_detector" else placeholder).status == "not_attempted"


@pytest.mark.parametrize("name", SOLUTIONS)
@pytest.mark.parametrize("answer", [None, 3, "KSDetector", [1, 2], np.zeros(3), {"is_drift": 1}])
def test_odd_answers_fail_with_a_message(name, answer):
    feedback = check(name, answer)
    assert feedback.status == "failed" and "should be a function" in feedback.message


def test_hidden_cases_change_with_the_seed():
    messages = {check("06.ks_detector", KSDetector, seed=s).message for s in range(3)}
    assert len(messages) > 1
