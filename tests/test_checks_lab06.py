"""Checks of lab 06: the solutions pass on every seed, typical mistakes fail on every seed with a message that
says what to fix.

The checks of exercises 1 and 3 call the answer 500 to 1,200 times, so some mistakes that fail at once or at
the same place as another run on 3 seeds; at least three mistakes per check run on all 20.
"""

import numpy as np
import pytest
from check_seeds import SEEDS, assert_fails_on_every_seed, assert_passes_on_every_seed
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


def drift_type(x_ref, y_ref, x_new, y_new):  # the solution of exercise 4, as in the notebook
    level = 0.01
    if KSDetector(x_ref, p_val=level).predict(x_new)["data"]["is_drift"]:
        # Label shift changes the mix of the classes, not the classes: compare each class with itself.
        classes = [c for c in np.unique(y_ref) if np.any(y_new == c)]
        within = [KSDetector(x_ref[y_ref == c], p_val=level / len(classes)).predict(x_new[y_new == c])
                  ["data"]["is_drift"] for c in classes]
        return "covariate" if any(within) else "label"
    return "concept" if accuracy_fell(x_ref, y_ref, x_new, y_new, level) else "none"


def accuracy_fell(x_ref, y_ref, x_new, y_new, level):
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    correct_ref = cross_val_predict(classifier, x_ref, y_ref, cv=5) == y_ref
    correct_new = classifier.fit(x_ref, y_ref).predict(x_new) == y_new
    return performance_drift(correct_ref, correct_new, p_val=level)["is_drift"]


SOLUTIONS = {
    "06.ks_detector": KSDetector,
    "06.window_size": choose_window,
    "06.performance_drift": performance_drift,
    "06.drift_type": drift_type,
}


@pytest.mark.parametrize("name", SOLUTIONS)
def test_solutions_pass_on_every_seed(name):
    assert_passes_on_every_seed(name, SOLUTIONS[name])


def test_fdr_detector_passes_too():
    def fdr_always(x_ref, p_val, correction="fdr"):  # FDR whatever is asked: still valid, and more powerful
        return KSDetector(x_ref, p_val, correction="fdr")

    assert_passes_on_every_seed("06.ks_detector", fdr_always, seeds=range(3))


class Statistics(KSDetector):  # the KS statistic where the p-value belongs
    def predict(self, x):
        result = super().predict(x)
        result["data"]["p_val"] = result["data"]["distance"]
        return result


class OneMinusP(KSDetector):
    def predict(self, x):
        result = super().predict(x)
        result["data"]["p_val"] = 1 - result["data"]["p_val"]
        return result


class FixedLevel(KSDetector):  # ignores the p_val argument: the lab's 5 %
    def __init__(self, x_ref, p_val=0.05):
        super().__init__(x_ref, 0.05)


class AlwaysBonferroni(KSDetector):  # accepts correction="fdr" and ignores it
    def __init__(self, x_ref, p_val=0.05, correction="bonferroni"):
        super().__init__(x_ref, p_val)


@pytest.mark.parametrize("answer, words, seeds", [
    (Uncorrected, "correct for multiple testing", SEEDS),
    (AlwaysBonferroni, "Benjamini-Hochberg", SEEDS),
    (Statistics, "not its statistics", SEEDS),
    (FixedLevel, "Use the p_val argument", range(5)),
    (OneMinusP, "not 1 - p", range(3)),
    (MeansOnly, "spread grew", range(3)),
    (NoDict, "return a dict like alibi-detect's", range(3)),
    (OnePValue, "one per feature", range(3)),
    (lambda x_ref, p_val: object(), "no predict method", range(3)),
], ids=["uncorrected", "always bonferroni", "statistics", "fixed level", "1 - p", "means only", "no dict",
        "one p-value", "no predict"])
def test_ks_detector_mistakes_fail_on_every_seed(answer, words, seeds):
    assert_fails_on_every_seed("06.ks_detector", answer, words, seeds=seeds)


def smallest_window(powers, max_delay):
    meeting = [n for n, power in powers.items() if power > 0 and n / power <= max_delay]
    return min(meeting) if meeting else None


def strict_target(powers, max_delay):  # a delay equal to the target meets it
    meeting = [n for n, power in powers.items() if power > 0 and n / power < max_delay]
    return max(meeting) if meeting else None


def fastest_window(powers, max_delay):
    delays = {n: n / power for n, power in powers.items() if power > 0}
    best = min(delays, key=delays.get)
    return best if delays[best] <= max_delay else None


def divides_by_zero(powers, max_delay):
    meeting = [n for n, power in powers.items() if n / power <= max_delay]
    return max(meeting) if meeting else None


def delay_as_product(powers, max_delay):
    meeting = [n for n, power in powers.items() if n * power <= max_delay]
    return max(meeting) if meeting else None


