"""Lab 09's monitoring: hourly metrics from the payload log, alarm rules, their Prometheus form, and CBPE.

A payload log record (one per request, written by ``labs/runtimes/guarded_service.py`` or computed by
``labkit.week.serve_offline``) holds ``request_id``, ``client``, ``t`` (simulated hour), ``version``, ``status``
(200, 403 or 500) and, when answered, the outputs of every stage (``labkit.guard.chain``).

An alarm rule is plain data, the same fields a Prometheus alerting rule has::

    {"name": "OutlierBurst", "metric": "outlier_rate", "op": ">", "threshold": 0.2, "window": 3, "for": 0}

``window`` (hours) is the range the metric is aggregated over (a rate over the window: flagged rows in the
window over answered rows in the window; for the ``drift_p`` gauge, its largest value in the window when ``op`` is
``"<"``, its smallest when ``">"``: the condition held all through the window). The gauge is every value the
service's p-value takes, as a Prometheus server scraping it sees them: one series per version, each value held
until the next (``hourly``), aggregated as ``min(max_over_time(labkit_drift_p_value[3h]))`` is in PromQL: a
version's largest value in the window, then the smallest over the versions (an alarm when one version's test
found drift all through the window). ``for`` (hours) is how
long the condition must hold before the alarm fires, as Prometheus's ``for:``. ``prometheus_rules`` writes the
rules as Prometheus's YAML, and ``check_prometheus_rules`` parses it back (PyYAML) with its PromQL
(``promql-parser``), since no Prometheus server runs here.
"""

from __future__ import annotations

import math
import re

import numpy as np

from labkit.week import HOURS

# metric -> (numerator, denominator) of a rate, or None for a gauge
METRICS = {
    "requests": ("requests", None),  # requests per hour
    "error_rate": ("server_errors", "requests"),
    "outlier_rate": ("outliers", "answered"),
    "adversarial_rate": ("adversarial", "answered"),
    "confidence": ("confidence_sum", "answered"),
    "drift_p": None,
    "estimated_accuracy": None,
}
# what each metric is called in PromQL, as the service would export it
PROMQL = {
    "requests": "sum(increase(labkit_requests_total[{w}])) / {hours}",
    "error_rate": 'sum(increase(labkit_requests_total{{code=~"5.."}}[{w}]))'
                  " / sum(increase(labkit_requests_total[{w}]))",
    "outlier_rate": "sum(increase(labkit_outliers_total[{w}])) / sum(increase(labkit_answered_total[{w}]))",
    "adversarial_rate": "sum(increase(labkit_adversarial_total[{w}])) / sum(increase(labkit_answered_total[{w}]))",
    "confidence": "sum(increase(labkit_confidence_sum[{w}])) / sum(increase(labkit_confidence_count[{w}]))",
    "drift_p": "{across}({agg}_over_time(labkit_drift_p_value[{w}]))",
    "estimated_accuracy": "{agg}_over_time(labkit_estimated_accuracy[{w}])",
}
STAGE_OF_METRIC = {"requests": "service", "error_rate": "model", "outlier_rate": "outlier",
                   "adversarial_rate": "adversarial", "confidence": "model", "drift_p": "drift",
                   "estimated_accuracy": "model"}
RULE_FIELDS = ("name", "metric", "op", "threshold", "window", "for")


class CBPE:
    """Confidence-based performance estimation of accuracy, after NannyML's CBPE (https://nannyml.readthedocs.io,
    "Estimation of Performance of the Monitored Model"), in its simplest form: *top-label* calibration. One
    isotonic regression of "was the prediction right" on the model's confidence (its largest probability), fitted
    on labelled reference rows, so that a calibrated confidence c means "right with probability c"; the expected
    accuracy of unlabelled rows is the mean of their calibrated confidences.

    NannyML does it per class for a multiclass model: one isotonic calibrator per class, one-vs-rest (the
    probability of class k against "the label is k"), skipped for a class whose probabilities are already
    calibrated; each row's calibrated probabilities are renormalised to sum to 1, and the estimated accuracy is
    the mean calibrated probability of the predicted class (``_fit_calibrators`` and
    ``_calibrate_predicted_probabilities`` in ``nannyml/performance_estimation/confidence_based/cbpe.py``,
    ``MulticlassClassificationAccuracy._estimate`` in ``metrics.py``). Both hold under covariate shift as long as
    the calibration does (no concept drift), need no labels in production, and need a labelled reference of the
    model they estimate: a calibrator fitted on one model's confidence says nothing about another's."""

    def __init__(self, confidence, correct):
        from sklearn.isotonic import IsotonicRegression

        self.calibrator = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(
            np.asarray(confidence, float), np.asarray(correct, float))

    def estimate(self, confidence) -> float:
        confidence = np.asarray(confidence, float)
        return float(self.calibrator.predict(confidence).mean()) if confidence.size else math.nan


