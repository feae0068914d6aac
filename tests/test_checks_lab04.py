"""Checks of lab 04: the notebook's answers pass on every seed, plausible wrong ones fail on every seed."""

import numpy as np
from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed
from scipy.stats import binomtest

from labkit.checks import check, lab04


# -- exercise 1: policy ---------------------------------------------------------------------------------------
def policy(windows, guardrails):
    """The notebook's solution."""
    decided_all = True
    for w in windows:
        if w["requests"] < guardrails["min_requests"]:
            decided_all = False
        elif w["errors"] / w["requests"] > guardrails["max_error_rate"] or w["p95"] > guardrails["max_p95"]:
            return "rollback"
    return "promote" if decided_all else "hold"


def policy_on_averages(windows, guardrails):
    requests = sum(w["requests"] for w in windows)
    if requests < guardrails["min_requests"] * len(windows):
        return "hold"
    rate = sum(w["errors"] for w in windows) / requests
    p95 = np.mean([w["p95"] for w in windows])
    return "rollback" if rate > guardrails["max_error_rate"] or p95 > guardrails["max_p95"] else "promote"


def policy_on_last_window(windows, guardrails):
    return policy(windows[-1:], guardrails)


def policy_without_min_requests(windows, guardrails):
    return policy(windows, {**guardrails, "min_requests": 0})


def policy_too_little_traffic_is_a_failure(windows, guardrails):
    return "rollback" if policy(windows, guardrails) == "hold" else policy(windows, guardrails)


def policy_counts_errors(windows, guardrails):
    for w in windows:
        if w["requests"] >= guardrails["min_requests"] and (
                w["errors"] > guardrails["max_error_rate"] or w["p95"] > guardrails["max_p95"]):
            return "rollback"
    return "promote" if all(w["requests"] >= guardrails["min_requests"] for w in windows) else "hold"


def policy_hard_coded(windows, guardrails):
    return policy(windows, {"max_error_rate": 0.02, "max_p95": 0.25, "min_requests": 50})


def policy_promotes_on_a_judged_window(windows, guardrails):
    decision = policy(windows, guardrails)
    return "promote" if decision == "hold" else decision


def policy_holds_at_the_first_thin_window(windows, guardrails):
    for w in windows:
        if w["requests"] < guardrails["min_requests"]:
            return "hold"  # and never sees a later window that fails
        if w["errors"] / w["requests"] > guardrails["max_error_rate"] or w["p95"] > guardrails["max_p95"]:
            return "rollback"
    return "promote"


def policy_holds_before_it_judges(windows, guardrails):
    if any(w["requests"] < guardrails["min_requests"] for w in windows):
        return "hold"
    return policy(windows, guardrails)


def judged(windows, guardrails, thin, fails):
    """The solution's structure with the comparisons given: thin(requests, min), fails(window, guardrails)."""
    decided_all = True
    for w in windows:
        if thin(w["requests"], guardrails["min_requests"]):
            decided_all = False
        elif fails(w, guardrails):
            return "rollback"
    return "promote" if decided_all else "hold"


def policy_at_the_error_limit_fails(windows, guardrails):
    return judged(windows, guardrails, lambda n, m: n < m, lambda w, g: (
        w["errors"] / w["requests"] >= g["max_error_rate"] or w["p95"] > g["max_p95"]))


def policy_at_the_latency_limit_fails(windows, guardrails):
    return judged(windows, guardrails, lambda n, m: n < m, lambda w, g: (
        w["errors"] / w["requests"] > g["max_error_rate"] or w["p95"] >= g["max_p95"]))


def policy_min_requests_not_enough(windows, guardrails):
    return judged(windows, guardrails, lambda n, m: n <= m, lambda w, g: (
        w["errors"] / w["requests"] > g["max_error_rate"] or w["p95"] > g["max_p95"]))


def policy_with_a_tolerance(windows, guardrails):
    return judged(windows, guardrails, lambda n, m: n < m, lambda w, g: (
        w["errors"] / w["requests"] > 1.1 * g["max_error_rate"] or w["p95"] > 1.01 * g["max_p95"]))


