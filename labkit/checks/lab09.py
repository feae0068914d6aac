"""Checks of lab 09, "Run it": alarm rules on a hidden week, the promotion decision, the late-label join."""

from __future__ import annotations

import functools
import math

import numpy as np

from labkit.checks import Fail, call, expect_function, json_roundtrip, number, register, safe_repr

DAYS = 7


# -- exercise 1: alarm rules --------------------------------------------------------------------------------------


HIDDEN_WEEKS = tuple(range(20))  # every submission is judged on all of them: the same verdict on every call


@functools.lru_cache(maxsize=len(HIDDEN_WEEKS))
def _hidden_week(seed: int):
    """A hidden week (its incidents at other hours than the notebook's) and its hourly metrics, served offline
    by the same stages as the service (``labkit.week.serve_offline``)."""
    from labkit import monitor, week

    pipeline = week._default_pipeline()
    bad = pipeline.with_classifier(week.bad_classifier())
    hidden = week.make_week(1000 + seed, pipeline)
    return hidden, monitor.hourly(week.serve_offline(hidden, {week.GOOD: pipeline, week.BAD: bad}))


@register(
    "09.alarms",
    points=3,
    title="Alarm rules that catch every incident of a hidden week",
    # 20 hidden weeks served offline the first time, cached after: 6.9 s of CPU, 20 s of wall time at load 9 on
    # 2 cores (measured 2026-12-04)
    time_limit=90,
    hints=(
        "Each incident shows first in one stage's metric: the outlier rate, the adversarial rate, the error rate "
        "of the model, the drift p-value. One rule per stage, on the metric of that stage.",
        "At night only a handful of requests arrive, so a rate over one hour jumps on one flagged row: aggregate "
        "over a window of a few hours, and set each threshold well above what ordinary days show (look at the "
        "metrics of the days without incidents), well below what the incidents show.",
        "A long `for` delays every alarm by that many hours: the bursts and the bad deploy must be caught within "
        "2 hours, the drift, which grows over 12, within 18. A drift rule on drift_p compares with '<'.",
    ),
)
def alarm_rules(answer, rng):
    from labkit import monitor

    rules = json_roundtrip(answer, "your rules")
    if not isinstance(rules, list) or not rules:
        raise Fail(f"Give the rules as a list of dicts, not {safe_repr(rules)}.")
    try:
        rules = [monitor.validate_rule(r) for r in rules]
    except ValueError as e:
        raise Fail(str(e)) from None
    names = [r["name"] for r in rules]
    if len(set(names)) != len(names):
        raise Fail("Two rules have the same name: an alert name must say which alarm fired.")
    for seed in HIDDEN_WEEKS:  # all of them, in a fixed order: no draw, so no verdict depends on the seed
        hidden, metrics = _hidden_week(seed)
        raised = monitor.alarms(metrics, rules)
        scored = monitor.score_alarms(raised, hidden.incidents)
        missed = [i for i in hidden.incidents if scored["caught"][i.kind] is None]
        if missed:
            told = "; ".join(f"{i.kind} from hour {i.start:.0f} (to be caught within {i.delay:g} h, shown by the "
                             f"{i.stage} stage)" for i in missed)
            raise Fail(f"On hidden week {seed + 1} of {len(HIDDEN_WEEKS)} your rules miss: {told}. Alarms raised: "
                       f"{_list(raised)}.")
        if len(scored["false"]) > 1:
            raise Fail(f"On hidden week {seed + 1} of {len(HIDDEN_WEEKS)} your rules raise {len(scored['false'])} "
                       f"false alarms (at most 1), outside every incident: {_list(scored['false'])}. Widen a "
                       f"window or raise a threshold.")
    return (f"Every incident of {len(HIDDEN_WEEKS)} hidden weeks caught in time, at most one false alarm in each. "
            f"{len(rules)} rules.")


def _list(raised, limit: int = 6) -> str:
    shown = ", ".join(f"{a['rule']} at hour {a['at']:.0f}" for a in raised[:limit])
    return (shown or "none") + (f" and {len(raised) - limit} more" if len(raised) > limit else "")


# -- exercise 2: the promotion decision ---------------------------------------------------------------------------