def delay_as_product_without_zero(powers, max_delay):
    meeting = [n for n, power in powers.items() if power > 0 and n * power <= max_delay]
    return max(meeting) if meeting else None


@pytest.mark.parametrize("answer, words", [
    (delay_as_product_without_zero, "exceeds the target"),
    (smallest_window, "largest window"),
    (strict_target, "equals the target"),
    (fastest_window, "largest window"),
    (divides_by_zero, "ZeroDivisionError"),
    (delay_as_product, None),
    (lambda powers, max_delay: max(powers), "exceeds the target"),
    (lambda powers, max_delay: "big", "(an int), or None"),
    (lambda powers, max_delay: choose_window(powers, max_delay) or min(powers), "return None"),
], ids=["n times power, no zero", "smallest", "strict", "fastest", "power 0", "n times power", "largest",
        "a string", "never None"])
def test_window_size_mistakes_fail_on_every_seed(answer, words):
    messages = assert_fails_on_every_seed("06.window_size", answer)
    assert words is None or any(words in m for m in messages), messages[0]


def odds_ratio(a, b, p_val):  # fisher_exact returns (statistic, p-value): the first is not the p-value
    table = [[np.sum(a), len(a) - np.sum(a)], [np.sum(b), len(b) - np.sum(b)]]
    statistic, p = stats.fisher_exact(table, alternative="greater")
    return {"is_drift": int(p < p_val), "p_val": float(statistic)}


def fixed_drop(a, b, p_val):  # a fixed threshold on the drop instead of a test
    drop = np.mean(a) - np.mean(b)
    return {"is_drift": int(drop > 0.05), "p_val": performance_drift(a, b, p_val)["p_val"]}


@pytest.mark.parametrize("answer, words, seeds", [
    (lambda a, b, p_val: performance_drift(a, b, 0.05), "below the level you are given", SEEDS),
    (odds_ratio, "not a p-value", SEEDS),
    (fixed_drop, "below the level you are given", SEEDS),
    (lambda a, b, p_val: {"is_drift": 1, "p_val": 0.0}, "did not change", SEEDS),
    (lambda a, b, p_val: {"is_drift": 0, "p_val": 1.0}, "drops of accuracy", SEEDS),
    (lambda a, b, p_val: performance_drift(a, b, p_val, alternative="two-sided"), "one-sided", range(3)),
    (lambda a, b, p_val: performance_drift(a, b, p_val, alternative="less"), "", range(3)),
    (lambda a, b, p_val: True, "return a dict", range(3)),
], ids=["fixed level", "odds ratio", "fixed drop", "always", "never", "two-sided", "wrong side", "no dict"])
def test_performance_drift_mistakes_fail_on_every_seed(answer, words, seeds):
    assert_fails_on_every_seed("06.performance_drift", answer, words, seeds=seeds)


def label_share_for_label_shift(x_ref, y_ref, x_new, y_new):
    """The lab's answer before its correction: inputs drifted and the label share changed, so label shift."""
    level = 0.01
    if KSDetector(x_ref, p_val=level).predict(x_new)["data"]["is_drift"]:
        counts = [np.bincount(y_ref, minlength=2), np.bincount(y_new, minlength=2)]
        return "label" if stats.fisher_exact(counts)[1] < level else "covariate"
    return "concept" if accuracy_fell(x_ref, y_ref, x_new, y_new, level) else "none"


def pooled_reference(x_ref, y_ref, x_new, y_new):
    """Tests each class of the new rows against the whole reference instead of the same class of it."""
    level = 0.01
    if KSDetector(x_ref, p_val=level).predict(x_new)["data"]["is_drift"]:
        within = [KSDetector(x_ref, p_val=level / 2).predict(x_new[y_new == c])["data"]["is_drift"]
                  for c in np.unique(y_new)]
        return "covariate" if any(within) else "label"
    return "concept" if accuracy_fell(x_ref, y_ref, x_new, y_new, level) else "none"


def fixed_accuracy_threshold(x_ref, y_ref, x_new, y_new):
    """Concept drift whenever the model's accuracy on the new rows is below 90 %: a threshold, not a test."""
    verdict = drift_type(x_ref, y_ref, x_new, y_new)
    if verdict in ("concept", "none"):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_ref, y_ref)
        return "concept" if classifier.score(x_new, y_new) < 0.9 else "none"
    return verdict


def relative_accuracy_drop(x_ref, y_ref, x_new, y_new):
    """Concept drift when the accuracy fell by more than a tenth of the reference's: a threshold again."""
    verdict = drift_type(x_ref, y_ref, x_new, y_new)
    if verdict in ("concept", "none"):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        before = (cross_val_predict(classifier, x_ref, y_ref, cv=5) == y_ref).mean()
        after = classifier.fit(x_ref, y_ref).score(x_new, y_new)
        return "concept" if after < 0.9 * before else "none"
    return verdict


