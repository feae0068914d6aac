"""Checks of lab 09: right answers pass on every seed, plausible wrong ones fail on every seed, with the right
message. The hidden weeks are served offline by the service's own stages (labkit.week.serve_offline)."""

import math

import numpy as np
import pytest

from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed


# -- exercise 1: alarm rules --------------------------------------------------------------------------------------


def rule(name, metric, op, threshold, window, hold=0):
    return {"name": name, "metric": metric, "op": op, "threshold": threshold, "window": window, "for": hold}


RULES = [
    rule("OutlierBurst", "outlier_rate", ">", 0.25, 3),
    rule("AdversarialBurst", "adversarial_rate", ">", 0.2, 3),
    rule("ServerErrors", "error_rate", ">", 0.02, 1),
    rule("InputDrift", "drift_p", "<", 0.001, 3),
]


def test_alarm_rules_pass():
    assert_passes_on_every_seed("09.alarms", RULES)


@pytest.mark.parametrize("wrong, words", [
    (RULES[:2] + RULES[3:], "bad_deploy"),  # no rule on the model's errors
    ([r if r["metric"] != "adversarial_rate" else rule("AdversarialBurst", "adversarial_rate", ">", 0.05, 1)
      for r in RULES], "false alarm"),  # one hour's rate at night jumps on one flagged row
    ([r if r["metric"] != "drift_p" else rule("InputDrift", "drift_p", "<", 0.001, 3, 12) for r in RULES],
     "drift"),  # `for` too long: caught too late
    ([r if r["metric"] != "drift_p" else rule("InputDrift", "drift_p", ">", 0.001, 3) for r in RULES],
     "drift"),  # the comparison the wrong way round
    ([r if r["metric"] != "outlier_rate" else rule("OutlierBurst", "outlier_rate", ">", 0.9, 3) for r in RULES],
     "outliers"),  # a threshold no burst reaches
    ([rule("Everything", "error_rate", ">", 0.0, 1)], "miss"),
])
def test_alarm_rules_wrong(wrong, words):
    assert_fails_on_every_seed("09.alarms", wrong, words)


def test_alarm_rules_malformed():
    for wrong, words in [("not rules", "list of dicts"), ([{"name": "A"}], "lacks"),
                         ([rule("A", "latency", ">", 1, 1)], "unknown metric"),
                         ([rule("A", "error_rate", ">", 0.1, 0)], "window"),
                         ([RULES[0], RULES[0]], "same name")]:
        assert_fails_on_every_seed("09.alarms", wrong, words, seeds=range(2))


# -- exercise 2: the promotion decision ---------------------------------------------------------------------------


def decide(baseline, canary):
    """The notebook's solution."""
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] >= 30 else side["estimated_accuracy"]

    def error_rate(side):
        return side["server_errors"] / side["requests"]

    ok = (error_rate(canary) <= error_rate(baseline) + 0.01 and canary["p99_ms"] <= 1.25 * baseline["p99_ms"]
          and accuracy(canary) >= accuracy(baseline) - 0.02)
    return "promote" if ok else "rollback"


def labels_only(baseline, canary):
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] else 0.0

    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["p99_ms"] <= 1.25 * baseline["p99_ms"] and accuracy(canary) >= accuracy(baseline) - 0.02)
    return "promote" if ok else "rollback"


def labels_when_any(baseline, canary):
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] > 0 else side["estimated_accuracy"]

    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["p99_ms"] <= 1.25 * baseline["p99_ms"] and accuracy(canary) >= accuracy(baseline) - 0.02)
    return "promote" if ok else "rollback"


def error_counts(baseline, canary):
    ok = (canary["server_errors"] <= baseline["server_errors"] and canary["p99_ms"] <= 1.25 * baseline["p99_ms"]
          and canary["estimated_accuracy"] >= baseline["estimated_accuracy"] - 0.02)
    return "promote" if ok else "rollback"


def accuracy_only(baseline, canary):
    return "promote" if canary["estimated_accuracy"] >= baseline["estimated_accuracy"] - 0.02 else "rollback"


def ignores_latency(baseline, canary):
    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["estimated_accuracy"] >= baseline["estimated_accuracy"] - 0.02)
    return "promote" if ok else "rollback"


def written_otherwise(baseline, canary):
    """The same rule, every comparison written another way round (the borders are exact in floating point)."""
    def accuracy(side):
        if side["labelled"] < 30:
            return side["estimated_accuracy"]
        return side["correct"] / side["labelled"]

    rise = canary["server_errors"] / canary["requests"] - baseline["server_errors"] / baseline["requests"]
    if rise > 0.01 or canary["p99_ms"] / baseline["p99_ms"] > 1.25 or accuracy(baseline) - accuracy(canary) > 0.02:
        return "rollback"
    return "promote"