# The guardrails the notebook states; the reference decision.
MAX_ERROR_RISE = 0.01  # the candidate's error rate at most the baseline's + 1 point
MAX_LATENCY_RATIO = 1.25  # its p99 at most 1.25 times the baseline's
MAX_ACCURACY_DROP = 0.02  # its accuracy (labels, else CBPE's estimate) at least the baseline's - 2 points
MIN_LABELS = 30  # fewer labelled canary requests: use the estimate


def reference_decision(baseline: dict, canary: dict) -> str:
    def accuracy(side):
        if side["labelled"] >= MIN_LABELS:
            return side["correct"] / side["labelled"]
        return side["estimated_accuracy"]

    errors = canary["server_errors"] / canary["requests"] > baseline["server_errors"] / baseline["requests"] \
        + MAX_ERROR_RISE
    slow = canary["p99_ms"] > MAX_LATENCY_RATIO * baseline["p99_ms"]
    worse = accuracy(canary) < accuracy(baseline) - MAX_ACCURACY_DROP
    return "rollback" if errors or slow or worse else "promote"


def _side(rng, requests, error_rate, p99, accuracy, labelled, estimate=None, correct=None):
    errors = int(round(error_rate * requests))
    correct = int(round(accuracy * labelled)) if correct is None else int(correct)
    estimated = accuracy + rng.normal(0, 0.005) if estimate is None else estimate
    return {"requests": int(requests), "server_errors": errors, "p99_ms": round(float(p99), 2),
            "labelled": int(labelled), "correct": correct, "estimated_accuracy": round(float(estimated), 4)}


def _far_cases(rng):
    """(baseline, canary, why): one of each kind, far from every border; labels and estimate agree."""
    n = int(rng.integers(2000, 4000))
    base_err, base_p99, base_acc = rng.uniform(0.0, 0.01), rng.uniform(3, 8), rng.uniform(0.55, 0.75)
    baseline = _side(rng, n, base_err, base_p99, base_acc, int(rng.integers(100, 300)))
    m = int(rng.integers(400, 900))
    good_acc = min(base_acc + rng.uniform(0.1, 0.3), 0.97)
    few = int(rng.integers(3, 10))  # a few labels: too few to judge on
    return [
        (baseline, _side(rng, m, base_err, base_p99 * 0.9, good_acc, int(rng.integers(60, 150))),
         "more accurate on its labels, as fast and as reliable"),
        (baseline, _side(rng, m, base_err + rng.uniform(0.04, 0.1), base_p99, good_acc, 80),
         "more accurate but failing on several per cent of its requests"),
        (baseline, _side(rng, m, base_err, base_p99 * rng.uniform(2, 3), good_acc, 80),
         "more accurate but two to three times slower at p99"),
        (baseline, _side(rng, m, base_err, base_p99, base_acc - rng.uniform(0.1, 0.2), 80),
         "less accurate on its labels"),
        (baseline, _side(rng, m, base_err, base_p99, good_acc, few, estimate=base_acc - rng.uniform(0.15, 0.3)),
         f"only {few} labels so far, and the confidence-based estimate far below the baseline's"),
        (baseline, _side(rng, m, base_err, base_p99, good_acc, few, estimate=good_acc),
         f"only {few} labels so far, and the confidence-based estimate above the baseline's"),
        (baseline, {**_side(rng, 3 * n, base_err, base_p99, good_acc, 90),
                    "server_errors": baseline["server_errors"] + int(rng.integers(1, 5))},
         "at full weight with three times the baseline's requests: more errors in number, a lower rate"),
    ]