def policy_errors_against_a_product(windows, guardrails):
    """Right too: errors compared with requests x max_error_rate."""
    return judged(windows, guardrails, lambda n, m: n < m, lambda w, g: (
        w["errors"] > w["requests"] * g["max_error_rate"] or w["p95"] > g["max_p95"]))


def test_policy_right_answer_passes():
    assert_passes_on_every_seed("04.policy", policy)
    assert_passes_on_every_seed("04.policy", policy_errors_against_a_product)


def test_policy_boundary_mistakes_fail():
    for wrong, words in [(policy_holds_at_the_first_thin_window, "then a failing one"),
                         (policy_holds_before_it_judges, "then a failing one"),
                         (policy_at_the_error_limit_fails, "exactly at max_error_rate"),
                         (policy_at_the_latency_limit_fails, "exactly at max_p95"),
                         (policy_min_requests_not_enough, "exactly min_requests"),
                         (policy_with_a_tolerance, "right decision")]:
        assert_fails_on_every_seed("04.policy", wrong, words)


POLICY_KINDS = {"good": "promote", "good, loose limits": "promote", "slow degradation (latency)": "rollback",
                "slow degradation (errors)": "rollback", "sudden failure": "rollback", "too little traffic": "hold",
                "one window too small": "hold", "a window too small, then a failing one": "rollback",
                "an error rate exactly at max_error_rate": "promote", "a p95 exactly at max_p95": "promote",
                "a window of exactly min_requests": "promote", "one error over max_error_rate": "rollback",
                "a p95 1 ms over max_p95": "rollback"}


def test_policy_scenarios_are_what_they_say():
    for seed in range(200):
        scenarios = lab04.policy_scenarios(np.random.default_rng(seed))
        assert [kind for kind, _, _ in scenarios] == list(POLICY_KINDS)
        for kind, windows, g in scenarios:
            assert lab04.reference_policy(windows, g) == POLICY_KINDS[kind], (seed, kind)


def test_policy_boundaries_are_exact():
    """The windows at a limit are exactly at it, in the arithmetic a student would use."""
    for seed in range(20):
        for kind, windows, g in lab04.policy_scenarios(np.random.default_rng(seed)):
            if kind == "an error rate exactly at max_error_rate":
                assert any(w["errors"] / w["requests"] == g["max_error_rate"] for w in windows)
            if kind == "a p95 exactly at max_p95":
                assert any(w["p95"] == g["max_p95"] for w in windows)
            if kind == "a window of exactly min_requests":
                assert any(w["requests"] == g["min_requests"] for w in windows)


def test_policy_wrong_answers_fail():
    for wrong in (policy_on_averages, policy_on_last_window, policy_without_min_requests,
                  policy_too_little_traffic_is_a_failure, policy_counts_errors, policy_hard_coded,
                  policy_promotes_on_a_judged_window, lambda w, g: "promote", lambda w, g: "hold"):
        assert_fails_on_every_seed("04.policy", wrong, "right decision")
    assert_fails_on_every_seed("04.policy", lambda w, g: True, "return one of")


# -- exercise 2: shadow disagreement -----------------------------------------------------------------------------
def labels(entry):
    return next(o["data"] for o in entry["outputs"] if o["name"] == "label")


def shadow_disagreement(log):
    """The notebook's solution."""
    primary = {e["id"]: e for e in log if e["role"] == "primary" and e["outputs"]}
    compared = differing = 0
    for e in log:
        if e["role"] == "shadow" and e["outputs"] and e["id"] in primary:
            pairs = list(zip(labels(primary[e["id"]]), labels(e), strict=False))
            compared += len(pairs)
            differing += sum(a != b for a, b in pairs)
    ci = binomtest(differing, compared).proportion_ci(confidence_level=0.95, method="wilson")
    return differing / compared, ci.low, ci.high


