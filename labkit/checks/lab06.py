"""Checks of lab 06, "Detect drift".

They test statistical properties on data drawn afresh from ``rng``: a detector's false positive rate over
hundreds of windows without drift and its power on shifted windows, a choice of window size against a stated
delay, and the type of drift in hidden scenarios.
"""

import dataclasses
import math

import numpy as np
from threadpoolctl import threadpool_limits

from labkit.checks import Fail, call, expect_function, register, safe_repr
from labkit.data import drift_scenario

LEVEL = 0.05
SLACK = 0.02  # allowed excess of the false positive rate over the level
DRIFT_TYPES = ("none", "covariate", "label", "concept")


def _correlated_rows(rng, n, loc, scale, mix, skewed):
    """Rows of correlated features (one shared factor), some of them skewed (log-normal)."""
    d = len(loc)
    shared = rng.standard_normal((n, 1))
    z = np.sqrt(mix) * shared + np.sqrt(1 - mix) * rng.standard_normal((n, d))
    z[:, skewed] = np.exp(z[:, skewed])
    return loc + scale * z


def _verdict(result, call):
    """``(is_drift, p_values)`` read from a detector's ``predict`` result, as plain data."""
    try:
        data = dict(dict(result)["data"])
    except (TypeError, ValueError, KeyError):
        raise Fail(f"{call} returned {safe_repr(result)}; return a dict like alibi-detect's: "
                   "{'data': {'is_drift': 0 or 1, 'p_val': one p-value per feature, ...}, 'meta': {...}}.") from None
    if "is_drift" not in data or "p_val" not in data:
        raise Fail(f"{call}['data'] has the keys {safe_repr(sorted(map(str, data)))}; it needs 'is_drift' and "
                   "'p_val'.")
    try:
        is_drift = int(np.asarray(data["is_drift"]).item())
        p_values = np.asarray(data["p_val"], dtype=float).ravel()
    except (TypeError, ValueError):
        raise Fail(f"In {call}, 'is_drift' should be 0 or 1 and 'p_val' an array of p-values; got "
                   f"{safe_repr(data['is_drift'])} and {safe_repr(data['p_val'])}.") from None
    if is_drift not in (0, 1):
        raise Fail(f"'is_drift' should be 0 or 1 (or a bool), not {is_drift}.")
    if p_values.size and not np.all((p_values >= 0) & (p_values <= 1)):
        raise Fail(f"{call} returned p-values outside [0, 1]: {safe_repr(p_values)}.")
    return is_drift, p_values


