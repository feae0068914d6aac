"""Checks of lab 04, "Ship it safely": a rollout policy, shadow disagreement with its uncertainty, a traffic split."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.stats import binomtest

from labkit.checks import Fail, call, expect_function, number, register, safe_repr
from labkit.router import sticky_unit

DECISIONS = ("promote", "hold", "rollback")
CI_METHODS = ("wilson", "exact")  # scipy's names: Wilson's score interval, Clopper-Pearson's exact interval


# -- exercise 1: a rollout policy ------------------------------------------------------------------------------
def reference_policy(windows: list[dict], guardrails: dict) -> str:
    """rollback if a judged window fails, promote if every window was judged and passed, hold otherwise."""
    judged_all = True
    for w in windows:
        if w["requests"] < guardrails["min_requests"]:
            judged_all = False
            continue
        if w["errors"] / w["requests"] > guardrails["max_error_rate"] or w["p95"] > guardrails["max_p95"]:
            return "rollback"
    return "promote" if judged_all else "hold"


def _guardrails(rng) -> dict:
    return {"max_error_rate": float(rng.choice([0.01, 0.02, 0.03, 0.05])),
            "max_p95": float(rng.choice([0.08, 0.15, 0.25, 0.4])),
            "min_requests": int(rng.choice([40, 80, 150, 300]))}


def _window(rng, g, requests, error_share, p95_share) -> dict:
    """A window whose error rate and p95 are the given shares of the guardrails' limits."""
    errors = int(math.floor(requests * g["max_error_rate"] * error_share))
    return {"requests": int(requests), "errors": errors, "p95": round(g["max_p95"] * p95_share, 4)}