def written_with_numpy(baseline, canary):
    b, c = ({k: np.float64(v) for k, v in side.items()} for side in (baseline, canary))

    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] >= 30 else side["estimated_accuracy"]

    ok = (c["server_errors"] / c["requests"] - 0.01 <= b["server_errors"] / b["requests"]
          and c["p99_ms"] - 1.25 * b["p99_ms"] <= 0 and accuracy(c) + 0.02 >= accuracy(b))
    return "promote" if bool(ok) else "rollback"


def test_promotion_passes():
    for right in (decide, written_otherwise, written_with_numpy):
        assert_passes_on_every_seed("09.promotion", right)


def never_reads_labels(baseline, canary):
    """Judges accuracy on the confidence-based estimate alone (issue 28: passed 20 of 20 seeds)."""
    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["p99_ms"] <= 1.25 * baseline["p99_ms"]
          and canary["estimated_accuracy"] >= baseline["estimated_accuracy"] - 0.02)
    return "promote" if ok else "rollback"


def without_tolerances(baseline, canary):
    """No worse at all, instead of no worse than the tolerances (passed about half the seeds)."""
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] >= 30 else side["estimated_accuracy"]

    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"]
          and canary["p99_ms"] <= baseline["p99_ms"] and accuracy(canary) >= accuracy(baseline))
    return "promote" if ok else "rollback"


def must_beat_baseline(baseline, canary):
    """Demands that the canary beat the baseline by the tolerances (passed about half the seeds)."""
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] >= 30 else side["estimated_accuracy"]

    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] - 0.01
          and canary["p99_ms"] <= baseline["p99_ms"] / 1.25 and accuracy(canary) >= accuracy(baseline) + 0.02)
    return "promote" if ok else "rollback"


def must_beat_on_accuracy(baseline, canary):
    """The accuracy guardrail read as "better by 2 points" (passed about half the seeds)."""
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] >= 30 else side["estimated_accuracy"]

    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["p99_ms"] <= 1.25 * baseline["p99_ms"] and accuracy(canary) >= accuracy(baseline) + 0.02)
    return "promote" if ok else "rollback"


def strict_borders(baseline, canary):
    """'<' where the rule says 'at most' and '>' where it says 'at least': wrong exactly at each guardrail."""
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] >= 30 else side["estimated_accuracy"]

    ok = (canary["server_errors"] / canary["requests"] < baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["p99_ms"] < 1.25 * baseline["p99_ms"] and accuracy(canary) > accuracy(baseline) - 0.02)
    return "promote" if ok else "rollback"


def strict_on_accuracy(baseline, canary):
    """'>' where the accuracy rule says 'at least' (the mutant that survived the 0.7 / 0.68 border)."""
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] >= 30 else side["estimated_accuracy"]

    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["p99_ms"] <= 1.25 * baseline["p99_ms"] and accuracy(canary) > accuracy(baseline) - 0.02)
    return "promote" if ok else "rollback"


def both_sides_on_estimates(baseline, canary):
    """The old hint 3: with too few canary labels, the estimate for both sides (the rule is per side)."""
    if canary["labelled"] >= 30:
        a_c, a_b = canary["correct"] / canary["labelled"], baseline["correct"] / baseline["labelled"]
    else:
        a_c, a_b = canary["estimated_accuracy"], baseline["estimated_accuracy"]
    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["p99_ms"] <= 1.25 * baseline["p99_ms"] and a_c >= a_b - 0.02)
    return "promote" if ok else "rollback"


def more_than_30_labels(baseline, canary):
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] > 30 else side["estimated_accuracy"]

    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.01
          and canary["p99_ms"] <= 1.25 * baseline["p99_ms"] and accuracy(canary) >= accuracy(baseline) - 0.02)
    return "promote" if ok else "rollback"


def looser_tolerances(baseline, canary):
    """Tolerances of 2 points, 1.3 and 3 points: right far from the borders only."""
    def accuracy(side):
        return side["correct"] / side["labelled"] if side["labelled"] >= 30 else side["estimated_accuracy"]

    ok = (canary["server_errors"] / canary["requests"] <= baseline["server_errors"] / baseline["requests"] + 0.02
          and canary["p99_ms"] <= 1.3 * baseline["p99_ms"] and accuracy(canary) >= accuracy(baseline) - 0.03)
    return "promote" if ok else "rollback"


@pytest.mark.parametrize("wrong", [labels_only, labels_when_any, error_counts, accuracy_only, ignores_latency,
                                   never_reads_labels, without_tolerances, must_beat_baseline, must_beat_on_accuracy,
                                   strict_borders, strict_on_accuracy,
                                   both_sides_on_estimates, more_than_30_labels, looser_tolerances,
                                   lambda b, c: "promote", lambda b, c: "rollback", lambda b, c: True])