@register(
    "06.ks_detector",
    points=3,
    title="A feature-wise KS drift detector with a multiple-testing correction",
    hints=(
        "Test each feature on its own with a two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) against "
        "the reference, and return the p-values, one per feature, in data['p_val'].",
        "With d features each tested at p_val, some feature falls below it by chance far more often than p_val: "
        "compare each p-value with p_val / d (Bonferroni) and flag drift when any falls below. Use the p_val "
        "given to the constructor.",
        "ks_2samp(self.x_ref, x, axis=0) tests every column at once; return {'data': {'is_drift': int(any p <= "
        "p_val / d), 'p_val': the p-values, 'threshold': p_val / d}, 'meta': {}}.",
    ),
    time_limit=30,  # 500+ calls of the student's code: in the grader each one is a round trip to the kernel
)
def ks_detector(answer, rng):
    expect_function(answer, "KSDetector", "reference data (a class, or a function that returns a detector)")
    d = int(rng.integers(4, 9))
    m, n = int(rng.integers(150, 250)), int(rng.integers(60, 100))
    loc, scale = rng.uniform(-5, 50, d), rng.uniform(0.5, 10, d)
    mix, skewed = rng.uniform(0.45, 0.7), rng.random(d) < 0.4
    call_shown = f"predict(<{n}×{d} window>)"

    def fit_at(level):
        x_ref = _correlated_rows(rng, m, loc, scale, mix, skewed)
        detector = call(answer, f"KSDetector(x_ref, p_val={level})", x_ref.copy(), p_val=level)
        predict = getattr(detector, "predict", None)
        if not callable(predict):
            raise Fail(f"KSDetector(x_ref, p_val={level}) gave {safe_repr(detector)}, which has no predict method.")
        return x_ref, predict

    def fit():
        return fit_at(LEVEL)

    x_ref, predict = fit()
    _, p_values = _verdict(call(predict, call_shown, _correlated_rows(rng, n, loc, scale, mix, skewed)), call_shown)
    if p_values.size != d:
        raise Fail(f"{call_shown} returned {p_values.size} p-values; return one per feature ({d} here).")

    # A fresh reference set for every window: with correlated features, one unlucky reference set shifts
    # every feature at once, and a rate measured on it alone would swing far from the true one.
    n_null, alarms, null_p = 500, 0, []
    for _ in range(n_null):
        _, predict_null = fit()
        is_drift, p = _verdict(predict_null(_correlated_rows(rng, n, loc, scale, mix, skewed)), call_shown)
        alarms += is_drift
        null_p.append(p)
        if alarms > (LEVEL + SLACK) * n_null:  # the verdict is known: no need to wait for the rest
            break
    fpr = alarms / n_null
    if fpr > LEVEL + SLACK:
        raise Fail(f"Without drift your detector flagged {alarms} of {n_null} windows: a false positive rate of "
                   f"{fpr:.1%} at p_val={LEVEL} (at most {LEVEL + SLACK:.0%} allowed). With {d} features tested "
                   "at once, correct for multiple testing.")
    _expect_p_values(np.concatenate(null_p), d)

    n_shifted, detected, missed_kind, shifted_p = 60, 0, None, []
    for i in range(n_shifted):
        x = _correlated_rows(rng, n, loc, scale, mix, skewed)
        features = rng.choice(d, size=int(rng.integers(1, 3)), replace=False)
        if i % 3 == 2:  # a spread 2.5 times as wide around the median
            centre = np.median(x[:, features], axis=0)
            x[:, features] = centre + 2.5 * (x[:, features] - centre)
            kind = "a feature whose spread grew"
        else:
            x[:, features] += rng.choice([-1, 1], len(features)) * 1.2 * x_ref[:, features].std(axis=0)
            kind = "a feature whose mean moved"
        hit, p = _verdict(predict(x), call_shown)
        detected += hit
        shifted_p.extend(p[features] if p.size == d else [])
        missed_kind = missed_kind or (None if hit else kind)
    power = detected / n_shifted
    if power < 0.9:
        raise Fail(f"Your detector found {detected} of {n_shifted} clearly shifted windows (power {power:.0%}, at "
                   f"least 90% expected); it missed, for example, {missed_kind}. Test every feature, with a test "
                   "that compares whole distributions.")
    if np.median(shifted_p) > LEVEL / d:
        raise Fail("On windows where a feature clearly shifted, the p-values you return for that feature are "
                   f"large (median {np.median(shifted_p):.2g}): a p-value is small when the samples differ. Return "
                   "the test's p-values themselves, not 1 - p or the statistic.")
    _expect_level_used(fit_at, rng, d, n, loc, scale, mix, skewed)
    _expect_fdr(answer, rng, d, m, n, loc, scale)
    return (f"False positive rate {fpr:.1%} over {n_null} windows without drift (level {LEVEL:.0%}), power "
            f"{power:.0%} on {n_shifted} shifted windows, with {d} correlated features; the p_val you are given "
            "is the level you test at.")


def _expect_p_values(p_values, d):
    """Without drift a test's p-values are spread evenly over [0, 1]: about 5 % of them fall below 0.05. A
    statistic, or 1 - p, in their place is not; a later cell reads these p-values."""
    below, mean = float((p_values <= 0.05).mean()), float(p_values.mean())
    if not (0.015 <= below <= 0.1 and 0.35 <= mean <= 0.7):
        raise Fail(f"Without drift, {below:.1%} of the {len(p_values)} p-values you returned are below 0.05 and "
                   f"their mean is {mean:.2f}; the p-values of a test are spread evenly between 0 and 1 then "
                   "(about 5 % below 0.05, mean about 0.5). Put the test's p-values in 'p_val', one per feature, "
                   "not its statistics.")