def _disagreement_cases(rng):
    """(baseline, canary, why) where a side's labels and its confidence-based estimate disagree (the lab's lesson:
    the estimate is only as good as its calibration), each side judged on its own rule, and the label minimum
    exactly at MIN_LABELS and one below."""
    n, m = int(rng.integers(2000, 4000)), int(rng.integers(400, 900))
    err, p99, acc = rng.uniform(0.0, 0.01), rng.uniform(3, 8), rng.uniform(0.55, 0.75)
    baseline = _side(rng, n, err, p99, acc, int(rng.integers(100, 300)))
    good = min(acc + rng.uniform(0.1, 0.2), 0.95)
    low, high = acc - rng.uniform(0.15, 0.3), min(acc + rng.uniform(0.15, 0.25), 0.99)
    labelled = int(rng.integers(40, 150))
    few = int(rng.integers(3, 10))
    # a baseline whose confidence overstates its accuracy (its labels say `acc`), and one with few labels
    overstated = _side(rng, n, err, p99, acc, int(rng.integers(100, 300)), estimate=high)
    unlabelled = _side(rng, n, err, p99, acc, few, correct=few)  # its few labels all right: noise
    return [
        (baseline, _side(rng, m, err, p99, good, labelled, estimate=low),
         f"{labelled} labels saying it is more accurate than the baseline, and a confidence-based estimate far "
         f"below (its confidence is not calibrated)"),
        (baseline, _side(rng, m, err, p99, low, labelled, estimate=good),
         f"{labelled} labels saying it is far less accurate, and a confidence-based estimate above the baseline's "
         f"(confidently wrong)"),
        (overstated, _side(rng, m, err, p99, good, few, correct=0, estimate=acc + rng.uniform(0.0, 0.05)),
         f"only {few} labels (all wrong: noise), an estimate above the baseline's labelled accuracy; the baseline "
         f"has {overstated['labelled']} labels and an estimate that overstates them"),
        (unlabelled, _side(rng, m, err, p99, acc, labelled, estimate=low,
                           correct=math.ceil((unlabelled["estimated_accuracy"] - 0.01) * labelled)),
         f"{labelled} labels, as accurate as the baseline's estimate; the baseline has only {few} labels so far "
         f"(all right: noise)"),
        (baseline, _side(rng, m, err, p99, good, MIN_LABELS, estimate=low),
         f"exactly {MIN_LABELS} labels saying it is more accurate, and a confidence-based estimate far below"),
        (baseline, _side(rng, m, err, p99, good, MIN_LABELS - 1, correct=0, estimate=good),
         f"{MIN_LABELS - 1} labels (all wrong), and a confidence-based estimate above the baseline's"),
    ]


# Exact borders: values whose comparisons give the same answer however a right answer writes them (a - b <= t,
# a <= b + t, a - t <= b, ...) in floating point; tests/test_checks_lab09.py holds those ways of writing them.
_ERROR_BORDERS = ((0, 1000, 8, 800), (10, 1000, 16, 800), (20, 2000, 10, 500), (25, 2500, 10, 500),
                  (30, 3000, 10, 500), (40, 4000, 10, 500), (16, 1600, 8, 400), (32, 3200, 12, 600))
_P99_BORDERS = ((4.0, 5.0), (6.0, 7.5), (8.0, 10.0), (3.2, 4.0), (4.8, 6.0), (6.4, 8.0), (7.2, 9.0), (5.6, 7.0))
_ACCURACY_BORDERS = ((200, 140, 50, 34), (200, 140, 100, 68), (200, 140, 150, 102), (100, 70, 50, 34),
                     (100, 70, 100, 68), (100, 70, 200, 136))  # baseline 0.7 from labels, canary 0.68
# In floating point 0.7 - 0.02 is a hair below 0.68, so that case promotes however the rule is written, with '>'
# too. No decimal pair of accuracies is exact every way round; 0.04 and 0.02 are (0.04 is 2 x 0.02 in binary
# too): there '>' instead of '>=' rolls back.
_EXACT_ACCURACY = ((100, 4, 50, 1), (200, 8, 100, 2), (50, 2, 50, 1), (100, 4, 150, 3))


