"""Lab 09's parts: the week, the rules and their Prometheus form, CBPE, and the served runtime (one server)."""

import json

import numpy as np
import pytest

from labkit import monitor
from labkit import week as wk
from labkit.client import Client, InferenceServerError
from labkit.serving import Server


@pytest.fixture(scope="module")
def pipeline():
    return wk._default_pipeline()


def test_a_week_is_seeded_and_tells_its_incidents(pipeline):
    a, b = wk.make_week(3, pipeline), wk.make_week(3, pipeline)
    assert np.array_equal(a.X, b.X) and list(a.request_id) == list(b.request_id)
    assert [i.kind for i in a.incidents] == list(wk.INCIDENT_KINDS)
    assert np.all(np.diff(a.t) >= 0) and a.t.min() >= 0 and a.t.max() < wk.HOURS
    attack = a.incidents[1]
    assert set(a.client[a.source == "adversarial"]) == {a.attacker}
    assert np.all((a.t[a.source == "adversarial"] >= attack.start) & (a.t[a.source == "adversarial"] < attack.end))
    bad = a.incidents[2]
    assert np.all((a.version == wk.BAD) == ((a.t >= bad.start) & (a.t < bad.end)))
    assert not np.isfinite(a.label_at[np.isin(a.source, ["outlier", "adversarial"])]).any()  # never labelled
    labelled = np.isfinite(a.label_at)
    assert np.all(a.label_at[labelled] - a.t[labelled] >= 24)  # labels come days late
    arrived = a.labels(by_hour=100)
    assert np.all(np.diff(arrived["arrived"]) >= 0) and max(arrived["arrived"]) <= 100
    night, afternoon = wk.rhythm(3), wk.rhythm(15)
    assert afternoon > 3 * night


def test_nothing_is_judged_on_the_rows_it_was_calibrated_on(pipeline):
    """The test digits split three ways: thresholds and CBPE on the reference rows, the week and tomorrow on
    rows that no detector, estimator or model has seen."""
    from labkit import guard
    from labkit.data import load_digits

    parts = guard.digit_parts()
    test = load_digits("test")
    rows = {name: {r.tobytes() for r in part.X} for name, part in parts.items()}
    assert sum(len(part) for part in parts.values()) == len(test)
    assert not (rows["reference"] & rows["week"]) and not (rows["reference"] & rows["tomorrow"])
    assert not (rows["week"] & rows["tomorrow"])
    for part in parts.values():
        assert set(np.unique(part.labels)) == set(range(8))
    week = wk.make_week(3, pipeline)
    assert {r.tobytes() for r in week.X[week.source == "ordinary"]} <= rows["week"]
    tomorrow = wk.next_day(4)
    assert {r.tobytes() for r in tomorrow.X[tomorrow.source == "ordinary"]} <= rows["tomorrow"]
    labelled = np.isfinite(tomorrow.label_at)
    assert labelled.any() and (tomorrow.label_at[labelled] >= tomorrow.t[labelled] + 24).all()
    scores = pipeline.score(parts["reference"].X)
    assert pipeline.outlier_threshold == np.quantile(scores.outlier_score, 0.99)
    assert pipeline.adversarial_threshold == np.quantile(scores.adversarial_score, 0.99)


def test_the_drift_window_gives_scipys_smallest_per_feature_p_value():
    from scipy.stats import ks_2samp

    from labkit import guard

    rng = np.random.default_rng(1)
    reference = rng.random((300, 16)) ** 2
    for n in (30, 45, 60):
        for window in (rng.random((n, 16)) ** 2, np.round(rng.random((n, 16)) * 4) / 4, reference[:n] * 0.8):
            expected = np.nanmin(ks_2samp(reference, window, axis=0).pvalue)
            assert guard.ks_min_pvalue(np.sort(reference, axis=0), window) == expected


def test_rules_become_a_rule_file_that_parses():
    rules = [{"name": "Drift", "metric": "drift_p", "op": "<", "threshold": 0.001, "window": 3, "for": 1},
             {"name": "Errors", "metric": "error_rate", "op": ">", "threshold": 0.02, "window": 1, "for": 0}]
    text = monitor.prometheus_rules(rules)
    assert monitor.check_prometheus_rules(text) == ["Drift", "Errors"]
    assert "min(max_over_time(labkit_drift_p_value[3h])) < 0.001" in text
    with pytest.raises(ValueError, match="PromQL"):
        monitor.check_prometheus_rules(text.replace("max_over_time(", "max_over_time(("))
    with pytest.raises(ValueError, match="window"):
        monitor.validate_rule({**rules[0], "window": 0})


def promql_gauge(records, hours, window, op, scrape_every=1 / 120):
    """What Prometheus computes for ``min(max_over_time(labkit_drift_p_value[w]))`` (op "<"; ``max(min_...)`` for
    ">") at the end of each hour, scraping each version's exported gauge (the last value its service set, from
    its first answer on) every ``scrape_every`` hours; a range selector holds the samples in (T - w, T]."""
    versions = sorted({r["version"] for r in records})
    within, across = (max, min) if op == "<" else (min, max)
    scrapes = np.arange(scrape_every / 2, hours, scrape_every)
    per_version = {}
    for v in versions:
        mine = sorted((r["t"], r["drift_p"]) for r in records if r["version"] == v and r["status"] == 200)
        times = np.array([t for t, _ in mine])
        at = np.searchsorted(times, scrapes, side="right") - 1  # the last value set by each scrape
        per_version[v] = [(s, mine[i][1]) for s, i in zip(scrapes, at, strict=True) if i >= 0]
    out = np.full(hours, np.nan)
    for h in range(hours):
        end = h + 1.0
        values = [within(x for s, x in samples if end - window < s <= end) for samples in per_version.values()
                  if any(end - window < s <= end for s, _ in samples)]
        if values:
            out[h] = across(values)
    return out