def _decisions(p_values, level):
    """Whether a Bonferroni and a Benjamini-Hochberg correction flag drift at ``level``, from the p-values."""
    d = len(p_values)
    ordered = np.sort(p_values)
    return bool(ordered[0] <= level / d), bool((ordered <= level * np.arange(1, d + 1) / d).any())


def _expect_level_used(fit_at, rng, d, n, loc, scale, mix, skewed):
    """The detector tests at the ``p_val`` it is given, not at a level of its own: at 1 % and 25 %, on windows
    with small shifts, ``is_drift`` must follow from its own p-values."""
    for level in (0.01, 0.25):
        x_ref, predict = fit_at(level)
        for _ in range(40):
            x = _correlated_rows(rng, n, loc, scale, mix, skewed)
            feature = int(rng.integers(d))
            x[:, feature] += rng.uniform(0, 0.4) * x_ref[:, feature].std()
            is_drift, p = _verdict(predict(x), f"KSDetector(x_ref, p_val={level}).predict(x)")
            if p.size == d and bool(is_drift) not in _decisions(p, level):
                raise Fail(f"KSDetector(x_ref, p_val={level}) answered is_drift={is_drift} for p-values "
                           f"{safe_repr(np.round(p, 4).tolist())}; at p_val={level} with {d} features a "
                           "correction for multiple testing says otherwise. Use the p_val argument as the level.")


def _expect_fdr(answer, rng, d, m, n, loc, scale):
    """``correction="fdr"`` flags by Benjamini-Hochberg. The two corrections disagree on few windows (several
    p-values a little under the level, none under level / d): independent features, each moved a little, make
    such windows, and on every one ``is_drift`` must follow the BH decision on the answer's own p-values."""
    plain = np.zeros(d, dtype=bool)  # no skewed features: their tails would make every small move obvious
    x_ref = _correlated_rows(rng, m, loc, scale, 0.0, plain)
    shown = f"KSDetector(x_ref, p_val={LEVEL}, correction='fdr')"
    detector = call(answer, shown, x_ref.copy(), p_val=LEVEL, correction="fdr")
    predict = getattr(detector, "predict", None)
    if not callable(predict):
        raise Fail(f"{shown} gave {safe_repr(detector)}, which has no predict method.")
    where_they_differ = 0
    for _ in range(600):  # about 2.5 % of these windows set the corrections apart
        x = _correlated_rows(rng, n, loc, scale, 0.0, plain) + 0.25 * scale
        is_drift, p = _verdict(predict(x), f"{shown}.predict(x)")
        if p.size != d:
            continue
        bonferroni, fdr = _decisions(p, LEVEL)
        if bool(is_drift) != fdr:
            raise Fail(f"{shown}.predict(x) answered is_drift={is_drift} for p-values "
                       f"{safe_repr(np.round(p, 4).tolist())}; Benjamini-Hochberg at {LEVEL} says "
                       f"{int(fdr)}: flag when some sorted p-value p_(k) is at most k * p_val / d.")
        where_they_differ += bonferroni != fdr
        if where_they_differ >= 2:
            return


def expected_delay(window, power):
    """Rows from the start of drift to its detection, when drift starts with a window and windows are independent."""
    return math.inf if power <= 0 else window / power


def _power_curve(rng, zero=False):
    """{window: power} from a logistic curve, rounded as a measurement would be; ``zero``: the smallest
    window has power 0 (its delay is infinite)."""
    windows = np.unique(np.r_[rng.integers(5, 400, size=int(rng.integers(4, 10))), 400])
    midpoint, steepness = rng.uniform(20, 200), rng.uniform(0.01, 0.08)
    powers = {int(w): round(float(1 / (1 + np.exp(-steepness * (w - midpoint)))), 3) for w in windows}
    if zero:
        powers[int(windows[0])] = 0.0
    return powers