def label_share_for_concept(x_ref, y_ref, x_new, y_new):
    """Never tests accuracy: calls it concept drift whenever the label share moved and the inputs did not."""
    level = 0.01
    share_moved = stats.fisher_exact([np.bincount(y_ref, minlength=2), np.bincount(y_new, minlength=2)])[1] < level
    if KSDetector(x_ref, p_val=level).predict(x_new)["data"]["is_drift"]:
        return "label" if share_moved else "covariate"
    return "concept" if share_moved else "none"


def inputs_only(x_ref, y_ref, x_new, y_new):
    """The input detector alone, blind to concept drift."""
    level = 0.01
    if KSDetector(x_ref, p_val=level).predict(x_new)["data"]["is_drift"]:
        counts = [np.bincount(y_ref, minlength=2), np.bincount(y_new, minlength=2)]
        return "label" if stats.fisher_exact(counts)[1] < level else "covariate"
    return "none"


def every_input_drift_is_covariate(x_ref, y_ref, x_new, y_new):
    verdict = label_share_for_concept(x_ref, y_ref, x_new, y_new)
    return "covariate" if verdict == "label" else verdict


def every_class_must_drift(x_ref, y_ref, x_new, y_new):  # covariate only when each class drifted within
    level = 0.01
    if KSDetector(x_ref, p_val=level).predict(x_new)["data"]["is_drift"]:
        classes = [c for c in np.unique(y_ref) if np.any(y_new == c)]
        within = [KSDetector(x_ref[y_ref == c], p_val=level / len(classes)).predict(x_new[y_new == c])
                  ["data"]["is_drift"] for c in classes]
        return "covariate" if all(within) else "label"
    return "concept" if accuracy_fell(x_ref, y_ref, x_new, y_new, level) else "none"


def classes_it_lacks(x_ref, y_ref, x_new, y_new):  # tests the classes the new batch does not hold
    level = 0.01
    if KSDetector(x_ref, p_val=level).predict(x_new)["data"]["is_drift"]:
        classes = [c for c in np.unique(y_ref) if np.any(y_new != c)]
        within = [KSDetector(x_ref[y_ref == c], p_val=level / len(classes)).predict(x_new[y_new == c])
                  ["data"]["is_drift"] for c in classes]
        return "covariate" if any(within) else "label"
    return "concept" if accuracy_fell(x_ref, y_ref, x_new, y_new, level) else "none"


@pytest.mark.parametrize("answer, words, seeds", [
    (every_class_must_drift, "covariate taken for label", SEEDS),
    (classes_it_lacks, "holds one class only", SEEDS),
    (label_share_for_label_shift, "covariate taken for label", SEEDS),
    (pooled_reference, "label taken for covariate", SEEDS),
    (fixed_accuracy_threshold, "concept taken for none (a small one)", SEEDS),
    (relative_accuracy_drop, "concept taken for none (a small one)", range(5)),  # fails as the one above
    (label_share_for_concept, "only a test of the model's accuracy shows them", SEEDS),
    (inputs_only, "concept taken for none", SEEDS),
    (every_input_drift_is_covariate, "label taken for covariate", SEEDS),
    (lambda *arrays: "none", "classified right", SEEDS),
    (lambda *arrays: "data drift", "return one of", SEEDS),
], ids=["every class must drift", "classes it lacks", "label share for label shift",
        "pooled reference", "accuracy below 0.9", "relative drop", "label share for "
        "concept", "inputs only", "covariate for label", "always none", "not a type"])
def test_drift_type_mistakes_fail_on_every_seed(answer, words, seeds):
    assert_fails_on_every_seed("06.drift_type", answer, words, seeds=seeds)


def test_small_hidden_concept_drifts_cost_little_accuracy_and_a_test_sees_them():
    from labkit.checks import lab06

    for seed in range(3):
        for kind, reference, batch in lab06._hidden_scenarios(np.random.default_rng(seed)):
            if kind == "concept" and batch.params["quantile"] > 0.9:
                accuracy, p = lab06._taught_test(reference, batch)
                assert accuracy >= 0.91 and p < 0.001


def test_hidden_concept_drift_keeps_the_label_share():
    from labkit.data import drift_scenario

    for seed in range(5):
        drifted = drift_scenario("concept", 300, seed, quantile=0.5, balanced=True)
        plain = drift_scenario("none", 300, seed)
        assert np.bincount(drifted.y).tolist() == np.bincount(plain.y).tolist()
        assert (drifted.y != plain.y).mean() > 0.1
        assert np.array_equal(drifted.X, plain.X)


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