def hourly(records, *, version: str | None = None, hours: int = HOURS, cbpe: CBPE | None = None) -> dict:
    """Counts and gauges per simulated hour (arrays of ``hours``), of one version or all.

    Counts: ``requests``, ``server_errors`` (5xx), ``answered``, ``outliers``, ``adversarial``,
    ``confidence_sum``; gauges: ``drift_p`` and, with a ``cbpe``, ``estimated_accuracy`` (NaN in hours without
    answers); and ``p99_ms``, the 99th percentile of the time the stages took.

    ``drift_p`` is a gauge per version, as the service exports it: every value it takes counts (the value each
    answered request left), and a value holds until the next one, across empty hours, as a scraped gauge does.
    ``drift_p_by_version`` maps each version to its ``(largest, smallest)`` value per hour (the value in force as
    the hour starts included; NaN before the version's first answer); ``drift_p`` is, per hour, the smallest of
    the versions' largest values: what ``series(..., "drift_p", 1, "<")`` compares (see the module's docstring).
    """
    keys = ("requests", "server_errors", "answered", "outliers", "adversarial", "confidence_sum")
    out = {k: np.zeros(hours) for k in keys}
    samples: dict[str, list[tuple[float, float]]] = {}
    confidences: list[list[float]] = [[] for _ in range(hours)]
    stage_ms: list[list[float]] = [[] for _ in range(hours)]
    for r in records:
        if version is not None and r.get("version") != version:
            continue
        h = int(r["t"])
        if not 0 <= h < hours:
            continue
        out["requests"][h] += 1
        status = int(r.get("status", 200))
        if status >= 500:
            out["server_errors"][h] += 1
        if status != 200:
            continue
        out["answered"][h] += 1
        out["outliers"][h] += bool(r["is_outlier"])
        out["adversarial"][h] += bool(r["is_adversarial"])
        out["confidence_sum"][h] += r["confidence"]
        confidences[h].append(r["confidence"])
        stage_ms[h].append(sum(r.get("stage_ms", {}).values()))
        samples.setdefault(str(r.get("version")), []).append((float(r["t"]), float(r["drift_p"])))
    out["drift_p_by_version"] = {v: _gauge_per_hour(s, hours) for v, s in sorted(samples.items())}
    out["drift_p"] = _across(np.array([largest for largest, _ in out["drift_p_by_version"].values()]), np.nanmin,
                             hours)
    out["p99_ms"] = np.array([np.percentile(s, 99) if s else np.nan for s in stage_ms])
    if cbpe is not None:
        out["estimated_accuracy"] = np.array([cbpe.estimate(c) for c in confidences])
    return out


def _gauge_per_hour(samples, hours: int) -> tuple[np.ndarray, np.ndarray]:
    """A gauge's ``(largest, smallest)`` value in each hour from its ``(t, value)`` samples: the values set in the
    hour and the value in force as it starts (each value holds until the next); NaN before the first sample."""
    largest, smallest = np.full(hours, np.nan), np.full(hours, np.nan)
    in_force = math.nan
    samples = sorted(samples, key=lambda sample: sample[0])
    i = 0
    for h in range(hours):
        seen = [] if math.isnan(in_force) else [in_force]
        while i < len(samples) and samples[i][0] < h + 1:
            seen.append(samples[i][1])
            i += 1
        if seen:
            largest[h], smallest[h], in_force = max(seen), min(seen), seen[-1]
    return largest, smallest


def _across(stack: np.ndarray, combine, hours: int) -> np.ndarray:
    """``combine`` (np.nanmin or np.nanmax) over the rows of ``stack`` per column; NaN where every row is NaN."""
    if not len(stack):
        return np.full(hours, np.nan)
    present = np.isfinite(stack).any(axis=0)
    out = np.full(stack.shape[1], np.nan)
    out[present] = combine(stack[:, present], axis=0)
    return out