def shadow_disagreement_exact(log):
    rate, _, _ = shadow_disagreement(log)
    primary = {e["id"]: e for e in log if e["role"] == "primary"}
    pairs = [(a, b) for e in log if e["role"] == "shadow" and e["outputs"]
             for a, b in zip(labels(primary[e["id"]]), labels(e), strict=False)]
    k = sum(a != b for a, b in pairs)
    ci = binomtest(k, len(pairs)).proportion_ci(method="exact")
    return [rate, ci.low, ci.high]


def wald(k, n):
    p = k / n
    se = np.sqrt(p * (1 - p) / n)
    return p, p - 1.96 * se, p + 1.96 * se


def disagreement_wald(log):
    rate, _, _ = shadow_disagreement(log)
    n = sum(len(labels(e)) for e in log if e["role"] == "shadow" and e["outputs"])
    return wald(round(rate * n), n)


def disagreement_per_request(log):
    primary = {e["id"]: e for e in log if e["role"] == "primary"}
    pairs = [labels(primary[e["id"]]) != labels(e) for e in log if e["role"] == "shadow" and e["outputs"]]
    k, n = sum(pairs), len(pairs)
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return k / n, ci.low, ci.high


def disagreement_failed_shadows_disagree(log):
    primary = {e["id"]: e for e in log if e["role"] == "primary"}
    k = n = 0
    for e in log:
        if e["role"] == "shadow":
            a = labels(primary[e["id"]])
            b = labels(e) if e["outputs"] else [None] * len(a)
            n += len(a)
            k += sum(x != y for x, y in zip(a, b, strict=False))
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return k / n, ci.low, ci.high


def disagreement_joined_by_order(log):
    primaries = [e for e in log if e["role"] == "primary"]
    shadows = [e for e in log if e["role"] == "shadow"]
    k = n = 0
    for p, s in zip(primaries, shadows, strict=False):
        if s["outputs"]:
            pairs = list(zip(labels(p), labels(s), strict=False))
            n += len(pairs)
            k += sum(a != b for a, b in pairs)
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return k / n, ci.low, ci.high


def disagreement_over_all_primary_rows(log):
    _, _, _ = shadow_disagreement(log)
    primary = {e["id"]: e for e in log if e["role"] == "primary"}
    k = sum(a != b for e in log if e["role"] == "shadow" and e["outputs"]
            for a, b in zip(labels(primary[e["id"]]), labels(e), strict=False))
    n = sum(len(labels(e)) for e in primary.values())
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return k / n, ci.low, ci.high


def disagreement_90_percent(log):
    rate, _, _ = shadow_disagreement(log)
    primary = {e["id"]: e for e in log if e["role"] == "primary"}
    pairs = [(a, b) for e in log if e["role"] == "shadow" and e["outputs"]
             for a, b in zip(labels(primary[e["id"]]), labels(e), strict=False)]
    ci = binomtest(sum(a != b for a, b in pairs), len(pairs)).proportion_ci(0.90, method="wilson")
    return rate, ci.low, ci.high


def test_disagreement_right_answers_pass():
    assert_passes_on_every_seed("04.disagreement", shadow_disagreement)
    assert_passes_on_every_seed("04.disagreement", shadow_disagreement_exact)


def test_disagreement_wrong_answers_fail():
    assert_fails_on_every_seed("04.disagreement", disagreement_wald, "interval")
    assert_fails_on_every_seed("04.disagreement", disagreement_90_percent, "95 % interval")
    for wrong in (disagreement_per_request, disagreement_failed_shadows_disagree, disagreement_joined_by_order,
                  disagreement_over_all_primary_rows):
        assert_fails_on_every_seed("04.disagreement", wrong, "disagreement rate")
    assert_fails_on_every_seed("04.disagreement", lambda log: 0.1, "return (rate, low, high)")


# -- exercise 3: traffic split ------------------------------------------------------------------------------------
def audit_split(log, candidate, weight, alpha=0.01):
    """The notebook's solution."""
    free = [e for e in log if e["session"] is None]
    hits = sum(e["version"] == candidate for e in free)
    p_value = binomtest(hits, len(free), weight).pvalue
    versions = {}
    for e in log:
        if e["session"] is not None:
            versions.setdefault(e["session"], set()).add(e["version"])
    switched = sorted(client for client, seen in versions.items() if len(seen) > 1)
    return {"share": hits / len(free), "p_value": p_value, "consistent": bool(p_value >= alpha),
            "switched": switched}