def policy_scenarios(rng) -> list[tuple[str, list[dict], dict]]:
    """(kind, windows, guardrails): each kind of rollout the lab talks about, with hidden numbers."""
    cases = []
    n = int(rng.integers(5, 9))

    def busy(g):
        return int(g["min_requests"] * rng.uniform(3, 10))

    g = _guardrails(rng)  # a good candidate: some errors, some latency, all under the limits
    cases.append(("good", [_window(rng, g, busy(g), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9))
                           for _ in range(n)], g))
    g = {"max_error_rate": 0.05, "max_p95": 0.4, "min_requests": 300}  # limits far from any usual default
    cases.append(("good, loose limits", [_window(rng, g, 1000 + 50 * i, 0.85, 0.85) for i in range(n)], g))
    g = _guardrails(rng)  # slow degradation: the latency creeps up; only the last window is over; the mean is not
    shares = np.linspace(0.3, 1.0, n)
    shares[-1] = rng.uniform(1.15, 1.35)
    cases.append(("slow degradation (latency)",
                  [_window(rng, g, busy(g), 0.3, s) for s in shares], g))
    g = _guardrails(rng)  # slow degradation of the error rate, the same way
    shares = np.linspace(0.2, 1.0, n)
    shares[-1] = rng.uniform(1.3, 1.6)
    windows = [_window(rng, g, busy(g), s, 0.4) for s in shares]
    _over_error_limit(windows[-1], g)
    cases.append(("slow degradation (errors)", windows, g))
    g = _guardrails(rng)  # a sudden failure in one window, then it looks fine again (a crash and a restart)
    windows = [_window(rng, g, busy(g), 0.2, 0.4) for _ in range(n)]
    spike = int(rng.integers(1, n - 1))
    windows[spike] = _window(rng, g, g["min_requests"] * 1.5, rng.uniform(3, 6), 0.5)
    cases.append(("sudden failure", windows, g))
    g = _guardrails(rng)  # too little traffic: nothing to judge by, and the few errors prove nothing
    windows = [_window(rng, g, g["min_requests"] * rng.uniform(0.2, 0.9), 0.0, 0.5) for _ in range(n)]
    windows[int(rng.integers(n))]["errors"] = 1
    windows[-1]["requests"] = int(max(2, g["min_requests"] // 4))
    windows[-1]["errors"] = 1  # a 1-in-a-few error rate, far over the limit, in a window too small to judge
    cases.append(("too little traffic", windows, g))
    g = _guardrails(rng)  # mostly judged and passing, but one window too small: not yet enough to promote
    windows = [_window(rng, g, busy(g), 0.5, 0.5) for _ in range(n)]
    windows[int(rng.integers(n))]["requests"] = int(g["min_requests"] - 1)
    cases.append(("one window too small", windows, g))
    g = _guardrails(rng)  # too small to judge, then a failure: holding at the first thin window misses it
    windows = [_window(rng, g, busy(g), 0.5, 0.5) for _ in range(n)]
    thin = int(rng.integers(0, n - 3))
    failing = int(rng.integers(thin + 1, n - 1))
    windows[thin] = _window(rng, g, g["min_requests"] * rng.uniform(0.2, 0.9), 0.0, 0.5)
    if rng.random() < 0.5:
        windows[failing] = _over_error_limit(_window(rng, g, busy(g), rng.uniform(1.5, 3), 0.5), g)
    else:
        windows[failing] = _window(rng, g, busy(g), 0.5, rng.uniform(1.2, 1.5))
    windows[-1] = _window(rng, g, g["min_requests"] // 2, 0.0, 0.5)  # and one after it, also too small
    cases.append(("a window too small, then a failing one", windows, g))
    # Exactly at each limit, which is not over it (the exercise: a window fails if it is over the limit; one with
    # fewer than min_requests cannot be judged), and just over them.
    g = _guardrails(rng)
    windows = [_window(rng, g, busy(g), 0.5, 0.5) for _ in range(n)]
    windows[int(rng.integers(n))] = _at_error_limit(rng, g)
    cases.append(("an error rate exactly at max_error_rate", windows, g))
    g = _guardrails(rng)
    windows = [_window(rng, g, busy(g), 0.5, 0.5) for _ in range(n)]
    windows[int(rng.integers(n))]["p95"] = g["max_p95"]
    cases.append(("a p95 exactly at max_p95", windows, g))
    g = _guardrails(rng)
    windows = [_window(rng, g, busy(g), 0.5, 0.5) for _ in range(n)]
    windows[int(rng.integers(n))] = _window(rng, g, g["min_requests"], 0.5, 0.5)
    cases.append(("a window of exactly min_requests", windows, g))
    g = _guardrails(rng)
    windows = [_window(rng, g, busy(g), 0.5, 0.5) for _ in range(n)]
    windows[int(rng.integers(n))] = _window(rng, g, g["min_requests"], 0.0, 0.5)
    over = _at_error_limit(rng, g)
    over["errors"] += 1
    windows[int(rng.integers(n))] = over
    cases.append(("one error over max_error_rate", windows, g))
    g = _guardrails(rng)
    windows = [_window(rng, g, busy(g), 0.5, 0.5) for _ in range(n)]
    windows[int(rng.integers(n))]["p95"] = round(g["max_p95"] + 0.001, 4)
    cases.append(("a p95 1 ms over max_p95", windows, g))
    return cases


def _over_error_limit(window: dict, g) -> dict:
    """At least one error more than ``max_error_rate`` allows (rounding down a share could leave it under)."""
    allowed = math.floor(Fraction(window["requests"]) * Fraction(str(g["max_error_rate"])))
    window["errors"] = max(window["errors"], allowed + 1)
    return window


def _at_error_limit(rng, g) -> dict:
    """A judged window whose error rate is exactly ``max_error_rate``, however it is computed (errors / requests,
    or errors against requests * max_error_rate: both are exact for these numbers)."""
    rate = g["max_error_rate"]
    for _ in range(100):
        requests = 100 * int(rng.integers(2 * g["min_requests"] // 100 + 1, 30))
        errors = round(requests * rate)
        if errors / requests == rate and requests * rate == errors:
            return {"requests": requests, "errors": errors, "p95": round(g["max_p95"] * rng.uniform(0.3, 0.9), 4)}
    raise AssertionError(f"no exact error rate {rate} found")  # not reached for the limits of _guardrails


POLICY_NOTES = {
    "a window too small, then a failing one": " A window too small to judge proves nothing either way: go on to the "
                                              "next windows, and a judged one that fails still means rollback.",
    "an error rate exactly at max_error_rate": " A window fails when its error rate is over the limit; exactly at "
                                               "it is not over.",
    "a p95 exactly at max_p95": " A window fails when its p95 is over the limit; exactly at it is not over.",
    "a window of exactly min_requests": " Only a window with fewer than min_requests requests cannot be judged; "
                                        "one with exactly min_requests can.",
}


@register(
    "04.policy",
    points=2,
    title="A rollout policy",
    hints=(
        "Judge every window on its own, as the rollout's analysis does: a window with fewer requests than "
        "min_requests proves nothing either way, however its errors look (one with exactly min_requests can be "
        "judged), and the windows after it still count.",
        "A judged window fails when its error rate (errors divided by requests, not the count of errors) is over "
        "max_error_rate or its p95 is over max_p95 (exactly at a limit is not over it). One failed window is "
        "enough to roll back, even if later windows look fine again: averages over all windows hide a sudden "
        "failure and a slow degradation.",
        "Three outcomes, in this order: rollback if any judged window failed; promote only if every window was "
        "judged and passed; otherwise hold for a person. Read the limits from guardrails, never hard-code them.",
    ),
)
def policy(answer, rng):
    expect_function(answer, "policy", "windows and guardrails")
    scenarios = policy_scenarios(rng)
    for kind, windows, g in scenarios:
        expected = reference_policy(windows, g)
        shown = f"policy(<{len(windows)} windows: {kind}>, {g})"
        got = call(answer, shown, [dict(w) for w in windows], dict(g))
        if not isinstance(got, str) or got.strip().lower() not in DECISIONS:
            raise Fail(f"{shown} returned {safe_repr(got)}; return one of {', '.join(map(repr, DECISIONS))}.")
        if got.strip().lower() != expected:
            rows = "\n".join(f"  {w}" for w in windows)
            raise Fail(f"{shown} returned {got!r}, but the right decision is {expected!r}.{POLICY_NOTES.get(kind, '')}"
                       f" The windows:\n{rows}")
    return (f"Right decisions for {len(scenarios)} hidden rollouts: good, degrading, failing, too quiet to judge, "
            "and exactly at the limits.")


# -- exercise 2: shadow disagreement with a confidence interval ----------------------------------------------
def _entry(request_id, role, version, labels, status=200):
    outputs = None
    if status == 200:
        outputs = [{"name": "label", "datatype": "BYTES", "shape": [len(labels), 1], "data": list(labels)},
                   {"name": "probabilities", "datatype": "FP64", "shape": [len(labels), 2],
                    "data": [0.5] * (2 * len(labels))}]
    return {"id": request_id, "role": role, "version": version, "status": status, "outputs": outputs}


def shadow_log(rng, requests: int, rate: float, multi_rows: bool = True) -> tuple[list[dict], int, int]:
    """A payload log of a shadow run: (entries in the order they were written, rows compared, rows differing)."""
    classes = np.array(["malignant", "benign"])
    entries, shadows, compared, differing = [], [], 0, 0
    for i in range(requests):
        rid = f"req-{rng.integers(16**8):08x}-{i}"
        rows = int(rng.integers(1, 6)) if multi_rows and rng.random() < 0.4 else 1
        primary = classes[rng.integers(2, size=rows)]
        flips = rng.random(rows) < rate
        shadow = np.where(flips, classes[1 - (primary == classes[1]).astype(int)], primary)
        entries.append(_entry(rid, "primary", "v1", primary.tolist()))
        mirrored = rng.random() < 0.85  # mirror < 1: some requests have no shadow at all
        if not mirrored:
            continue
        failed = rng.random() < 0.08  # a mirrored call that timed out: no outputs to compare
        shadows.append(_entry(rid, "shadow", "v2", shadow.tolist(), 504 if failed else 200))
        if not failed:
            compared += rows
            differing += int(flips.sum())
    # Shadow answers are written when they arrive: later, and out of order.
    order = rng.permutation(len(shadows))
    for k, j in enumerate(order):
        entries.insert(min(len(entries), int(rng.integers(k, len(entries) + 1))), shadows[j])
    return entries, compared, differing


def reference_disagreement(entries: list[dict]) -> tuple[float, float, float]:
    primaries = {e["id"]: e for e in entries if e["role"] == "primary" and e.get("outputs")}
    compared = differing = 0
    for e in entries:
        if e["role"] != "shadow" or not e.get("outputs") or e["id"] not in primaries:
            continue
        a = _labels(primaries[e["id"]])
        b = _labels(e)
        compared += len(a)
        differing += sum(x != y for x, y in zip(a, b, strict=True))
    ci = binomtest(differing, compared).proportion_ci(0.95, method="wilson")
    return differing / compared, ci.low, ci.high


def _labels(entry: dict) -> list:
    return next(o["data"] for o in entry["outputs"] if o["name"] == "label")


@register(
    "04.disagreement",
    points=2,
    title="Shadow disagreement with a confidence interval",
    hints=(
        "Join the two answers to one request by its id, not by their order in the log: a shadow's answer is "
        "written when it arrives, later and out of order. Only requests with both a primary and a shadow answer "
        "that carries outputs count (a mirrored call that timed out has none).",
        "Count rows, not requests: a request may carry several rows, and each row's label is compared on its own. "
        "The rate is differing rows divided by compared rows.",
        "The interval is a binomial proportion's 95 % interval for (differing, compared): Wilson's score "
        "interval (scipy: binomtest(k, n).proportion_ci(method='wilson')); the normal approximation p ± 1.96·se "
        "fails for small counts and rates near 0.",
    ),
)
def disagreement(answer, rng):
    expect_function(answer, "shadow_disagreement", "a payload log (a list of entries)")
    cases = [(int(rng.integers(200, 500)), rng.uniform(0.03, 0.2), True),
             (int(rng.integers(25, 40)), rng.uniform(0.02, 0.05), False),  # few rows, a rate near 0
             (int(rng.integers(60, 150)), rng.uniform(0.2, 0.5), True)]
    for requests, rate, multi in cases:
        entries, compared, differing = shadow_log(rng, requests, rate, multi)
        if differing == 0:  # keep the small case informative
            entries, compared, differing = shadow_log(rng, requests, 0.08, multi)
        shown = f"shadow_disagreement(<payload log of {requests} requests>)"
        got = call(answer, shown, [dict(e) for e in entries])
        try:
            rate_got, low, high = (number(v, shown) for v in got)
        except (TypeError, ValueError):
            raise Fail(f"{shown} returned {safe_repr(got)}; return (rate, low, high).") from None
        expected = differing / compared
        if abs(rate_got - expected) > 1e-9:
            raise Fail(f"{shown}: the disagreement rate is {rate_got:.4f}, not the share of compared rows whose "
                       f"labels differ ({differing} of {compared} = {expected:.4f}).")
        if not low <= rate_got <= high:
            raise Fail(f"{shown}: ({low:.4f}, {high:.4f}) does not contain the rate {rate_got:.4f}.")
        result = binomtest(differing, compared)
        if not any(abs(low - ci.low) < 1e-6 and abs(high - ci.high) < 1e-6
                   for ci in (result.proportion_ci(0.95, method=m) for m in CI_METHODS)):
            wilson = result.proportion_ci(0.95, method="wilson")
            raise Fail(f"{shown}: the 95 % interval for {differing} of {compared} rows is "
                       f"({wilson.low:.4f}, {wilson.high:.4f}) by Wilson's method, not ({low:.4f}, {high:.4f}).")
    return "Right rate and 95 % interval on 3 hidden payload logs, joined by request id, row by row."


# -- exercise 3: a traffic split ----------------------------------------------------------------------------------
def split_log(rng, requests: int, weight: float, share: float, switch: int = 0) -> list[dict]:
    """Requests a router answered: a share ``share`` of the unsticky ones to v2, sticky clients by their hash
    (as labkit.router does), and ``switch`` sticky clients that were moved once (a broken router)."""
    clients = [f"client-{rng.integers(10**6)}-{i}" for i in range(int(rng.integers(15, 40)))]
    on_candidate = [sticky_unit(c) < weight for c in clients]
    who = np.where(rng.random(requests) < 0.3, rng.integers(len(clients), size=requests), -1)
    drawn = rng.random(requests) < share
    entries = [{"id": f"r{i}", "session": clients[c] if c >= 0 else None,
                "version": "v2" if (on_candidate[c] if c >= 0 else d) else "v1"}
               for i, (c, d) in enumerate(zip(who.tolist(), drawn.tolist(), strict=True))]
    sticky = [e for e in entries if e["session"]]
    for client in list(dict.fromkeys(e["session"] for e in sticky))[:switch]:
        mine = [e for e in sticky if e["session"] == client]
        last = mine[-1]
        if len(mine) < 2:
            entries.append({"id": f"r{len(entries)}", "session": client, "version": last["version"]})
            mine.append(entries[-1])
        mine[-1]["version"] = "v1" if mine[0]["version"] == "v2" else "v2"
    return entries


def reference_split(entries, candidate, weight, alpha=0.01) -> dict:
    free = [e for e in entries if e["session"] is None]  # independent draws; a sticky client's requests are not
    hits = sum(e["version"] == candidate for e in free)
    p_value = float(binomtest(hits, len(free), weight).pvalue)
    seen: dict[str, set] = {}
    for e in entries:
        if e["session"] is not None:
            seen.setdefault(e["session"], set()).add(e["version"])
    return {"share": hits / len(free), "p_value": p_value, "consistent": p_value >= alpha,
            "switched": sorted(c for c, versions in seen.items() if len(versions) > 1)}


@register(
    "04.split",
    points=2,
    title="Is the traffic split right?",
    hints=(
        "Two questions about one log. Is the share of requests that reached the candidate what its weight "
        "promises, given how many requests there were? And did any sticky client (a session header) see more "
        "than one version? The first is about requests without a session: a sticky client's requests all go "
        "the same way, so they are not independent draws.",
        "The number of requests to the candidate is binomial(n, weight) when the router works, so a binomial "
        "test gives the p-value (two-sided: too few is as wrong as too many), and consistent means p_value >= "
        "alpha. A fixed tolerance on the share is too strict for small n and too loose for large n.",
        "Requests without a session (None) are not a client: leave them out of the sticky check. switched lists "
        "each client that saw more than one version once, sorted.",
    ),
)
def split(answer, rng):
    expect_function(answer, "audit_split", "a log, the candidate's name, its weight and alpha")
    weight = float(rng.choice([0.1, 0.2, 0.3, 0.5]))
    # (kind, requests, the share the router really sends, clients it moves, how far the share must be from the
    # weight: far in a small sample that is still consistent, near in a large one that is not; alpha: a number,
    # or "at" for exactly the log's p-value, which is consistent since consistent means p_value >= alpha)
    cases = [("a working router, many requests", int(rng.integers(2000, 4000)), weight, 0, None, 0.01),
             ("a working router, few requests", int(rng.integers(40, 60)), weight, 0, "far", 0.01),
             ("a router that sends a little too much to the candidate", 12000, weight + 0.015, 0, "near", 0.01),
             ("a router that moved sticky clients", int(rng.integers(500, 1000)), weight, int(rng.integers(1, 4)),
              None, 0.01),
             ("a router a little off, judged at alpha 0.05", int(rng.integers(1500, 3000)), weight + 0.02, 0,
              "between", 0.05),
             ("alpha exactly at the p-value", int(rng.integers(300, 800)), weight, 0, None, "at")]
    for kind, n, share, switch, distance, alpha in cases:
        for _ in range(200):  # a draw that a working router could have made, and vice versa
            entries = split_log(rng, n, weight, share, switch)
            expected = reference_split(entries, "v2", weight)
            off = abs(expected["share"] - weight)
            if distance == "between":
                if 0.01 <= expected["p_value"] < 0.05:
                    break
            elif expected["consistent"] == (share == weight) and (
                    distance is None or (off >= 0.03 if distance == "far" else off < 0.02)):
                break
        if alpha == "at":
            alpha = expected["p_value"]
        expected = reference_split(entries, "v2", weight, alpha)
        shown = f"audit_split(<log of {len(entries)} requests: {kind}>, 'v2', {weight}, alpha={alpha:.6g})"
        got = call(answer, shown, [dict(e) for e in entries], "v2", weight, alpha=alpha)
        if not isinstance(got, dict) or set(expected) - set(got):
            raise Fail(f"{shown} returned {safe_repr(got)}; return a dict with share, p_value, consistent and "
                       "switched.")
        if abs(number(got["share"], "share") - expected["share"]) > 1e-9:
            raise Fail(f"{shown}: share is the fraction of the requests without a session answered by the candidate "
                       f"({expected['share']:.4f}), not {safe_repr(got['share'])}.")
        p_value = number(got["p_value"], "p_value")
        if not math.isclose(p_value, expected["p_value"], rel_tol=1e-6, abs_tol=1e-9):
            free = sum(e["session"] is None for e in entries)
            raise Fail(f"{shown}: p_value {p_value:.4g} is not the two-sided binomial test's "
                       f"({expected['p_value']:.4g}) for {round(expected['share'] * free)} of the {free} "
                       f"requests without a session at weight {weight}.")
        if not isinstance(got["consistent"], (bool, np.bool_)):
            raise Fail(f"{shown}: consistent should be True or False, not {safe_repr(got['consistent'])}.")
        if bool(got["consistent"]) != expected["consistent"]:
            raise Fail(f"{shown}: consistent should be {expected['consistent']} (p_value "
                       f"{expected['p_value']:.6g} against alpha {alpha:.6g}: consistent means p_value >= alpha).")
        try:
            switched = sorted(got["switched"])
        except TypeError:
            raise Fail(f"{shown}: switched should be a list of client ids, not {safe_repr(got['switched'])}.") \
                from None
        if switched != expected["switched"] or len(got["switched"]) != len(expected["switched"]):
            raise Fail(f"{shown}: switched should list the {len(expected['switched'])} sticky client(s) that saw "
                       f"more than one version, once each, not {safe_repr(got['switched'])}.")
    return (f"Right share, binomial p-value and sticky-client audit on {len(cases)} hidden logs, good routers and "
            "broken ones, at two alphas and exactly at one.")