def _border_cases(rng):
    """(baseline, canary, why) exactly at each guardrail (promote: "at most", "at least") and just past it."""
    be, br, ce, cr = _ERROR_BORDERS[rng.integers(len(_ERROR_BORDERS))]
    bp, cp = _P99_BORDERS[rng.integers(len(_P99_BORDERS))]
    bl, bc, cl, cc = _ACCURACY_BORDERS[rng.integers(len(_ACCURACY_BORDERS))]
    xl, xc, yl, yc = _EXACT_ACCURACY[rng.integers(len(_EXACT_ACCURACY))]
    estimate = round(bc / bl + rng.normal(0, 0.003), 4)
    baseline = {"requests": br, "server_errors": be, "p99_ms": bp, "labelled": bl, "correct": bc,
                "estimated_accuracy": estimate}
    same = {"requests": cr, "server_errors": round(be * cr / br), "p99_ms": bp, "labelled": cl,
            "correct": round(cl * bc / bl), "estimated_accuracy": estimate}
    few = int(rng.integers(3, 10))
    return [
        (baseline, dict(same), "with the baseline's error rate, p99 and accuracy: no worse, no better"),
        (baseline, {**same, "server_errors": ce}, "with an error rate exactly the baseline's + 0.01"),
        (baseline, {**same, "server_errors": ce + 1}, "with an error rate just above the baseline's + 0.01"),
        (baseline, {**same, "p99_ms": cp}, "with a p99 exactly 1.25 times the baseline's"),
        (baseline, {**same, "p99_ms": round(cp + 0.01, 2)}, "with a p99 just above 1.25 times the baseline's"),
        (baseline, {**same, "correct": cc}, "with a labelled accuracy exactly the baseline's - 0.02"),
        (baseline, {**same, "correct": cc - 1}, "with a labelled accuracy just below the baseline's - 0.02"),
        (baseline, {**same, "labelled": few, "correct": 0, "estimated_accuracy": 0.68},
         f"with {few} labels and an estimate exactly the baseline's labelled accuracy - 0.02"),
        (baseline, {**same, "labelled": few, "correct": few, "estimated_accuracy": 0.6799},
         f"with {few} labels and an estimate just below the baseline's labelled accuracy - 0.02"),
        ({**baseline, "labelled": xl, "correct": xc, "estimated_accuracy": 0.04},
         {**same, "labelled": yl, "correct": yc, "estimated_accuracy": 0.02},
         f"right on {yc} of its {yl} labels (2 %) against a broken baseline right on {xc} of {xl} (4 %): exactly "
         f"the baseline's - 0.02"),
        ({**baseline, "labelled": xl, "correct": xc, "estimated_accuracy": 0.04},
         {**same, "labelled": few, "correct": few, "estimated_accuracy": 0.02},
         f"with {few} labels and an estimate of 0.02 against a broken baseline right on {xc} of {xl} labels (4 %): "
         f"exactly the baseline's - 0.02"),
    ]


def _promotion_cases(rng):
    """Hidden (baseline, canary, why) cases: far from every border, labels against estimates, exact borders."""
    return _far_cases(rng) + _disagreement_cases(rng) + _border_cases(rng)


@register(
    "09.promotion",
    points=2,
    title="Promote the canary, or roll it back",
    hints=(
        "Compare rates, not counts: the canary gets a small share of the traffic, so it has fewer requests, "
        "fewer errors and fewer labels than the baseline.",
        "Every guardrail must hold to promote: error rate, p99 latency, and accuracy. A candidate that is more "
        "accurate but fails or is slow is still rolled back.",
        "Decide each side's accuracy on its own: from its labels (correct / labelled) when it has at least 30 "
        "labelled requests, else its estimated_accuracy. With 30 labels or more the labels decide even when the "
        "estimate disagrees: an estimate is only as good as its calibration. Exactly at a tolerance, a guardrail "
        "still holds.",
    ),
)
def promotion(answer, rng):
    expect_function(answer, "decide", "the baseline's and the canary's metrics")
    cases = _promotion_cases(rng)
    for baseline, canary, why in cases:
        shown = f"decide(baseline, canary) for a canary {why}"
        got = call(answer, shown, dict(baseline), dict(canary))
        if got not in ("promote", "rollback"):
            raise Fail(f"{shown} returned {safe_repr(got)}; return 'promote' or 'rollback'.")
        right = reference_decision(baseline, canary)
        if got != right:
            raise Fail(f"{shown} returned {got!r}, but the guardrails say {right!r}. Baseline {baseline}, "
                       f"canary {canary}.")
    return (f"Right on {len(cases)} hidden candidates: good and bad, labels against estimates, exactly at each "
            f"guardrail and just past it.")