def split_with_a_tolerance(log, candidate, weight, alpha=0.01):
    result = audit_split(log, candidate, weight, alpha)
    return {**result, "consistent": abs(result["share"] - weight) < 0.02}


def split_normal_approximation(log, candidate, weight, alpha=0.01):
    from scipy.stats import norm

    result = audit_split(log, candidate, weight, alpha)
    n = sum(e["session"] is None for e in log)
    z = (result["share"] - weight) / np.sqrt(weight * (1 - weight) / n)
    p_value = 2 * norm.sf(abs(z))
    return {**result, "p_value": p_value, "consistent": bool(p_value >= alpha)}


def split_one_sided(log, candidate, weight, alpha=0.01):
    result = audit_split(log, candidate, weight, alpha)
    free = [e for e in log if e["session"] is None]
    hits = sum(e["version"] == candidate for e in free)
    p_value = binomtest(hits, len(free), weight, alternative="greater").pvalue
    return {**result, "p_value": p_value, "consistent": bool(p_value >= alpha)}


def split_over_all_requests(log, candidate, weight, alpha=0.01):
    hits = sum(e["version"] == candidate for e in log)
    p_value = binomtest(hits, len(log), weight).pvalue
    result = audit_split(log, candidate, weight, alpha)
    return {**result, "share": hits / len(log), "p_value": p_value, "consistent": bool(p_value >= alpha)}


def split_sessionless_are_one_client(log, candidate, weight, alpha=0.01):
    versions = {}
    for e in log:
        versions.setdefault(str(e["session"]), set()).add(e["version"])
    switched = sorted(client for client, seen in versions.items() if len(seen) > 1)
    return {**audit_split(log, candidate, weight, alpha), "switched": switched}


def split_switched_per_request(log, candidate, weight, alpha=0.01):
    result = audit_split(log, candidate, weight, alpha)
    first = {}
    moved = []
    for e in log:
        if e["session"] is not None:
            first.setdefault(e["session"], e["version"])
            if e["version"] != first[e["session"]]:
                moved.append(e["session"])
    return {**result, "switched": moved + moved}


def split_never_switched(log, candidate, weight, alpha=0.01):
    return {**audit_split(log, candidate, weight, alpha), "switched": []}


def split_ignores_alpha(log, candidate, weight, alpha=0.01):
    return audit_split(log, candidate, weight)


def split_consistent_only_above_alpha(log, candidate, weight, alpha=0.01):
    result = audit_split(log, candidate, weight, alpha)
    return {**result, "consistent": bool(result["p_value"] > alpha)}


def test_split_right_answer_passes():
    assert_passes_on_every_seed("04.split", audit_split)


def test_split_wrong_answers_fail():
    assert_fails_on_every_seed("04.split", split_with_a_tolerance, "consistent should be")
    assert_fails_on_every_seed("04.split", split_normal_approximation, "binomial test")
    assert_fails_on_every_seed("04.split", split_one_sided, "two-sided")
    assert_fails_on_every_seed("04.split", split_over_all_requests, "without a session")
    for wrong in (split_sessionless_are_one_client, split_switched_per_request, split_never_switched):
        assert_fails_on_every_seed("04.split", wrong, "switched should list")
    for wrong in (split_ignores_alpha, split_consistent_only_above_alpha):
        assert_fails_on_every_seed("04.split", wrong, "p_value >= alpha")


def test_checks_never_raise_on_odd_answers():
    for name in ("04.policy", "04.disagreement", "04.split"):
        for answer in (None, 3, "promote", lambda *a, **k: None, lambda *a, **k: 1 / 0, lambda *a, **k: {}):
            feedback = check(name, answer, seed=0)
            assert feedback.status in ("failed", "not_attempted"), (name, feedback.message)