def _window_cases(rng):
    """(powers, max_delay) of eight cases, each kind on every call: a random target; a target that several
    windows meet, the largest of them not the fastest; a target met exactly (delay equal to it); a curve with
    a window of power 0; a target that no window meets."""
    cases = []
    for kind in ["random", "random", "random", "several", "exact", "zero", "several", "none"]:
        for _ in range(100):  # redraw until the curve has what the case needs
            powers = _power_curve(rng, zero=kind == "zero")
            delays = {w: expected_delay(w, p) for w, p in powers.items()}
            finite = sorted((d, w) for w, d in delays.items() if math.isfinite(d))
            if len(finite) < 3:
                continue
            fastest = finite[0][1]
            larger = [w for d, w in finite if w > fastest]
            if kind == "none":
                max_delay = float(round(finite[0][0] * 0.8, 1))
            elif kind == "exact":
                max_delay = delays[larger[-1]] if larger else None  # the float the student computes too
            elif kind == "several":
                max_delay = float(np.ceil(max(delays[w] for w in larger[:2]) * 10) / 10) if len(larger) > 1 else None
            else:
                max_delay = float(round(rng.uniform(finite[0][0], finite[-1][0] * 1.2), 1))
            if max_delay is not None:
                cases.append((powers, max_delay))
                break
    cases.insert(0, _plateau_case(rng))
    order = rng.permutation(len(cases) - 1)  # "none" stays last so that other mistakes are named first
    return [cases[i] for i in order] + cases[-1:]