# -- exercise 3: the late-label join ------------------------------------------------------------------------------


def reference_accuracy_per_day(predictions: dict, labels: dict) -> list[float]:
    answered = {rid: (t, p) for rid, t, p, s in zip(predictions["request_id"], predictions["t"],
                                                     predictions["predict"], predictions["status"], strict=True)
                if s == 200}
    right, seen = np.zeros(DAYS), np.zeros(DAYS)
    for rid, label in zip(labels["request_id"], labels["label"], strict=True):
        if rid in answered:
            t, p = answered[rid]
            day = min(int(t // 24), DAYS - 1)
            seen[day] += 1
            right[day] += p == label
    return [float(r / s) if s else math.nan for r, s in zip(right, seen, strict=True)]


def _hidden_log(rng):
    """A hidden payload log and late labels: ids not in time order, failed and blocked requests (no prediction),
    labels in the order they arrive, labels for requests that failed, and a day whose labels have not arrived."""
    n = int(rng.integers(400, 700))
    ids = [f"req-{int(i):06d}" for i in rng.choice(10**6, size=n, replace=False)]
    t = np.sort(rng.uniform(0, 168, n))
    status = rng.choice([200, 500, 403], size=n, p=[0.85, 0.1, 0.05])
    truth = rng.integers(0, 8, n)
    accuracy_by_day = rng.uniform(0.4, 0.95, DAYS)
    right = rng.random(n) < accuracy_by_day[(t // 24).astype(int)]
    predict = np.where(right, truth, (truth + rng.integers(1, 8, n)) % 8)
    predict = np.where(status == 200, predict, -1)
    empty_day = int(rng.integers(0, DAYS))
    labelled = (rng.random(n) < 0.6) & ((t // 24).astype(int) != empty_day)
    arrival = t + 24 * (1 + rng.gamma(2.0, 0.5, n))
    order = np.flatnonzero(labelled)[np.argsort(arrival[labelled])]
    predictions = {"request_id": ids, "t": t.round(3).tolist(), "predict": predict.tolist(),
                   "status": status.tolist()}
    labels = {"request_id": [ids[i] for i in order], "label": truth[order].tolist(),
              "arrived": arrival[order].round(3).tolist()}
    return predictions, labels


@register(
    "09.late_labels",
    points=2,
    title="Join the late labels to the logged predictions",
    hints=(
        "Labels arrive in their own order, days after the requests: match each label to its prediction by "
        "request id, never by position.",
        "A day's accuracy is about the requests made that day (their `t`), not the day their labels arrived; and "
        "only requests the model answered (status 200) have a prediction to compare with.",
        "Return 7 numbers, one per day of the week (day = int(t // 24)), NaN for a day without any labelled "
        "answered request.",
    ),
)
def late_labels(answer, rng):
    expect_function(answer, "accuracy_per_day", "the logged predictions and the late labels")
    for _ in range(3):
        predictions, labels = _hidden_log(rng)
        got = call(answer, "accuracy_per_day(predictions, labels)", {k: list(v) for k, v in predictions.items()},
                   {k: list(v) for k, v in labels.items()})
        try:
            got = np.asarray([number(v, "each day's accuracy") for v in got], dtype=float)
        except TypeError:
            raise Fail(f"accuracy_per_day returned {safe_repr(got)}; return a list of 7 numbers.") from None
        if got.shape != (DAYS,):
            raise Fail(f"accuracy_per_day returned {got.size} values; return 7, one per day of the week.")
        right = np.asarray(reference_accuracy_per_day(predictions, labels))
        if not np.array_equal(np.isnan(got), np.isnan(right)):
            raise Fail(f"accuracy_per_day gives NaN on days {np.flatnonzero(np.isnan(got)).tolist()}; the days "
                       f"without labelled answered requests are {np.flatnonzero(np.isnan(right)).tolist()}.")
        both = ~np.isnan(right)
        if not np.allclose(got[both], right[both], atol=1e-9):
            raise Fail(f"accuracy_per_day gives {np.round(got, 3).tolist()}; the labels say "
                       f"{np.round(right, 3).tolist()}.")
    return "Right on 3 hidden logs: joined by id, answered requests only, by the day of the request."