def _over_window(values: np.ndarray, window: int, aggregate) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for h in range(len(values)):
        part = values[max(0, h - window + 1) : h + 1]
        out[h] = aggregate(part) if np.isfinite(part).any() else np.nan
    return out


def series(metrics: dict, metric: str, window: int = 1, op: str = ">") -> np.ndarray:
    """The value a rule on ``metric`` compares at the end of each hour, aggregated over ``window`` hours.

    For ``drift_p`` from ``hourly``: each version's largest value in the window (``op`` ``"<"``; its smallest for
    ``">"``), then the smallest over the versions (the largest for ``">"``), as the PromQL of ``promql`` does."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    window = int(window)
    spec = METRICS[metric]
    within, across = (np.nanmax, np.nanmin) if op == "<" else (np.nanmin, np.nanmax)
    if spec is None and f"{metric}_by_version" in metrics:
        by_version = metrics[f"{metric}_by_version"]
        hours = len(metrics[metric])
        stack = [_over_window(largest if op == "<" else smallest, window, within)
                 for largest, smallest in by_version.values()]
        return _across(np.array(stack).reshape(len(stack), hours), across, hours)
    if spec is None:
        return _over_window(np.asarray(metrics[metric], float), window, within)
    numerator, denominator = spec
    kernel = np.ones(window)

    def windowed(x):
        return np.convolve(np.asarray(x, float), kernel)[: len(x)]

    top = windowed(metrics[numerator])
    if denominator is None:
        return top / window
    bottom = windowed(metrics[denominator])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.maximum(bottom, 1), np.nan)


def validate_rule(rule) -> dict:
    """The rule with its types checked, or a ValueError that says what is wrong."""
    if not isinstance(rule, dict):
        raise ValueError(f"a rule is a dict with the keys {RULE_FIELDS}, not {type(rule).__name__}")
    missing = [k for k in RULE_FIELDS if k not in rule]
    if missing:
        raise ValueError(f"rule {rule.get('name', rule)!r} lacks {missing}")
    name = rule["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"a rule's name is a Prometheus alert name (letters, digits, _), not {name!r}")
    if rule["metric"] not in METRICS:
        raise ValueError(f"rule {name}: unknown metric {rule['metric']!r}; one of {', '.join(METRICS)}")
    if rule["op"] not in (">", "<"):
        raise ValueError(f"rule {name}: op is '>' or '<', not {rule['op']!r}")
    threshold = rule["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ValueError(f"rule {name}: threshold must be a finite number, not {threshold!r}")
    for key, top in (("window", 24), ("for", 12)):
        value = rule[key]
        low = 1 if key == "window" else 0
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
            raise ValueError(f"rule {name}: {key} is a whole number of hours from {low} to {top}, not {value!r}")
    return {k: rule[k] for k in RULE_FIELDS}


def firing(metrics: dict, rule: dict) -> np.ndarray:
    """Per hour, whether the rule fires at the end of that hour (its condition held for ``for`` more hours)."""
    rule = validate_rule(rule)
    values = series(metrics, rule["metric"], rule["window"], rule["op"])
    with np.errstate(invalid="ignore"):
        holds = values > rule["threshold"] if rule["op"] == ">" else values < rule["threshold"]
    holds &= np.isfinite(values)
    fire = holds.copy()
    for lag in range(1, rule["for"] + 1):
        fire[lag:] &= holds[:-lag]
        fire[:lag] = False
    return fire


def alarms(metrics: dict, rules) -> list[dict]:
    """Every alarm the rules raise: one per episode of consecutive firing hours, at the time it starts firing
    (the end of its first hour: hour ``h`` fires at ``h + 1``), in time order."""
    raised = []
    for rule in rules:
        fire = firing(metrics, rule)
        starts = np.flatnonzero(fire & ~np.r_[False, fire[:-1]])
        ends = np.flatnonzero(fire & ~np.r_[fire[1:], False])
        raised += [{"rule": rule["name"], "metric": rule["metric"], "stage": STAGE_OF_METRIC[rule["metric"]],
                    "at": float(s + 1), "until": float(e + 1)} for s, e in zip(starts, ends, strict=True)]
    return sorted(raised, key=lambda a: (a["at"], a["rule"]))


GRACE = 3  # hours after an incident's end in which a new alarm still counts as pointing at it


def score_alarms(raised: list[dict], incidents) -> dict:
    """Which incidents were caught in time (an alarm on a metric of the incident's stage, at most
    ``incident.delay`` hours after the end of the hour it started in), and which alarms were false (starting
    outside every incident, from its start to its end plus ``GRACE``)."""
    caught, delays = {}, {}
    for incident in incidents:
        hits = [a for a in raised if incident.start < a["at"] <= incident.start + 1 + incident.delay
                and a["stage"] == incident.stage]
        caught[incident.kind] = hits[0]["rule"] if hits else None
        if hits:
            delays[incident.kind] = hits[0]["at"] - incident.start
    false = [a for a in raised if not any(i.start < a["at"] <= i.end + GRACE for i in incidents)]
    return {"caught": caught, "delay": delays, "false": false}


def _hours(value: int) -> str:
    return f"{int(value)}h"


def promql(rule: dict) -> str:
    """The rule's condition in PromQL (on the metrics the service would export, see ``PROMQL``)."""
    rule = validate_rule(rule)
    agg, across = ("max", "min") if rule["op"] == "<" else ("min", "max")
    expression = PROMQL[rule["metric"]].format(w=_hours(rule["window"]), hours=rule["window"], agg=agg,
                                               across=across)
    return f"{expression} {rule['op']} {rule['threshold']!r}"