def test_promotion_wrong(wrong):
    assert_fails_on_every_seed("09.promotion", wrong, "guardrails say|return 'promote'|raised")


def test_promotion_hidden_cases_hold_the_lessons():
    """Every seed has cases where labels and the estimate disagree, and cases exactly at each guardrail."""
    from labkit.checks.lab09 import _promotion_cases, reference_decision

    for seed in range(20):
        cases = _promotion_cases(np.random.default_rng(seed))
        disagree = [c for _, c, _ in cases if c["labelled"] >= 30
                    and abs(c["correct"] / c["labelled"] - c["estimated_accuracy"]) > 0.1]
        assert len(disagree) >= 3
        at = [why for b, c, why in cases if "exactly" in why]
        assert len(at) >= 5 and all(reference_decision(b, c) == "promote" for b, c, why in cases if "exactly" in why
                                    and "labels saying" not in why)


# -- exercise 3: the late-label join ------------------------------------------------------------------------------


def accuracy_per_day(predictions, labels):
    """The notebook's solution."""
    answered = {r: (t, p) for r, t, p, s in zip(predictions["request_id"], predictions["t"], predictions["predict"],
                                                predictions["status"], strict=False) if s == 200}
    right, seen = [0] * 7, [0] * 7
    for r, label in zip(labels["request_id"], labels["label"], strict=False):
        if r in answered:
            t, p = answered[r]
            seen[int(t // 24)] += 1
            right[int(t // 24)] += p == label
    return [r / s if s else math.nan for r, s in zip(right, seen, strict=False)]


def with_pandas(predictions, labels):
    import pandas as pd

    joined = pd.DataFrame(predictions).query("status == 200").merge(pd.DataFrame(labels), on="request_id")
    joined["day"] = (joined["t"] // 24).astype(int)
    per_day = (joined["predict"] == joined["label"]).groupby(joined["day"]).mean()
    return per_day.reindex(range(7)).tolist()


def by_position(predictions, labels):
    right, seen = [0] * 7, [0] * 7
    for t, p, s, label in zip(predictions["t"], predictions["predict"], predictions["status"], labels["label"],
                              strict=False):
        if s == 200:
            seen[int(t // 24)] += 1
            right[int(t // 24)] += p == label
    return [r / s if s else math.nan for r, s in zip(right, seen, strict=False)]


def by_arrival_day(predictions, labels):
    answered = {r: p for r, p, s in zip(predictions["request_id"], predictions["predict"], predictions["status"],
                                        strict=False)
                if s == 200}
    right, seen = [0] * 7, [0] * 7
    for r, label, arrived in zip(labels["request_id"], labels["label"], labels["arrived"], strict=False):
        if r in answered and arrived < 168:
            seen[int(arrived // 24)] += 1
            right[int(arrived // 24)] += answered[r] == label
    return [r / s if s else math.nan for r, s in zip(right, seen, strict=False)]


def failed_count_as_wrong(predictions, labels):
    logged = {r: (t, p) for r, t, p in zip(predictions["request_id"], predictions["t"], predictions["predict"],
                                           strict=False)}
    right, seen = [0] * 7, [0] * 7
    for r, label in zip(labels["request_id"], labels["label"], strict=False):
        if r in logged:
            t, p = logged[r]
            seen[int(t // 24)] += 1
            right[int(t // 24)] += p == label
    return [r / s if s else math.nan for r, s in zip(right, seen, strict=False)]


def zero_for_empty_days(predictions, labels):
    return [0.0 if np.isnan(a) else a for a in accuracy_per_day(predictions, labels)]


def over_all_requests(predictions, labels):
    answered = {r: (t, p) for r, t, p, s in zip(predictions["request_id"], predictions["t"], predictions["predict"],
                                                predictions["status"], strict=False) if s == 200}
    right, seen = [0] * 7, [0] * 7
    for t, s in zip(predictions["t"], predictions["status"], strict=False):
        seen[int(t // 24)] += s == 200
    for r, label in zip(labels["request_id"], labels["label"], strict=False):
        if r in answered:
            right[int(answered[r][0] // 24)] += answered[r][1] == label
    return [r / s if s else math.nan for r, s in zip(right, seen, strict=False)]


def test_late_labels_pass():
    assert_passes_on_every_seed("09.late_labels", accuracy_per_day)
    assert_passes_on_every_seed("09.late_labels", with_pandas)


@pytest.mark.parametrize("wrong", [by_position, by_arrival_day, failed_count_as_wrong, zero_for_empty_days,
                                   over_all_requests, lambda p, labels: [0.9] * 7, lambda p, labels: 0.9])
def test_late_labels_wrong(wrong):
    assert_fails_on_every_seed("09.late_labels", wrong, "accuracy_per_day")