def _plateau_case(rng):
    """A power curve that flattens: doubling the window barely adds power, so the larger window is too slow
    although its size times its power is small. A delay of n × power (not n / power) picks it."""
    n = int(rng.integers(60, 150))
    power = round(float(rng.uniform(0.6, 0.75)), 3)
    plateau = round(power + float(rng.uniform(0, 0.03)), 3)
    powers = {n // 2: round(power * 0.6, 3), n: power, 2 * n: plateau}
    low, high = max(n / power, 2 * n * plateau), 2 * n / plateau
    return powers, float(round(rng.uniform(low + 0.1 * (high - low), high - 0.1 * (high - low)), 1))


@register(
    "06.window_size",
    points=2,
    title="Choose a window size for a stated delay",
    hints=(
        "A window of n rows with power p is tested as a whole; if drift starts with a window, it is caught on "
        "average after 1/p windows, so the expected delay is n / power(n) rows.",
        "Keep the windows whose expected delay is at most max_delay (a window of power 0 never detects "
        "anything), and among them return the largest: it gives fewer false alarms per row.",
        "If no window meets the target return None, not the closest one. A delay equal to max_delay meets it.",
    ),
)
def window_size(answer, rng):
    expect_function(answer, "choose_window", "a dict {window size: power} and a maximum delay")
    cases = _window_cases(rng)
    for powers, max_delay in cases:
        delays = {w: expected_delay(w, p) for w, p in powers.items()}
        feasible = [w for w, delay in delays.items() if delay <= max_delay]
        expected = max(feasible) if feasible else None
        shown = f"choose_window({powers}, max_delay={max_delay})"
        got = call(answer, shown, dict(powers), max_delay)
        if expected is None:
            if got is not None:
                raise Fail(f"{shown} returned {safe_repr(got)}, but no window meets that delay: return None.")
            continue
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
            raise Fail(f"{shown} returned {safe_repr(got)}; return one of the window sizes (an int), or None.")
        got = int(got)
        if got not in powers:
            raise Fail(f"{shown} returned {got}, which is not one of the window sizes measured.")
        if delays[got] > max_delay:
            raise Fail(f"{shown} returned {got}, whose expected delay {delays[got]:.1f} rows exceeds the target.")
        if got != expected:
            equal = " (its delay equals the target, which meets it)" if delays[expected] == max_delay else ""
            raise Fail(f"{shown} returned {got}; the window {expected} also meets the delay{equal} and raises "
                       "fewer false alarms per row. Return the largest window that meets the target.")
    return (f"Right window for {len(cases)} hidden power curves and delay targets: one met exactly, one with a "
            "window of power 0, one that no window meets.")


@register(
    "06.performance_drift",
    points=2,
    title="Detect concept drift from late labels",
    hints=(
        "Each outcome is 1 if the model was right: compare the share of 1s in the reference with the share in "
        "the new sample, with a test whose p-value you compare with p_val.",
        "Only a drop of accuracy is a reason to alarm: make the test one-sided (a model getting better is not "
        "drift). Use the p_val argument as the level.",
        "For example scipy.stats.fisher_exact on the 2x2 table [[right_ref, wrong_ref], [right_new, wrong_new]] "
        "with alternative='greater'; return {'is_drift': int(p < p_val), 'p_val': p}.",
    ),
    time_limit=30,  # 1000+ calls of the student's code: in the grader each one is a round trip to the kernel
)
def performance_drift(answer, rng):
    expect_function(answer, "performance_drift", "two arrays of 0/1 (prediction correct or not) and p_val")

    def run(accuracy_ref, accuracy_new, n_ref, n_new, level=LEVEL):
        ref = (rng.random(n_ref) < accuracy_ref).astype(int)
        new = (rng.random(n_new) < accuracy_new).astype(int)
        shown = f"performance_drift(<{n_ref} outcomes>, <{n_new} outcomes>, p_val={level})"
        result = call(answer, shown, ref, new, p_val=level)
        try:
            result = dict(result)
            is_drift = int(np.asarray(result["is_drift"]).item())
            p = float(np.asarray(result["p_val"]).item())
        except (TypeError, ValueError, KeyError):
            raise Fail(f"{shown} returned {safe_repr(result)}; return a dict {{'is_drift': 0 or 1, "
                       "'p_val': the test's p-value}.") from None
        if is_drift not in (0, 1):
            raise Fail(f"{shown}: 'is_drift' should be 0 or 1, not {is_drift}.")
        if not 0 <= p <= 1:
            raise Fail(f"{shown} returned p_val={p:g}, which is not a p-value (those lie between 0 and 1); "
                       "return the test's p-value, not its statistic.")
        if (is_drift and p > level) or (not is_drift and p < level):
            raise Fail(f"{shown} returned is_drift={is_drift} with p_val={p:.4g}: drift is flagged when the "
                       f"p-value is below the level you are given, p_val={level}.")
        return is_drift

    def sizes():
        return int(rng.integers(150, 400)), int(rng.integers(100, 300))

    n_null = 1000
    false_alarms = sum(run(a, a, *sizes()) for a in rng.uniform(0.75, 0.97, n_null))
    if false_alarms / n_null > LEVEL + SLACK:
        raise Fail(f"When the accuracy did not change you raised an alarm in {false_alarms} of {n_null} cases "
                   f"({false_alarms / n_null:.1%}; at most {LEVEL + SLACK:.0%} allowed at p_val={LEVEL}).")
    n_better = 300
    better = sum(run(a, min(a + 0.05, 0.995), *sizes()) for a in rng.uniform(0.75, 0.93, n_better))
    if better / n_better > LEVEL + SLACK:
        raise Fail(f"When the accuracy improved you raised an alarm in {better} of {n_better} cases: a model "
                   "getting better is no reason to page anyone. Make the test one-sided.")
    n_drop = 100
    caught = sum(run(a, a - 0.15, *sizes()) for a in rng.uniform(0.8, 0.97, n_drop))
    if caught / n_drop < 0.9:
        raise Fail(f"Your test caught {caught} of {n_drop} drops of accuracy by 15 points (at least 90% "
                   "expected).")
    # Other levels: is_drift must follow the p_val given, not a level of the student's own.
    for level in (0.01, 0.2):
        for a in rng.uniform(0.8, 0.95, 40):
            run(a, a - rng.uniform(0, 0.08), *sizes(), level=level)
    return (f"False alarms in {false_alarms / n_null:.1%} of {n_null} cases without change, "
            f"{better / n_better:.1%} when accuracy improved, and {caught} of {n_drop} drops caught; is_drift "
            "follows your p-value at the level given.")


SCENARIO_ROWS = 500  # rows of every hidden reference and batch: enough for a test to see a drop of 5 points
SIZE_FEATURES = ("worst area", "worst radius", "mean perimeter", "worst concave points")


def _taught_test(reference, batch):
    """The accuracy of the lab's model on the batch, and the p-value of the one-sided test of exercise 3 that it
    fell (cross-validated accuracy on the reference against accuracy on the batch)."""
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    right_ref = cross_val_predict(model, reference.X, reference.y, cv=5) == reference.y
    right_new = model.fit(reference.X, reference.y).predict(batch.X) == batch.y
    table = [[right_ref.sum(), (~right_ref).sum()], [right_new.sum(), (~right_new).sum()]]
    return float(right_new.mean()), float(stats.fisher_exact(table, alternative="greater")[1])


def _small_concept_drift(rng, reference, size):
    """A guideline that relabels few tumours: the lab's model keeps at least 91 % accuracy on the batch (so a
    fixed accuracy threshold of 90 % misses it), yet the test of exercise 3 flags it with p < 0.001 (so the
    lab's method catches it with a wide margin at any usual level). Redrawn until both hold."""
    for _ in range(40):
        scenario = drift_scenario("concept", size, int(rng.integers(2**31)), feature=str(rng.choice(SIZE_FEATURES)),
                                  quantile=float(rng.uniform(0.93, 0.96)), balanced=True)
        accuracy, p = _taught_test(reference, scenario)
        if accuracy >= 0.91 and p < 0.001:
            break
    return scenario


def _hidden_scenarios(rng):
    """(expected type, reference, batch) for 14 scenarios in random order: each type three times, covariate shift
    four times, and a one-class batch that must be classified right (the other 13 allow one miss for chance).

    Covariate shift: one recalibrated instrument (label share unchanged) and three referrals that select larger
    tumours (label share moved, each class's inputs too; the two lower cuts move mostly the benign class, so one
    class that drifted within is enough): a changed label share is no sign of label shift. One more covariate
    shift comes in a batch of a single class (a ward that sees one kind of tumour): a test per class must test
    the class the batch holds, not the one it lacks; its verdict is no matter of chance. Concept drift (label
    share kept exactly): one large change and two small ones that cost the model less than 9 points of accuracy:
    only a test, not a fixed threshold, tells them from chance.
    """
    names = drift_scenario("none", size=1).feature_names
    plans = (["none"] * 3 + ["instrument", "referral", "low referral", "low referral"] + ["label"] * 3
             + ["concept", "small", "small"])
    scenarios = []
    for i in rng.permutation(len(plans)):
        plan, size = plans[i], SCENARIO_ROWS
        reference = drift_scenario("none", size, int(rng.integers(2**31)))
        seed = int(rng.integers(2**31))
        if plan == "instrument":
            features = [str(f) for f in rng.choice(names, size=int(rng.integers(2, 4)), replace=False)]
            scale = float(rng.choice([rng.uniform(1.7, 2.2), rng.uniform(0.35, 0.55)]))
            batch = drift_scenario("instrument", size, seed, features=features, scale=scale)
        elif plan == "referral":
            batch = drift_scenario("referral", size, seed, feature=str(rng.choice(SIZE_FEATURES)),
                                   quantile=float(rng.uniform(0.4, 0.6)))
        elif plan == "low referral":  # a cut that drops small tumours: the benign class moves, the malignant barely
            batch = drift_scenario("referral", size, seed, feature=str(rng.choice(SIZE_FEATURES)),
                                   quantile=float(rng.uniform(0.25, 0.35)))
        elif plan == "label":
            malignant = float(rng.choice([rng.uniform(0.72, 0.9), rng.uniform(0.03, 0.1)]))
            batch = drift_scenario("population", size, seed, malignant=malignant)
        elif plan == "concept":
            batch = drift_scenario("concept", size, seed, feature=str(rng.choice(SIZE_FEATURES)),
                                   quantile=float(rng.uniform(0.45, 0.85)), balanced=True)
        elif plan == "small":
            batch = _small_concept_drift(rng, reference, size)
        else:
            batch = drift_scenario("none", size, seed)
        scenarios.append((batch.drift_type, reference, batch))
    # A ward that sees one kind of tumour, on a recalibrated instrument: drawn after the others, so that they are
    # the same with or without it.
    features = [str(f) for f in rng.choice(names, size=int(rng.integers(2, 4)), replace=False)]
    wide = drift_scenario("instrument", 4 * SCENARIO_ROWS, int(rng.integers(2**31)), features=features,
                          scale=float(rng.uniform(1.7, 2.2)))
    kept = np.flatnonzero(wide.y == int(rng.integers(2)))[:SCENARIO_ROWS]
    one_class = dataclasses.replace(wide, X=wide.X[kept], y=wide.y[kept],
                                    description=wide.description + " Only one class is seen.")
    scenarios.insert(int(rng.integers(len(scenarios) + 1)),
                     (one_class.drift_type, drift_scenario("none", SCENARIO_ROWS, int(rng.integers(2**31))), one_class))
    return scenarios


@register(
    "06.drift_type",
    points=3,
    title="Classify hidden scenarios by drift type",
    hints=(
        "Each type changes something else: covariate shift the inputs, label shift the share of each label (and "
        "so the inputs too), concept drift the relation between inputs and labels, with inputs and label shares "
        "unchanged.",
        "First test the inputs (your detector). If they drifted, tell label shift from covariate shift by testing "
        "the inputs within each class, P(x | y): under label shift each class's inputs stay as they were. If the "
        "inputs did not drift, test whether a model fitted on the reference lost accuracy on the new labelled "
        "rows (concept drift).",
        "A label share that did not move says nothing about concept drift: compare a model's accuracy on the new "
        "rows with its cross-validated accuracy on the reference (performance_drift), at a strict level such as "
        "0.01 for every test.",
    ),
    time_limit=30,  # 14 calls of the student's code, each fitting models
)
def drift_type(answer, rng):
    expect_function(answer, "drift_type", "x_ref, y_ref, x_new, y_new")
    # One thread for the linear algebra of these small fits: on a busy 2-core machine BLAS threads fighting
    # for the cores made the same work 20 times slower (measured: 0.03 s against 0.6 s per scenario).
    with threadpool_limits(1):
        return _classify_hidden_scenarios(answer, rng)


def _classify_hidden_scenarios(answer, rng):
    scenarios = _hidden_scenarios(rng)
    wrong, one_class = [], None
    for kind, reference, scenario in scenarios:
        got = call(answer, "drift_type(x_ref, y_ref, x_new, y_new)", reference.X.copy(), reference.y.copy(),
                   scenario.X.copy(), scenario.y.copy())
        if not isinstance(got, str) or got not in DRIFT_TYPES:
            raise Fail(f"drift_type returned {safe_repr(got)}; return one of {', '.join(map(repr, DRIFT_TYPES))}.")
        if "Only one class is seen." in scenario.description:  # judged after the others, without allowance
            one_class = None if got == kind else got
        elif got != kind:
            wrong.append(f"{kind} taken for {got}" + (" (a small one)" if kind == "concept" and
                                                      scenario.params["quantile"] > 0.9 else ""))
    if len(wrong) > 1:
        why = ""
        if "covariate taken for label" in wrong:
            why += (" A changed share of labels does not make a label shift: referrals that select larger "
                    "tumours bring more malignant ones too. Test the inputs within each class.")
        if any(w.startswith("concept") for w in wrong):
            why += (" Concept drift here leaves the share of each label unchanged, and some changes are small: "
                    "only a test of the model's accuracy shows them, not a fixed threshold.")
        right = len(scenarios) - len(wrong) - (one_class is not None)
        raise Fail(f"{right} of {len(scenarios)} hidden scenarios classified right (at "
                   f"least {len(scenarios) - 1} expected). Mistakes: {'; '.join(wrong)}.{why}")
    if one_class is not None:
        raise Fail(f"A batch that holds one class only, whose inputs drifted within that class (a recalibrated "
                   f"instrument), was taken for {one_class}; it is covariate shift. Test each class that the new "
                   "batch holds against the reference rows of the same class.")
    extra = f" (one miss allowed for chance: {wrong[0]})" if wrong else ""
    return (f"{len(scenarios) - len(wrong)} of {len(scenarios)} hidden scenarios classified right{extra}, among "
            "them referrals that move the label share and small concept drifts.")