def test_the_drift_gauge_is_the_promql_of_its_rule_on_the_same_samples():
    """monitor.series on the drift gauge gives, hour by hour, what the rule's PromQL gives on a Prometheus that
    scrapes the service's gauges: every value counts (not each hour's last), per version, held between requests."""
    rng = np.random.default_rng(5)
    hours, records = 48, []
    for version, (start, end) in {"1": (0, 48), "2": (10, 15), "3": (30, 48)}.items():
        minutes = rng.choice(np.arange(start * 60, end * 60), size=(end - start) * 4, replace=False)
        minutes = minutes[minutes % 60 != 0]  # no change in an hour's first minute, before its first scrape
        for m in np.sort(minutes):
            records.append({"request_id": f"{version}-{m}", "t": (m + 0.25) / 60, "version": version,
                            "status": 200, "is_outlier": False, "is_adversarial": False, "confidence": 0.9,
                            "drift_p": float(10 ** rng.uniform(-6, 0))})
    records.append({"request_id": "failed", "t": 20.5, "version": "1", "status": 500})
    metrics = monitor.hourly(records, hours=hours)
    for window in (1, 3, 6):
        for op in ("<", ">"):
            np.testing.assert_allclose(monitor.series(metrics, "drift_p", window, op),
                                       promql_gauge(records, hours, window, op), rtol=0, atol=0)
    # and so the rule fires in the same hours as its PromQL would
    rule = {"name": "D", "metric": "drift_p", "op": "<", "threshold": 0.01, "window": 3, "for": 0}
    assert monitor.promql(rule) == "min(max_over_time(labkit_drift_p_value[3h])) < 0.01"
    expected = promql_gauge(records, hours, 3, "<") < 0.01
    assert np.array_equal(monitor.firing(metrics, rule), expected) and expected.any()
    # the hour's last value alone (the old gauge) would differ
    last = np.array([max([r["drift_p"] for r in records if r.get("drift_p") and h <= r["t"] < h + 1][-1:] or [0])
                     for h in range(hours)])
    assert not np.array_equal(last, metrics["drift_p"])


def test_alarms_are_episodes_and_for_delays_them():
    metrics = {"drift_p": np.r_[np.ones(10), np.full(5, 1e-6), np.ones(10)]}
    rule = {"name": "D", "metric": "drift_p", "op": "<", "threshold": 0.001, "window": 1, "for": 0}
    assert [(a["at"], a["until"]) for a in monitor.alarms(metrics, [rule])] == [(11.0, 15.0)]
    assert [a["at"] for a in monitor.alarms(metrics, [{**rule, "for": 2}])] == [13.0]


def test_cbpe_recovers_the_accuracy_of_calibrated_confidence():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1, 20000)
    correct = rng.random(20000) < confidence  # calibrated: right with probability = confidence
    cbpe = monitor.CBPE(confidence, correct)
    batch = rng.uniform(0.3, 0.6, 2000)
    assert abs(cbpe.estimate(batch) - batch.mean()) < 0.02


def test_the_service_flags_logs_blocks_and_fails_as_documented(pipeline, tmp_path):
    log, blocklist = tmp_path / "payloads.jsonl", tmp_path / "blocked.json"
    bad = pipeline.with_classifier(wk.bad_classifier())
    wk.write_model(tmp_path / "models" / "digits-v1", pipeline, name="digits-v1", version="1", log=log,
                   blocklist=blocklist)
    wk.write_model(tmp_path / "models" / "digits-v2", bad, name="digits-v2", version="2", log=log,
                   blocklist=blocklist, fail_below_ink=wk.FAIL_BELOW_INK)
    week = wk.make_week(0, pipeline)
    faint = int(np.flatnonzero(week.X.sum(axis=1) < wk.FAIL_BELOW_INK)[0])
    with Server(tmp_path / "models", settings={"parallel_workers": 0}) as server, Client(server) as client:
        answer = client.predict("digits-v1", week.payload(0))
        assert {"predict", "confidence", "is_outlier", "is_adversarial", "drift_p"} <= set(answer)
        with pytest.raises(InferenceServerError, match="500"):
            client.predict("digits-v2", week.payload(faint))
        blocklist.write_text(json.dumps([str(week.client[1])]))
        with pytest.raises(InferenceServerError, match="403"):
            client.predict("digits-v1", week.payload(1))
    records = wk.read_log(log)
    assert [(r["request_id"], r["status"]) for r in records] == [
        (week.request_id[0], 200), (week.request_id[faint], 500), (week.request_id[1], 403)]
    offline = wk.serve_offline(week, {"1": pipeline, "2": bad})[0]
    assert offline["predict"] == records[0]["predict"] and offline["is_outlier"] == records[0]["is_outlier"]