def prometheus_rules(rules, group: str = "lab09-digits") -> str:
    """The rules as a Prometheus rule file (YAML), ready for ``rule_files:`` of a Prometheus server."""
    import yaml

    entries = []
    for rule in rules:
        rule = validate_rule(rule)
        stage = STAGE_OF_METRIC[rule["metric"]]
        entries.append({
            "alert": rule["name"],
            "expr": promql(rule),
            "for": _hours(rule["for"]) if rule["for"] else "0s",
            "labels": {"severity": "page", "stage": stage},
            "annotations": {"summary": f"{rule['metric']} {rule['op']} {rule['threshold']} over "
                                       f"{_hours(rule['window'])} (stage: {stage})"},
        })
    return yaml.safe_dump({"groups": [{"name": group, "rules": entries}]}, sort_keys=False)


def check_prometheus_rules(text: str) -> list[str]:
    """Parse a Prometheus rule file: the YAML's structure and every ``expr`` as PromQL. Returns the alert
    names, or raises ValueError that says what is wrong (what ``promtool check rules`` would refuse)."""
    import promql_parser
    import yaml

    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError("a rule file is a mapping with a list under `groups`")
    names = []
    for group in document["groups"]:
        if not isinstance(group, dict) or "name" not in group or not isinstance(group.get("rules"), list):
            raise ValueError("each group has a `name` and a list of `rules`")
        for rule in group["rules"]:
            if not isinstance(rule, dict) or "alert" not in rule or "expr" not in rule:
                raise ValueError(f"an alerting rule has `alert` and `expr`: {rule!r}")
            if "for" in rule and not re.fullmatch(r"\d+(ms|s|m|h|d|w|y)", str(rule["for"])):
                raise ValueError(f"{rule['alert']}: `for` is a duration such as 5m or 1h, not {rule['for']!r}")
            try:
                promql_parser.parse(str(rule["expr"]))
            except ValueError as e:
                raise ValueError(f"{rule['alert']}: the PromQL does not parse: {e}") from None
            names.append(rule["alert"])
    return names


def summarise(records, version: str, *, cbpe: CBPE | None = None, labels: dict | None = None) -> dict:
    """One version's figures over ``records``, as a promotion decision takes them: ``requests``,
    ``server_errors``, ``p99_ms`` (the stages' time), ``labelled`` and ``correct`` (answered requests with a label
    in ``labels``, ``{request_id: label}``), and ``estimated_accuracy`` (CBPE; NaN without a ``cbpe``)."""
    mine = [r for r in records if r.get("version") == version]
    answered = [r for r in mine if r.get("status") == 200]
    labels = labels or {}
    known = [r for r in answered if r["request_id"] in labels]
    stage_ms = [sum(r.get("stage_ms", {}).values()) for r in answered]
    return {
        "requests": len(mine),
        "server_errors": sum(int(r.get("status", 200)) >= 500 for r in mine),
        "p99_ms": round(float(np.percentile(stage_ms, 99)), 3) if stage_ms else math.nan,
        "labelled": len(known),
        "correct": sum(r["predict"] == labels[r["request_id"]] for r in known),
        "estimated_accuracy": cbpe.estimate([r["confidence"] for r in answered]) if cbpe else math.nan,
    }
